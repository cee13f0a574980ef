"""`status`: where the migration stands. Reads only; never creates or changes a file.

Non-zero exit when a phase failed, state is unreadable, the env file is missing, or a file the tool
still owns has drifted (a file a rollback put back is the operator's again), so it can gate CI or a
cron check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.core.config import Settings
from migrator.files.envfile import EnvFile, missing_env_file
from migrator.core.errors import ExitCode, StateCorrupt
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
        return out

    @property
    def exit_code(self) -> ExitCode:
        if self.state_error:
            return ExitCode.STATE
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
    held = ledger.read_lock()
    if held is not None:
        report.lock = {**held.__dict__, "stale": ledger.lock_is_stale(held)}
    try:
        env = EnvFile.from_bytes(env_path.read_bytes())
        report.env_file_exists = True
        report.llm_backend = env.get("LLM_BACKEND")
    except FileNotFoundError:
        problem = missing_env_file(project, env_path)
        if problem is not None:
            report.env_file_problem = f"{problem[0]}: {problem[1]}"
    except OSError as exc:
        report.state_error = report.state_error or f"cannot read {env_path}: {exc.strerror}"
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
