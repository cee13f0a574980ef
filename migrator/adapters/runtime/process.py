"""vLLM as a local process (`python -m vllm.entrypoints.openai.api_server`, or the simulator).

What the tool starts it can always find again, so that an interrupted start never leaves an untracked vLLM
holding the GPU: the process is recorded (state.json and a pidfile, `.graphrag-migrate/vllm.pid`) the moment
it exists, before its readiness is awaited, and it carries a marker in its environment (`MARKER_ENV`, the
project's state directory). A pid is taken for ours only while its start time and its command line are
still those of that vLLM: a reused pid is never signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from migrator.adapters import process, vllm as vllm_launch
from migrator.core.engine import Context, Outcome
from migrator.core.ports import StartedVllm

MARKER_ENV = "GRAPHRAG_MIGRATE_STATE_DIR"  # in the environment of every vLLM process the tool starts
PIDFILE = "vllm.pid"


def _pidfile(state_dir: Path) -> Path:
    return Path(state_dir) / PIDFILE


def _read_pidfile(state_dir: Path) -> dict:
    try:
        data = json.loads(_pidfile(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else {}


def _write_pidfile(state_dir: Path, handle: process.ProcessHandle, port: int) -> None:
    from migrator.core.ledger import atomic_write_bytes

    data = {"pid": handle.pid, "start_ticks": handle.start_ticks, "port": port, "command": handle.command,
            "log_path": handle.log_path}
    try:
        atomic_write_bytes(_pidfile(state_dir), json.dumps(data).encode() + b"\n")
    except OSError:
        pass  # state.json records it too; the marker in its environment finds it without either


def _remove_pidfile(state_dir: Path) -> None:
    try:
        os.unlink(_pidfile(state_dir))
    except OSError:
        pass


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _marked(pid: int, state_dir: Path) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_ENV}={state_dir}".encode() in environ.split(b"\0")


def _is_vllm(pid: int, settings) -> bool:
    """The pid runs vLLM's server module on the configured port (not a pid reused by something else)."""
    argv = _argv(pid)
    v = settings.vllm
    return v.server_module in argv and "--port" in argv and str(v.port) in argv[argv.index("--port") + 1:][:1]


def _verified(data: dict, settings) -> process.ProcessHandle | None:
    """A recorded process (state or pidfile) if it still runs as that vLLM: same start time, same command."""
    try:
        handle = process.ProcessHandle.from_dict(data)
    except (KeyError, TypeError, ValueError):
        return None
    if not handle.alive():
        return None
    argv = _argv(handle.pid)
    if settings.vllm.server_module not in argv or (handle.command and argv != handle.command):
        return None
    return handle


def _handle(pid: int) -> process.ProcessHandle:
    return process.ProcessHandle(pid, process._start_ticks(pid), _argv(pid), "")


