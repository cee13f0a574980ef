"""The load generator: metric definitions on recorded timelines (exact), runs against the simulator
and the Ollama stand-in, every error kind counted without crashing the run, and the bench command."""

import asyncio
import json

import pytest

from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger
from migrator.bench.loadgen import LoadSpec, RequestResult, Target, percentiles, run_load, summarize

MS = 1_000_000  # ns


def timeline(start_ms: int, chunks_ms: list[int], end_ms: int, tokens: int) -> RequestResult:
    return RequestResult(ok=True, start_ns=start_ms * MS, end_ns=end_ms * MS, first_token_ns=chunks_ms[0] * MS,
                         chunk_ns=[c * MS for c in chunks_ms], output_tokens=tokens, prompt_tokens=10)


def test_metric_definitions_on_recorded_timelines():
    a = timeline(0, [100, 110, 130, 160], 160, 4)  # TTFT 100, ITL 10/20/30, TPOT (160-100)/3 = 20
    b = timeline(50, [250, 260], 270, 2)            # TTFT 200, ITL 10, TPOT (220-200)/1 = 20
    s = summarize([a, b], wall_s=0.5)
    assert s["ttft_ms"]["mean"] == pytest.approx(150.0) and s["ttft_ms"]["median"] == pytest.approx(150.0)
    assert s["itl_ms"]["mean"] == pytest.approx(17.5)
    assert s["tpot_ms"]["mean"] == pytest.approx(20.0)
    assert s["e2e_ms"]["p99"] == pytest.approx(160 + (220 - 160) * 0.99)
    assert s["output_tokens_per_s"] == pytest.approx(12.0) and s["requests_per_s"] == pytest.approx(4.0)
    assert s["per_user_output_tokens_per_s"] == pytest.approx(50.0)  # 1 / 20 ms
    assert s["metrics"]["ttft_p99_ms"] == pytest.approx(100 + 100 * 0.99)
    assert s["achieved_concurrency"] == pytest.approx((0.16 + 0.22) / 0.5)


def test_percentiles_interpolate_like_numpy():
    assert percentiles([1, 2, 3, 4])["p90"] == pytest.approx(3.7)
    assert percentiles([5])["p99"] == 5 and percentiles([])["mean"] is None


def test_errors_are_counted_by_kind():
    failed = [RequestResult(False, 0, 10 * MS, error="refused"), RequestResult(False, 0, 10 * MS, error="http_4xx")]
    s = summarize(failed + [timeline(0, [5, 6], 7, 2)], wall_s=1)
    assert s["errors"] == {"refused": 1, "http_4xx": 1} and s["completed"] == 1
    assert s["metrics"]["error_rate"] == pytest.approx(2 / 3, abs=1e-4)


def test_against_the_simulator_ttft_itl_and_token_counts(servers):
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--ttft-ms", "40", "--itl-ms", "8",
                         "--itl-growth-ms", "0")
    s = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "openai", "m"),
                             LoadSpec(requests=24, concurrency=4, output_tokens=10)))
    assert s["completed"] == 24 and not s["errors"]
    assert 40 <= s["ttft_ms"]["median"] < 50 and 8 <= s["itl_ms"]["mean"] < 12
    assert s["output_tokens"] == 24 * 10 and s["trust"]["output_tokens_mismatch"] == 0
    assert s["trust"]["concurrency_ratio"] > 0.9


def test_ollama_ndjson_and_its_one_at_a_time_queue(servers):
    port = servers.start("migrator.sim.ollama", "--ttft-ms", "30", "--itl-ms", "5")
    s = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "ollama", "qwen3:32b"),
                             LoadSpec(requests=6, concurrency=3, output_tokens=5, warmup=0)))
    assert s["completed"] == 6 and s["output_tokens"] == 30  # from eval_count
    # One stream at a time: with 3 users the median TTFT includes waiting for the others.
    assert s["ttft_ms"]["median"] > 2 * 30


