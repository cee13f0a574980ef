"""Rollback with the Docker daemon down (issue 14, item 15): found once by a short ping, every action that needs
Docker says so at once with the fix, the file undos still run (the env file back to Ollama), nothing waits for
a backend Docker cannot recreate, and the whole rollback ends in seconds with exit 3. No daemon is needed:
DOCKER_HOST points at a socket nobody serves (absent, refusing, or accepting and never answering)."""

import json
import socket
import time

import pytest

from migrator.adapters import process
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger
from migrator.files.envfile import EnvFile

ON_DOCKER = ("--set", "vllm.runtime=docker", "--set", "project.backend_runtime=compose")


@pytest.fixture(params=["absent", "refusing", "hung"])
def dead_docker(request, tmp_path, monkeypatch):
    path = tmp_path / "docker.sock"
    listener = None
    if request.param != "absent":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        if request.param == "hung":
            listener.listen(16)  # connections queue, nobody ever reads or answers: a wedged dockerd
        else:
            listener.close()  # the socket file stays, nothing listens: connection refused
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    try:
        yield f"unix://{path}"
    finally:
        if listener is not None:
            listener.close()


def _stop_backend(servers) -> None:
    """The backend is a compose service here: with dockerd down it is not running."""
    for handle in servers.handles:
        if "migrator.sim.backend" in " ".join(handle.command):
            process.stop(handle, 3)


def test_rollback_with_dockerd_down_fixes_the_env_file_and_exits_3_within_seconds(sandbox, servers, dead_docker,
                                                                                   cli):
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    assert cli("--project", str(sandbox), "phase3").exit_code == 0
    env_path = sandbox / "docker" / ".env"
    env_path.write_bytes(EnvFile.from_bytes(env_path.read_bytes()).set("LLM_BACKEND", "vllm").to_bytes())
    _stop_backend(servers)
    vllm_pid = Ledger(sandbox).read_state()["resources"]["vllm"]["process"]["pid"]

    start = time.monotonic()
    result = cli("--project", str(sandbox), *ON_DOCKER, "--json", "rollback", "--wait", "60")
    elapsed = time.monotonic() - start
    doc = json.loads(result.stdout)
    assert result.exit_code == ExitCode.ENVIRONMENT, doc
    assert elapsed < 10, f"rollback took {elapsed:.1f} s"
    actions = {a["name"]: a for a in doc["actions"]}
    assert actions["env file"]["ok"]  # the disk was enough: the next backend start uses Ollama
    assert EnvFile.from_bytes(env_path.read_bytes()).get("LLM_BACKEND") == "ollama"
    for name in ("stop vLLM", "recreate backend"):
        line = actions[name]["result"]
        assert not actions[name]["ok"] and actions[name]["environment"]
        assert f"Docker daemon not reachable at {dead_docker} (" in line
        assert line.endswith("start it (`sudo systemctl start docker`) and re-run rollback") and "\n" not in line
    # phase1's vLLM was a process (its recorded runtime needs no Docker): stopped all the same, and said so.
    assert actions["stop vLLM"]["result"].startswith(f"process {vllm_pid}: stopped; Docker daemon not reachable")
    assert not process.alive(vllm_pid)
    backend = actions["backend answers"]
    assert not backend["ok"] and "not waited for" in backend["result"]
    assert actions["Ollama answers"]["ok"]


def test_rollback_with_dockerd_down_pings_it_once(sandbox, dead_docker, monkeypatch):
    """Every Docker-needing action of one rollback asks the same adapter: one ping, one connection refused."""
    import docker

    from migrator.app import api

    calls = []
    real = docker.from_env
    monkeypatch.setattr(docker, "from_env", lambda **kw: calls.append(kw) or real(**kw))
    settings = api.settings_for(sandbox, overrides={"vllm.runtime": "docker", "project.backend_runtime": "compose"})
    report = api.rollback(sandbox, settings, wait_s=30)
    assert report.exit_code == ExitCode.ENVIRONMENT
    assert len(calls) == 1 and calls[0]["timeout"] <= 3
