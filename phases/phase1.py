"""phase1 — prepare: preflight, then vLLM running alone next to Ollama, proven to answer.

Steps: runtime reachable → port free → Ollama answers → start vLLM → tiered readiness.
(Memory-fit verdict and model download: issue 4, not yet here.)
"""

from __future__ import annotations

import time
from pathlib import Path

from migrator import vllm_launch
from migrator.config import Settings
from migrator.engine import Context, Outcome, Phase, Step
from migrator.errors import DockerUnavailable


class RuntimeReachable(Step):
    id = "phase1.runtime"
    title = "vLLM runtime reachable"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        if v.runtime == "docker":
            try:
                info = ctx.docker.info()
            except DockerUnavailable as exc:
                return Outcome.failed(exc.message, exc.fix or "")
            runtimes = sorted((info.get("Runtimes") or {}).keys())
            if v.device == "gpu" and "nvidia" not in runtimes and not info.get("CDISpecDirs"):
                return Outcome.failed(
                    f"Docker has no NVIDIA runtime (runtimes: {', '.join(runtimes)})",
                    "install nvidia-container-toolkit and restart dockerd, or set vllm.device=cpu",
                )
            return Outcome.passed(f"Docker {info.get('ServerVersion', '?')}", docker=info.get("ServerVersion"))
        import shutil
        import subprocess

        python = shutil.which(v.python) or v.python
        module = v.server_module.split(".")[0]
        probe = subprocess.run([python, "-c", f"import importlib.util,sys; sys.exit(importlib.util.find_spec('{module}') is None)"],
                               capture_output=True, timeout=30) if Path(python).exists() else None
        if probe is None or probe.returncode != 0:
            return Outcome.failed(f"{v.python} cannot import '{module}'",
                                  "install vLLM for that python, or set vllm.python to one that has it")
        return Outcome.passed(f"{python} -m {v.server_module}")


def _ours_answers(ctx: Context) -> bool:
    """vLLM already answers on the port with our served model (a resumed or repeated run)."""
    from migrator.adapters.http import OpenAIServer

    v = ctx.settings.vllm
    p = OpenAIServer(f"http://{v.host}:{v.port}", vllm_launch.api_key(ctx.settings)).models(timeout=2)
    return p.ok and any(m.get("id") == ctx.settings.model.served_name for m in (p.body or {}).get("data", []))


class PortFree(Step):
    id = "phase1.port"
    title = "vLLM port free"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        if not vllm_launch.port_in_use(v.host, v.port):
            return Outcome.passed(f"{v.host}:{v.port} free")
        if _ours_answers(ctx):
            return Outcome.passed(f"{v.host}:{v.port} already serves {ctx.settings.model.served_name}")
        return Outcome.failed(f"port {v.host}:{v.port} is in use by another program",
                              "stop it, or choose another port with --port / vllm.port")


class OllamaAnswers(Step):
    id = "phase1.ollama"
    title = "Ollama answers (the rollback target)"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        from migrator.adapters.http import OllamaServer

        server = OllamaServer(ctx.settings.ollama.url)
        version = server.version()
        if not version.ok:
            out = Outcome.passed(f"Ollama not answering at {server.base_url} ({version.describe()}): "
                                 "rollback will have nothing to return to until it runs")
            out.warning = True
            return out
        loaded = server.loaded()
        models = [{"name": m.get("name"), "size_vram": m.get("size_vram")}
                  for m in (loaded.body or {}).get("models", [])] if loaded.ok else []
        held = sum(int(m["size_vram"] or 0) for m in models)
        return Outcome.passed(
            f"Ollama {version.body.get('version', '?')}; loaded: "
            + (", ".join(f"{m['name']} ({int(m['size_vram'] or 0) / 2**30:.1f} GiB)" for m in models) or "none"),
            ollama_loaded=[m["name"] for m in models], ollama_vram_bytes=held,
        )


class StartVllm(Step):
    id = "phase1.start-vllm"
    title = "vLLM started and ready"

    def check(self, ctx: Context) -> Outcome:
        if _ours_answers(ctx):
            return Outcome.passed(f"vLLM answers with {ctx.settings.model.served_name}")
        return Outcome.failed("vLLM is not running")

    def plan(self, ctx: Context) -> list[str]:
        if ctx.settings.vllm.runtime == "docker":
            import json

            spec = vllm_launch.container_spec(ctx.settings, ctx.project)
            return [f"docker run {json.dumps(spec, sort_keys=True)}"]
        return [" ".join(vllm_launch.process_command(ctx.settings, ctx.project))]

    def apply(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        record: dict = {"runtime": v.runtime, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if v.runtime == "docker":
            ctx.docker.remove(v.container_name)  # an earlier, stopped attempt of ours
            spec = vllm_launch.container_spec(ctx.settings, ctx.project, include_secrets=True)
            record.update({"container": v.container_name, "image": v.image,
                           "command": vllm_launch.container_spec(ctx.settings, ctx.project)["command"]})
            ctx.resources["vllm"] = record
            ctx.ledger.save()  # record before starting: a crash right after still knows what to stop
            state = ctx.docker.run(**spec)
            record["container_id"] = state.id

            def alive() -> str | None:
                c = ctx.docker.container(v.container_name)
                return None if c.running else f"container {v.container_name} is {c.status}"

            logs = lambda: ctx.docker.logs(v.container_name, tail=400)  # noqa: E731
        else:
            from migrator.adapters import process

            command = vllm_launch.process_command(ctx.settings, ctx.project)
            log_path = ctx.ledger.root / "logs" / "vllm.log"
            handle = process.start_detached(command, log_path, vllm_launch.process_env(ctx.settings, ctx.project),
                                            cwd=ctx.project)
            record.update({"process": handle.to_dict(), "command": command, "log": str(log_path)})
            ctx.resources["vllm"] = record
            ctx.ledger.save()

            def alive() -> str | None:
                return None if handle.alive() else f"vLLM process {handle.pid} exited"

            def logs() -> str:
                try:
                    return log_path.read_text(errors="replace")[-20000:]
                except OSError:
                    return ""

        ready = vllm_launch.wait_ready(
            ctx.settings, v.startup_timeout_s, alive,
            on_tier=lambda tier, t: ctx.out.step("passed", f"  {tier}", f"{t:.1f} s"),
        )
        record["readiness"] = ready.to_dict()
        ctx.ledger.save()
        if not ready.ok:
            cause = vllm_launch.classify_startup_failure(logs())
            if cause:
                return Outcome.failed(f"vLLM did not start: {cause[0]}", cause[1])
            return Outcome.failed(f"vLLM not ready at '{ready.failed_tier}': {ready.error}",
                                  "read the vLLM log (status shows where) and re-run phase1")
        return Outcome.passed(
            f"ready in {max(ready.tiers.values()):.1f} s, TTFT {ready.ttft_ms} ms",
            ready_s=max(ready.tiers.values()), ttft_ms=ready.ttft_ms,
        )
    # No rollback() of its own: the global rollback stops vLLM from the recorded resources, since it
    # must also work when state.json is gone.


def build(settings: Settings, options: dict) -> Phase:
    return Phase("phase1", "prepare", [RuntimeReachable(), PortFree(), OllamaAnswers(), StartVllm()])

