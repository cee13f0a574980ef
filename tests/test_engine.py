"""The step engine: idempotent re-runs, resume after kill -9 at every step, read-only modes."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import crashphase
from migrator.core.config import Settings
from migrator.core.engine import Context, check_phase, dry_run_phase
from migrator.core.ledger import Ledger
from migrator.cli.output import Output

N = 4
HERE = Path(__file__).parent


def run_script(project: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / "crashphase.py"), str(project), str(N), *map(str, args)],
                          capture_output=True, text=True, cwd=HERE.parent)


def test_rerun_skips_satisfied_steps(tmp_path):
    crashphase.run(tmp_path, N)
    crashphase.run(tmp_path, N)
    assert (tmp_path / "applies.log").read_text().split() == [str(i) for i in range(N)]
    state = Ledger(tmp_path).read_state()
    assert state["phases"]["phase1"]["status"] == "completed"
    assert {s["status"] for s in state["phases"]["phase1"]["steps"].values()} == {"passed"}


@pytest.mark.parametrize("crash_step", range(N))
@pytest.mark.parametrize("point", ["before-apply", "after-apply"])
def test_resume_after_sigkill_at_every_step(tmp_path, crash_step, point):
    killed = run_script(tmp_path, crash_step, point)
    assert killed.returncode == -signal.SIGKILL
    # The crash is visible: the step is marked 'applying' and the phase 'in_progress'.
    state = Ledger(tmp_path).read_state()
    assert state["phases"]["phase1"]["status"] == "in_progress"
    assert state["phases"]["phase1"]["steps"][f"test.write-{crash_step}"]["status"] == "applying"
    # The lock of the dead run is stale and taken over; the run resumes and completes.
    resumed = run_script(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    # Every step's effect happened exactly once, in order: a step killed after its apply is found
    # in place by its check and not applied again.
    applies = [int(x) for x in (tmp_path / "applies.log").read_text().split()]
    assert applies == list(range(N))
    for i in range(N):
        assert (tmp_path / f"file{i}.txt").read_text() == f"content {i}\n"
    final = Ledger(tmp_path).read_state()
    assert final["phases"]["phase1"]["status"] == "completed"
    resumed_step = final["phases"]["phase1"]["steps"][f"test.write-{crash_step}"]["status"]
    assert resumed_step == ("satisfied" if point == "after-apply" else "passed")
    audit = [json.loads(x) for x in (tmp_path / ".graphrag-migrate" / "audit.jsonl").read_text().splitlines()]
    assert any(e["action"] == "stale-lock-removed" for e in audit)


def _ctx(project: Path, dry_run=False) -> Context:
    return Context(project, Settings(), Ledger(project), Output(quiet=True), dry_run=dry_run)


def test_check_and_dry_run_write_nothing(tmp_path):
    (tmp_path / "file0.txt").write_text("old\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    report = check_phase(crashphase.build(N), _ctx(tmp_path))
    assert [s.status for s in report.steps] == ["missing"] * N and not report.ok
    report = dry_run_phase(crashphase.build(N), _ctx(tmp_path, dry_run=True))
    assert [s.status for s in report.steps] == ["would run"] * N
    diff = report.changes[0].diff()
    assert "-old" in diff and "+content 0" in diff and "a/file0.txt" in diff
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no ledger, no files
    assert (tmp_path / "file0.txt").read_text() == "old\n"


def test_dry_run_marks_satisfied_steps(tmp_path):
    crashphase.run(tmp_path, 2)
    report = dry_run_phase(crashphase.build(3), _ctx(tmp_path, dry_run=True))
    assert [s.status for s in report.steps] == ["satisfied", "satisfied", "would run"]
