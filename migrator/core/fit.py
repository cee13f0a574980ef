"""Will the model fit? A verdict from metadata alone, before anything is downloaded.

Exact weight bytes come from the safetensors headers (on disk, or from the Hub with HTTP range
requests through huggingface_hub); layers, KV heads and head size from config.json. Then

    KV bytes per token = 2 (K and V) × layers × kv_heads × head_dim × bytes per KV element
    KV budget          = memory vLLM may use − weights − overhead allowance
    tokens of KV       = KV budget / KV bytes per token

and the verdict: fits / fits with changes / does not fit, with concrete advice.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from migrator.core.errors import EnvironmentMissing

GiB = 2**30
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
               "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
KV_DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
# AWQ/GPTQ-Int4: 4-bit weights plus group scales; embeddings and lm_head stay 16-bit (≈19 GB for 32.5 B).
INT4_BYTES_PER_PARAM = 0.585
UNIFIED_HEADROOM_BYTES = 8 * GiB  # left to the OS, the backend and Ollama's embedding model


@dataclass
class ModelInfo:
    name: str
    weight_bytes: int
    parameters: int
    layers: int
    kv_heads: int
    head_dim: int
    max_positions: int
    quantization: str = ""  # awq, gptq, fp8 … from config.json's quantization_config
    source: str = ""  # where the numbers came from
    config: dict = field(default_factory=dict, repr=False)  # the language model's config (speed needs its shape)
    tensor_bytes: dict = field(default_factory=dict, repr=False)  # tensor name → bytes, from the headers

    @property
    def kv_bytes_per_token_bf16(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


@dataclass
class Budget:
    total_bytes: int  # the GPU's memory, or on unified memory the whole pool
    available_bytes: int  # free now (GPU free, or MemAvailable on unified memory): Ollama's share already gone
    unified: bool
    held_by_ollama: int = 0  # what Ollama's chat model holds: credited back when it will be unloaded
    source: str = ""
    assumed: bool = False  # a planning size (--assume-gpu-memory), not this host's memory


@dataclass
class Verdict:
    verdict: str  # fits | fits with changes | does not fit
    reasons: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    changes: dict = field(default_factory=dict)  # the settings the advice names, {"vllm.KEY": value}

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": self.reasons, "advice": self.advice, "figures": self.figures,
                "changes": self.changes}


# ---- reading model metadata ------------------------------------------------------------------
def from_config(name: str, config: dict, weight_bytes: int, parameters: int, source: str,
                tensor_bytes: dict | None = None) -> ModelInfo:
    text = config.get("text_config", config)  # multimodal configs nest the language model's
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    quant = (text.get("quantization_config") or config.get("quantization_config") or {}).get("quant_method", "")
    return ModelInfo(name, weight_bytes, parameters, int(text["num_hidden_layers"]),
                     int(text.get("num_key_value_heads") or heads), head_dim,
                     int(text.get("max_position_embeddings", 0)), str(quant), source,
                     {**text, "tie_word_embeddings": config.get("tie_word_embeddings", text.get("tie_word_embeddings"))},
                     dict(tensor_bytes or {}))


def _header_bytes(header: dict, tensor_bytes: dict | None = None) -> tuple[int, int]:
    """(bytes, parameters) of the tensors listed in one safetensors header; each tensor's bytes into
    `tensor_bytes` (the speed prediction tells experts, embeddings and lm_head apart by name)."""
    total = params = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        total += end - start
        if tensor_bytes is not None:
            tensor_bytes[name] = end - start
        n = 1
        for d in info["shape"]:
            n *= d
        params += n
    return total, params


def read_local(model_dir: Path) -> ModelInfo:
    """From config.json and the safetensors headers on disk (8-byte length, then a JSON header)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except FileNotFoundError:
        raise EnvironmentMissing(f"{model_dir} has no config.json", "point model.id at a model directory") from None
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise EnvironmentMissing(f"{model_dir} has no *.safetensors files", "vLLM needs safetensors weights")
    total = params = 0
    tensors: dict = {}
    for path in files:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            b, p = _header_bytes(json.loads(f.read(size)), tensors)
        total, params = total + b, params + p
    return from_config(_local_name(model_dir, config), config, total, params,
                        f"{len(files)} local safetensors file(s) in {model_dir}", tensors)


def _local_name(model_dir: Path, config: dict) -> str:
    """ORG/NAME for advice: from config's _name_or_path, or an HF cache path (models--ORG--NAME/…)."""
    named = str(config.get("_name_or_path", ""))
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", named):
        return named
    for part in model_dir.resolve().parts:
        if part.startswith("models--"):
            return part[len("models--"):].replace("--", "/", 1)
    return model_dir.name


# ---- the verdict ---------------------------------------------------------------------------------
def overhead_bytes(model: ModelInfo) -> int:
    """Activations, CUDA graphs and the sampler: vLLM profiles them; this allowance is deliberately generous."""
    return int(1.5 * GiB + 0.05 * model.weight_bytes)


def quantized_variant(name: str) -> str:
    base = re.sub(r"(-AWQ|-GPTQ.*|-FP8)$", "", name, flags=re.I)
    return f"{base}-AWQ"


