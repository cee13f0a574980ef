"""A phase of file-writing steps for the engine tests; run as a script it can kill itself mid-step.

    python crashphase.py PROJECT N_STEPS [CRASH_STEP CRASH_POINT]

CRASH_POINT: before-apply | after-apply (SIGKILL, as a power cut or `kill -9` would).
"""

import os
import signal
import sys
from pathlib import Path

from migrator.core.config import Settings
from migrator.core.engine import Context, Outcome, Phase, Step, run_phase
from migrator.core.ledger import Ledger
from migrator.cli.output import Output


class WriteFile(Step):
    def __init__(self, index: int, crash: str | None = None):
        self.index = index
        self.id = f"test.write-{index}"
        self.title = f"write file {index}"
        self.crash = crash

    def target(self, ctx: Context) -> Path:
        return ctx.project / f"file{self.index}.txt"

    def check(self, ctx: Context) -> Outcome:
        ok = self.target(ctx).exists() and self.target(ctx).read_text() == f"content {self.index}\n"
        return Outcome(ok, "present" if ok else "absent")

    def files(self, ctx):
        return {self.target(ctx): f"content {self.index}\n".encode()}

    def apply(self, ctx):
        if self.crash == "before-apply":
            os.kill(os.getpid(), signal.SIGKILL)
        counter = ctx.project / "applies.log"
        with open(counter, "a") as f:
            f.write(f"{self.index}\n")
        result = super().apply(ctx)
        if self.crash == "after-apply":
            os.kill(os.getpid(), signal.SIGKILL)
        return result


def build(n: int, crash_step: int = -1, crash_point: str | None = None) -> Phase:
    return Phase("phase1", "test", [WriteFile(i, crash_point if i == crash_step else None) for i in range(n)])


def run(project: Path, n: int, crash_step: int = -1, crash_point: str | None = None):
    ledger = Ledger(project)
    ctx = Context(project, Settings(), ledger, Output(quiet=True))
    with ledger.locked("test"):
        ledger.load()
        return run_phase(build(n, crash_step, crash_point), ctx)


if __name__ == "__main__":
    project, n = Path(sys.argv[1]), int(sys.argv[2])
    crash_step = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    crash_point = sys.argv[4] if len(sys.argv) > 4 else None
    run(project, n, crash_step, crash_point)
