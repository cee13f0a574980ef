"""The undo half of the step contract: every mutating step says how it is taken back, and a rollback runs
those undos stage by stage in today's order, each attempted whatever the ones before it did."""

from __future__ import annotations

import pytest

from migrator.app import api
from migrator.core.config import Settings
from migrator.core.engine import Phase, Step, Undo, UndoStage
from migrator.core.errors import DockerUnavailable, MigrateError
from phases.rollback import ordered_undos, rollback


def _all_steps() -> list[Step]:
    return [step for phase in api.all_phases(Settings()) for step in phase.steps]


def _may_write(step: Step) -> bool:
    """Mutating, or a check that writes with --scaffold (phase2's)."""
    return not step.read_only or type(step).files is not Step.files


@pytest.mark.parametrize("step", [s for s in _all_steps() if _may_write(s)], ids=lambda s: s.id)
def test_every_mutating_step_owns_an_undo(step):
    if step.observes:
        assert step.undos() == [], f"{step.id} only measures: it should have nothing to undo"
    else:
        undos = step.undos()
        assert undos, f"{step.id} changes something but declares no undo"
        assert all(isinstance(u, Undo) and isinstance(u.stage, UndoStage) and callable(u.run) for u in undos)


def test_checks_that_never_write_have_no_undo():
    for step in _all_steps():
        if not _may_write(step):
            assert step.undos() == [], step.id


def test_rollback_order_is_files_then_recreate_stop_reload_probe():
    undos = ordered_undos(api.all_phases(Settings()))
    names = [u.name for u in undos]
    assert len(names) == len(set(names)), "an undo shared by several steps must run once"
    stages = [u.stage for u in undos]
    assert stages == sorted(stages), [(u.stage.name, u.name) for u in undos]
    # Today's order, which the fault tests and README rely on:
    assert names[0] == "env file"  # it needs only the disk: first
    assert names.index("phase4.staging") < names.index("stop vLLM")  # staging's vLLM before production's
    # the backend drained and recreated while vLLM still serves the answers in flight through it
    assert names.index("recreate backend") < names.index("stop vLLM") < names.index("reload Ollama models")
    assert names.index("Ollama answers") < names.index("backend answers")  # proofs bottom up
    assert names[-1] == "backend answers"


class _Writes(Step):
    """A toy step whose undo fails in a chosen way."""

    def __init__(self, name: str, stage: UndoStage, error: Exception | None, ran: list[str]):
        self.id, self.title = f"toy.{name}", name
        self._undo = Undo(stage, name, self._run)
        self._error, self._ran = error, ran

    def _run(self, ctx):
        self._ran.append(self._undo.name)
        if self._error is not None:
            raise self._error
        return True, f"{self._undo.name} undone"

    def undos(self):
        return [self._undo]


def test_each_undo_is_attempted_even_when_an_earlier_one_failed(tmp_path):
    ran: list[str] = []
    phase = Phase("toy", "toy", [
        _Writes("probe", UndoStage.PROBE, None, ran),
        _Writes("files", UndoStage.FILES, MigrateError("the disk said no", "free space"), ran),
        _Writes("stop", UndoStage.STOP, DockerUnavailable("Docker daemon not reachable", "start dockerd"), ran),
        _Writes("reload", UndoStage.RELOAD, None, ran),
    ])
    ctx = api.context(tmp_path, Settings())
    report = rollback(ctx, [phase], wait_s=0)
    assert ran == ["files", "stop", "reload", "probe"]
    actions = {a.name: a for a in report.actions}
    assert not actions["files"].ok and not actions["files"].environment and "the disk said no" in actions["files"].result
    assert not actions["stop"].ok and actions["stop"].environment  # exit 3: something needed is not there
    assert actions["reload"].ok and actions["probe"].ok
    assert int(report.exit_code) == 3
