"""The memory-fit verdict and the GPU preflight, with the plan's real model numbers."""

import json
import os
import stat
from pathlib import Path

import pytest

from migrator.core import fit
from migrator.adapters import gpu
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger
from migrator.app.harness.model_stub import write_metadata_only
from migrator.app.harness.tiny_model import build as build_tiny

GiB = 2**30


@pytest.fixture(scope="module")
def qwen32b(tmp_path_factory):
    return fit.read_local(write_metadata_only(tmp_path_factory.mktemp("q") / "Qwen2.5-32B-Instruct"))


def test_exact_weight_bytes_and_kv_per_token_from_headers(qwen32b):
    assert qwen32b.name == "Qwen/Qwen2.5-32B-Instruct"
    assert qwen32b.parameters == 32_763_876_352 and qwen32b.weight_bytes == 2 * 32_763_876_352
    assert (qwen32b.layers, qwen32b.kv_heads, qwen32b.head_dim) == (64, 8, 128)
    assert qwen32b.kv_bytes_per_token_bf16 == 256 * 1024  # 2 GiB per 8K-token sequence


def test_plan_defaults_on_26_gib_do_not_fit_and_name_the_awq_build(qwen32b):
    v = fit.assess(qwen32b, fit.Budget(26 * GiB, 26 * GiB, unified=False), 0.9, 8192)
    assert v.verdict == "does not fit"
    assert "61.0 GiB" in v.reasons[0]
    assert any("Qwen/Qwen2.5-32B-Instruct-AWQ" in a and "awq_marlin" in a for a in v.advice)
    assert v.figures["budget_gib"] == pytest.approx(23.4, abs=0.01)


def test_unified_memory_budget_subtracts_headroom_and_credits_what_unloading_frees(qwen32b):
    # MemAvailable (100 GiB) already excludes Ollama's 20 GiB: it is not subtracted a second time.
    budget = fit.Budget(119 * GiB, 100 * GiB, unified=True, held_by_ollama=20 * GiB)
    v = fit.assess(qwen32b, budget, 0.9, 8192)
    assert v.figures["usable_now_gib"] == pytest.approx(92.0)  # 100 − 8 headroom
    assert v.verdict == "fits with changes"
    assert v.figures["safe_gpu_memory_utilization"] <= 92 / 119
    assert any("--unload-ollama" in a for a in v.advice)
    unloaded = fit.assess(qwen32b, budget, 0.9, 8192, may_unload_ollama=True)
    assert unloaded.figures["usable_now_gib"] == pytest.approx(112.0)  # what unloading frees comes back
    assert unloaded.figures["ollama_freed_gib"] == pytest.approx(20.0) and unloaded.verdict == "fits"


def _meminfo(path: Path, total_gib: float, available_gib: float) -> None:
    path.write_text(f"MemTotal:       {int(total_gib * 2**20)} kB\nMemFree:        1024 kB\n"
                    f"MemAvailable:   {int(available_gib * 2**20)} kB\nBuffers:        0 kB\n")


def test_gb10_fit_from_meminfo_and_api_ps_counts_ollama_once_by_its_size(qwen32b, tmp_path, monkeypatch, servers):
    """GB10: nvidia-smi has no memory figures, MemAvailable already excludes Ollama's model, and /api/ps
    says size_vram 0 for it — its `size` is what unloading gives back."""
    from migrator.app import api
    from migrator.core.config import load_settings
    from phases import phase1

    fake_nvidia_smi(tmp_path, "NVIDIA GB10, 580.95.05, [N/A], [N/A], 12.1", monkeypatch)
    _meminfo(tmp_path / "meminfo", 119, 67)
    monkeypatch.setattr(gpu, "MEMINFO_PATH", str(tmp_path / "meminfo"))
    port = servers.start("migrator.sim.ollama", "--preload", "--model-size", str(20 * GiB), "--size-vram", "0")
    ctx = api.context(tmp_path, load_settings(None, environ={}, overrides={"ollama.url": f"http://127.0.0.1:{port}"}))
    from migrator.adapters.http import OllamaServer

    ps = OllamaServer(f"http://127.0.0.1:{port}").loaded().body["models"]
    assert [(m["size"], m["size_vram"]) for m in ps] == [(20 * GiB, 0)]  # as GB10's Ollama reports it
    budget = phase1._budget(ctx)
    assert (budget.total_bytes, budget.available_bytes, budget.unified) == (119 * GiB, 67 * GiB, True)
    assert budget.held_by_ollama == 20 * GiB  # its size, not the 0 of size_vram
    kept = fit.assess(qwen32b, budget, 0.9, 8192)
    assert kept.figures["usable_now_gib"] == pytest.approx(59.0)  # 67 − 8, not 67 − 8 − 20
    assert kept.verdict == "does not fit"  # 61 GiB of bf16 weights
    freed = fit.assess(qwen32b, budget, 0.9, 8192, may_unload_ollama=True)
    assert freed.figures["usable_now_gib"] == pytest.approx(79.0) and freed.verdict == "fits with changes"
    # And the unload step sees the model as loaded although size_vram is 0.
    ctx.options["unload_ollama"] = True
    assert not phase1.UnloadOllama().check(ctx).ok


