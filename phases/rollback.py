"""Rollback: back to Ollama, from wherever the migration stopped — the order only.

Each mutating step owns its undo (`Step.undos()`, beside its apply); this module runs them stage by
stage (core.engine.UndoStage): files first (they need nothing but the disk: the env file back to
Ollama, every other file restored), then the backend drained and recreated so it reads the env file
again (before vLLM stops: the answers in flight through the old backend finish on vLLM), then servers
stopped, Ollama's models reloaded, and last the probes. Within a stage the undos run in reverse
step order (last applied, first undone); the probes run bottom up (Ollama, then the backend on it).
Each action is attempted even when an earlier one failed, and each says what it did or could not do.
Works with state.json missing or corrupt (the file records are rebuilt from the audit log and checked
against the backups; the rest comes from migrate.yaml), with the vLLM container gone, and with dockerd
down (the env file is still fixed). Running it twice is safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from migrator.core.engine import Context, Phase, Undo, UndoStage, restore_files
from migrator.core.errors import (DockerUnavailable, EnvironmentMissing, ExitCode, MigrateError, StateCorrupt,
                                   from_os_error)
from migrator.core.ledger import now_iso

DOCKER_DOWN_FIX = "start it (`sudo systemctl start docker`) and re-run rollback"


@dataclass
class Action:
    name: str
    ok: bool
    result: str
    environment: bool = False  # failed because something it needs is not there (dockerd down)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RollbackReport:
    actions: list[Action] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0

    def add(self, name: str, ok: bool, result: str, environment: bool = False) -> Action:
        action = Action(name, ok, result, environment)
        self.actions.append(action)
        return action

    @property
    def exit_code(self) -> ExitCode:
        if any(a.environment for a in self.actions):
            return ExitCode.ENVIRONMENT
        if not all(a.ok for a in self.actions):
            return ExitCode.CHECK_FAILED
        return ExitCode.OK

    def to_dict(self) -> dict:
        return {"ok": self.exit_code == ExitCode.OK, "exit_code": int(self.exit_code),
                "started_at": self.started_at, "seconds": round(self.seconds, 2),
                "actions": [a.to_dict() for a in self.actions]}


def _attempt(report: RollbackReport, undo: Undo, ctx: Context) -> None:
    """Run one undo; what it raises is a failed action, never the end of the rollback (an OS error too:
    an immutable env file must not keep vLLM running)."""
    try:
        result = undo.run(ctx)
    except DockerUnavailable as exc:  # found once (a short ping); every Docker-needing action says so at once
        report.add(undo.name, False, f"{exc.message} — {DOCKER_DOWN_FIX}", environment=True)
        return
    except EnvironmentMissing as exc:
        report.add(undo.name, False, exc.one_line(), environment=True)
        return
    except OSError as exc:
        report.add(undo.name, False, from_os_error(exc).one_line(), environment=True)
        return
    except MigrateError as exc:
        report.add(undo.name, False, exc.one_line())
        return
    if result is None:
        return  # nothing of this kind was ever done: nothing to say
    if isinstance(result, list):
        for name, ok, text, *environment in result:  # (name, ok, text[, environment])
            report.add(name, ok, text, *environment)
    else:
        report.add(undo.name, *result)


def ordered_undos(phases: list[Phase]) -> list[Undo]:
    """Every step's undos, by stage; one per name (steps sharing an action share its undo)."""
    steps = [step for phase in phases for step in phase.steps]  # read-only checks declare none
    undos: list[tuple[int, int, Undo]] = []
    for position, step in enumerate(steps):
        for undo in step.undos():
            order = position if undo.stage == UndoStage.PROBE else -position  # probes bottom up
            undos.append((undo.stage, order, undo))
    seen, out = set(), []
    for _stage, _order, undo in sorted(undos, key=lambda item: (item[0], item[1])):
        if undo.name not in seen:
            seen.add(undo.name)
            out.append(undo)
    return out


