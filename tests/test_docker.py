"""Against a real Docker engine and docker compose v2 (host networking only; loopback traffic only)."""

import io
import json
import subprocess
import uuid

import pytest
from dotenv import dotenv_values

from conftest import SESSION_TAG, REPO, tree_digest
from migrator.app import api
from migrator.adapters.docker import DockerRuntime
from migrator.files.envfile import EnvFile
from migrator.core.errors import ExitCode
from migrator.adapters.net import free_port, wait_port
from test_envfile import CASES

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def base_image():
    from migrator.app.harness.images import base_image as build

    return build()


@pytest.mark.parametrize("original, key, value, expected", CASES)
def test_compose_reads_back_what_the_editor_wrote(tmp_path, original, key, value, expected):
    env = EnvFile(original).set(key, value)
    (tmp_path / ".env").write_bytes(env.to_bytes())
    (tmp_path / "compose.yml").write_text(f"services:\n  a:\n    image: x\n    environment:\n      V: ${{{key}}}\n")
    proc = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # `config` prints a compose file, where a literal $ is written $$.
    seen = json.loads(proc.stdout)["services"]["a"]["environment"]["V"].replace("$$", "$")
    assert seen == value == dotenv_values(stream=io.StringIO(env.text), interpolate=False)[key]


def test_rollback_kills_a_vllm_container_that_ignores_sigterm(sandbox, base_image):
    name = f"gm-{SESSION_TAG}-test-vllm-{uuid.uuid4().hex[:6]}"
    docker = DockerRuntime()
    docker.client.containers.run(base_image, ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
                                 name=name, detach=True, network_mode="host")
    try:
        settings = api.settings_for(sandbox, overrides={"vllm.runtime": "docker", "vllm.container_name": name,
                                                        "vllm.stop_timeout_s": "1"})
        report = api.rollback(sandbox, settings, wait_s=5)
        stop = next(a for a in report.actions if a.name == "stop vLLM")
        assert stop.ok and "killed" in stop.result
        assert not docker.container(name).running
        again = api.rollback(sandbox, settings, wait_s=5)
        assert "already exited" in next(a for a in again.actions if a.name == "stop vLLM").result
    finally:
        docker.remove(name)


def test_rollback_with_dockerd_unreachable_still_fixes_env(sandbox, monkeypatch):
    env_path = sandbox / "docker" / ".env"
    env_path.write_bytes(EnvFile.from_bytes(env_path.read_bytes()).set("LLM_BACKEND", "vllm").to_bytes())
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    settings = api.settings_for(sandbox, overrides={"vllm.runtime": "docker"})
    report = api.rollback(sandbox, settings, wait_s=2)
    assert report.exit_code == ExitCode.ENVIRONMENT
    assert EnvFile.from_bytes(env_path.read_bytes()).get("LLM_BACKEND") == "ollama"
    stop = next(a for a in report.actions if a.name == "stop vLLM")
    assert not stop.ok and "Docker daemon not reachable" in stop.result and "re-run rollback" in stop.result


@pytest.fixture
def compose_backend(sandbox, base_image):
    """The sandbox's backend as a real compose service (host network) reading LLM_BACKEND from its env."""
    port = free_port()
    project_name = f"gm-{SESSION_TAG}-test-{uuid.uuid4().hex[:6]}"
    (sandbox / "docker" / "docker-compose.yml").write_text(f"""\
# the user's compose file (test copy)
services:
  backend:
    image: {base_image}
    network_mode: host
    env_file: .env
    volumes:
      - {REPO}:/app:ro
    working_dir: /app
    command: ["python3", "-m", "migrator.sim.backend", "--port", "{port}"]
""")
    overrides = {"project.backend_runtime": "compose", "project.backend_url": f"http://127.0.0.1:{port}",
                 "project.compose_project_name": project_name}
    up = subprocess.run(["docker", "compose", "--project-name", project_name, "up", "-d", "backend"],
                        cwd=sandbox / "docker", capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    assert wait_port(port, 30)
    yield overrides
    subprocess.run(["docker", "compose", "--project-name", project_name, "down", "-t", "1"],
                   cwd=sandbox / "docker", capture_output=True)


def test_phase4_switch_and_rollback_recreate_the_compose_backend(sandbox, compose_backend):
    from migrator.bench import run as bench
    from migrator.adapters.http import get
    from migrator.bench.loadgen import LoadSpec

    backend_url = compose_backend["project.backend_url"]
    settings = api.settings_for(sandbox, overrides={**compose_backend, "deploy.watch_s": "0.5"})
    assert get(backend_url + "/health").body["llm_backend"] == "ollama"
    before = tree_digest(sandbox)
    api.run_phase("phase1", sandbox, settings)
    assert api.run_phase("phase2", sandbox, settings).ok  # phase4 switches only after phases 1–3
    assert api.run_phase("phase3", sandbox, settings).ok
    assert get(backend_url + "/health").body["llm_backend"] == "ollama"  # phase3 leaves production alone
    bench.run(sandbox, settings, bench.default_target(settings, "vllm"),
              LoadSpec(requests=8, concurrency=2, output_tokens=8), None, record=True)
    report = api.run_phase("phase4", sandbox, settings)  # no staging here: the vLLM runs as a process
    backend_step = next(s for s in report.steps if s.id == "phase4.backend")
    assert backend_step.status == "passed"  # recreated by compose, then on vLLM
    assert report.ok and get(backend_url + "/health").body["llm_backend"] == "vllm"
    answer = __import__("httpx").post(backend_url + "/chat", json={"message": "hello"}, timeout=10).json()
    assert answer["llm_backend"] == "vllm" and answer["answer"]
    rb = api.rollback(sandbox, settings, wait_s=30)
    assert rb.exit_code == 0, [a.to_dict() for a in rb.actions]
    assert "recreated" in next(a for a in rb.actions if a.name == "recreate backend").result
    assert get(backend_url + "/health").body["llm_backend"] == "ollama"
    assert tree_digest(sandbox) == before
