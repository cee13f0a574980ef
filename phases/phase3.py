"""phase3 — integrate: vLLM as a compose service beside the user's stack, production still on Ollama.

Steps: the env file exists, no vLLM of the user's own is in the way, and the merged compose model shows
every LLM service reaching vLLM with its env keys (all three read-only, before anything is written) → the
vLLM service rendered into its own compose file on the LLM services' networks, with the env keys added to
those that get their env through `environment:` only (the user's docker-compose.yml is never touched;
nothing with a runtime that is not compose) → COMPOSE_FILE in the env file merges both → `docker compose
config -q` on the merge → vLLM brought up under compose (runtime docker) → VLLM_BASE_URL/VLLM_MODEL in the
env file (LLM_BACKEND is left alone) → integration checks against vLLM, each with its measurement.

The production switch itself (LLM_BACKEND=vllm, backend recreated) is phase4's, after staging and the
plan's §7.1 gates have passed: nothing in phase3 changes which LLM production users get.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from migrator.adapters import vllm as vllm_launch
from migrator.adapters.runtime.compose import compose_error, compose_model, project_compose, user_compose_files
from migrator.adapters.runtime.docker import vllm_container
from migrator.core.config import Settings, VllmSettings
from migrator.core.engine import Context, Outcome, Phase, Step, Undo, UndoStage
from migrator.core.errors import BackupMismatch, CheckFailed, EnvironmentMissing
from migrator.files.compose_text import (VLLM_COMPOSE_NAME, compose_file_value, compose_path_separator,
                                         compose_run_dir, inline_service, resolve_compose_file,
                                         service_key_lines,
                                         without_vllm_compose)
from migrator.files.envfile import EnvFile, missing_env_file, read_project_env
from phases.phase1 import STOP_VLLM, stop_vllm


def vllm_compose_path(ctx: Context) -> Path:
    return ctx.compose_path.parent / VLLM_COMPOSE_NAME


def render_vllm_service(ctx: Context, inline: bool | None = None) -> str:
    """The tool's compose file: vLLM on the LLM services' networks (see `vllm_wiring`), and the env keys
    for the services that get their env through `environment:` only — not with `--inline`, where they
    would be edits of the user's own services (the reachability check then names the lines to add)."""
    from migrator.files.templates import render

    v = ctx.settings.vllm
    wiring = vllm_wiring(ctx)
    inline = ctx.options.get("inline") if inline is None else inline
    spec = vllm_container(ctx)
    volumes = [(src, f"{m['bind']}:{m['mode']}") for src, m in spec["volumes"].items()]
    return render(
        "docker-compose.vllm.yml.j2",
        user_compose_file=ctx.compose_path.name, env_file=ctx.env_path.name,
        service=v.service_name, image=v.image, container_name=v.container_name, command=spec["command"],
        environment=spec["environment"], api_key_env=v.api_key_env, volumes=volumes,
        network_mode=v.network_mode, port_mapping=f"{v.host}:{v.port}:{vllm_launch.CONTAINER_PORT}",
        networks=wiring.networks, declared_networks=[n for n in wiring.networks if n != "default"],
        profiles=wiring.profiles, service_env={} if inline else wiring.added_env,
        gpu=v.device == "gpu", health_port=v.port if v.network_mode == "host" else vllm_launch.CONTAINER_PORT,
        start_period_s=int(v.startup_timeout_s), cpuset=v.cpuset, restart=spec["restart_policy"]["Name"],
        backend_service=ctx.settings.project.backend_service
        if ctx.settings.project.backend_runtime == "compose" else "",
        stop_grace_s=f"{ctx.settings.deploy.stop_grace_s:g}",
    )


# ---- where vLLM must be for the backend to reach it ---------------------------------------------------
# The keys the backend switches on, each with what it means while absent (the backend's default: Ollama).
BACKEND_ENV = {"LLM_BACKEND": "ollama", "VLLM_BASE_URL": "", "VLLM_MODEL": ""}
MANAGED_LABEL = "org.graphrag-migrate.managed"
LOOPBACK = ("127.0.0.1", "localhost")


