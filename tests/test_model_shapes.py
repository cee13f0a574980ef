"""phase1's model reading and speed/memory verdict on checkpoint shapes it was not built on (issue #15).

Metadata-only dirs (tests/speedshapes.py: real config.json fields and tensor names, headers only) of Mixtral,
DeepSeek (MLA + shared experts + dense first layers + MTP), Qwen3 (`dtype`), Llama 3.1/3.2, Gemma 3 and
Qwen2.5-VL (multimodal), gpt-oss (fused MXFP4 experts, sliding layers), GPTQ, FP8 block scales (native and
compressed-tensors), NVFP4 (ModelOpt), an index with a stray file, broken downloads. Each figure is held to
the published one (total / active parameters from the model cards), within 10 %, or to a clear error."""

import json

import pytest

from migrator.core import fit, gpus, speed
from migrator.core.errors import EnvironmentMissing, ExitCode

import speedshapes as shapes

GB10 = gpus.GPUS["GB10"]
GiB = 2**30


def build(root, name, config, tensors, **kw):
    return shapes.write_shape_dir(root / name, config, tensors, **kw)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    qwen3_fp16 = {**shapes.QWEN3_32B, "dtype": "float16"}
    no_head_dim = {k: v for k, v in shapes.QWEN3_32B.items() if k not in ("head_dim", "num_key_value_heads")}
    return {
        "mixtral": build(root, "mixtral", shapes.MIXTRAL_8X7B, shapes.mixtral()),
        "dsv2lite": build(root, "dsv2lite", shapes.DEEPSEEK_V2_LITE, shapes.deepseek()),
        "dsv3": build(root, "dsv3", shapes.DEEPSEEK_V3, shapes.deepseek(shapes.DEEPSEEK_V3), files=4),
        "qwen3": build(root, "qwen3", shapes.QWEN3_32B, shapes.qwen3()),
        "qwen3_fp16": build(root, "qwen3_fp16", qwen3_fp16, shapes.qwen3(qwen3_fp16)),
        "no_head_dim": build(root, "no_head_dim", no_head_dim, shapes.qwen3()),
        "llama31": build(root, "llama31", shapes.LLAMA31_8B, shapes.llama()),
        "llama32_tied": build(root, "llama32", shapes.LLAMA32_1B, shapes.llama(shapes.LLAMA32_1B)),
        "gemma3": build(root, "gemma3", shapes.GEMMA3_27B, shapes.gemma3()),
        "qwen25vl": build(root, "qwen25vl", shapes.QWEN25_VL_7B, shapes.qwen25_vl()),
        "gpt_oss": build(root, "gpt_oss", shapes.GPT_OSS_20B, shapes.gpt_oss()),
        "gptq": build(root, "gptq", {**shapes.QWEN25_32B, "quantization_config": shapes.GPTQ_CONFIG,
                                     "_name_or_path": "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4"}, shapes.gptq()),
        "fp8_block": build(root, "fp8_block", {**shapes.QWEN3_32B, "quantization_config": shapes.QWEN3_FP8_CONFIG,
                                               "_name_or_path": "Qwen/Qwen3-32B-FP8"}, shapes.fp8_block()),
        "ct_fp8_block": build(root, "ct_fp8_block", {**shapes.QWEN3_32B,
                                                     "quantization_config": shapes.COMPRESSED_FP8_BLOCK,
                                                     "_name_or_path": "RedHatAI/Qwen3-32B-FP8-block"},
                              shapes.fp8_block(scale="weight_scale")),
        "nvfp4": build(root, "nvfp4", {**shapes.QWEN3_32B, "_name_or_path": "nvidia/Qwen3-32B-NVFP4"},
                       shapes.nvfp4(), extra={"hf_quant_config.json": shapes.NVFP4_QUANT_FILE}),
    }


@pytest.fixture(scope="module")
def models(dirs):
    return {k: fit.read_local(d) for k, d in dirs.items()}


def read_gb(model) -> float:
    return speed.profile(model).weight_read_gb


def within(value, published, share=0.10) -> bool:
    return abs(value - published) <= share * published


