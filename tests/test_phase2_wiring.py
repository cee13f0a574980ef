"""phase2 --scaffold wires LLM_BACKEND into each fixture project in its own style, and the wiring works.

Works = the project's own factory, imported from its own source in a fresh interpreter (the tool's
Python, which has langchain-ollama and langchain-openai), builds under LLM_BACKEND=vllm an OpenAI-
compatible model on VLLM_BASE_URL/VLLM_MODEL (ChatOpenAI, or OpenAI for a completion model), and, with
LLM_BACKEND unset or "ollama", exactly the Ollama models it built before the scaffold. The same probe on
the un-wired copy shows the test can fail: there, LLM_BACKEND=vllm changes nothing. The scaffolded test of
the switch (pytest, or unittest where the project's tests are) is run with the backend's own Python — the
3.12-only shape in a cached 3.12 venv — by phase2's unit-tests step, which proves it fails on the
pre-scaffold tree and passes on the wired one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import python_with_grammar, tree_digest
from migrator.core.errors import ExitCode
from migrator.files.envfile import EnvFile

PROJECTS = Path(__file__).resolve().parent / "projects"
SHAPES = sorted(p.parent.name for p in PROJECTS.glob("*/expected.yaml"))
VLLM_ENV = {"LLM_BACKEND": "vllm", "VLLM_BASE_URL": "http://vllm.test:8000/v1", "VLLM_MODEL": "served-model"}

# Records each LangChain model constructed (class and arguments) while building the project's LLM, once
# per environment in argv[3], the project's modules imported afresh each time (they read settings on import).
PROBE = r"""
import importlib, json, os, sys
records = []
def watch(cls):
    original = cls.__init__
    def init(self, *args, **kwargs):
        records.append({"class": type(self).__name__, "kwargs": {k: repr(v) for k, v in sorted(kwargs.items())}})
        original(self, *args, **kwargs)
    cls.__init__ = init
from langchain_ollama import ChatOllama, OllamaLLM
from langchain_openai import ChatOpenAI, OpenAI
for cls in (ChatOllama, OllamaLLM, ChatOpenAI, OpenAI):
    watch(cls)
packages = {p.split(".")[0] for p in os.listdir(".") if p.endswith(".py") or os.path.isdir(p)}
results = []
for env in json.loads(sys.argv[3]):
    for key in ("LLM_BACKEND", "VLLM_BASE_URL", "VLLM_MODEL"):
        os.environ.pop(key, None)
    os.environ.update(env)
    for name in [n for n in sys.modules if n.split(".")[0] in packages]:
        del sys.modules[name]
    records = []
    try:
        eval(sys.argv[2], vars(importlib.import_module(sys.argv[1])))
    except Exception as exc:
        results.append({"error": f"{type(exc).__name__}: {exc}", "records": records})
    else:
        results.append({"records": records})
