"""Bad input and broken servers: one clear line, a documented exit code, user files untouched."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

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


# ---- rollback and the ledger under faults ---------------------------------------------------------------
def _on_vllm_beside_ollama(sandbox, cli) -> None:
    """phase1 (vLLM started) and phase3 (the env file edited): what a rollback has to undo."""
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    phase3 = cli("--project", str(sandbox), "phase3")
    assert phase3.exit_code == 0, phase3.stderr


@pytest.mark.parametrize("fault", ["immutable", "directory"])
def test_rollback_attempts_every_action_when_the_env_file_cannot_be_written(sandbox, cli, fault):
    """An OS error on the env file fails that action (exit 3), and vLLM is still stopped, the rest attempted."""
    before = tree_digest(sandbox)
    _on_vllm_beside_ollama(sandbox, cli)
    env, aside = sandbox / "docker" / ".env", sandbox.parent / "env.aside"
    if fault == "immutable":
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(env)]).returncode != 0:
            pytest.skip("chattr +i is not available here")
    else:
        env.rename(aside)
        env.mkdir()
    try:
        result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "5")
    finally:
        if fault == "immutable":
            subprocess.run(["chattr", "-i", str(env)], check=True)
        else:
            env.rmdir()
            aside.rename(env)
    doc = json.loads(result.stdout)
    assert result.exit_code == ExitCode.ENVIRONMENT, doc
    env_action = next(a for a in doc["actions"] if a["name"] == "env file")
    errno_words = "Operation not permitted" if fault == "immutable" else "Is a directory"
    assert not env_action["ok"] and env_action["environment"] and "docker/.env" in env_action["result"]
    assert errno_words in env_action["result"] and "internal error" not in result.stdout + result.stderr
    stop = next(a for a in doc["actions"] if a["name"] == "stop vLLM")
    assert stop["ok"] and "stopped" in stop["result"]
    assert {"reload Ollama models", "Ollama answers"} <= {a["name"] for a in doc["actions"]}  # the rest attempted
    again = cli("--project", str(sandbox), "--json", "rollback", "--wait", "5")
    assert again.exit_code == 0, again.stdout
    assert tree_digest(sandbox) == before


def test_rollback_without_state_skips_and_counts_unreadable_audit_lines(sandbox, cli):
    before = tree_digest(sandbox)
    _on_vllm_beside_ollama(sandbox, cli)
    ledger = Ledger(sandbox)
    ledger.state_path.unlink()
    with open(ledger.audit_path, "ab") as f:
        f.write(b"\xff\xfe not UTF-8\n[1, 2, 3]\n\"a string\"\n{\"time\": \"2026-11-25T02:1")  # the last one cut short
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "5")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    records = next(a for a in doc["actions"] if a["name"] == "file records")
    assert "rebuilt from the audit log" in records["result"] and "4 unreadable lines" in records["result"]
    assert tree_digest(sandbox) == before
    last = json.loads(ledger.audit_path.read_bytes().splitlines()[-1])
    assert last["action"] == "rollback"  # written whole after the cut line


@pytest.mark.parametrize("inner", ['{"phase1": "completed"}',
                                   '{"phase1": {"status": "completed", "steps": {"phase1.start-vllm": "passed"}}}'],
                         ids=["phase-str", "step-str"])
def test_state_with_wrong_inner_types_is_exit_5_and_rollback_sets_it_aside(sandbox, cli, inner):
    ledger = Ledger(sandbox)
    ledger.root.mkdir(exist_ok=True)
    ledger.state_path.write_text(f'{{"schema": 1, "phases": {inner}, "files": {{}}, "resources": {{}}}}')
    for command in (["status"], ["phase1", "--check"], ["phase3", "--dry-run"]):
        result = cli("--project", str(sandbox), *command)
        assert result.exit_code == ExitCode.STATE, (command, result.stderr)
        assert "state.json" in result.stderr + result.stdout and "internal error" not in result.stderr
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "5")
    doc = json.loads(result.stdout)
    assert any(a["name"] == "state" and "set aside" in a["result"] for a in doc["actions"]), doc
    assert result.exit_code != ExitCode.INTERNAL
    Ledger(sandbox).read_state()  # a fresh, readable state


def test_the_state_directory_stays_out_of_git_and_is_private(sandbox, cli):
    subprocess.run(["git", "init", "-q", str(sandbox)], check=True)
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    bench = cli("--project", str(sandbox), "bench", "--requests", "2", "--concurrency", "1", "--output-tokens", "4")
    assert bench.exit_code == 0, bench.stderr
    root = sandbox / ".graphrag-migrate"
    assert (root / "logs" / "vllm.log").is_file() and list((root / "bench").glob("*.json"))
    subprocess.run(["git", "-C", str(sandbox), "add", "-A"], check=True)
    porcelain = subprocess.run(["git", "-C", str(sandbox), "status", "--porcelain"], capture_output=True,
                               text=True, check=True).stdout
    assert "docker/.env" in porcelain and ".graphrag-migrate" not in porcelain, porcelain
    assert (root / ".gitignore").read_text() == "*\n"
    wrong = {str(p.relative_to(sandbox)): oct(p.stat().st_mode & 0o777) for p in [root, *root.rglob("*")]
             if p.stat().st_mode & 0o777 != (0o700 if p.is_dir() else 0o600)}
    assert wrong == {}
    cli("--project", str(sandbox), "rollback", "--wait", "5")


def test_the_client_check_passes_the_api_key_in_the_environment_not_argv(tmp_path, monkeypatch):
    """phase2 runs backend.python with a script: `ps` must never show vLLM's API key."""
    from types import SimpleNamespace

    import migrator.adapters.http
    from migrator.core.config import Settings
    from migrator.core.engine import Context
    from phases.phase2 import ClientContract

    key = "sk-" + "vllmkey0123456789abcdef"
    monkeypatch.setenv("MY_VLLM_KEY", key)
    settings = Settings()
    settings.vllm.api_key_env = "MY_VLLM_KEY"
    seen = {}

    def fake_run(argv, **kwargs):
        seen.update(argv=list(argv), env=kwargs.get("env"))
        return subprocess.CompletedProcess(argv, 0, '{"chunks": 2, "ttft_ms": 5.0}\n', "")

    monkeypatch.setattr(migrator.adapters.http.OpenAIServer, "health", lambda self, timeout=2: SimpleNamespace(ok=True))
    monkeypatch.setattr(subprocess, "run", fake_run)
    outcome = ClientContract().check(Context(tmp_path, settings, Ledger(tmp_path)))
    assert outcome.ok, outcome.message
    assert not any(key in arg for arg in seen["argv"]), seen["argv"]
    assert seen["env"] is not None and seen["env"].get("VLLM_API_KEY") == key


def test_an_empty_lock_left_by_a_full_disk_does_not_block_the_next_run(sandbox, cli):
    ledger = Ledger(sandbox)
    ledger.root.mkdir(exist_ok=True)
    ledger.lock_path.write_bytes(b"")
    phase1 = cli("--project", str(sandbox), "phase1", "--no-bench")
    assert phase1.exit_code == 0, phase1.stderr
    assert "took over an empty lock file" in phase1.stderr
    ledger.lock_path.write_bytes(b"\x00\x00")
    rollback = json.loads(cli("--project", str(sandbox), "--json", "rollback", "--wait", "5").stdout)
    assert any(a["name"] == "lock" and "unreadable lock file" in a["result"] for a in rollback["actions"])
    assert Ledger(sandbox).read_lock() is None