def test_error_kinds_never_crash_the_run(servers):
    from migrator.adapters.net import free_port

    dead = asyncio.run(run_load(Target(f"http://127.0.0.1:{free_port()}", "openai", "m"),
                                LoadSpec(requests=3, concurrency=1, warmup=0)))
    assert dead["errors"] == {"refused": 3}
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--crash-after", "3")
    wrong = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "openai", "not-m"),
                                 LoadSpec(requests=2, concurrency=1, warmup=0)))
    assert wrong["errors"] == {"http_4xx": 2}
    crashed = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "openai", "m"),
                                   LoadSpec(requests=5, concurrency=1, warmup=0, output_tokens=3)))
    assert crashed["completed"] == 3 and sum(crashed["errors"].values()) == 2
    hung_port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--hang-after", "1")
    hung = asyncio.run(run_load(Target(f"http://127.0.0.1:{hung_port}", "openai", "m"),
                                LoadSpec(requests=2, concurrency=1, warmup=0, timeout_s=1, output_tokens=3)))
    assert hung["completed"] == 1 and hung["errors"] == {"timeout": 1}


def test_bench_records_for_phase4_and_refuses_other_hosts(sandbox, servers, cli):
    port = servers.start("migrator.sim.vllm", "--served-model-name", "qwen2.5-32b-instruct")
    result = cli("--project", str(sandbox), "--json", "--set", f"vllm.port={port}", "bench",
                 "--requests", "8", "--concurrency", "2", "--output-tokens", "8")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["completed"] == 8
    loadtest = Ledger(sandbox).read_state()["resources"]["loadtest"]
    assert loadtest["metrics"]["ttft_p99_ms"] == doc["metrics"]["ttft_p99_ms"]
    gates = cli("--project", str(sandbox), "--json", "phase4", "--check")
    step = {s["id"]: s for s in json.loads(gates.stdout)["steps"]}["phase4.gates"]
    assert "realtime_users not measured (run `graphrag-migrate bench --sweep`)" in step["message"]  # said, not faked
    assert step["measurements"]["ttft_p99_ms"] == doc["metrics"]["ttft_p99_ms"]
    refused = cli("--project", str(sandbox), "bench", "--url", "http://10.1.2.3:8000")
    assert refused.exit_code == ExitCode.USAGE and "only loopback" in refused.stderr


def test_sustained_concurrency_leaves_out_the_ramp_down():
    # Two streams kept busy from 0 to 300 ms (the last start), then one request drains until 900 ms.
    results = [timeline(0, [50], 150, 1), timeline(0, [50], 300, 1), timeline(150, [200], 300, 1),
               timeline(300, [350], 900, 1)]
    from migrator.bench.loadgen import sustained_concurrency

    assert sustained_concurrency(results, 2) == pytest.approx(2.0)
    assert sustained_concurrency(results) == pytest.approx(2.0)  # no concurrency given: up to the last start
    assert summarize(results, wall_s=0.9)["achieved_concurrency"] == pytest.approx(1.2 / 0.9, abs=0.01)


def test_progress_line_rolls_over_the_last_seconds():
    from migrator.bench.loadgen import progress_line

    old = timeline(0, [900], 1000, 10)  # finished long before the window
    recent = [timeline(9000, [9000 + t], 9500, 20) for t in (100, 200, 300)]
    failed = RequestResult(False, 9000 * MS, 9100 * MS, error="timeout")
    line = progress_line([old, *recent, failed], 4, now_ns=10_000 * MS, window_s=5)
    assert line == "5 done, 4 in flight; last 5 s: TTFT p50 200 ms, 12 tok/s; 1 errors"


def test_ground_truth_server_and_calibration_hold_the_causal_order(servers):
    """Each request's client interval contains the server's, so our median TTFT is never below the truth."""
    from urllib.request import urlopen

    from migrator.bench.loadgen import calibrate

    port = servers.start("migrator.sim.truth", "--ttft-ms", "30", "--itl-ms", "3")
    s = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "openai", "truth"),
                             LoadSpec(requests=40, concurrency=8, output_tokens=6)))
    truth = json.load(urlopen(f"http://127.0.0.1:{port}/truth?last=40"))
    assert truth["completions"] == 40 and s["completed"] == 40 and s["output_tokens"] == 240
    assert truth["ttft_ms_median"] >= 30 and s["ttft_ms"]["median"] >= truth["ttft_ms_median"]
    # Tokens are due on an absolute schedule (start + TTFT + i·ITL): a first token written late is followed
    # by shorter gaps, so the mean sits near 3 ms, on either side of it.
    assert 2.5 <= truth["itl_ms_mean"] <= 4.5
    cal = calibrate(4)
    assert cal["overhead_ms"] >= 0 and cal["true_ttft_ms"] >= 20 and cal["requests"] == 32


