"""Will the model fit? A verdict from metadata alone, before anything is downloaded.

Exact weight bytes come from the safetensors headers (on disk, or from the Hub with HTTP range
requests through huggingface_hub); layers, KV heads and head size from config.json. Then

    KV bytes per token = 2 (K and V) × layers × kv_heads × head_dim × bytes per KV element
                         (MLA, DeepSeek V2/V3: layers × (kv_lora_rank + qk_rope_head_dim) × bytes)
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
SLIDING_SLACK_TOKENS = 16  # a sliding layer holds its window plus the block being written (vLLM's block size)


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
    mla_dim: int = 0  # MLA (DeepSeek): kv_lora_rank + qk_rope_head_dim, the one latent vector cached per layer
    sliding_layers: int = 0  # layers that attend over the last `sliding_window` tokens only (hybrid models)
    sliding_window: int = 0

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto", context: int | None = None) -> int:
        """KV bytes per token; with `context`, averaged over a sequence of that many tokens — on a hybrid
        model (gpt-oss, Gemma 2/3) vLLM's hybrid KV cache manager keeps only the window's tokens for the
        sliding layers (docs.vllm.ai design/hybrid_kv_cache_manager), so long sequences cost less per token."""
        every = kv_bytes_per_token(self.layers, self.kv_heads, self.head_dim, self.mla_dim, kv_cache_dtype)
        if not context or not self.sliding_layers or context <= self.sliding_window:
            return every
        per_layer = every // self.layers
        held = min(context, self.sliding_window + SLIDING_SLACK_TOKENS)
        return -(-(per_layer * ((self.layers - self.sliding_layers) * context + self.sliding_layers * held)) // context)

    @property
    def kv_bytes_per_token_bf16(self) -> int:
        return self.kv_bytes_per_token("auto")


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, mla_dim: int = 0, kv_cache_dtype: str = "auto") -> int:
    """K and V of every KV head in every layer; with MLA (DeepSeek V2/V3) vLLM caches one compressed latent
    of kv_lora_rank + qk_rope_head_dim per layer instead ([blocks, block_size, 1, kv_lora_rank + rope] in
    vLLM's MLA backend, docs.vllm.ai v0.9.0 kv_connector/utils.py), 7–60× less than 2·heads·head_dim."""
    per_element = KV_DTYPE_BYTES.get(kv_cache_dtype, 2)
    if mla_dim:
        return layers * mla_dim * per_element
    return 2 * layers * kv_heads * head_dim * per_element


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
# transformers' own head_dim defaults where the config may leave it out and hidden/heads is NOT the answer
# (Qwen3Config head_dim=128, Gemma/Gemma2/Gemma3TextConfig head_dim=256).
_HEAD_DIM_DEFAULTS = {"qwen3": 128, "qwen3_moe": 128, "gemma": 256, "gemma2": 256, "gemma3_text": 256}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_VISION = re.compile(r"(?:^|\.)(?:visual|vision_tower|vision_model|vision_encoder|multi_modal_projector|"
                     r"mm_projector|audio_tower|image_newline)(?:\.|$)")


def is_encoder_tensor(name: str) -> bool:
    """A vision/audio tower or projector tensor of a multimodal checkpoint: loaded, not read per text token."""
    return bool(_VISION.search(name))


def _shape_of(shapes: dict, suffix: str) -> list | None:
    """The shape of the first language-model tensor whose name ends with `suffix` (vision towers skipped)."""
    for name in sorted(shapes):
        if name.endswith(suffix) and not is_encoder_tensor(name):
            return shapes[name]
    return None


def _infer(text: dict, shapes: dict) -> tuple[dict, list[str]]:
    """Fields config.json leaves out, read from the tensor shapes the headers list (what vLLM will load),
    and a note for each one so the source says where it came from."""
    text, notes = dict(text), []
    if not shapes:
        return text, notes
    embed = _shape_of(shapes, "embed_tokens.weight")
    if embed and not text.get("vocab_size"):
        text["vocab_size"] = int(embed[0])
        notes.append("vocab_size from the embedding's shape")
    if embed and not text.get("hidden_size"):
        text["hidden_size"] = int(embed[1])
        notes.append("hidden_size from the embedding's shape")
    if not text.get("num_hidden_layers"):
        found = {int(m.group(1)) for n in shapes if not is_encoder_tensor(n) for m in [_LAYER.search(n)] if m}
        if found:
            text["num_hidden_layers"] = max(found) + 1
            notes.append("num_hidden_layers from the tensor names")
    heads = text.get("num_attention_heads")
    if heads and not text.get("head_dim") and not text.get("kv_lora_rank"):
        norm = _shape_of(shapes, "self_attn.q_norm.weight")
        q = _shape_of(shapes, "self_attn.q_proj.weight")
        if norm:
            text["head_dim"] = int(norm[0])
            notes.append("head_dim from q_norm's shape")
        elif q and int(q[0]) % int(heads) == 0:
            text["head_dim"] = int(q[0]) // int(heads)
            notes.append("head_dim from q_proj's shape")
    if heads and not text.get("num_key_value_heads") and not text.get("kv_lora_rank"):
        k, hd = _shape_of(shapes, "self_attn.k_proj.weight"), text.get("head_dim")
        if k and hd and int(k[0]) % int(hd) == 0:
            text["num_key_value_heads"] = int(k[0]) // int(hd)
            notes.append("num_key_value_heads from k_proj's shape")
    return text, notes


def sliding_layers(text: dict) -> tuple[int, int]:
    """(layers with a sliding window, the window) where the config says per layer which slide — `layer_types`
    (gpt-oss, transformers ≥ 4.53), Gemma 3's `sliding_window_pattern` (every Nth layer global), Gemma 2's
    alternation. A window on every layer (Mistral-7B-v0.1) or Qwen's `use_sliding_window: false` is not
    modelled: its KV cache is counted in full, which can only overstate it."""
    window, layers = int(text.get("sliding_window") or 0), int(text.get("num_hidden_layers") or 0)
    types = text.get("layer_types")
    if not window or not layers:
        return 0, 0
    if isinstance(types, list) and types:
        n = sum(1 for t in types[:layers] if t == "sliding_attention")
        return (n, window) if n < layers else (0, 0)
    kind = str(text.get("model_type", ""))
    if kind in ("gemma3_text", "gemma3"):
        pattern = int(text.get("sliding_window_pattern") or 6)
        return sum(1 for i in range(layers) if (i + 1) % pattern), window
    if kind == "gemma2":
        return (layers + 1) // 2, window
    return 0, 0


def from_config(name: str, config: dict, weight_bytes: int, parameters: int, source: str,
                tensor_bytes: dict | None = None, tensor_shapes: dict | None = None) -> ModelInfo:
    """The language model's shape from config.json — the nested `text_config` of a multimodal one —, gaps
    filled from the tensor shapes where the headers give them; a field still missing is one clear error."""
    nested = "text_config" in config
    text, notes = _infer(config.get("text_config") or config, tensor_shapes or {})
    where = "config.json's text_config" if nested else "config.json"
    for key in ("num_attention_heads", "num_hidden_layers", "hidden_size"):
        if not text.get(key):
            raise EnvironmentMissing(
                f"{name}: {where} has no {key} (and the safetensors headers do not give it)",
                "the memory verdict needs the language model's shape: use a checkpoint whose config.json states it")
    for key in ("num_attention_heads", "num_hidden_layers", "hidden_size", "num_key_value_heads", "head_dim",
                "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "max_position_embeddings"):
        value = text.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise EnvironmentMissing(  # per-layer lists (variable heads) and other shapes the arithmetic has none for
                f"{name}: {where} gives {key} as {json.dumps(value)[:60]}, not one number: "
                "a per-layer shape the memory verdict does not model", "check the model's card for its memory needs")
    heads = int(text["num_attention_heads"])
    mla = int(text.get("kv_lora_rank") or 0) + int(text.get("qk_rope_head_dim") or 0) if text.get("kv_lora_rank") else 0
    head_dim = text.get("head_dim")
    if not head_dim and mla:  # MLA: the query/key head is qk_nope + qk_rope (used for FLOPs, not for the KV cache)
        head_dim = int(text.get("qk_nope_head_dim") or 0) + int(text.get("qk_rope_head_dim") or 0)
    if not head_dim:
        head_dim = _HEAD_DIM_DEFAULTS.get(str(text.get("model_type", "")), int(text["hidden_size"]) // heads)
        notes.append(f"head_dim {head_dim} assumed (transformers' default for {text.get('model_type') or 'its type'})")
    text["head_dim"] = int(head_dim)
    quant_config = text.get("quantization_config") or config.get("quantization_config") or {}
    quant = quant_config.get("quant_method", "")
    for key in ("quantization_config", "torch_dtype", "dtype"):  # top-level in multimodal configs
        if key not in text and key in config:
            text[key] = config[key]
    if notes:
        source += " (" + "; ".join(notes) + ")"
    return ModelInfo(name, weight_bytes, parameters, int(text["num_hidden_layers"]),
                     int(text.get("num_key_value_heads") or heads), int(head_dim),
                     int(text.get("max_position_embeddings") or 0), str(quant), source,
                     {**text, "tie_word_embeddings": config.get("tie_word_embeddings", text.get("tie_word_embeddings"))},
                     dict(tensor_bytes or {}), mla, *(sliding_layers(text) if not mla else (0, 0)))


def _header_bytes(header: dict, tensor_bytes: dict | None = None, shapes: dict | None = None) -> tuple[int, int]:
    """(bytes, parameters) of the tensors listed in one safetensors header; each tensor's bytes into
    `tensor_bytes` (the speed prediction tells experts, embeddings and lm_head apart by name) and its shape
    into `shapes` (what config.json leaves out is read from them)."""
    total = params = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        total += end - start
        if tensor_bytes is not None:
            tensor_bytes[name] = end - start
        if shapes is not None:
            shapes[name] = list(info["shape"])
        n = 1
        for d in info["shape"]:
            n *= d
        params += _weights_in(name, str(info.get("dtype", "")), n)
    return total, params


# Quantization side tensors (scales, zero points, group indices, shapes): bytes to load, not parameters.
_SIDE = re.compile(r"(?:[._](?:scales|qzeros|g_idx|weight_scale|weight_scale_inv|weight_scale_2|input_scale|"
                   r"weight_zero_point|weight_global_scale|input_global_scale|weight_shape|k_scale|v_scale))$")


def _weights_in(name: str, dtype: str, elements: int) -> int:
    """Parameters a tensor holds: packed integer storage unpacked (AWQ/GPTQ `qweight` and compressed-tensors
    `weight_packed`: eight 4-bit weights an int32; MXFP4 `_blocks` and NVFP4's U8 `weight`: two a byte)."""
    if _SIDE.search(name):
        return 0
    if dtype == "I32" and name.endswith(("qweight", "weight_packed")):
        return elements * 8
    if dtype == "U8" and (name.endswith("_blocks") or name.endswith(".weight")):
        return elements * 2
    return elements


def _read_header(path: Path) -> dict:
    """One safetensors header: 8-byte little-endian length, then that much JSON. A truncated or foreign
    file (an interrupted download, a Git LFS pointer) is one clear error, not a crash."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a safetensors header")
            (size,) = struct.unpack("<Q", raw)
            if size > 512 * 2**20:
                raise ValueError(f"header length {size} is not plausible")
            text = f.read(size)
            if len(text) < size:
                raise ValueError("the header is cut off")
            header = json.loads(text)
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            return header
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvironmentMissing(f"{path} is not a readable safetensors file ({exc})",
                                 "the download is incomplete or the file is not safetensors: download it again") from None


def _weight_files(model_dir: Path) -> tuple[list[Path], str]:
    """The safetensors files vLLM loads: those the index names when there is one (a Mistral repo also ships
    consolidated.safetensors, the same weights again), else every *.safetensors; and a note on what was left."""
    index = model_dir / "model.safetensors.index.json"
    files = sorted(model_dir.glob("*.safetensors"))
    if not index.exists():
        return files, ""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map") or {}
    except ValueError:
        raise EnvironmentMissing(f"{index} is not valid JSON", "download the model again") from None
    named = sorted(set(weight_map.values()))
    if not named:  # an index that names nothing says nothing: read what is there, as vLLM would
        return files, "; its index names no shard" if files else ""
    missing = [n for n in named if not (model_dir / n).exists()]
    if missing:
        raise EnvironmentMissing(
            f"{model_dir} is incomplete: {len(missing)} of the {len(named)} shards its index names are missing "
            f"({', '.join(missing[:3])}{' …' if len(missing) > 3 else ''})",
            "finish the download (phase1 resumes it), or point model.id at the Hub id")
    extra = [p.name for p in files if p.name not in set(named)]
    return [model_dir / n for n in named], (f"; not in the index, so not loaded: {', '.join(extra)}" if extra else "")


def _quant_file(model_dir: Path) -> dict:
    """ModelOpt checkpoints (NVIDIA's NVFP4/FP8) may state their quantization only in hf_quant_config.json,
    which is where vLLM looks for it: as a quantization_config."""
    path = model_dir / "hf_quant_config.json"
    try:
        return modelopt_quant(json.loads(path.read_text())) if path.exists() else {}
    except ValueError:
        return {}


def modelopt_quant(hf_quant_config: dict) -> dict:
    """hf_quant_config.json's `quantization` as the quantization_config vLLM takes it for ({} if none)."""
    q = hf_quant_config.get("quantization") if isinstance(hf_quant_config, dict) else None
    return {"quant_method": "modelopt", **q} if isinstance(q, dict) and q.get("quant_algo") else {}


def read_local(model_dir: Path) -> ModelInfo:
    """From config.json and the safetensors headers on disk (8-byte length, then a JSON header)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except FileNotFoundError:
        raise EnvironmentMissing(f"{model_dir} has no config.json", "point model.id at a model directory") from None
    except ValueError:
        raise EnvironmentMissing(f"{model_dir}/config.json is not valid JSON", "download the model again") from None
    files, note = _weight_files(model_dir)
    if not files:
        if any(model_dir.glob("*.gguf")):
            raise EnvironmentMissing(
                f"{model_dir} has only GGUF weights: graphrag-migrate reads safetensors headers only",
                "point model.id at the safetensors build of the model (vLLM's GGUF support is experimental)")
        if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
            raise EnvironmentMissing(
                f"{model_dir} has only PyTorch .bin/.pt weights: their sizes cannot be read without unpickling them",
                "use a safetensors build of the model (most Hub repos have one) or convert it")
        raise EnvironmentMissing(f"{model_dir} has no *.safetensors files", "vLLM needs safetensors weights")
    return from_headers(_local_name(model_dir, config), config, [_read_header(path) for path in files],
                        f"{len(files)} local safetensors file(s) in {model_dir}{note}", _quant_file(model_dir))


def from_headers(name: str, config: dict, headers: list[dict], source: str, quant: dict | None = None) -> ModelInfo:
    """The model from config.json and its safetensors headers (each {tensor: {dtype, shape, data_offsets}}),
    wherever they were read — a local directory or the Hub —, so both read a checkpoint alike: the same gaps
    filled from the tensor shapes, the same ModelOpt `quant` (hf_quant_config.json) taken as its quantization."""
    if quant and not config.get("quantization_config") and not (config.get("text_config") or {}).get("quantization_config"):
        config = {**config, "quantization_config": quant}
    total = params = 0
    tensors: dict = {}
    shapes: dict = {}
    for header in headers:
        b, p = _header_bytes(header, tensors, shapes)
        total, params = total + b, params + p
    return from_config(name, config, total, params, source, tensors, shapes)


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
    kv_per_token = model.kv_bytes_per_token(kv_cache_dtype, max_model_len)  # at max_model_len-long sequences
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
    if model.sliding_layers:
        figures["kv_sliding_layers"] = model.sliding_layers
        figures["kv_sliding_window"] = model.sliding_window
    if model.mla_dim:
        figures["kv_mla_latent"] = model.mla_dim
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
