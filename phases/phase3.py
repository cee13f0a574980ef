"""phase3 — integrate: vLLM as a compose service beside the user's stack, production still on Ollama.

Steps: the vLLM service rendered into its own compose file (the user's docker-compose.yml is never
touched) → COMPOSE_FILE in the env file merges both → `docker compose config -q` on the merge → vLLM
brought up under compose (runtime docker) → VLLM_BASE_URL/VLLM_MODEL in the env file (LLM_BACKEND is
left alone) → integration checks against vLLM, each with its measurement.

The production switch itself (LLM_BACKEND=vllm, backend recreated) is phase4's, after staging and the
plan's §7.1 gates have passed: nothing in phase3 changes which LLM production users get.
"""

from __future__ import annotations

from pathlib import Path

from migrator.adapters import vllm as vllm_launch
from migrator.core.config import Settings
from migrator.core.engine import Context, Outcome, Phase, Step
from migrator.core.errors import CheckFailed, EnvironmentMissing

VLLM_COMPOSE_NAME = "docker-compose.vllm.yml"


def vllm_compose_path(ctx: Context) -> Path:
    return ctx.compose_path.parent / VLLM_COMPOSE_NAME


def render_vllm_service(ctx: Context) -> str:
    from migrator.files.templates import render

    v = ctx.settings.vllm
    spec = vllm_launch.container_spec(ctx.settings, ctx.project, downloaded=ctx.resources.get("model"))
    volumes = [(src, f"{m['bind']}:{m['mode']}") for src, m in spec["volumes"].items()]
    return render(
        "docker-compose.vllm.yml.j2",
        user_compose_file=ctx.compose_path.name, env_file=ctx.env_path.name,
        service=v.service_name, image=v.image, container_name=v.container_name, command=spec["command"],
        environment=spec["environment"], api_key_env=v.api_key_env, volumes=volumes,
        network_mode=v.network_mode, port_mapping=f"{v.host}:{v.port}:{vllm_launch.CONTAINER_PORT}",
        network=ctx.settings.project.network, gpu=v.device == "gpu",
        health_port=v.port if v.network_mode == "host" else vllm_launch.CONTAINER_PORT,
        start_period_s=int(v.startup_timeout_s), cpuset=v.cpuset,
    )


def compose(ctx: Context, with_vllm: bool = True):
    from migrator.adapters.docker import Compose

    files = [ctx.compose_path]
    if with_vllm and vllm_compose_path(ctx).exists():
        files.append(vllm_compose_path(ctx))
    return Compose(ctx.compose_path.parent, files, ctx.env_path if ctx.env_path.exists() else None,
                   ctx.settings.project.compose_project_name)


class VllmComposeFile(Step):
    id = "phase3.compose-file"
    title = "vLLM service in its own compose file"

    def check(self, ctx: Context) -> Outcome:
        if ctx.options.get("inline"):
            current = (ctx.writer.read(ctx.compose_path) or b"").decode("utf-8", errors="surrogateescape")
            if "org.graphrag-migrate.managed" in current:
                return Outcome.passed(f"service '{ctx.settings.vllm.service_name}' inside {ctx.compose_path.name}")
            return Outcome.failed(f"service not yet in {ctx.compose_path.name}")
        path = vllm_compose_path(ctx)
        current = ctx.writer.read(path)
        if current is None:
            return Outcome.failed(f"{path.name} not written yet")
        if current != render_vllm_service(ctx).encode():
            return Outcome.failed(f"{path.name} differs from the current settings")
        return Outcome.passed(f"{path.name} (service '{ctx.settings.vllm.service_name}')")

    def files(self, ctx: Context) -> dict[Path, bytes]:
        if ctx.options.get("inline"):
            data = ctx.writer.read(ctx.compose_path)
            if data is None:
                raise CheckFailed(f"{ctx.compose_path} not found", "set project.compose_file")
            text = data.decode("utf-8", errors="surrogateescape")
            updated = inline_service(text, render_vllm_service(ctx), ctx.settings.vllm.service_name)
            return {ctx.compose_path: updated.encode("utf-8", errors="surrogateescape")}
        return {vllm_compose_path(ctx): render_vllm_service(ctx).encode()}


def _compose_file_value(current: str | None, ctx: Context) -> str:
    sep = ":"
    entries = [e for e in (current or ctx.compose_path.name).split(sep) if e]
    if VLLM_COMPOSE_NAME not in entries:
        entries.append(VLLM_COMPOSE_NAME)
    return sep.join(entries)