def test_an_assumed_size_is_the_whole_device_so_ollama_is_taken_out_once(qwen32b, tmp_path, servers):
    from migrator.app import api
    from migrator.core.config import load_settings
    from phases import phase1

    port = servers.start("migrator.sim.ollama", "--preload", "--model-size", str(20 * GiB))
    ctx = api.context(tmp_path, load_settings(None, environ={}, overrides={
        "ollama.url": f"http://127.0.0.1:{port}", "host.assume_gpu_memory": "119GiB", "host.assume_unified": "true"}))
    budget = phase1._budget(ctx)
    assert budget.available_bytes == 99 * GiB and budget.held_by_ollama == 20 * GiB
    assert fit.assess(qwen32b, budget, 0.9, 8192).figures["usable_now_gib"] == pytest.approx(91.0)
    assert fit.assess(qwen32b, budget, 0.9, 8192, may_unload_ollama=True).figures["usable_now_gib"] == pytest.approx(111.0)


def test_kv_too_small_suggests_a_max_model_len_that_fits(qwen32b):
    # 80 GiB GPU at 0.9 = 72 GiB; 61 GiB weights + 4.6 GiB overhead leave ~6.4 GiB = ~26K tokens.
    v = fit.assess(qwen32b, fit.Budget(80 * GiB, 80 * GiB, False), 0.9, 32768)
    assert v.verdict == "fits with changes"
    longest = int(v.advice[0].split("to ")[1].split()[0])
    assert 16384 < longest < 32768 and longest * 256 * 1024 <= (72 - 61.03 - 4.55) * GiB
    assert any("kv-cache-dtype fp8" in a for a in v.advice)
    fp8 = fit.assess(qwen32b, fit.Budget(80 * GiB, 80 * GiB, False), 0.9, 32768, kv_cache_dtype="fp8")
    assert fp8.verdict == "fits"


def test_tiny_model_read_from_disk(tmp_path):
    m = fit.read_local(build_tiny(tmp_path / "tiny"))
    assert m.layers == 2 and m.kv_heads == 1 and m.head_dim == 64
    assert m.weight_bytes == 4 * m.parameters  # float32