print(json.dumps(results))
"""


def expected(shape: str) -> dict:
    return yaml.safe_load((PROJECTS / shape / "expected.yaml").read_text(encoding="utf-8"))


def switch_test_of(shape: str) -> tuple[str, str]:
    """Where the scaffolded switch test lands (relative to the project) and the runner the project uses."""
    e = expected(shape)
    return (e["factory"].get("switch_test", f"{e['backend']['dir']}/tests/test_llm_backend_switch.py"),
            e["factory"].get("runner", "pytest"))


@pytest.fixture
def shape_python(project, request) -> str:
    """An interpreter that can import the shape's code with its packages: the tool's own when it is the
    target Python or newer, a cached 3.12 venv for the 3.12 shape (skipped with pip's error if none)."""
    shape, _root = project
    want = tuple(int(x) for x in str(expected(shape)["backend"]["python"]).split("."))
    if sys.version_info[:2] >= want:
        return sys.executable
    if want == (3, 12):
        return request.getfixturevalue("py312_python")
    pytest.skip(f"{shape} targets Python {expected(shape)['backend']['python']}: no venv recipe for it")


def suite_command(shape: str, python: str) -> str:
    """The backend's own test command, as its project runs it, with its Python."""
    return f"{python} -m unittest discover -s tests -t ." if switch_test_of(shape)[1] == "unittest" else \
        f"{python} -m pytest -q"


def probe(project: Path, shape: str, python: str, *envs: dict[str, str]) -> list[dict]:
    e = expected(shape)
    clean = {k: v for k, v in os.environ.items() if k not in VLLM_ENV and not k.startswith(("OLLAMA", "APP_",
                                                                                             "GRAPHRAG_"))}
    proc = subprocess.run([python, "-c", PROBE, e["factory"]["module"],
                           e["factory"]["build"], json.dumps(envs)],
                          cwd=project / e["backend"]["import_root"], capture_output=True, text=True, timeout=180,
                          env={**clean, "PYTHONPATH": str(project / e["backend"]["import_root"]),
                               "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_backend_tests(project: Path, shape: str, python: str) -> subprocess.CompletedProcess:
    """The project's own runner over its whole suite (the switch test included), verbose: stdout+stderr."""
    backend = project / expected(shape)["backend"]["dir"]
    rel, runner = switch_test_of(shape)
    argv = [python, "-m", "unittest", "discover", "-v", "-s", "tests", "-t", "."] if runner == "unittest" else \
        [python, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", str(Path(rel).relative_to(
            expected(shape)["backend"]["dir"]))]
    proc = subprocess.run(argv, cwd=backend, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout + proc.stderr, "")


@pytest.fixture
def project(tmp_path, request):
    shape = request.param
    dst = tmp_path / shape
    shutil.copytree(PROJECTS / shape, dst)
    return shape, dst


def scaffold(cli, project: Path, *extra: str, tests: str = "", python: str = "python3"):
    init = cli("init", "--project", str(project), "--yes")
    assert init.exit_code == 0, init.stderr
    return cli("--project", str(project), "--json", "--set", f"backend.test_command={tests}", "--set",
               f"backend.python={python}", "phase2", "--scaffold", *extra)


def steps(result) -> dict:
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}


def checked(cli, project: Path, *extra: str, tests: str = "", python: str | None = None) -> dict:
    chosen = ("--set", f"backend.python={python}") if python else ()
    return steps(cli("--project", str(project), "--json", "--set", f"backend.test_command={tests}", *chosen,
                     *extra, "phase2", "--check"))


@pytest.mark.parametrize("project", SHAPES, indirect=True)
def test_scaffold_wires_every_shape_and_its_factory_switches(project, cli, tmp_path, shape_python):
    shape, root = project
    before_unset, before_vllm = probe(root, shape, shape_python, {}, VLLM_ENV)
    # un-wired: LLM_BACKEND=vllm changes nothing — the checks below could fail
    assert before_vllm == before_unset
    ollama_sites = [r for r in before_unset["records"] if r["class"] in ("ChatOllama", "OllamaLLM")]
    assert ollama_sites

    result = scaffold(cli, root, python=shape_python)  # the project's Python also judges its grammar
    # only the client contract is left (no vLLM runs in this test)
    assert result.exit_code == ExitCode.CHECK_FAILED and "vLLM does not answer" in result.stderr, result.stderr
    # the unit-tests step runs the suite and proves the switch test on both trees, with the backend's Python
    digest = tree_digest(root)
    unit = checked(cli, root, tests=suite_command(shape, shape_python), python=shape_python)["phase2.unit-tests"]
    assert tree_digest(root) == digest  # --check ran both trees in throw-away copies
    assert unit["status"] == "ok", unit
    assert unit["measurements"]["switch_test_wired"] == "3 passed", unit
    assert unit["measurements"]["switch_test_unwired"].startswith(("1 failed", "2 failed")), unit
    assert "switch test: fails un-wired (" in unit["message"] and "), passes wired (3 passed)" in unit["message"]
    found = checked(cli, root, python=shape_python)
    for step in ("phase2.settings", "phase2.llm", "phase2.requirements"):
        assert found[step]["status"] == "ok", (step, found[step])

    after_unset, after_ollama, on_vllm, bogus = probe(root, shape, shape_python, {}, {"LLM_BACKEND": "ollama"},
                                                      VLLM_ENV, {**VLLM_ENV, "LLM_BACKEND": "vlm"})
    assert after_unset == before_unset == after_ollama  # Ollama exactly as before, argument for argument
    assert "error" not in on_vllm, on_vllm
    switched = [r for r in on_vllm["records"] if r["class"] in ("ChatOpenAI", "OpenAI")
                and r["kwargs"].get("base_url") == repr(VLLM_ENV["VLLM_BASE_URL"])]
    assert len(switched) == len(ollama_sites), on_vllm
    for record in switched:
        assert record["kwargs"]["model"] == repr(VLLM_ENV["VLLM_MODEL"]) and record["kwargs"]["streaming"] == "True"
    wanted = {"ChatOllama": "ChatOpenAI", "OllamaLLM": "OpenAI"}
    assert sorted(r["class"] for r in switched) == sorted(wanted[r["class"]] for r in ollama_sites)
    assert not [r for r in on_vllm["records"] if r["class"] in ("ChatOllama", "OllamaLLM")]
    assert "LLM_BACKEND='vlm'" in bogus.get("error", ""), bogus

    # the switch test is where the project keeps its tests, in its style; a unittest project's own
    # `unittest discover` finds it as a TestCase
    rel, runner = switch_test_of(shape)
    assert (root / rel).is_file()
    if runner == "unittest":
        wired = run_backend_tests(root, shape, shape_python)
        assert wired.returncode == 0, wired.stdout[-3000:]
        assert re.search(r"^test_llm_backend_vllm_builds_openai_compatible_models_on_vllm "
                         r"\(.*LlmBackendSwitchTest.*\) \.\.\. ok$", wired.stdout, re.M), wired.stdout
        assert "pytest" not in (root / rel).read_text()


