"""vLLM as a Docker container (phase1 starts it from the pinned image; phase3 hands it to compose)."""

from __future__ import annotations

import json
import re
import shlex

from migrator.adapters import vllm as vllm_launch
from migrator.core.engine import Context, Outcome
from migrator.core.errors import DockerUnavailable
from migrator.core.ports import StartedVllm

PROJECT_LABEL = "org.graphrag-migrate.state-dir"  # on every vLLM container the tool starts: the project's


def host_platform() -> str:
    """This host as Docker names platforms (linux/amd64, linux/arm64)."""
    import platform

    machine = platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


VLLM_SERVE = ["vllm", "serve"]
NGC_IMAGE = re.compile(r"(^|/)nvidia/vllm(:|@|$)")  # nvcr.io/nvidia/vllm:YY.MM-py3: entrypoint not vLLM's


def command_prefix(ctx: Context, settings=None) -> list[str]:
    """What goes before vLLM's arguments in the container's command (vllm.entrypoint). vLLM's own images
    start `vllm serve` themselves; NVIDIA's NGC images run a shell entrypoint that executes the command,
    so theirs must be `vllm serve …`. `auto` reads the image's entrypoint with `docker image inspect`."""
    v = (settings or ctx.settings).vllm
    choice = v.entrypoint.strip()
    if choice == "image":
        return []
    if choice != "auto":
        return shlex.split(choice)
    if v.image.split("@")[0].rsplit(":", 1)[0].endswith("vllm/vllm-openai"):
        return []
    memo = ctx.memo.setdefault("image_entrypoints", {})
    if v.image not in memo:
        try:
            memo[v.image] = ctx.docker.image_entrypoint(v.image)
        except DockerUnavailable:
            memo[v.image] = None
    entrypoint = memo[v.image]
    if entrypoint is None:  # not pulled yet, or no daemon: known by its name, else taken as vLLM's own
        return list(VLLM_SERVE) if NGC_IMAGE.search(v.image) else []
    return [] if "vllm" in " ".join(entrypoint).lower() else list(VLLM_SERVE)


def vllm_container(ctx: Context, settings=None, include_secrets: bool = False) -> dict:
    """The vLLM container as this project's ledger knows it: phase1's start limits, the command the image's
    entrypoint needs, and `restart: unless-stopped` only once readiness has passed with these settings."""
    settings = settings or ctx.settings
    return vllm_launch.container_spec(settings, ctx.project, include_secrets=include_secrets,
                                      downloaded=ctx.resources.get("model"), limits=vllm_launch.start_limits(ctx),
                                      command_prefix=command_prefix(ctx, settings),
                                      restart=vllm_launch.restart_policy(ctx, settings))