def ours(settings, state_dir: Path, record: dict) -> list[tuple[process.ProcessHandle, str]]:
    """Every running vLLM this project's graphrag-migrate started: (handle, how it was found) — the one
    state.json records, the pidfile's, the one on the port carrying our marker, and any other with it."""
    state_dir = Path(state_dir)
    found: dict[int, tuple[process.ProcessHandle, str]] = {}
    for data, how in ((record.get("process") or {}, "recorded"), (_read_pidfile(state_dir), "pidfile")):
        handle = _verified(data, settings) if data else None
        if handle is not None and handle.pid not in found:
            found[handle.pid] = (handle, how)
    on_port = process.listening_pid(settings.vllm.port)
    if on_port and on_port not in found and _marked(on_port, state_dir) and _is_vllm(on_port, settings):
        found[on_port] = (_handle(on_port), f"on port {settings.vllm.port}")
    marked = [int(p.name) for p in Path("/proc").iterdir()
              if p.name.isdigit() and int(p.name) != os.getpid() and _marked(int(p.name), state_dir)]
    for pid in marked:
        if pid not in found and settings.vllm.server_module in _argv(pid) and _parent(pid) not in marked:
            found[pid] = (_handle(pid), "by its marker")
    return list(found.values())


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


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
                                                                         ctx.resources.get("model")), ctx.project,
                                           vllm_launch.start_limits(ctx))

    def start_plan(self, ctx: Context) -> list[str]:
        return [" ".join(self._command(ctx))]

    def start(self, ctx: Context, record: dict) -> StartedVllm:
        command = self._command(ctx)
        log_path = ctx.ledger.root / "logs" / "vllm.log"
        adopted = None
        # A vLLM of ours already running (an interrupted start, re-run): adopt it if it is the one this run
        # would start, else stop it first — never a second one beside it.
        for found, how in ours(ctx.settings, ctx.ledger.root, ctx.resources.get("vllm") or {}):
            if adopted is None and _argv(found.pid) == command:
                adopted = process.ProcessHandle(found.pid, found.start_ticks, command, str(log_path))
                ctx.out.info(f"  vLLM process {found.pid} ({how}) is still starting or running: waiting for it "
                             "instead of starting another")
            else:
                ctx.out.info(f"  vLLM process {found.pid} ({how}, other settings): "
                             f"{process.stop(found, ctx.settings.vllm.stop_timeout_s)}")
        if adopted is not None:
            handle = adopted
            record["adopted"] = True
        else:
            env = vllm_launch.process_env(ctx.settings, ctx.project, ctx.resources.get("model"))
            env[MARKER_ENV] = str(ctx.ledger.root)
            handle = process.start_detached(command, log_path, env, cwd=ctx.project, cpuset=ctx.settings.vllm.cpuset)
        # Recorded the moment it exists, before its readiness is awaited: an interrupted wait still knows it.
        _write_pidfile(ctx.ledger.root, handle, ctx.settings.vllm.port)
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
        lines = []
        if record.get("process"):  # the recorded one: its start time tells a reused pid apart
            handle = process.ProcessHandle.from_dict(record["process"])
            lines.append(f"process {handle.pid}: {process.stop(handle, v.stop_timeout_s)}")
        for handle, how in ours(ctx.settings, ctx.ledger.root, {}):
            if not any(line.startswith(f"process {handle.pid}:") for line in lines):
                lines.append(f"process {handle.pid} ({how}, not in state): {process.stop(handle, v.stop_timeout_s)}")
        if not ctx.dry_run:
            _remove_pidfile(ctx.ledger.root)
        if lines or state_known:
            return lines  # readable state and nothing of ours: graphrag-migrate started no vLLM, it stops nothing
        # State lost or corrupt: find the vLLM by its port, and stop it only if it is vLLM on that port.
        pid = process.listening_pid(v.port)
        command = process.cmdline(pid) if pid else ""
        if pid and v.server_module in command and f"--port {v.port}" in command:
            handle = process.ProcessHandle(pid, process._start_ticks(pid), command.split(), "")
            return [f"process {pid} (found on port {v.port}, not in state): {process.stop(handle, v.stop_timeout_s)}"]
        return []

    def running_ours(self, ctx: Context) -> list[str]:
        """vLLMs of ours running now, recorded or not (phase1's port check lets them hold the port)."""
        return [f"vLLM process {handle.pid} ({how})"
                for handle, how in ours(ctx.settings, ctx.ledger.root, ctx.resources.get("vllm") or {})]

    def untracked(self, settings, state_dir: Path, record: dict, probe: bool) -> list[str]:
        """vLLM processes of ours that run but are not the one state.json records (status reports them)."""
        recorded = _verified(record.get("process") or {}, settings) if record.get("process") else None
        return [f"vLLM process {handle.pid} ({how}) runs but state.json does not record it"
                for handle, how in ours(settings, state_dir, {})
                if recorded is None or handle.pid != recorded.pid]

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
