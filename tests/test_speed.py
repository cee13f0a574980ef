"""The speed prediction (a roofline on the model's bytes and FLOPs), checked against published points:
Qwen3-32B bf16 on a DGX Spark 3.7 tok/s, the plan's Ollama figure (qwen3:32b Q4 ≈ 20 GB at 9.9 tok/s),
Qwen3-30B-A3B 32–50 tok/s on a Spark. Model dirs are metadata only (tests/speedshapes.py)."""

import json

import pytest

from migrator.core import fit, gpus, speed
from migrator.core.config import Gate, Settings, load_settings
from migrator.core.errors import ConfigError, ExitCode

from speedshapes import QWEN25_32B, QWEN3_30B_A3B, write_model_dir

GB10, H100 = gpus.GPUS["GB10"], gpus.GPUS["H100 SXM"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {"bf16": write_model_dir(root / "bf16", QWEN25_32B), "awq": write_model_dir(root / "awq", QWEN25_32B, "awq"),
            "fp8": write_model_dir(root / "fp8", QWEN25_32B, "fp8"), "moe": write_model_dir(root / "moe", QWEN3_30B_A3B)}


@pytest.fixture(scope="module")
def models(dirs):
    return {k: fit.read_local(d) for k, d in dirs.items()}


def one_stream(model, gpu, context=0):
    return speed.decode(speed.profile(model), gpu, 1, context)["tokens_per_s_per_user"]


def test_dense_32b_on_gb10_is_capped_by_bandwidth_over_weight_bytes(models):
    bf16, fp8, awq = (one_stream(models[k], GB10) for k in ("bf16", "fp8", "awq"))
    assert 4.0 <= bf16 <= 4.4  # 273 GB/s over ~64 GB (embeddings are gathered, not read)
    assert 7.6 <= fp8 <= 8.8
    assert 13.5 <= awq <= 16  # packed int4 + scales + zeros as stored, lm_head in fp16
    assert bf16 * 2 == pytest.approx(fp8, rel=0.1)
    # Qwen3-32B bf16 measured 3.7 tok/s on a Spark: below the ceiling, and not far below it
    assert 3.7 <= bf16 and 3.7 / bf16 > 0.8


def test_awq_bytes_are_the_headers_bytes_not_a_guess(models):
    p = speed.profile(models["awq"])
    stored = sum(models["awq"].tensor_bytes.values())
    embedding = models["awq"].tensor_bytes["model.embed_tokens.weight"]
    assert p.dense_bytes + p.lm_head_bytes + p.expert_bytes == stored - embedding
    assert p.weights == "AWQ 4-bit" and p.precision == "bf16"  # weight-only: matmuls stay 16-bit


def test_plans_ollama_figure_fits_under_the_4_bit_ceiling():
    # qwen3:32b Q4 ≈ 20 GB at 9.9 tok/s ≈ 198 GB/s effective: 73 % of GB10's 273 GB/s
    q4 = speed.from_shape("qwen3:32b", {**QWEN25_32B, "num_attention_heads": 64, "hidden_size": 5120,
                                         "head_dim": 128, "intermediate_size": 25600, "vocab_size": 151936}, "4-bit")
    ceiling = speed.decode(q4, GB10, 1, 0)["tokens_per_s_per_user"]
    assert 9.9 < ceiling < 9.9 / 0.6


def test_moe_reads_only_the_routed_experts(models):
    p = speed.profile(models["moe"])
    assert p.moe and p.expert_bytes > 10 * p.dense_bytes
    assert 5.5 < p.weight_read_gb < 6.5  # ~3 B active in bf16
    assert 32 <= one_stream(models["moe"], GB10) <= 50  # measured 32–50 on a Spark
    assert p.experts_touched(1) == pytest.approx(8)
    assert 8 < p.experts_touched(4) < 32 and p.experts_touched(4096) == pytest.approx(128, rel=1e-3)


def test_h100_on_the_bf16_dense_model(models):
    assert 48 <= one_stream(models["bf16"], H100) <= 55


def test_batching_raises_the_total_never_the_per_user_speed(models):
    p = speed.profile(models["bf16"])
    steps = [speed.decode(p, GB10, n, 2250) for n in (1, 2, 8, 32, 128)]
    per_user = [s["tokens_per_s_per_user"] for s in steps]
    total = [s["tokens_per_s_total"] for s in steps]
    assert per_user == sorted(per_user, reverse=True) and total == sorted(total)
    assert steps[0]["bound"] == "memory"
    assert speed.decode(p, H100, 4096, 100)["bound"] == "compute"  # past the ridge point


def test_kv_read_grows_with_context(models):
    p = speed.profile(models["bf16"])
    assert p.kv_bytes_per_token == 256 * 1024
    assert speed.decode(p, GB10, 1, 32768)["tokens_per_s_per_user"] < speed.decode(p, GB10, 1, 0)["tokens_per_s_per_user"]


def test_tied_embeddings_are_read_as_the_lm_head(tmp_path):
    tied = {**QWEN25_32B, "tie_word_embeddings": True, "num_hidden_layers": 2}
    model = fit.read_local(write_model_dir(tmp_path / "tied", tied))
    del model.tensor_bytes["lm_head.weight"]
    p = speed.profile(model)
    assert p.lm_head_bytes == model.tensor_bytes["model.embed_tokens.weight"]


def test_gates_are_judged_with_the_configured_thresholds(models):
    settings = Settings()
    verdict = speed.assess(models["bf16"], GB10, speed.Targets(), settings.gates,
                           others=[speed.from_shape(speed.MOE_ALTERNATIVE, speed.QWEN3_30B_A3B)])
    by_metric = {g["metric"]: g for g in verdict["gates"]}
    assert by_metric["per_user_output_tokens_per_s"]["verdict"] == "fail"
    assert by_metric["per_user_output_tokens_per_s"]["predicted"] == verdict["decode_tokens_per_s_per_user"]
    assert by_metric["gpu_utilization_pct"]["verdict"] == "not predicted"
    text = " ".join(verdict["verdict"])
    assert "dense 32B cannot reach 30 tok/s per user on NVIDIA GB10 (273 GB/s): ≤ 4.2 bf16" in text
    assert "≤ 14.9 4-bit" in text and "would pass it: Qwen/Qwen3-30B-A3B" in text
    assert verdict["passes"] is False
    lenient = [Gate("per-user output speed", "per_user_output_tokens_per_s", ">", 3.0)]
    assert speed.assess(models["bf16"], GB10, speed.Targets(), lenient)["passes"] is True


def test_users_at_the_slos_are_bounded_by_the_kv_cache(models):
    free = speed.predict(speed.profile(models["bf16"]), H100, speed.Targets())
    capped = speed.predict(speed.profile(models["bf16"]), H100, speed.Targets(kv_limit_users=3))
    assert free["realtime_users"] > 3 and capped["realtime_users"] == 3
    assert free["wait_users"] >= free["realtime_users"]


def test_gpu_table_has_a_source_for_every_entry_and_says_what_is_missing():
    for key, g in gpus.GPUS.items():
        assert g.sources and all(s for s in g.sources), key
        assert g.bandwidth_gbs > 0
        missing = [p for p, v in g.tflops.items() if v is None]
        assert not missing or g.notes, key  # a figure not found is said so
    value, how = GB10.peak_tflops("bf16")
    assert value == 125 and "derived" in how
    assert gpus.GPUS["A10"].peak_tflops("bf16") == (None, "not published")


@pytest.mark.parametrize("smi_name, key", [("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
                                           ("NVIDIA GB10", "GB10"), ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
                                           ("NVIDIA A100-PCIE-40GB", "A100 40GB"), ("NVIDIA L4", "L4"),
                                           ("NVIDIA L40S", "L40S"), ("NVIDIA A10G", "A10"),
                                           ("NVIDIA GeForce RTX 4090", "RTX 4090"),
                                           ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"), ("h200", "H200")])
def test_nvidia_smi_names_find_their_row(smi_name, key):
    assert gpus.lookup(smi_name) is gpus.GPUS[key]


def test_unknown_assumed_gpu_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match="host.assume_gpu.*GB10"):
        load_settings(None, environ={}, overrides={"host.assume_gpu": "Voodoo 2"})
    with pytest.raises(ConfigError, match="host.assume_bandwidth"):
        load_settings(None, environ={}, overrides={"host.assume_bandwidth": "fast"})


def test_compare_puts_measured_beside_predicted():
    rows = speed.compare({"decode_tokens_per_s_per_user": 4.2, "ttft_floor_ms": 900.0, "realtime_users": 0},
                         {"per_user_output_tokens_per_s": 3.7, "ttft_p99_ms": 1500.0})
    assert {r["metric"]: r["measured_share"] for r in rows} == {"per_user_output_tokens_per_s": 0.88,
                                                                 "ttft_p99_ms": 1.67}


# ---- the CLI: phase1 --check on metadata-only dirs, no GPU and no download -------------------------------
def fit_step(cli, tmp_path, *args):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    result = cli("--project", str(project), "--json", "--set", "vllm.runtime=process", "phase1", "--check", *args)
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    return result, steps["phase1.fit"]


def test_phase1_check_on_gb10_predicts_4_tok_s_and_fails_the_30_gate(cli, tmp_path, dirs):
    result, step = fit_step(cli, tmp_path, "--assume-gpu", "GB10", "--model", str(dirs["bf16"]))
    s = step["measurements"]["speed"]
    assert 4.0 <= s["decode_tokens_per_s_per_user"] <= 4.4
    gate = next(g for g in s["gates"] if g["metric"] == "per_user_output_tokens_per_s")
    assert gate["verdict"] == "fail" and gate["threshold"] == 30.0
    alternatives = {a["model"]: a for a in s["alternatives"]}
    assert 13.5 <= alternatives["Qwen/Qwen2.5-32B-Instruct (4-bit)"]["decode_tokens_per_s_per_user"] <= 16
    assert alternatives["Qwen/Qwen3-30B-A3B"]["decode_tokens_per_s_per_user"] > 30
    assert step["status"] == "warn" and "cannot reach 30 tok/s per user on NVIDIA GB10" in step["message"]
    assert step["measurements"]["unified_memory"] is True  # --assume-gpu GB10 plans its unified pool too
    assert result.exit_code == ExitCode.CHECK_FAILED  # the runtime and vLLM steps, not the prediction


def test_phase1_check_awq_dir_is_about_14(cli, tmp_path, dirs):
    _, step = fit_step(cli, tmp_path, "--assume-gpu", "GB10", "--model", str(dirs["awq"]))
    assert 13.5 <= step["measurements"]["speed"]["decode_tokens_per_s_per_user"] <= 16


def test_phase1_check_moe_dir_is_predicted_above_30(cli, tmp_path, dirs):
    _, step = fit_step(cli, tmp_path, "--assume-gpu", "GB10", "--model", str(dirs["moe"]))
    s = step["measurements"]["speed"]
    assert s["moe"] and s["decode_tokens_per_s_per_user"] > 30
    assert next(g for g in s["gates"] if g["metric"] == "per_user_output_tokens_per_s")["verdict"] == "pass"


def test_phase1_check_h100_bf16_is_about_50(cli, tmp_path, dirs):
    _, step = fit_step(cli, tmp_path, "--assume-gpu", "H100", "--model", str(dirs["bf16"]))
    assert 48 <= step["measurements"]["speed"]["decode_tokens_per_s_per_user"] <= 55


def test_assume_bandwidth_for_a_part_not_in_the_table(cli, tmp_path, dirs):
    _, step = fit_step(cli, tmp_path, "--assume-gpu-memory", "96GiB", "--assume-bandwidth", "1000",
                       "--model", str(dirs["bf16"]))
    s = step["measurements"]["speed"]
    assert s["bandwidth_gbs"] == 1000 and s["decode_tokens_per_s_per_user"] == pytest.approx(1000 / 64.5, rel=0.03)
    assert s["ttft_floor_ms"] is None  # no compute figure for an unknown part: not guessed


def test_no_gpu_and_nothing_assumed_skips_the_prediction_and_says_how(cli, tmp_path, dirs, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    _, step = fit_step(cli, tmp_path, "--assume-gpu-memory", "80GiB", "--model", str(dirs["bf16"]))
    assert "--assume-gpu" in step["measurements"]["speed"]["skipped"]


def test_triad_on_given_cores_pins_one_thread_to_each_and_leaves_the_callers_affinity(monkeypatch):
    import os
    import threading

    cpus = sorted(os.sched_getaffinity(0))
    cores = cpus[-1:] * 2  # two threads on one core still give two pinned threads
    pinned, real = [], os.sched_setaffinity

    def spy(pid, mask):
        pinned.append((threading.get_ident(), pid, set(mask)))
        real(pid, mask)

    monkeypatch.setattr(os, "sched_setaffinity", spy)
    gbs = speed.stream_triad_gbs(size_mb=8, repeats=2, cores=cores)
    assert gbs > 0
    assert pinned and all(pid == 0 and mask == {cores[0]} for _, pid, mask in pinned)
    assert threading.get_ident() not in {tid for tid, _, _ in pinned}  # pool threads only
    assert sorted(os.sched_getaffinity(0)) == cpus


def test_triad_without_cores_pins_nothing(monkeypatch):
    import os

    calls = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda *a: calls.append(a))
    assert speed.stream_triad_gbs(size_mb=8, repeats=1, threads=2) > 0
    assert calls == []


# ---- predicted vs measured, after a real run (the simulator stands in for vLLM) -------------------------
def test_bench_sweep_and_status_put_the_measured_beside_phase1s_prediction(sandbox, servers, cli, dirs):
    from migrator.core.ledger import Ledger

    predicted = speed.assess(fit.read_local(dirs["moe"]), gpus.cpu(400.0), speed.Targets(), Settings().gates)
    ledger = Ledger(sandbox)
    ledger.load()
    ledger.record_step("phase1", "phase1.fit", "passed", "fits", measurements={"speed": predicted})
    vllm = servers.start("migrator.sim.vllm", "--served-model-name", "qwen2.5-32b-instruct")
    result = cli("--project", str(sandbox), "--json", "--set", "bench.sweep_min_requests=8",
                 "--set", f"vllm.port={vllm}", "bench", "--sweep", "--max-users", "2", "--turns", "1",
                 "--think", "0", "--output-tokens", "8", "--input-tokens", "16")
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)["runs"]["vllm"]
    rows = {r["metric"]: r for r in run["predicted"]["rows"]}
    one_user = next(p for p in run["probes"] if p["users"] == 1)
    assert rows["per_user_output_tokens_per_s"]["measured"] == one_user["per_user_output_tokens_per_s"]
    assert rows["per_user_output_tokens_per_s"]["predicted"] == predicted["decode_tokens_per_s_per_user"]
    assert rows["realtime_users"]["measured"] == run["capacity"]["realtime"]["users"]
    page = open(json.loads(result.stdout)["report"]["html"], encoding="utf-8").read()
    assert "vllm: predicted (phase1's ceilings on this CPU (measured triad)) vs measured" in page
    status = json.loads(cli("--project", str(sandbox), "--json", "status").stdout)["speed"]
    assert status["predicted"]["decode_tokens_per_s_per_user"] == predicted["decode_tokens_per_s_per_user"]
    assert {r["metric"] for r in status["rows"]} >= {"realtime_users", "wait_users"}
    text = cli("--project", str(sandbox), "status").stdout
    assert "phase1's ceilings" in text and "measured: " in text


def test_on_a_host_with_a_gpu_the_name_comes_from_nvidia_smi(cli, tmp_path, dirs, monkeypatch):
    from test_fit import fake_nvidia_smi

    fake_nvidia_smi(tmp_path, "NVIDIA H100 80GB HBM3, 550.54, 81559, 81000, 9.0", monkeypatch)
    _, step = fit_step(cli, tmp_path, "--set", "vllm.device=gpu", "--model", str(dirs["awq"]))
    s = step["measurements"]["speed"]
    assert s["gpu"] == "NVIDIA H100 SXM" and s["bandwidth_gbs"] == 3350
    fake_nvidia_smi(tmp_path, "NVIDIA Tesla V100-SXM2-32GB, 550.54, 32768, 32000, 7.0", monkeypatch)
    _, step = fit_step(cli, tmp_path, "--set", "vllm.device=gpu", "--model", str(dirs["awq"]))
    assert "not in the GPU table" in step["measurements"]["speed"]["skipped"]
    assert "--assume-bandwidth" in step["measurements"]["speed"]["skipped"]


def test_phase1s_benchmark_prints_the_ceiling_at_its_own_load_beside_the_measurement(sandbox, cli):
    from migrator.core.ledger import Ledger

    result = cli("--project", str(sandbox), "--json", "--set", "host.assume_gpu=GB10", "phase1")
    assert result.exit_code == 0, result.stderr
    steps = Ledger(sandbox).read_state()["phases"]["phase1"]["steps"]
    bench = steps["phase1.benchmark"]
    model = fit.read_local(sandbox / "models" / "Qwen2.5-32B-Instruct")
    ceiling = speed.decode(speed.profile(model), GB10, 4, 64 + 16)["tokens_per_s_per_user"]
    assert bench["measurements"]["predicted_per_user_output_tokens_per_s"] == ceiling
    assert f"(predicted ceiling {ceiling:g} from the downloaded files)" in bench["message"]
    assert steps["phase1.fit"]["measurements"]["speed"]["gpu"] == "NVIDIA GB10"