# ---- MoE: routed experts, however the checkpoint names them ------------------------------------------------
def test_gpt_oss_fused_mxfp4_experts_are_read_as_routed_experts_not_as_dense(models):
    m = models["gpt_oss"]
    p = speed.profile(m)
    # 20.9 B total / 3.6 B active (model card): attention 0.64 B + lm_head 0.58 B in bf16, 4 of 32 experts'
    # 2.39 B at MXFP4 (4.25 bits with its scales) ≈ 1.27 + 1.16 + 1.27 GB
    assert p.moe and p.expert_bytes > 5 * p.dense_bytes
    assert within(p.weight_read_gb, 3.7)
    assert within(p.shape.active_params / 1e9, 3.6)
    assert p.weights == "MXFP4 4-bit" and p.precision == "fp4"  # not "NVFP4"
    assert speed.decode(p, GB10, 1, 0)["tokens_per_s_per_user"] > 60  # read as dense: ≈ 23


def test_mixtral_reads_two_of_eight_experts(models):
    m = models["mixtral"]
    p = speed.profile(m)
    assert within(m.parameters / 1e9, 46.7, 0.03)
    assert within(p.shape.active_params / 1e9, 12.9)  # published 12.9 B active
    assert within(p.weight_read_gb, 2 * 12.9)  # bf16


def test_deepseek_v2_lite_mla_caches_one_latent_per_layer(models):
    m = models["dsv2lite"]
    assert m.kv_bytes_per_token() == 27 * (512 + 64) * 2  # was 2 × 27 × 16 × 128 × 2: 7× too much
    assert within(m.parameters / 1e9, 15.7, 0.03)
    p = speed.profile(m)
    assert p.kv_bytes_per_token == m.kv_bytes_per_token()
    # 2.4 B active (model card): shared experts, the dense first layer and MLA's projections all counted
    assert within(p.shape.active_params / 1e9, 2.4)
    assert within(p.weight_read_gb, 2 * 2.4)
    verdict = fit.assess(m, fit.Budget(128 * GiB, 100 * GiB, unified=True), 0.5, 32768)
    assert verdict.figures["kv_bytes_per_token"] == 31104 and verdict.figures["kv_mla_latent"] == 576


def test_deepseek_v3_fp8_blocks_mla_and_its_mtp_layer(models):
    m = models["dsv3"]
    assert m.kv_bytes_per_token() == 61 * 576 * 2  # was 2 × 61 × 128 × 56 × 2: 25× too much
    assert within(m.parameters / 1e9, 671 + 14, 0.03)  # the checkpoint holds the 14 B MTP module too
    p = speed.profile(m)
    assert p.weights == "fp8" and p.moe
    assert within(p.shape.active_params / 1e9, 37)  # published 37 B active
    # fp8: ~1 byte a parameter (+ 128×128 block scales), lm_head bf16; layer 61 (MTP) not read per token
    assert within(p.weight_read_gb, 37 + 0.9)
    mtp = sum(b for n, b in m.tensor_bytes.items() if n.startswith("model.layers.61."))
    assert mtp and p.dense_bytes + p.expert_bytes + p.lm_head_bytes + mtp + m.tensor_bytes["model.embed_tokens.weight"] \
        == m.weight_bytes
    assert fit.assess(m, fit.Budget(128 * GiB, 120 * GiB, unified=True), 0.9, 8192).verdict == "does not fit"


# ---- dense models and config fields ---------------------------------------------------------------------
def test_qwen3_32b_and_llama31_8b_dense_figures(models):
    q, llama = models["qwen3"], models["llama31"]
    assert within(q.parameters / 1e9, 32.8, 0.02) and within(llama.parameters / 1e9, 8.03, 0.02)
    assert q.kv_bytes_per_token() == 2 * 64 * 8 * 128 * 2 and llama.kv_bytes_per_token() == 128 * 1024
    assert 3.7 <= speed.decode(speed.profile(q), GB10, 1, 0)["tokens_per_s_per_user"] <= 4.4  # 3.7 measured
    assert within(read_gb(llama), 2 * (8.03 - 0.525))  # all but the gathered embedding


def test_transformers_dtype_field_names_the_weights(models):
    """transformers ≥ 4.56 writes `dtype` where it wrote `torch_dtype`: an fp16 checkpoint is not "bf16"."""
    assert speed.profile(models["qwen3_fp16"]).weights == "fp16"
    assert speed.profile(models["qwen3"]).weights == "bf16"


