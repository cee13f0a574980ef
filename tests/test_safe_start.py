"""Safe starts on unified memory (issue #15 §2): on a GB10 read from this host (a stand-in nvidia-smi that
reports no memory, a /proc/meminfo the test writes, the Ollama stand-in reporting size_vram 0) phase1 starts
the vLLM simulator through the process runtime with --kv-cache-memory-bytes from the fit verdict and a
bounded --max-num-seqs, stops it when MemAvailable falls below the floor while it starts, and records the
readiness proof that lets phase3 render `restart: unless-stopped` (`"no"` before, and after a change);
the image's entrypoint is read through the Docker port (an autospec'd fake here)."""

from __future__ import annotations

import json
import threading
import time
from unittest.mock import create_autospec

import pytest

from migrator.adapters import gpu, process, vllm as vllm_launch
from migrator.core.config import Settings
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger
from test_fit import fake_nvidia_smi

GiB = 2**30


def write_meminfo(path, available_gib: float, total_gib: float = 119) -> None:
    path.write_text(f"MemTotal:       {int(total_gib * 2**20)} kB\nMemFree:        {int(available_gib * 2**19)} kB\n"
                    f"MemAvailable:   {int(available_gib * 2**20)} kB\n")


@pytest.fixture
def gb10(sandbox, servers, tmp_path, monkeypatch):
    """The sandbox as a GB10 read from this host: nvidia-smi without memory figures, 100 GiB MemAvailable
    of 119 GiB, Ollama's 20 GiB chat model loaded with size_vram 0. Returns the CLI arguments."""
    fake_nvidia_smi(tmp_path, "NVIDIA GB10, 580.95.05, [N/A], [N/A], 12.1", monkeypatch)
    meminfo = tmp_path / "meminfo"
    write_meminfo(meminfo, 100)
    monkeypatch.setattr(gpu, "MEMINFO_PATH", str(meminfo))
    ollama = servers.start("migrator.sim.ollama", "--preload", "--model-size", str(20 * GiB), "--size-vram", "0")
    return meminfo, ["--project", str(sandbox), "--set", "host.assume_gpu_memory=", "--set", "vllm.device=gpu",
                     "--set", f"ollama.url=http://127.0.0.1:{ollama}"]


def flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_vllm_args_pass_limits_but_not_chunked_prefill_and_extra_args_win():
    s = Settings()
    plain = vllm_launch.vllm_args(s, "m")
    assert "--enable-chunked-prefill" not in plain and "--kv-cache-memory-bytes" not in plain
    assert "--max-num-seqs" not in plain  # not on unified memory: vLLM's default
    s.vllm.enable_chunked_prefill = True
    assert "--enable-chunked-prefill" in vllm_launch.vllm_args(s, "m")
    limited = vllm_launch.vllm_args(s, "m", limits={"kv_cache_memory_bytes": 5 * GiB, "max_num_seqs": 11})
    assert flag(limited, "--kv-cache-memory-bytes") == str(5 * GiB) and flag(limited, "--max-num-seqs") == "11"
    s.vllm.extra_args = ["--max-num-seqs=4", "--kv-cache-memory-bytes", "123"]
    own = vllm_launch.vllm_args(s, "m", limits={"kv_cache_memory_bytes": 5 * GiB, "max_num_seqs": 11})
    assert own.count("--kv-cache-memory-bytes") == 1 and flag(own, "--kv-cache-memory-bytes") == "123"
    assert "--max-num-seqs" not in own and "--max-num-seqs=4" in own
    s.vllm.extra_args, s.vllm.max_num_seqs = [], 6  # set in migrate.yaml: passed on any host
    assert flag(vllm_launch.vllm_args(s, "m"), "--max-num-seqs") == "6"


def test_capacity_target_follows_the_real_time_users_gate():
    from migrator.core.config import Gate
    from phases.phase1 import DEFAULT_MAX_NUM_SEQS, capacity_target

    s = Settings()
    assert capacity_target(s) == 11  # the plan's "> 10 real-time users"
    s.gates = [Gate("users", "realtime_users", ">=", 4.5)]
    assert capacity_target(s) == 5
    s.gates = []
    assert capacity_target(s) == DEFAULT_MAX_NUM_SEQS


