"""Staging (plan §4.3 phase 4): the integrated stack brought up again as a separate compose project — its own
project name, ports and env file, from the same rendered compose files — where phase3's integration checks and
the load test run without touching production. The load test it records is what phase4's gates judge.

Staging's files live under .graphrag-migrate/staging/ (never beside the user's): an env file (the production
one with staging's ports and LLM_BACKEND=vllm, mode 0600: it carries the same secrets) and a compose override
(staging's container names, ports and vLLM command). The project is torn down when the step ends, unless
`deploy.keep_staging`; rollback removes it too, finding its containers by compose's project label, so a lost
state file or a killed CLI does not leave it running.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from migrator.adapters import vllm as vllm_launch
from migrator.adapters.runtime.compose import compose_error, project_compose
from migrator.adapters.runtime.docker import vllm_container
from migrator.core.config import Settings
from migrator.core.engine import NOTHING_TO_UNDO, Context, Outcome, Step, Undo, UndoStage
from migrator.files.envfile import read_project_env

OVERRIDE_NAME = "docker-compose.staging.yml"
ENV_NAME = "staging.env"


def applies(ctx: Context) -> bool:
    """Staging needs compose to run both the backend and vLLM (auto), unless the operator says on/off."""
    mode = ctx.settings.deploy.staging
    if mode != "auto":
        return mode == "on"
    return ctx.backend_runtime.recreates and ctx.vllm_runtime.under_compose


def _compose_name(name: str) -> str:
    """Compose's own normalisation of a project name (lower case; letters, digits, '-' and '_')."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("-_")


def project_name(ctx: Context) -> str:
    if ctx.settings.deploy.staging_project:
        return _compose_name(ctx.settings.deploy.staging_project)
    env = read_project_env(ctx)
    production = (ctx.settings.project.compose_project_name or (env.get("COMPOSE_PROJECT_NAME") if env else None)
                  or os.environ.get("COMPOSE_PROJECT_NAME") or ctx.compose_path.parent.name)
    return f"{_compose_name(production)}-staging"


def staging_dir(ctx: Context) -> Path:
    return ctx.ledger.root / "staging"


def staging_settings(settings: Settings) -> Settings:
    """The settings as staging sees them: its backend URL and, with its own vLLM, that vLLM's port and name."""
    d = settings.deploy
    project = dataclasses.replace(settings.project, backend_url=d.staging_backend_url)
    vllm = settings.vllm
    if d.staging_vllm == "own":
        vllm = dataclasses.replace(vllm, port=d.staging_vllm_port, container_name=f"{vllm.container_name}-staging",
                                   backend_base_url="")
    return dataclasses.replace(settings, project=project, vllm=vllm)


def staging_env_bytes(ctx: Context, staged: Settings) -> bytes:
    """Production's env file with staging's port and vLLM endpoint; compose's own variables left out
    (staging passes its files and project name on the command line)."""
    from migrator.files.envfile import EnvFile
    from phases.phase3 import desired_env

    env = read_project_env(ctx) or EnvFile.from_bytes(b"")
    for key in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME"):
        if env.get(key) is not None:
            env = env.unset(key)
    port = urlsplit(staged.project.backend_url).port or 80
    for key, value in {**desired_env(ctx, staged), ctx.settings.deploy.staging_port_variable: str(port)}.items():
        env = env.set(key, value)
    return env.to_bytes()


def _staging_ports(service: dict, port: int) -> list[str]:
    """A published service gets staging's host port in place of production's (same container port)."""
    ports = service.get("ports") or []
    if not ports or service.get("network_mode") == "host":
        return []
    first = ports[0]
    return [f"{first.get('host_ip') or '127.0.0.1'}:{port}:{first['target']}"]


def override_yaml(ctx: Context, staged: Settings, merged: dict, env_path: Path) -> str:
    """The compose override that makes the production files a staging project."""
    from migrator.files.templates import render

    services = merged.get("services", {})
    backend_name = ctx.settings.project.backend_service
    backend = services.get(backend_name, {})
    vllm = None
    if ctx.settings.deploy.staging_vllm == "own":
        v = staged.vllm
        spec = vllm_container(ctx, staged)
        vllm = {"service": v.service_name, "container_name": v.container_name, "command": spec["command"],
                "health_port": v.port if v.network_mode == "host" else vllm_launch.CONTAINER_PORT,
                "ports": [] if v.network_mode == "host" else [f"{v.host}:{v.port}:{vllm_launch.CONTAINER_PORT}"]}
    backend_port = urlsplit(staged.project.backend_url).port or 80
    return render("docker-compose.staging.yml.j2", project=project_name(ctx), backend_service=backend_name,
                  env_file=str(env_path),
                  backend_container_name=f"{backend['container_name']}-staging" if backend.get("container_name")
                  else "", backend_ports=_staging_ports(backend, backend_port), vllm=vllm)


