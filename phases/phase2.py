"""phase2 — backend wiring: can the backend switch its LLM by LLM_BACKEND?

Checks of the backend's source, parsed with `ast` (the user's modules are never imported or run to
inspect them); with --scaffold, the missing pieces written from templates (a VLLMChat module, the settings
fields inserted into the settings class, the requirements line), each shown as a diff and backed up;
then the backend's own unit tests, and a streamed answer through the same client the backend uses.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from migrator.core.config import Settings
from migrator.core.engine import Context, Outcome, Phase, Step
from migrator.core.errors import CheckFailed

def _fields(ctx: Context) -> list[str]:
    names = list(ctx.settings.backend.settings_fields)
    if len(names) != 3:
        raise CheckFailed(f"backend.settings_fields has {len(names)} names", "give three: switch, vLLM URL, vLLM model")
    return names


def _field_defaults(ctx: Context) -> dict[str, str]:
    import json

    from phases.phase3 import backend_base_url

    switch, url, model = _fields(ctx)
    return {switch: '"ollama"', url: json.dumps(backend_base_url(ctx)),
            model: json.dumps(ctx.settings.model.served_name)}


def settings_with_fields(source: str, path: Path, defaults: dict[str, str]) -> str:
    """The settings file with the missing fields added after the last annotated field of its settings
    class. Refuses (CheckFailed, with the lines to add) when it cannot tell where they go."""
    tree = ast.parse(source)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)
               and any(isinstance(i, ast.AnnAssign) for i in n.body)]
    settings_like = [c for c in classes if any(getattr(b, "id", getattr(b, "attr", "")) == "BaseSettings"
                                               for b in c.bases)] or classes
    wanted_lines = [f"{name}: str = {default}" for name, default in defaults.items()]
    if len(settings_like) != 1:
        raise CheckFailed(f"{path.name}: cannot tell which class holds the settings ({len(settings_like)} candidates)",
                          "add these lines to it by hand: " + "; ".join(wanted_lines))
    cls = settings_like[0]
    declared = {i.target.id for i in cls.body if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)}
    missing = {k: v for k, v in defaults.items() if k not in declared}
    if not missing:
        return source
    last = [i for i in cls.body if isinstance(i, ast.AnnAssign)][-1]
    lines = source.splitlines(keepends=True)
    indent = lines[last.lineno - 1][: len(lines[last.lineno - 1]) - len(lines[last.lineno - 1].lstrip())]
    newline = "\r\n" if lines[last.end_lineno - 1].endswith("\r\n") else "\n"
    added = [f"{indent}{name}: str = {default}{newline}" for name, default in missing.items()]
    result = "".join(lines[: last.end_lineno] + added + lines[last.end_lineno:])
    ast.parse(result)  # what we write must still parse
    return result


def _parse(path: Path) -> ast.Module | Outcome:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        return Outcome.failed(f"{path} not found", "set backend.dir / backend.config_module in migrate.yaml")
    except SyntaxError as exc:
        return Outcome.failed(f"{path} does not parse (line {exc.lineno})", "fix the syntax error first")


class _Scaffoldable(Step):
    """A check that, with --scaffold, also writes what it finds missing."""

    def __init__(self, scaffold: bool = False):
        self.scaffold = scaffold

    @property
    def read_only(self):  # type: ignore[override]
        return not self.scaffold


class SettingsFields(_Scaffoldable):
    id = "phase2.settings"
    title = "settings declare llm_backend, vllm_base_url, vllm_model"

    def files(self, ctx: Context) -> dict[Path, bytes]:
        b = ctx.settings.backend
        path = ctx.path(b.dir) / b.config_module
        data = ctx.writer.read(path)
        if data is None:
            raise CheckFailed(f"{path} not found", "set backend.dir / backend.config_module")
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckFailed(f"{path} is not UTF-8 text", "add the fields by hand") from None
        try:
            updated = settings_with_fields(source, path, _field_defaults(ctx))
        except SyntaxError as exc:
            raise CheckFailed(f"{path} does not parse (line {exc.lineno})", "fix it first; nothing was written") from None
        return {path: updated.encode("utf-8")}

    def check(self, ctx: Context) -> Outcome:
        b = ctx.settings.backend
        path = ctx.path(b.dir) / b.config_module
        tree = _parse(path)
        if isinstance(tree, Outcome):
            return tree
        declared: dict[str, bool] = {}  # field -> has a default
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        declared[item.target.id] = item.value is not None
        fields = _fields(ctx)
        missing = [f for f in fields if f not in declared]
        if missing:
            return Outcome.failed(f"{path.name} lacks {', '.join(missing)}",
                                  "add them to the settings class (plan §5.4), or phase2 --scaffold")
        no_default = [f for f in fields if not declared[f]]
        if no_default:
            return Outcome.failed(f"{path.name}: {', '.join(no_default)} have no default",
                                  "give each a default (e.g. llm_backend = \"ollama\") so the backend starts without them")
        return Outcome.passed(f"{path.name} declares {', '.join(fields)} with defaults")


class OpenAIClient(Step):
    id = "phase2.llm"
    title = "LLM factory has ChatOpenAI(base_url=…) chosen by llm_backend"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        b = ctx.settings.backend
        path = ctx.path(b.dir) / b.llm_module
        tree = _parse(path)
        if isinstance(tree, Outcome):
            return tree
        switch = _fields(ctx)[0]
        has_openai = has_switch = streams = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name == "ChatOpenAI" and any(k.arg == "base_url" for k in node.keywords):
                    has_openai = True
                    streams = streams or any(k.arg == "streaming" and getattr(k.value, "value", None) is True
                                             for k in node.keywords)
                if name in ("stream", "astream", "astream_events"):
                    streams = True
            if isinstance(node, ast.Compare):
                names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "")
                         for n in ast.walk(node)}
                if switch in names:
                    has_switch = True
        missing = [what for what, ok in (("ChatOpenAI(base_url=…)", has_openai),
                                          (f"a choice on {switch}", has_switch),
                                          ("streaming (streaming=True or .stream/.astream)", streams)) if not ok]
        if missing:
            return Outcome.failed(f"{path.name} lacks {' and '.join(missing)}", "see plan §5.5")
        return Outcome.passed(f"{path.name} selects ChatOpenAI by llm_backend")


class VllmChatModule(Step):
    id = "phase2.vllm-chat"
    title = "VLLMChat module (streaming, history, system prompt)"

    def _path(self, ctx: Context) -> Path:
        b = ctx.settings.backend
        return (ctx.path(b.dir) / b.llm_module).parent / "vllm_chat.py"

    def check(self, ctx: Context) -> Outcome:
        path = self._path(ctx)
        return Outcome.passed(f"{path.name} present") if path.exists() else Outcome.failed(f"{path.name} not written")

    def files(self, ctx: Context) -> dict[Path, bytes]:
        from migrator.files.templates import render

        text = render("vllm_chat.py.j2", backend_field="llm_backend", base_url_field="vllm_base_url",
                      model_field="vllm_model")
        return {self._path(ctx): text.encode()}


class Requirement(_Scaffoldable):
    id = "phase2.requirements"
    title = "langchain-openai is a dependency"

    def files(self, ctx: Context) -> dict[Path, bytes]:
        b = ctx.settings.backend
        path = ctx.path(b.dir) / b.requirements
        where = {"pyproject.toml": "[project].dependencies (or [tool.poetry.dependencies])",
                 "Pipfile": "[packages]"}.get(path.name)
        if where or path.suffix not in (".txt", ".in"):
            # Appending a line would break a TOML or Pipfile: only requirements files are edited.
            raise CheckFailed(f"{path.name} is not a requirements file: --scaffold only appends to those",
                              f"add langchain-openai to {where or 'your dependency list'} in {path} by hand, "
                              "then re-run phase2")
        data = ctx.writer.read(path) or b""
        newline = b"\r\n" if b"\r\n" in data else b"\n"
        if data and not data.endswith(b"\n"):
            data += newline
        return {path: data + b"langchain-openai" + newline}

    def check(self, ctx: Context) -> Outcome:
        b = ctx.settings.backend
        candidates = [ctx.path(b.dir) / b.requirements, ctx.path(b.dir) / "pyproject.toml"]
        for path in candidates:
            try:
                text = path.read_text(encoding="utf-8").lower().replace("_", "-")
            except FileNotFoundError:
                continue
            if "langchain-openai" in text:
                return Outcome.passed(f"listed in {path.name}")
        return Outcome.failed(f"langchain-openai is not in {candidates[0].name}",
                              f"add `langchain-openai` to {candidates[0]}")


# The backend's tests run in a throw-away copy of its directory, so that `phase2 --check` (read-only) leaves
# the user's tree byte-identical whatever the tests or their plugins write (__pycache__, .pytest_cache,
# .coverage, .benchmarks, files a test drops in its cwd).
_TESTS_NOT_COPIED = frozenset({".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                               ".graphrag-migrate"})
_TESTS_LINKED = frozenset({".venv", "venv", ".tox", ".nox", "node_modules"})  # big, only read: linked, not copied
_TESTS_COPY_BUDGET = (20_000, 512 * 2**20)  # files, bytes: past that the tests run in place (see below)


class _TooLargeToCopy(Exception):
    pass


def _copy_for_tests(src: Path, dst: Path, budget: list[int]) -> None:
    """`src` copied to `dst`: files (with their modes), symlinks as links, virtualenvs linked; FIFOs,
    sockets and devices left out (never opened: a FIFO would block)."""
    import shutil

    os.mkdir(dst)
    with os.scandir(src) as entries:
        for entry in entries:
            if entry.name in _TESTS_NOT_COPIED:
                continue
            target = dst / entry.name
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                if entry.name in _TESTS_LINKED:
                    os.symlink(entry.path, target)
                else:
                    _copy_for_tests(Path(entry.path), target, budget)
            elif entry.is_file():
                budget[0] -= 1
                budget[1] -= entry.stat().st_size
                if budget[0] < 0 or budget[1] < 0:
                    raise _TooLargeToCopy()
                shutil.copy2(entry.path, target)


def _throwaway_backend(project: Path, backend: Path, into: Path) -> Path:
    """A copy of the backend directory under `into`, where the tests run. It sits where it sits in the
    project: each directory between the project root and it is mirrored with links to its other entries,
    so a root pytest.ini/pyproject.toml or a test reading `../docker/.env` finds them (read through the link)."""
    backend = Path(os.path.abspath(backend))
    try:
        rel = backend.relative_to(os.path.abspath(project))
    except ValueError:
        rel = Path(".")
    if rel == Path("."):
        target = into / (backend.name or "backend")
        _copy_for_tests(backend, target, list(_TESTS_COPY_BUDGET))
        return target
    source, mirror = project, into / (project.name or "project")
    os.mkdir(mirror)
    for part in rel.parts:
        with os.scandir(source) as entries:
            for entry in entries:
                if entry.name != part and entry.name != ".graphrag-migrate":
                    os.symlink(entry.path, mirror / entry.name)
        source, mirror = source / part, mirror / part
        if source == backend:
            _copy_for_tests(source, mirror, list(_TESTS_COPY_BUDGET))
        else:
            os.mkdir(mirror)
    return mirror


def _test_argv(command: str) -> list[str]:
    """The test command's argv; pytest gets `-p no:cacheprovider` (no .pytest_cache) unless it has it."""
    import shlex

    argv = shlex.split(command)
    runs_pytest = any(Path(a).name in ("pytest", "py.test") for a in argv[:1]) or any(
        argv[i] == "-m" and argv[i + 1] == "pytest" for i in range(len(argv) - 1))
    if runs_pytest and "no:cacheprovider" not in argv:
        argv += ["-p", "no:cacheprovider"]
    return argv