def llm_services(settings: Settings) -> list[str]:
    """The services that call the LLM: project.backend_service and project.llm_services."""
    return settings.project.services_calling_llm()


@dataclass
class VllmWiring:
    """What the user's merged compose model says vLLM needs: the networks it joins, the profiles it comes up
    with, and per LLM service the env keys the tool's file adds (those its env_file does not bring)."""

    services: dict[str, dict]  # each LLM service as `docker compose config` resolves it
    raw: dict[str, dict]  # the same, as the files spell it (env_file paths, environment entries)
    networks: list[str]
    profiles: list[str]
    added_env: dict[str, dict[str, str]] = field(default_factory=dict)
    host_networked: bool = False  # every LLM service on the host's network: vLLM is reached on loopback


def _environment(spec: dict) -> dict[str, str | None]:
    """An `environment:` as compose prints it (a mapping, or a list of KEY=VALUE / bare KEY) as a dict."""
    env = spec.get("environment") or {}
    if isinstance(env, dict):
        return dict(env)
    return {k: (v if sep else None) for k, sep, v in (str(item).partition("=") for item in env)}


def _fed_from_env_file(value: str | None, key: str) -> bool:
    """A user's entry for `key` that takes its value from the interpolation source (the env file): bare
    `KEY`, `KEY=${KEY}`, `${KEY:-…}`, `$KEY`."""
    return value is None or re.fullmatch(rf"\$(\{{{key}([:?+-][^}}]*)?\}}|{key})", value) is not None


def _loads_env_file(ctx: Context, raw: dict) -> bool:
    paths = [e.get("path") if isinstance(e, dict) else e for e in raw.get("env_file") or []]
    target = os.path.realpath(ctx.env_path)
    return any(p and os.path.realpath(ctx.compose_path.parent / p) == target for p in paths)


def _own_networks(name: str, services: dict) -> list[str] | None:
    """The networks a service is on (`service:X` shares X's), None on the host's network."""
    spec = services.get(name) or {}
    mode = spec.get("network_mode") or ""
    if mode == "host":
        return None
    if mode.startswith("service:"):
        return _own_networks(mode.split(":", 1)[1], services)
    return list(spec.get("networks") or {"default": None})


def vllm_wiring(ctx: Context) -> VllmWiring:
    """Read once per run from `docker compose config --format json` on the user's files (no daemon)."""
    if "vllm_wiring" in ctx.memo:
        return ctx.memo["vllm_wiring"]
    model, raw_model = user_model(ctx), compose_model(ctx, interpolate=False)
    names = llm_services(ctx.settings)
    unknown = [n for n in names if n not in model.get("services", {})]
    if unknown:
        raise CheckFailed(f"service '{unknown[0]}' (project.backend_service / project.llm_services) is not in your "
                          f"compose files", "name the services that call the LLM (`docker compose config --services`)"
                                            " in project.backend_service and project.llm_services")
    services = {n: model["services"][n] for n in names}
    raw = {n: raw_model.get("services", {}).get(n, {}) for n in names}
    own = {n: _own_networks(n, model["services"]) for n in names}
    networks = [ctx.settings.project.network] if ctx.settings.project.network else []
    for nets in own.values() if not networks else ():  # project.network set: that one, as the operator said
        networks += [net for net in nets or [] if net not in networks]
    profiled = [set(spec.get("profiles") or ()) for spec in services.values()]
    profiles = sorted(set().union(*profiled)) if all(profiled) else []
    added = {}
    for name in names:
        user_env = _environment(raw[name])
        keys = {k: default for k, default in BACKEND_ENV.items() if k not in user_env}
        if keys and not _loads_env_file(ctx, raw[name]):
            added[name] = keys
    wiring = VllmWiring(services, raw, networks or ["default"], profiles, added,
                        host_networked=all(nets is None for nets in own.values()))
    ctx.memo["vllm_wiring"] = wiring
    return wiring