def test_gates_refuse_a_load_test_whose_client_was_not_trustworthy(sandbox):
    from migrator.app import api
    from phases.phase4 import Gates

    ctx = api.context(sandbox)
    ctx.ledger.load()
    good = {"ttft_p99_ms": 100.0, "per_user_output_tokens_per_s": 50.0}
    ctx.resources["loadtest"] = {"metrics": good, "trust": {"client_overhead_ms": 30.0, "concurrency_ratio": 1.0}}
    outcome = Gates().check(ctx)
    assert not outcome.ok and "client overhead 30 ms is over 5 % of P99 latency's 500 ms" in outcome.message
    ctx.resources["loadtest"]["trust"] = {"client_overhead_ms": 1.0, "concurrency_ratio": 0.9}
    assert "sustained 90% of the concurrency" in Gates().check(ctx).message
    ctx.resources["loadtest"]["trust"] = {"client_overhead_ms": 1.0, "concurrency_ratio": 0.99}
    assert Gates().check(ctx).ok  # trustworthy and within the SLOs (real-time users: a note until a sweep)


@pytest.mark.vllm
def test_against_the_real_vllm_cpu(real_vllm):
    s = asyncio.run(run_load(Target(real_vllm, "openai", "tiny-qwen"),
                             LoadSpec(requests=12, concurrency=4, output_tokens=8, input_tokens=16)))
    assert s["completed"] == 12 and not s["errors"]
    assert s["output_tokens"] == 12 * 8 and s["trust"]["output_tokens_mismatch"] == 0  # ignore_eos honoured
    assert s["prompt_tokens"] >= 12 * 16 and s["ttft_ms"]["median"] > 0 and s["itl_ms"]["mean"] > 0
    from migrator.bench import run as bench

    fitted = bench.measure(Target(real_vllm, "openai", "tiny-qwen"),
                           LoadSpec(requests=4, concurrency=2, output_tokens=4, input_tokens=100), calibrate=False)
    # The tiny test tokenizer keeps few words whole: on average there (a real model's: "exact", every prompt).
    assert fitted["input_tokens_fitted"] in ("exact", "mean") and abs(fitted["prompt_tokens"] / 4 - 100) <= 15


def test_scraping_vllm_metrics_splits_ttft_into_queueing_and_the_rest(servers):
    """Two slots, six streams: the simulator queues; its /metrics during the run show it."""
    from migrator.bench import run as bench

    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--max-num-seqs", "2", "--ttft-ms", "20",
                         "--itl-ms", "5")
    result = bench.measure(Target(f"http://127.0.0.1:{port}", "openai", "m"),
                           LoadSpec(requests=30, concurrency=6, output_tokens=30), calibrate=False)
    server = result["server"]
    assert server["scrapes"] >= 2 and server["failed_scrapes"] == 0
    assert server["running_peak"] == 2 and server["waiting_peak"] >= 3
    assert server["server_queue_ms_p50"] > 50  # four of six streams wait for a slot
    split = result["ttft_split"]
    assert split["queue_ms"] + split["rest_ms"] == pytest.approx(result["ttft_ms"]["median"], abs=0.01)


def test_scraping_ollama_ps_shows_the_loaded_model(servers):
    from migrator.bench import run as bench

    port = servers.start("migrator.sim.ollama", "--preload")
    result = bench.measure(Target(f"http://127.0.0.1:{port}", "ollama", "qwen3:32b"),
                           LoadSpec(requests=2, concurrency=1, output_tokens=4, ignore_eos=False), calibrate=False)
    assert result["server"]["models"] == ["qwen3:32b"] and result["server"]["vram_share"] is not None


