"""Ledger: atomic state, audit log, backups, the lock, corrupt state, secrets kept out."""

import json
import os
import subprocess
import sys

import pytest

from migrator.core import secrets
from migrator.core.errors import LockedError, StateCorrupt
from migrator.core.fileops import FileWriter
from migrator.core.ledger import Ledger


def test_state_round_trips_and_leaves_no_temp_files(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.state["phases"]["phase1"] = {"status": "completed", "steps": {}}
    ledger.save()
    assert Ledger(tmp_path).read_state()["phases"]["phase1"]["status"] == "completed"
    assert sorted(p.name for p in ledger.root.iterdir()) == [".gitignore", "state.json"]


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"schema": 99}', b"", b'{"schema": 1, "phases": []}'])
def test_corrupt_state_is_reported_not_crashed(tmp_path, content):
    ledger = Ledger(tmp_path)
    ledger.root.mkdir()
    ledger.state_path.write_bytes(content)
    with pytest.raises(StateCorrupt) as err:
        ledger.read_state()
    assert "state.json" in err.value.message and "rollback" in err.value.fix
    moved = ledger.quarantine_state()
    assert moved.read_bytes() == content and not ledger.state_path.exists()


def test_second_lock_is_refused_with_the_holder_named(tmp_path):
    first = Ledger(tmp_path)
    info = first.acquire_lock("graphrag-migrate phase1")
    with pytest.raises(LockedError) as err:
        Ledger(tmp_path).acquire_lock("graphrag-migrate rollback")
    assert info.id in err.value.message and str(os.getpid()) in err.value.message
    assert f"--force-unlock {info.id}" in err.value.fix
    first.release_lock()
    Ledger(tmp_path).acquire_lock("again")


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ledger = Ledger(tmp_path)
    ledger.root.mkdir()
    ledger.lock_path.write_text(json.dumps({"id": "deadbeef", "pid": int(dead.stdout), "host": os.uname().nodename,
                                            "started_at": "x", "command": "phase1"}))
    assert ledger.lock_is_stale(ledger.read_lock())
    info = ledger.acquire_lock("phase2")
    assert ledger.read_lock().id == info.id != "deadbeef"


def test_force_unlock_needs_the_right_id(tmp_path):
    holder = Ledger(tmp_path)
    info = holder.acquire_lock("phase1")
    with pytest.raises(LockedError, match=f"pass --force-unlock {info.id}"):
        Ledger(tmp_path).force_unlock("wrong")
    Ledger(tmp_path).force_unlock(info.id)  # held by this very process: no other run (live holders: test_faults_os)
    assert Ledger(tmp_path).read_lock() is None


def test_writer_backs_up_once_and_keeps_mode_and_symlink(tmp_path):
    real = tmp_path / "real.env"
    real.write_bytes(b"A=1\n")
    os.chmod(real, 0o640)
    link = tmp_path / ".env"
    link.symlink_to(real)
    ledger = Ledger(tmp_path)
    writer = FileWriter(ledger)
    writer.write(link, b"A=2\n", "s1")
    writer.write(link, b"A=3\n", "s2")
    assert link.is_symlink() and real.read_bytes() == b"A=3\n"
    assert oct(real.stat().st_mode & 0o777) == oct(0o640)
    record = ledger.read_state()["files"][".env"]
    assert (ledger.root / record["backup"]).read_bytes() == b"A=1\n"  # the pre-migration copy
    assert writer.restore(".env") == "restored from backup"
    assert real.read_bytes() == b"A=1\n" and link.is_symlink()


def test_drift_is_detected(tmp_path):
    ledger = Ledger(tmp_path)
    writer = FileWriter(ledger)
    (tmp_path / "f").write_text("orig\n")
    writer.write(tmp_path / "f", b"new\n", "s")
    assert writer.drift() == {}
    (tmp_path / "f").write_text("hand edit\n")
    assert writer.drift() == {"f": "edited since graphrag-migrate wrote it"}


def test_secrets_never_reach_state_or_audit(tmp_path, monkeypatch):
    token = "hf_" + "a1B2c3D4e5F6g7H8i9J0kLmNoP"
    monkeypatch.setenv("HF_TOKEN", token)
    secrets.register_from_environ()
    ledger = Ledger(tmp_path)
    ledger.state["resources"]["vllm"] = {"command": ["--api-key", "sk-livekey1234567890abcd"], "note": f"t={token}",
                                        "HF_TOKEN": token}
    ledger.save()
    ledger.audit("s", "write", "ok", message=f"used {token}")
    blob = ledger.state_path.read_text() + ledger.audit_path.read_text()
    assert token not in blob and "sk-livekey1234567890abcd" not in blob and "***" in blob


