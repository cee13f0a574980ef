"""The users-served search: SLO judgement on recorded timelines, the Wilson interval, double-then-bisect on a
server with a known knee, users with history and think time against the simulator, and `bench --compare`
(Ollama stand-in against the vLLM simulator) with its report."""

import json

import pytest

from migrator.bench import capacity
from migrator.bench.capacity import Slo, judge, search, wilson
from migrator.bench.loadgen import LoadSpec, RequestResult, Target

MS = 1_000_000  # ns


def timeline(ttft_ms: float, itl_ms: float, tokens: int, ok: bool = True) -> RequestResult:
    chunks = [int((ttft_ms + i * itl_ms) * MS) for i in range(tokens)]
    return RequestResult(ok=ok, start_ns=0, end_ns=chunks[-1], first_token_ns=chunks[0], chunk_ns=chunks,
                         output_tokens=tokens, prompt_tokens=10, error="" if ok else "http_5xx")


def test_slo_judges_each_request_by_ttft_speed_and_e2e():
    slo = Slo(ttft_ms=500, tokens_per_s=30, e2e_s=30)
    fast = timeline(100, 20, 11)  # TPOT 20 ms = 50 tok/s
    slow_tokens = timeline(100, 40, 11)  # 25 tok/s: too slow to read along
    late = timeline(600, 10, 11)
    long = timeline(100, 20, 2000)  # 50 tok/s but 40 s in all
    assert [slo.meets("realtime", r) for r in (fast, slow_tokens, late, long)] == [True, False, False, True]
    assert [slo.meets("wait", r) for r in (fast, slow_tokens, late, long)] == [True, True, True, False]
    assert not slo.meets("wait", timeline(100, 20, 11, ok=False))
    assert slo.meets("realtime", timeline(100, 20, 1))  # one token: no speed to judge, TTFT decides


def test_wilson_interval_matches_the_formula_at_the_edges():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2130, abs=1e-4)
    low, high = wilson(40, 40)
    assert high == 1.0 and low == pytest.approx(40 / (40 + 1.645 ** 2), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_judge_counts_requests_meeting_each_slo():
    results = [timeline(100, 20, 11)] * 18 + [timeline(900, 20, 11), timeline(100, 20, 11, ok=False)]
    probe = judge(results, 2.0, 4, Slo(fraction=0.9))
    assert probe["realtime"]["met"] == 18 and probe["realtime"]["of"] == 20 and probe["realtime"]["passes"]
    assert probe["wait"]["met"] == 19 and probe["realtime"]["goodput_rps"] == 9.0
    assert not judge(results, 2.0, 4, Slo(fraction=0.95))["realtime"]["passes"]


def fake_probe(knee: int, n: int = 200, log: list | None = None):
    """A server that serves `knee` users: every request meets the SLO up to it, half of them beyond."""

    def probe_at(users: int) -> dict:
        if log is not None:
            log.append(users)
        k = n if users <= knee else n // 2
        results = [timeline(100, 20, 11)] * k + [timeline(900, 20, 11, ok=False)] * (n - k)
        return judge(results, 10.0, users, Slo())

    return probe_at


def test_search_doubles_then_bisects_to_the_knee():
    probed = []
    found = search(fake_probe(10, log=probed), 64, Slo())
    assert found["capacity"]["realtime"]["users"] == 10 and not found["capacity"]["realtime"]["at_least"]
    assert probed == [1, 2, 4, 8, 16, 12, 10, 11]  # 16 is clearly broken for both: doubling stops there
    # 200 requests all meeting the SLO at 10 users: confidently served; 11 confidently not.
    assert found["capacity"]["realtime"]["ci"] == [10, 10]


def test_search_says_at_least_when_the_limit_is_still_served():
    found = search(fake_probe(100), 16, Slo())
    assert found["capacity"]["realtime"] == {**found["capacity"]["realtime"], "users": 16, "at_least": True}


def test_sweep_with_users_history_and_think_time_finds_the_simulators_knee(servers):
    # Each running stream slows the others' tokens by 6 ms: past ~3 users, output < 30 tok/s per user.
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--ttft-ms", "20", "--itl-ms", "15",
                         "--itl-growth-ms", "6")
    target = Target(f"http://127.0.0.1:{port}", "openai", "m")
    base = LoadSpec(input_tokens=16, output_tokens=12, turns=2, think_s=0.02, timeout_s=30)
    seen = []
    found = capacity.sweep(target, base, Slo(), max_users=16, min_requests=16, on_probe=seen.append)
    users = found["capacity"]["realtime"]["users"]
    assert 2 <= users <= 4, found["probes"]
    assert found["metrics"]["realtime_users"] == users and found["capacity"]["wait"]["users"] == 16
    speeds = [p["per_user_output_tokens_per_s"] for p in sorted(found["probes"], key=lambda p: p["users"])]
    assert speeds == sorted(speeds, reverse=True)  # more users, slower tokens for each
    assert [p["users"] for p in seen][:4] == [1, 2, 4, 8]
    for p in found["probes"]:  # the server's own view at each count: scraped before, during and after
        assert p["server"]["scrapes"] >= 2 and p["server"]["failed_scrapes"] == 0
        assert p["ttft_split"]["queue_ms"] >= 0 and p["ttft_split"]["rest_ms"] > 0


def test_bench_compare_writes_a_side_by_side_table_and_report(sandbox, servers, cli):
    vllm = servers.start("migrator.sim.vllm", "--served-model-name", "qwen2.5-32b-instruct")
    result = cli("--project", str(sandbox), "--json", "--set", "bench.sweep_min_requests=8",
                 "--set", f"vllm.port={vllm}",
                 "bench", "--compare", "--max-users", "4", "--turns", "2", "--think", "0",
                 "--output-tokens", "8", "--input-tokens", "16")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = {r["figure"]: r for r in doc["comparison"]}
    speed = rows["output speed per user, 1 user"]
    assert speed["vllm"] > speed["ollama"] and speed["ratio"] == round(speed["vllm"] / speed["ollama"], 2)
    assert rows["real-time users"]["plan_ollama"] == "1–2"
    assert doc["runs"]["ollama"]["target"]["api"] == "ollama" and doc["runs"]["vllm"]["target"]["api"] == "openai"
    page = open(doc["report"]["html"], encoding="utf-8").read()
    assert page.count("<svg") == 3 and "Ollama" in page and "<script" not in page
    assert "server: waiting peak" in page and "Ollama model in VRAM" in page
    with open(doc["report"]["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from migrator.core.ledger import Ledger

    recorded = Ledger(sandbox).read_state()["resources"]["capacity"]
    assert recorded["vllm"]["metrics"]["realtime_users"] == doc["runs"]["vllm"]["capacity"]["realtime"]["users"]
    # The plan's "> 10 real-time users" gate now judges the sweep: 4 users at most here, so it blocks.
    cli("--project", str(sandbox), "--set", f"vllm.port={vllm}", "bench", "--requests", "16", "--concurrency", "2")
    check = cli("--project", str(sandbox), "--json", "phase4", "--check")
    gates = {s["id"]: s for s in json.loads(check.stdout)["steps"]}["phase4.gates"]
    assert gates["status"] != "ok" and "realtime_users=4, not > 10" in gates["message"]
    status = json.loads(cli("--project", str(sandbox), "--json", "status").stdout)
    assert status["capacity"]["vllm"]["metrics"]["realtime_users"] == 4
    assert status["loadtest"]["source"] == "bench" and status["loadtest"]["metrics"]["ttft_p99_ms"] > 0
