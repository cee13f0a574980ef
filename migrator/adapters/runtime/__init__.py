"""The runtimes behind the core's ports: where vLLM runs and how the backend re-reads its env file.

Adding a runtime is one file here implementing `migrator.core.ports.VllmRuntime` (or `BackendRuntime`)
plus its name in the registry below and in the config's choices (`vllm.runtime`,
`project.backend_runtime`).
"""

from __future__ import annotations

from migrator.core.config import Settings
from migrator.core.ports import BackendRuntime, VllmRuntime, Wiring


def vllm_runtime(name: str) -> VllmRuntime:
    if name == "docker":
        from migrator.adapters.runtime.docker import DockerVllm

        return DockerVllm()
    from migrator.adapters.runtime.process import ProcessVllm

    return ProcessVllm()


def backend_runtime(name: str) -> BackendRuntime:
    if name == "compose":
        from migrator.adapters.runtime.compose import ComposeBackend

        return ComposeBackend()
    from migrator.adapters.runtime.selfreload import SelfReloadingBackend

    return SelfReloadingBackend()


def wiring(settings: Settings) -> Wiring:
    """The adapters migrate.yaml asks for, plugged into a step context by the app layer."""
    from migrator.adapters.docker import DockerRuntime

    return Wiring(vllm=vllm_runtime(settings.vllm.runtime),
                  backend=backend_runtime(settings.project.backend_runtime), docker=DockerRuntime)