def test_bench_diff_compares_two_saved_runs(sandbox, servers, tmp_path, cli):
    saved = []
    for ttft in ("20", "60"):
        port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--ttft-ms", ttft)
        out = cli("--project", str(sandbox), "--json", "bench", "--url", f"http://127.0.0.1:{port}",
                  "--model", "m", "--requests", "8", "--concurrency", "2", "--output-tokens", "4",
                  "--no-calibrate")
        saved.append(json.loads(out.stdout)["saved"])
    result = cli("--json", "bench", "--diff", *saved)
    assert result.exit_code == 0
    rows = {r["figure"]: r for r in json.loads(result.stdout)["rows"]}
    ttft = rows["TTFT median (ms)"]
    assert ttft["b"] > ttft["a"] and ttft["b_better"] is False and ttft["change_pct"] > 50
    assert "real-time users" not in rows  # neither run was a sweep
    bad = tmp_path / "not-a-run.json"
    bad.write_text("[1, 2]")
    refused = cli("bench", "--diff", saved[0], str(bad))
    assert refused.exit_code == ExitCode.USAGE and "is not a saved bench result" in refused.stderr


def test_graphrag_fan_out_maps_in_parallel_then_reduces_per_question(servers):
    from migrator.bench.loadgen import execute, summarize_run

    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--ttft-ms", "20", "--itl-ms", "4")
    spec = LoadSpec(requests=26, users=2, fanout=3, output_tokens=8, input_tokens=16)
    results, wall = asyncio.run(execute(Target(f"http://127.0.0.1:{port}", "openai", "m"), spec))
    assert len(results) == 24  # whole questions only: 6 × (3 maps + 1 reduce) fit in 26
    by_question: dict = {}
    for r in results:
        by_question.setdefault(r.question, []).append(r)
    assert len(by_question) == 6
    for calls in by_question.values():
        maps = [c for c in calls if c.stage == "map"]
        (reduce,) = [c for c in calls if c.stage == "reduce"]
        assert len(maps) == 3 and all(c.ok for c in calls)
        assert max(m.start_ns for m in maps) < min(m.end_ns for m in maps)  # the maps overlap: parallel
        assert reduce.start_ns >= max(m.end_ns for m in maps)  # the reduce waits for every map
        assert reduce.prompt_tokens > max(m.prompt_tokens for m in maps)  # and carries their answers
    s = summarize_run(results, wall, spec)
    assert s["questions"]["count"] == 6 and s["questions"]["failed"] == 0
    assert s["questions"]["e2e_ms"]["median"] > s["e2e_ms"]["median"]  # a question outlasts any one call
    assert s["metrics"]["question_e2e_p99_ms"] == s["questions"]["e2e_ms"]["p99"]


def test_synthetic_prompts_are_fitted_to_the_served_tokenizer(servers):
    from migrator.bench import run as bench
    from migrator.adapters.http import request
    from migrator.bench.loadgen import fit_prompt, synthetic_messages

    port = servers.start("migrator.sim.vllm", "--served-model-name", "m")
    target = Target(f"http://127.0.0.1:{port}", "openai", "m")
    words, vocabulary, how = fit_prompt(target, 300)
    # The simulator's stand-in tokenizer (one token per 4 bytes, at least one per word) keeps short words whole.
    assert how == "exact" and "graph" not in vocabulary and len(vocabulary) >= 8
    counts = {request("POST", target.url + "/tokenize", 5,
                      {"model": "m", "messages": synthetic_messages(words, seed, vocabulary)}).body["count"]
              for seed in range(8)}
    assert counts == {300}
    result = bench.measure(target, LoadSpec(requests=4, concurrency=2, output_tokens=4, input_tokens=300),
                           calibrate=False)
    assert result["input_tokens_fitted"] == "exact" and result["prompt_tokens"] == 4 * 300
    assert fit_prompt(Target(target.url, "ollama", "m"), 300) is None  # Ollama has no /tokenize


