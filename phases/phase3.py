"""phase3 — integrate: the backend reads LLM_BACKEND=vllm from the env file and talks to vLLM.

Steps: env file (lossless edit, backed up) → backend recreated and reporting vllm.
(The compose service file for vLLM and the integration checks are issue 6's remaining work.)
"""

from __future__ import annotations

import time
from pathlib import Path

from migrator.config import Settings
from migrator.engine import Context, Outcome, Phase, Step
from migrator.envfile import EnvFile


def backend_base_url(settings: Settings) -> str:
    v = settings.vllm
    if v.backend_base_url:
        return v.backend_base_url
    if v.runtime == "docker" and v.network_mode != "host":
        return f"http://{v.container_name}:8000/v1"
    return f"http://{v.host}:{v.port}/v1"


def desired_env(settings: Settings) -> dict[str, str]:
    return {
        "LLM_BACKEND": "vllm",
        "VLLM_BASE_URL": backend_base_url(settings),
        "VLLM_MODEL": settings.model.served_name,  # must equal vLLM's --served-model-name
    }


class EnvPointsAtVllm(Step):
    id = "phase3.env"
    title = "env file points the backend at vLLM"

    def _current(self, ctx: Context) -> EnvFile | None:
        data = ctx.writer.read(ctx.env_path)
        return None if data is None else EnvFile.from_bytes(data)

    def check(self, ctx: Context) -> Outcome:
        env = self._current(ctx)
        if env is None:
            return Outcome.failed(f"{ctx.env_path} not found", "set project.env_file")
        wrong = {k: env.get(k) for k, v in desired_env(ctx.settings).items() if env.get(k) != v}
        if wrong:
            return Outcome.failed("to set: " + ", ".join(wrong))
        return Outcome.passed(", ".join(f"{k}={v}" for k, v in desired_env(ctx.settings).items()))

    def files(self, ctx: Context) -> dict[Path, bytes]:
        env = self._current(ctx)
        if env is None:
            return {}
        for key, value in desired_env(ctx.settings).items():
            if env.get(key) != value:
                env = env.set(key, value)
        return {ctx.env_path: env.to_bytes()}


class BackendOnVllm(Step):
    id = "phase3.backend"
    title = "backend recreated and on vLLM"

    def _health(self, ctx: Context):
        from migrator.adapters.http import get

        return get(ctx.settings.project.backend_url.rstrip("/") + "/health", timeout=2)

    def check(self, ctx: Context) -> Outcome:
        probe = self._health(ctx)
        if not probe.ok:
            return Outcome.failed(f"backend does not answer: {probe.describe()}")
        backend = probe.body.get("llm_backend") if isinstance(probe.body, dict) else None
        if backend != "vllm":
            return Outcome.failed(f"backend reports llm_backend={backend}")
        return Outcome.passed("backend reports llm_backend=vllm")

    def plan(self, ctx: Context) -> list[str]:
        if ctx.settings.project.backend_runtime == "none":
            return ["wait for the backend to re-read the env file"]
        return [f"docker compose up -d --no-deps --force-recreate {ctx.settings.project.backend_service}"]

    def apply(self, ctx: Context) -> Outcome | None:
        if ctx.settings.project.backend_runtime == "compose":
            from migrator.adapters.docker import Compose

            compose = Compose(ctx.compose_path.parent, [ctx.compose_path], ctx.env_path,
                              ctx.settings.project.compose_project_name)
            proc = compose.recreate(ctx.settings.project.backend_service)
            if proc.returncode != 0:
                return Outcome.failed(f"docker compose could not recreate the backend: {proc.stderr.strip()[:300]}",
                                      "fix the compose error, then re-run phase3 (or rollback)")
        deadline = time.monotonic() + ctx.settings.backend.wait_s
        while time.monotonic() < deadline:
            if self.check(ctx).ok:
                break
            time.sleep(0.25)
        return None


def build(settings: Settings, options: dict) -> Phase:
    return Phase("phase3", "integrate", [EnvPointsAtVllm(), BackendOnVllm()])
