"""End to end on real Docker: phase1 starts the real vLLM-CPU container, phase3 hands it over to a compose
service in its own file, the reference backend (LangChain ChatOpenAI) answers through it, phase4 stages the
stack as a separate compose project (its own vLLM, backend, ports and env file) and runs the integration
checks and load test there, and rollback — with state.json deleted — returns everything to the Ollama
stand-in, staging removed, the user's files byte-identical."""

import subprocess
import time
import uuid

import httpx
import pytest

from conftest import SESSION_TAG, reference_stack, tree_digest
from migrator.app import api
from migrator.adapters.docker import DockerRuntime
from migrator.app.harness import tiny_model
from migrator.core.ledger import Ledger
from migrator.app.rehearse import client_free_cpuset
from migrator.adapters.net import free_port

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
        + (f"  cpuset: \"{client_free_cpuset()}\"\n" if client_free_cpuset() else "")
        + f"  hf_cache: {tmp_path / 'hf'}\n  vllm_cache: {tmp_path / 'vllm-cache'}\n"
        f"deploy:\n  watch_s: 2\n  probe_interval_s: 0.5\n  keep_staging: true\n  staging_requests: 16\n"
        f"  staging_concurrency: 4\n  staging_output_tokens: 96\n"
        f"  staging_backend_url: http://127.0.0.1:{free_port()}\n  staging_vllm_port: {free_port()}\n"
        # CPU and a random model: the gates' plumbing is under test here, not this machine's speed.
        "gates:\n  - {name: speed, metric: per_user_output_tokens_per_s, op: '>', threshold: 0}\n"
        "  - {name: errors, metric: error_rate, op: '<=', threshold: 0}\n"
        "  - {name: prod errors, metric: error_rate, op: '<', threshold: 0.05, source: metrics}\n")
    docker = DockerRuntime()
    # The stand-in says its model holds 1 GiB (not 20): this 24 GiB machine must fit the tiny model next to it.
    with reference_stack(tmp_path, servers, backend_image, ["--model-size", str(2**30)], settings_yaml) as (root, url):
        try:
            before = tree_digest(root)
            assert api.run_phase("phase1", root, options={"apply_fit_advice": True}).ok  # real RAM: fits with changes
            assert api.run_phase("phase2", root).ok  # phase4 switches only after phases 1–3
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
            assert httpx.get(url + "/health").json()["llm_backend"] == "ollama"  # production not switched yet
            assert (root / "docker" / ".env").read_bytes().count(b"LLM_BACKEND=ollama") == 1
            # The merged files are what an operator's plain `docker compose ps` sees (COMPOSE_FILE in .env).
            ps = subprocess.run(["docker", "compose", "ps", "--services"], cwd=root / "docker",
                                capture_output=True, text=True)
            assert set(ps.stdout.split()) == {"backend", "vllm"}

            production_requests = _requests_served(port)
            report = api.run_phase("phase4", root)
            assert report.ok, [s.to_dict() for s in report.steps]
            staged = next(s for s in report.steps if s.id == "phase4.staging")
            project = staged.measurements["staging_project"]
            assert project.endswith("-staging") and staged.measurements["integration_ttft_ms"] > 0
            containers = docker.client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
            assert {c.labels["com.docker.compose.service"] for c in containers} == {"backend", "vllm"}
            assert f"{name}-staging" in {c.name for c in containers}
            state = Ledger(root).load()
            loadtest = state["resources"]["loadtest"]
            assert loadtest["source"] == "staging" and loadtest["metrics"]["error_rate"] == 0
            assert f":{staged_vllm_port(root)}" in loadtest["target"]["url"]
            # The load test and the checks went to staging: production's vLLM served none of them — only the
            # one question phase4 asked through the production backend to prove the switch.
            proof = next(s for s in report.steps if s.id == "phase4.backend").measurements
            assert proof["vllm_requests_delta"] >= 1
            assert _requests_served(port) == production_requests + proof["vllm_requests_delta"]
            # Then, the gates passed, production switched: the backend answers through production's vLLM.
            assert [s.id for s in report.steps][-3:] == ["phase4.switch", "phase4.backend", "phase4.watch"]
            assert httpx.get(url + "/health").json()["llm_backend"] == "vllm"
            with httpx.stream("POST", url + "/chat", json={"message": "hello"}, timeout=60) as resp:
                chunks = [c for c in resp.iter_text() if c]
            assert resp.status_code == 200 and len(chunks) >= 2
            assert _requests_served(port) == production_requests + proof["vllm_requests_delta"] + 1
            staging_env = root / ".graphrag-migrate" / "staging" / "staging.env"
            assert oct(staging_env.stat().st_mode & 0o777) == "0o600"

            # The state is lost: rollback still finds the staging project by compose's label.
            (root / ".graphrag-migrate" / "state.json").unlink()
            start = time.monotonic()
            rollback = api.rollback(root, wait_s=60)
            assert rollback.exit_code == 0, [a.to_dict() for a in rollback.actions]
            assert not docker.client.containers.list(all=True,
                                                     filters={"label": f"com.docker.compose.project={project}"})
            assert not staging_env.exists()
            assert not docker.container(name).running
            assert httpx.get(url + "/health").json()["llm_backend"] == "ollama"
            assert tree_digest(root) == before  # docker-compose.vllm.yml removed, .env byte-identical
            assert time.monotonic() - start < 60
        finally:
            docker.remove(name)
            for c in docker.client.containers.list(all=True, filters={"name": f"{name}-staging"}):
                c.remove(force=True)


def _requests_served(port: int) -> float:
    from migrator.core import promql

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return promql.total(promql.parse(text), "vllm:request_success_total")


def staged_vllm_port(root) -> int:
    from migrator.app.api import settings_for

    return settings_for(root).deploy.staging_vllm_port
