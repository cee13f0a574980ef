"""`bench`: one load test against vLLM or Ollama, recorded in the ledger for status and phase4's gates."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from migrator.config import Settings
from migrator.errors import ConfigError
from migrator.ledger import Ledger, atomic_write_bytes, now_iso
from migrator.loadgen import LoadSpec, Target, run_load


def default_target(settings: Settings, backend: str) -> Target:
    from migrator.vllm_launch import api_key

    if backend == "ollama":
        return Target(settings.ollama.url, "ollama", settings.ollama.model)
    v = settings.vllm
    return Target(f"http://{v.host}:{v.port}", "openai", settings.model.served_name, api_key(settings))


def check_safe(target: Target, spec: LoadSpec, settings: Settings) -> None:
    """Load goes to this machine (or hosts the operator named), bounded in count and time."""
    host = urlsplit(target.url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1" or host in settings.bench.allowed_hosts):
        raise ConfigError(f"refusing to load {host}: only loopback or bench.allowed_hosts",
                          f"add {host} to bench.allowed_hosts in migrate.yaml if it is your own server")
    if spec.requests > settings.bench.max_requests:
        raise ConfigError(f"--requests {spec.requests} exceeds bench.max_requests ({settings.bench.max_requests})",
                          "lower it, or raise bench.max_requests")
    if spec.duration_s and spec.duration_s > settings.bench.max_duration_s:
        raise ConfigError(f"--duration {spec.duration_s} exceeds bench.max_duration_s", "lower it")
    if target.api not in ("openai", "ollama"):
        raise ConfigError(f"--api {target.api} is not valid", "openai or ollama")


def load_prompts(path: Path) -> list[list[dict]]:
    """JSONL: {"prompt": "…"} or {"messages": [...]} per line (multi-turn allowed)."""
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompts.append(item["messages"] if "messages" in item else [{"role": "user", "content": item["prompt"]}])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}:{n} is not {{\"prompt\": …}} or {{\"messages\": […]}}", "fix that line") from None
    if not prompts:
        raise ConfigError(f"{path} has no prompts", "one JSON object per line")
    return prompts


def run(project: Path, settings: Settings, target: Target, spec: LoadSpec, prompts: list[list[dict]] | None,
        record: bool, progress=None) -> dict:
    check_safe(target, spec, settings)
    summary = asyncio.run(run_load(target, spec, prompts, progress))
    result = {"at": now_iso(), "target": {"url": target.url, "api": target.api, "model": target.model},
              "spec": asdict(spec), **summary}
    if record:
        ledger = Ledger(project)
        with ledger.locked("graphrag-migrate bench"):
            ledger.load()
            saved = ledger.root / "bench" / f"{time.strftime('%Y%m%dT%H%M%S')}-{target.api}.json"
            atomic_write_bytes(saved, json.dumps(result, indent=2).encode())
            ledger.state["resources"]["loadtest"] = {"at": result["at"], "target": result["target"],
                                                     "metrics": summary["metrics"], "file": str(saved)}
            ledger.save()
            ledger.audit("bench", "loadtest", "ok", target=result["target"], metrics=summary["metrics"])
        result["saved"] = str(saved)
    return result