def user_model(ctx: Context) -> dict:
    if "user_model" not in ctx.memo:
        ctx.memo["user_model"] = compose_model(ctx)
    return ctx.memo["user_model"]


def where(ctx: Context, service: str, key: str | None = None, entry: str | None = None) -> str:
    """file:line of a service (or its key, or an environment entry) in the user's files, for a fix."""
    lines = service_key_lines(user_compose_files(ctx), service, key, entry)
    if not lines:
        return ctx.ledger.relpath(ctx.compose_path)
    path, line = lines[-1]
    return f"{ctx.ledger.relpath(Path(path))}:{line}"


class NoUserVllm(Step):
    """Before anything is written: a vLLM the user's compose already has would clash with phase3's (same
    service or container name) or is one the operator has not said is another (a vllm/vllm-openai image
    while the names are still the defaults)."""

    id = "phase3.user-vllm"
    title = "no vLLM of your own in the way"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        skipped = not_under_compose(ctx)
        if skipped is not None:
            return skipped
        v, default = ctx.settings.vllm, VllmSettings()
        names_chosen = (v.service_name, v.container_name) != (default.service_name, default.container_name)
        try:
            services = user_model(ctx).get("services", {})
        except (CheckFailed, EnvironmentMissing) as exc:
            return Outcome.failed(exc.message, exc.fix or "")
        for name, spec in services.items():
            if (spec.get("labels") or {}).get(MANAGED_LABEL) == "true":
                continue  # phase3's own (--inline)
            image = str(spec.get("image") or "")
            reason = ("its name is vllm.service_name" if name == v.service_name else
                      f"its container_name is vllm.container_name ({v.container_name})"
                      if spec.get("container_name") == v.container_name else
                      f"image {image}" if image.startswith("vllm/vllm-openai") and not names_chosen else "")
            if reason:
                return Outcome.failed(
                    f"your compose already has a vLLM: service '{name}' at {where(ctx, name)} ({reason})",
                    "set vllm.service_name and vllm.container_name in migrate.yaml to names it does not use, "
                    "or remove or rename that service")
        return Outcome.passed("none in your compose files")


def _entry(ctx: Context, name: str, key: str, default: str) -> tuple[str, str]:
    """(file:line, the entry to write there) for `key` in the service's environment: — in the list or the
    mapping form the user's file uses; at the service itself when it has no environment: yet."""
    lines = service_key_lines(user_compose_files(ctx), name, "environment", key) or \
        service_key_lines(user_compose_files(ctx), name, "environment")
    value = f"${{{key}:-{default}}}"
    if not lines:
        return where(ctx, name), f"environment: {{{key}: {value}}}"
    path, line = lines[-1]
    following = [t.strip() for t in Path(path).read_text(encoding="utf-8").splitlines()[line - 1:]]
    listed = following[0].startswith("-") or next((t for t in following[1:] if t and not t.startswith("#")),
                                                  "").startswith("-")
    spelled = f"- {key}={value}" if listed else f"{key}: {value}"
    return f"{ctx.ledger.relpath(Path(path))}:{line}", spelled


def _problems_env(ctx: Context, name: str, merged_env: dict, wiring: VllmWiring, want: dict,
                  tool_file: bool) -> list[tuple[str, str]]:
    """Each key the service would not get as phase3 and phase4 write it, with the line to change. With
    `tool_file`, phase3's compose file adds the keys the service's env_file does not bring."""
    problems = []
    user_env, loads = _environment(wiring.raw[name]), _loads_env_file(ctx, wiring.raw[name])
    env_name = ctx.ledger.relpath(ctx.env_path)
    for key, default in BACKEND_ENV.items():
        at, spelled = _entry(ctx, name, key, default)
        if key in user_env and not _fed_from_env_file(user_env[key], key):
            problems.append((f"{name}'s environment: sets {key}={user_env[key]} at {at}, which wins over {env_name}",
                             f"change that line to `{spelled}` (or remove it)"))
        elif key in user_env or (key in wiring.added_env.get(name, {}) and tool_file):
            if merged_env.get(key) != want[key]:
                shell = " (this shell exports it, and compose prefers that to the env file)" if key in os.environ else ""
                problems.append((f"{name} would get {key}={merged_env.get(key)!r}, not {want[key]!r}{shell}",
                                 f"unset {key} in this shell" if shell else f"check {key} in {env_name}"))
        elif not loads:
            hint = " (or drop --inline: the separate file adds it)" if ctx.options.get("inline") else ""
            problems.append((f"{name} gets no {key}: no env_file: {env_name} and no environment: entry for it",
                             f"add `{spelled}` under environment: at {at}{hint}"))
    return problems