class DockerVllm:
    name = "docker"
    under_compose = True

    def check(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
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
        platform = ctx.docker.image_platform(v.image)
        host = host_platform()
        if platform is None:
            offered = ctx.docker.remote_platforms(v.image)
            if offered is None:
                return Outcome.warn(f"Docker {info.get('ServerVersion', '?')}; {v.image} is not here and its "
                                    f"registry cannot be asked: phase1 will try to pull it (needs {host})")
            if host not in offered:
                return Outcome.failed(f"{v.image} offers {', '.join(offered) or 'no platform'}, not {host}: "
                                      "it would fail with 'exec format error'",
                                      f"use a tag of {v.image.split(':')[0]} built for {host}")
            return Outcome.passed(f"Docker {info.get('ServerVersion', '?')}; {v.image} pullable for {host}")
        if platform != host:
            return Outcome.failed(f"{v.image} is {platform} but this host is {host}: it would fail with "
                                  "'exec format error'", f"use a tag of {v.image.split(':')[0]} built for {host}")
        return Outcome.passed(f"Docker {info.get('ServerVersion', '?')}; {v.image} ({platform})",
                              docker=info.get("ServerVersion"), image_platform=platform)

    def start_plan(self, ctx: Context) -> list[str]:
        return [f"docker run {json.dumps(vllm_container(ctx), sort_keys=True)}"]

    def start(self, ctx: Context, record: dict) -> StartedVllm:
        v = ctx.settings.vllm
        previous = ctx.resources.get("vllm") or {}
        spec = vllm_container(ctx, include_secrets=True)
        spec["labels"] = {**spec.get("labels", {}), PROJECT_LABEL: str(ctx.ledger.root)}
        # The command holds no secret (the API key goes in through the environment): safe to record.
        record.update({"container": v.container_name, "image": v.image, "command": spec["command"]})
        current = ctx.docker.container(v.container_name)
        if current.running and previous.get("container") == v.container_name and current.image == v.image \
                and current.health != "unhealthy":
            # An interrupted start of ours, still starting or running: wait for it, never start a second.
            ctx.out.info(f"  container {v.container_name} (started by the interrupted run) is {current.status}: "
                         "waiting for it instead of starting another")
            record.update({"container_id": current.id, "adopted": True})
            ctx.resources["vllm"] = record
            ctx.ledger.save()
        else:
            for other in ctx.docker.labelled({PROJECT_LABEL: str(ctx.ledger.root)}):
                if other.name != v.container_name and other.running:  # ours under an earlier container_name
                    ctx.out.info(f"  container {other.name} (ours): {ctx.docker.stop(other.name, v.stop_timeout_s)}")
            ctx.docker.remove(v.container_name)  # an earlier attempt of ours (stopped, or of other settings)
            ctx.resources["vllm"] = record
            ctx.ledger.save()  # record before starting: a crash right after still knows what to stop
            state = ctx.docker.run(**spec)
            record["container_id"] = state.id
            ctx.ledger.save()  # and its id, before its readiness is awaited

        def alive() -> str | None:
            c = ctx.docker.container(v.container_name)
            return None if c.running else f"container {v.container_name} is {c.status}"

        return StartedVllm(alive, lambda: ctx.docker.logs(v.container_name, tail=400))

    def stop(self, ctx: Context, record: dict, state_known: bool) -> list[str]:
        # A container is found by its name even with the state lost: the settings name it; any other the
        # tool started for this project (an earlier container_name) by its label.
        name = record.get("container") or ctx.settings.vllm.container_name
        lines = [f"container {name}: {ctx.docker.stop(name, ctx.settings.vllm.stop_timeout_s)}"]
        for other in ctx.docker.labelled({PROJECT_LABEL: str(ctx.ledger.root)}):
            if other.name != name and other.running:
                lines.append(f"container {other.name} (found by its label, not in state): "
                             f"{ctx.docker.stop(other.name, ctx.settings.vllm.stop_timeout_s)}")
        return lines

    def running_ours(self, ctx: Context) -> list[str]:
        try:
            return [f"container {c.name}" for c in ctx.docker.labelled({PROJECT_LABEL: str(ctx.ledger.root)})
                    if c.running]
        except DockerUnavailable:
            return []

    def untracked(self, settings, state_dir, record: dict, probe: bool) -> list[str]:
        if not probe:
            return []
        from migrator.adapters.docker import DockerRuntime

        try:
            labelled = DockerRuntime(timeout=3).labelled({PROJECT_LABEL: str(state_dir)})
        except DockerUnavailable:
            return []
        return [f"container {c.name} runs but state.json does not record it" for c in labelled
                if c.running and c.name != record.get("container")]

    def describe(self, record: dict, settings, probe: bool) -> dict:
        if not probe:
            return {}
        from migrator.adapters.docker import DockerRuntime

        name = record.get("container") or settings.vllm.container_name
        try:
            c = DockerRuntime(timeout=3).container(name)
            return {"container": {"name": name, "status": c.status, "health": c.health}}
        except DockerUnavailable as exc:
            return {"container": {"name": name, "status": "unknown", "error": exc.message}}

    def model_arg(self, settings, project, downloaded: dict | None) -> str:
        return vllm_launch.model_arg(settings, project)  # the repo id: the container reads the mounted cache

    def backend_base_url(self, settings) -> str:
        v = settings.vllm
        if v.network_mode != "host":  # the backend reaches the container by its name on the compose network
            return f"http://{v.container_name}:{vllm_launch.CONTAINER_PORT}/v1"
        return f"{v.url}/v1"

