"""Wall time of `graphrag-migrate --help` and of `status` on a project with a full ledger.

Targets (issue 2): --help ≤ 150 ms, status ≤ 300 ms median on this machine. Prints medians and
the ratio to the target; run several rounds, these machines are noisy.

    python3 benchmarks/cli_latency.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrator.core.ledger import Ledger  # noqa: E402
from migrator.app.rehearse import make_sandbox  # noqa: E402


def full_ledger_project(root: Path) -> None:
    make_sandbox(root, 9, 9, 9)  # ports nobody listens on: probes fail fast, as on a box with servers down
    ledger = Ledger(root)
    for phase in ("phase1", "phase2", "phase3", "phase4"):
        record = ledger.phase(phase)
        record["status"] = "completed"
        for i in range(8):
            record["steps"][f"{phase}.step{i}"] = {"status": "passed", "at": "2026-11-25T00:00:00+0000",
                                                   "message": "ok", "measurements": {"ttft_ms": 31.5}}
    for i in range(6):
        ledger.state["files"][f"docker/file{i}"] = {"existed": True, "written_sha256": "0" * 64}
    ledger.save()
    for i in range(500):
        ledger.audit("phase1.step", "write", "ok", file="docker/.env", n=i)


def median_ms(cmd: list[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("graphrag-migrate") or sys.exit("graphrag-migrate is not installed (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "p"
        full_ledger_project(project)
        python_start = median_ms([sys.executable, "-c", "pass"], args.rounds)
        rows = [("graphrag-migrate --help", median_ms([exe, "--help"], args.rounds), 150.0),
                ("graphrag-migrate status", median_ms([exe, "--project", str(project), "status"], args.rounds), 300.0)]
    print(f"python3 -c pass (floor): {python_start:.0f} ms median")
    for name, ms, target in rows:
        verdict = "meets" if ms <= target else "MISSES"
        print(f"{name}: {ms:.0f} ms median over {args.rounds} runs; target {target:.0f} ms; "
              f"ratio {ms / target:.2f} ({verdict})")


if __name__ == "__main__":
    main()
