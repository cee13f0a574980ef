"""The plan's §7.1 gates judged on figures: one judgement for `bench`, phase4's gates and its watch.

A gate passes or fails on its metric; observe-only gates and figures measured elsewhere (a sweep, a GPU
reading) are notes until they exist; a load test whose client was not trustworthy is not judged at all.
"""

from __future__ import annotations

from migrator.config import Settings

# Gates on these are a note until measured: how to measure them.
MEASURED_ELSEWHERE = {"realtime_users": "run `graphrag-migrate bench --sweep`",
                      "wait_users": "run `graphrag-migrate bench --sweep`",
                      "goodput_rps": "run `graphrag-migrate bench --sweep`",
                      "gpu_utilization_pct": "needs nvidia-smi on this machine during the load test"}

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


def judge_gates(settings: Settings, result: dict) -> dict:
    """The plan's §7.1 gates on this result, as phase4 will judge them: refused (untrustworthy client),
    failed, notes (observe-only or measured elsewhere), and each measured value."""
    gates = [g for g in settings.gates if g.source == "bench"]
    refused = trust_problems(gates, result.get("trust") or {})
    metrics = result.get("metrics", {})
    unmeasured = [g for g in gates if g.metric in MEASURED_ELSEWHERE and g.metric not in metrics]
    failed, notes, measured = evaluate([g for g in gates if g not in unmeasured], metrics)
    notes += [f"{g.name}: {g.metric} not measured ({MEASURED_ELSEWHERE[g.metric]})" for g in unmeasured]
    return {"passed": not refused and not failed, "refused": refused, "failed": failed, "notes": notes,
            "measured": measured}
