"""`status` exit codes match what it reports (issue #14, item 9): a killed run (a step left `applying`, a
lock whose holder is gone) exits 1, state.json lost while production is on vLLM exits 5, a --project that
does not exist exits 2, an env file that is there but cannot be read exits 3 — each with one line naming the
thing and the fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.adapters.net import free_port
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger, LockInfo, now_iso

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path) -> Path:
    """A GraphRAG-shaped project where nothing answers (status's probes fail fast on free ports)."""
    root = tmp_path / "graphrag"
    (root / "docker").mkdir(parents=True)
    (root / "docker" / "docker-compose.yml").write_text("services:\n  backend:\n    image: b\n")
    (root / "docker" / ".env").write_text("OLLAMA_BASE_URL=http://ollama:11434\n")
    (root / "migrate.yaml").write_text(f"vllm:\n  port: {free_port()}\nollama:\n  url: http://127.0.0.1:{free_port()}\n")
    return root


def status(cli, project: Path, *extra: str):
    result = cli("--project", str(project), "--json", "status", *extra)
    return result, json.loads(result.stdout)


def interrupted_in(project: Path, phase: str = "phase4", step: str = "phase4.switch") -> None:
    """The ledger as kill -9 leaves it mid-step: the phase in progress, the step `applying`, no lock."""
    ledger = Ledger(project)
    ledger.phase(phase)["status"] = "in_progress"
    ledger.record_step(phase, step, "applying", "started")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_step_left_applying_by_a_killed_run_exits_1_naming_the_step_and_the_fix(cli, project):
    interrupted_in(project)
    result, doc = status(cli, project)
    assert result.exit_code == ExitCode.CHECK_FAILED, result.stdout
    [line] = [p for p in doc["problems"] if "phase4.switch" in p]
    assert "left applying" in line and "re-run `graphrag-migrate phase4`" in line and "rollback" in line


def test_a_phase_in_progress_with_no_run_holding_the_lock_exits_1(cli, project):
    ledger = Ledger(project)
    ledger.phase("phase1")["status"] = "in_progress"
    ledger.record_step("phase1", "phase1.preflight", "passed", "ok")
    result, doc = status(cli, project)
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert any("phase1 is in progress but no run holds the lock" in p for p in doc["problems"]), doc["problems"]


def test_a_step_applying_under_a_live_run_is_work_in_progress_not_a_problem(cli, project):
    interrupted_in(project)
    ledger = Ledger(project)
    with ledger.locked("graphrag-migrate phase4"):  # this process: alive, so the run is going on
        result, doc = status(cli, project)
    assert result.exit_code == ExitCode.OK, doc["problems"]
    assert doc["lock"]["stale"] is False


def test_a_lock_left_by_a_dead_process_exits_1_naming_its_pid(cli, project):
    pid = dead_pid()
    lock = LockInfo("deadbeef", pid, socket.gethostname(), now_iso(), "graphrag-migrate phase3")
    (project / ".graphrag-migrate").mkdir(exist_ok=True)
    (project / ".graphrag-migrate" / "lock").write_text(json.dumps(lock.__dict__))
    result, doc = status(cli, project)
    assert result.exit_code == ExitCode.CHECK_FAILED
    [line] = [p for p in doc["problems"] if "deadbeef" in p]
    assert f"pid {pid}" in line and "graphrag-migrate phase3" in line and "gone" in line and "re-run" in line
    assert (project / ".graphrag-migrate" / "lock").exists()  # status reads only: the next run takes it over


def test_state_lost_while_the_env_file_says_vllm_exits_5(cli, project):
    (project / "docker" / ".env").write_text("LLM_BACKEND=vllm\n")
    result, doc = status(cli, project)
    assert result.exit_code == ExitCode.STATE
    [line] = [p for p in doc["problems"] if "state.json is missing" in p]
    assert "LLM_BACKEND=vllm" in line and "graphrag-migrate rollback" in line
    assert not (project / ".graphrag-migrate").exists()  # read-only


def _switched_then_lost(project: Path, rolled_back: bool = False) -> None:
    ledger = Ledger(project)
    ledger.record_step("phase4", "phase4.switch", "applying", "started")
    ledger.audit("phase4.switch", "write", "ok", file="docker/.env", keys_set=["LLM_BACKEND"])
    ledger.record_step("phase4", "phase4.switch", "passed", "LLM_BACKEND=vllm")
    if rolled_back:
        ledger.audit("rollback", "rollback", "ok")
    ledger.state_path.unlink()


def test_state_lost_after_a_switch_the_audit_log_shows_exits_5_whatever_the_env_file_says(cli, project):
    _switched_then_lost(project)  # the env file was put back to Ollama by hand: vLLM may still be running
    result, doc = status(cli, project)
    assert result.exit_code == ExitCode.STATE
    assert any("audit log shows phase4 switched production to vLLM" in p for p in doc["problems"]), doc["problems"]


def test_state_lost_after_a_completed_rollback_is_no_problem(cli, project):
    _switched_then_lost(project, rolled_back=True)
    result, doc = status(cli, project)
    assert result.exit_code == ExitCode.OK, doc["problems"]


def test_a_project_directory_that_does_not_exist_exits_2_with_one_line(cli, tmp_path):
    missing = tmp_path / "no-such-project"
    result = cli("--project", str(missing), "status")
    assert result.exit_code == ExitCode.USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "does not exist" in lines[0] and "--project" in lines[0]
    assert not missing.exists()


def test_an_env_file_that_is_a_directory_exits_3_naming_it(cli, project):
    """As root no permission bit stops a read; a directory in the file's place is a real EISDIR."""
    env = project / "docker" / ".env"
    env.unlink()
    env.mkdir()
    result, doc = status(cli, project)
    assert result.exit_code == ExitCode.ENVIRONMENT
    [line] = [p for p in doc["problems"] if "docker/.env" in p]
    assert "EISDIR" in line and "move it aside" in line
    assert doc["state_error"] == ""  # the ledger is fine: not exit 5


def test_an_env_file_without_read_permission_exits_3(cli, project, monkeypatch):
    """EACCES: chmod 000 where the tests do not run as root, else the exact call made to raise it."""
    env = project / "docker" / ".env"
    if os.geteuid() != 0:
        env.chmod(0)
    else:
        real = Path.read_bytes

        def refuse(self):
            if self == env:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
    try:
        result, doc = status(cli, project)
    finally:
        env.chmod(0o644)
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert any("docker/.env" in p and "EACCES" in p and "permissions" in p for p in doc["problems"]), doc["problems"]


def test_an_env_file_that_is_a_fifo_exits_3_without_waiting_on_it(project):
    """A FIFO would block a read forever: status looks at what the path is first (a real process, with a
    time-out, so a hang fails the test instead of stopping the run)."""
    env = project / "docker" / ".env"
    env.unlink()
    os.mkfifo(env)
    proc = subprocess.run([sys.executable, "-m", "migrator.cli.main", "--project", str(project), "status"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == ExitCode.ENVIRONMENT, proc.stdout + proc.stderr
    assert "docker/.env is a FIFO, not a file" in proc.stdout