class BackendUnitTests(Step):
    id = "phase2.unit-tests"
    title = "the backend's own unit tests pass"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        import shutil
        import subprocess
        import tempfile

        command = ctx.settings.backend.test_command
        if not command:
            return Outcome.passed("backend.test_command is empty: not run")
        backend = ctx.path(ctx.settings.backend.dir)
        # No bytecode anywhere (also not through the links into the real tree).
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        scratch = tempfile.mkdtemp(prefix="graphrag-migrate-tests-")
        try:
            try:
                cwd, where = _throwaway_backend(ctx.project, backend, Path(scratch)), "a throw-away copy"
            except (_TooLargeToCopy, OSError) as exc:
                why = "too large to copy" if isinstance(exc, _TooLargeToCopy) else f"not copied ({exc.strerror})"
                cwd, where = backend, f"place ({backend.name} {why}: only bytecode and pytest's cache kept out)"
            try:
                proc = subprocess.run(_test_argv(command), cwd=cwd, capture_output=True, text=True, timeout=900,
                                      stdin=subprocess.DEVNULL, env=env)
            except FileNotFoundError:
                return Outcome.failed(f"cannot run `{command}`", "set backend.test_command")
            except subprocess.TimeoutExpired:
                return Outcome.failed(f"`{command}` did not finish in 15 min", "run it by hand")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # links are removed, never followed
        tail = (proc.stdout.strip().splitlines() or [""])[-1][:200] + f" (run in {where})"
        if "No module named" in proc.stderr and proc.returncode != 0:
            missing = proc.stderr.strip().splitlines()[-1][:120]
            return Outcome.warn(f"`{command}` could not start ({missing}): the backend's tests were not run")
        if proc.returncode == 5:  # pytest: no tests collected
            return Outcome.warn(f"no tests found by `{command}`", tests_exit_code=5)
        if proc.returncode != 0:
            return Outcome.failed(f"`{command}` failed: {tail}", "fix the backend's tests first",
                                  tests_exit_code=proc.returncode)
        return Outcome.passed(f"`{command}`: {tail}", tests_exit_code=0)


