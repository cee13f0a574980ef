"""What shows the requests in flight through a backend, for the drain before it is recreated (core.drain).

- vLLM: its gauges `vllm:num_requests_running` + `vllm:num_requests_waiting` (every request a backend on
  vLLM has sent and not finished).
- Ollama: nothing. It has no running-request gauge; /api/ps lists loaded models only. So a backend on
  Ollama is seen only by
- the backend's own connections on this host: ESTABLISHED TCP sockets whose local port is the backend's
  port, from /proc/net/tcp{,6} (host networking, a process, or compose's userland proxy for a published
  port). An idle keep-alive connection counts until the server closes it (uvicorn after 5 s): the drain
  errs on the side of waiting. None when nothing listens on that port in this network namespace (a
  backend only reachable through a NAT shows nothing here).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from migrator.core.drain import PortSample

LISTEN, ESTABLISHED = "0A", "01"
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def vllm_in_flight(vllm_url: str, timeout: float = 2.0) -> int | None:
    """Running + waiting requests on vLLM, summed over its labels; None when /metrics does not answer."""
    from migrator.adapters.http import OpenAIServer
    from migrator.core import promql

    scrape = OpenAIServer(vllm_url).metrics_text(timeout)
    if not scrape.ok or not isinstance(scrape.body, str):
        return None
    samples = promql.parse(scrape.body)
    if not any(name == "vllm:num_requests_running" for name, _labels, _value in samples):
        return None
    return int(promql.total(samples, "vllm:num_requests_running") + promql.total(samples, "vllm:num_requests_waiting"))


def url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def connections(port: int, tables=TABLES) -> int | None:
    """ESTABLISHED connections to local `port`; None when nothing listens on it here (or /proc is unreadable)."""
    readable, listening, established = port_state(port, tables)
    return established if readable and listening else None


def port_state(port: int, tables=TABLES) -> tuple[bool, bool, int]:
    """(/proc readable, something listens on local `port`, its ESTABLISHED connections) — the connections
    counted even after the listener went: a server finishing its answers on SIGTERM has closed it."""
    listening, established, readable = False, 0, False
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port != port:
                continue
            if fields[3] == LISTEN:
                listening = True
            elif fields[3] == ESTABLISHED:
                established += 1
    return readable, listening, established


class PortWatch:
    """The backend's port sampled every `interval_s` in a thread while it is recreated (core.drain.stop_seen
    reads the old backend's stop off the samples). `with PortWatch(port) as watch: recreate()`."""

    def __init__(self, port: int, interval_s: float = 0.05, tables=TABLES):
        self.port, self.interval_s, self.tables = port, interval_s, tables
        self.samples: list[PortSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"port-watch-{port}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, listening, established = port_state(self.port, self.tables)
            if not readable:
                return
            self.samples.append(PortSample(time.monotonic(), listening, established))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PortWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)


def backend_connections(backend_url: str) -> int | None:
    return connections(url_port(backend_url))


def observer(backend_url: str, vllm_url: str | None, backend: bool = True) -> tuple[Callable[[], int | None], str]:
    """The in-flight observer for a backend (and, when it is on vLLM, vLLM's gauges; without `backend`, those
    alone): the larger count of those that see anything, and what they are in words. Ollama adds nothing:
    it shows nothing."""
    port = url_port(backend_url)
    sources: list[tuple[str, Callable[[], int | None]]] = []
    if vllm_url:
        sources.append(("vLLM's running and waiting requests", lambda: vllm_in_flight(vllm_url)))
    if backend or not vllm_url:
        sources.append((f"connections to the backend's port {port}", lambda: connections(port)))

    def observe() -> int | None:
        counts = [n for n in (fn() for _name, fn in sources) if n is not None]
        return max(counts) if counts else None

    names = " and ".join(name for name, _fn in sources)
    if not vllm_url:
        names += " (Ollama has no running-request gauge)"
    return observe, names
