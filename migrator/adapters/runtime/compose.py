"""A backend under Docker Compose: it reads its env at creation, so a change needs a recreate."""

from __future__ import annotations

from migrator.core.engine import Context


def project_compose(ctx: Context, extra_files=(), env_file=None, project_name: str | None = None):
    """The one Compose factory: the user's compose file (plus `extra_files`), their env file, their project."""
    from migrator.adapters.docker import Compose

    env = env_file if env_file is not None else (ctx.env_path if ctx.env_path.exists() else None)
    return Compose(ctx.compose_path.parent, [ctx.compose_path, *extra_files], env,
                   project_name if project_name is not None else ctx.settings.project.compose_project_name)


class ComposeBackend:
    name = "compose"
    recreates = True

    def recreate_plan(self, ctx: Context) -> list[str]:
        return [f"docker compose up -d --no-deps --force-recreate {ctx.settings.project.backend_service}"]

    def recreate(self, ctx: Context, compose=None) -> tuple[bool, str]:
        """`docker compose up -d --no-deps --force-recreate` (a restart would not re-read the env file)."""
        service = ctx.settings.project.backend_service
        if not ctx.compose_path.exists():
            return True, f"{ctx.compose_path} not found: no compose-managed backend to recreate"
        compose = compose or project_compose(ctx)
        ctx.docker.ping()
        listed = compose.run("ps", "-a", "-q", service)
        if listed.returncode != 0:
            return False, f"docker compose ps failed: {listed.stderr.strip()[:200]}"
        if not listed.stdout.strip():
            return True, f"service '{service}' is not deployed: nothing to recreate"
        proc = compose.recreate(service)
        if proc.returncode != 0:
            return False, f"docker compose up -d --no-deps {service} failed: {proc.stderr.strip()[:300]}"
        return True, f"service '{service}' recreated"
