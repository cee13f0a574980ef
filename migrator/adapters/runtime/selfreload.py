"""A backend that re-reads its env file by itself (project.backend_runtime: none): nothing to recreate."""

from __future__ import annotations

from migrator.core.engine import Context


class SelfReloadingBackend:
    name = "none"
    recreates = False

    def recreate_plan(self, ctx: Context) -> list[str]:
        return ["wait for the backend to re-read the env file"]

    def recreate(self, ctx: Context, compose=None, grace_s: float | None = None, at_stop=None) -> tuple[bool, str]:
        return True, "project.backend_runtime is 'none': the backend re-reads the env file itself"