@pytest.mark.parametrize("project", SHAPES, indirect=True)
def test_dry_run_shows_the_bytes_the_apply_writes_and_writes_nothing(project, cli, tmp_path):
    shape, root = project
    grammar = python_with_grammar(str(expected(shape)["backend"]["python"]))
    if grammar is None:
        pytest.skip(f"{shape} targets Python {expected(shape)['backend']['python']}: none here to parse it with")
    parse = ("--set", f"backend.python={grammar}")  # the project's Python judges what this one cannot parse
    twin = tmp_path / "twin"
    shutil.copytree(root, twin)
    result = scaffold(cli, root, "--dry-run", *parse)
    assert steps(result)["phase2.wiring"]["status"] == "would run"
    init_only = {p for p in root.rglob("*") if p.is_file()}
    digest = tree_digest(root)
    diffs = {d["file"]: d["diff"] for d in json.loads(result.stdout)["diffs"]}
    scaffold(cli, twin, *parse)
    assert checked(cli, twin, *parse)["phase2.llm"]["status"] == "ok"
    assert tree_digest(root) == digest and {p for p in root.rglob("*") if p.is_file()} == init_only
    for rel, diff in diffs.items():
        written = (twin / rel).read_text(encoding="utf-8").splitlines()
        added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
        assert added and all(line in written for line in added), (rel, added)
    changed = {str(p.relative_to(twin)) for p in twin.rglob("*") if p.is_file()
               and ".graphrag-migrate" not in p.parts and p.name != "migrate.yaml"
               and (not (root / p.relative_to(twin)).exists()
                    or (root / p.relative_to(twin)).read_bytes() != p.read_bytes())}
    assert changed == set(diffs), (changed, set(diffs))


@pytest.mark.parametrize("project", ["envlist-getenv"], indirect=True)
def test_a_refusal_anywhere_writes_nothing(project, cli):
    """All-or-nothing: the call site's settings import cannot be made (the constants come from nowhere
    the tool can name), so neither the settings file nor the requirements line is written either."""
    shape, root = project
    llm = root / "backend" / "app" / "llm.py"
    llm.write_text(llm.read_text().replace("base_url=OLLAMA_HOST,", 'base_url="http://ollama:11434",')
                   .replace("model=LLM_MODEL,", 'model="llama3.1:8b",')
                   .replace("temperature=LLM_TEMPERATURE,", "temperature=0.2,")
                   .replace("num_ctx=NUM_CTX,", "num_ctx=8192,"))
    assert cli("init", "--project", str(root), "--yes").exit_code == 0
    digest = tree_digest(root)
    result = cli("--project", str(root), "--json", "--set", "backend.test_command=", "phase2", "--scaffold")
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "nothing was written" in result.stderr and "cannot tell how ChatOllama" in result.stderr
    assert tree_digest(root) == digest


