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
