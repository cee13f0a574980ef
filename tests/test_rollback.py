"""Rollback from every state the migration can be left in (process runtime; Docker cases in test_docker)."""

import json

from conftest import migrate_to_vllm, prepare_switch, tree_digest
from migrator.app import api
from migrator.files.envfile import EnvFile
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger


migrate = migrate_to_vllm


def test_full_cycle_restores_every_file_byte_for_byte(sandbox, cli):
    before = tree_digest(sandbox)
    migrate(sandbox)
    status = json.loads(cli("--project", str(sandbox), "--json", "status").stdout)
    assert status["llm_backend"] == "vllm" and status["vllm"]["healthy"]
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert tree_digest(sandbox) == before
    after = json.loads(cli("--project", str(sandbox), "--json", "status").stdout)
    assert after["llm_backend"] == "ollama" and not after["vllm"]["healthy"]
    assert {p["status"] for name, p in after["phases"].items() if name in ("phase1", "phase3")} == {"rolled_back"}


def test_rollback_twice_is_safe(sandbox, cli):
    migrate(sandbox)
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    snapshot = tree_digest(sandbox)
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    assert tree_digest(sandbox) == snapshot


def test_rollback_with_corrupt_state_still_returns_to_ollama(sandbox, cli):
    before = tree_digest(sandbox)
    migrate(sandbox)
    state = sandbox / ".graphrag-migrate" / "state.json"
    state.write_text("{truncated")
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    doc = json.loads(result.stdout)
    env = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes())
    assert env.get("LLM_BACKEND") == "ollama"
    assert any(a["name"] == "state" and "set aside" in a["result"] for a in doc["actions"])
    assert list((sandbox / ".graphrag-migrate").glob("state.json.corrupt-*"))[0].read_text() == "{truncated"
    Ledger(sandbox).read_state()  # a fresh, readable state was written
    # Without state, rollback finds the vLLM process by its pidfile or port (and checks it is vLLM) and stops it.
    stop = next(a for a in doc["actions"] if a["name"] == "stop vLLM")
    assert "not in state" in stop["result"] and stop["result"].endswith("stopped")
    assert not json.loads(cli("--project", str(sandbox), "--json", "status").stdout)["vllm"]["healthy"]
    # The file records come back from the audit log: every user file as before the migration.
    records = next(a for a in doc["actions"] if a["name"] == "file records")
    assert records["ok"] and "rebuilt from the audit log" in records["result"]
    assert tree_digest(sandbox) == before


def test_hand_edited_env_file_keeps_the_edits(sandbox, cli):
    migrate(sandbox)
    env_path = sandbox / "docker" / ".env"
    env_path.write_bytes(env_path.read_bytes() + b"OPERATOR_NOTE=keep me\n")
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    assert result.exit_code == 0
    env = EnvFile.from_bytes(env_path.read_bytes())
    assert env.get("OPERATOR_NOTE") == "keep me" and env.get("LLM_BACKEND") == "ollama"
    action = next(a for a in json.loads(result.stdout)["actions"] if a["name"] == "env file")
    assert "edits are kept" in action["result"]
    assert "docker-compose.vllm.yml" not in (env.get("COMPOSE_FILE") or "")  # the removed file is not named


def test_missing_backup_is_reported_and_env_still_fixed(sandbox, cli):
    migrate(sandbox)
    for backup in (sandbox / ".graphrag-migrate" / "backups").rglob("*"):
        if backup.is_file():
            backup.unlink()
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    env = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes())
    assert env.get("LLM_BACKEND") == "ollama"
    # phase3's compose file is removed: COMPOSE_FILE must not name it any more (plain `docker compose` would fail).
    assert not (sandbox / "docker" / "docker-compose.vllm.yml").exists()
    assert "docker-compose.vllm.yml" not in (env.get("COMPOSE_FILE") or "")
    action = next(a for a in json.loads(result.stdout)["actions"] if a["name"] == "env file")
    assert "backup" in action["result"] and "missing" in action["result"] and not action["ok"]
    assert result.exit_code == ExitCode.CHECK_FAILED  # back on Ollama, but a file could not be restored: look


