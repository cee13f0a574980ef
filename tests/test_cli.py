"""The command line: help for every command, --json contract, exit codes, read-only status."""

import json

import pytest

from conftest import tree_digest
from migrator.core.errors import ExitCode

COMMANDS = ["phase1", "phase2", "phase3", "phase4", "status", "rollback", "bench", "rehearse", "sim"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_that_exits_0(command, cli):
    result = cli(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout
    if command.startswith("phase"):
        assert "--check" in result.stdout and "--dry-run" in result.stdout and "Touches" in result.stdout


def test_sim_without_a_server_shows_its_help_and_exits_2(cli):
    result = cli("sim")
    assert result.exit_code == ExitCode.USAGE
    assert "Usage" in result.output and "vllm" in result.output and "ollama" in result.output


def test_status_json_is_one_document_and_writes_nothing(sandbox, cli):
    before = tree_digest(sandbox)
    result = cli("--project", str(sandbox), "--json", "status")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert doc["llm_backend"] == "ollama" and doc["ok"] is True and doc["ollama"]["answers"] is True
    assert not (sandbox / ".graphrag-migrate").exists()
    assert tree_digest(sandbox) == before


def test_status_reports_corrupt_state_with_its_exit_code(sandbox, cli):
    (sandbox / ".graphrag-migrate").mkdir()
    (sandbox / ".graphrag-migrate" / "state.json").write_text("{garbage")
    result = cli("--project", str(sandbox), "--json", "status")
    assert result.exit_code == ExitCode.STATE
    assert "corrupt" in json.loads(result.stdout)["state_error"]
    assert (sandbox / ".graphrag-migrate" / "state.json").read_text() == "{garbage"


def test_phase_refuses_corrupt_state_with_the_way_out(sandbox, cli):
    (sandbox / ".graphrag-migrate").mkdir()
    (sandbox / ".graphrag-migrate" / "state.json").write_text("{garbage")
    result = cli("--project", str(sandbox), "phase3")
    assert result.exit_code == ExitCode.STATE
    assert "graphrag-migrate rollback" in result.stderr


def test_bad_config_value_exits_with_usage_code_and_names_the_key(sandbox, cli):
    result = cli("--project", str(sandbox), "--set", "vllm.port=0", "phase1", "--check")
    assert result.exit_code == ExitCode.USAGE
    assert "vllm.port = '0'" in result.stderr and "\n" not in result.stderr.strip()


def test_locked_project_exits_with_locked_code(sandbox, cli):
    from migrator.core.ledger import Ledger

    holder = Ledger(sandbox)
    info = holder.acquire_lock("graphrag-migrate phase1")
    try:
        result = cli("--project", str(sandbox), "phase3")
        assert result.exit_code == ExitCode.LOCKED and info.id in result.stderr
        unlocked = cli("--project", str(sandbox), "--force-unlock", info.id)
        assert unlocked.exit_code == 0 and Ledger(sandbox).read_lock() is None
    finally:
        holder.release_lock()


def test_phase3_check_and_dry_run_write_nothing(sandbox, cli):
    """Under the docker runtime (the compose file is rendered; no daemon is needed to plan it)."""
    before = tree_digest(sandbox)
    docker = ("--set", "vllm.runtime=docker")
    check = cli("--project", str(sandbox), *docker, "--json", "phase3", "--check")
    assert check.exit_code == ExitCode.CHECK_FAILED
    steps = {s["id"]: s for s in json.loads(check.stdout)["steps"]}
    assert steps["phase3.env"]["status"] == "missing" and steps["phase3.compose-file"]["status"] == "missing"
    dry = cli("--project", str(sandbox), *docker, "--json", "phase3", "--dry-run")
    doc = json.loads(dry.stdout)
    steps = {s["id"]: s for s in doc["steps"]}
    assert dry.exit_code == 0 and steps["phase3.env"]["status"] == "would run"
    assert steps["phase3.compose-config"]["status"] == "would check"
    diffs = {d["file"]: d["diff"] for d in doc["diffs"]}
    env_diff = diffs["docker/.env"]
    assert "+COMPOSE_FILE=docker-compose.yml:docker-compose.vllm.yml" in env_diff
    assert "+VLLM_MODEL=" in env_diff
    assert not [line for line in env_diff.splitlines() if line[:1] in "+-" and "LLM_BACKEND=" in line[:13]]
    assert diffs["docker/docker-compose.vllm.yml"].startswith("--- /dev/null")
    assert tree_digest(sandbox) == before and not (sandbox / ".graphrag-migrate").exists()


def test_phase4_dry_run_shows_the_switch_after_the_gates(sandbox, cli):
    """The production switch is phase4's, ordered after staging and the gates; dry-run shows its diff."""
    before = tree_digest(sandbox)
    dry = cli("--project", str(sandbox), "--json", "phase4", "--dry-run")
    doc = json.loads(dry.stdout)
    order = [s["id"] for s in doc["steps"]]
    assert order.index("phase4.gates") < order.index("phase4.switch") < order.index("phase4.backend") \
        < order.index("phase4.watch")
    env_diff = {d["file"]: d["diff"] for d in doc["diffs"]}["docker/.env"]
    assert "-LLM_BACKEND=ollama  # ollama | vllm" in env_diff and "+LLM_BACKEND=vllm  # ollama | vllm" in env_diff
    assert tree_digest(sandbox) == before and not (sandbox / ".graphrag-migrate").exists()


def test_phase1_check_reports_a_port_in_use(sandbox, servers, cli):
    busy = servers.start("migrator.sim.ollama")  # something else on vLLM's port
    result = cli("--project", str(sandbox), "--json", "--set", f"vllm.port={busy}", "phase1", "--check")
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert steps["phase1.port"]["status"] == "missing" and "in use" in steps["phase1.port"]["message"]
    assert "--port" in steps["phase1.port"]["fix"]
