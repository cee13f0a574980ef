"""Just enough of Prometheus to judge a window from two scrapes of vLLM's /metrics.

`quantile` answers histogram_quantile(q, increase(<name>_bucket[window])) the way Prometheus does
(linear interpolation inside the bucket); names fall back to older vLLM names that vLLM renamed.
"""

from __future__ import annotations

import re

FALLBACKS = {
    "vllm:kv_cache_usage_perc": ["vllm:gpu_cache_usage_perc"],
    "vllm:inter_token_latency_seconds": ["vllm:time_per_output_token_seconds"],
}
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+([^\s]+)')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            continue
    return out


def _resolve(samples, name: str) -> str:
    present = {n for n, _, _ in samples}
    for candidate in [name, *FALLBACKS.get(name, [])]:
        if candidate in present or f"{candidate}_bucket" in present or f"{candidate}_count" in present:
            return candidate
    return name


def total(samples, name: str, **match: str) -> float:
    name = _resolve(samples, name)
    return sum(v for n, labels, v in samples
               if n == name and all(labels.get(k) == want for k, want in match.items()))


def buckets(samples, name: str) -> dict[float, float]:
    name = _resolve(samples, name)
    out: dict[float, float] = {}
    for n, labels, v in samples:
        if n == f"{name}_bucket":
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """histogram_quantile over the increase between two scrapes; None when nothing was observed."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_bound, prev_count = bound, count
    return bounds[-2] if len(bounds) > 1 else None
