"""Metadata-only model directories: a real model's config.json and safetensors *headers*, no weights.

The memory-fit verdict reads only these, so a few hundred KB stand in for a 65 GB download: the
rehearsal and the tests give the verdict for the plan's real model (Qwen2.5-32B-Instruct) on a
machine with no GPU and no Hub. The files are clearly not loadable (the header promises bytes the
file does not hold); only the vLLM simulator, which never reads weights, is pointed at them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# Qwen/Qwen2.5-32B-Instruct's config.json (the fields vLLM and the verdict read), as published.
QWEN25_32B_INSTRUCT = {
    "_name_or_path": "Qwen/Qwen2.5-32B-Instruct",
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "num_hidden_layers": 64,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}


def qwen2_tensors(config: dict) -> dict[str, list[int]]:
    """Tensor names and shapes of a Qwen2ForCausalLM checkpoint with this config."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h]}
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = [v, h]
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
            p + "self_attn.q_proj.weight": [heads * d, h], p + "self_attn.q_proj.bias": [heads * d],
            p + "self_attn.k_proj.weight": [kv * d, h], p + "self_attn.k_proj.bias": [kv * d],
            p + "self_attn.v_proj.weight": [kv * d, h], p + "self_attn.v_proj.bias": [kv * d],
            p + "self_attn.o_proj.weight": [h, heads * d],
            p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h], p + "mlp.down_proj.weight": [h, i],
        })
    return shapes


def write_metadata_only(out: Path, config: dict = QWEN25_32B_INSTRUCT, dtype: str = "BF16",
                        bytes_per_element: int = 2, shards: int = 17) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    names = list(qwen2_tensors(config).items())
    per_shard = -(-len(names) // shards)
    weight_map = {}
    for s in range(shards):
        filename = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt", "graphrag_migrate": "metadata only, no weights"}}
        offset = 0
        for name, shape in names[s * per_shard:(s + 1) * per_shard]:
            n = 1
            for dim in shape:
                n *= dim
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n * bytes_per_element]}
            offset += n * bytes_per_element
            weight_map[name] = filename
        raw = json.dumps(header).encode()
        (out / filename).write_bytes(struct.pack("<Q", len(raw)) + raw)
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=1))
    return out
