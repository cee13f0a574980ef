"""Metadata-only model directories of real shapes: config.json plus safetensors files that hold only a
header (right names, shapes and dtypes; data offsets past the end of a file that has no data). What
fit.read_local reads — 8-byte length, JSON header — is all there is: no multi-GB file is ever written."""

from __future__ import annotations

import json
import struct
from pathlib import Path

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "F8_E4M3": 1}

QWEN25_32B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120,
              "intermediate_size": 27648, "num_hidden_layers": 64, "num_attention_heads": 40,
              "num_key_value_heads": 8, "vocab_size": 152064, "max_position_embeddings": 32768,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "_name_or_path": "Qwen/Qwen2.5-32B-Instruct"}
QWEN3_30B_A3B = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
                 "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
                 "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_attention_heads": 32, "head_dim": 128,
                 "num_key_value_heads": 4, "vocab_size": 151936, "max_position_embeddings": 40960,
                 "tie_word_embeddings": False, "torch_dtype": "bfloat16", "_name_or_path": "Qwen/Qwen3-30B-A3B"}


def _linear(tensors: dict, name: str, rows_out: int, cols_in: int, quant: str | None) -> None:
    if quant == "awq":  # AutoAWQ layout: int4 packed 8 per int32, fp16 scales and packed zeros per 128-group
        tensors[f"{name}.qweight"] = ("I32", [cols_in, rows_out // 8])
        tensors[f"{name}.qzeros"] = ("I32", [cols_in // 128, rows_out // 8])
        tensors[f"{name}.scales"] = ("F16", [cols_in // 128, rows_out])
    elif quant == "fp8":
        tensors[f"{name}.weight"] = ("F8_E4M3", [rows_out, cols_in])
        tensors[f"{name}.weight_scale"] = ("F32", [1])
    else:
        tensors[f"{name}.weight"] = ("BF16", [rows_out, cols_in])


def tensors_of(config: dict, quant: str | None = None) -> dict:
    h, heads, kv = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // heads
    t: dict = {"model.embed_tokens.weight": ("BF16", [config["vocab_size"], h]),
               "model.norm.weight": ("BF16", [h]), "lm_head.weight": ("BF16", [config["vocab_size"], h])}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        for proj, out in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
            _linear(t, f"{p}.self_attn.{proj}", out, h, quant)
        _linear(t, f"{p}.self_attn.o_proj", h, heads * hd, quant)
        t[f"{p}.input_layernorm.weight"] = ("BF16", [h])
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", [h])
        if config.get("num_experts"):
            t[f"{p}.mlp.gate.weight"] = ("BF16", [config["num_experts"], h])
            for e in range(config["num_experts"]):
                inter = config["moe_intermediate_size"]
                _linear(t, f"{p}.mlp.experts.{e}.gate_proj", inter, h, quant)
                _linear(t, f"{p}.mlp.experts.{e}.up_proj", inter, h, quant)
                _linear(t, f"{p}.mlp.experts.{e}.down_proj", h, inter, quant)
        else:
            inter = config["intermediate_size"]
            _linear(t, f"{p}.mlp.gate_proj", inter, h, quant)
            _linear(t, f"{p}.mlp.up_proj", inter, h, quant)
            _linear(t, f"{p}.mlp.down_proj", h, inter, quant)
    return t


def write_model_dir(out: Path, config: dict, quant: str | None = None, files: int = 2) -> Path:
    """config.json and `files` header-only safetensors shards holding every tensor of this shape."""
    out.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    if quant == "awq":
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}
        config["_name_or_path"] += "-AWQ"
    elif quant == "fp8":
        config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
        config["_name_or_path"] += "-FP8"
    (out / "config.json").write_text(json.dumps(config))
    items = list(tensors_of(config, quant).items())
    per_file = -(-len(items) // files)
    for n in range(files):
        header, offset = {}, 0
        for name, (dtype, shape) in items[n * per_file:(n + 1) * per_file]:
            size = DTYPE_BYTES[dtype]
            for d in shape:
                size *= d
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header).encode()
        (out / f"model-{n + 1:05d}-of-{files:05d}.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return out


# ---- shapes we did not design for (issue #15): real configs and tensor names, headers only ----------------
# Each builder returns (config, tensors, extra files); write_shape_dir writes them with an index like the Hub's.
DTYPE_BYTES.update({"U8": 1, "I8": 1, "F8_E5M2": 1, "I64": 8})


def _mlp(t: dict, p: str, h: int, inter: int, names=("gate_proj", "up_proj", "down_proj"), dtype="BF16") -> None:
    gate, up, down = names
    t[f"{p}.{gate}.weight"] = (dtype, [inter, h])
    t[f"{p}.{up}.weight"] = (dtype, [inter, h])
    t[f"{p}.{down}.weight"] = (dtype, [h, inter])


def _attn(t: dict, p: str, h: int, heads: int, kv: int, hd: int, bias: bool = False, norms: bool = False) -> None:
    t[f"{p}.q_proj.weight"] = ("BF16", [heads * hd, h])
    t[f"{p}.k_proj.weight"] = ("BF16", [kv * hd, h])
    t[f"{p}.v_proj.weight"] = ("BF16", [kv * hd, h])
    t[f"{p}.o_proj.weight"] = ("BF16", [h, heads * hd])
    if bias:
        for proj, n in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
            t[f"{p}.{proj}.bias"] = ("BF16", [n])
    if norms:  # Qwen3 / Gemma 3 QK-norm: one weight of head_dim each
        t[f"{p}.q_norm.weight"] = ("BF16", [hd])
        t[f"{p}.k_norm.weight"] = ("BF16", [hd])


def _dense_llm(c: dict, prefix: str = "model", tied: bool = False, bias: bool = False, norms: bool = False) -> dict:
    h, heads = c["hidden_size"], c["num_attention_heads"]
    kv, hd = c.get("num_key_value_heads") or heads, c.get("head_dim") or h // heads
    t: dict = {f"{prefix}.embed_tokens.weight": ("BF16", [c["vocab_size"], h]), f"{prefix}.norm.weight": ("BF16", [h])}
    if not tied:
        t["lm_head.weight"] = ("BF16", [c["vocab_size"], h])
    for i in range(c["num_hidden_layers"]):
        p = f"{prefix}.layers.{i}"
        _attn(t, f"{p}.self_attn", h, heads, kv, hd, bias, norms)
        _mlp(t, f"{p}.mlp", h, c["intermediate_size"])
        t[f"{p}.input_layernorm.weight"] = ("BF16", [h])
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", [h])
    return t


# https://huggingface.co/mistralai/Mixtral-8x7B-Instruct-v0.1/blob/eba92302a2861cdc0098cc54bc9f17cb2c47eb61/config.json
# tensors model.layers.N.block_sparse_moe.{gate,experts.E.w1,w2,w3}.weight (the Hub's index); 46.7 B / 12.9 B active
MIXTRAL_8X7B = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
                "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
                "max_position_embeddings": 32768, "sliding_window": None, "tie_word_embeddings": False,
                "torch_dtype": "bfloat16", "_name_or_path": "mistralai/Mixtral-8x7B-Instruct-v0.1"}


def mixtral(c: dict = MIXTRAL_8X7B) -> dict:
    h, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    t: dict = {"model.embed_tokens.weight": ("BF16", [c["vocab_size"], h]), "model.norm.weight": ("BF16", [h]),
               "lm_head.weight": ("BF16", [c["vocab_size"], h])}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _attn(t, f"{p}.self_attn", h, heads, kv, h // heads)
        t[f"{p}.block_sparse_moe.gate.weight"] = ("BF16", [c["num_local_experts"], h])
        for e in range(c["num_local_experts"]):
            _mlp(t, f"{p}.block_sparse_moe.experts.{e}", h, c["intermediate_size"], ("w1", "w3", "w2"))
        t[f"{p}.input_layernorm.weight"] = ("BF16", [h])
    return t


# https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite (config.json as duplicated at
# huggingface.co/nicoboss/DeepSeek-V2-Lite-Chat-Uncensored/blame/081e605/config.json): MLA + DeepSeekMoE,
# 15.7 B total / 2.4 B active ("16B total params, 2.4B active params", its model card)
DEEPSEEK_V2_LITE = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": 2048,
                    "intermediate_size": 10944, "moe_intermediate_size": 1408, "n_routed_experts": 64,
                    "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
                    "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16,
                    "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                    "v_head_dim": 128, "vocab_size": 102400, "max_position_embeddings": 163840,
                    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                    "_name_or_path": "deepseek-ai/DeepSeek-V2-Lite-Chat"}
# https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json: 671 B + 14 B MTP, 37 B active; FP8
# weights with 128×128 block scales (weight_scale_inv), layer 61 the MTP module (num_nextn_predict_layers 1)
DEEPSEEK_V3 = {**DEEPSEEK_V2_LITE, "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
               "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
               "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
               "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
               "q_lora_rank": 1536, "vocab_size": 129280, "num_nextn_predict_layers": 1,
               "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                       "weight_block_size": [128, 128]},
               "_name_or_path": "deepseek-ai/DeepSeek-V3"}


def _fp8_block(t: dict, name: str, out: int, inp: int, scale: str = "weight_scale_inv") -> None:
    t[f"{name}.weight"] = ("F8_E4M3", [out, inp])
    t[f"{name}.{scale}"] = ("F32", [-(-out // 128), -(-inp // 128)])


def deepseek(c: dict = DEEPSEEK_V2_LITE) -> dict:
    fp8 = bool(c.get("quantization_config"))
    h, heads = c["hidden_size"], c["num_attention_heads"]
    nope, rope, v, lora, ql = (c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"],
                               c.get("q_lora_rank"))

    def lin(t, name, out, inp):
        if fp8:
            _fp8_block(t, name, out, inp)
        else:
            t[f"{name}.weight"] = ("BF16", [out, inp])

    t: dict = {"model.embed_tokens.weight": ("BF16", [c["vocab_size"], h]), "model.norm.weight": ("BF16", [h]),
               "lm_head.weight": ("BF16", [c["vocab_size"], h])}
    for i in range(c["num_hidden_layers"] + int(c.get("num_nextn_predict_layers") or 0)):
        p = f"model.layers.{i}"
        if ql:
            lin(t, f"{p}.self_attn.q_a_proj", ql, h)
            t[f"{p}.self_attn.q_a_layernorm.weight"] = ("BF16", [ql])
            lin(t, f"{p}.self_attn.q_b_proj", heads * (nope + rope), ql)
        else:
            lin(t, f"{p}.self_attn.q_proj", heads * (nope + rope), h)
        lin(t, f"{p}.self_attn.kv_a_proj_with_mqa", lora + rope, h)
        t[f"{p}.self_attn.kv_a_layernorm.weight"] = ("BF16", [lora])
        lin(t, f"{p}.self_attn.kv_b_proj", heads * (nope + v), lora)
        lin(t, f"{p}.self_attn.o_proj", h, heads * v)
        t[f"{p}.input_layernorm.weight"] = ("BF16", [h])
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", [h])
        if i < c["first_k_dense_replace"]:
            for proj, out, inp in (("gate_proj", c["intermediate_size"], h), ("up_proj", c["intermediate_size"], h),
                                   ("down_proj", h, c["intermediate_size"])):
                lin(t, f"{p}.mlp.{proj}", out, inp)
            continue
        inter, shared = c["moe_intermediate_size"], c["moe_intermediate_size"] * c["n_shared_experts"]
        t[f"{p}.mlp.gate.weight"] = ("BF16", [c["n_routed_experts"], h])
        for e in range(c["n_routed_experts"]):
            for proj, out, inp in (("gate_proj", inter, h), ("up_proj", inter, h), ("down_proj", h, inter)):
                lin(t, f"{p}.mlp.experts.{e}.{proj}", out, inp)
        for proj, out, inp in (("gate_proj", shared, h), ("up_proj", shared, h), ("down_proj", h, shared)):
            lin(t, f"{p}.mlp.shared_experts.{proj}", out, inp)
    return t


# https://huggingface.co/Qwen/Qwen3-32B/blob/main/config.json (re-saved by transformers ≥ 4.56, which writes
# `dtype` where older ones wrote `torch_dtype`); 32.8 B; head_dim 128 ≠ hidden/heads = 80
QWEN3_32B = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 5120,
             "intermediate_size": 25600, "num_hidden_layers": 64, "num_attention_heads": 64, "head_dim": 128,
             "num_key_value_heads": 8, "vocab_size": 151936, "max_position_embeddings": 40960,
             "sliding_window": None, "use_sliding_window": False, "tie_word_embeddings": False, "dtype": "bfloat16",
             "_name_or_path": "Qwen/Qwen3-32B"}
# https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json: 8.03 B
LLAMA31_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
              "rope_scaling": {"factor": 8.0, "rope_type": "llama3", "original_max_position_embeddings": 8192},
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}
# https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct/blob/main/config.json: tied embeddings, no lm_head tensor
LLAMA32_1B = {**LLAMA31_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "head_dim": 64, "tie_word_embeddings": True,
              "_name_or_path": "meta-llama/Llama-3.2-1B-Instruct"}


def qwen3(c: dict = QWEN3_32B) -> dict:
    return _dense_llm(c, norms=True)


def llama(c: dict = LLAMA31_8B) -> dict:
    return _dense_llm(c, tied=bool(c.get("tie_word_embeddings")))


# https://huggingface.co/google/gemma-3-27b-it/blob/main/config.json: the LLM under text_config, which leaves
# out what Gemma3TextConfig defaults (vocab_size 262208, max_position_embeddings 131072); tensors
# language_model.model.* (tied: no lm_head), vision_tower.vision_model.* (SigLIP, 27 layers, 1152 wide),
# multi_modal_projector.*; 5 of every 6 layers slide over 1024 tokens. 27.4 B with the 0.4 B tower.
GEMMA3_27B = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
              "text_config": {"model_type": "gemma3_text", "hidden_size": 5376, "intermediate_size": 21504,
                              "num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16,
                              "head_dim": 128, "sliding_window": 1024, "sliding_window_pattern": 6,
                              "query_pre_attn_scalar": 168,
                              "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
              "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                                "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896,
                                "patch_size": 14},
              "mm_tokens_per_image": 256, "torch_dtype": "bfloat16", "_name_or_path": "google/gemma-3-27b-it"}
GEMMA3_VOCAB = 262208


def gemma3(c: dict = GEMMA3_27B) -> dict:
    text, vis = c["text_config"], c["vision_config"]
    t = _dense_llm({**text, "vocab_size": GEMMA3_VOCAB}, prefix="language_model.model", tied=True, norms=True)
    vh, vi = vis["hidden_size"], vis["intermediate_size"]
    for i in range(vis["num_hidden_layers"]):
        p = f"vision_tower.vision_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[f"{p}.self_attn.{proj}.weight"] = ("BF16", [vh, vh])
        t[f"{p}.mlp.fc1.weight"] = ("BF16", [vi, vh])
        t[f"{p}.mlp.fc2.weight"] = ("BF16", [vh, vi])
    t["vision_tower.vision_model.embeddings.patch_embedding.weight"] = ("BF16", [vh, 3, 14, 14])
    t["multi_modal_projector.mm_input_projection_weight"] = ("BF16", [vh, text["hidden_size"]])
    return t


# https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json (the LLM's fields at the top level,
# vision_config beside them; tensors model.layers.*, lm_head, visual.blocks.N.*: 0.67 B of its 8.3 B)
QWEN25_VL_7B = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
                "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 128000,
                "sliding_window": 32768, "use_sliding_window": False, "tie_word_embeddings": False,
                "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "out_hidden_size": 3584},
                "torch_dtype": "bfloat16", "_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct"}


def qwen25_vl(c: dict = QWEN25_VL_7B) -> dict:
    t = _dense_llm(c, bias=True)
    vh, vi = c["vision_config"]["hidden_size"], c["vision_config"]["intermediate_size"]
    for i in range(c["vision_config"]["depth"]):
        p = f"visual.blocks.{i}"
        t[f"{p}.attn.qkv.weight"] = ("BF16", [3 * vh, vh])
        t[f"{p}.attn.proj.weight"] = ("BF16", [vh, vh])
        _mlp(t, f"{p}.mlp", vh, vi)
    t["visual.merger.mlp.0.weight"] = ("BF16", [4 * vh, 4 * vh])
    t["visual.merger.mlp.2.weight"] = ("BF16", [c["hidden_size"], 4 * vh])
    return t


# https://huggingface.co/openai/gpt-oss-20b/blob/main/config.json (fields as listed in EchoCog/gpt-oss-20b
# docs/gpt-oss-20b-architecture.md): 24 layers alternating sliding (128) / full attention, 32 experts, 4 per
# token, experts fused per layer in MXFP4 — mlp.experts.{gate_up,down}_proj_{blocks,scales} (U8: 16 bytes of
# 32 fp4 values per block, one e8m0 scale per block) + bf16 biases; attention, router, embeddings bf16.
# 20.9 B total / 3.6 B active (its model card); 12.8 GB on disk.
GPT_OSS_20B = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880,
               "intermediate_size": 2880, "num_hidden_layers": 24, "num_attention_heads": 64, "head_dim": 64,
               "num_key_value_heads": 8, "num_local_experts": 32, "num_experts_per_tok": 4, "experts_per_token": 4,
               "vocab_size": 201088, "max_position_embeddings": 131072, "sliding_window": 128,
               "layer_types": ["sliding_attention", "full_attention"] * 12, "tie_word_embeddings": False,
               "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
                   "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
               "torch_dtype": "bfloat16", "_name_or_path": "openai/gpt-oss-20b"}


def gpt_oss(c: dict = GPT_OSS_20B) -> dict:
    h, e, inter = c["hidden_size"], c["num_local_experts"], c["intermediate_size"]
    t: dict = {"model.embed_tokens.weight": ("BF16", [c["vocab_size"], h]), "model.norm.weight": ("BF16", [h]),
               "lm_head.weight": ("BF16", [c["vocab_size"], h])}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _attn(t, f"{p}.self_attn", h, c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], bias=True)
        t[f"{p}.self_attn.o_proj.bias"] = ("BF16", [h])
        t[f"{p}.self_attn.sinks"] = ("BF16", [c["num_attention_heads"]])
        t[f"{p}.mlp.router.weight"] = ("BF16", [e, h])
        t[f"{p}.mlp.router.bias"] = ("BF16", [e])
        t[f"{p}.mlp.experts.gate_up_proj_blocks"] = ("U8", [e, 2 * inter, h // 32, 16])
        t[f"{p}.mlp.experts.gate_up_proj_scales"] = ("U8", [e, 2 * inter, h // 32])
        t[f"{p}.mlp.experts.gate_up_proj_bias"] = ("BF16", [e, 2 * inter])
        t[f"{p}.mlp.experts.down_proj_blocks"] = ("U8", [e, h, inter // 32, 16])
        t[f"{p}.mlp.experts.down_proj_scales"] = ("U8", [e, h, inter // 32])
        t[f"{p}.mlp.experts.down_proj_bias"] = ("BF16", [e, h])
        t[f"{p}.input_layernorm.weight"] = ("BF16", [h])
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", [h])
    return t


def _quantized_linears(t: dict, quant) -> dict:
    """Every q/k/v/o and MLP projection of a dense bf16 tensor list rewritten in another storage format."""
    out: dict = {}
    for name, (dtype, shape) in t.items():
        if not (name.endswith("_proj.weight") and len(shape) == 2):
            out[name] = (dtype, shape)
            continue
        quant(out, name[: -len(".weight")], shape[0], shape[1])
    return out


# https://huggingface.co/Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4: GPTQ layout (AutoGPTQ/GPTQModel) — qweight I32
# [in/8, out], qzeros I32 [in/128, out/8], scales F16 [in/128, out], g_idx I32 [in]; ≈19 GB
GPTQ_CONFIG = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
               "damp_percent": 0.01}


def gptq(c: dict = QWEN25_32B) -> dict:
    def q(t, name, out, inp):
        t[f"{name}.qweight"] = ("I32", [inp // 8, out])
        t[f"{name}.qzeros"] = ("I32", [inp // 128, out // 8])
        t[f"{name}.scales"] = ("F16", [inp // 128, out])
        t[f"{name}.g_idx"] = ("I32", [inp])
    return _quantized_linears(_dense_llm(c, bias=True), q)


# https://huggingface.co/Qwen/Qwen3-32B-FP8/blob/main/config.json: quant_method fp8, weight_block_size
# [128, 128], weight_scale_inv F32 per block. And the same in llm-compressor's compressed-tensors form
# (RedHatAI's FP8-block builds): config_groups weights num_bits 8 type float strategy block, weight_scale.
QWEN3_FP8_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
COMPRESSED_FP8_BLOCK = {"quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
                        "config_groups": {"group_0": {"targets": ["Linear"],
                                                      "weights": {"num_bits": 8, "type": "float", "strategy": "block",
                                                                  "block_structure": [128, 128], "symmetric": True,
                                                                  "dynamic": False},
                                                      "input_activations": {"num_bits": 8, "type": "float",
                                                                            "strategy": "group", "group_size": 128,
                                                                            "dynamic": True}}}}


def fp8_block(c: dict = QWEN3_32B, scale: str = "weight_scale_inv") -> dict:
    return _quantized_linears(_dense_llm(c, norms=True), lambda t, n, o, i: _fp8_block(t, n, o, i, scale))


# https://huggingface.co/nvidia/Qwen3-32B-NVFP4 (ModelOpt export): weight U8 [out, in/2] (two fp4 a byte),
# weight_scale F8_E4M3 [out, in/16], weight_scale_2 and input_scale F32 scalars; lm_head kept bf16. ModelOpt
# states the scheme in hf_quant_config.json — vLLM detects ModelOpt checkpoints by that file
# (vllm-project/vllm docs/features/quantization/modelopt.md) —, config.json may carry no quantization_config.
NVFP4_QUANT_FILE = {"producer": {"name": "modelopt", "version": "0.29.0"},
                    "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "group_size": 16,
                                     "exclude_modules": ["lm_head"]}}


def nvfp4(c: dict = QWEN3_32B) -> dict:
    def q(t, name, out, inp):
        t[f"{name}.weight"] = ("U8", [out, inp // 2])
        t[f"{name}.weight_scale"] = ("F8_E4M3", [out, inp // 16])
        t[f"{name}.weight_scale_2"] = ("F32", [])
        t[f"{name}.input_scale"] = ("F32", [])
    return _quantized_linears(_dense_llm(c, norms=True), q)


def write_shape_dir(out: Path, config: dict, tensors: dict, files: int = 2, index: bool = True,
                    extra: dict | None = None) -> Path:
    """config.json, `files` header-only shards holding `tensors` and (like the Hub) model.safetensors.index.json;
    `extra` names more files to write (name → bytes or a JSON-able dict)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    items = list(tensors.items())
    per_file = -(-len(items) // files)
    weight_map, total = {}, 0
    for n in range(files):
        header, offset = {}, 0
        name = f"model-{n + 1:05d}-of-{files:05d}.safetensors"
        for tensor, (dtype, shape) in items[n * per_file:(n + 1) * per_file]:
            size = DTYPE_BYTES[dtype]
            for d in shape:
                size *= d
            header[tensor] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            weight_map[tensor] = name
            offset += size
        total += offset
        raw = json.dumps(header).encode()
        (out / name).write_bytes(struct.pack("<Q", len(raw)) + raw)
    if index:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    for name, content in (extra or {}).items():
        (out / name).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return out
