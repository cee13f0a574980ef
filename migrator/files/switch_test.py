"""The backend's own unit test of the LLM_BACKEND switch, written by phase2 --scaffold.

So the team's CI notices when someone later breaks the switch. The test is rendered from what pysource
read: for each Ollama call site, how to build it — importing its module (a model built at import), or
calling the factory function it sits in (no arguments, or a fresh settings object for a `settings`
parameter). A call site inside something a test cannot call (a `main()` loop, a method) is named in the
test's docstring as not built there. It lands in the project's test directory (pytest `testpaths`, else
`tests/` beside the backend's code) and puts the import root on sys.path itself. A project whose tests are
standard-library unittest (TestCase classes, no pytest in its dependencies or config) gets a
`unittest.TestCase` module named the way its tests are, so `python -m unittest discover` finds it.
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
from configparser import ConfigParser, Error as ConfigError
from dataclasses import dataclass, field
from pathlib import Path

from migrator.files.pysource import Scope, ev
from migrator.files.pywire import SWITCH_FUNCTION, Source

TEST_NAME = "test_llm_backend_switch.py"
_TEST_DIRS = ("tests", "test")
_PYTEST_CONFIG = re.compile(r"^\[(tool:)?pytest\]|^\[tool\.pytest", re.M)
_PYTEST_DEPENDENCY = re.compile(r"(^|[\s\"'\[,])pytest([\s\"'<>=~!,;\]\[-]|$)", re.M | re.I)
_FACTORY_NAME = re.compile(r"^(get|make|build|create|new|init|load)_|(llm|model|chain|chat)s?$", re.I)
_SETTINGS_PARAM = re.compile(r"settings|config|cfg|conf", re.I)
_OPENAI_FOR = {"ChatOllama": "ChatOpenAI", "OllamaLLM": "OpenAI", "Ollama": "OpenAI"}


@dataclass
class SwitchTest:
    path: Path
    text: str
    skipped: list[str] = field(default_factory=list)  # call sites it cannot build, with why


@dataclass(frozen=True)
class SwitchTestLayout:
    """Where the switch test goes and how the project runs it: "pytest", or "unittest" (discover)."""

    path: Path
    runner: str


def switch_test_layout(backend: Path) -> SwitchTestLayout:
    """pytest's testpaths when configured; else a tests/ (or test/) dir of unittest-only tests, with its
    naming pattern; else backend/tests for pytest."""
    configured = _configured_testpaths(backend)
    if configured is not None:
        return SwitchTestLayout(configured / TEST_NAME, "pytest")
    for name in _TEST_DIRS:
        directory = backend / name
        tests = sorted(directory.glob("test_*.py")) + sorted(directory.glob("*_test.py"))
        if tests and _unittest_only(backend, tests):
            suffixed = all(t.name.endswith("_test.py") and not t.name.startswith("test_") for t in tests)
            return SwitchTestLayout(directory / ("llm_backend_switch_test.py" if suffixed else TEST_NAME), "unittest")
    return SwitchTestLayout(backend / "tests" / TEST_NAME, "pytest")


def test_dir(backend: Path) -> Path:
    return switch_test_layout(backend).path.parent


def _unittest_only(backend: Path, tests: list[Path]) -> bool:
    """Every test module is unittest (imports it, no pytest), and pytest is nowhere in the dependencies
    or configuration: the project's own runner is `python -m unittest`, which may be all it has."""
    for test in tests:
        try:
            tree = ast.parse(test.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            return False
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if "pytest" in imported or "unittest" not in imported:
            return False
    for name in ("pyproject.toml", "setup.cfg", "tox.ini", "pytest.ini", "Pipfile", "setup.py"):
        text = _text(backend / name)
        if name == "pytest.ini" and text is not None:
            return False
        if text is not None and (_PYTEST_CONFIG.search(text) or _PYTEST_DEPENDENCY.search(text)):
            return False
    for requirements in backend.glob("requirements*.txt"):
        if _PYTEST_DEPENDENCY.search(_text(requirements) or ""):
            return False
    return True


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _configured_testpaths(backend: Path) -> Path | None:
    """pytest's configured testpaths (pyproject, pytest.ini, setup.cfg, tox.ini)."""
    pyproject = backend / "pyproject.toml"
    if pyproject.is_file():
        try:
            paths = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("pytest", {}) \
                .get("ini_options", {}).get("testpaths")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            paths = None
        if paths:
            return backend / (paths[0] if isinstance(paths, list) else str(paths).split()[0])
    for name, section in (("pytest.ini", "pytest"), ("setup.cfg", "tool:pytest"), ("tox.ini", "pytest")):
        cfg = backend / name
        if cfg.is_file():
            parser = ConfigParser()
            try:
                parser.read(cfg, encoding="utf-8")
            except ConfigError:
                continue
            if parser.has_option(section, "testpaths"):
                return backend / parser.get(section, "testpaths").split()[0]
    return None


def _returned(scope: Scope, call: ast.Call) -> bool:
    """The call is what the function returns (directly, or through the name it is bound to)."""
    names = set()
    for node in scope.own_nodes():
        if isinstance(node, ast.Assign) and any(n is call for n in ast.walk(node.value)):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    for node in scope.own_nodes():
        if isinstance(node, ast.Return) and node.value is not None:
            if any(n is call for n in ast.walk(node.value)):
                return True
            if any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node.value)):
                return True
    return False


