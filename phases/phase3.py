"""phase3 — integrate: vLLM as a compose service beside the user's stack, production still on Ollama.

Steps: the env file exists (read-only, before anything is written) → the vLLM service rendered into
its own compose file (the user's docker-compose.yml is never touched; nothing with a runtime that is
not compose) → COMPOSE_FILE in the env file merges both → `docker compose config -q` on the merge → vLLM
brought up under compose (runtime docker) → VLLM_BASE_URL/VLLM_MODEL in the env file (LLM_BACKEND is
left alone) → integration checks against vLLM, each with its measurement.

The production switch itself (LLM_BACKEND=vllm, backend recreated) is phase4's, after staging and the
plan's §7.1 gates have passed: nothing in phase3 changes which LLM production users get.
"""

from __future__ import annotations

from pathlib import Path

from migrator.adapters import vllm as vllm_launch
from migrator.adapters.runtime.compose import project_compose
from migrator.core.config import Settings
from migrator.core.engine import Context, Outcome, Phase, Step, Undo, UndoStage
from migrator.core.errors import BackupMismatch, CheckFailed, EnvironmentMissing
from migrator.files.compose_text import (VLLM_COMPOSE_NAME, compose_file_value, compose_path_separator, inline_service,
                                         without_vllm_compose)
from migrator.files.envfile import EnvFile, missing_env_file, read_project_env
from phases.phase1 import STOP_VLLM, stop_vllm


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
    """The user's stack with phase3's vLLM file merged (once it exists)."""
    return project_compose(ctx, [vllm_compose_path(ctx)] if with_vllm and vllm_compose_path(ctx).exists() else [])


class EnvFilePresent(Step):
    """First, and read-only: a missing env file (only a template shipped) stops phase3 before it
    writes anything, in a dry-run as in an apply — not after the compose file was written."""

    id = "phase3.env-file"
    title = "env file exists"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        problem = missing_env_file(ctx.project, ctx.env_path)
        if problem is not None:
            return Outcome.failed(*problem)
        return Outcome.passed(ctx.ledger.relpath(ctx.env_path))


def not_under_compose(ctx: Context) -> Outcome | None:
    """With a runtime that is not compose (a local process), there is no vLLM service to render,
    merge or validate: the compose steps are satisfied and write nothing."""
    if ctx.vllm_runtime.under_compose:
        return None
    return Outcome.passed(f"runtime {ctx.vllm_runtime.name}: vLLM is not a compose service")


class VllmComposeFile(Step):
    id = "phase3.compose-file"
    title = "vLLM service in its own compose file"

    def check(self, ctx: Context) -> Outcome:
        skipped = not_under_compose(ctx)
        if skipped is not None:
            return skipped
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
        if not ctx.vllm_runtime.under_compose:
            return {}
        if ctx.options.get("inline"):
            data = ctx.writer.read(ctx.compose_path)
            if data is None:
                raise CheckFailed(f"{ctx.compose_path} not found", "set project.compose_file")
            text = data.decode("utf-8", errors="surrogateescape")
            updated = inline_service(text, render_vllm_service(ctx), ctx.settings.vllm.service_name)
            return {ctx.compose_path: updated.encode("utf-8", errors="surrogateescape")}
        return {vllm_compose_path(ctx): render_vllm_service(ctx).encode()}


class ComposeFileInEnv(Step):
    id = "phase3.compose-env"
    title = "COMPOSE_FILE merges the vLLM file"

    def check(self, ctx: Context) -> Outcome:
        skipped = not_under_compose(ctx)
        if skipped is not None:
            return skipped
        if ctx.options.get("inline"):
            return Outcome.passed("--inline: the service is in your compose file, COMPOSE_FILE not needed")
        env = read_project_env(ctx)
        if env is None:
            return Outcome.failed(f"{ctx.env_path} not found", "set project.env_file")
        value = env.get("COMPOSE_FILE")
        if value is not None and VLLM_COMPOSE_NAME in value.split(compose_path_separator(env)):
            return Outcome.passed(f"COMPOSE_FILE={value}")
        return Outcome.failed(f"COMPOSE_FILE={value or '(not set)'}")

    def keys_written(self, ctx: Context, path: Path) -> list[str]:
        return ["COMPOSE_FILE"]

    def files(self, ctx: Context) -> dict[Path, bytes]:
        env = read_project_env(ctx)
        if env is None or not ctx.vllm_runtime.under_compose:
            return {}
        return {ctx.env_path: env.set("COMPOSE_FILE", compose_file_value(
            env.get("COMPOSE_FILE"), ctx.compose_path.name, compose_path_separator(env))).to_bytes()}

    def undos(self) -> list[Undo]:
        return [ENV_FILE_UNDO]


