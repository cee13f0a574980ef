"""End to end on real Docker: phase1 starts the real vLLM-CPU container, phase3 hands it over to a compose
service in its own file, the reference backend (LangChain ChatOpenAI) answers through it, and rollback
returns everything to the Ollama stand-in with the user's files byte-identical."""

import subprocess
import time
import uuid

import httpx
import pytest

from conftest import SESSION_TAG, reference_stack, tree_digest
from migrator import api
from migrator.adapters.docker import DockerRuntime
from migrator.harness import tiny_model
from migrator.rehearse import free_port

pytestmark = [pytest.mark.docker, pytest.mark.vllm]


def test_phase1_then_phase3_under_compose_then_rollback(tmp_path, servers, backend_image, vllm_image):
    model = tiny_model.build(tmp_path / "tiny")
    name = f"gm-{SESSION_TAG}-vllm-{uuid.uuid4().hex[:6]}"
    port = free_port()
    settings_yaml = (
        f"model:\n  id: {model}\n  served_name: tiny-qwen\n  real_weights: false\n"
        f"vllm:\n  runtime: docker\n  image: {vllm_image}\n  device: cpu\n  network_mode: host\n"
        f"  port: {port}\n  container_name: {name}\n  max_model_len: 512\n  extra_args: [--enforce-eager]\n"
        f"  startup_timeout_s: 240\n  stop_timeout_s: 20\n"
        f"  hf_cache: {tmp_path / 'hf'}\n  vllm_cache: {tmp_path / 'vllm-cache'}\n")
    docker = DockerRuntime()
    # The stand-in says its model holds 1 GiB (not 20): this 24 GiB machine must fit the tiny model next to it.
    with reference_stack(tmp_path, servers, backend_image, ["--model-size", str(2**30)], settings_yaml) as (root, url):
        try:
            before = tree_digest(root)
            assert api.run_phase("phase1", root).ok
            standalone = docker.client.containers.get(name)
            assert "com.docker.compose.service" not in standalone.labels

            report = api.run_phase("phase3", root)
            assert report.ok, [s.to_dict() for s in report.steps]
            managed = docker.client.containers.get(name)
            assert managed.labels.get("com.docker.compose.service") == "vllm" and managed.id != standalone.id
            health = managed.attrs["State"].get("Health", {}).get("Status")
            assert health == "healthy"  # compose's healthcheck on /health, from the rendered file
            compose_file = (root / "docker" / "docker-compose.vllm.yml").read_text()
            assert f'"{vllm_image}"' in compose_file and "network_mode: host" in compose_file
            assert httpx.get(url + "/health").json()["llm_backend"] == "vllm"
            with httpx.stream("POST", url + "/chat", json={"message": "hello"}, timeout=60) as resp:
                chunks = [c for c in resp.iter_text() if c]
            assert resp.status_code == 200 and len(chunks) >= 2
            # The merged files are what an operator's plain `docker compose ps` sees (COMPOSE_FILE in .env).
            ps = subprocess.run(["docker", "compose", "ps", "--services"], cwd=root / "docker",
                                capture_output=True, text=True)
            assert set(ps.stdout.split()) == {"backend", "vllm"}

            start = time.monotonic()
            rollback = api.rollback(root, wait_s=60)
            assert rollback.exit_code == 0, [a.to_dict() for a in rollback.actions]
            assert not docker.container(name).running
            assert httpx.get(url + "/health").json()["llm_backend"] == "ollama"
            assert tree_digest(root) == before  # docker-compose.vllm.yml removed, .env byte-identical
            assert time.monotonic() - start < 60
        finally:
            docker.remove(name)