def test_missing_head_dim_and_kv_heads_come_from_the_tensor_shapes(models):
    """Qwen3-32B's head_dim (128) is not hidden/heads (80): guessed, the KV cache was understated by 37 % —
    a "fits" that does not; num_key_value_heads left out would have been taken as all 64 heads (8×)."""
    m = models["no_head_dim"]
    assert (m.head_dim, m.kv_heads) == (128, 8)
    assert m.kv_bytes_per_token() == models["qwen3"].kv_bytes_per_token()
    assert "head_dim from q_norm's shape" in m.source and "num_key_value_heads from k_proj's shape" in m.source


@pytest.mark.parametrize("left_out, guessed_kv", [("head_dim", 2 * 64 * 8 * 80 * 2),  # hidden/heads: 37 % short
                                                  ("num_key_value_heads", 2 * 64 * 64 * 128 * 2)])  # all heads: 8×
def test_one_field_left_out_is_read_from_the_shapes_not_guessed(tmp_path, left_out, guessed_kv):
    config = {k: v for k, v in shapes.QWEN3_32B.items() if k != left_out}
    m = fit.read_local(shapes.write_shape_dir(tmp_path / left_out, config, shapes.qwen3()))
    assert m.kv_bytes_per_token() == 2 * 64 * 8 * 128 * 2 != guessed_kv


def test_a_config_without_the_heads_is_one_clear_error_not_a_crash(tmp_path):
    text = {k: v for k, v in shapes.LLAMA31_8B.items() if k != "num_attention_heads"}
    d = shapes.write_shape_dir(tmp_path / "llava", {"architectures": ["LlavaForConditionalGeneration"],
                                                    "model_type": "llava", "text_config": text},
                               shapes.llama({**shapes.LLAMA31_8B, "num_hidden_layers": 2}))
    with pytest.raises(EnvironmentMissing, match="text_config has no num_attention_heads"):
        fit.read_local(d)


@pytest.mark.parametrize("field, value", [("num_key_value_heads", [8, 8]), ("num_attention_heads", "32"),
                                          ("head_dim", {"full": 128})])
def test_a_per_layer_or_odd_field_is_one_clear_error_not_a_crash(tmp_path, field, value):
    small = {**shapes.LLAMA31_8B, "num_hidden_layers": 2}
    d = shapes.write_shape_dir(tmp_path / "odd", {**small, field: value}, shapes.llama(small))
    with pytest.raises(EnvironmentMissing, match=f"gives {field} as .*not one number"):
        fit.read_local(d)


def test_null_fields_are_absent_fields(tmp_path):
    small = {**shapes.LLAMA31_8B, "num_hidden_layers": 2, "max_position_embeddings": None, "head_dim": None,
             "sliding_window": None}
    m = fit.read_local(shapes.write_shape_dir(tmp_path / "nulls", small, shapes.llama(small)))
    assert (m.max_positions, m.head_dim, m.sliding_layers) == (0, 128, 0)


def test_a_moe_config_without_experts_per_token_reads_every_expert_not_none(tmp_path):
    """Read as 0 experts a token, a 2-layer Mixtral decoded at 635 tok/s on GB10 (4× its ceiling): a gate passed
    that could not. Unknown routing counts every expert — a floor on speed, said so in the source."""
    mix = {**shapes.MIXTRAL_8X7B, "num_hidden_layers": 2}
    known = speed.profile(fit.read_local(shapes.write_shape_dir(tmp_path / "known", mix, shapes.mixtral(mix))))
    unknown_cfg = {k: v for k, v in mix.items() if k != "num_experts_per_tok"}
    m = fit.read_local(shapes.write_shape_dir(tmp_path / "unknown", unknown_cfg, shapes.mixtral(mix)))
    p = speed.profile(m)
    assert p.weight_read_gb > known.weight_read_gb
    assert p.weight_read_gb == pytest.approx((m.weight_bytes - m.tensor_bytes["model.embed_tokens.weight"]) / 1e9)
    assert "every expert counted as read" in p.source


def test_tied_embeddings_are_read_once_as_the_lm_head(models):
    m = models["llama32_tied"]
    p = speed.profile(m)
    assert "lm_head.weight" not in m.tensor_bytes
    assert p.lm_head_bytes == m.tensor_bytes["model.embed_tokens.weight"]
    assert within(m.parameters / 1e9, 1.24, 0.02)