def assess(model: ModelInfo, budget: Budget, gpu_memory_utilization: float, max_model_len: int,
           kv_cache_dtype: str = "auto", may_unload_ollama: bool = False) -> Verdict:
    kv_per_token = 2 * model.layers * model.kv_heads * model.head_dim * KV_DTYPE_BYTES.get(kv_cache_dtype, 2)
    # What is free now already excludes what Ollama holds (nvidia-smi's free, MemAvailable): subtracting it
    # again would count it twice; unloading it first (--unload-ollama) gives it back.
    held = 0 if may_unload_ollama else budget.held_by_ollama
    freed = budget.held_by_ollama if may_unload_ollama else 0
    usable_now = max(0, budget.available_bytes + freed - (UNIFIED_HEADROOM_BYTES if budget.unified else 0))
    configured = int(gpu_memory_utilization * budget.total_bytes)
    vllm_bytes = min(configured, usable_now)
    overhead = overhead_bytes(model)
    kv_budget = vllm_bytes - model.weight_bytes - overhead
    kv_tokens = max(0, kv_budget // kv_per_token)
    figures = {
        "weight_gib": round(model.weight_bytes / GiB, 2), "parameters_b": round(model.parameters / 1e9, 2),
        "kv_bytes_per_token": kv_per_token, "overhead_gib": round(overhead / GiB, 2),
        "budget_gib": round(vllm_bytes / GiB, 2), "configured_gib": round(configured / GiB, 2),
        "usable_now_gib": round(usable_now / GiB, 2), "ollama_held_gib": round(held / GiB, 2),
        "ollama_freed_gib": round(freed / GiB, 2), "kv_budget_bytes": int(max(0, kv_budget)),
        "kv_tokens": int(kv_tokens), "max_model_len": max_model_len,
        "max_concurrency_at_max_len": round(kv_tokens / max_model_len, 2) if max_model_len else 0,
        "unified_memory": budget.unified,
    }
    verdict = Verdict("fits", figures=figures)
    safe_util = round(max(0.05, min(0.95, usable_now / budget.total_bytes)) - 0.005, 2) if budget.total_bytes else 0
    figures["safe_gpu_memory_utilization"] = safe_util
    if configured > usable_now:
        what = "unified memory pool" if budget.unified else "GPU"
        verdict.reasons.append(
            f"gpu_memory_utilization {gpu_memory_utilization} asks for {configured / GiB:.1f} GiB of the "
            f"{budget.total_bytes / GiB:.0f} GiB {what}, but only {usable_now / GiB:.1f} GiB can be used now"
            + (f" ({held / GiB:.1f} GiB held by Ollama)" if held else ""))
        verdict.advice.append(f"set vllm.gpu_memory_utilization to {safe_util}")
        verdict.changes["vllm.gpu_memory_utilization"] = safe_util
        if held:
            verdict.advice.append("or let phase1 unload Ollama's chat model first (--unload-ollama)")
    if model.weight_bytes + overhead > vllm_bytes:
        verdict.verdict = "does not fit"
        verdict.reasons.append(
            f"weights {model.weight_bytes / GiB:.1f} GiB + {overhead / GiB:.1f} GiB overhead exceed the "
            f"{vllm_bytes / GiB:.1f} GiB vLLM may use")
        if not model.quantization:
            int4 = int(model.parameters * INT4_BYTES_PER_PARAM)
            int4_kv = vllm_bytes - int4 - int(1.5 * GiB + 0.05 * int4)
            fits_int4 = int4_kv >= kv_per_token * max_model_len
            verdict.advice.append(
                f"use a 4-bit variant: {quantized_variant(model.name)} (AWQ; vLLM picks awq_marlin itself, do not "
                f"pass --quantization awq) or the GPTQ-Int4 build — ≈{int4 / GiB:.0f} GiB of weights, "
                + (f"leaving ≈{int4_kv // kv_per_token:,} tokens of KV cache" if fits_int4
                   else "still too large here"))
        verdict.advice.append("or more GPUs with vllm.tensor_parallel_size")
        return verdict
    need = kv_per_token * max_model_len
    if kv_budget < need:
        verdict.verdict = "fits with changes"
        verdict.reasons.append(
            f"KV cache for one {max_model_len}-token sequence needs {need / GiB:.2f} GiB; "
            f"{max(0, kv_budget) / GiB:.2f} GiB is left after the weights")
        longest = int(kv_tokens // 256 * 256)
        if longest >= 256:
            verdict.advice.append(f"set vllm.max_model_len to {longest} (or less)")
            verdict.changes["vllm.max_model_len"] = longest
        if kv_cache_dtype == "auto":
            verdict.advice.append("or add --kv-cache-dtype fp8 (halves the KV cache) to vllm.extra_args")
    elif verdict.reasons:
        verdict.verdict = "fits with changes"
    return verdict


def advised_settings(model: ModelInfo, budget: Budget, gpu_memory_utilization: float, max_model_len: int,
                     kv_cache_dtype: str = "auto", may_unload_ollama: bool = False) -> tuple[dict, Verdict]:
    """The settings that turn a "fits with changes" verdict into "fits", and the verdict with them.

    Applied one round at a time (a lower gpu_memory_utilization leaves less KV room, so the longest
    max_model_len is judged again under it), so that the values named are ones that really fit."""
    util, length, changes = gpu_memory_utilization, max_model_len, {}
    verdict = assess(model, budget, util, length, kv_cache_dtype, may_unload_ollama)
    for _ in range(3):
        if verdict.verdict != "fits with changes" or not verdict.changes:
            break
        changes.update(verdict.changes)
        util = changes.get("vllm.gpu_memory_utilization", util)
        length = changes.get("vllm.max_model_len", length)
        verdict = assess(model, budget, util, length, kv_cache_dtype, may_unload_ollama)
    return changes, verdict
