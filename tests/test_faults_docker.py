"""Rollback under faults on real Docker (issue 7's matrix, its Docker half). The sandbox runs as on the GB10:
the backend a compose service, vLLM (the simulator's image) a container that phase3 hands to compose, and
phase4's staging project for real. Every case ends with the backend answering on Ollama, vLLM and staging
gone, Ollama's model reloaded and every user file byte-identical to before the migration."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, run_cli, tree_digest
from dockercut import DockerCut
from migrator.app import api
from migrator.adapters.docker import DockerRuntime
from migrator.adapters.http import OllamaServer, get
from migrator.files.envfile import EnvFile
from migrator.core.errors import ExitCode, MigrateError
from migrator.core.ledger import Ledger
from migrator.app.rehearse import docker_names

pytestmark = pytest.mark.docker
HERE = os.path.dirname(__file__)


QUICK_WATCH = ["--set", "deploy.watch_s=1", "--set", "deploy.probe_interval_s=0.2"]


def integrate(root) -> dict:
    """phase1 (Ollama's model unloaded), phase2 and phase3: vLLM a compose service, production still on Ollama."""
    assert run_cli("--project", str(root), "phase1", "--unload-ollama").exit_code == 0
    assert run_cli("--project", str(root), "phase2").exit_code == 0  # phase4 switches only after it passed
    result = run_cli("--project", str(root), "phase3")
    assert result.exit_code == 0, result.stderr
    settings = api.settings_for(root)
    assert get(settings.project.backend_url + "/health").body["llm_backend"] == "ollama"
    return {"settings": settings, "names": docker_names(root), "docker": DockerRuntime()}


def migrate(root) -> dict:
    """integrate, then phase4 (staging, gates, the switch, a short watch): production on vLLM under compose."""
    env = integrate(root)
    result = run_cli("--project", str(root), *QUICK_WATCH, "phase4")
    assert result.exit_code == 0, result.stderr
    assert get(env["settings"].project.backend_url + "/health").body["llm_backend"] == "vllm"
    return env


def staging_containers(root) -> list:
    project = docker_names(root)["project"] + "-staging"
    return DockerRuntime().client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})


