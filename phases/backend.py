"""The backend's health, waited for: after phase4's switch, on staging, and after a rollback.

What the backend reports about its LLM comes from `/health`'s `llm_backend` field where it has one;
a backend without the field is judged by answering alone (`accept` decides what counts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class BackendSeen:
    ok: bool
    url: str
    probe: Any = None  # the last http probe
    llm_backend: str | None = None

    def describe(self) -> str:
        if self.probe is None:
            return f"backend at {self.url}: not probed"
        if not self.probe.ok:
            return f"backend does not answer at {self.url}: {self.probe.describe()}"
        return f"backend at {self.url} reports llm_backend={self.llm_backend}"


def health_url(backend_url: str) -> str:
    return backend_url.rstrip("/") + "/health"


def wait_for_backend(backend_url: str, accept: Callable[[str | None], bool], wait_s: float,
                     interval_s: float = 0.25) -> BackendSeen:
    """Probe `/health` until it answers with an accepted `llm_backend` value, or `wait_s` runs out."""
    from migrator.adapters.http import get

    url = health_url(backend_url)
    deadline = time.monotonic() + wait_s
    while True:
        probe = get(url, timeout=2.0)
        backend = probe.body.get("llm_backend") if probe.ok and isinstance(probe.body, dict) else None
        if probe.ok and accept(backend):
            return BackendSeen(True, url, probe, backend)
        if time.monotonic() >= deadline:
            return BackendSeen(False, url, probe, backend)
        time.sleep(interval_s)
