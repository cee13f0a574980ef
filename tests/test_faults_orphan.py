"""An interrupted vLLM start (issue 14, item 1): SIGTERM or Ctrl-C during phase1's readiness wait, the re-run
the message suggests, then rollback — never a second vLLM beside the first, none left running, and status
names one of ours that state.json lost. Real subprocesses: the CLI and the vLLM simulator."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from migrator.adapters import process
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger


def _vllm_port(sandbox: Path) -> int:
    return int(next(line.split(":")[1] for line in (sandbox / "migrate.yaml").read_text().splitlines()
                    if line.strip().startswith("port:")))


def _simulators(sandbox: Path) -> list[int]:
    """Every vLLM simulator running for this sandbox (its model lives under it), by pid."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            command = process.cmdline(int(proc_dir.name))
            if "migrator.sim.vllm" in command and str(sandbox) in command and process.alive(int(proc_dir.name)):
                found.append(int(proc_dir.name))
    return sorted(found)


@pytest.fixture
def no_orphans(sandbox):
    """Whatever the test did: every simulator of this sandbox killed at teardown."""
    try:
        yield
    finally:
        for pid in _simulators(sandbox):
            process.stop(process.ProcessHandle(pid, process._start_ticks(pid), [], ""), 2)


def _cli(sandbox: Path, *args: str, slow: str) -> list[str]:
    return [sys.executable, "-m", "migrator.cli.main", "--project", str(sandbox),
            "--set", f"vllm.extra_args={slow}", *args]