def test_secret_names_are_whole_segments():
    for name in ("HF_TOKEN", "hf_token", "VLLM_API_KEY", "OPENAI_APIKEY", "DB_PASSWORD", "token", "AWS_SECRET_ACCESS_KEY"):
        assert secrets.is_secret_name(name), name
    for name in ("max_tokens", "kv_cache_size_tokens", "prompt_tokens", "api_key_env", "tokenizer", "keyboard"):
        assert not secrets.is_secret_name(name), name


def test_secret_names_run_together_or_as_a_segment_are_masked():
    for name in ("NEO4J_KEY", "ENCRYPTION_KEY", "JWT_SIGNING_KEY", "SECRETKEY", "DBPASSWORD", "APIKEY",
                 "DB_PWD", "NEO4J_PASSWD", "GOOGLE_CREDENTIAL", "SSH_PRIVATE", "PRIVATE_KEY", "neo4j_auth"):
        assert secrets.is_secret_name(name), name
    for name in ("kv_bytes_per_token", "KV_BYTES_PER_TOKEN", "tokens_per_s", "max_tokens", "keyboard",
                 "tokenizer", "PWD", "OLDPWD", "api_key_env", "key"):
        assert not secrets.is_secret_name(name), name
    masked = secrets.redact({"kv_bytes_per_token": 131072, "NEO4J_KEY": "n30j-k3y", "DBPASSWORD": ""})
    assert masked == {"kv_bytes_per_token": 131072, "NEO4J_KEY": "***", "DBPASSWORD": ""}


def test_the_working_directory_is_never_taken_for_a_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("OLDPWD", str(tmp_path))
    secrets.register_from_environ()
    assert secrets.redact(f"wrote {tmp_path}/docker/.env") == f"wrote {tmp_path}/docker/.env"


def test_env_diff_masks_multi_line_secrets_and_shows_empty_values_empty():
    from migrator.core.fileops import unified_diff

    before = (b'JWT_SIGNING_KEY="-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n'
              b'kv8Rb2Z0Yzc5NzQ4\n-----END PRIVATE KEY-----"\nNEO4J_KEY=\nDBPASSWORD=""\nLLM_BACKEND=ollama\n')
    after = before.replace(b"LLM_BACKEND=ollama", b"LLM_BACKEND=vllm\nSECRETKEY='line one\nline two'")
    diff = unified_diff("docker/.env", before, after)
    for leaked in ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "kv8Rb2Z0Yzc5NzQ4", "END PRIVATE", "line one", "line two"):
        assert leaked not in diff, diff
    assert "+LLM_BACKEND=vllm" in diff and "-LLM_BACKEND=ollama" in diff
    assert " NEO4J_KEY=\n" in diff and ' DBPASSWORD=""\n' in diff  # empty, not ***
    assert "+SECRETKEY=***\n" in diff  # the head of the value masked as any secret's
    # The continuation of JWT_SIGNING_KEY's value is in the context although its first line is not.
    assert " ***\n" in diff


def test_audit_lines_that_cannot_be_read_are_skipped_and_counted(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.audit("phase3.env", "write", "ok", file="docker/.env", before_sha256=None, after_sha256="ab")
    with open(ledger.audit_path, "ab") as f:
        f.write(b"\xff\xfe\xfd not utf-8\n[1, 2, 3]\n\"a string\"\n42\n{\"time\": \"2026-11-")  # cut by a crash
    entries = ledger.read_audit()
    assert [e["action"] for e in entries] == ["write"] and ledger.audit_skipped == 5
    files, left_out = ledger.files_from_audit()
    assert list(files) == ["docker/.env"] and left_out == []
    ledger.audit("rollback", "rollback", "ok")  # after a cut line: this one still reads back whole
    assert [e["action"] for e in ledger.read_audit()] == ["write", "rollback"] and ledger.audit_skipped == 5


@pytest.mark.parametrize("content", [
    {"files": []}, {"phases": "x"}, {"resources": []},
    {"phases": {"phase1": "completed"}},
    {"phases": {"phase1": {"status": "completed", "steps": []}}},
    {"phases": {"phase1": {"status": "completed", "steps": {"phase1.start-vllm": "passed"}}}},
    {"phases": {"phase1": {"status": 3, "steps": {}}}},
    {"files": {"docker/.env": "restored"}},
], ids=["files-list", "phases-str", "resources-list", "phase-str", "steps-list", "step-str", "status-int",
        "file-str"])
def test_state_with_wrong_inner_types_is_corrupt(tmp_path, content):
    ledger = Ledger(tmp_path)
    ledger.root.mkdir()
    ledger.state_path.write_text(json.dumps({"schema": 1, "phases": {}, "files": {}, "resources": {}, **content}))
    with pytest.raises(StateCorrupt) as err:
        ledger.read_state()
    assert "state.json" in err.value.message and "rollback" in err.value.fix