def _build_line(src: Source, scope: Scope, call: ast.Call, where: str) -> tuple[str | None, str]:
    """The statement that builds this call site's model, or None and why not."""
    module = scope.module.name
    if scope.kind == "module":
        return f"importlib.import_module({module!r})", ""
    if scope.kind != "function" or scope.parent is None or scope.parent.kind != "module":
        return None, f"{where}: inside {scope.qual} (a method or nested function)"
    fn = scope.node
    if not (_returned(scope, call) or _FACTORY_NAME.search(fn.name)):
        return None, f"{where}: inside {fn.name}(), which does not return the model"
    positional = fn.args.posonlyargs + fn.args.args
    required = positional[: len(positional) - len(fn.args.defaults)]
    required += [a for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is None]
    settings = src.settings
    args = []
    for arg in required:
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        if settings is not None and settings.cls and (annotation.split(".")[-1] == settings.cls
                                                      or _SETTINGS_PARAM.search(arg.arg)):
            args.append(f"{arg.arg}=importlib.import_module({settings.module!r}).{settings.cls}()")
        else:
            return None, f"{where}: {fn.name}() needs `{arg.arg}`, which a test cannot make up"
    call_args = ", ".join(args)
    return f"importlib.import_module({module!r}).{fn.name}({call_args})", ""


def render_switch_test(src: Source, import_root: Path, raises: bool) -> SwitchTest | None:
    """The test module for this backend (None: no Ollama call site a test can build)."""
    from migrator.files.templates import render

    layout = switch_test_layout(src.backend)
    directory = layout.path.parent
    lines, skipped, ollama = [], [], []
    origins: set[tuple[str, str]] = set()
    for site, call, scope in src.sites:
        where = ev(site.file, site.line)
        if site.cls.startswith("ollama."):
            skipped.append(f"{where}: the ollama client, not a LangChain model")
            continue
        line, why = _build_line(src, scope, call, where)
        if line is None:
            skipped.append(why)
            continue
        if line not in lines:
            lines.append(line)
        ollama.append(site.cls)
        origins.add((src.index.origin_module(call.func, scope) or "langchain_ollama", site.cls))
    if not lines:
        return None
    rel = os.path.relpath(import_root, directory)
    parts = ", ".join(repr(p) for p in Path(rel).parts) if rel != "." else "'.'"
    packages = sorted({m.name.split(".")[0] for m in src.index.modules.values()})
    template = "test_llm_backend_switch_unittest.py.j2" if layout.runner == "unittest" else \
        "test_llm_backend_switch.py.j2"
    text = render(template, import_root_parts=parts, packages=repr(packages),
                  factories=lines, ollama_classes=repr(sorted(ollama)),
                  openai_classes=repr(sorted(_OPENAI_FOR[c] for c in ollama)),
                  ollama_imports=", ".join(f"importlib.import_module({m!r}).{c}" for m, c in sorted(origins)),
                  raises=raises, skipped=skipped)
    return SwitchTest(layout.path, text, skipped)


def uses_switch_function(src: Source) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == SWITCH_FUNCTION
               for m in src.index.modules.values() for n in ast.walk(m.tree))


VLLM_CASE = "test_llm_backend_vllm_builds_openai_compatible_models_on_vllm"


def run_argv(python: str, layout: SwitchTestLayout, backend: Path) -> list[str]:
    """The command that runs the switch test alone, from the backend dir, with the project's runner."""
    rel = os.path.relpath(layout.path, backend)
    if layout.runner == "unittest":
        return [python, "-m", "unittest", "-v", rel]
    return [python, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", rel]


@dataclass
class RunResult:
    """What one run of the switch test said: counts, and whether the vLLM case failed."""

    exit_code: int
    passed: int
    failed: int
    vllm_case_failed: bool
    last_line: str

    def summary(self) -> str:
        counts = [f"{n} {word}" for n, word in ((self.failed, "failed"), (self.passed, "passed")) if n]
        return ", ".join(counts) or self.last_line or f"exit {self.exit_code}"


def parse_run(runner: str, exit_code: int, stdout: str, stderr: str) -> RunResult:
    """pytest's summary line (`1 failed, 2 passed in 3.1s`) or unittest's (`Ran 3 tests` … `FAILED (failures=1)`)."""
    text = stdout + "\n" + stderr
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if runner == "unittest":
        ran = re.search(r"^Ran (\d+) tests?", text, re.M)
        bad = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", text.rsplit("Ran ", 1)[-1]))
        passed, failed = (int(ran.group(1)) - bad, bad) if ran else (0, 0)
        vllm_failed = re.search(rf"^(FAIL|ERROR): {VLLM_CASE}\b", text, re.M) is not None
    else:
        summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)), "")
        counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?)", summary)}
        passed = counts.get("passed", 0)
        failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
        vllm_failed = re.search(rf"^(FAILED|ERROR) \S*::{VLLM_CASE}\b", text, re.M) is not None
    return RunResult(exit_code, passed, failed, vllm_failed, (lines or [""])[-1][:200])
