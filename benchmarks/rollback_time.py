"""Time from `rollback` start to the backend answering via Ollama (issue 7's target: ≤ 5 s median).

Each round builds the rehearsal sandbox (Ollama stand-in, sandbox backend that re-reads the env file,
so no backend boot time is included), migrates it with phase1, phase2, phase3, a small load test and phase4
(the gated switch, a short watch; vLLM simulator as a process), then times rollback while a separate poller watches the backend's /health for llm_backend=ollama.

    python3 benchmarks/rollback_time.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrator.app import api  # noqa: E402
from migrator.adapters import process  # noqa: E402
from migrator.adapters.http import get  # noqa: E402
from migrator.cli.output import Output  # noqa: E402
from migrator.app.rehearse import make_sandbox, start_sandbox_servers  # noqa: E402
from migrator.adapters.net import free_port  # noqa: E402


def migrate(root: Path, settings, quiet: Output, **phase1_options) -> None:
    """Production on vLLM, as an operator gets there: phase1, phase2, phase3, the load test the gates read, phase4."""
    from migrator.bench import run as bench
    from migrator.bench.loadgen import LoadSpec

    settings.deploy.watch_s, settings.deploy.probe_interval_s = 0.5, 0.25
    api.run_phase("phase1", root, settings, quiet, options={"no_bench": True, **phase1_options})
    api.run_phase("phase2", root, settings, quiet)  # phase4 switches only after phases 1–3
    api.run_phase("phase3", root, settings, quiet)
    bench.run(root, settings, bench.default_target(settings, "vllm"),
              LoadSpec(requests=8, concurrency=2, output_tokens=8), None, record=True)
    api.run_phase("phase4", root, settings, quiet)


def one_round(tmp: Path) -> tuple[float, float]:
    ports = {k: free_port() for k in ("ollama", "backend", "vllm")}
    root = tmp / f"p{time.monotonic_ns()}"
    make_sandbox(root, ports["ollama"], ports["backend"], ports["vllm"])
    servers: list = []
    try:
        assert start_sandbox_servers(root, ports["ollama"], ports["backend"], tmp, servers)
        quiet = Output(quiet=True)
        settings = api.settings_for(root)
        migrate(root, settings, quiet, unload_ollama=True)
        health = f"http://127.0.0.1:{ports['backend']}/health"
        assert get(health).body["llm_backend"] == "vllm"
        seen: list[float] = []

        def poll(start: float) -> None:
            while time.perf_counter() - start < 30:
                p = get(health, timeout=1)
                if p.ok and p.body.get("llm_backend") == "ollama":
                    seen.append(time.perf_counter() - start)
                    return
                time.sleep(0.005)

        start = time.perf_counter()
        poller = threading.Thread(target=poll, args=(start,))
        poller.start()
        report = api.rollback(root, settings, quiet, wait_s=30)
        total = time.perf_counter() - start
        poller.join()
        assert report.exit_code == 0, [a.to_dict() for a in report.actions]
        return seen[0], total
    finally:
        for s in servers:
            process.stop(s, 3)


def wait_backend(url: str, want: str, start: float, limit: float = 120) -> float:
    while time.perf_counter() - start < limit:
        p = get(url, timeout=1)
        if p.ok and p.body.get("llm_backend") == want:
            return time.perf_counter() - start
        time.sleep(0.01)
    raise RuntimeError(f"backend never reported {want}")


def compose_round(tmp: Path, backend_image: str) -> tuple[float, float]:
    """The reference backend under real compose: rollback must recreate its container. Returns
    (rollback start → answering via Ollama, the backend's own recreate-and-boot time measured alone)."""
    import subprocess

    from migrator.app.rehearse import copy_reference_project

    root = tmp / f"ref{time.monotonic_ns()}"
    ports = {k: free_port() for k in ("ollama", "backend", "vllm")}
    copy_reference_project(root, ports["ollama"], ports["backend"], backend_image, f"gm-bench-{ports['backend']}")
    (root / "migrate.yaml").write_text(
        f"project:\n  backend_url: http://127.0.0.1:{ports['backend']}\n"
        f"ollama:\n  url: http://127.0.0.1:{ports['ollama']}\n"
        f"model:\n  id: {root}/model\n  served_name: sim\n  real_weights: false\n"
        f"vllm:\n  runtime: process\n  python: {sys.executable}\n  server_module: migrator.sim.vllm\n"
        f"  port: {ports['vllm']}\n  network_mode: host\n  device: cpu\n"
        "host:\n  assume_gpu_memory: 119GiB\n  assume_unified: true\n")
    from migrator.app.harness.model_stub import write_metadata_only

    write_metadata_only(root / "model")
    ollama = process.start_detached([sys.executable, "-m", "migrator.sim.ollama", "--port", str(ports["ollama"]),
                                     "--preload", "--model-size", str(2**30)], tmp / "ollama.log", cwd=REPO)
    compose = ["docker", "compose"]
    health = f"http://127.0.0.1:{ports['backend']}/health"
    try:
        subprocess.run([*compose, "up", "-d", "backend"], cwd=root / "docker", check=True, capture_output=True)
        wait_backend(health, "ollama", time.perf_counter())
        # The backend's own boot: a recreate with nothing changed.
        start = time.perf_counter()
        subprocess.run([*compose, "up", "-d", "--no-deps", "--force-recreate", "backend"], cwd=root / "docker",
                       check=True, capture_output=True)
        boot = wait_backend(health, "ollama", start)
        quiet = Output(quiet=True)
        settings = api.settings_for(root)
        migrate(root, settings, quiet)
        assert get(health).body["llm_backend"] == "vllm"
        start = time.perf_counter()
        result: list[float] = []
        poller = threading.Thread(target=lambda: result.append(wait_backend(health, "ollama", start)))
        poller.start()
        report = api.rollback(root, settings, quiet, wait_s=60)
        poller.join()
        assert report.exit_code == 0, [a.to_dict() for a in report.actions]
        return result[0], boot
    finally:
        subprocess.run([*compose, "-f", "docker-compose.yml", "down", "-t", "1", "--remove-orphans"],
                       cwd=root / "docker", capture_output=True)
        process.stop(ollama, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compose", action="store_true", help="also the reference backend under real compose")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [one_round(Path(tmp)) for _ in range(args.rounds)]
        if args.compose:
            from migrator.app.harness.images import backend_image

            image = backend_image()
            compose_rounds = [compose_round(Path(tmp), image) for _ in range(args.rounds)]
            answer = statistics.median(r[0] for r in compose_rounds)
            boot = statistics.median(r[1] for r in compose_rounds)
            print(f"compose backend: rollback start → answering via Ollama {answer * 1000:.0f} ms median, of which "
                  f"the backend's own recreate+boot {boot * 1000:.0f} ms; excluding it: {(answer - boot) * 1000:.0f} ms; "
                  f"target 5000 ms; ratio {(answer - boot) / 5:.3f}")
    answering = statistics.median(r[0] for r in rounds)
    complete = statistics.median(r[1] for r in rounds)
    print(f"rollback start → backend answering via Ollama: {answering * 1000:.0f} ms median over {args.rounds} "
          f"rounds; target 5000 ms; ratio {answering / 5:.3f}")
    print(f"whole rollback (stop vLLM, reload Ollama's model, probes): {complete * 1000:.0f} ms median")


if __name__ == "__main__":
    main()
