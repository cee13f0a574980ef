"""What the server says about itself during a load test: vLLM's /metrics, Ollama's /api/ps.

A thread of its own (one short GET a second) so the load generator's event loop is never held up. For
vLLM: running and waiting requests and KV-cache usage over time (peak and mean), and from the histograms'
increase over the run the server's own TTFT and queueing time — so a client TTFT splits into time spent
waiting in vLLM's queue and the rest (prefill, network, client). For Ollama: the models loaded, their
size and the share in VRAM (a model spilling to the CPU is why Ollama is slow). Where `nvidia-smi` is on the
PATH, the busiest GPU's utilisation too (the plan's "GPU utilisation < 90 %" gate).
"""

from __future__ import annotations

import shutil
import statistics
import threading

from migrator.core import promql


class Scraper:
    def __init__(self, base_url: str, api: str, api_key: str | None = None, interval_s: float = 1.0):
        self.base_url, self.api, self.api_key, self.interval_s = base_url.rstrip("/"), api, api_key, interval_s
        self.samples: list[dict] = []
        self.first_text = self.last_text = ""
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="graphrag-migrate-scrape")
        self.nvidia_smi = shutil.which("nvidia-smi")  # this box's GPU, when it can be read
        self.gpu: list[float] = []

    def __enter__(self) -> "Scraper":
        self._scrape()  # the "before" of every histogram delta
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._scrape()  # the "after"

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._scrape()

    def _gpu(self) -> None:
        """Busiest GPU's utilisation now (GB10 reports it; only its memory fields are [N/A])."""
        import subprocess

        try:
            out = subprocess.run([self.nvidia_smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=3).stdout
        except (OSError, subprocess.TimeoutExpired):
            return
        values = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
        if values:
            self.gpu.append(max(values))

    def _scrape(self) -> None:
        from migrator.adapters.http import request

        if self.nvidia_smi:
            self._gpu()

        if self.api == "openai":
            auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
            probe = request("GET", self.base_url + "/metrics", 5, headers=auth)
            if not probe.ok or not isinstance(probe.body, str):
                self.failures += 1
                return
            text = probe.body
            self.first_text = self.first_text or text
            self.last_text = text
            s = promql.parse(text)
            self.samples.append({"running": promql.total(s, "vllm:num_requests_running"),
                                 "waiting": promql.total(s, "vllm:num_requests_waiting"),
                                 "kv_cache_usage": promql.total(s, "vllm:kv_cache_usage_perc")})
        else:
            probe = request("GET", self.base_url + "/api/ps", 5)
            if not probe.ok or not isinstance(probe.body, dict):
                self.failures += 1
                return
            models = probe.body.get("models") or []
            self.samples.append({"models": [m.get("name") for m in models],
                                 "size_bytes": sum(m.get("size", 0) for m in models),
                                 "vram_bytes": sum(m.get("size_vram", 0) for m in models)})

    def report(self) -> dict:
        out: dict = {"scrapes": len(self.samples), "failed_scrapes": self.failures}
        if self.gpu:
            out.update(gpu_utilization_pct_peak=max(self.gpu), gpu_utilization_pct_mean=round(statistics.fmean(self.gpu), 1))
        if not self.samples:
            return out
        if self.api == "openai":
            for key in ("running", "waiting", "kv_cache_usage"):
                values = [x[key] for x in self.samples]
                out[f"{key}_peak"] = max(values)
                out[f"{key}_mean"] = round(statistics.fmean(values), 3)
            a, b = promql.parse(self.first_text), promql.parse(self.last_text)
            for name, key in (("vllm:time_to_first_token_seconds", "server_ttft_ms"),
                              ("vllm:request_queue_time_seconds", "server_queue_ms")):
                before, after = promql.buckets(a, name), promql.buckets(b, name)
                for q, label in ((0.5, "p50"), (0.99, "p99")):
                    value = promql.quantile(q, before, after)
                    out[f"{key}_{label}"] = None if value is None else round(value * 1000, 2)
            return out
        last = self.samples[-1]
        out.update(models=last["models"], size_bytes=last["size_bytes"], vram_bytes=last["vram_bytes"],
                   vram_share=round(last["vram_bytes"] / last["size_bytes"], 3) if last["size_bytes"] else None)
        return out


def split_ttft(client_ttft_ms: float | None, server: dict) -> dict | None:
    """Client TTFT (median) as queueing in vLLM (median) and the rest: prefill, network, client."""
    queue = server.get("server_queue_ms_p50")
    if client_ttft_ms is None or queue is None:
        return None
    return {"queue_ms": queue, "rest_ms": round(client_ttft_ms - queue, 2)}