def _problems_network(ctx: Context, name: str, merged: dict, url: str) -> tuple[list[tuple[str, str]], str]:
    """Whether the service reaches vLLM at `url` in the merged model: a shared network on which the URL's host
    is vLLM's service name, container_name or an alias — or both on the host's network / loopback."""
    v = ctx.settings.vllm
    services = merged.get("services", {})
    vllm = services.get(v.service_name, {})
    host, port = urlsplit(url).hostname or "", urlsplit(url).port
    nets = _own_networks(name, services)
    if nets is None:  # the host's network: vLLM is on this host's loopback, through its published port
        reached = (vllm.get("network_mode") == "host" and port == v.port) or any(
            str(p.get("published")) == str(port) and (p.get("host_ip") or "0.0.0.0") in ("0.0.0.0", "127.0.0.1", "::")
            for p in vllm.get("ports") or [])
        if host in LOOPBACK and reached:
            return [], f"{name} (host networking) reaches vLLM at {url}"
        return [(f"{name} uses network_mode: host ({where(ctx, name, 'network_mode')}): it reaches vLLM on this "
                 f"host's loopback, not at {url}",
                 f"set vllm.backend_base_url: http://127.0.0.1:{v.port}/v1 in migrate.yaml (or leave it empty)")], ""
    if vllm.get("network_mode") == "host":
        return [(f"vLLM uses host networking (vllm.network_mode) but {name} is on {', '.join(nets)}",
                 f"leave vllm.network_mode empty (vLLM then joins {', '.join(nets)})")], ""
    names_on = {net: {v.service_name, v.container_name, *((cfg or {}).get("aliases") or [])}
                for net, cfg in (vllm.get("networks") or {}).items()}
    shared = [net for net in nets if net in names_on]
    if not shared:
        forced = ctx.settings.project.network
        fix = (f"remove project.network ({forced}) from migrate.yaml so that vLLM joins {', '.join(nets)}, or add "
               f"{forced} to {name}'s networks: at {where(ctx, name, 'networks')}" if forced else
               f"put {name} and vLLM on one network")
        return [(f"{name} is on {', '.join(nets)}, vLLM on {', '.join(names_on) or 'none'}: no network in common",
                 fix)], ""
    if not any(host in names_on[net] for net in shared):
        return [(f"VLLM_BASE_URL {url}: '{host}' is not vLLM's service name, container_name or alias on "
                 f"{', '.join(shared)}",
                 f"set vllm.backend_base_url: http://{v.container_name}:{vllm_launch.CONTAINER_PORT}/v1 in migrate.yaml"
                 " (or empty for that default)")], ""
    if port != vllm_launch.CONTAINER_PORT:
        return [(f"VLLM_BASE_URL {url}: vLLM listens on {vllm_launch.CONTAINER_PORT} inside its network, not {port}",
                 f"set vllm.backend_base_url: http://{host}:{vllm_launch.CONTAINER_PORT}/v1 in migrate.yaml")], ""
    return [], f"{name} reaches vLLM at {url} on {shared[0]}"


