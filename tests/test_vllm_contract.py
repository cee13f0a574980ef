"""The same client checks against the vLLM simulator and the real vLLM-CPU: any difference fails.

The real server is started once per test session (30-60 s) with the tiny model built locally.
"""

import json
import sys

import httpx
import pytest

from migrator.adapters import process
from migrator.core.config import Settings
from migrator.adapters.net import free_port, wait_port
from migrator.adapters.vllm import wait_ready

from conftest import SESSION_TAG, VLLM_MAX_LEN as MAX_LEN, VLLM_NAME as NAME

# FACTS.md: the metrics the tool reads, with their Prometheus types.
METRICS = {
    "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge", "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram", "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter", "vllm:request_success_total": "counter",
    "vllm:num_preemptions_total": "counter", "vllm:cache_config_info": "gauge",
}


@pytest.fixture(scope="session")
def real_vllm_container(tiny_model_dir):
    """The same model in the locally built vLLM-CPU image, host networking (stopped at session end)."""
    import uuid

    from migrator.adapters.docker import DockerRuntime
    from migrator.app.harness.images import vllm_cpu_image

    image = vllm_cpu_image()
    docker = DockerRuntime()
    port = free_port()
    name = f"gm-{SESSION_TAG}-contract-vllm-{uuid.uuid4().hex[:6]}"
    docker.client.containers.run(
        image, ["--model", "/model", "--served-model-name", NAME, "--max-model-len", str(MAX_LEN), "--enforce-eager",
                "--host", "127.0.0.1", "--port", str(port)],
        name=name, detach=True, network_mode="host", ipc_mode="host",
        volumes={str(tiny_model_dir): {"bind": "/model", "mode": "ro"}})
    try:
        settings = Settings()
        settings.vllm.host, settings.vllm.port, settings.vllm.max_model_len = "127.0.0.1", port, MAX_LEN
        settings.model.served_name = NAME
        ready = wait_ready(settings, 240, lambda: None if docker.container(name).running else "container exited",
                           poll=0.5)
        assert ready.ok, f"{ready.failed_tier}: {ready.error}\n{docker.logs(name)[-3000:]}"
        yield f"http://127.0.0.1:{port}"
    finally:
        docker.remove(name)


@pytest.fixture(scope="module")
def sim_vllm(tmp_path_factory):
    port = free_port()
    handle = process.start_detached(
        [sys.executable, "-m", "migrator.sim.vllm", "--model", "/models/tiny", "--served-model-name", NAME,
         "--port", str(port), "--max-model-len", str(MAX_LEN)], tmp_path_factory.mktemp("sim") / "sim.log")
    assert wait_port(port)
    yield f"http://127.0.0.1:{port}"
    process.stop(handle, 3)


@pytest.fixture(params=["simulator", pytest.param("vllm-cpu", marks=pytest.mark.vllm),
                        pytest.param("vllm-cpu-container", marks=[pytest.mark.vllm, pytest.mark.docker])])
def server(request):
    return request.getfixturevalue({"simulator": "sim_vllm", "vllm-cpu": "real_vllm",
                                    "vllm-cpu-container": "real_vllm_container"}[request.param])


def shape(obj):
    """Keys and value types, recursively: what a client can rely on, not the values."""
    if isinstance(obj, dict):
        return {k: shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shape(obj[0])] if obj else []
    return type(obj).__name__


def test_readiness_tiers(server):
    settings = Settings()
    settings.vllm.port = int(server.rsplit(":", 1)[1])
    settings.vllm.max_model_len = MAX_LEN
    settings.model.served_name = NAME
    ready = wait_ready(settings, 30, lambda: None)
    assert ready.ok, ready.error
    assert list(ready.tiers) == ["port open", "/health 200", "/v1/models lists the model", "1-token completion",
                                 "streamed completion"]
    assert ready.max_model_len == MAX_LEN and ready.ttft_ms is not None


