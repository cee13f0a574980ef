"""vLLM as a local process (`python -m vllm.entrypoints.openai.api_server`, or the simulator)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from migrator.adapters import process, vllm as vllm_launch
from migrator.core.engine import Context, Outcome
from migrator.core.ports import StartedVllm


class ProcessVllm:
    name = "process"
    under_compose = False

    def check(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        python = shutil.which(v.python) or v.python
        module = v.server_module.split(".")[0]
        probe = subprocess.run([python, "-c", f"import importlib.util,sys; sys.exit(importlib.util.find_spec('{module}') is None)"],
                               capture_output=True, timeout=30) if Path(python).exists() else None
        if probe is None or probe.returncode != 0:
            return Outcome.failed(f"{v.python} cannot import '{module}'",
                                  "install vLLM for that python, or set vllm.python to one that has it")
        return Outcome.passed(f"{python} -m {v.server_module}")

    def _command(self, ctx: Context) -> list[str]:
        return vllm_launch.process_command(ctx.settings, self.model_arg(ctx.settings, ctx.project,
                                                                         ctx.resources.get("model")))

    def start_plan(self, ctx: Context) -> list[str]:
        return [" ".join(self._command(ctx))]

    def start(self, ctx: Context, record: dict) -> StartedVllm:
        command = self._command(ctx)
        log_path = ctx.ledger.root / "logs" / "vllm.log"
        handle = process.start_detached(
            command, log_path, vllm_launch.process_env(ctx.settings, ctx.project, ctx.resources.get("model")),
            cwd=ctx.project, cpuset=ctx.settings.vllm.cpuset)
        record.update({"process": handle.to_dict(), "command": command, "log": str(log_path)})
        ctx.resources["vllm"] = record
        ctx.ledger.save()

        def alive() -> str | None:
            return None if handle.alive() else f"vLLM process {handle.pid} exited"

        def logs() -> str:
            try:
                return log_path.read_text(errors="replace")[-20000:]
            except OSError:
                return ""

        return StartedVllm(alive, logs)

    def stop(self, ctx: Context, record: dict, state_known: bool) -> list[str]:
        v = ctx.settings.vllm
        if record.get("process"):
            handle = process.ProcessHandle.from_dict(record["process"])
            return [f"process {handle.pid}: {process.stop(handle, v.stop_timeout_s)}"]
        if state_known:
            return []  # readable state and no record: graphrag-migrate started no vLLM, it stops nothing
        # State lost or corrupt: find the vLLM by its port, and stop it only if it is vLLM on that port.
        pid = process.listening_pid(v.port)
        command = process.cmdline(pid) if pid else ""
        if pid and v.server_module in command and f"--port {v.port}" in command:
            handle = process.ProcessHandle(pid, process._start_ticks(pid), command.split(), "")
            return [f"process {pid} (found on port {v.port}, not in state): {process.stop(handle, v.stop_timeout_s)}"]
        return []

    def describe(self, record: dict, settings, probe: bool) -> dict:
        if not record.get("process"):
            return {}
        handle = process.ProcessHandle.from_dict(record["process"])
        return {"process": {"pid": handle.pid, "running": handle.alive()}}

    def model_arg(self, settings, project, downloaded: dict | None) -> str:
        """A local dir as it is; else the verified snapshot phase1 downloaded (a process reads the host's disk)."""
        model = vllm_launch.model_arg(settings, project)
        if Path(model).is_dir():
            return model
        if downloaded and downloaded.get("verified") and downloaded.get("repo") == model \
                and Path(downloaded.get("path", "")).is_dir():
            return downloaded["path"]
        return model

    def backend_base_url(self, settings) -> str:
        return f"{settings.vllm.url}/v1"
