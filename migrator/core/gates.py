"""The plan's §7.1 gates judged on figures: one judgement for `bench`, phase4's gates and its watch.

A gate passes or fails on its metric; observe-only gates and figures measured elsewhere (a sweep, a GPU
reading) are notes until they exist; a load test whose client was not trustworthy is not judged at all.
"""

from __future__ import annotations

# Gates on these are a note until measured: how to measure them.
MEASURED_ELSEWHERE = {"realtime_users": "run `graphrag-migrate bench --sweep`",
                      "wait_users": "run `graphrag-migrate bench --sweep`",
                      "goodput_rps": "run `graphrag-migrate bench --sweep`",
                      "gpu_utilization_pct": "needs nvidia-smi on this machine during the load test"}

# What a load test records (bench, staging; a sweep's counts; nvidia-smi's reading during the run).
BENCH_METRICS = ("ttft_p99_ms", "ttfa_p99_ms", "e2e_p99_ms", "per_user_output_tokens_per_s", "output_tokens_per_s",
                 "error_rate", "question_e2e_p99_ms", *MEASURED_ELSEWHERE)
# What phase4's watch computes from two scrapes of vLLM's /metrics; any other metrics gate is a PromQL-style query.
WATCH_METRICS = ("ttft_p99_ms", "itl_p99_ms", "e2e_p99_ms", "error_rate", "requests_in_window")


def _did_you_mean(metric: str, names) -> str:
    import difflib

    near = difflib.get_close_matches(metric, names, 1)
    return f" (did you mean {near[0]}?)" if near else ""


def metric_problem(metric: str, source: str) -> str | None:
    """Why a gate's metric can never be measured (a typo would otherwise be a gate that never blocks)."""
    if source == "bench":
        if metric in BENCH_METRICS:
            return None
        return f"a load test records no '{metric}'{_did_you_mean(metric, BENCH_METRICS)}; one of {', '.join(BENCH_METRICS)}"
    if metric in WATCH_METRICS:
        return None
    from migrator.core import promql

    example = "e.g. histogram_quantile(0.99, vllm:time_to_first_token_seconds)"
    try:
        query = promql.compile_query(metric)
    except ValueError as exc:
        return f"'{metric}' is neither one of {', '.join(WATCH_METRICS)} nor a query ({exc}); {example}"
    if query.kind == "gauge" and ":" not in query.name:  # vLLM's own names all have one: likely a typo
        return (f"'{metric}' is not one of {', '.join(WATCH_METRICS)}{_did_you_mean(metric, WATCH_METRICS)}"
                f", nor a vLLM metric name (vllm:…); {example}")
    return None


OVERHEAD_SHARE = 0.05  # the client may add at most this share of a latency gate's threshold


def trust_problems(gates, trust: dict) -> list[str]:
    """Why a load test cannot decide a gate: the client's measured overhead is over 5 % of a latency SLO,
    or it did not sustain 95 % of the concurrency asked for."""
    problems = []
    overhead = trust.get("client_overhead_ms")
    for gate in gates:
        if overhead is not None and gate.metric.endswith("_ms") and overhead > OVERHEAD_SHARE * gate.threshold:
            problems.append(f"client overhead {overhead:g} ms is over 5 % of {gate.name}'s {gate.threshold:g} ms")
    ratio = trust.get("concurrency_ratio")
    if ratio is not None and ratio < 0.95:
        problems.append(f"the client sustained {ratio:.0%} of the concurrency asked for (under 95 %)")
    return problems


def evaluate(gates, metrics: dict, missing_blocks: bool = True) -> tuple[list[str], list[str], dict]:
    """(blocking failures, observe-only or unmeasured notes, measured values) for these gates.
    `missing_blocks=False`: a value not measured (no traffic in a watch window) is a note, not a failure."""
    failed, notes, measured = [], [], {}
    for gate in gates:
        value = metrics.get(gate.metric)
        measured[gate.metric] = value
        if value is None:
            blocking = missing_blocks and not gate.observe_only
            (failed if blocking else notes).append(f"{gate.name}: {gate.metric} not measured")
        elif not gate.passes(float(value)):
            line = f"{gate.name}: {gate.metric}={value:g}, not {gate.op} {gate.threshold:g}"
            (notes if gate.observe_only else failed).append(line + (" (observe-only)" if gate.observe_only else ""))
    return failed, notes, measured


def judge_gates(all_gates, result: dict) -> dict:
    """The plan's §7.1 gates on this result, as phase4 will judge them: refused (untrustworthy client),
    failed, notes (observe-only or measured elsewhere), and each measured value."""
    gates = [g for g in all_gates if g.source == "bench"]
    refused = trust_problems(gates, result.get("trust") or {})
    metrics = result.get("metrics", {})
    unmeasured = [g for g in gates if g.metric in MEASURED_ELSEWHERE and g.metric not in metrics]
    failed, notes, measured = evaluate([g for g in gates if g not in unmeasured], metrics)
    notes += [f"{g.name}: {g.metric} not measured ({MEASURED_ELSEWHERE[g.metric]})" for g in unmeasured]
    return {"passed": not refused and not failed, "refused": refused, "failed": failed, "notes": notes,
            "measured": measured}