def without_vllm_compose(env):
    """The inverse, for rollback: (env with the vLLM file out of COMPOSE_FILE, the name taken out or "")."""
    value = env.get("COMPOSE_FILE")
    if value is None or VLLM_COMPOSE_NAME not in value.split(":"):
        return env, ""
    rest = [entry for entry in value.split(":") if entry and entry != VLLM_COMPOSE_NAME]
    return (env.set("COMPOSE_FILE", ":".join(rest)) if rest else env.unset("COMPOSE_FILE")), VLLM_COMPOSE_NAME


def inline_service(user_text: str, rendered: str, service: str) -> str:
    """The user's compose text with the rendered vLLM service added under its `services:` — comments,
    order and every other byte kept (never a YAML round trip). Refuses what it cannot place safely."""
    import re

    if re.search(rf"^  {re.escape(service)}:\s*$|^  \"{re.escape(service)}\":\s*$", user_text, re.M):
        return user_text if "org.graphrag-migrate.managed" in user_text else _refuse(
            f"service '{service}' already exists in your compose file", "rename vllm.service_name, or drop --inline")
    lines = user_text.splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if re.match(r"^services:\s*(#.*)?$", ln)]
    if len(starts) != 1:
        return _refuse("cannot find one top-level 'services:' block in your compose file",
                       "use the separate file (phase3 without --inline)")
    end = next((i for i in range(starts[0] + 1, len(lines)) if re.match(r"^[^\s#]", lines[i])), len(lines))
    while end > starts[0] + 1 and not lines[end - 1].strip():
        end -= 1
    block = rendered.split("\nservices:\n", 1)[1]
    service_block, _, rest = block.partition("\nnetworks:\n")
    newline = "\r\n" if user_text.count("\r\n") * 2 > user_text.count("\n") else "\n"
    insert = ["  # --- added by graphrag-migrate phase3 --inline (rollback removes it) ---" + newline]
    insert += [ln + newline for ln in service_block.rstrip("\n").split("\n")]
    if lines and not lines[end - 1].endswith(("\n", "\r\n")):
        lines[end - 1] += newline
    result = "".join(lines[:end] + insert + lines[end:])
    if rest.strip():  # the service's network must exist in the user's file (it is theirs)
        network = rest.strip().split(":")[0].strip().strip('"')
        if not re.search(rf"^networks:\s*$[\s\S]*?^  \"?{re.escape(network)}\"?:", result, re.M):
            return _refuse(f"network '{network}' is not declared in your compose file",
                           "declare it under networks:, or use vllm.network_mode: host")
    return result


def _refuse(message: str, fix: str):
    raise CheckFailed(message, fix)


class ComposeFileInEnv(Step):
    id = "phase3.compose-env"
    title = "COMPOSE_FILE merges the vLLM file"

    def check(self, ctx: Context) -> Outcome:
        if ctx.options.get("inline"):
            return Outcome.passed("--inline: the service is in your compose file, COMPOSE_FILE not needed")
        env = ctx.read_env()
        if env is None:
            return Outcome.failed(f"{ctx.env_path} not found", "set project.env_file")
        value = env.get("COMPOSE_FILE")
        if value is not None and VLLM_COMPOSE_NAME in value.split(":"):
            return Outcome.passed(f"COMPOSE_FILE={value}")
        return Outcome.failed(f"COMPOSE_FILE={value or '(not set)'}")

    def files(self, ctx: Context) -> dict[Path, bytes]:
        env = ctx.read_env()
        if env is None:
            return {}
        return {ctx.env_path: env.set("COMPOSE_FILE", _compose_file_value(env.get("COMPOSE_FILE"), ctx)).to_bytes()}


class ComposeConfigValid(Step):
    id = "phase3.compose-config"
    title = "merged compose files are valid (docker compose config -q)"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        if not vllm_compose_path(ctx).exists() and not ctx.options.get("inline"):
            return Outcome.failed(f"{VLLM_COMPOSE_NAME} not written yet")
        try:
            proc = compose(ctx).run("config", "-q", timeout=60)
        except EnvironmentMissing as exc:
            if ctx.settings.vllm.runtime == "process":
                return Outcome.warn(f"not validated: {exc.message}")
            return Outcome.failed(exc.message, exc.fix or "")
        if proc.returncode != 0:
            return Outcome.failed(f"docker compose config: {proc.stderr.strip()[:300]}",
                                  f"fix the settings that feed {VLLM_COMPOSE_NAME}, then re-run phase3")
        return Outcome.passed("docker compose config -q: valid")


