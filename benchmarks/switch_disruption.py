"""What the users see of phase4's switch and of rollback (issue #17): streams cut mid-answer, requests refused
or failed, and the longest gap in which no request could start — with the drain, and without it.

Each round: the reference GraphRAG backend (FastAPI + LangChain under uvicorn, the tool's sample project) under
real compose on the host network, the Ollama stand-in and the vLLM simulator as local processes (both at 40 ms a
token, so an answer streams for ~2.6 s); the backend's own boot measured alone (a recreate with nothing
changed, until /health answers); then `--users` users (default 4) ask streamed questions through /chat for the
whole run (each reads the answer, thinks `--think-s` ±50 %, asks again; a refused connection is retried after
50 ms), while the tool runs phase1–3 and a load test, then phase4 (drained: `deploy.drain_timeout_s` =
`--drain-timeout`), rollback (drained), phases 1–3 again, phase4 without the drain (drain_timeout_s 0, no grace
period — what `rollback --now` does) and `rollback --now`. Per event: streams cut, requests refused, requests
failed (HTTP 5xx, other errors), the longest gap in which no request could start, and the line the tool itself
printed. Medians over `--rounds` (3).

    python3 benchmarks/switch_disruption.py [--rounds 3] [--users 4] [--think-s 2] [--drain-timeout 10]

Needs dockerd (host networking) and the images of migrator.app.harness.images (built once, reused). Every
compose project is named gm-drain-bench-<port> and taken down (volumes and orphans too) at the end of its round.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrator.adapters import process  # noqa: E402
from migrator.adapters.http import get  # noqa: E402
from migrator.adapters.net import free_port, wait_port  # noqa: E402
from migrator.app import api  # noqa: E402
from migrator.cli.output import Output  # noqa: E402

EVENTS = ("switch (drained)", "rollback (drained)", "switch (no drain)", "rollback --now")


@dataclass
class Attempt:
    start: float
    end: float = 0.0
    outcome: str = ""  # answered | cut | refused | failed
    accepted_at: float | None = None  # response headers received: the request started


@dataclass
class Load:
    """`users` threads asking streamed questions through the backend's /chat until stopped."""

    port: int
    users: int
    think_s: float
    attempts: list[Attempt] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ask(self) -> Attempt:
        attempt = Attempt(time.monotonic())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", "/chat", json.dumps({"message": "what links these entities?", "stream": True,
                                                      "session_id": f"s{threading.get_ident()}"}),
                         {"content-type": "application/json", "connection": "close"})
            resp = conn.getresponse()
            attempt.accepted_at = time.monotonic()
            if resp.status >= 500:
                resp.read()
                attempt.outcome = "failed"
            else:
                resp.read()
                attempt.outcome = "answered" if resp.status == 200 else "failed"
        except ConnectionRefusedError:
            attempt.outcome = "refused"
        except (http.client.IncompleteRead, ConnectionResetError, BrokenPipeError):
            attempt.outcome = "cut" if attempt.accepted_at is not None else "refused"
        except (OSError, http.client.HTTPException):
            attempt.outcome = "cut" if attempt.accepted_at is not None else "failed"
        finally:
            conn.close()
        attempt.end = time.monotonic()
        return attempt

    def user(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            attempt = self.ask()
            with self.lock:
                self.attempts.append(attempt)
            pause = 0.05 if attempt.outcome == "refused" else self.think_s * rng.uniform(0.5, 1.5)
            self.stop.wait(pause)

    def __enter__(self) -> "Load":
        self.threads = [threading.Thread(target=self.user, args=(i,), daemon=True) for i in range(self.users)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)  # daemon threads: one still reading a long answer is left to end with the process


def figures(attempts: list[Attempt], start: float, end: float) -> dict:
    """An event's figures from the attempts that ended in its window [start, end + 3 s]."""
    window = [a for a in attempts if start <= a.end <= end + 3.0]
    counts = {k: sum(a.outcome == k for a in window) for k in ("answered", "cut", "refused", "failed")}
    # The longest run of time in which no attempt was accepted while some were refused.
    gap, run_start = 0.0, None
    for a in sorted((a for a in attempts if start <= a.start <= end + 3.0), key=lambda a: a.start):
        if a.outcome == "refused" and run_start is None:
            run_start = a.start
        elif a.accepted_at is not None and run_start is not None:
            gap, run_start = max(gap, a.accepted_at - run_start), None
    return {**counts, "gap_s": round(gap, 2)}


def tool_said(line: str) -> dict:
    """The counts in the tool's own line ("rollback: 2 answers cut …, requests refused for 1.4 s"), to set
    beside what the users measured."""
    import re

    cut = re.search(r"(\d+) answers? cut", line)
    refused = re.search(r"requests refused for ([\d.]+) s", line)
    return {"tool_cut": int(cut.group(1)) if cut else None,
            "tool_refused_s": float(refused.group(1)) if refused else 0.0}


def wait_health(url: str, want: str, limit: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        p = get(url, timeout=1)
        if p.ok and isinstance(p.body, dict) and p.body.get("llm_backend") == want:
            return time.monotonic() - start
        time.sleep(0.01)
    raise RuntimeError(f"backend never reported llm_backend={want}")


def prepare(root: Path, settings, quiet: Output) -> None:
    """phases 1–3 and the load test phase4's gates read (vLLM beside production, production on Ollama)."""
    from migrator.bench import run as bench
    from migrator.bench.loadgen import LoadSpec

    for name in ("phase1", "phase2", "phase3"):
        report = api.run_phase(name, root, settings, quiet, options={"no_bench": True} if name == "phase1" else {})
        assert report.ok, (name, [(s.id, s.status, s.message) for s in report.steps])
    bench.run(root, settings, bench.default_target(settings, "vllm"),
              LoadSpec(requests=8, concurrency=2, output_tokens=8), None, record=True)


def one_round(tmp: Path, image: str, users: int, think_s: float, drain_timeout: float) -> dict:
    from migrator.app.harness.model_stub import write_metadata_only
    from migrator.app.rehearse import copy_reference_project

    ports = {k: free_port() for k in ("ollama", "backend", "vllm")}
    root = tmp / f"ref{ports['backend']}"
    project = f"gm-drain-bench-{ports['backend']}"
    copy_reference_project(root, ports["ollama"], ports["backend"], image, project)
    (root / "migrate.yaml").write_text(
        f"project:\n  backend_url: http://127.0.0.1:{ports['backend']}\n"
        f"ollama:\n  url: http://127.0.0.1:{ports['ollama']}\n"
        f"model:\n  id: {root}/model\n  served_name: sim\n  real_weights: false\n"
        f"vllm:\n  runtime: process\n  python: {sys.executable}\n  server_module: migrator.sim.vllm\n"
        f"  port: {ports['vllm']}\n  network_mode: host\n  device: cpu\n  extra_args: [--itl-ms, '40']\n"
        "host:\n  assume_gpu_memory: 119GiB\n  assume_unified: true\n"
        "backend:\n  wait_s: 60\n  chat_path: /chat\n"
        f"deploy:\n  watch_s: 1\n  probe_interval_s: 0.5\n  drain_timeout_s: {drain_timeout:g}\n"
        "gates: []  # the simulators' speed is set for ~2.6 s answers, not to pass the plan's gates\n")
    write_metadata_only(root / "model")
    ollama = process.start_detached([sys.executable, "-m", "migrator.sim.ollama", "--port", str(ports["ollama"]),
                                     "--preload", "--model-size", str(2**30), "--num-parallel", str(users * 2),
                                     "--itl-ms", "40"], tmp / f"ollama-{ports['ollama']}.log", cwd=REPO)
    compose_dir = root / "docker"
    health = f"http://127.0.0.1:{ports['backend']}/health"
    quiet = Output(quiet=True)
    lines: dict[str, str] = {}
    windows: dict[str, tuple[float, float]] = {}
    try:
        assert wait_port(ports["ollama"])
        subprocess.run(["docker", "compose", "up", "-d", "backend"], cwd=compose_dir, check=True,
                       capture_output=True, timeout=120)
        wait_health(health, "ollama")
        start = time.monotonic()  # the backend's own boot: a recreate with nothing changed
        subprocess.run(["docker", "compose", "up", "-d", "--no-deps", "--force-recreate", "backend"],
                       cwd=compose_dir, check=True, capture_output=True, timeout=120)
        boot = wait_health(health, "ollama") + 0.0
        boot_total = time.monotonic() - start
        settings = api.settings_for(root)
        with Load(ports["backend"], users, think_s) as load:
            time.sleep(2)
            prepare(root, settings, quiet)
            for event in EVENTS:
                if event == "switch (no drain)":
                    prepare(root, settings, quiet)
                    settings.deploy.drain_timeout_s, settings.deploy.stop_grace_s = 0.0, 0.0
                t0 = time.monotonic()
                if event.startswith("switch"):
                    report = api.run_phase("phase4", root, settings, quiet)
                    assert report.ok, [(s.id, s.status, s.message) for s in report.steps]
                    backend = next(s for s in report.steps if s.id == "phase4.backend")
                    lines[event] = str(backend.measurements.get("users_saw", backend.message))
                else:
                    rb = api.rollback(root, settings, quiet, wait_s=60, now=event.endswith("--now"))
                    assert rb.exit_code == 0, [a.to_dict() for a in rb.actions]
                    lines[event] = next(a.result for a in rb.actions if a.name == "recreate backend")
                windows[event] = (t0, time.monotonic())
                time.sleep(4)  # steady load after the event: its stragglers end in its window
        out = {"boot_s": round(boot_total, 2), "boot_health_s": round(boot, 2)}
        for event in EVENTS:
            out[event] = {**figures(load.attempts, *windows[event]), **tool_said(lines[event]), "line": lines[event]}
        out["total_answered"] = sum(a.outcome == "answered" for a in load.attempts)
        return out
    finally:
        subprocess.run(["docker", "compose", "-p", project, "-f", "docker-compose.yml", "down", "-t", "1",
                        "-v", "--remove-orphans"], cwd=compose_dir, capture_output=True, timeout=120)
        process.stop(ollama, 3)
        try:
            from migrator.core.ledger import Ledger

            vllm = Ledger(root).read_state()["resources"].get("vllm", {})
            if vllm.get("process"):
                process.stop(process.ProcessHandle.from_dict(vllm["process"]), 3)
        except Exception:  # noqa: BLE001 - clean-up must not hide the round's own error
            pass


def main() -> None:
    import signal

    def terminated(signum, frame):
        raise SystemExit(143)  # SIGTERM (a `timeout` bound): the rounds' clean-up still runs

    signal.signal(signal.SIGTERM, terminated)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--think-s", type=float, default=2.0, help="mean reading time between turns (bench.think_s)")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--budget-s", type=float, default=660.0,
                        help="start no round that would end after this (the medians are over the rounds done)")
    args = parser.parse_args()
    from migrator.app.harness.images import backend_image

    image = backend_image()
    rounds, began = [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gm-drain-bench-") as tmp:
        for i in range(args.rounds):
            if rounds and time.monotonic() - began + (time.monotonic() - began) / len(rounds) > args.budget_s:
                print(f"stopping after {len(rounds)} rounds: another would pass --budget-s {args.budget_s:g}",
                      file=sys.stderr)
                break
            result = one_round(Path(tmp), image, args.users, args.think_s, args.drain_timeout)
            rounds.append(result)
            print(f"round {i + 1} ({time.monotonic() - began:.0f} s): {json.dumps(result)}", file=sys.stderr,
                  flush=True)
    boot = statistics.median(r["boot_s"] for r in rounds)
    print(f"{args.users} users, think {args.think_s:g} s, {len(rounds)} rounds; the backend's own recreate+boot "
          f"{boot:.2f} s median")
    print(f"{'event':<20} {'cut':>4} {'refused':>8} {'failed':>7} {'gap s':>6} {'gap/boot':>9} "
          f"{'tool: cut':>9} {'refused s':>9} {'cut right':>9}")
    for event in EVENTS:
        med = {k: statistics.median(r[event][k] for r in rounds) for k in ("cut", "refused", "failed", "gap_s")}
        said = [r[event]["tool_cut"] for r in rounds if r[event]["tool_cut"] is not None]
        right = sum(r[event]["tool_cut"] == r[event]["cut"] for r in rounds)
        print(f"{event:<20} {med['cut']:>4g} {med['refused']:>8g} {med['failed']:>7g} {med['gap_s']:>6.2f} "
              f"{med['gap_s'] / boot if boot else 0:>9.2f} {statistics.median(said) if said else '-':>9} "
              f"{statistics.median(r[event]['tool_refused_s'] for r in rounds):>9.1f} {right:>7}/{len(rounds)}")
    for event in EVENTS:
        print(f"  {event}: the tool said: {rounds[-1][event]['line'][:220]}")
    cut_drained = sum(r[e]["cut"] for r in rounds for e in EVENTS[:2])
    cut_undrained = sum(r[e]["cut"] for r in rounds for e in EVENTS[2:])
    print(f"streams cut across switch and rollback, all rounds: {cut_drained} with the drain, "
          f"{cut_undrained} without it")


if __name__ == "__main__":
    main()