def rollback(ctx: Context, phases: list[Phase], wait_s: float = 60.0) -> RollbackReport:
    """Return the project to Ollama. The caller holds the project lock."""
    report = RollbackReport(started_at=now_iso())
    start = time.monotonic()
    ledger = ctx.ledger
    report.actions += [Action("lock", True, note) for note in ledger.notices]  # a stale lock taken over
    ledger.notices.clear()
    try:
        ledger.load()
        # state.json gone but the audit log shows earlier runs: the state was lost, not never written.
        state_ok = ledger.state_path.exists() or not ledger.read_audit()
        if not state_ok:
            report.add("state", True, f"{ledger.state_path.name} is missing but the audit log shows earlier runs: "
                                      "rolling back from migrate.yaml alone")
    except StateCorrupt as exc:
        state_ok = False
        moved = ledger.quarantine_state()
        report.add("state", True, f"{exc.message}; set aside as {moved.name if moved else '-'}, "
                                  "rolling back from migrate.yaml alone")
    ctx.state_known = state_ok
    ctx.memo["rollback_wait_s"] = wait_s

    if not state_ok:
        ctx.resources["ollama_unloaded"] = _unloaded_from_audit(ledger.read_audit())
        recovered, left_out = ledger.files_from_audit()
        ledger.state["files"] = recovered
        if recovered or left_out or ledger.audit_skipped:
            report.add("file records", not left_out,
                       f"{len(recovered)} rebuilt from the audit log"
                       + (f"; not restorable (backup missing or not the logged original): {', '.join(left_out)}"
                          if left_out else "")
                       + (f"; {ledger.audit_skipped} unreadable lines of {ledger.audit_path.name} skipped"
                          if ledger.audit_skipped else ""))

    files_seen_before = set(ledger.state["files"])
    undos = ordered_undos(phases)
    for undo in (u for u in undos if u.stage == UndoStage.FILES):
        _attempt(report, undo, ctx)
    # A file no step claims (written by an older version, or recorded under another id): restored too.
    handled = {a.name.removeprefix("file ") for a in report.actions if a.name.startswith("file ")}
    env_rel = ledger.relpath(ctx.env_path)
    for name, ok, text, *environment in restore_files(
            ctx, [rel for rel in files_seen_before if rel not in handled and rel != env_rel]):
        report.add(name, ok, text, *environment)
    for created in ctx.writer.remove_created_dirs():
        report.add(f"directory {created}", True, "removed (graphrag-migrate created it; now empty)")
    not_recreated = False
    for undo in (u for u in undos if u.stage != UndoStage.FILES):
        if undo.stage == UndoStage.PROBE and not_recreated:
            ctx.memo["rollback_wait_s"] = 0.0  # one look: nothing can bring back what was not recreated
        seen = len(report.actions)
        _attempt(report, undo, ctx)
        new = report.actions[seen:]
        if undo.stage == UndoStage.RECREATE and any(a.environment for a in new):
            not_recreated = True  # e.g. dockerd down: the backend cannot have been recreated
        elif undo.stage == UndoStage.PROBE and not_recreated:
            for action in (a for a in new if not a.ok):
                action.result += " (not waited for: the backend could not be recreated, see above)"

    for name, record in ledger.state["phases"].items():
        if record.get("status") not in (None, "pending"):
            record["status"] = "rolled_back"
    ledger.state["last_rollback"] = {"at": report.started_at, "ok": report.exit_code == ExitCode.OK,
                                     "actions": [a.to_dict() for a in report.actions]}
    try:
        ledger.save()
        ledger.audit("rollback", "rollback", "ok" if report.exit_code == ExitCode.OK else "incomplete",
                     actions=[a.to_dict() for a in report.actions])
    except EnvironmentMissing as exc:  # a full or read-only disk: what was done is still reported
        report.add("ledger", False, exc.one_line(), environment=True)
    report.seconds = time.monotonic() - start
    return report


def _unloaded_from_audit(entries: list[dict]) -> list[dict]:
    """Ollama models phase1 unloaded since the last complete rollback, for a rollback whose state was lost."""
    unloaded: dict[str, dict] = {}
    for entry in entries:
        if entry.get("action") == "rollback" and entry.get("result") == "ok":
            unloaded.clear()
        elif entry.get("action") == "ollama-unload" and entry.get("model"):
            unloaded[entry["model"]] = {"model": entry["model"], "keep_alive": entry.get("keep_alive", "5m")}
    return list(unloaded.values())
