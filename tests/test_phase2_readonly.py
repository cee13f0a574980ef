"""`phase2 --check` is read-only, the backend's own unit tests included (issue #14, item 16): they ran in
the user's tree and left __pycache__/, .pytest_cache/ and whatever a plugin or a test writes in its cwd
(.benchmarks/, .coverage). Judged by hashing every file and every directory listing of a project whose
backend has real pytest tests, before and after."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from migrator.adapters.net import free_port
from migrator.app.rehearse import make_sandbox

TESTS = '''
from pathlib import Path

from src.core import config  # an import from the backend: bytecode would land in src/core/__pycache__


def test_settings_have_a_default():
    assert config.Settings().ollama_base_url


def test_the_compose_directory_is_where_it_is_in_the_project():
    assert (Path(__file__).resolve().parents[2] / "docker" / ".env").is_file()


def test_writes_in_its_cwd_like_a_plugin():
    Path(".benchmarks").mkdir(exist_ok=True)
    Path(".benchmarks", "0001.json").write_text("{}")
    Path(".coverage").write_text("x")
'''


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (directories with their listing, files with their sha256, links with their
    target): a new __pycache__ or a changed byte both show."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        out[str(here.relative_to(root)) + "/"] = "\n".join(sorted(dirnames + filenames))
        for name in filenames:
            path = here / name
            out[str(path.relative_to(root))] = (f"-> {os.readlink(path)}" if path.is_symlink()
                                                else hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    make_sandbox(root, free_port(), free_port(), free_port())  # files only: no server is started
    (root / "backend" / "src" / "__init__.py").write_text("")
    (root / "backend" / "src" / "core" / "__init__.py").write_text("")
    (root / "backend" / "tests").mkdir()
    (root / "backend" / "tests" / "__init__.py").write_text("")
    (root / "backend" / "tests" / "conftest.py").write_text("import sys, pathlib\n"
                                                            "sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))\n")
    (root / "backend" / "tests" / "test_unit.py").write_text(TESTS)
    (root / "backend" / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    return root


def unit_tests_step(result) -> dict:
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}["phase2.unit-tests"]


@pytest.mark.parametrize("command", [f"{sys.executable} -m pytest -q", f"{sys.executable} -m pytest -q -p no:cacheprovider"])
def test_phase2_check_leaves_every_file_and_listing_as_it_was(project, cli, command):
    before = snapshot(project)
    result = cli("--project", str(project), "--json", "--set", f"backend.test_command={command}", "phase2", "--check")
    after = snapshot(project)
    assert after == before, sorted(set(after) ^ set(before)) or [k for k in after if after[k] != before[k]]
    step = unit_tests_step(result)
    assert step["status"] in ("ok", "passed"), step  # the tests really ran (3 of them) and passed
    assert "3 passed" in step["message"] and "throw-away copy" in step["message"], step


def test_a_failing_test_is_still_reported_and_the_tree_left_alone(project, cli):
    (project / "backend" / "tests" / "test_broken.py").write_text("def test_broken():\n    assert 1 == 2\n")
    before = snapshot(project)
    result = cli("--project", str(project), "--json", "--set", f"backend.test_command={sys.executable} -m pytest -q",
                 "phase2", "--check")
    step = unit_tests_step(result)
    assert step["status"] in ("failed", "missing") and "1 failed" in step["message"], step
    assert snapshot(project) == before


def test_pytest_gets_no_cacheprovider_once_and_other_runners_nothing():
    from phases.phase2 import _test_argv

    assert _test_argv("python3 -m pytest -q") == ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    assert _test_argv("pytest -x") == ["pytest", "-x", "-p", "no:cacheprovider"]
    assert _test_argv(".venv/bin/pytest") == [".venv/bin/pytest", "-p", "no:cacheprovider"]
    assert _test_argv("python3 -m pytest -p no:cacheprovider") == ["python3", "-m", "pytest", "-p", "no:cacheprovider"]
    assert _test_argv("python3 -m unittest discover") == ["python3", "-m", "unittest", "discover"]
    assert _test_argv("make test") == ["make", "test"]