class VllmUnderCompose(Step):
    id = "phase3.vllm-service"
    title = "vLLM running as a compose service"
    production = True

    def check(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        if v.runtime != "docker":
            return Outcome.passed("runtime process: vLLM stays the process phase1 started")
        state = ctx.docker.container(v.container_name)
        if not state.running:
            return Outcome.failed(f"container {v.container_name} is {state.status}")
        labels = ctx.docker.client.containers.get(v.container_name).labels
        if labels.get("com.docker.compose.service") != v.service_name:
            return Outcome.failed(f"{v.container_name} was started by phase1, not by compose")
        from migrator.adapters.http import OpenAIServer

        ok = OpenAIServer(f"http://{v.host}:{v.port}", vllm_launch.api_key(ctx.settings)).models(timeout=5).ok
        return Outcome.passed("compose service answers") if ok else Outcome.failed("not answering yet")

    def plan(self, ctx: Context) -> list[str]:
        return [f"stop phase1's standalone {ctx.settings.vllm.container_name}",
                f"docker compose up -d --wait {ctx.settings.vllm.service_name}"]

    def apply(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        # phase1's standalone container has the same name: it makes way for the compose-managed one.
        ctx.docker.remove(v.container_name)
        proc = compose(ctx).run("up", "-d", "--wait", "--wait-timeout", str(int(v.startup_timeout_s)),
                                v.service_name, timeout=v.startup_timeout_s + 60)
        ctx.resources["vllm"] = {**(ctx.resources.get("vllm") or {}), "runtime": "docker",
                                 "container": v.container_name, "compose_service": v.service_name}
        ctx.ledger.save()
        if proc.returncode != 0:
            logs = ctx.docker.logs(v.container_name, tail=400)
            cause = vllm_launch.classify_startup_failure(logs)
            if cause:
                return Outcome.failed(f"vLLM did not start under compose: {cause[0]}", cause[1])
            return Outcome.failed(f"docker compose up {v.service_name} failed: {proc.stderr.strip()[-300:]}",
                                  "read `docker compose logs vllm`, fix, re-run phase3 (or rollback)")
        ready = vllm_launch.wait_ready(ctx.settings, 120, lambda: None)
        if not ready.ok:
            return Outcome.failed(f"vLLM under compose not ready at '{ready.failed_tier}': {ready.error}")
        return Outcome.passed(f"compose service '{v.service_name}' healthy, TTFT {ready.ttft_ms} ms",
                              ttft_ms=ready.ttft_ms)


def backend_base_url(settings: Settings) -> str:
    v = settings.vllm
    if v.backend_base_url:
        return v.backend_base_url
    if v.runtime == "docker" and v.network_mode != "host":
        return f"http://{v.container_name}:8000/v1"
    return f"http://{v.host}:{v.port}/v1"


def vllm_endpoint_env(settings: Settings) -> dict[str, str]:
    """Where the backend finds vLLM; harmless while LLM_BACKEND is still ollama."""
    return {
        "VLLM_BASE_URL": backend_base_url(settings),
        "VLLM_MODEL": settings.model.served_name,  # must equal vLLM's --served-model-name
    }


def desired_env(settings: Settings) -> dict[str, str]:
    """The env file of a backend on vLLM (staging's; production's after phase4's switch)."""
    return {"LLM_BACKEND": "vllm", **vllm_endpoint_env(settings)}


class EnvKeyStep(Step):
    """A step whose effect is some keys set in the production env file."""

    def wanted(self, ctx: Context) -> dict[str, str]:
        raise NotImplementedError

    def check(self, ctx: Context) -> Outcome:
        env = ctx.read_env()
        if env is None:
            return Outcome.failed(f"{ctx.env_path} not found", "set project.env_file")
        wrong = {k: env.get(k) for k, v in self.wanted(ctx).items() if env.get(k) != v}
        if wrong:
            return Outcome.failed("to set: " + ", ".join(wrong))
        return Outcome.passed(", ".join(f"{k}={v}" for k, v in self.wanted(ctx).items()))

    def files(self, ctx: Context) -> dict[Path, bytes]:
        env = ctx.read_env()
        if env is None:
            return {}
        for key, value in self.wanted(ctx).items():
            if env.get(key) != value:
                env = env.set(key, value)
        return {ctx.env_path: env.to_bytes()}


class EnvKnowsVllm(EnvKeyStep):
    id = "phase3.env"
    title = "env file has vLLM's endpoint (LLM_BACKEND unchanged)"

    def wanted(self, ctx: Context) -> dict[str, str]:
        return vllm_endpoint_env(ctx.settings)


def build(settings: Settings, options: dict) -> Phase:
    from phases.integration import IntegrationChecks

    return Phase("phase3", "integrate", [VllmComposeFile(), ComposeFileInEnv(), ComposeConfigValid(),
                                         VllmUnderCompose(), EnvKnowsVllm(),
                                         IntegrationChecks(options.get("prompt_file"), through_backend=False)])
