"""Bad input and broken servers: one clear line, a documented exit code, user files untouched."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, tree_digest
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger


def test_vllm_that_hangs_fails_phase1_within_its_time_out(sandbox, cli):
    before = tree_digest(sandbox)
    start = time.monotonic()
    result = cli("--project", str(sandbox), "--set", "vllm.startup_timeout_s=3",
                 "--set", "vllm.extra_args=--hang-after 1", "phase1")
    elapsed = time.monotonic() - start
    assert result.exit_code == ExitCode.CHECK_FAILED and elapsed < 15
    assert "streamed completion" in result.stderr and "timed out" in result.stderr
    assert tree_digest(sandbox) == before
    assert cli("--project", str(sandbox), "rollback", "--wait", "5").exit_code == 0


def test_sigterm_during_a_phase_exits_130_and_leaves_a_visible_mark(sandbox, cli):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator.cli.main", "--project", str(sandbox),
         "--set", "vllm.extra_args=--startup-s 30", "phase1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if Ledger(sandbox).read_state()["resources"].get("vllm"):
                break
        except Exception:
            pass
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "interrupted" in err and "rollback" in err
    state = Ledger(sandbox).read_state()
    assert state["phases"]["phase1"]["status"] == "interrupted"
    assert state["phases"]["phase1"]["steps"]["phase1.start-vllm"]["status"] == "interrupted"
    status = cli("--project", str(sandbox), "status")
    assert status.exit_code == ExitCode.CHECK_FAILED and "phase1 interrupted" in status.stdout
    assert Ledger(sandbox).read_lock() is None  # the lock was released on the way out
    rollback = json.loads(cli("--project", str(sandbox), "--json", "rollback", "--wait", "5").stdout)
    assert "process" in next(a for a in rollback["actions"] if a["name"] == "stop vLLM")["result"]


def test_secrets_in_the_env_file_are_masked_in_diffs_and_json(sandbox, monkeypatch, cli):
    env_path = sandbox / "docker" / ".env"
    token = "hf_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2"
    env_path.write_text(env_path.read_text() + f"HF_TOKEN={token}\nVLLM_API_KEY=abcd1234secret\n")
    dry = cli("--project", str(sandbox), "--json", "phase3", "--dry-run")
    assert dry.exit_code == 0
    assert token not in dry.stdout + dry.stderr and "abcd1234secret" not in dry.stdout
    applied = cli("--project", str(sandbox), "phase1")
    assert applied.exit_code == 0
    phase3 = cli("--project", str(sandbox), "phase3")
    assert phase3.exit_code == 0, phase3.stderr
    # phase3 really ran and recorded its env-file edits: the ledger had the chance to leak the token.
    recorded = Ledger(sandbox).read_state()["phases"]["phase3"]
    assert recorded["status"] == "completed", recorded
    assert recorded["steps"]["phase3.env"]["status"] == "passed", recorded
    assert recorded["steps"]["phase3.integration"]["status"] == "passed", recorded
    assert "VLLM_BASE_URL=" in env_path.read_text() and token in env_path.read_text()
    ledger_text = "".join(p.read_text() for p in (sandbox / ".graphrag-migrate").glob("*.json*"))
    assert "phase3" in ledger_text and token not in ledger_text
    cli("--project", str(sandbox), "rollback", "--wait", "5")


def test_unexpected_error_is_internal_with_one_line(sandbox, monkeypatch, cli):
    import migrator.app.api

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(migrator.app.api, "status", broken)
    result = cli("--project", str(sandbox), "status")
    assert result.exit_code == ExitCode.INTERNAL
    assert "internal error: RuntimeError: boom" in result.stderr and "Traceback" not in result.stderr


def test_missing_project_directory_is_a_usage_error(tmp_path, cli):
    result = cli("--project", str(tmp_path / "nope"), "phase1", "--check")
    assert result.exit_code == ExitCode.USAGE and "does not exist" in result.stderr


def test_phase1_explains_a_vllm_start_up_failure_and_its_fix(sandbox, cli):
    result = cli("--project", str(sandbox), "--set", "vllm.extra_args=--fail-startup kv-too-small", "phase1")
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "the KV cache is too small for max_model_len" in result.stderr
    assert "lower vllm.max_model_len" in result.stderr and "estimated maximum model length is 8576" in result.stderr
    state = Ledger(sandbox).read_state()
    assert state["phases"]["phase1"]["failed_step"] == "phase1.start-vllm"