def _process_reachability(ctx: Context, name: str, services: dict, url: str) -> tuple[list[tuple[str, str]], str]:
    """vLLM as a local process: a container reaches it only on the host's network, or through
    host.docker.internal (extra_hosts) with vLLM bound to an address the bridge reaches."""
    v, host = ctx.settings.vllm, urlsplit(url).hostname or ""
    if _own_networks(name, services) is None:
        if host in LOOPBACK:
            return [], f"{name} (host networking) reaches the vLLM process at {url}"
        return [(f"{name} uses network_mode: host: it reaches the vLLM process on loopback, not at {url}",
                 f"set vllm.backend_base_url: http://127.0.0.1:{v.port}/v1 in migrate.yaml (or leave it empty)")], ""
    extra_hosts = str(services[name].get("extra_hosts") or "")
    if host == "host.docker.internal" and "host.docker.internal" in extra_hosts and v.host in ("0.0.0.0", ""):
        return [], f"{name} reaches the vLLM process at {url} (extra_hosts)"
    return [(f"{name} runs in a container: {url} does not reach this host's vLLM process from there",
             f"set vllm.host: 0.0.0.0 and vllm.backend_base_url: http://host.docker.internal:{v.port}/v1, and add "
             f"extra_hosts: [\"host.docker.internal:host-gateway\"] at {where(ctx, name)} — or run vLLM under compose "
             "(vllm.runtime: docker)")], ""


def reachability(ctx: Context) -> tuple[list[tuple[str, str]], list[str]]:
    """(problems as (what, fix), notes): the merged model of the user's files and phase3's file — rendered
    as it will be written, into a temporary directory — read with the env file as phase4's switch leaves it.
    With vLLM as a process there is no file of phase3's: the user's files alone."""
    from migrator.files.envfile import EnvFile

    want = desired_env(ctx)
    url = want["VLLM_BASE_URL"]
    if ctx.settings.project.backend_runtime == "none":
        return [], [f"the backend is not a compose service here (project.backend_runtime: none): it must reach "
                    f"vLLM at {url}"]
    under_compose = ctx.vllm_runtime.under_compose
    wiring = vllm_wiring(ctx)
    env = read_project_env(ctx) or EnvFile.from_bytes(b"")
    for key, value in want.items():
        env = env.set(key, value)
    with tempfile.TemporaryDirectory(prefix="graphrag-migrate-") as tmp:
        rendered, switched = Path(tmp) / VLLM_COMPOSE_NAME, Path(tmp) / "switched.env"
        switched.write_bytes(env.to_bytes())
        switched.chmod(0o600)
        if under_compose:
            rendered.write_text(render_vllm_service(ctx))
        merged = compose_model(ctx, [rendered] if under_compose else [], env_file=switched)
    problems, notes = [], []
    for name in wiring.services:
        found, note = (_problems_network(ctx, name, merged, url) if under_compose else
                       _process_reachability(ctx, name, merged.get("services", {}), url))
        env_problems = _problems_env(ctx, name, _environment(merged["services"][name]), wiring, want,
                                     tool_file=under_compose and not ctx.options.get("inline"))
        problems += found + env_problems
        notes += [note] if note else []
    return problems, notes


