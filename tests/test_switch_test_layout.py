"""Where phase2 --scaffold puts the backend's test of the switch, and in which style: the project's own.

pytest's configured testpaths win; a tests/ (or test/) directory of unittest-only modules, in a project with
no pytest in its dependencies or config, gets a unittest.TestCase module named the way its tests are named;
anything else gets plain pytest in backend/tests. And the runner's output is read for what the proof needs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from migrator.files.switch_test import VLLM_CASE, parse_run, run_argv, switch_test_layout

UNITTEST = "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_x(self):\n        self.assertTrue(True)\n"
PYTEST = "import pytest\n\n\ndef test_x():\n    assert True\n"


def backend(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return tmp_path


def test_unittest_only_tests_get_a_unittest_module_in_their_directory(tmp_path):
    root = backend(tmp_path, {"test/test_api.py": UNITTEST, "requirements.txt": "fastapi\nlangchain-ollama\n"})
    layout = switch_test_layout(root)
    assert (layout.path, layout.runner) == (root / "test" / "test_llm_backend_switch.py", "unittest")


def test_unittest_tests_named_name_test_give_the_switch_test_that_pattern(tmp_path):
    root = backend(tmp_path, {"tests/api_test.py": UNITTEST, "tests/settings_test.py": UNITTEST})
    assert switch_test_layout(root).path == root / "tests" / "llm_backend_switch_test.py"


@pytest.mark.parametrize("files", [
    {"requirements-dev.txt": "pytest==8.3\n"},
    {"requirements.txt": "fastapi\npytest-asyncio>=0.23\n"},
    {"pyproject.toml": '[project]\nname = "api"\n[project.optional-dependencies]\ntest = ["pytest>=8"]\n'},
    {"setup.cfg": "[tool:pytest]\naddopts = -q\n"},
    {"pytest.ini": "[pytest]\n"},
    {"tests/test_other.py": PYTEST},
])
def test_unittest_classes_in_a_pytest_project_stay_pytest(tmp_path, files):
    root = backend(tmp_path, {"tests/test_api.py": UNITTEST, **files})
    layout = switch_test_layout(root)
    assert (layout.path, layout.runner) == (root / "tests" / "test_llm_backend_switch.py", "pytest")


def test_no_tests_at_all_gets_plain_pytest_in_tests(tmp_path):
    layout = switch_test_layout(backend(tmp_path, {"app/main.py": "app = None\n"}))
    assert (layout.path, layout.runner) == (tmp_path / "tests" / "test_llm_backend_switch.py", "pytest")


def test_configured_testpaths_win(tmp_path):
    root = backend(tmp_path, {"pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["checks"]\n',
                              "tests/test_api.py": UNITTEST})
    assert switch_test_layout(root).path == root / "checks" / "test_llm_backend_switch.py"


VLLM_FAILS = textwrap.dedent(f"""
    import unittest


    class LlmBackendSwitchTest(unittest.TestCase):
        def {VLLM_CASE}(self):
            self.assertEqual(["ChatOllama"], ["ChatOpenAI"])

        def test_llm_backend_ollama_builds_the_ollama_models(self):
            pass
""")


@pytest.mark.parametrize("runner", ["unittest", "pytest"])
def test_a_real_run_is_read_as_counts_and_the_vllm_case(tmp_path, runner):
    """The runners' real output (not a transcript): one failing vLLM case, one passing case."""
    root = backend(tmp_path, {"tests/test_api.py": UNITTEST, "tests/test_llm_backend_switch.py": VLLM_FAILS})
    layout = switch_test_layout(root) if runner == "unittest" else \
        type(switch_test_layout(root))(root / "tests" / "test_llm_backend_switch.py", "pytest")
    assert layout.runner == runner
    proc = subprocess.run(run_argv(sys.executable, layout, root), cwd=root, capture_output=True, text=True,
                          timeout=120, env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"})
    result = parse_run(runner, proc.returncode, proc.stdout, proc.stderr)
    assert (result.exit_code, result.failed, result.passed, result.vllm_case_failed) == (1, 1, 1, True), \
        proc.stdout + proc.stderr
    assert result.summary() == "1 failed, 1 passed"
    (root / "tests" / "test_llm_backend_switch.py").write_text(VLLM_FAILS.replace('["ChatOpenAI"]', '["ChatOllama"]'))
    proc = subprocess.run(run_argv(sys.executable, layout, root), cwd=root, capture_output=True, text=True,
                          timeout=120, env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"})
    passed = parse_run(runner, proc.returncode, proc.stdout, proc.stderr)
    assert (passed.exit_code, passed.summary(), passed.vllm_case_failed) == (0, "2 passed", False)