class ComposeConfigValid(Step):
    id = "phase3.compose-config"
    title = "merged compose files are valid (docker compose config -q)"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        skipped = not_under_compose(ctx)
        if skipped is not None:
            return skipped
        if not vllm_compose_path(ctx).exists() and not ctx.options.get("inline"):
            return Outcome.failed(f"{VLLM_COMPOSE_NAME} not written yet")
        try:
            proc = compose(ctx).run("config", "-q", timeout=60)
        except EnvironmentMissing as exc:
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
        if not ctx.vllm_runtime.under_compose:
            return Outcome.passed(f"runtime {ctx.vllm_runtime.name}: vLLM stays where phase1 started it")
        state = ctx.docker.container(v.container_name)
        if not state.running:
            return Outcome.failed(f"container {v.container_name} is {state.status}")
        labels = ctx.docker.client.containers.get(v.container_name).labels
        if labels.get("com.docker.compose.service") != v.service_name:
            return Outcome.failed(f"{v.container_name} was started by phase1, not by compose")
        from migrator.adapters.http import OpenAIServer

        ok = OpenAIServer(v.url, vllm_launch.api_key(ctx.settings)).models(timeout=5).ok
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

    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.STOP, STOP_VLLM, stop_vllm)]  # the same container phase1 started


def backend_base_url(ctx: Context, settings: Settings | None = None) -> str:
    """VLLM_BASE_URL as the backend sees vLLM: the setting, else what the vLLM runtime says."""
    settings = settings or ctx.settings
    return settings.vllm.backend_base_url or ctx.vllm_runtime.backend_base_url(settings)


def vllm_endpoint_env(ctx: Context, settings: Settings | None = None) -> dict[str, str]:
    """Where the backend finds vLLM; harmless while LLM_BACKEND is still ollama."""
    settings = settings or ctx.settings
    return {
        "VLLM_BASE_URL": backend_base_url(ctx, settings),
        "VLLM_MODEL": settings.model.served_name,  # must equal vLLM's --served-model-name
    }


def desired_env(ctx: Context, settings: Settings | None = None) -> dict[str, str]:
    """The env file of a backend on vLLM (staging's; production's after phase4's switch)."""
    return {"LLM_BACKEND": "vllm", **vllm_endpoint_env(ctx, settings)}


OLLAMA = "ollama"
BACKEND_KEY = "LLM_BACKEND"