# ---- multimodal -----------------------------------------------------------------------------------------
def test_gemma3_text_config_gaps_filled_and_the_vision_tower_not_read(models):
    m = models["gemma3"]
    assert m.config["vocab_size"] == shapes.GEMMA3_VOCAB and "vocab_size from the embedding's shape" in m.source
    p = speed.profile(m)
    vision = sum(b for n, b in m.tensor_bytes.items() if n.startswith(("vision_tower.", "multi_modal_projector.")))
    assert vision > 0.8e9  # SigLIP ≈ 0.4 B in bf16
    assert p.dense_bytes + p.lm_head_bytes == m.weight_bytes - vision  # tied: the embedding is the lm_head
    assert p.shape.lm_head_params == shapes.GEMMA3_VOCAB * 5376  # the 4-bit/fp8 alternatives count lm_head
    assert p.weights == "bf16"  # torch_dtype is at the top level, beside text_config


def test_qwen25_vl_vision_tower_is_loaded_but_not_read_per_token(models):
    m = models["qwen25vl"]
    p = speed.profile(m)
    visual = sum(b for n, b in m.tensor_bytes.items() if n.startswith("visual."))
    assert within(visual / 2e9, 0.67, 0.05)
    assert p.dense_bytes + p.lm_head_bytes == m.weight_bytes - visual - m.tensor_bytes["model.embed_tokens.weight"]
    verdict = fit.assess(m, fit.Budget(128 * GiB, 100 * GiB, unified=True), 0.5, 8192)
    assert verdict.figures["weight_gib"] == round(m.weight_bytes / GiB, 2)  # memory still holds the tower


# ---- quantized formats ----------------------------------------------------------------------------------
def test_gptq_with_g_idx_counts_packed_bytes_as_stored(models):
    m = models["gptq"]
    p = speed.profile(m)
    assert p.weights == "GPTQ 4-bit" and p.precision == "bf16"
    assert p.dense_bytes + p.lm_head_bytes == m.weight_bytes - m.tensor_bytes["model.embed_tokens.weight"]
    assert 13.5 <= speed.decode(p, GB10, 1, 0)["tokens_per_s_per_user"] <= 16
    assert within(m.weight_bytes / 1e9, 19.3, 0.08)  # the published build is ≈19 GB


@pytest.mark.parametrize("key", ["fp8_block", "ct_fp8_block"])
def test_fp8_with_block_scales_is_fp8_in_both_spellings(models, key):
    m = models[key]
    p = speed.profile(m)
    assert (p.weights, p.precision) == ("fp8", "fp8")  # compressed-tensors' was "COMPRESSED-TENSORS 4-bit"
    assert within(p.weight_read_gb, 32.8 - 0.78 + 0.78 * 2 - 0.78, 0.05)  # 1 B a weight, lm_head bf16
    alternatives = speed.assess(m, GB10, speed.Targets(), [])["alternatives"]
    assert [a["weights"] for a in alternatives] == ["4-bit"]


def test_nvfp4_modelopt_states_its_scheme_in_hf_quant_config(models):
    m = models["nvfp4"]
    p = speed.profile(m)
    assert m.quantization == "modelopt" and (p.weights, p.precision) == ("NVFP4 4-bit", "fp4")
    assert within(m.weight_bytes / 1e9, 20.5, 0.08)  # nvidia/Qwen3-32B-NVFP4 ≈ 20 GB
    assert speed.assess(m, GB10, speed.Targets(), [])["alternatives"] == []  # no "fp8 variant" of a 4-bit model
    too_small = fit.assess(m, fit.Budget(16 * GiB, 16 * GiB, unified=False), 0.9, 8192)
    assert too_small.verdict == "does not fit" and not any("4-bit variant" in a for a in too_small.advice)


@pytest.mark.parametrize("key, published", [("gpt_oss", 20.9), ("nvfp4", 32.8), ("gptq", 32.8), ("fp8_block", 32.8),
                                            ("dsv3", 671 + 14)])
def test_parameters_count_packed_weights_not_their_storage_or_scales(models, key, published):
    """An int32 of AWQ/GPTQ holds 8 weights, an MXFP4/NVFP4 byte 2, and scales are no parameters: the header's
    element count said 12.0 B for gpt-oss-20b and 5.7 B for a GPTQ 32B."""
    assert within(models[key].parameters / 1e9, published, 0.03)


def test_awq_parameters_too(tmp_path):
    m = fit.read_local(shapes.write_model_dir(tmp_path / "awq", shapes.QWEN25_32B, "awq"))
    assert within(m.parameters / 1e9, 32.76, 0.03)