class VllmReachable(Step):
    """Read-only and before anything is written (so a dry-run fails as an apply does): what compose will
    make of the user's files plus phase3's, checked for every LLM service."""

    id = "phase3.reachable"
    title = "LLM services reach vLLM and get its env keys (merged compose config)"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        try:
            problems, notes = reachability(ctx)
        except (CheckFailed, EnvironmentMissing) as exc:
            return Outcome.failed(exc.message, exc.fix or "")
        if problems:
            return Outcome.failed("; ".join(what for what, _ in problems), "; ".join(fix for _, fix in problems))
        return Outcome.passed("; ".join(notes))


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
        if value is None:
            return Outcome.failed("COMPOSE_FILE=(not set)")
        run_dir = compose_run_dir(ctx.env_path, ctx.compose_path)
        place = ctx.ledger.relpath(run_dir)
        where = (f"relative to {'the project root' if place == '.' else place + '/'}, where compose reads "
                 f"{ctx.ledger.relpath(ctx.env_path)}")
        loaded = resolve_compose_file(value, compose_path_separator(env), run_dir)
        wanted = Path(os.path.abspath(vllm_compose_path(ctx)))
        fix = "run phase3 again: it corrects the entries"
        stray = [f"{entry} is {ctx.ledger.relpath(path)}, not there" for entry, path in loaded
                 if path != wanted and not path.exists()]
        if stray:
            return Outcome.failed(f"COMPOSE_FILE={value}: {'; '.join(stray)} ({where})", fix)
        if wanted not in [path for _, path in loaded]:
            return Outcome.failed(f"COMPOSE_FILE={value} does not name {ctx.ledger.relpath(wanted)} ({where})", fix)
        return Outcome.passed(f"COMPOSE_FILE={value} ({where})")

    def keys_written(self, ctx: Context, path: Path) -> list[str]:
        return ["COMPOSE_FILE"]

    def files(self, ctx: Context) -> dict[Path, bytes]:
        env = read_project_env(ctx)
        if env is None or not ctx.vllm_runtime.under_compose:
            return {}
        return {ctx.env_path: env.set("COMPOSE_FILE", compose_file_value(
            env.get("COMPOSE_FILE"), user_compose_files(ctx), vllm_compose_path(ctx),
            compose_run_dir(ctx.env_path, ctx.compose_path), compose_path_separator(env))).to_bytes()}

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
            return Outcome.failed(f"docker compose config: {compose_error(proc.stderr)}",
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
        container = ctx.docker.client.containers.get(v.container_name)
        if container.labels.get("com.docker.compose.service") != v.service_name:
            return Outcome.failed(f"{v.container_name} was started by phase1, not by compose")
        restart = ((container.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
        if restart == "no" and vllm_launch.restart_policy(ctx) == "unless-stopped":
            return Outcome.failed(f"{v.container_name} runs with restart \"no\"; proven since: recreated with "
                                  "unless-stopped")
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
            return Outcome.failed(f"docker compose up {v.service_name} failed: {compose_error(proc.stderr)}",
                                  "read `docker compose logs vllm`, fix, re-run phase3 (or rollback)")
        ready = vllm_launch.wait_ready(ctx.settings, 120, lambda: None)
        if not ready.ok:
            return Outcome.failed(f"vLLM under compose not ready at '{ready.failed_tier}': {ready.error}")
        restart = vllm_launch.restart_policy(ctx)
        if restart == "no":  # settings phase1 never started: proven now, the next phase3 run renders unless-stopped
            vllm_launch.prove_readiness(ctx, self.id)
        return Outcome.passed(f"compose service '{v.service_name}' healthy, TTFT {ready.ttft_ms} ms"
                              + ("; restart \"no\" until now (first ready start with these settings here): re-run "
                                 "phase3 to switch it to unless-stopped" if restart == "no" else ""),
                              ttft_ms=ready.ttft_ms)

    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.STOP, STOP_VLLM, stop_vllm)]  # the same container phase1 started


def backend_base_url(ctx: Context, settings: Settings | None = None) -> str:
    """VLLM_BASE_URL as the backend sees vLLM: the setting, else — when every LLM service is on the host's
    network — vLLM's published port on loopback, else what the vLLM runtime says (its container name on
    the shared networks). Compose it cannot read leaves the runtime's URL; the reachability check says why."""
    settings = settings or ctx.settings
    if settings.vllm.backend_base_url:
        return settings.vllm.backend_base_url
    if ctx.vllm_runtime.under_compose and settings.vllm.network_mode != "host":
        try:
            if vllm_wiring(ctx).host_networked:
                return f"{settings.vllm.url}/v1"
        except (CheckFailed, EnvironmentMissing):
            pass
    return ctx.vllm_runtime.backend_base_url(settings)


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

    return Phase("phase3", "integrate", [EnvFilePresent(), NoUserVllm(), VllmReachable(), VllmComposeFile(),
                                         ComposeFileInEnv(), ComposeConfigValid(),
                                         VllmUnderCompose(), EnvKnowsVllm(),
                                         IntegrationChecks(options.get("prompt_file"), through_backend=False)])
