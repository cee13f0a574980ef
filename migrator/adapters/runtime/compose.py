"""A backend under Docker Compose: it reads its env at creation, so a change needs a recreate."""

from __future__ import annotations

import json
from pathlib import Path

from migrator.core.engine import Context
from migrator.core.errors import CheckFailed


def user_compose_files(ctx: Context) -> list[Path]:
    """The user's compose file and the override compose loads beside a default-named one: `-f` turns that
    automatic loading off, so the tool names the override itself."""
    path = ctx.compose_path
    stem, suffix = path.name.rsplit(".", 1) if "." in path.name else (path.name, "")
    if stem not in ("compose", "docker-compose") or suffix not in ("yml", "yaml"):
        return [path]
    override = next((path.parent / f"{stem}.override.{ext}" for ext in ("yml", "yaml")
                     if (path.parent / f"{stem}.override.{ext}").is_file()), None)
    return [path, override] if override is not None else [path]


def project_compose(ctx: Context, extra_files=(), env_file=None, project_name: str | None = None):
    """The one Compose factory: the user's compose files (plus `extra_files`), their env file, their project.
    The env file given (`--env-file`) is also what compose interpolates `${VAR}` from, instead of the
    project directory's `.env`; variables exported in the shell still win over it."""
    from migrator.adapters.docker import Compose

    env = env_file if env_file is not None else (ctx.env_path if ctx.env_path.exists() else None)
    return Compose(ctx.compose_path.parent, [*user_compose_files(ctx), *extra_files], env,
                   project_name if project_name is not None else ctx.settings.project.compose_project_name)


def compose_model(ctx: Context, extra_files=(), env_file=None, interpolate: bool = True) -> dict:
    """`docker compose config --format json` with every profile on (a backend under a profile is still the
    backend). Without `interpolate` the model keeps what the files spell: `env_file:` paths and each
    `environment:` entry as written. Needs the compose CLI only, no daemon."""
    args = ["--profile", "*", "config", "--format", "json"] + ([] if interpolate else ["--no-interpolate"])
    proc = project_compose(ctx, extra_files, env_file).run(*args, timeout=60)
    if proc.returncode != 0:
        raise CheckFailed(f"docker compose config failed: {compose_error(proc.stderr)}", "fix the compose file it names, then re-run")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise CheckFailed("docker compose config printed no JSON", "run `docker compose config` by hand") from None


def compose_error(stderr: str, limit: int = 300) -> str:
    """The error in compose's stderr: its warnings (orphan containers, obsolete `version:`) come first and
    would fill a cut-off message, so they are dropped; the error is compose's last line, one line for the
    operator (cut at `limit`)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and "level=warning" not in line]
    last = lines[-1] if lines else (stderr.strip().splitlines() or ["no error output"])[-1]
    return last if len(last) <= limit else last[:limit - 1] + "…"


class ComposeBackend:
    name = "compose"
    recreates = True

    def recreate_plan(self, ctx: Context) -> list[str]:
        grace = f"{ctx.settings.deploy.stop_grace_s:g}"
        return [f"docker compose up -d --no-deps --force-recreate --timeout {grace} {service}"
                for service in ctx.settings.project.services_calling_llm()]

    def recreate(self, ctx: Context, compose=None, grace_s: float | None = None,
                 at_stop=None) -> tuple[bool, str]:
        """`docker compose up -d --no-deps --force-recreate` of every service that calls the LLM (the
        backend, then project.llm_services: a worker left running would stay on the LLM it started with; a
        restart would not re-read the env file), the old containers given `grace_s` (default
        `deploy.stop_grace_s`) to finish their answers after SIGTERM. Each is attempted even if one fails.
        `at_stop` runs just before the backend's command: compose makes the replacement first and stops the
        old one ~0.3–1 s after it starts (measured on the 2-core test box), so that is as late as it can run."""
        if not ctx.compose_path.exists():
            return True, f"{ctx.compose_path} not found: no compose-managed backend to recreate"
        compose = compose or project_compose(ctx)
        ctx.docker.ping()
        grace = ctx.settings.deploy.stop_grace_s if grace_s is None else grace_s
        recreated, absent, failed = [], [], []
        for service in ctx.settings.project.services_calling_llm():
            ok, done, said = self._recreate_one(compose, service, grace,
                                                at_stop if service == ctx.settings.project.backend_service else None)
            (recreated if done else absent if ok else failed).append(said)
        if failed:
            return False, "; ".join([*failed, *recreated, *absent])
        # The message ends with "recreated" exactly when something was (the caller then waits for it).
        return True, "; ".join([*absent, *recreated])

    @staticmethod
    def _recreate_one(compose, service: str, grace: float, at_stop=None) -> tuple[bool, bool, str]:
        """(ok, recreated, what happened) for one service."""
        listed = compose.run("ps", "-a", "-q", service)
        if listed.returncode != 0:
            return False, False, f"docker compose ps failed: {compose_error(listed.stderr)}"
        if not listed.stdout.strip():
            return True, False, f"service '{service}' is not deployed: nothing to recreate"
        if at_stop is not None:
            at_stop()
        proc = compose.recreate(service, grace_s=grace)
        if proc.returncode != 0 and "is already in use by container" in proc.stderr:
            # A recreate cut off mid-way (dockerd gone, the CLI killed) leaves compose's half-made replacement
            # holding the name: `rm -f` removes the service's containers that are not running, then once more.
            removed = compose.run("rm", "-f", service)
            if removed.returncode == 0:
                proc = compose.recreate(service, grace_s=grace)
                if proc.returncode == 0:
                    return True, True, (f"service '{service}', after removing a half-made container an "
                                        "interrupted recreate left, recreated")
        if proc.returncode != 0:
            return False, False, f"docker compose up -d --no-deps {service} failed: {compose_error(proc.stderr)}"
        return True, True, f"service '{service}' recreated"
