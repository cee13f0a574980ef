"""Docker through the docker SDK (containers) and the `docker compose` v2 CLI (the SDK has no compose API)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from migrator.core.errors import DockerUnavailable, EnvironmentMissing

_DOCKER_FIX = "start the Docker daemon (e.g. `sudo systemctl start docker`) or set DOCKER_HOST, then re-run"


@dataclass
class ContainerState:
    name: str
    exists: bool
    status: str = "absent"  # created | running | exited | paused | restarting | dead | absent
    id: str = ""
    image: str = ""
    health: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")


PING_TIMEOUT_S = 3.0  # a daemon that answers no ping in this long is down for the tool's purposes


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def _why(exc: Exception, timeout: float) -> str:
    """Why the daemon did not answer, in words (the SDK nests the cause in its message)."""
    text = str(exc)
    if "FileNotFoundError" in text or "No such file" in text:
        return "no socket there"
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return f"no answer in {timeout:g} s"
    if "PermissionError" in text or "Permission denied" in text:
        return "permission denied (are you in the docker group?)"
    return _short(exc)


class DockerRuntime:
    """The few container operations the migration needs.

    The daemon is pinged once, briefly (`PING_TIMEOUT_S`), before the first operation; when it does not
    answer (or stops answering later), that one DockerUnavailable is raised at once by every later
    operation of this adapter — one per run's context: a rollback with dockerd down reports each
    Docker-needing action without waiting out the SDK's timeouts again and again."""

    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout
        self._client = None
        self._down: DockerUnavailable | None = None

    @property
    def client(self):
        if self._client is None:
            import docker
            from docker.errors import DockerException

            if self._down is not None:
                raise self._down
            host = docker_host()
            ping_s = min(PING_TIMEOUT_S, self.timeout)
            try:
                client = docker.from_env(timeout=ping_s)  # it asks the daemon's API version: the short ping
                client.ping()
            except DockerException as exc:
                self._down = DockerUnavailable(f"Docker daemon not reachable at {host} ({_why(exc, ping_s)})",
                                               _DOCKER_FIX)
                raise self._down from None
            client.api.timeout = self.timeout  # operations (a pull, a stop) get their full time
            self._client = client
        return self._client

    def _call(self, fn, *args, **kwargs):
        import docker.errors
        import requests

        try:
            return fn(*args, **kwargs)
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            if isinstance(exc, docker.errors.APIError):
                raise
            self._down = DockerUnavailable(f"Docker daemon at {docker_host()} stopped answering "
                                           f"({_why(exc, self.timeout)})", _DOCKER_FIX)
            self._client = None  # every later operation: this error at once, no second wait
            raise self._down from None

    def ping(self) -> bool:
        self.client
        return True

    def info(self) -> dict:
        return self._call(self.client.info)

    def container(self, name: str) -> ContainerState:
        import docker.errors

        try:
            c = self._call(self.client.containers.get, name)
        except docker.errors.NotFound:
            return ContainerState(name, False)
        state = c.attrs.get("State", {})
        return ContainerState(
            name, True, state.get("Status", "unknown"), c.id[:12],
            c.attrs.get("Config", {}).get("Image", ""), (state.get("Health") or {}).get("Status", ""),
        )

    def labelled(self, labels: dict[str, str]) -> list[ContainerState]:
        """Every container (running or not) carrying all these labels."""
        listed = self._call(self.client.containers.list, all=True,
                            filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        return [self.container(c.name) for c in listed]

    def stop(self, name: str, timeout: float) -> str:
        """Stop a container: SIGTERM, then SIGKILL after `timeout` s. Returns what happened."""
        import docker.errors

        try:
            c = self._call(self.client.containers.get, name)
        except docker.errors.NotFound:
            return "not present"
        if c.status not in ("running", "restarting", "paused"):
            return f"already {c.status}"
        try:
            # The SDK's HTTP timeout must outlast the daemon's own SIGTERM grace period.
            c.client.api.timeout = max(self.timeout, timeout + 15)
            self._call(c.stop, timeout=int(timeout))
        except docker.errors.APIError:
            self._call(c.kill)
        c.reload()
        if c.status == "running":
            self._call(c.kill)
            return "killed (did not stop on SIGTERM)"
        if c.attrs.get("State", {}).get("ExitCode") == 137:  # 128 + SIGKILL: dockerd had to kill it
            return f"killed after {timeout:g} s (did not stop on SIGTERM)"
        return "stopped"

    def remove(self, name: str) -> str:
        import docker.errors

        try:
            c = self._call(self.client.containers.get, name)
        except docker.errors.NotFound:
            return "not present"
        self._call(c.remove, force=True)
        return "removed"

    def remove_project(self, project: str, timeout: float) -> list[str]:
        """Stop (SIGKILL after `timeout` s) and remove every container of one compose project, found by
        compose's own label, so no compose file or state is needed. Returns "name: what happened" lines."""
        listed = self._call(self.client.containers.list, all=True,
                            filters={"label": f"com.docker.compose.project={project}"})
        done = []
        for c in listed:
            stopped = self.stop(c.name, timeout)
            done.append(f"{c.name}: {stopped}, {self.remove(c.name)}")
        for network in self._call(self.client.networks.list,
                                  filters={"label": f"com.docker.compose.project={project}"}):
            self._call(network.remove)
            done.append(f"network {network.name}: removed")
        return done

    def run(self, **spec) -> ContainerState:
        c = self._call(self.client.containers.run, detach=True, **spec)
        return self.container(c.name)

    def image_platform(self, image: str) -> str | None:
        """'linux/amd64' for a local image, None when the image is not here."""
        import docker.errors

        try:
            img = self._call(self.client.images.get, image)
        except docker.errors.ImageNotFound:
            return None
        return f"{img.attrs.get('Os', 'linux')}/{img.attrs.get('Architecture', '?')}"

    def image_entrypoint(self, image: str) -> list[str] | None:
        """The local image's ENTRYPOINT (`docker image inspect`: Config.Entrypoint; [] when it has none),
        None when the image is not here."""
        import docker.errors

        try:
            img = self._call(self.client.images.get, image)
        except docker.errors.ImageNotFound:
            return None
        return list((img.attrs.get("Config") or {}).get("Entrypoint") or [])

    def remote_platforms(self, image: str) -> list[str] | None:
        """Platforms the registry offers for `image` (no pull), or None when the registry cannot be asked."""
        import docker.errors

        try:
            data = self._call(self.client.images.get_registry_data, image)
        except (docker.errors.APIError, DockerUnavailable):
            return None
        return [f"{p.get('os', 'linux')}/{p.get('architecture', '?')}" for p in data.attrs.get("Platforms", [])]

    def logs(self, name: str, tail: int = 200) -> str:
        import docker.errors

        try:
            c = self._call(self.client.containers.get, name)
        except docker.errors.NotFound:
            return ""
        return self._call(c.logs, tail=tail).decode("utf-8", errors="replace")


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def compose_command() -> list[str]:
    """`docker compose` (the v2 plugin), or a standalone `docker-compose` v2 binary."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    raise EnvironmentMissing("Docker Compose v2 not found", "install the docker compose plugin")


@dataclass
class Compose:
    """`docker compose` for one project: the user's compose files and env file."""

    workdir: Path
    files: list[Path]
    env_file: Path | None = None
    project_name: str = ""

    def __post_init__(self):
        # Absolute from here on: `run` changes the cwd to `workdir`, where a relative `-f docker/x.yml`
        # would name docker/docker/x.yml.
        self.workdir = Path(os.path.abspath(self.workdir))
        self.files = [Path(os.path.abspath(f)) for f in self.files]
        if self.env_file is not None:
            self.env_file = Path(os.path.abspath(self.env_file))

    def base(self) -> list[str]:
        cmd = compose_command()
        if self.project_name:
            cmd += ["--project-name", self.project_name]
        for f in self.files:
            cmd += ["-f", str(f)]
        if self.env_file is not None:
            cmd += ["--env-file", str(self.env_file)]
        return cmd

    def run(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run([*self.base(), *args], cwd=self.workdir, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EnvironmentMissing(f"`docker compose {' '.join(args)}` did not finish in {timeout:.0f} s",
                                     "check `docker compose ps` and the daemon") from None
        if proc.returncode != 0 and _daemon_down(proc.stderr):
            raise DockerUnavailable("docker compose could not reach the Docker daemon", _DOCKER_FIX)
        return proc

    def services(self) -> list[str]:
        proc = self.run("config", "--services")
        return proc.stdout.split() if proc.returncode == 0 else []

    def recreate(self, service: str, timeout: float = 300.0, grace_s: float | None = None) -> subprocess.CompletedProcess:
        """Recreate one service so it reads the env file again (a restart would not). `grace_s`: the old
        container's time between SIGTERM and SIGKILL (compose's `--timeout`; 0 kills it at once)."""
        grace = ["--timeout", f"{max(0, round(grace_s))}"] if grace_s is not None else []
        return self.run("up", "-d", "--no-deps", "--force-recreate", *grace, service,
                        timeout=timeout + (grace_s or 0))


def _daemon_down(stderr: str) -> bool:
    text = stderr.lower()
    return "cannot connect to the docker daemon" in text or "is the docker daemon running" in text