def test_a_switch_test_that_passes_on_the_unwired_tree_fails_the_unit_tests_step(tmp_path, cli):
    """The proof runs the test on the pre-scaffold tree rebuilt from the scaffold's backups: a test that
    passes there too (here: made vacuous by hand) cannot tell a working migration from a broken one."""
    root = tmp_path / "p"
    shutil.copytree(PROJECTS / "envlist-getenv", root)
    scaffold(cli, root)
    test_file = root / "backend" / "tests" / "test_llm_backend_switch.py"
    original = test_file.read_text()
    tests = f"{sys.executable} -m pytest -q"
    # as written, the step passes and says how each tree fared
    proven = checked(cli, root, tests=tests, python=sys.executable)["phase2.unit-tests"]
    assert proven["status"] == "ok" and proven["measurements"]["switch_test_unwired"] == "2 failed, 1 passed"
    vacuous = original.replace("    models = built(monkeypatch, VLLM_ENV)\n", "    return\n")
    assert vacuous != original
    test_file.write_text(vacuous)
    unit = checked(cli, root, tests=tests, python=sys.executable)["phase2.unit-tests"]
    assert unit["status"] == "missing", unit  # --check names a failed check "missing"
    assert "passes its LLM_BACKEND=vllm case on the un-wired backend too (1 failed, 2 passed): it cannot tell a " \
           "working migration from a broken one" in unit["message"], unit
    assert unit["measurements"]["switch_test_wired"] == "3 passed"


def test_rollback_removes_the_switch_module_and_restores_every_file(tmp_path, cli):
    root = tmp_path / "p"
    shutil.copytree(PROJECTS / "envlist-getenv", root)
    assert cli("init", "--project", str(root), "--yes").exit_code == 0
    digest = tree_digest(root)
    scaffold_result = cli("--project", str(root), "--set", "backend.test_command=", "phase2", "--scaffold")
    assert (root / "backend" / "app" / "llm_switch.py").exists(), scaffold_result.stderr
    rollback = cli("--project", str(root), "--json", "rollback", "--wait", "1")
    actions = {a["name"]: a for a in json.loads(rollback.stdout)["actions"]}
    # nothing runs here: the probes of Ollama and the backend fail, every file action succeeds
    assert {name for name, a in actions.items() if not a["ok"]} == {"Ollama answers", "backend answers"}
    assert actions["file backend/app/llm_switch.py"]["result"] == "removed (graphrag-migrate created it)"
    assert not (root / "backend" / "app" / "llm_switch.py").exists()
    assert tree_digest(root) == digest  # every user file as init left it, the new module gone


# ---- dependency files ---------------------------------------------------------------------------------
from migrator.files.pywire import dependency_text, listed  # noqa: E402


@pytest.mark.parametrize("name, text, table", [
    ("pyproject.toml", '[project]\nname = "api"\ndependencies = [\n    "fastapi",\n    "langchain-ollama"\n]\n',
     ("project", "dependencies")),
    ("pyproject.toml", '[project]\nname = "api"\ndependencies = ["fastapi", "langchain-ollama"]  # pinned\n'
                       '\n[tool.x]\ny = 1\n', ("project", "dependencies")),
    ("pyproject.toml", '[project]\nname = "api"\ndependencies = []\n', ("project", "dependencies")),
    ("pyproject.toml", '[tool.poetry]\nname = "api"\n\n[tool.poetry.dependencies]\npython = "^3.11"\n'
                       'langchain-ollama = "^0.2"\n\n[build-system]\nrequires = ["poetry-core"]\n',
     ("tool", "poetry", "dependencies")),
    ("Pipfile", '[[source]]\nurl = "https://pypi.org/simple"\n\n[packages]\nfastapi = "*"\nlangchain-ollama = "*"\n'
                '\n[requires]\npython_version = "3.11"\n', ("packages",)),
])
def test_the_dependency_lands_in_the_projects_own_list(name, text, table):
    updated, why = dependency_text(Path(name), text)
    assert why is None
    doc = tomllib.loads(updated)
    for key in table:
        doc = doc[key]
    names = [d.split("=")[0].strip() for d in doc] if isinstance(doc, list) else list(doc)
    assert "langchain-openai" in names and ("langchain-ollama" in names or "langchain-ollama" not in text)
    assert listed(Path(name), updated) and not listed(Path(name), text)
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith("dependencies = [")]
    assert all(line in updated.splitlines() or line.rstrip(",") + "," in updated.splitlines() for line in kept)