def test_gb10_start_gets_the_verdicts_kv_budget_and_a_bounded_max_num_seqs(gb10, sandbox, cli):
    _meminfo, args = gb10
    result = cli(*args, "--json", "phase1", "--no-bench")
    assert result.exit_code == 0, result.stdout
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    fit = steps["phase1.fit"]["measurements"]
    assert fit["unified_memory"] and fit["usable_now_gib"] == pytest.approx(92.0)  # 100 − 8: Ollama not twice
    state = Ledger(sandbox).read_state()
    command = state["resources"]["vllm"]["command"]
    assert int(flag(command, "--kv-cache-memory-bytes")) == fit["kv_budget_bytes"]
    assert fit["kv_budget_bytes"] == pytest.approx((0.76 * 119 - 61.03 - 4.55) * GiB, rel=0.01)
    assert flag(command, "--max-num-seqs") == "11"
    assert "--enable-chunked-prefill" not in command
    # The simulator was started with them: its KV cache is max_num_seqs × max_model_len.
    metrics = vllm_launch.actual_figures(_settings(sandbox))
    assert metrics["kv_cache_size_tokens"] == 11 * 8192
    assert state["resources"]["vllm"]["startup_memory"]["lowest_available_gib"] == pytest.approx(100.0)
    assert state["resources"][vllm_launch.READINESS_PROVEN]["fingerprint"]
    # A re-run recognises the vLLM it started (the same limits) instead of starting another.
    again = cli(*args, "--json", "phase1", "--no-bench")
    assert again.exit_code == 0 and Ledger(sandbox).read_state()["resources"]["vllm"]["command"] == command


def _settings(root):
    from migrator.app.api import context

    return context(root).settings


def squeeze_once_started(sandbox, meminfo, available_gib: float) -> threading.Thread:
    """vLLM's profiling eats the pool: a second after the vLLM process exists, MemAvailable drops."""
    def squeeze():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if Ledger(sandbox).read_state()["resources"].get("vllm", {}).get("process"):
                    break
            except Exception:  # state.json being replaced
                pass
            time.sleep(0.1)
        time.sleep(1.0)
        write_meminfo(meminfo, available_gib)

    thread = threading.Thread(target=squeeze)
    thread.start()
    return thread


def test_memory_floor_crossed_while_vllm_starts_stops_it_and_says_so(gb10, sandbox, cli):
    meminfo, args = gb10
    thread = squeeze_once_started(sandbox, meminfo, 2.5)
    started = time.monotonic()
    result = cli(*args, "--json", "--set", "vllm.extra_args=--loading-s 60", "phase1", "--no-bench")
    thread.join()
    assert time.monotonic() - started < 30  # stopped at the floor, not after the 60 s of loading
    assert result.exit_code == ExitCode.CHECK_FAILED, result.stdout
    doc = json.loads(result.stdout)
    assert "host memory floor reached during start-up" in doc["error"] and "2.5 GiB < 4.0 GiB" in doc["error"]
    assert "--unload-ollama" in doc["fix"]
    state = Ledger(sandbox).read_state()
    assert state["phases"]["phase1"]["failed_step"] == "phase1.start-vllm"
    assert "vllm" not in state["resources"] and vllm_launch.READINESS_PROVEN not in state["resources"]
    measured = state["phases"]["phase1"]["steps"]["phase1.start-vllm"]["measurements"]
    assert measured["floor_gib"] == 4.0 and measured["lowest_available_gib"] == pytest.approx(2.5)
    # The simulator is gone: nothing of ours holds the port.
    assert not vllm_launch.port_in_use("127.0.0.1", _settings(sandbox).vllm.port)
    from migrator.adapters.runtime.process import ours

    assert ours(_settings(sandbox), Ledger(sandbox).root, {}) == []


def test_no_watchdog_with_an_empty_floor(gb10, sandbox, cli):
    meminfo, args = gb10
    thread = squeeze_once_started(sandbox, meminfo, 2.5)
    result = cli(*args, "--json", "--set", "vllm.startup_memory_floor=", "--set", "vllm.extra_args=--loading-s 3",
                 "phase1", "--no-bench")
    thread.join()
    assert result.exit_code == 0, result.stdout
    assert "startup_memory" not in Ledger(sandbox).read_state()["resources"]["vllm"]


def test_restart_is_no_until_readiness_passed_with_these_settings_on_this_host(sandbox, cli, monkeypatch):
    from migrator.app.api import context
    from phases.phase3 import render_vllm_service

    def rendered(**vllm) -> str:
        ctx = context(sandbox)
        ctx.ledger.load()
        ctx.settings.vllm.runtime = "docker"
        for key, value in vllm.items():
            setattr(ctx.settings.vllm, key, value)
        return render_vllm_service(ctx)

    before = rendered()
    assert 'restart: "no"' in before and 'restart: "unless-stopped"' not in before
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    assert 'restart: "unless-stopped"' in rendered()
    changed = rendered(max_model_len=4096)  # another setting: not proven yet
    assert 'restart: "no"' in changed
    ctx = context(sandbox)
    ctx.ledger.load()
    assert vllm_launch.restart_policy(ctx) == "unless-stopped"
    monkeypatch.setattr(vllm_launch, "host_id", lambda: "another-machine")  # the state copied to another box
    assert vllm_launch.restart_policy(ctx) == "no"