def _run(sandbox: Path, *args: str, slow: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(sandbox, *args, slow=slow), capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


def _interrupt_mid_wait(sandbox: Path, sig: int, slow: str, until_listening: bool) -> subprocess.Popen:
    """phase1 as an operator runs it, interrupted while it waits for vLLM to be ready."""
    # Ctrl-C reaches a CLI at a terminal; CI may run the suite as a background job, where SIGINT is ignored
    # and that is inherited: the CLI gets the terminal's default back.
    proc = subprocess.Popen(_cli(sandbox, "phase1", "--no-bench", slow=slow), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        started = _simulators(sandbox)
        if started and (not until_listening or process.listening_pid(_vllm_port(sandbox)) in started):
            break
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
@pytest.mark.parametrize("slow, listening", [("--startup-s 4", False), ("--startup-s 0.3 --loading-s 4", True)],
                         ids=["port-refused", "loading-503"])
def test_interrupted_start_then_rerun_adopts_the_running_vllm_and_rollback_stops_it(
        sandbox, no_orphans, cli, sig, slow, listening):
    port = _vllm_port(sandbox)
    interrupted = _interrupt_mid_wait(sandbox, sig, slow, listening)
    assert interrupted.returncode == ExitCode.INTERRUPTED
    first = _simulators(sandbox)
    assert len(first) == 1  # still starting: vLLM outlives the CLI by design (it runs detached)
    state = Ledger(sandbox).read_state()
    assert state["resources"]["vllm"]["process"]["pid"] == first[0]  # recorded before the wait
    assert json.loads((sandbox / ".graphrag-migrate" / "vllm.pid").read_text())["pid"] == first[0]

    rerun = _run(sandbox, "phase1", "--no-bench", slow=slow)
    assert rerun.returncode == ExitCode.OK, rerun.stderr[-2000:]
    assert _simulators(sandbox) == first  # the same one, adopted: no second vLLM beside it
    assert "waiting for it instead of starting another" in rerun.stderr
    assert Ledger(sandbox).read_state()["resources"]["vllm"]["process"]["pid"] == first[0]
    assert _run(sandbox, "status", slow=slow).returncode == ExitCode.OK

    rollback = _run(sandbox, "--json", "rollback", "--wait", "5", slow=slow)
    assert rollback.returncode == ExitCode.OK, rollback.stdout
    assert _simulators(sandbox) == [] and process.listening_pid(port) is None
    assert not (sandbox / ".graphrag-migrate" / "vllm.pid").exists()
    assert _run(sandbox, "status", slow=slow).returncode == ExitCode.OK


def test_rerun_with_other_settings_stops_the_interrupted_vllm_before_starting_anew(sandbox, no_orphans):
    interrupted = _interrupt_mid_wait(sandbox, signal.SIGTERM, "--startup-s 4", False)
    assert interrupted.returncode == ExitCode.INTERRUPTED
    first = _simulators(sandbox)
    rerun = _run(sandbox, "phase1", "--no-bench", slow="--startup-s 0.2")  # another command line
    assert rerun.returncode == ExitCode.OK, rerun.stderr[-2000:]
    second = _simulators(sandbox)
    assert len(second) == 1 and second != first
    assert f"vLLM process {first[0]}" in rerun.stderr and "stopped" in rerun.stderr
    assert _run(sandbox, "rollback", "--wait", "5", slow="--startup-s 0.2").returncode == ExitCode.OK
    assert _simulators(sandbox) == []


@pytest.mark.parametrize("lost", ["state record", "state record and pidfile"])
def test_status_names_a_vllm_of_ours_state_json_lost_and_rollback_stops_it(sandbox, no_orphans, lost):
    """kill -9 between the start and its record (or a state.json edited by hand): the vLLM still carries
    the project's marker; status exits 1 naming it, rollback finds and stops it."""
    port = _vllm_port(sandbox)
    assert _run(sandbox, "phase1", "--no-bench", slow="--startup-s 0").returncode == ExitCode.OK
    pid = _simulators(sandbox)[0]
    ledger = Ledger(sandbox)
    ledger.load()
    ledger.state["resources"].pop("vllm")
    ledger.save()
    if lost.endswith("pidfile"):
        (sandbox / ".graphrag-migrate" / "vllm.pid").unlink()
    status = _run(sandbox, "--json", "status", slow="--startup-s 0")
    assert status.returncode == ExitCode.CHECK_FAILED, status.stdout
    problems = json.loads(status.stdout)["problems"]
    assert any(f"vLLM process {pid}" in p and "graphrag-migrate rollback" in p for p in problems), problems
    rollback = _run(sandbox, "--json", "rollback", "--wait", "5", slow="--startup-s 0")
    assert rollback.returncode == ExitCode.OK, rollback.stdout
    stop = next(a for a in json.loads(rollback.stdout)["actions"] if a["name"] == "stop vLLM")
    assert f"process {pid}" in stop["result"] and "not in state" in stop["result"]
    assert _simulators(sandbox) == [] and process.listening_pid(port) is None


def test_a_pidfile_naming_a_reused_pid_is_never_signalled(sandbox, no_orphans):
    """The pidfile's pid now belongs to another program (its command line is not that vLLM): left alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state_dir = sandbox / ".graphrag-migrate"
        state_dir.mkdir(exist_ok=True)
        (state_dir / "vllm.pid").write_text(json.dumps({
            "pid": other.pid, "start_ticks": process._start_ticks(other.pid), "port": _vllm_port(sandbox),
            "command": [sys.executable, "-m", "migrator.sim.vllm"]}))
        assert _run(sandbox, "status", slow="--startup-s 0").returncode == ExitCode.OK
        rollback = _run(sandbox, "--json", "rollback", "--wait", "5", slow="--startup-s 0")
        assert rollback.returncode == ExitCode.OK, rollback.stdout
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()


# ---- the docker runtime, with an autospec'd Docker adapter (no daemon is started here) -------------------
def _docker_ctx(tmp_path, containers: dict):
    """A context on vllm.runtime docker whose Docker adapter knows `containers` (name -> ContainerState)."""
    from unittest.mock import create_autospec

    from migrator.adapters.docker import ContainerState, DockerRuntime
    from migrator.adapters.runtime.docker import DockerVllm
    from migrator.core.config import Settings
    from migrator.core.engine import Context
    from migrator.core.ports import Wiring

    settings = Settings()
    settings.vllm.runtime = "docker"
    docker = create_autospec(DockerRuntime, instance=True)
    docker.container.side_effect = lambda name: containers.get(name, ContainerState(name, False))
    docker.labelled.side_effect = lambda labels: [c for c in containers.values() if c.id.startswith("ours")]
    docker.stop.return_value = "stopped"
    docker.run.side_effect = lambda **spec: ContainerState(spec["name"], True, "running", "new1", spec["image"])
    (tmp_path / "p").mkdir(exist_ok=True)
    ctx = Context(tmp_path / "p", settings, Ledger(tmp_path / "p"), wiring=Wiring(vllm=DockerVllm(),
                                                                                    docker=lambda: docker))
    return ctx, docker, settings


def test_docker_rerun_adopts_the_running_container_of_the_interrupted_start(tmp_path):
    from migrator.adapters.docker import ContainerState

    from migrator.core.config import Settings

    name, image = Settings().vllm.container_name, Settings().vllm.image
    ctx, docker, _ = _docker_ctx(tmp_path, {name: ContainerState(name, True, "running", "ours1", image, "starting")})
    ctx.resources["vllm"] = {"runtime": "docker", "container": name}  # what the interrupted run recorded
    record = {"runtime": "docker"}
    ctx.vllm_runtime.start(ctx, record)
    docker.run.assert_not_called()
    docker.remove.assert_not_called()
    assert record["adopted"] and record["container_id"] == "ours1"
    assert Ledger(ctx.project).read_state()["resources"]["vllm"]["container"] == name  # saved before the wait


def test_docker_start_labels_the_container_and_rollback_stops_ours_under_another_name(tmp_path):
    from migrator.adapters.docker import ContainerState

    old = ContainerState("vllm-old-name", True, "running", "ours2", "img")
    ctx, docker, settings = _docker_ctx(tmp_path, {"vllm-old-name": old})
    record = {"runtime": "docker"}
    ctx.vllm_runtime.start(ctx, record)
    spec = docker.run.call_args.kwargs
    assert spec["labels"]["org.graphrag-migrate.state-dir"] == str(ctx.ledger.root)
    docker.stop.assert_any_call("vllm-old-name", settings.vllm.stop_timeout_s)  # stopped before starting anew
    docker.stop.reset_mock()
    lines = ctx.vllm_runtime.stop(ctx, record, True)
    assert lines[0].startswith(f"container {settings.vllm.container_name}:")
    assert any("vllm-old-name (found by its label, not in state)" in line for line in lines)
