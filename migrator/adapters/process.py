"""Local processes the tool starts (vLLM with runtime=process, the stand-in servers) and stops."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _start_ticks(pid: int) -> str | None:
    """The kernel's start time of `pid`: with the pid it names one process, even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, start_ticks: str | None = None) -> bool:
    ticks = _start_ticks(pid)
    if ticks is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        return False
    return start_ticks is None or ticks == start_ticks


@dataclass
class ProcessHandle:
    pid: int
    start_ticks: str | None
    command: list[str]
    log_path: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> "ProcessHandle":
        return cls(int(data["pid"]), data.get("start_ticks"), list(data.get("command", [])),
                   data.get("log_path", ""))

    def alive(self) -> bool:
        return alive(self.pid, self.start_ticks)


def parse_cpuset(text: str) -> set[int]:
    """'0-3,6' → {0, 1, 2, 3, 6} (the Linux CPU-list format of taskset and docker's cpuset)."""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def start_detached(command: list[str], log_path: Path, env: dict | None = None,
                   cwd: Path | None = None, cpuset: str = "") -> ProcessHandle:
    """Start a process in its own session, output to `log_path`; it outlives this CLI run.
    With `cpuset`, it and its children run on those CPUs only."""
    from migrator.core.ledger import make_dirs

    make_dirs(log_path.parent)  # under .graphrag-migrate/: private, as the log itself (0600)
    cpus = parse_cpuset(cpuset)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True, preexec_fn=pin)
    return ProcessHandle(proc.pid, _start_ticks(proc.pid), command, str(log_path))


def stop(handle: ProcessHandle, timeout: float) -> str:
    """SIGTERM the process group, SIGKILL it after `timeout` s. Never signals a reused pid."""
    if not handle.alive():
        return "not running"
    try:
        pgid = os.getpgid(handle.pid)
    except ProcessLookupError:
        return "not running"
    target = pgid if pgid == handle.pid else None  # our own session leader: stop its children too

    def send(sig: int) -> None:
        try:
            if target is not None:
                os.killpg(target, sig)
            else:
                os.kill(handle.pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(handle.pid)
        if not handle.alive():
            return "stopped"
        time.sleep(0.05)
    send(signal.SIGKILL)
    for _ in range(100):
        _reap(handle.pid)
        if not handle.alive():
            break
        time.sleep(0.02)
    return "killed (did not stop on SIGTERM)"


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port` (IPv4 or IPv6), from /proc; None if none or unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            for fd in (proc_dir / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc_dir.name)
        except OSError:
            continue
    return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