def staging_compose(ctx: Context, with_override: bool = True):
    from phases.phase3 import vllm_compose_path

    files = [vllm_compose_path(ctx)] if vllm_compose_path(ctx).exists() else []
    if with_override:
        files.append(staging_dir(ctx) / OVERRIDE_NAME)
    return project_compose(ctx, files, env_file=staging_dir(ctx) / ENV_NAME, project_name=project_name(ctx))


def teardown(ctx: Context) -> str:
    """Remove the staging project's containers and files; NOTHING_TO_UNDO when there is none."""
    record = ctx.resources.get("staging") or {}
    name = record.get("project") or project_name(ctx)
    removed = ctx.docker.remove_project(name, ctx.settings.vllm.stop_timeout_s)
    for f in (OVERRIDE_NAME, ENV_NAME):
        (staging_dir(ctx) / f).unlink(missing_ok=True)
    had_record = ctx.resources.pop("staging", None) is not None
    ctx.ledger.save()
    if not removed:
        return f"staging project {name}: nothing running" if had_record else NOTHING_TO_UNDO
    return f"staging project {name} removed ({'; '.join(removed)})"


class Staging(Step):
    id = "phase4.staging"
    title = "staging: a separate compose project; integration checks and load test there"
    touches = ".graphrag-migrate/staging/, the staging project's containers"

    def check(self, ctx: Context) -> Outcome:
        if not applies(ctx):
            return Outcome.passed("skipped: staging needs the backend and vLLM under compose "
                                  "(deploy.staging: on to insist, off to silence)")
        return self.recorded_pass(ctx) or Outcome.failed("not staged yet")

    def plan(self, ctx: Context) -> list[str]:
        staged, d = staging_settings(ctx.settings), ctx.settings.deploy
        services = ctx.settings.project.backend_service + (
            f" {ctx.settings.vllm.service_name}" if d.staging_vllm == "own" else "")
        vllm_url = staged.vllm.url
        return [f"write {ENV_NAME} and {OVERRIDE_NAME} into {ctx.ledger.root.name}/staging/",
                f"docker compose -p {project_name(ctx)} up -d --wait --no-deps {services}",
                f"integration checks against {vllm_url} and the backend at {staged.project.backend_url}",
                f"load test: {d.staging_requests} requests, {d.staging_concurrency} concurrent, "
                f"{d.staging_output_tokens} output tokens, against {vllm_url} (recorded for the gates)",
                "leave the staging project running" if d.keep_staging else f"remove project {project_name(ctx)}"]

    def _refuse(self, ctx: Context, staged: Settings) -> Outcome | None:
        """Settings that would make staging collide with production; ports already taken."""
        d, p, v = ctx.settings.deploy, ctx.settings.project, ctx.settings.vllm
        if urlsplit(d.staging_backend_url).port == urlsplit(p.backend_url).port:
            return Outcome.failed("deploy.staging_backend_url has production's backend port",
                                  "give staging a port of its own (deploy.staging_backend_url)")
        if d.staging_vllm == "own" and d.staging_vllm_port == v.port:
            return Outcome.failed("deploy.staging_vllm_port is production's vLLM port", "pick another port")
        if project_name(ctx) == _compose_name(p.compose_project_name or ""):
            return Outcome.failed("deploy.staging_project is production's project name", "pick another name")
        checks = [("deploy.staging_backend_url", urlsplit(staged.project.backend_url))]
        if d.staging_vllm == "own":
            checks.append(("deploy.staging_vllm_port", urlsplit(staged.vllm.url)))
        for key, url in checks:
            if vllm_launch.port_in_use(url.hostname or "127.0.0.1", url.port or 80):
                return Outcome.failed(f"port {url.port} ({key}) is already in use",
                                      f"stop what listens there or change {key}")
        return None

    def apply(self, ctx: Context) -> Outcome:
        from migrator.core.ledger import atomic_write_bytes

        staged, d = staging_settings(ctx.settings), ctx.settings.deploy
        teardown(ctx)  # a staging project left by an interrupted run: start clean
        refused = self._refuse(ctx, staged)
        if refused:
            return refused
        name = project_name(ctx)
        # Recorded before anything starts: a killed CLI leaves a record rollback follows.
        ctx.resources["staging"] = {"project": name, "started_at": time.time()}
        ctx.ledger.save()
        env_path = staging_dir(ctx) / ENV_NAME
        atomic_write_bytes(env_path, staging_env_bytes(ctx, staged))  # 0600: it holds the production secrets
        merged = staging_compose(ctx, with_override=False).run("config", "--format", "json", timeout=60)
        if merged.returncode != 0:
            return Outcome.failed(f"docker compose config: {compose_error(merged.stderr)}", "fix the compose files")
        override = override_yaml(ctx, staged, json.loads(merged.stdout), env_path)
        atomic_write_bytes(staging_dir(ctx) / OVERRIDE_NAME, override.encode())

        started = time.monotonic()
        outcome = self._stage(ctx, staged)
        outcome.measurements.update(staging_project=name, staging_s=round(time.monotonic() - started, 1))
        if d.keep_staging:
            outcome.message += f"; project {name} left running (rollback removes it)"
        else:
            teardown(ctx)
        return outcome

    def _stage(self, ctx: Context, staged: Settings) -> Outcome:
        from migrator.bench import run as bench
        from migrator.bench.loadgen import LoadSpec
        from phases.integration import IntegrationChecks

        d, v = ctx.settings.deploy, staged.vllm
        services = [ctx.settings.project.backend_service] + ([v.service_name] if d.staging_vllm == "own" else [])
        compose = staging_compose(ctx)
        up = compose.run("up", "-d", "--wait", "--wait-timeout", str(int(v.startup_timeout_s)), "--no-deps",
                         *services, timeout=v.startup_timeout_s + 60)
        if up.returncode != 0:
            cause = vllm_launch.classify_startup_failure(ctx.docker.logs(v.container_name, tail=400)) \
                if d.staging_vllm == "own" else None
            if cause:
                return Outcome.failed(f"staging vLLM did not start: {cause[0]}", cause[1])
            return Outcome.failed(f"staging project did not come up: {compose_error(up.stderr)}",
                                  f"docker compose -p {project_name(ctx)} logs; fix, then re-run phase4")
        proven = self._backend_on_vllm(ctx, staged)
        if proven is not None:
            return proven

        staged_ctx = ctx.derive(staged)
        checks = IntegrationChecks(ctx.options.get("prompt_file")).check(staged_ctx)
        measured = {"integration_ttft_ms": checks.measurements.get("ttft_ms")}
        if not checks.ok:
            return Outcome.failed(f"staging integration checks: {checks.message}", checks.fix, **measured)

        target = bench.default_target(staged, "vllm")
        spec = LoadSpec(requests=d.staging_requests, concurrency=d.staging_concurrency,
                        output_tokens=d.staging_output_tokens)
        bench.check_safe(target, spec, ctx.settings)
        result = bench.measure(target, spec, calibrate=True)
        bench.record_result(ctx.ledger, result, source="staging")
        metrics = result["metrics"]
        measured.update({k: metrics.get(k) for k in ("ttft_p99_ms", "per_user_output_tokens_per_s",
                                                     "output_tokens_per_s", "error_rate")})
        return Outcome.passed(f"project {project_name(ctx)}: integration checks pass; load test "
                              f"{result['completed']}/{spec.requests} requests, P99 TTFT "
                              f"{metrics.get('ttft_p99_ms')} ms, {metrics.get('output_tokens_per_s')} tok/s",
                              **measured)

    @staticmethod
    def _backend_on_vllm(ctx: Context, staged: Settings) -> Outcome | None:
        """Staging's backend proven on staging's vLLM as production's will be after the switch (a question
        through its chat endpoint, counted on that vLLM's /metrics); with no chat path (--accept-unproven),
        answering is all. None when it is."""
        from phases.backend import prove_llm, wait_until_answers

        b, wait_s, url = ctx.settings.backend, ctx.settings.backend.wait_s, staged.project.backend_url
        port_hint = (f"check {ctx.settings.deploy.staging_port_variable} in your compose file "
                     "(staging sets it to its own port)")
        if not b.chat_path:
            seen = wait_until_answers(url, "", wait_s, lambda llm: llm in (None, "vllm"))
            if seen.ok:
                return None
            said = f"reports llm_backend={seen.llm_backend}" if seen.answered else \
                f"did not answer in {wait_s:g} s ({seen.detail or seen.url})"
            return Outcome.failed(f"staging backend at {url} {said}", port_hint)
        proof = prove_llm(url, b.chat_path, b.chat_message_field, staged.vllm.url, "vllm", wait_s, "on staging")
        if proof.ok:
            return None
        return Outcome.failed(f"staging backend at {url}: {proof.message}",
                              proof.fix if proof.answered else port_hint, **proof.measurements)

    def verify(self, ctx: Context) -> Outcome:
        return Outcome.passed()  # apply's own checks and load test are the verification

    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.STOP, self.id, remove_staging)]


def remove_staging(ctx: Context) -> tuple[bool, str] | None:
    """The staging project, found by compose's project label: works without state and without compose files."""
    recorded = bool(ctx.resources.get("staging"))
    ran = bool(ctx.ledger.step("phase4", Staging.id)) or not ctx.state_known
    if not recorded and not (ran and applies(ctx)):
        return None  # skipped, nothing started: no need to ask a Docker daemon there may not be
    result = teardown(ctx)
    if result == NOTHING_TO_UNDO:
        return None if ctx.state_known else (True, "no staging project running")
    return True, result