# ---- what is on disk ----------------------------------------------------------------------------------------
def test_the_index_decides_which_files_are_loaded(tmp_path):
    """Mistral's repos ship consolidated.safetensors beside the HF shards: the same weights twice. vLLM loads
    what the index names; counting both said "does not fit" at twice the size and half the speed."""
    tensors = shapes.llama({**shapes.LLAMA31_8B, "num_hidden_layers": 2})
    d = shapes.write_shape_dir(tmp_path / "mistral", shapes.LLAMA31_8B, tensors)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    (d / "consolidated.safetensors").write_bytes((d / "model-00001-of-00002.safetensors").read_bytes())
    m = fit.read_local(d)
    assert m.weight_bytes == index["metadata"]["total_size"]
    assert "consolidated.safetensors" in m.source


def test_an_index_that_names_nothing_reads_what_is_there(tmp_path):
    small = {**shapes.LLAMA31_8B, "num_hidden_layers": 2}
    d = shapes.write_shape_dir(tmp_path / "emptymap", small, shapes.llama(small))
    total = json.loads((d / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    assert fit.read_local(d).weight_bytes == total  # not "has no *.safetensors files"


def test_a_missing_shard_is_an_incomplete_download_not_a_smaller_model(tmp_path):
    d = shapes.write_shape_dir(tmp_path / "partial", shapes.LLAMA31_8B, shapes.llama(), files=4)
    (d / "model-00003-of-00004.safetensors").unlink()
    with pytest.raises(EnvironmentMissing, match="incomplete: 1 of the 4 shards"):
        fit.read_local(d)


@pytest.mark.parametrize("content", [b"", b"\x10\x00", b"version https://git-lfs.github.com/spec/v1\n"])
def test_a_truncated_or_pointer_shard_is_one_clear_error(tmp_path, content):
    d = shapes.write_shape_dir(tmp_path / "cut", shapes.LLAMA31_8B, shapes.llama({**shapes.LLAMA31_8B,
                                                                                  "num_hidden_layers": 2}), index=False)
    (d / "model-00002-of-00002.safetensors").write_bytes(content)
    with pytest.raises(EnvironmentMissing, match="not a readable safetensors file"):
        fit.read_local(d)


@pytest.mark.parametrize("weights, content, says", [("model-Q4_K_M.gguf", b"GGUF", "only GGUF weights"),
                                                    ("pytorch_model.bin", b"PK\x03\x04", "only PyTorch .bin")])
def test_a_dir_without_safetensors_says_why_it_cannot_be_read(tmp_path, weights, content, says):
    d = tmp_path / "weights"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(shapes.LLAMA31_8B))
    (d / weights).write_bytes(content)
    with pytest.raises(EnvironmentMissing, match=says):
        fit.read_local(d)


# ---- sliding-window layers ----------------------------------------------------------------------------------
def test_hybrid_sliding_layers_hold_only_their_window(models):
    oss, gemma = models["gpt_oss"], models["gemma3"]
    assert (oss.sliding_layers, oss.sliding_window) == (12, 128)
    assert (gemma.sliding_layers, gemma.sliding_window) == (52, 1024)  # every 6th of 62 layers is global
    every = oss.kv_bytes_per_token()
    at_32k = oss.kv_bytes_per_token(context=32768)
    assert every == 2 * 24 * 8 * 64 * 2 and every / 2 < at_32k < every / 2 * 1.01  # half the layers hold 144
    assert gemma.kv_bytes_per_token(context=131072) < gemma.kv_bytes_per_token() / 5
    assert oss.kv_bytes_per_token(context=100) == every  # within the window every layer holds it all
    verdict = fit.assess(gemma, fit.Budget(128 * GiB, 100 * GiB, unified=True), 0.7, 131072)
    assert verdict.figures["kv_bytes_per_token"] == gemma.kv_bytes_per_token(context=131072)
    p = speed.profile(gemma)
    assert p.kv_read(131072) == pytest.approx(gemma.kv_bytes_per_token(context=131072) * 131072, rel=0.01)


def test_sliding_windows_that_vllm_does_not_use_are_not_modelled(tmp_path):
    """Qwen2.5-VL says sliding_window 32768 with use_sliding_window false; a window on every layer (Mistral
    7B v0.1) is counted in full: only per-layer layouts (layer_types, Gemma's pattern) shrink the cache."""
    qwen = fit.from_config("q", shapes.QWEN25_VL_7B, 1, 1, "")
    mistral = fit.from_config("m", {**shapes.LLAMA31_8B, "model_type": "mistral", "sliding_window": 4096}, 1, 1, "")
    assert qwen.sliding_layers == 0 and mistral.sliding_layers == 0


# ---- the CLI: phase1 --check on these dirs --------------------------------------------------------------------
def fit_step(cli, tmp_path, model_dir):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    result = cli("--project", str(project), "--json", "--set", "vllm.runtime=process", "phase1", "--check",
                 "--assume-gpu", "GB10", "--model", str(model_dir))
    doc = json.loads(result.stdout)
    return result, doc, {s["id"]: s for s in doc.get("steps", [])}.get("phase1.fit")


@pytest.mark.parametrize("key", ["gpt_oss", "dsv2lite", "gemma3", "nvfp4", "ct_fp8_block", "no_head_dim"])
def test_phase1_check_reads_every_shape_without_an_internal_error(cli, tmp_path, dirs, models, key):
    result, _, step = fit_step(cli, tmp_path, dirs[key])
    assert result.exit_code != ExitCode.INTERNAL and "Traceback" not in result.stderr
    m, s = step["measurements"], step["measurements"]["speed"]
    assert m["kv_bytes_per_token"] == models[key].kv_bytes_per_token(context=m["max_model_len"])
    assert s["weight_gb_read_per_token"] == pytest.approx(speed.profile(models[key]).weight_read_gb, abs=0.01)


def test_phase1_check_gpt_oss_on_gb10_is_a_moe_above_the_30_gate(cli, tmp_path, dirs):
    _, _, step = fit_step(cli, tmp_path, dirs["gpt_oss"])
    s = step["measurements"]["speed"]
    assert s["moe"] and s["weights"] == "MXFP4 4-bit" and s["decode_tokens_per_s_per_user"] > 60
    assert next(g for g in s["gates"] if g["metric"] == "per_user_output_tokens_per_s")["verdict"] == "pass"


@pytest.mark.parametrize("breakage", ["missing shard", "empty shard", "bin only"])
def test_phase1_check_on_a_broken_model_dir_fails_the_fit_step_in_one_line(cli, tmp_path, breakage):
    d = shapes.write_shape_dir(tmp_path / "broken", shapes.LLAMA31_8B,
                               shapes.llama({**shapes.LLAMA31_8B, "num_hidden_layers": 2}), files=2)
    if breakage == "missing shard":
        (d / "model-00002-of-00002.safetensors").unlink()
    elif breakage == "empty shard":
        (d / "model-00002-of-00002.safetensors").write_bytes(b"")
    else:
        for f in d.glob("*.safetensors*"):
            f.unlink()
        (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    result, doc, step = fit_step(cli, tmp_path, d)
    assert result.exit_code == ExitCode.CHECK_FAILED and "Traceback" not in result.stderr  # was 70 (empty shard)
    assert step["status"] == "missing"  # the engine's status for an EnvironmentMissing in a check
    text = json.dumps(doc)
    assert {"missing shard": "incomplete", "empty shard": "not a readable safetensors file",
            "bin only": "only PyTorch .bin"}[breakage] in text


@pytest.mark.parametrize("key", ["no_head_dim", "nvfp4", "gpt_oss", "gemma3", "dsv2lite", "gptq"])
def test_a_checkpoint_read_from_the_hub_is_read_as_from_its_local_directory(dirs, models, key, monkeypatch):
    """The Hub path gets the same gap-filling from tensor shapes and the same hf_quant_config.json as a local
    directory: one reading of a checkpoint, wherever its headers come from (the stand-in Hub on loopback)."""
    from fakehub import FakeHub

    from migrator.adapters import hf

    hub = FakeHub({f"org/{key}": dirs[key]}).start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        remote = hf.read_hub(f"org/{key}", "main", None, timeout=20)
    finally:
        hub.stop()
    local = models[key]
    for field in ("weight_bytes", "parameters", "layers", "kv_heads", "head_dim", "quantization", "mla_dim",
                  "sliding_layers", "sliding_window", "tensor_bytes"):
        assert getattr(remote, field) == getattr(local, field), field
    assert remote.kv_bytes_per_token(context=8192) == local.kv_bytes_per_token(context=8192)
    assert speed.profile(remote).weight_read_gb == speed.profile(local).weight_read_gb