def test_lost_state_still_reloads_the_ollama_model_phase1_unloaded(sandbox, cli):
    from migrator.adapters.http import OllamaServer

    ollama = OllamaServer(api.settings_for(sandbox).ollama.url)
    assert cli("--project", str(sandbox), "phase1", "--no-bench", "--unload-ollama").exit_code == 0
    assert ollama.loaded().body["models"] == []
    (sandbox / ".graphrag-migrate" / "state.json").unlink()
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    assert result.exit_code == 0, result.stdout
    reload = next(a for a in json.loads(result.stdout)["actions"] if a["name"] == "reload Ollama models")
    assert reload["result"] == "reloaded qwen3:32b"  # found in the audit log
    assert [m["name"] for m in ollama.loaded().body["models"]] == ["qwen3:32b"]
    # A second rollback after a complete one has nothing of phase1's left to reload.
    (sandbox / ".graphrag-migrate" / "state.json").unlink()
    again = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    reload = next(a for a in json.loads(again.stdout)["actions"] if a["name"] == "reload Ollama models")
    assert reload["result"] == "no Ollama model was unloaded by graphrag-migrate"


def test_two_rollbacks_at_once_one_waits_out_with_locked(sandbox, cli):
    migrate(sandbox)
    holder = Ledger(sandbox)
    holder.acquire_lock("graphrag-migrate rollback")
    try:
        second = cli("--project", str(sandbox), "rollback")
        assert second.exit_code == ExitCode.LOCKED
    finally:
        holder.release_lock()
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0


def test_rollback_reports_backend_that_does_not_answer(sandbox):
    settings = api.settings_for(sandbox, overrides={"project.backend_url": "http://127.0.0.1:9"})
    report = api.rollback(sandbox, settings, wait_s=0.5)
    assert report.exit_code == ExitCode.CHECK_FAILED
    failed = [a for a in report.actions if not a.ok]
    assert [a.name for a in failed] == ["backend answers"] and "connection refused" in failed[0].result


def test_rollback_never_stops_a_vllm_it_did_not_start(sandbox, servers):
    """State readable, no vLLM recorded: a vLLM serving on the configured port is someone else's."""
    port = servers.start("migrator.sim.vllm", "--served-model-name", "theirs")
    settings = api.settings_for(sandbox, overrides={"vllm.port": str(port), "vllm.server_module": "migrator.sim.vllm"})
    report = api.rollback(sandbox, settings, wait_s=5)
    stop = next(a for a in report.actions if a.name == "stop vLLM")
    assert "no vLLM was started" in stop.result
    from migrator.adapters.http import get

    assert get(f"http://127.0.0.1:{port}/health").ok


def test_rollback_with_deleted_state_still_stops_vllm(sandbox, cli):
    before = tree_digest(sandbox)
    migrate(sandbox)
    (sandbox / ".graphrag-migrate" / "state.json").unlink()
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    doc = json.loads(result.stdout)
    assert EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "ollama"
    assert any(a["name"] == "state" and "missing" in a["result"] for a in doc["actions"])
    stop = next(a for a in doc["actions"] if a["name"] == "stop vLLM")
    assert "not in state" in stop["result"] and stop["result"].endswith("stopped")  # by its pidfile
    assert tree_digest(sandbox) == before  # restored from the backups the audit log names


def test_deleted_state_and_a_tampered_backup_keeps_that_file_and_says_so(sandbox, cli):
    """A backup whose checksum the audit log never saw is not trusted: the file is left, the env still fixed."""
    migrate(sandbox)
    created = [rel for rel, record in Ledger(sandbox).read_state()["files"].items() if not record["existed"]]
    (sandbox / ".graphrag-migrate" / "state.json").unlink()
    backup = sandbox / ".graphrag-migrate" / "backups" / "docker" / ".env"
    backup.write_bytes(b"LLM_BACKEND=somewhere-else\n")
    assert created and all((sandbox / rel).exists() for rel in created)  # phase4's monitoring files
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    doc = json.loads(result.stdout)
    records = next(a for a in doc["actions"] if a["name"] == "file records")
    assert not records["ok"] and "docker/.env" in records["result"] and result.exit_code == ExitCode.CHECK_FAILED
    env = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes())
    assert env.get("LLM_BACKEND") == "ollama" and env.get("VLLM_MODEL")  # fixed, not overwritten by the backup
    assert not any((sandbox / rel).exists() for rel in created)  # created by the tool: removed


# ---- an env file that never had LLM_BACKEND; files rollback put back are the operator's again ----------
def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_llm_backend(sandbox):
    """The sandbox's env file with no LLM_BACKEND line (the backend's default, Ollama, is what it runs on)."""
    env = sandbox / "docker" / ".env"
    env.write_text("".join(line for line in env.read_text().splitlines(keepends=True)
                           if not line.startswith("LLM_BACKEND=")))
    assert EnvFile.from_bytes(env.read_bytes()).get("LLM_BACKEND") is None
    return env