def restore_env(ctx: Context) -> tuple[bool, str]:
    """The env file back to Ollama: byte for byte from its backup when nobody edited it since the tool
    wrote it — nothing added, since an LLM_BACKEND the file never had is the backend's own default
    (Ollama), as before the migration. Otherwise the operator's edits are kept and only what points
    at vLLM is changed back: LLM_BACKEND=ollama where the key has another value, or is absent although
    the tool had set it; COMPOSE_FILE's vLLM entry taken out. Then the file is released (the
    operator's again: not drift, not restored a second time)."""
    from migrator.core.ledger import sha256_bytes

    path, writer, ledger = ctx.env_path, ctx.writer, ctx.ledger
    rel = ledger.relpath(path)
    record = ledger.state["files"].get(rel)
    owned = record is not None and not record.get("released_at")
    tool_set_backend = owned and BACKEND_KEY in (record.get("keys_set") or ())
    notes, as_before, backup_lost = [], False, False
    current = writer.read(path)
    if owned:
        unchanged_since_write = current is not None and sha256_bytes(current) == record.get("written_sha256")
        if unchanged_since_write or current is None:
            try:
                result = writer.restore(rel)
                backup_lost = "missing" in result
            except BackupMismatch as refused:  # the backup changed since it was taken: rolled back in place
                result, backup_lost = refused.one_line(), True
            notes.append(result)
            as_before = result in ("restored from backup", "already as before")
        elif record.get("existed") and sha256_bytes(current) == record.get("original_sha256"):
            notes.append("already as before")
            as_before = True
        else:
            notes.append("edited by hand since graphrag-migrate wrote it: your edits are kept"
                         f" (pre-migration copy: {ledger.root.name}/{record.get('backup', '-')})")
        current = writer.read(path)
    elif record is not None:
        notes.append(f"already rolled back ({record.get('released', 'released')})")
        as_before = current is not None and sha256_bytes(current) == record.get("original_sha256")
    if current is None:
        return False, f"{path} does not exist and there is no backup: create it with LLM_BACKEND=ollama"
    env = EnvFile.from_bytes(current)
    updated, keys = env, []
    value = env.get(BACKEND_KEY)
    if value == OLLAMA:
        notes.append("LLM_BACKEND=ollama")
    elif value is None and (as_before or not tool_set_backend):
        notes.append("LLM_BACKEND not set, as before the migration (the backend's default: Ollama)" if as_before
                     else "LLM_BACKEND not set and graphrag-migrate never set it (the backend's default: Ollama)")
    else:
        updated, keys = updated.set(BACKEND_KEY, OLLAMA), [BACKEND_KEY]
        notes.append("LLM_BACKEND=ollama set" + (f" (was {value})" if value is not None else
                                                 " (graphrag-migrate had set it; the line was gone)"))
    if not as_before:  # not the pre-migration bytes: phase3's compose file must leave COMPOSE_FILE too
        updated, dropped = without_vllm_compose(updated)
        if dropped:
            keys.append("COMPOSE_FILE")
            notes.append(f"{dropped} taken out of COMPOSE_FILE (plain `docker compose` would start vLLM again)")
    if updated is not env:
        writer.write(path, updated.to_bytes(), "rollback", keys=keys)
        if EnvFile.from_bytes(writer.read(path) or b"").get(BACKEND_KEY) != updated.get(BACKEND_KEY):
            return False, f"wrote {path} but LLM_BACKEND does not read back as {updated.get(BACKEND_KEY)}"
    if backup_lost:
        notes.append("the rest of the file is as graphrag-migrate left it: compare it with your own copy")
    else:
        writer.release(rel, "restored from backup" if as_before and updated is env else "rolled back in place")
    return not backup_lost, "; ".join(notes)


# Shared by every step that edits the env file (COMPOSE_FILE, vLLM's endpoint, the switch): run once.
ENV_FILE_UNDO = Undo(UndoStage.FILES, "env file", restore_env)


class EnvKeyStep(Step):
    """A step whose effect is some keys set in the production env file; its undo is the env file's."""

    def wanted(self, ctx: Context) -> dict[str, str]:
        raise NotImplementedError

    def undos(self) -> list[Undo]:
        return [ENV_FILE_UNDO]

    def check(self, ctx: Context) -> Outcome:
        env = read_project_env(ctx)
        if env is None:
            return Outcome.failed(f"{ctx.env_path} not found", "set project.env_file")
        wrong = {k: env.get(k) for k, v in self.wanted(ctx).items() if env.get(k) != v}
        if wrong:
            return Outcome.failed("to set: " + ", ".join(wrong))
        return Outcome.passed(", ".join(f"{k}={v}" for k, v in self.wanted(ctx).items()))

    def keys_written(self, ctx: Context, path: Path) -> list[str]:
        env = read_project_env(ctx)
        return [k for k, v in self.wanted(ctx).items() if env is None or env.get(k) != v]

    def files(self, ctx: Context) -> dict[Path, bytes]:
        env = read_project_env(ctx)
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
        return vllm_endpoint_env(ctx)


def build(settings: Settings, options: dict) -> Phase:
    from phases.integration import IntegrationChecks

    return Phase("phase3", "integrate", [EnvFilePresent(), VllmComposeFile(), ComposeFileInEnv(), ComposeConfigValid(),
                                         VllmUnderCompose(), EnvKnowsVllm(),
                                         IntegrationChecks(options.get("prompt_file"), through_backend=False)])
