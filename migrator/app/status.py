"""`status`: where the migration stands. Reads only; never creates or changes a file.

Non-zero exit when a phase failed, state is unreadable, the env file is missing, or a file the tool
still owns has drifted (a file a rollback put back is the operator's again), so it can gate CI or a
cron check. Also after a killed run (a step left `applying`, or a lock whose holder is gone: exit 1),
when state.json is lost while production is on vLLM (exit 5), and when the env file exists but cannot be
read (exit 3).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from migrator.core.config import Settings
from migrator.files.envfile import EnvFile, missing_env_file
from migrator.core.errors import ExitCode, MigrateError, StateCorrupt, from_os_error
from migrator.core.fileops import FileWriter
from migrator.core.ledger import Ledger

PHASE_NAMES = ("phase1", "phase2", "phase3", "phase4")


@dataclass
class StatusReport:
    project: str
    state_error: str = ""
    phases: dict = field(default_factory=dict)
    llm_backend: str | None = None
    env_file: str = ""
    env_file_exists: bool = False
    env_file_problem: str = ""  # missing: what to do (a template to copy), as phase3 would stop on it
    vllm: dict = field(default_factory=dict)
    ollama: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)
    lock: dict | None = None
    last_rollback: dict | None = None
    loadtest: dict | None = None  # the last recorded load test (what phase4's gates judge)
    capacity: dict = field(default_factory=dict)  # the last `bench --sweep` per backend
    speed: dict = field(default_factory=dict)  # phase1's predicted ceilings beside the load tests' measurements
    interrupted: list = field(default_factory=list)  # a killed run: steps left applying, a lock left behind
    state_lost: str = ""  # no state.json while production is (or the audit log says it was put) on vLLM
    env_file_error: str = ""  # the env file is there but cannot be read (a directory, permissions, a FIFO)

    @property
    def problems(self) -> list[str]:
        out = []
        if self.state_error:
            out.append(self.state_error)
        for name, phase in self.phases.items():
            if phase.get("status") in ("failed", "interrupted"):
                out.append(f"{name} {phase['status']}")
        for rel, what in self.drift.items():
            out.append(f"{rel}: {what}")
        if self.env_file_problem:
            out.append(self.env_file_problem)
        out += [f"{what} (an interrupted start?): `graphrag-migrate rollback` stops it"
                for what in self.vllm.get("untracked", [])]
        out.extend(self.interrupted)
        if self.state_lost:
            out.append(self.state_lost)
        if self.env_file_error:
            out.append(self.env_file_error)
        return out

    @property
    def exit_code(self) -> ExitCode:
        if self.state_error or self.state_lost:
            return ExitCode.STATE
        if self.env_file_error:
            return ExitCode.ENVIRONMENT
        return ExitCode.CHECK_FAILED if self.problems else ExitCode.OK

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["ok"] = not self.problems
        data["problems"] = self.problems
        return data


def gather_status(project, settings: Settings, probe: bool = True) -> StatusReport:
    ledger = Ledger(project)
    env_path = project / settings.project.env_file
    report = StatusReport(project=str(project), env_file=settings.project.env_file)
    try:
        state = ledger.read_state()
        ledger.state = state
    except StateCorrupt as exc:
        report.state_error = exc.one_line()
        state = None
    if state is not None:
        report.phases = {name: state["phases"].get(name, {"status": "pending", "steps": {}})
                         for name in PHASE_NAMES}
        report.drift = FileWriter(ledger).drift()
        report.last_rollback = state.get("last_rollback")
        report.loadtest = state["resources"].get("loadtest")
        report.capacity = state["resources"].get("capacity") or {}
        report.speed = _speed(state, report)
    held = ledger.read_lock()
    if held is not None:
        report.lock = {**held.__dict__, "stale": ledger.lock_is_stale(held)}
    report.interrupted = _interrupted(report)
    try:
        env = _read_env_file(env_path)
        report.env_file_exists = True
        report.llm_backend = env.get("LLM_BACKEND")
    except FileNotFoundError:
        problem = missing_env_file(project, env_path)
        if problem is not None:
            report.env_file_problem = f"{problem[0]}: {problem[1]}"
    except _NotAFile as exc:
        report.env_file_error = (f"{env_path} is {exc.strerror}, not a file: nothing can read the env file from it "
                                 "— put the env file there (or fix project.env_file in migrate.yaml), then re-run")
    except OSError as exc:
        report.env_file_error = from_os_error(exc, "reading the env file", env_path).one_line()
    if state is not None and not report.state_error:
        report.state_lost = _state_lost(ledger, report)
    resources = (state or {}).get("resources", {})
    report.vllm = _vllm_status(settings, resources.get("vllm") or {}, probe)
    untracked = _untracked_vllm(settings, ledger, resources.get("vllm") or {}, probe)
    if untracked:
        report.vllm["untracked"] = untracked
    if probe:
        from migrator.adapters.http import OllamaServer

        v = OllamaServer(settings.ollama.url).version(timeout=1.0)
        report.ollama = {"url": settings.ollama.url, "answers": v.ok,
                         "version": v.body.get("version") if v.ok and isinstance(v.body, dict) else None,
                         "error": "" if v.ok else v.describe()}
    return report


def _speed(state: dict, report: StatusReport) -> dict:
    """Predicted vs measured: phase1's prediction beside the last load test and vLLM's last sweep."""
    from migrator.core import speed

    predicted = speed.recorded(state)
    if predicted is None:
        return {}
    measured: dict = {}
    sweep = report.capacity.get("vllm") or {}
    measured.update(sweep.get("metrics") or {})
    if report.loadtest:
        measured.update({k: v for k, v in (report.loadtest.get("metrics") or {}).items()
                         if k in ("per_user_output_tokens_per_s", "ttft_p99_ms")})
    return {"gpu": predicted.get("gpu"), "model": predicted.get("model"),
            "rows": speed.compare(predicted, measured),
            "predicted": {k: predicted.get(k) for k in ("decode_tokens_per_s_per_user", "ttft_floor_ms",
                                                        "realtime_users", "wait_users")}}


class _NotAFile(OSError):
    pass


def _read_env_file(path) -> EnvFile:
    """The env file; an OSError when it is there but cannot be read — a directory (EISDIR), permissions,
    or no regular file at all (a FIFO would block the read: status never waits on one)."""
    import errno

    mode = os.stat(path).st_mode  # FileNotFoundError: missing, reported as such
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise _NotAFile(errno.EINVAL, kind, str(path))
    return EnvFile.from_bytes(path.read_bytes())


def _interrupted(report: StatusReport) -> list[str]:
    """A run that was killed (kill -9, power loss) leaves a step `applying` — or a phase `in_progress` —
    with no live run holding the lock, or a lock whose holder is gone: each one line with the fix."""
    lock = report.lock
    live = lock is not None and not lock.get("stale")
    out = []
    if lock is not None and lock.get("stale"):
        holder = (f"an {lock['problem']} lock file" if lock.get("problem")
                  else f"lock {lock['id']} of pid {lock['pid']} ('{lock['command']}', since {lock['started_at']})")
        out.append(f"{holder} is left behind by a run that is gone (killed?) — re-run that command to resume "
                   f"(it takes the lock over), or `graphrag-migrate rollback`")
    if live:
        return out  # a run is going on: its step is applying now
    for name, phase in report.phases.items():
        steps = [sid for sid, step in (phase.get("steps") or {}).items()
                 if isinstance(step, dict) and step.get("status") == "applying"]
        if steps:
            out.append(f"{name} step {steps[-1]} was left applying by a run that is gone (killed?): its change may "
                       f"be half made — re-run `graphrag-migrate {name}` to resume, or `graphrag-migrate rollback`")
        elif phase.get("status") == "in_progress":
            out.append(f"{name} is in progress but no run holds the lock (killed between steps?) — re-run "
                       f"`graphrag-migrate {name}` to resume, or `graphrag-migrate rollback`")
    return out


_SWITCH_STEP = "phase4.switch"


def _state_lost(ledger: Ledger, report: StatusReport) -> str:
    """No state.json, while production is on vLLM: the env file says LLM_BACKEND=vllm, or the audit log
    shows phase4's switch with no completed rollback after it. Rollback works without the state."""
    try:
        os.stat(ledger.state_path)
        return ""
    except FileNotFoundError:
        pass
    except OSError:
        return ""  # unreadable, not lost: read_state said so already
    try:
        entries = ledger.read_audit()
    except MigrateError:
        entries = []
    switched = False
    for entry in entries:
        if entry.get("action") == "rollback" and entry.get("result") == "ok":
            switched = False
        elif entry.get("step") == _SWITCH_STEP and (entry.get("action") == "write" or (
                entry.get("action") == "step" and entry.get("result") in ("applying", "passed"))):
            switched = True
    state_rel = ledger.relpath(ledger.state_path)
    fix = ("`graphrag-migrate rollback` goes back to Ollama without it (it rebuilds the file records from the "
           "audit log); or put a copy of state.json back")
    if report.llm_backend == "vllm":
        told = "the audit log shows phase4's switch" if switched else (
            "the audit log has no switch: made by hand?" if entries else "no audit log either")
        return f"{state_rel} is missing while {report.env_file} says LLM_BACKEND=vllm ({told}) — {fix}"
    if switched:
        return (f"{state_rel} is missing and the audit log shows phase4 switched production to vLLM with no "
                f"rollback since (LLM_BACKEND={report.llm_backend or 'not set'} in {report.env_file}) — {fix}")
    return ""


def _vllm_status(settings: Settings, recorded: dict, probe: bool) -> dict:
    from migrator.adapters.runtime import vllm_runtime

    out: dict = {"runtime": recorded.get("runtime", settings.vllm.runtime), "url": settings.vllm.url}
    out.update(vllm_runtime(out["runtime"]).describe(recorded, settings, probe))
    if probe:
        from migrator.adapters.http import get

        h = get(out["url"] + "/health", timeout=1.0)
        out["healthy"] = h.ok
        if not h.ok:
            out["health_error"] = h.describe()
    for key in ("fit", "readiness", "command"):
        if key in recorded:
            out[key] = recorded[key]
    return out


def _untracked_vllm(settings: Settings, ledger: Ledger, recorded: dict, probe: bool) -> list[str]:
    """vLLMs graphrag-migrate started for this project that run unrecorded (on any runtime it may have used)."""
    from migrator.adapters.runtime import vllm_runtime

    names = dict.fromkeys([recorded.get("runtime") or settings.vllm.runtime, settings.vllm.runtime])
    return [line for name in names for line in vllm_runtime(name).untracked(settings, ledger.root, recorded, probe)]
