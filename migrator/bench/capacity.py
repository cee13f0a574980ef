"""Capacity: how many concurrent users one server serves within the plan's SLOs (§2.3, §3.1, §7.1).

Users, not requests: each user sends a turn, reads the answer for a think time, then sends the next turn
with the conversation so far (`loadgen`'s users mode). A request meets the *real-time* SLO when its TTFT is
at most `slo_ttft_ms` and its own output speed (1 / TPOT) at least `slo_tokens_per_s` (reading speed); the
*30-second* SLO when its E2E is at most `slo_e2e_s`. A user count is served when at least `slo_fraction` of
its requests meet the SLO (GuideLLM's and AIPerf's goodput idea, applied to users).

The search doubles the user count (1, 2, 4, …) until both SLOs are clearly broken — the Wilson interval of
the pass fraction lies wholly below `slo_fraction` — or `sweep_max_users` is reached, then bisects between
the last count that passed and the first that failed. The interval given with "users served" runs from the
largest count that passed with confidence to one below the smallest that failed with confidence.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from migrator.bench.loadgen import LoadSpec, RequestResult, Target, execute, summarize

SCENARIOS = ("realtime", "wait")
Z = 1.645  # 90 % two-sided Wilson interval


@dataclass
class Slo:
    ttft_ms: float = 500.0
    tokens_per_s: float = 30.0
    e2e_s: float = 30.0
    fraction: float = 0.95

    def meets(self, scenario: str, r: RequestResult) -> bool:
        if not r.ok:
            return False
        if scenario == "wait":
            return r.e2e_s <= self.e2e_s
        if r.ttft_s is None or r.ttft_s * 1000 > self.ttft_ms:
            return False
        tpot = r.tpot_s  # None with fewer than two output tokens: speed cannot be judged, TTFT decides
        return tpot is None or tpot <= 0 or 1 / tpot >= self.tokens_per_s


def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (sound at small n and at k = n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)


def judge(results: list[RequestResult], wall_s: float, users: int, slo: Slo) -> dict:
    """One probe's figures: the usual summary plus, per scenario, how many requests met the SLO."""
    summary = summarize(results, wall_s)
    probe = {"users": users, "requests": len(results), "completed": summary["completed"],
             "wall_s": summary["wall_s"], "ttft_ms": summary["ttft_ms"], "ttfa_ms": summary["ttfa_ms"],
             "thinking": summary["thinking"], "e2e_ms": summary["e2e_ms"],
             "per_user_output_tokens_per_s": summary["per_user_output_tokens_per_s"],
             "output_tokens_per_s": summary["output_tokens_per_s"], "errors": summary["errors"]}
    for scenario in SCENARIOS:
        k, n = sum(slo.meets(scenario, r) for r in results), len(results)
        low, high = wilson(k, n)
        probe[scenario] = {"met": k, "of": n, "fraction": round(k / n, 4) if n else 0.0,
                           "ci": [round(low, 4), round(high, 4)], "passes": n > 0 and k / n >= slo.fraction,
                           "clearly_broken": high < slo.fraction,
                           "goodput_rps": round(k / wall_s, 3) if wall_s else 0.0}
    return probe


def search(probe_at, max_users: int, slo: Slo) -> dict:
    """Double, then bisect. `probe_at(users)` returns `judge`'s dict; each count is probed once."""
    probes: dict[int, dict] = {}

    def probe(n: int) -> dict:
        if n not in probes:
            probes[n] = probe_at(n)
        return probes[n]

    n = 1
    while True:
        p = probe(n)
        if all(p[s]["clearly_broken"] for s in SCENARIOS) or n >= max_users:
            break
        n = min(n * 2, max_users)
    capacity = {}
    for scenario in SCENARIOS:
        failing = [m for m in sorted(probes) if not probes[m][scenario]["passes"]]
        hi = failing[0] if failing else None
        lo = max([m for m in probes if probes[m][scenario]["passes"] and (hi is None or m < hi)], default=0)
        while hi is not None and hi - lo > 1:
            mid = (lo + hi) // 2
            if probe(mid)[scenario]["passes"]:
                lo = mid
            else:
                hi = mid
        sure_pass = [m for m in probes if m <= lo and probes[m][scenario]["ci"][0] >= slo.fraction]
        sure_fail = [m for m in probes if m > lo and probes[m][scenario]["clearly_broken"]]
        capacity[scenario] = {
            "users": lo, "at_least": hi is None,
            "ci": [max(sure_pass, default=0), (min(sure_fail) - 1) if sure_fail else None],
            "goodput_rps": probes[lo][scenario]["goodput_rps"] if lo in probes else 0.0,
        }
    return {"probes": [probes[m] for m in sorted(probes)], "capacity": capacity}


def requests_for(users: int, turns: int, min_requests: int) -> int:
    """Each user finishes at least one conversation; small counts still get enough requests to judge."""
    return max(min_requests, users * turns)


def sweep(target: Target, base: LoadSpec, slo: Slo, max_users: int, min_requests: int,
          prompts: list[list[dict]] | None = None, on_probe=None) -> dict:
    """The users-served search against one server (`base` gives token lengths, turns, think time, timeout)."""

    def probe_at(users: int) -> dict:
        planned = requests_for(users, base.turns, min_requests)
        spec = LoadSpec(**{**base.__dict__, "users": users, "concurrency": None, "rate": None,
                           "requests": planned, "seed": base.seed + users})
        allowed = math.floor((1 - slo.fraction) * planned)

        def hopeless(results: list[RequestResult]) -> bool:  # neither SLO can reach its fraction any more
            return all(sum(not slo.meets(s, r) for r in results) > allowed for s in SCENARIOS)

        from migrator.bench.scrape import Scraper, split_ttft

        with Scraper(target.url, target.api, target.api_key) as scraper:
            results, wall = asyncio.run(execute(target, spec, prompts, should_stop=hopeless))
        probe = judge(results, wall, users, slo)
        probe["stopped_early"] = len(results) < planned
        probe["server"] = scraper.report()  # what vLLM (or Ollama) said about itself at this user count
        probe["ttft_split"] = split_ttft(probe["ttft_ms"]["median"], probe["server"])
        if on_probe:
            on_probe(probe)
        return probe

    found = search(probe_at, max_users, slo)
    cap = found["capacity"]
    found["slo"] = dict(slo.__dict__)
    found["spec"] = {"turns": base.turns, "think_s": base.think_s, "input_tokens": base.input_tokens,
                     "output_tokens": base.output_tokens, "max_users": max_users, "min_requests": min_requests}
    found["metrics"] = {"realtime_users": cap["realtime"]["users"], "wait_users": cap["wait"]["users"],
                        "goodput_rps": cap["realtime"]["goodput_rps"]}
    return found
