"""phase3 on projects as they are found: vLLM run as a process (no compose service to render) and an env
file that is missing with only a template shipped beside it."""

import json

from conftest import tree_digest
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger
from migrator.files.envfile import EnvFile


def test_process_runtime_phase3_renders_no_compose_service(sandbox, cli):
    before = tree_digest(sandbox)
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    dry = json.loads(cli("--project", str(sandbox), "--json", "phase3", "--dry-run").stdout)
    assert [d["file"] for d in dry["diffs"]] == ["docker/.env"]
    result = cli("--project", str(sandbox), "--json", "phase3")
    assert result.exit_code == 0, result.stderr
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    for step in ("phase3.compose-file", "phase3.compose-env", "phase3.compose-config"):
        assert steps[step]["status"] == "satisfied" or steps[step]["status"] == "passed", steps[step]
        assert steps[step]["message"] == "runtime process: vLLM is not a compose service", steps[step]
    assert not (sandbox / "docker" / "docker-compose.vllm.yml").exists()
    env = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes())
    assert env.get("COMPOSE_FILE") is None and env.get("VLLM_BASE_URL")  # the endpoint, still
    assert set(Ledger(sandbox).read_state()["files"]) == {"docker/.env"}  # the only file phase3 wrote
    assert cli("--project", str(sandbox), "rollback", "--wait", "5").exit_code == 0
    assert tree_digest(sandbox) == before


def only_a_template(sandbox):
    env = sandbox / "docker" / ".env"
    env.rename(sandbox / "docker" / ".env.example")


def test_missing_env_file_with_a_template_fails_the_dry_run_naming_the_copy(sandbox, cli):
    only_a_template(sandbox)
    result = cli("--project", str(sandbox), "--json", "phase3", "--dry-run")
    assert result.exit_code == ExitCode.CHECK_FAILED
    step = {s["id"]: s for s in json.loads(result.stdout)["steps"]}["phase3.env-file"]
    assert step["status"] == "failed" and "docker/.env not found" in step["message"]
    assert "docker/.env.example" in step["message"] and "cp docker/.env.example docker/.env" in step["fix"]


def test_missing_env_file_stops_phase3_before_it_writes_anything(sandbox, cli):
    only_a_template(sandbox)
    before = tree_digest(sandbox)
    result = cli("--project", str(sandbox), "phase3")
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "cp docker/.env.example docker/.env" in result.stderr, result.stderr
    assert tree_digest(sandbox) == before
    assert Ledger(sandbox).read_state()["phases"]["phase3"]["failed_step"] == "phase3.env-file"
    assert Ledger(sandbox).read_state()["files"] == {}


def test_status_reports_a_missing_env_file(sandbox, cli):
    only_a_template(sandbox)
    result = cli("--project", str(sandbox), "--json", "status")
    assert result.exit_code == ExitCode.CHECK_FAILED
    problems = json.loads(result.stdout)["problems"]
    assert any("docker/.env not found" in p and "cp docker/.env.example docker/.env" in p for p in problems), problems


def test_missing_env_file_without_a_template_names_project_env_file(sandbox, cli):
    (sandbox / "docker" / ".env").unlink()
    result = cli("--project", str(sandbox), "--json", "phase3", "--dry-run")
    step = {s["id"]: s for s in json.loads(result.stdout)["steps"]}["phase3.env-file"]
    assert result.exit_code == ExitCode.CHECK_FAILED and "project.env_file" in step["fix"]