def test_a_prompt_the_server_cut_is_flagged(servers):
    """The Ollama stand-in truncates to num_ctx (4096) as Ollama does, and then looks fast."""
    port = servers.start("migrator.sim.ollama", "--preload")
    s = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "ollama", "qwen3:32b"),
                             LoadSpec(requests=2, concurrency=1, output_tokens=2, input_tokens=6000,
                                      ignore_eos=False)))
    assert s["trust"]["prompt_truncated"] == 2 and "cut by the server" in s["trust"]["note"]
    short = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "ollama", "qwen3:32b"),
                                 LoadSpec(requests=2, concurrency=1, output_tokens=2, input_tokens=50,
                                          ignore_eos=False)))
    assert short["trust"]["prompt_truncated"] == 0


def test_the_shipped_graphrag_prompt_sets_load(tmp_path):
    from migrator.bench import run as bench
    from migrator.core.errors import ConfigError

    for name in ("en", "ko"):
        prompts = bench.load_prompts(name)
        assert len(prompts) == 12 and all(p[0]["role"] == "system" and p[1]["role"] == "user" for p in prompts)
    assert "그래프" in bench.load_prompts("ko")[0][0]["content"]
    with pytest.raises(ConfigError, match="not found"):
        bench.load_prompts(str(tmp_path / "missing.jsonl"))


def test_gpu_utilisation_is_sampled_where_nvidia_smi_answers(servers, tmp_path, monkeypatch):
    """No GPU here: a stand-in nvidia-smi on PATH prints two GPUs' utilisation as the real one does."""
    from migrator.bench import run as bench

    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=utilization.gpu ] && printf '87\\n93\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{__import__('os').environ['PATH']}")
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m")
    result = bench.measure(Target(f"http://127.0.0.1:{port}", "openai", "m"),
                           LoadSpec(requests=4, concurrency=2, output_tokens=4), calibrate=False)
    assert result["server"]["gpu_utilization_pct_peak"] == 93.0
    assert result["metrics"]["gpu_utilization_pct"] == 93.0  # what the plan's "< 90 %" gate reads


def test_bench_gate_judges_the_plans_gates_and_sets_the_exit_code(sandbox, servers, cli):
    args = ["--requests", "8", "--concurrency", "2", "--output-tokens", "8", "--no-record"]
    fast = servers.start("migrator.sim.vllm", "--served-model-name", "qwen2.5-32b-instruct")
    ok = cli("--project", str(sandbox), "--json", "--set", f"vllm.port={fast}", "bench", "--gate", *args)
    gates = json.loads(ok.stdout)["gates"]
    assert ok.exit_code == 0 and gates["passed"] and gates["measured"]["ttft_p99_ms"] < 500
    assert any("realtime_users not measured" in n for n in gates["notes"])
    slow = servers.start("migrator.sim.vllm", "--served-model-name", "qwen2.5-32b-instruct", "--ttft-ms", "600")
    failed = cli("--project", str(sandbox), "--json", "--set", f"vllm.port={slow}", "bench", "--gate", *args)
    gates = json.loads(failed.stdout)["gates"]
    assert failed.exit_code == 1 and not gates["passed"]
    assert any(f.startswith("P99 latency: ttft_p99_ms=") for f in gates["failed"])
    lenient = cli("--project", str(sandbox), "--set", f"vllm.port={slow}", "bench", *args)
    assert lenient.exit_code == 0 and "gate failed: P99 latency" in lenient.stderr + lenient.stdout


def test_exact_fit_with_a_tokenizer_that_keeps_words_whole(monkeypatch):
    """The fitting logic alone, with /tokenize answered by a word-level counting (3 template tokens + one per
    word, except "data", which it splits): every prompt then counts exactly what was asked."""
    from migrator.adapters import http
    from migrator.bench.loadgen import fit_prompt, synthetic_messages

    def tokenize(method, url, timeout=2.0, json_body=None, headers=None):
        words = json_body["messages"][0]["content"].split()
        return http.Probe(True, 200, {"count": 3 + sum(2 if w == "data" else 1 for w in words)})

    monkeypatch.setattr(http, "request", tokenize)
    words, vocabulary, how = fit_prompt(Target("http://127.0.0.1:9", "openai", "m"), 500)
    assert how == "exact" and words == 497 and "data" not in vocabulary and len(vocabulary) >= 8
    assert {3 + len(synthetic_messages(words, seed, vocabulary)[0]["content"].split()) for seed in range(5)} == {500}