def test_models_and_version(server):
    models = httpx.get(server + "/v1/models").json()
    entry = models["data"][0]
    assert entry["id"] == NAME and entry["max_model_len"] == MAX_LEN and entry["owned_by"] == "vllm"
    assert set(entry) >= {"id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"}
    assert httpx.get(server + "/version").json() == {"version": "0.32.0"}
    health = httpx.get(server + "/health")
    assert health.status_code == 200 and health.content == b""


def test_stream_framing_and_usage(server):
    body = {"model": NAME, "messages": [{"role": "user", "content": "Hello 안녕하세요"}], "max_tokens": 7,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=30) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 7
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}


def test_non_stream_shape(server):
    resp = httpx.post(server + "/v1/chat/completions", timeout=30, json={
        "model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": True})
    doc = resp.json()
    assert resp.status_code == 200 and doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["role"] == "assistant" and doc["choices"][0]["finish_reason"] == "length"
    assert doc["usage"]["completion_tokens"] == 3


ERROR_CASES = {
    "wrong model": ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
                    404, "NotFoundError", "model", "The model `nope` does not exist."),
    "prompt over max_model_len": ({"model": NAME, "max_tokens": 4,
                                   "messages": [{"role": "user", "content": "hi " * (2 * MAX_LEN)}]},
                                  400, "BadRequestError", "input_tokens", f"maximum context length is {MAX_LEN} tokens"),
    "prompt text over the character bound": ({"model": NAME, "max_tokens": 4,
                                              "messages": [{"role": "user", "content": "context " * (3 * MAX_LEN)}]},
                                             400, "BadRequestError", "input_text", "characters"),
    "max_tokens over max_model_len": ({"model": NAME, "max_tokens": MAX_LEN + 1,
                                       "messages": [{"role": "user", "content": "hi"}]},
                                      400, "BadRequestError", "max_tokens", "cannot be greater than max_model_len"),
    "messages missing": ({"model": NAME}, 400, "Bad Request", "body.messages", "validation error"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_bodies(server, case):
    body, status, kind, param, fragment = ERROR_CASES[case]
    resp = httpx.post(server + "/v1/chat/completions", json=body, timeout=30)
    err = resp.json()["error"]
    assert (resp.status_code, err["type"], err["param"], err["code"]) == (status, kind, param, status)
    assert fragment in err["message"]


def test_malformed_json_body(server):
    resp = httpx.post(server + "/v1/chat/completions", content=b"{nope",
                      headers={"content-type": "application/json"}, timeout=30)
    err = resp.json()["error"]
    assert (resp.status_code, err["type"], err["code"]) == (400, "Bad Request", 400)


def test_max_tokens_beyond_the_context_is_shortened_not_refused(server):
    resp = httpx.post(server + "/v1/chat/completions", timeout=60, json={
        "model": NAME, "max_tokens": MAX_LEN, "ignore_eos": True,
        "messages": [{"role": "user", "content": "hi"}]})
    usage = resp.json()["usage"]
    assert resp.status_code == 200 and usage["total_tokens"] == MAX_LEN


def test_metric_names_and_types(server):
    text = httpx.get(server + "/metrics").text
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE vllm:"))
    assert {name: types.get(name) for name in METRICS} == METRICS
    sample = next(line for line in text.splitlines() if line.startswith("vllm:request_success_total{"))
    assert sample.startswith('vllm:request_success_total{engine="0",finished_reason=')
    assert f'model_name="{NAME}"' in sample


@pytest.mark.vllm
def test_ollama_standin_relays_real_model_text_from_vllm_cpu(real_vllm, servers):
    port = servers.start("migrator.sim.ollama", "--upstream", real_vllm)
    lines = httpx.post(f"http://127.0.0.1:{port}/api/chat", timeout=60, json={
        "model": "qwen3:32b", "messages": [{"role": "user", "content": "안녕하세요"}],
        "options": {"num_predict": 6}}).text.splitlines()
    objs = [json.loads(x) for x in lines]
    final = objs[-1]
    assert final["done"] and 1 <= final["eval_count"] <= 6  # vLLM's usage count, not a chunk count
    assert final["prompt_eval_count"] > 0 and all(not o["done"] for o in objs[:-1])
    text = "".join(o["message"]["content"] for o in objs)
    assert text  # real tokenizer output from the tiny model (random weights: any script)
