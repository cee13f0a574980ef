"""The backend recreated without cutting answers (phase4's switch, rollback): drain first, recreate with a
grace period, then say what the users saw — "switch: 0 answers cut, requests refused for 1.4 s (backend boot)".

The drain itself is core.drain (pure); this module gives it what this project can show of the requests in
flight (migrator.adapters.inflight): vLLM's running-request gauges while the backend is on vLLM, the backend's
own connections on this host, and on Ollama nothing more (Ollama has no running-request gauge). The old backend
then gets `deploy.stop_grace_s` between SIGTERM and SIGKILL (uvicorn finishes the requests in flight on SIGTERM;
`--now` gives it none). A reverse proxy in the user's compose file is named, with whether it retries.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from migrator.core.drain import Disruption, DrainResult, answers_cut, drain, settle, skip, stop_seen
from migrator.core.engine import Context

PROXY_IMAGES = {"nginx": "nginx", "openresty": "nginx", "traefik": "traefik", "caddy": "caddy",
                "haproxy": "haproxy", "envoy": "envoy"}
# What each proxy does with a request whose upstream refuses it, by default (their docs).
PROXY_RETRIES = {
    "nginx": ("retries on the next upstream only for idempotent requests: a chat POST gets a 502 "
              "(proxy_next_upstream … non_idempotent changes that)"),
    "traefik": "does not retry unless its retry middleware is configured: a refused request gets a 502",
    "caddy": "retries only within lb_try_duration (off by default): a refused request gets a 502",
    "haproxy": "retries a refused connection (retries 3, redispatch) but not once the request was sent",
    "envoy": "retries only with a retry_policy on the route: a refused request gets a 503",
}


def in_flight_observer(ctx: Context, on_vllm: bool):
    """On vLLM: its gauges, plus the backend's connections where the backend is restarted (a backend that
    re-reads its env file sends new questions to Ollama meanwhile: only vLLM's requests are at risk)."""
    from migrator.adapters.inflight import observer

    return observer(ctx.settings.project.backend_url, ctx.settings.vllm.url if on_vllm else None,
                    backend=ctx.backend_runtime.recreates)


def drain_backend(ctx: Context, event: str, on_vllm: bool) -> DrainResult:
    """Wait (bounded) until no answer is in flight through the backend; `--now` does not wait."""
    d = ctx.settings.deploy
    observe, seen_by = in_flight_observer(ctx, on_vllm)
    if ctx.options.get("now"):
        return skip(observe, seen_by)
    ctx.out.info(f"{event}: waiting up to {d.drain_timeout_s:g} s until no answer is in flight ({seen_by})")
    result = drain(observe, d.drain_timeout_s, d.drain_quiet_s, seen_by)
    ctx.out.info(f"  {result.describe()}")
    return result