# The API key comes in through the environment, never argv: `ps` shows every process's command line.
CONTRACT_SCRIPT = """
import json, os, sys, time
from langchain_openai import ChatOpenAI
llm = ChatOpenAI(base_url=sys.argv[1], model=sys.argv[2], api_key=os.environ.get("VLLM_API_KEY") or "EMPTY",
                 max_tokens=8, streaming=True)
start, first, chunks = time.perf_counter(), None, 0
for chunk in llm.stream([("human", "Say hello.")]):
    if chunk.content:
        chunks += 1
        first = first or (time.perf_counter() - start) * 1000
print(json.dumps({"chunks": chunks, "ttft_ms": first}))
"""


class ClientContract(Step):
    id = "phase2.client-contract"
    title = "the backend's client (ChatOpenAI, streaming) gets a streamed answer from vLLM"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        import json
        import subprocess

        from migrator.adapters import vllm as vllm_launch
        from migrator.adapters.http import OpenAIServer

        v = ctx.settings.vllm
        base = v.url
        if not OpenAIServer(base).health(timeout=2).ok:
            return Outcome.failed(f"vLLM does not answer at {base}", "run phase1 first")
        python = ctx.settings.backend.python
        env = {**os.environ, "VLLM_API_KEY": vllm_launch.api_key(ctx.settings) or ""}
        try:
            proc = subprocess.run([python, "-c", CONTRACT_SCRIPT, base + "/v1", ctx.settings.model.served_name],
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)
        except FileNotFoundError:
            proc, why = None, f"{python} not found (backend.python)"
        except subprocess.TimeoutExpired:
            proc, why = None, f"ChatOpenAI in {python} did not finish in 120 s"
        else:
            why = f"langchain-openai not importable by {python}"
        if proc is not None and proc.returncode == 0:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            if result["chunks"] >= 1:
                return Outcome.passed(f"langchain_openai.ChatOpenAI streamed {result['chunks']} chunks, "
                                      f"TTFT {result['ttft_ms']:.0f} ms", client="langchain_openai", **result)
            return Outcome.failed("ChatOpenAI got no content from vLLM", "check VLLM_MODEL = model.served_name")
        if proc is not None and "No module named 'langchain_openai'" not in proc.stderr:
            return Outcome.failed(f"ChatOpenAI failed: {proc.stderr.strip().splitlines()[-1][:200]}",
                                  "check the backend's settings against vLLM")
        # The backend's python has no langchain-openai here: check the same HTTP contract ourselves.
        s = OpenAIServer(base, vllm_launch.api_key(ctx.settings)).stream(
            ctx.settings.model.served_name, [{"role": "user", "content": "Say hello."}], max_tokens=8, timeout=60)
        if not s.ok:
            return Outcome.failed(f"streamed answer from vLLM failed: {s.error}")
        return Outcome.warn(f"{why}: checked the same stream over HTTP "
                             f"({s.content_chunks} chunks, TTFT {s.ttft_ms or 0:.0f} ms)", client="http",
                             chunks=s.content_chunks, ttft_ms=s.ttft_ms)


def build(settings: Settings, options: dict) -> Phase:
    scaffold = bool(options.get("scaffold"))
    steps: list[Step] = [SettingsFields(scaffold)]
    if scaffold:
        steps.append(VllmChatModule())
    steps += [OpenAIClient(), Requirement(scaffold), BackendUnitTests(), ClientContract()]
    return Phase("phase2", "backend wiring", steps)