# ---- the image's entrypoint, through the Docker port ----------------------------------------------------
def fake_docker(entrypoint):
    from migrator.adapters.docker import DockerRuntime

    docker = create_autospec(DockerRuntime, instance=True)
    docker.image_entrypoint.return_value = entrypoint
    return docker


@pytest.mark.parametrize("image, entrypoint, prefixed, inspected", [
    ("nvcr.io/nvidia/vllm:25.09-py3", ["/opt/nvidia/nvidia_entrypoint.sh"], True, True),  # NGC: runs the command
    ("registry.local/vllm-cpu:1", ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"], False, True),
    ("registry.local/custom:1", [], True, True),              # no entrypoint: the command must be vllm serve
    ("nvcr.io/nvidia/vllm:25.09-py3", None, True, True),       # not pulled yet: known by its name
    ("registry.local/custom:1", None, False, True),           # not pulled, unknown: the image's own
    ("vllm/vllm-openai:v0.32.0", None, False, False),          # vLLM's own images: nothing to ask
])
def test_the_command_follows_the_images_entrypoint(tmp_path, image, entrypoint, prefixed, inspected):
    from migrator.adapters.runtime.docker import DockerVllm, vllm_container
    from migrator.app import api

    settings = Settings()
    settings.vllm.image = image
    ctx = api.context(tmp_path, settings)
    ctx._docker = fake_docker(entrypoint)
    command = vllm_container(ctx)["command"]
    assert command[:3] == (["vllm", "serve", "--model"] if prefixed else ["--model", settings.model.id, "--served-model-name"])
    assert ctx._docker.image_entrypoint.called is inspected
    assert vllm_container(ctx)["restart_policy"] == {"Name": "no"}  # never ready here yet
    assert ("vllm serve --model" in DockerVllm().start_plan(ctx)[0].replace('", "', " ")) is prefixed


def test_an_explicit_entrypoint_setting_is_obeyed_without_asking_docker(tmp_path):
    from migrator.adapters.runtime.docker import vllm_container
    from migrator.app import api

    for choice, start in (("image", ["--model"]), ("python3 -m vllm.entrypoints.openai.api_server",
                                                   ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model"])):
        settings = Settings()
        settings.vllm.image, settings.vllm.entrypoint = "nvcr.io/nvidia/vllm:25.09-py3", choice
        ctx = api.context(tmp_path, settings)
        ctx._docker = fake_docker(["/opt/nvidia/nvidia_entrypoint.sh"])
        assert vllm_container(ctx)["command"][:len(start)] == start
        assert not ctx._docker.image_entrypoint.called


def test_image_entrypoint_reads_docker_image_inspect():
    """The adapter's own reading of `docker image inspect` (Config.Entrypoint), on a stand-in SDK client."""
    import docker.errors

    from migrator.adapters.docker import DockerRuntime

    class Images:
        def get(self, name):
            if name == "absent:1":
                raise docker.errors.ImageNotFound("no such image")
            entry = {"ngc:1": ["/opt/nvidia/nvidia_entrypoint.sh"], "bare:1": None}[name]
            return type("Image", (), {"attrs": {"Config": {"Entrypoint": entry, "Cmd": ["bash"]}}})()

    runtime = DockerRuntime()
    runtime._client = type("Client", (), {"images": Images()})()
    assert runtime.image_entrypoint("ngc:1") == ["/opt/nvidia/nvidia_entrypoint.sh"]
    assert runtime.image_entrypoint("bare:1") == []
    assert runtime.image_entrypoint("absent:1") is None


def test_phase3_recreates_a_compose_vllm_still_on_restart_no_once_its_settings_are_proven(tmp_path):
    """vLLM first became ready under compose (settings phase1 never started): phase3 rendered restart "no";
    once proven, the next phase3 run finds the container still on "no" and brings it up again."""
    from types import SimpleNamespace

    from migrator.adapters.docker import ContainerState
    from migrator.app import api
    from phases.phase3 import VllmUnderCompose

    settings = Settings()
    settings.vllm.runtime = "docker"
    ctx = api.context(tmp_path, settings)

    def on(restart: str):
        container = SimpleNamespace(labels={"com.docker.compose.service": settings.vllm.service_name},
                                    attrs={"HostConfig": {"RestartPolicy": {"Name": restart}}})
        return SimpleNamespace(container=lambda name: ContainerState(name, True, "running"),
                               client=SimpleNamespace(containers=SimpleNamespace(get=lambda name: container)))

    ctx._docker = on("no")
    assert "not answering" in VllmUnderCompose().check(ctx).message  # not proven: "no" is right
    vllm_launch.prove_readiness(ctx, "test")
    stale = VllmUnderCompose().check(ctx)
    assert not stale.ok and 'restart "no"' in stale.message
    ctx._docker = on("unless-stopped")
    assert "not answering" in VllmUnderCompose().check(ctx).message