def assert_back_on_ollama(root, before) -> None:
    settings = api.settings_for(root)
    assert tree_digest(root) == before
    assert EnvFile.from_bytes((root / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "ollama"
    assert get(settings.project.backend_url + "/health").body["llm_backend"] == "ollama"
    assert not DockerRuntime().container(docker_names(root)["vllm"]).running
    assert not staging_containers(root)
    loaded = OllamaServer(settings.ollama.url).loaded().body["models"]
    assert [m["name"] for m in loaded] == ["qwen3:32b"]


@pytest.mark.parametrize("step, when, extra", [
    ("phase1.start-vllm", "after", []),  # the standalone container up, the CLI gone
    ("phase3.vllm-service", "after", []),  # the compose service up in its place, production on Ollama
    ("phase4.staging", "during-loadtest", []),  # staging's containers up, the CLI gone
    ("phase4.staging", "after", ["--set", "deploy.keep_staging=true"]),
    ("phase4.switch", "after", []),  # LLM_BACKEND=vllm written, the backend not yet recreated
    ("phase4.backend", "after", []),  # the backend recreated on vLLM
    ("phase4.watch", "before", []),
    ("phase4.watch", "after", []),
])
def test_kill_during_a_docker_step_then_rollback_restores_everything(docker_sandbox, step, when, extra, cli):
    root = docker_sandbox
    before = tree_digest(root)
    phase = step.split(".")[0]
    if phase == "phase3":
        assert cli("--project", str(root), "phase1", "--unload-ollama").exit_code == 0
    elif phase == "phase4":
        integrate(root)
    killed = subprocess.run(
        [sys.executable, os.path.join(HERE, "killer.py"), step, when, "--", "--project", str(root),
         *QUICK_WATCH, *extra, phase, *(["--unload-ollama"] if phase == "phase1" else [])],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": f"{REPO}:{HERE}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = Ledger(root).read_state()
    assert state["phases"][phase]["status"] == "in_progress"  # the crash is visible
    assert DockerRuntime().container(docker_names(root)["vllm"]).running  # what rollback must stop
    if step == "phase4.staging" and when != "before":
        assert {c.status for c in staging_containers(root)} == {"running"}  # what rollback must clean up
    backend = get(api.settings_for(root).project.backend_url + "/health", timeout=5).body["llm_backend"]
    production_switched = step in ("phase4.backend", "phase4.watch")  # the backend recreated on vLLM
    assert backend == ("vllm" if production_switched else "ollama"), backend

    rollback = cli("--project", str(root), "--json", "rollback", "--wait", "30")
    doc = json.loads(rollback.stdout)
    assert rollback.exit_code == 0, doc
    if step == "phase4.staging" and when != "before":
        assert any(a["name"] == "phase4.staging" and "removed" in a["result"] for a in doc["actions"])
    assert_back_on_ollama(root, before)


@pytest.mark.parametrize("fault", ["crashed", "hung"])
def test_vllm_container_fault_during_the_watch_rolls_back_automatically(docker_sandbox, fault):
    root = docker_sandbox
    before = tree_digest(root)
    env = integrate(root)
    name = env["names"]["vllm"]
    settings = api.settings_for(root, overrides={"deploy.watch_s": "60", "deploy.probe_interval_s": "0.2"})
    outcome: dict = {}

    def phase4():
        try:
            outcome["report"] = api.run_phase("phase4", root, settings)
        except MigrateError as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=phase4)
    runner.start()
    deadline = time.monotonic() + 180  # staging, the gates and the switch come first
    while Ledger(root).read_state()["phases"].get("phase4", {}).get("steps", {}).get(
            "phase4.watch", {}).get("status") != "applying":
        assert time.monotonic() < deadline and runner.is_alive(), outcome
        time.sleep(0.1)
    container = env["docker"].client.containers.get(name)
    if fault == "crashed":  # dies and stays down (a crash loop restart cannot fix)
        container.update(restart_policy={"Name": "no"})
        os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
    else:  # frozen: the port accepts, nothing answers
        container.pause()
    runner.join(120)
    assert not runner.is_alive()
    assert "error" in outcome and outcome["error"].exit_code == ExitCode.CHECK_FAILED
    watch = Ledger(root).read_state()["phases"]["phase4"]["steps"]["phase4.watch"]
    assert "vLLM health" in watch["message"] and "rolled back automatically (back on Ollama)" in watch["message"]
    assert_back_on_ollama(root, before)


def test_dockerd_gone_mid_rollback_then_back_and_rollback_again(docker_sandbox, tmp_path, monkeypatch, cli):
    root = docker_sandbox
    before = tree_digest(root)
    env = migrate(root)
    name = env["names"]["vllm"]
    # dockerd "stops" the moment rollback asks it to stop a container (vLLM): the request never arrives.
    cut = DockerCut(str(tmp_path / "docker.sock"), b"/stop").start()
    monkeypatch.setenv("DOCKER_HOST", cut.docker_host)
    first = cli("--project", str(root), "--json", "rollback", "--wait", "5")
    doc = json.loads(first.stdout)
    assert cut.cut_seen.is_set()
    assert first.exit_code == ExitCode.ENVIRONMENT, doc
    actions = {a["name"]: a for a in doc["actions"]}
    assert actions["env file"]["ok"]  # fixed first: it needs only the disk
    assert actions["stop vLLM"]["environment"] and "Docker daemon" in actions["stop vLLM"]["result"]
    assert EnvFile.from_bytes((root / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "ollama"
    monkeypatch.delenv("DOCKER_HOST")
    assert env["docker"].container(name).running  # the stop never reached dockerd

    cut.restore()  # dockerd is back
    monkeypatch.setenv("DOCKER_HOST", cut.docker_host)
    second = cli("--project", str(root), "--json", "rollback", "--wait", "30")
    assert second.exit_code == 0, second.stdout
    monkeypatch.delenv("DOCKER_HOST")
    cut.cut()
    assert_back_on_ollama(root, before)


def test_vllm_container_already_removed_then_rollback(docker_sandbox, cli):
    """Someone removed vLLM's container by hand (or the host rebooted it away): rollback still ends on Ollama."""
    root = docker_sandbox
    before = tree_digest(root)
    env = migrate(root)
    name = env["names"]["vllm"]
    env["docker"].client.containers.get(name).remove(force=True)
    rollback = cli("--project", str(root), "--json", "rollback", "--wait", "30")
    doc = json.loads(rollback.stdout)
    assert rollback.exit_code == 0, doc
    stop = next(a for a in doc["actions"] if a["name"] == "stop vLLM")
    assert f"container {name}: not present" in stop["result"]
    assert_back_on_ollama(root, before)


@pytest.mark.parametrize("fault", ["state corrupt", "state deleted", "env edited by hand", "backup missing",
                                   "rollback twice", "two rollbacks at once"])
def test_state_and_file_faults_then_rollback_on_docker(docker_sandbox, fault, cli):
    """Production on vLLM under compose, then the ledger or the files are damaged before rollback."""
    root = docker_sandbox
    before = tree_digest(root)
    migrate(root)
    keeper, env_path = root / ".graphrag-migrate", root / "docker" / ".env"
    if fault == "state corrupt":
        (keeper / "state.json").write_text("{truncated")
    elif fault == "state deleted":
        (keeper / "state.json").unlink()
    elif fault == "env edited by hand":
        env_path.write_bytes(env_path.read_bytes() + b"OPERATOR_NOTE=keep me\n")
    elif fault == "backup missing":
        for backup in (keeper / "backups").rglob("*"):
            if backup.is_file():
                backup.unlink()
    if fault == "two rollbacks at once":
        command = [sys.executable, "-m", "migrator.cli.main", "--project", str(root), "--json", "rollback",
                   "--wait", "30"]
        procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        codes = sorted(p.wait(120) for p in procs)
        assert codes in ([0, 0], [0, ExitCode.LOCKED]), [p.stderr.read() for p in procs]  # never both at work
    else:
        result = cli("--project", str(root), "--json", "rollback", "--wait", "30")
        doc = json.loads(result.stdout)
        actions = {a["name"]: a for a in doc["actions"]}
        if fault == "backup missing":  # the env file is still put right; what could not be restored is named
            assert result.exit_code == ExitCode.CHECK_FAILED, doc
            assert "backup" in actions["env file"]["result"] and "missing" in actions["env file"]["result"]
        else:
            assert result.exit_code == 0, doc
        if fault.startswith("state"):
            assert "rolling back from migrate.yaml alone" in actions["state"]["result"]
            assert "rebuilt from the audit log" in actions["file records"]["result"]
    if fault == "rollback twice":
        snapshot = tree_digest(root)
        again = cli("--project", str(root), "--json", "rollback", "--wait", "30")
        assert again.exit_code == 0 and tree_digest(root) == snapshot
    if fault in ("env edited by hand", "backup missing"):  # the operator's bytes stay; LLM_BACKEND is ollama
        env = EnvFile.from_bytes(env_path.read_bytes())
        assert env.get("LLM_BACKEND") == "ollama"
        if fault == "env edited by hand":
            assert env.get("OPERATOR_NOTE") == "keep me"
        # The operator's own `docker compose` still works: COMPOSE_FILE no longer names the removed vLLM file.
        services = subprocess.run(["docker", "compose", "config", "--services"], cwd=root / "docker",
                                  capture_output=True, text=True)
        assert services.returncode == 0 and services.stdout.split() == ["backend"], services.stderr
        before = {**before, "docker/.env": tree_digest(root)["docker/.env"]}
    assert_back_on_ollama(root, before)
