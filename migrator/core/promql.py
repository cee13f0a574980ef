"""Just enough of Prometheus to judge a window from two scrapes of vLLM's /metrics.

`quantile` answers histogram_quantile(q, increase(<name>_bucket[window])) the way Prometheus does
(linear interpolation inside the bucket); names fall back to older vLLM names that vLLM renamed.

`compile_query` / `Query.value` give phase4's metrics gates a PromQL-style language over the window:

    histogram_quantile(0.99, vllm:time_to_first_token_seconds)      # seconds, over the window
    rate(vllm:request_success_total{finished_reason="abort"})        # per second, over the window
    increase(vllm:num_preemptions_total)                             # count, over the window
    max(vllm:kv_cache_usage_perc)    vllm:num_requests_waiting       # gauges, at the window's end
    increase(x{finished_reason="error"}) / increase(x)              # one division, for ratios

Prometheus spellings are accepted too: a `[5m]` range is ignored (the window is the watch's), a `_bucket`
suffix and a `rate(…)`/`increase(…)` around histogram_quantile's argument are understood.
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


def buckets(samples, name: str, **match: str) -> dict[float, float]:
    name = _resolve(samples, name)
    out: dict[float, float] = {}
    for n, labels, v in samples:
        if n == f"{name}_bucket" and all(labels.get(k) == want for k, want in match.items()):
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


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SELECTOR = re.compile(rf"^({_NAME})\s*(?:\{{([^}}]*)\}})?\s*(?:\[[0-9a-z]+\])?$")
_MATCHER = re.compile(r'^\s*(\w+)\s*=\s*"([^"]*)"\s*$')
_AGGREGATIONS = ("sum", "max", "min", "avg")


class Query:
    """A compiled query: `value(before, after, window_s)` is its number over the window, or None."""

    def __init__(self, kind: str, name: str = "", labels: dict | None = None, q: float = 0.0,
                 parts: tuple["Query", "Query"] | None = None):
        self.kind, self.name, self.labels, self.q, self.parts = kind, name, labels or {}, q, parts

    def value(self, before: list, after: list, window_s: float) -> float | None:
        if self.kind == "div":
            top, bottom = (p.value(before, after, window_s) for p in self.parts)
            return None if top is None or not bottom else top / bottom
        if self.kind == "histogram_quantile":
            b = buckets(after, self.name, **self.labels)
            return quantile(self.q, buckets(before, self.name, **self.labels), b) if b else None
        if self.kind in ("rate", "increase"):
            if not _present(after, self.name):
                return None
            end, start = total(after, self.name, **self.labels), total(before, self.name, **self.labels)
            delta = end - start if end >= start else end  # a counter reset (vLLM restarted) counts from zero
            return delta if self.kind == "increase" else (delta / window_s if window_s > 0 else None)
        values = [v for n, labels, v in after if n == _resolve(after, self.name)
                  and all(labels.get(k) == want for k, want in self.labels.items())]
        if not values:
            return None
        return {"sum": sum, "gauge": sum, "max": max, "min": min,
                "avg": lambda xs: sum(xs) / len(xs)}[self.kind](values)


    def names(self) -> set[str]:
        """The metric names the query reads (to check against a scrape before relying on it)."""
        if self.kind == "div":
            return self.parts[0].names() | self.parts[1].names()
        return {self.name}


def missing(query: Query, samples) -> list[str]:
    """The names a query reads that a scrape has under no spelling (older names included)."""
    present = {n for n, _, _ in samples}
    return sorted(name for name in query.names()
                  if not any(c in present or f"{c}_bucket" in present or f"{c}_count" in present
                             for c in [name, *FALLBACKS.get(name, [])]))


def _present(samples, name: str) -> bool:
    resolved = _resolve(samples, name)
    return any(n == resolved for n, _, _ in samples)


def _selector(text: str) -> tuple[str, dict]:
    m = _SELECTOR.match(text.strip())
    if not m:
        raise ValueError(f"'{text.strip()}' is not a metric name with optional {{label=\"value\"}} matchers")
    labels = {}
    for part in filter(str.strip, (m.group(2) or "").split(",")):
        matcher = _MATCHER.match(part)
        if not matcher:
            raise ValueError(f"label matcher '{part.strip()}' is not label=\"value\"")
        labels[matcher.group(1)] = matcher.group(2)
    return m.group(1), labels


def _call(text: str) -> tuple[str, str] | None:
    m = re.match(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", text, re.S)
    return (m.group(1), m.group(2)) if m else None


def compile_query(text: str) -> Query:
    """Parse a PromQL-style query (see the module's docstring); ValueError says what is wrong."""
    depth, split = 0, None
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "/" and depth == 0:
            if split is not None:
                raise ValueError("one '/' at most")
            split = i
    if split is not None:
        return Query("div", parts=(compile_query(text[:split]), compile_query(text[split + 1:])))
    call = _call(text)
    if call is None:
        return Query("gauge", *_selector(text))
    fn, inner = call
    if fn == "histogram_quantile":
        q_text, _, series = inner.partition(",")
        try:
            q = float(q_text)
        except ValueError:
            raise ValueError(f"histogram_quantile's first argument '{q_text.strip()}' is not a number") from None
        if not 0 <= q <= 1:
            raise ValueError(f"histogram_quantile's quantile {q:g} is not between 0 and 1")
        wrapped = _call(series)
        if wrapped is not None:
            if wrapped[0] not in ("rate", "increase"):
                raise ValueError(f"histogram_quantile over {wrapped[0]}(…): only rate or increase")
            series = wrapped[1]
        name, labels = _selector(series)
        return Query("histogram_quantile", name.removesuffix("_bucket"), labels, q=q)
    if fn in ("rate", "increase", *_AGGREGATIONS):
        return Query(fn, *_selector(inner))
    raise ValueError(f"unknown function {fn}(): histogram_quantile, rate, increase, {', '.join(_AGGREGATIONS)}")