def recreate_drained(ctx: Context, event: str, result: DrainResult, compose=None,
                     wait_s: float | None = None) -> tuple[bool, str, Disruption | None]:
    """The recreate after the drain, measured: the old backend given its grace period (none after `--now`),
    its port watched meanwhile (when it stopped accepting, what it had open when it went), the refused gap
    from then — or, unseen, from the recreate's start — until the new one answers. (ok, the runtime's
    message, what the users saw — None when the recreate failed)."""
    from migrator.adapters.inflight import PortWatch, connections, url_port
    from phases.backend import wait_until_answers

    runtime = ctx.backend_runtime
    grace = 0.0 if result.skipped else ctx.settings.deploy.stop_grace_s
    if not runtime.recreates:
        ok, message = runtime.recreate(ctx, compose, grace_s=grace)
        return ok, message, Disruption(event, *_cut_without_restart(result),
                                       why_refused="the backend re-reads the env file: nothing restarted")
    port = url_port(ctx.settings.project.backend_url)
    at_stop = None if result.skipped else (lambda: settle(lambda: connections(port),
                                                          ctx.settings.deploy.drain_quiet_s))
    start = time.monotonic()
    with PortWatch(port) as watch:
        ok, message = runtime.recreate(ctx, compose, grace_s=grace, at_stop=at_stop)
    recreate_s = time.monotonic() - start
    stop = stop_seen(watch.samples)
    if not ok:
        return ok, message, None
    if not message.endswith("recreated"):  # nothing deployed: nothing was stopped, nobody refused
        return ok, message, Disruption(event, 0, None, why_refused="nothing was recreated")
    b = ctx.settings.backend
    seen = wait_until_answers(ctx.settings.project.backend_url, b.chat_path, b.wait_s if wait_s is None else wait_s)
    answered_at = start + recreate_s + seen.seconds
    # how long the old one took to stop: seen on its port, else the whole recreate (compose's own time too)
    cut, note = answers_cut(result, stop.stop_s if stop.stop_s is not None else recreate_s, grace,
                            stop.open_at_exit)
    why = "backend boot" if seen.answered else f"the backend did not answer in {seen.seconds:g} s"
    refused_from = stop.stopped_accepting_at if stop.stopped_accepting_at is not None else start
    return ok, message, Disruption(event, cut, round(max(0.0, answered_at - refused_from), 1), why, note)


def _cut_without_restart(result: DrainResult) -> tuple[int | None, None]:
    """A backend that re-reads its env file is never restarted: the switch cuts nothing. In a rollback the
    answers still on vLLM are cut when vLLM stops: those the drain left in flight."""
    if result.drained or result.in_flight == 0:
        return 0, None
    return result.in_flight, None


def proxies(ctx: Context) -> list[str]:
    """A reverse proxy in front of the backend in the user's compose model: one line each, saying whether it
    retries a request the restarting backend refuses. Empty without compose, or when none is found."""
    from migrator.adapters.runtime.compose import compose_model
    from migrator.core.errors import MigrateError

    if ctx.settings.project.backend_runtime != "compose" or not ctx.compose_path.exists():
        return []
    try:
        model = ctx.memo.get("user_model") or compose_model(ctx)
    except (MigrateError, OSError):
        return []
    return proxies_in(model, ctx.settings.project.backend_service, ctx.compose_path.parent)


def proxies_in(model: dict, backend: str, base: Path) -> list[str]:
    out = []
    for name, spec in (model.get("services") or {}).items():
        if name == backend or not isinstance(spec, dict):
            continue
        image = str(spec.get("image") or "").rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
        kind = next((k for prefix, k in PROXY_IMAGES.items() if image.startswith(prefix)), None)
        if kind is None:
            continue
        depends = spec.get("depends_on") or {}
        mentions = backend in depends or any(backend in str(v) for v in (spec.get("labels") or {}).values()) \
            or _config_mentions(spec, backend, base)
        if not mentions:
            continue
        retries = PROXY_RETRIES[kind]
        if kind == "nginx" and _config_mentions(spec, "non_idempotent", base):
            retries = "retries a refused POST on the next upstream (proxy_next_upstream … non_idempotent)"
        if kind == "traefik" and any("retry" in str(k) for k in (spec.get("labels") or {})):
            retries = "has a retry middleware configured"
        out.append(f"reverse proxy '{name}' ({kind}) in front of '{backend}': it {retries}")
    return out


def _config_mentions(spec: dict, word: str, base: Path) -> bool:
    """A bind-mounted config file (or directory of them, up to 50 files) of the proxy mentions `word`."""
    pattern = re.compile(rf"\b{re.escape(word)}\b")
    for volume in spec.get("volumes") or []:
        source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
        if not source or (isinstance(volume, dict) and volume.get("type") not in (None, "bind")):
            continue
        path = Path(source) if Path(source).is_absolute() else base / source
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())[:50] \
            if path.is_dir() else []
        for file in files:
            try:
                if file.stat().st_size < 1_000_000 and pattern.search(file.read_text(errors="replace")):
                    return True
            except OSError:
                continue
    return False