def env_action(result) -> dict:
    return next(a for a in json.loads(result.stdout)["actions"] if a["name"] == "env file")


def test_env_file_without_llm_backend_is_byte_identical_after_rollback(sandbox, cli):
    env = without_llm_backend(sandbox)
    original = sha256(env)
    migrate(sandbox)  # phase1 → phase3 → phase4: the switch adds LLM_BACKEND=vllm
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    assert result.exit_code == 0, result.stdout
    assert sha256(env) == original  # nothing appended
    action = env_action(result)
    assert action["ok"] and action["result"].startswith("restored from backup"), action
    assert "LLM_BACKEND not set, as before the migration" in action["result"]


def test_hand_edited_env_without_llm_backend_gets_it_only_if_the_tool_had_set_it(sandbox, cli):
    env = without_llm_backend(sandbox)
    prepare_switch(sandbox)  # phase1 and phase3: vLLM's endpoint in the env file, LLM_BACKEND never written
    env.write_bytes(env.read_bytes() + b"OPERATOR_NOTE=keep me\n")
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    assert result.exit_code == 0, result.stdout
    after = EnvFile.from_bytes(env.read_bytes())
    assert after.get("OPERATOR_NOTE") == "keep me" and after.get("LLM_BACKEND") is None
    assert "graphrag-migrate never set it" in env_action(result)["result"]


def test_hand_edited_env_whose_llm_backend_line_was_removed_after_the_switch_is_set_back(sandbox, cli):
    env = without_llm_backend(sandbox)
    migrate(sandbox)
    without_llm_backend(sandbox)  # the operator took the switch's line out again, by hand
    env.write_bytes(env.read_bytes() + b"OPERATOR_NOTE=keep me\n")
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    assert result.exit_code == 0, result.stdout
    after = EnvFile.from_bytes(env.read_bytes())
    assert after.get("OPERATOR_NOTE") == "keep me" and after.get("LLM_BACKEND") == "ollama"
    assert "graphrag-migrate had set it" in env_action(result)["result"]


def test_status_after_a_clean_rollback_is_ok_and_the_files_are_the_operators_again(sandbox, cli):
    migrate(sandbox)
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    status = cli("--project", str(sandbox), "--json", "status")
    doc = json.loads(status.stdout)
    assert status.exit_code == 0 and doc["drift"] == {} and doc["problems"] == [], doc["problems"]
    # Released: editing a restored file by hand is the operator's business, not drift.
    env = sandbox / "docker" / ".env"
    env.write_bytes(env.read_bytes() + b"OPERATOR_NOTE=mine now\n")
    edited = env.read_bytes()
    status = cli("--project", str(sandbox), "--json", "status")
    assert status.exit_code == 0 and json.loads(status.stdout)["drift"] == {}
    # ... and a second rollback, or one with the state lost (records rebuilt from the audit log), leaves it be.
    again = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    assert again.exit_code == 0 and env.read_bytes() == edited
    assert env_action(again)["result"].startswith("already rolled back")
    (sandbox / ".graphrag-migrate" / "state.json").unlink()
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    assert env.read_bytes() == edited


def test_a_second_rollback_keeps_the_edits_the_first_one_kept(sandbox, cli):
    """The first rollback keeps the operator's edits and writes LLM_BACKEND=ollama; the second must not then
    take that for the tool's own write and restore the pre-migration backup over the edits."""
    migrate(sandbox)
    env = sandbox / "docker" / ".env"
    env.write_bytes(env.read_bytes() + b"OPERATOR_NOTE=keep me\n")
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    kept = env.read_bytes()
    assert EnvFile.from_bytes(kept).get("OPERATOR_NOTE") == "keep me"
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    assert env.read_bytes() == kept
    assert cli("--project", str(sandbox), "status").exit_code == 0


def test_a_second_migration_backs_up_the_file_as_the_operator_left_it(sandbox, cli):
    """Edits made between a rollback and the next migration are what that migration's rollback returns to."""
    migrate(sandbox)
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    env = sandbox / "docker" / ".env"
    env.write_bytes(env.read_bytes() + b"OPERATOR_NOTE=added between migrations\n")
    between = tree_digest(sandbox)
    migrate(sandbox)
    assert cli("--project", str(sandbox), "rollback", "--wait", "10").exit_code == 0
    assert tree_digest(sandbox) == between
