"""The backend's Python is judged by the grammar of the Python the project targets (issue #13).

A file this tool's Python cannot parse is valid when the project's own Python (`backend.python`, of
`backend.python_version`) parses it — it is then read with those lines blanked — and an error, naming the
file:line and the Python that said so, when that one rejects it too. Where no such Python is at hand, the
one needed is named. The cases run real interpreters: a PEP 701 f-string (3.11 rejects it, 3.12 accepts it)
and a plain syntax error (both reject it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import python_with_grammar
from migrator.core.errors import ExitCode
from migrator.files.pysource import HERE, Grammar, PyIndex, parse_with

PROJECTS = Path(__file__).resolve().parent / "projects"
PEP701 = 'def names(items):\n    return f"known: {", ".join(items)}"\n'
BROKEN = 'def names(items:\n    return items\n'


def python312() -> str:
    """A Python 3.12 or newer to judge with, or a clean skip where there is none (or where this one is)."""
    if sys.version_info >= (3, 12):
        pytest.skip("this Python parses PEP 701 itself: nothing for the target's grammar to decide")
    found = python_with_grammar("3.12")
    if found is None:
        pytest.skip("no Python 3.12 or newer on this machine to parse the project's grammar with")
    return found


def backend(tmp_path: Path, **files: str) -> Path:
    root = tmp_path / "backend"
    root.mkdir()
    for name, text in files.items():
        (root / f"{name}.py").write_text(text, encoding="utf-8")
    return root


def test_a_file_the_target_python_parses_is_kept_and_one_it_rejects_names_file_line_and_python(tmp_path):
    py312 = python312()
    root = backend(tmp_path, newer=PEP701, broken=BROKEN, plain="X = 1\n")
    index = PyIndex(tmp_path, root, root)
    assert set(index.rejected) == {"backend/newer.py", "backend/broken.py"}  # this Python rejects both

    problems = index.judge(Grammar("3.12", py312))

    version = parse_with(py312, {})[0]
    assert problems == [f"backend/broken.py:1 does not parse under Python {version} ({py312}): '(' was never closed"]
    assert index.modules["newer"].judged_by == py312  # valid for the project: still read
    assert "broken" not in index.modules and "backend/broken.py" in index.unparsed
    assert "plain" in index.modules


def test_without_the_target_python_the_one_needed_is_named(tmp_path):
    root = backend(tmp_path, newer=PEP701)
    if sys.version_info >= (3, 12):
        pytest.skip("this Python parses PEP 701 itself")
    missing = str(tmp_path / "no-such-python3.12")
    for python, why in ((missing, f"{missing} not found"), (sys.executable, f"{sys.executable} is Python {HERE}")):
        index = PyIndex(tmp_path, root, root)
        assert index.judge(Grammar("3.12", python)) == [
            f"backend/newer.py:2 does not parse under Python {HERE} (this tool's); the project targets 3.12 — "
            f"set backend.python to a python3.12 executable ({why})"]
        assert "newer" in index.modules and not index.modules["newer"].judged_by  # read, but not vouched for


def test_a_project_targeting_this_python_or_older_is_judged_by_this_python(tmp_path):
    root = backend(tmp_path, newer=PEP701)
    index = PyIndex(tmp_path, root, root)
    if not index.rejected:
        pytest.skip("this Python parses PEP 701 itself")
    problems = index.judge(Grammar(HERE, "python-that-is-never-asked"))
    assert len(problems) == 1 and problems[0].startswith(
        f"backend/newer.py:2 does not parse under Python {HERE} (this tool's; the project targets {HERE}): ")
    assert "newer" not in index.modules


def fixture(tmp_path: Path) -> Path:
    root = tmp_path / "py312-dockerfile"
    shutil.copytree(PROJECTS / "py312-dockerfile", root)
    return root


def phase2(cli, root: Path, *args: str):
    """The run and its JSON: the steps of a check, or the one error that stopped an apply."""
    result = cli("--project", str(root), "--json", "--set", "backend.test_command=", *args)
    doc = json.loads(result.stdout)
    return result, {s["id"]: s for s in doc.get("steps", [])} or doc


def test_phase2_on_a_312_project_names_the_python_it_needs_then_scaffolds_with_it(cli, tmp_path):
    py312 = python312()
    root = fixture(tmp_path)
    assert cli("init", "--project", str(root), "--yes").exit_code == 0
    assert 'python_version: "3.12"' in (root / "migrate.yaml").read_text()

    result, steps = phase2(cli, root, "--set", f"backend.python={sys.executable}", "phase2", "--check")
    assert result.exit_code == ExitCode.CHECK_FAILED
    step = steps["phase2.settings"]
    assert step["message"] == f"backend/app/llm.py:15 does not parse under Python {HERE} (this tool's); the project targets 3.12"
    assert step["fix"].startswith("set backend.python to a python3.12 executable")

    llm = (root / "backend/app/llm.py").read_text()
    phase2(cli, root, "--set", f"backend.python={py312}", "phase2", "--scaffold")  # stops at vLLM's stream
    _, steps = phase2(cli, root, "--set", f"backend.python={py312}", "phase2", "--check")
    for step in ("phase2.settings", "phase2.llm", "phase2.requirements"):
        assert steps[step]["status"] == "ok", steps[step]
    wired = (root / "backend/app/llm.py").read_text()
    assert wired != llm and 'f"You answer questions about the knowledge graph. Known entities: {", ".join(' in wired
    assert parse_with(py312, {"llm.py": wired})[1] == {"llm.py": None}  # the edit is valid for the project


def test_phase2_refuses_a_file_the_projects_python_rejects_too_and_writes_nothing(cli, tmp_path):
    py312 = python312()
    root = fixture(tmp_path)
    assert cli("init", "--project", str(root), "--yes").exit_code == 0
    llm = root / "backend/app/llm.py"
    llm.write_text(llm.read_text() + "\n\ndef broken(:\n    pass\n")
    before = {p: p.read_bytes() for p in (root / "backend").rglob("*") if p.is_file()}

    result, doc = phase2(cli, root, "--set", f"backend.python={py312}", "phase2", "--scaffold")

    assert result.exit_code == ExitCode.CHECK_FAILED
    line = llm.read_text().splitlines().index("def broken(:") + 1
    version = parse_with(py312, {})[0]
    assert f"backend/app/llm.py:{line} does not parse under Python {version} ({py312}): " in doc["error"]
    assert doc["fix"] == "fix it first; nothing was written"
    assert (
        True)
    assert {p: p.read_bytes() for p in (root / "backend").rglob("*") if p.is_file()} == before


def test_init_writes_the_target_version_and_the_python_it_found_for_it(cli, tmp_path, monkeypatch):
    py312 = python312()
    if parse_with(py312, {})[0] != "3.12":
        pytest.skip(f"{py312} is not 3.12: init looks for python3.12 itself")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.12").symlink_to(py312)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    root = fixture(tmp_path)
    result = cli("init", "--project", str(root), "--yes", "--json")
    doc = json.loads(result.stdout)
    assert doc["values"]["backend.python_version"] == "3.12"
    assert doc["values"]["backend.python"] == str(bin_dir / "python3.12")
    assert not any("set backend.python" in line for line in doc["text"].splitlines())  # judged: nothing to ask