def fake_nvidia_smi(tmp_path: Path, csv: str, monkeypatch) -> None:
    """A stand-in for nvidia-smi (no NVIDIA driver here) printing output recorded from real parts."""
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"""#!/bin/sh
case "$1" in --query-gpu=*) printf '%s\\n' '{csv}';; *) echo '| NVIDIA-SMI 580.95  Driver Version: 580.95  CUDA Version: 13.0 |';; esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")


def test_gb10_memory_not_supported_means_unified(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, "NVIDIA GB10, 580.95.05, [N/A], [N/A], 12.1", monkeypatch)
    report = gpu.query()
    assert report.cuda_version == "13.0"
    g = report.gpus[0]
    assert g.unified and not g.warning and g.total_bytes is None and g.compute_capability == "12.1"


def test_unknown_part_without_memory_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, "Mystery GPU X, 1.0, [Not Supported], [Not Supported], 9.0", monkeypatch)
    g = gpu.query().gpus[0]
    assert g.unified and "does not report its memory" in g.warning


def test_discrete_gpu_memory_parsed(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, "NVIDIA RTX 6000 Ada Generation, 550.54, 49140, 48500, 8.9", monkeypatch)
    g = gpu.query().gpus[0]
    assert not g.unified and g.total_bytes == 49140 * 2**20 and g.free_bytes == 48500 * 2**20


def test_no_gpu_fails_phase1_check_with_the_planning_way_out(sandbox, monkeypatch, tmp_path, cli):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    result = cli("--project", str(sandbox), "--json", "--set", "host.assume_gpu_memory=",
                 "--set", "vllm.device=gpu", "phase1", "--check")
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert steps["phase1.gpu"]["status"] == "missing" and "--assume-gpu-memory" in steps["phase1.gpu"]["fix"]


def test_phase1_check_plans_the_26_gib_case_from_this_machine(sandbox, cli):
    result = cli("--project", str(sandbox), "--json", "--set", "host.assume_unified=false",
                 "phase1", "--check", "--assume-gpu-memory", "26GiB")
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert steps["phase1.fit"]["status"] == "missing"
    assert steps["phase1.fit"]["message"].startswith("does not fit")
    assert "Qwen/Qwen2.5-32B-Instruct-AWQ" in steps["phase1.fit"]["fix"]
    assert steps["phase1.fit"]["measurements"]["weight_gib"] == pytest.approx(61.03)


@pytest.mark.parametrize("text, expected", [("26GiB", 26 * GiB), ("26G", 26 * GiB), ("26GB", 26 * 10**9),
                                            ("1024MiB", GiB), ("119 GiB", 119 * GiB)])
def test_parse_size(text, expected):
    from migrator.core.config import parse_size

    assert parse_size(text) == expected


def test_bad_size_in_config_names_the_key(tmp_path):
    from migrator.core.config import load_settings
    from migrator.core.errors import ConfigError

    with pytest.raises(ConfigError, match="host.assume_gpu_memory"):
        load_settings(None, environ={}, overrides={"host.assume_gpu_memory": "lots"})


class FakeDocker:
    """An autospec'd stand-in for the Docker adapter, for the registry branch only: asking a real registry
    would send traffic off this machine."""

    def __init__(self, local, remote):
        from unittest.mock import create_autospec

        from migrator.adapters.docker import DockerRuntime

        self.mock = create_autospec(DockerRuntime, instance=True)
        self.mock.info.return_value = {"ServerVersion": "28.0", "Runtimes": {"runc": {}, "nvidia": {}}}
        self.mock.image_platform.return_value = local
        self.mock.remote_platforms.return_value = remote


@pytest.mark.parametrize("local, remote, status, words", [
    (None, ["linux/amd64"], False, "exec format error"),           # an amd64-only image on the GB10 (arm64)
    (None, ["linux/amd64", "linux/arm64"], True, "pullable for linux/arm64"),
    (None, None, True, "registry cannot be asked"),
    ("linux/amd64", None, False, "exec format error"),             # present locally, wrong architecture
])
def test_image_platform_against_an_aarch64_host(monkeypatch, tmp_path, local, remote, status, words):
    from migrator.adapters.runtime import docker as docker_runtime
    from migrator.app import api
    from migrator.core.config import Settings
    from phases import phase1

    monkeypatch.setattr(docker_runtime, "host_platform", lambda: "linux/arm64")
    ctx = api.context(tmp_path, Settings())
    ctx._docker = FakeDocker(local, remote).mock
    result = phase1.RuntimeReachable().check(ctx)
    assert result.ok is status and words in result.message + result.fix


# ---- "fits with changes": phase1 stops naming the values, or adopts them with --apply-fit-advice ------
def test_advised_settings_are_ones_that_fit(qwen32b):
    changes, after = fit.advised_settings(qwen32b, fit.Budget(80 * GiB, 80 * GiB, False), 0.9, 32768)
    assert set(changes) == {"vllm.max_model_len"} and after.verdict == "fits"
    # Ollama's 20 GiB and a long context: a lower utilisation first, then the length judged under it.
    budget = fit.Budget(119 * GiB, 100 * GiB, unified=True, held_by_ollama=20 * GiB)
    changes, after = fit.advised_settings(qwen32b, budget, 0.9, 131072)
    assert set(changes) == {"vllm.gpu_memory_utilization", "vllm.max_model_len"} and after.verdict == "fits"
    again = fit.assess(qwen32b, budget, changes["vllm.gpu_memory_utilization"], changes["vllm.max_model_len"])
    assert again.verdict == "fits"


UNSAFE = ("--set", "vllm.gpu_memory_utilization=0.9")  # the sandbox: 119 GiB, Ollama holding 20 → 0.76 advised


def test_fits_with_changes_stops_phase1_naming_the_exact_set(sandbox, cli):
    result = cli("--project", str(sandbox), "--json", *UNSAFE, "phase1", "--no-bench")
    assert result.exit_code == ExitCode.CHECK_FAILED
    doc = json.loads(result.stdout)
    assert "fits with changes" in doc["error"] and "phase1 stops here" in doc["error"]
    assert "--set vllm.gpu_memory_utilization=0.76" in doc["fix"], doc["fix"]
    assert "--unload-ollama" in doc["fix"] and "--apply-fit-advice" in doc["fix"]
    state = Ledger(sandbox).read_state()
    assert state["phases"]["phase1"]["failed_step"] == "phase1.fit" and "vllm" not in state["resources"]
    assert state["phases"]["phase1"]["steps"]["phase1.fit"]["measurements"]["advised"] == {
        "vllm.gpu_memory_utilization": 0.76}
    # The value it names is one that fits.
    check = cli("--project", str(sandbox), "--json", "--set", "vllm.gpu_memory_utilization=0.76", "phase1", "--check")
    assert {s["id"]: s for s in json.loads(check.stdout)["steps"]}["phase1.fit"]["status"] == "ok"


def test_fits_with_changes_names_max_model_len_too(sandbox, cli):
    import re

    result = cli("--project", str(sandbox), "--json", "--set", "vllm.max_model_len=200000", "phase1", "--check")
    fix = {s["id"]: s for s in json.loads(result.stdout)["steps"]}["phase1.fit"]["fix"]
    longest = int(re.search(r"--set vllm\.max_model_len=(\d+)", fix)[1])
    assert 8192 < longest < 200000
    ok = cli("--project", str(sandbox), "--json", "--set", f"vllm.max_model_len={longest}", "phase1", "--check")
    assert {s["id"]: s for s in json.loads(ok.stdout)["steps"]}["phase1.fit"]["status"] == "ok"


def test_apply_fit_advice_starts_vllm_with_the_advised_value_and_records_it(sandbox, cli):
    dry = json.loads(cli("--project", str(sandbox), "--json", *UNSAFE, "phase1", "--dry-run", "--apply-fit-advice").stdout)
    planned = {s["id"]: s for s in dry["steps"]}
    assert planned["phase1.fit-advice"]["status"] == "would run"
    assert "--gpu-memory-utilization 0.76" in planned["phase1.start-vllm"]["plan"][0]
    assert "adopted_settings" not in Ledger(sandbox).read_state()["resources"]  # a dry-run records nothing
    result = cli("--project", str(sandbox), "--json", *UNSAFE, "phase1", "--no-bench", "--apply-fit-advice")
    assert result.exit_code == 0, result.stdout
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["phase1.fit"]["measurements"]["advised"] == {"vllm.gpu_memory_utilization": 0.76}
    assert steps["phase1.fit-advice"]["status"] == "passed"
    state = Ledger(sandbox).read_state()
    adopted = state["resources"]["adopted_settings"]["vllm.gpu_memory_utilization"]
    assert adopted["value"] == 0.76 and adopted["configured"] == 0.9
    command = state["resources"]["vllm"]["command"]
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.76"
    # Later runs use it while migrate.yaml (here: --set) still says 0.9; a value the operator changed wins.
    later = cli("--project", str(sandbox), "--json", *UNSAFE, "phase1", "--check")
    fit_step = {s["id"]: s for s in json.loads(later.stdout)["steps"]}["phase1.fit"]
    assert fit_step["status"] == "ok" and fit_step["measurements"]["configured_gib"] == round(0.76 * 119, 2)
    changed = cli("--project", str(sandbox), "--json", "--set", "vllm.gpu_memory_utilization=0.8", "phase1", "--check")
    assert {s["id"]: s for s in json.loads(changed.stdout)["steps"]}["phase1.fit"]["status"] == "missing"
    # Rollback forgets it: the next migration judges migrate.yaml afresh.
    back = cli("--project", str(sandbox), "--json", *UNSAFE, "rollback", "--wait", "5")
    forgot = next(a for a in json.loads(back.stdout)["actions"] if a["name"] == "adopted settings")
    assert forgot["ok"] and "forgot vllm.gpu_memory_utilization=0.76" in forgot["result"]
    assert "adopted_settings" not in Ledger(sandbox).read_state()["resources"]