def test_a_dependency_file_it_cannot_edit_is_refused_by_name():
    assert dependency_text(Path("setup.cfg"), "[options]\ninstall_requires =\n    fastapi\n")[0] is None
    assert "neither" in dependency_text(Path("pyproject.toml"), '[tool.black]\nline-length = 100\n')[1]
    assert "not valid TOML" in dependency_text(Path("pyproject.toml"), "[project\n")[1]


@pytest.mark.parametrize("project", ["provider-switch"], indirect=True)
def test_a_projects_own_provider_switch_stays_on_ollama_and_llm_backend_picks_vllm(project, cli):
    """select_llm goes inside the project's Ollama branch: LLM_PROVIDER stays `ollama` and LLM_BACKEND —
    the one key phase3, phase4 and rollback set — chooses vLLM; the project's own openai branch is its own."""
    import ast

    from migrator.app.api import context
    from phases.phase3 import BACKEND_KEY, desired_env

    shape, root = project
    assert scaffold(cli, root).exit_code == ExitCode.CHECK_FAILED  # only vLLM's stream is left
    assert checked(cli, root)["phase2.llm"]["status"] == "ok"
    tree = ast.parse((root / "backend/src/graphrag_api/llm.py").read_text(encoding="utf-8"))
    branch = next(n for n in ast.walk(tree) if isinstance(n, ast.If) and "llm_provider == 'ollama'" in ast.unparse(n.test))
    routed = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "select_llm"]
    assert len(routed) == 1 and routed[0] in list(ast.walk(branch))

    vllm, ollama, unset, openai = probe(root, shape, sys.executable, {"LLM_PROVIDER": "ollama", **VLLM_ENV},
                                        {"LLM_PROVIDER": "ollama", "LLM_BACKEND": "ollama"},
                                        {"LLM_PROVIDER": "ollama"}, {"LLM_PROVIDER": "openai", **VLLM_ENV})
    assert [(r["class"], r["kwargs"]["base_url"]) for r in vllm["records"]] == [
        ("ChatOpenAI", repr(VLLM_ENV["VLLM_BASE_URL"]))]
    assert [r["class"] for r in ollama["records"]] == [r["class"] for r in unset["records"]] == ["ChatOllama"]
    assert [r["class"] for r in openai["records"]] == ["ChatOpenAI"]
    assert openai["records"][0]["kwargs"]["base_url"] != repr(VLLM_ENV["VLLM_BASE_URL"])  # the project's own
    # the switch and the rollback move LLM_BACKEND only; the env file's LLM_PROVIDER stays ollama
    assert BACKEND_KEY == "LLM_BACKEND" and "LLM_PROVIDER" not in desired_env(context(root))
    assert EnvFile.from_bytes((root / ".env").read_bytes()).get("LLM_PROVIDER") == "ollama"


@pytest.mark.parametrize("project", ["py312-dockerfile"], indirect=True)
def test_the_default_test_command_runs_with_backend_python(project, cli, shape_python):
    """init's test command (`python3 -m pytest …`) on a 3.12 project, backend.python a 3.12: the suite runs
    with backend.python, not this PATH's python3 (3.11, which cannot even parse the code)."""
    from phases.phase2 import with_backend_python

    _shape, root = project
    scaffold(cli, root, python=shape_python)  # its suite not run here: --check below runs init's command
    assert "test_command" not in (root / "migrate.yaml").read_text()  # init's: the default applies
    unit = steps(cli("--project", str(root), "--json", "--set", f"backend.python={shape_python}", "phase2",
                     "--check"))["phase2.unit-tests"]
    assert unit["status"] == "ok" and unit["message"].startswith(f"`{shape_python} -m pytest"), unit
    assert unit["measurements"]["switch_test_wired"] == "3 passed", unit
    default = "python3 -m pytest -q -p no:cacheprovider"
    assert with_backend_python("python -m unittest discover -s tests", "/opt/py/bin/python3.12") == \
        "/opt/py/bin/python3.12 -m unittest discover -s tests"
    assert with_backend_python("tox -e py312", "/opt/py/bin/python3.12") == "tox -e py312"  # not a bare python
    assert with_backend_python(default, "python3") == default
