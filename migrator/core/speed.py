"""Predicted speed and capacity: what the model's bytes and FLOPs allow on a given GPU (a roofline).

Decoding one token reads every *active* weight once, plus that stream's KV cache, so one stream is capped
at bandwidth / bytes read per token. A batch of N streams reads the weights once per step (for a MoE, only
the experts its tokens touch) plus each stream's KV cache, and turns compute-bound past the GPU's ridge
point. Prefill is compute-bound: prompt tokens × 2 × active parameters. Every figure here is a *ceiling*
(peak bandwidth, peak FLOPs, no scheduler or kernel overhead). How close real runs come is measured, not
assumed: the published GB10 point reaches 0.88 of it; on a CPU the bandwidth to divide by is what the
engine's compute threads pull (vLLM-CPU binds them: on x86 one CPU is left to its engine), its float32
kernels reach ~0.7 of that, and a per-step cost comes on top (README, "The speed prediction against real
vLLM-CPU").
Pure arithmetic on metadata (config.json and the safetensors headers), so it runs before any download.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from migrator.core.fit import ModelInfo, is_encoder_tensor, kv_bytes_per_token
from migrator.core.gpus import Gpu

# Routed experts: one tensor per expert (`mlp.experts.7.up_proj`, Mixtral's `block_sparse_moe.experts.7.w1`)
# or fused across experts (gpt-oss `mlp.experts.gate_up_proj_blocks`, Llama 4 `feed_forward.experts.gate_up_proj`);
# DeepSeek's `shared_experts` are read for every token and stay dense.
_EXPERT = re.compile(r"(?:^|\.)experts\.")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
BITS4_BYTES_PER_PARAM = 0.5 + 2 / 128 + 0.5 / 128  # packed 4-bit + an fp16 scale and a 4-bit zero per 128-group
MAX_USERS = 4096


@dataclass
class Shape:
    """The parts of config.json the arithmetic needs."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    experts: int = 0  # routed experts per layer (0: dense)
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0
    dense_layers: int = 0  # MoE models whose first layers keep a dense MLP (DeepSeek's first_k_dense_replace)
    kv_lora_rank: int = 0  # MLA (DeepSeek V2/V3)
    q_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    per_token_assumed: bool = False  # a MoE config without experts-per-token: all experts counted as read

    @classmethod
    def of(cls, config: dict) -> "Shape":
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        experts = int(config.get("num_experts") or config.get("num_local_experts") or config.get("n_routed_experts") or 0)
        per_token = int(config.get("num_experts_per_tok") or config.get("experts_per_token")
                        or config.get("num_experts_per_token") or 0) if experts else 0
        assumed = bool(experts and not per_token)
        per_token = per_token or experts  # unknown routing: every expert read, a floor on speed, never a guess above it
        expert_inter = int(config.get("moe_intermediate_size") or config.get("intermediate_size") or 0) if experts else 0
        shared = int(config.get("shared_expert_intermediate_size") or 0)
        if experts and not shared and config.get("n_shared_experts"):  # DeepSeek: n_shared_experts × expert size
            shared = int(config["n_shared_experts"]) * expert_inter
        rope, nope = int(config.get("qk_rope_head_dim") or 0), int(config.get("qk_nope_head_dim") or 0)
        head_dim = int(config.get("head_dim") or (nope + rope if config.get("kv_lora_rank") else hidden // heads))
        return cls(layers, hidden, heads, int(config.get("num_key_value_heads") or heads), head_dim,
                   int(config.get("vocab_size") or 0), int(config.get("intermediate_size") or 0), experts,
                   per_token, expert_inter, shared,
                   min(layers, int(config.get("first_k_dense_replace") or 0)) if experts else 0,
                   int(config.get("kv_lora_rank") or 0), int(config.get("q_lora_rank") or 0), nope, rope,
                   int(config.get("v_head_dim") or 0), assumed)

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.experts else 0

    @property
    def attention_params(self) -> int:  # per layer: q, k, v, o (MLA: q or q_a/q_b, kv_a, kv_b, o)
        if self.mla:
            qk = self.qk_nope_dim + self.qk_rope_dim
            v = self.v_head_dim or self.qk_nope_dim
            q = (self.hidden * self.q_lora_rank + self.q_lora_rank * self.heads * qk) if self.q_lora_rank \
                else self.hidden * self.heads * qk
            kv = self.hidden * (self.kv_lora_rank + self.qk_rope_dim) + self.kv_lora_rank * self.heads * (self.qk_nope_dim + v)
            return q + kv + self.heads * v * self.hidden
        return 2 * self.hidden * self.heads * self.head_dim + 2 * self.hidden * self.kv_heads * self.head_dim

    @property
    def attention_dims(self) -> int:
        """Per head, the K and V elements one query multiplies by per context token (QKᵀ plus AV); MLA decodes
        on the absorbed latent: kv_lora_rank + rope for the scores, kv_lora_rank for the values."""
        if self.mla:
            return self.heads * (2 * self.kv_lora_rank + self.qk_rope_dim)
        return 2 * self.heads * self.head_dim

    @property
    def mla_dim(self) -> int:
        return self.kv_lora_rank + self.qk_rope_dim if self.mla else 0

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto") -> int:
        return kv_bytes_per_token(self.layers, self.kv_heads, self.head_dim, self.mla_dim, kv_cache_dtype)

    @property
    def dense_params(self) -> int:
        """Read for every token whatever the routing: attention, dense or shared MLP, router (norms are noise)."""
        if not self.experts:
            return self.layers * (self.attention_params + 3 * self.hidden * self.intermediate)
        moe = self.moe_layers * (3 * self.hidden * self.shared_intermediate + self.hidden * self.experts)
        return self.layers * self.attention_params + moe + self.dense_layers * 3 * self.hidden * self.intermediate

    @property
    def expert_params(self) -> int:  # all routed experts of all MoE layers
        return self.moe_layers * self.experts * 3 * self.hidden * self.expert_intermediate

    @property
    def lm_head_params(self) -> int:
        return self.hidden * self.vocab

    @property
    def active_params(self) -> int:
        """Parameters one token multiplies by (what its FLOPs count)."""
        routed = self.expert_params * self.experts_per_token // self.experts if self.experts else 0
        return self.dense_params + routed + self.lm_head_params


@dataclass
class Profile:
    """Bytes one decode step reads and FLOPs it does, for one weight format of one model."""
    name: str
    weights: str  # "bf16", "AWQ 4-bit", "fp8" …
    precision: str  # tensor-core precision its matmuls run in: bf16 | fp8 | fp4
    shape: Shape
    dense_bytes: int
    expert_bytes: int
    lm_head_bytes: int
    kv_bytes_per_token: int  # of the layers that attend over the whole context
    source: str = ""
    kv_window_bytes_per_token: int = 0  # of the sliding-window layers (hybrid models), held for `kv_window` tokens
    kv_window: int = 0

    def kv_read(self, context: int) -> int:
        """KV bytes one stream reads per decode step at `context` tokens."""
        return self.kv_bytes_per_token * context + self.kv_window_bytes_per_token * min(context, self.kv_window)

    @property
    def moe(self) -> bool:
        return self.shape.experts > 0

    def experts_touched(self, streams: int) -> float:
        """Expected distinct experts a layer reads for `streams` tokens, routing taken as uniform."""
        e, k = self.shape.experts, self.shape.experts_per_token
        if not e:
            return 0.0
        return e * (1 - (1 - k / e) ** streams)

    def step_bytes(self, streams: int, context: int) -> float:
        experts = self.expert_bytes * self.experts_touched(streams) / self.shape.experts if self.moe else 0
        return self.dense_bytes + self.lm_head_bytes + experts + streams * self.kv_read(context)

    def flops_per_token(self, context: int) -> float:
        s = self.shape
        return 2 * s.active_params + 2 * s.layers * s.attention_dims * context  # matmuls + QKᵀ and AV

    @property
    def weight_read_gb(self) -> float:
        """Weights one stream reads per token (GB, 10**9)."""
        return self.step_bytes(1, 0) / 1e9


def _precision(model: ModelInfo) -> tuple[str, str]:
    """(weights label, tensor-core precision) from config.json's quantization_config (or ModelOpt's
    hf_quant_config.json, which fit.read_local folds in)."""
    q = (model.config.get("quantization_config") or {})
    method = str(q.get("quant_method") or model.quantization or "").lower()
    algo = str(q.get("quant_algo") or q.get("format") or "").lower()
    if method == "mxfp4" or "mxfp4" in algo:  # gpt-oss: experts in MXFP4 (U8 blocks + U8 scales), the rest bf16
        return "MXFP4 4-bit", "fp4"
    if "fp4" in algo or "fp4" in method:
        return "NVFP4 4-bit", "fp4"
    if method == "fp8" or "fp8" in algo:
        return "fp8", "fp8"
    if method == "compressed-tensors":  # llm-compressor: the bits live in config_groups, not in "bits"
        groups = [g for g in (q.get("config_groups") or {}).values() if isinstance(g, dict)]
        weights = [g.get("weights") or {} for g in groups]
        bits = sorted({int(w.get("num_bits") or 0) for w in weights} - {0})
        if bits and bits[0] == 8 and all(str(w.get("type")) == "float" for w in weights):
            return "fp8", "fp8"
        if bits:
            acts = {int((g.get("input_activations") or {}).get("num_bits") or 16) for g in groups}
            return f"W{bits[0]}A{min(acts)}", ("bf16" if min(acts) >= 16 else "fp8")
        return "compressed-tensors", "bf16"
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin", "bitsandbytes"):
        bits = q.get("bits") or q.get("w_bit") or (8 if q.get("load_in_8bit") else 4)
        return f"{method.upper()} {bits}-bit", "bf16"  # weight-only: the matmuls run in 16 bits
    if method:  # a method this table does not know: its bytes are the headers', its label says what it is
        return method, "bf16"
    dtype = str(model.config.get("torch_dtype") or model.config.get("dtype") or "bf16")  # transformers ≥ 4.56: "dtype"
    return dtype.replace("bfloat16", "bf16").replace("float16", "fp16").replace("float32", "fp32"), "bf16"


def profile(model: ModelInfo, kv_cache_dtype: str = "auto") -> Profile:
    """From the headers: the bytes actually stored per part (packed 4-bit weights and their scales count as
    they are). Embeddings are gathered one row per token — not read — unless they double as lm_head; a
    multimodal checkpoint's vision tower and the MTP layers past num_hidden_layers (DeepSeek V3's layer 61,
    loaded only for speculative decoding) are not read per text token either."""
    shape = Shape.of(model.config)
    weights, precision = _precision(model)
    kv = model.kv_bytes_per_token(kv_cache_dtype)
    window_kv = 0
    if model.sliding_layers:  # split: full layers read the whole context, sliding ones their window
        window_kv = kv // model.layers * model.sliding_layers
        kv -= window_kv
    parts = {"dense": 0, "experts": 0, "lm_head": 0, "embedding": 0, "not_read": 0}
    for name, size in model.tensor_bytes.items():
        layer = _LAYER.search(name)
        if is_encoder_tensor(name) or (layer and int(layer.group(1)) >= shape.layers):
            parts["not_read"] += size
        elif "embed_tokens" in name or name.endswith("wte.weight"):
            parts["embedding"] += size
        elif "lm_head" in name:
            parts["lm_head"] += size
        elif _EXPERT.search(name):
            parts["experts"] += size
        else:
            parts["dense"] += size
    source = model.source
    if shape.per_token_assumed:
        source += " (no num_experts_per_tok in config.json: every expert counted as read per token)"
    if not model.tensor_bytes:  # no per-tensor list: the whole size, less the embedding, as dense
        parts["dense"] = max(0, model.weight_bytes - shape.lm_head_params * 2)
        parts["lm_head"] = shape.lm_head_params * 2
        source += " (total size only)"
    if not parts["lm_head"]:  # tied embeddings: the embedding matrix is the lm_head, read every step
        parts["lm_head"] = parts["embedding"]
    if shape.experts and not parts["experts"] and model.tensor_bytes:
        # config.json says MoE but no tensor is named as an expert: the routed share cannot be told apart,
        # so all is read (a floor on speed, said so) rather than guessing which bytes are experts
        source += " (MoE in config.json, but no expert tensors recognised: all weights counted as read)"
        shape.experts = 0
    return Profile(model.name, weights, precision, shape, parts["dense"], parts["experts"], parts["lm_head"], kv, source,
                   window_kv, model.sliding_window if window_kv else 0)


def variant(base: Profile, weights: str) -> Profile:
    """The same model in another format, from its shape: 'fp8' (1 byte a weight) or '4-bit' (AWQ/GPTQ/NVFP4);
    lm_head stays 16-bit as in the published checkpoints."""
    per_param, precision = {"fp8": (1.0, "fp8"), "4-bit": (BITS4_BYTES_PER_PARAM, "bf16"),
                            "bf16": (2.0, "bf16")}[weights]
    s = base.shape
    return Profile(f"{base.name} ({weights})", weights, precision, s, int(s.dense_params * per_param),
                   int(s.expert_params * per_param), s.lm_head_params * 2, base.kv_bytes_per_token,
                   "from the shape in config.json", base.kv_window_bytes_per_token, base.kv_window)


# ---- the roofline ---------------------------------------------------------------------------------------
def decode(p: Profile, gpu: Gpu, streams: int, context: int) -> dict:
    """One decode step of `streams` concurrent streams at `context` tokens each: per-user and total tok/s."""
    memory_s = p.step_bytes(streams, context) / (gpu.bandwidth_gbs * 1e9)
    peak, _ = gpu.peak_tflops(p.precision)
    compute_s = streams * p.flops_per_token(context) / (peak * 1e12) if peak else 0.0
    step = max(memory_s, compute_s)
    return {"users": streams, "tokens_per_s_per_user": round(1 / step, 2), "tokens_per_s_total": round(streams / step, 1),
            "bound": "compute" if compute_s > memory_s else "memory"}


def prefill_s(p: Profile, gpu: Gpu, prompt_tokens: int) -> float | None:
    """Time to prefill one prompt alone (the TTFT floor): compute-bound, at least one read of the weights."""
    peak, _ = gpu.peak_tflops(p.precision)
    if not peak:
        return None
    s = p.shape
    flops = prompt_tokens * 2 * s.active_params + s.layers * s.attention_dims * prompt_tokens ** 2
    reads = p.step_bytes(prompt_tokens, 0) / (gpu.bandwidth_gbs * 1e9)
    return max(flops / (peak * 1e12), reads)


def _largest(ok, limit: int) -> int:
    """The largest n in 1..limit with ok(n), ok being monotone (true, then false); 0 if not even 1."""
    if not ok(1):
        return 0
    lo, hi = 1, limit + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


@dataclass
class Targets:
    """What the plan asks (migrate.yaml's bench SLOs) and the request shape the prediction assumes."""
    prompt_tokens: int = 2000
    output_tokens: int = 500
    slo_tokens_per_s: float = 30.0
    slo_ttft_ms: float = 500.0
    slo_e2e_s: float = 30.0
    concurrency: tuple = (1, 5, 10)
    kv_limit_users: int | None = None  # sequences the KV cache holds (from the memory verdict)


def predict(p: Profile, gpu: Gpu, t: Targets) -> dict:
    """The `speed` object: the one-stream ceiling, the same at the plan's concurrency, the TTFT floor, and
    the concurrent users each SLO allows."""
    context = t.prompt_tokens + t.output_tokens // 2  # the mean context a stream decodes at
    one = decode(p, gpu, 1, context)
    prefill = prefill_s(p, gpu, t.prompt_tokens)
    peak, how = gpu.peak_tflops(p.precision)
    limit = min(MAX_USERS, t.kv_limit_users) if t.kv_limit_users else MAX_USERS
    ttft_ok = prefill is None or prefill * 1000 <= t.slo_ttft_ms

    def realtime(n: int) -> bool:
        return ttft_ok and decode(p, gpu, n, context)["tokens_per_s_per_user"] >= t.slo_tokens_per_s

    def within(n: int) -> bool:
        return (prefill or 0) + t.output_tokens / decode(p, gpu, n, context)["tokens_per_s_per_user"] <= t.slo_e2e_s

    return {
        "model": p.name, "weights": p.weights, "moe": p.moe, "gpu": gpu.name, "bandwidth_gbs": gpu.bandwidth_gbs,
        "peak_tflops": peak, "peak_tflops_source": how, "precision": p.precision,
        "weight_gb_read_per_token": round(p.weight_read_gb, 2),
        "kv_mb_read_per_token": round(p.kv_read(context) / 1e6, 1), "context_tokens": context,
        "active_params_b": round(p.shape.active_params / 1e9, 2),
        "flops_per_token_g": round(p.flops_per_token(context) / 1e9, 1),
        "decode_tokens_per_s_per_user": one["tokens_per_s_per_user"],
        "at_concurrency": [decode(p, gpu, n, context) for n in t.concurrency],
        "prefill_s": None if prefill is None else round(prefill, 3),
        "ttft_floor_ms": None if prefill is None else round(prefill * 1000, 1),
        "prompt_tokens": t.prompt_tokens, "output_tokens": t.output_tokens,
        "realtime_users": _largest(realtime, limit), "wait_users": _largest(within, limit),
        "users_capped_by_kv_cache": t.kv_limit_users,
        "note": ("ceilings: peak bandwidth and FLOPs, no kernel or per-step overhead (the published GB10 point "
                 "reaches 0.88 of it); on a CPU give the bandwidth of the cores the engine computes on"),
    }


# ---- the plan's gates judged on the prediction ------------------------------------------------------------
PREDICTED = {"per_user_output_tokens_per_s": "decode_tokens_per_s_per_user", "ttft_p99_ms": "ttft_floor_ms",
             "realtime_users": "realtime_users", "wait_users": "wait_users"}


def judge(gates, speed: dict) -> list[dict]:
    """Each bench gate on its predicted value: pass | fail | not predicted."""
    out = []
    for gate in gates:
        if gate.source != "bench":
            continue
        key = PREDICTED.get(gate.metric)
        value = speed.get(key) if key else None
        verdict = "not predicted" if value is None else ("pass" if gate.passes(float(value)) else "fail")
        out.append({"name": gate.name, "metric": gate.metric, "op": gate.op, "threshold": gate.threshold,
                    "predicted": value, "verdict": verdict, "observe_only": gate.observe_only})
    return out


def _size(p: Profile) -> str:
    b = (p.shape.dense_params + p.shape.expert_params + p.shape.lm_head_params) / 1e9
    return f"MoE {b:.0f}B ({p.shape.active_params / 1e9:.1f} B active)" if p.moe else f"dense {b:.0f}B"


def _figures(a: dict) -> str:
    label = a["model"] if a["variant_of_this_model"] else f"{a['model']} ({a['weights']})"
    return (f"{label}: ≤ {a['decode_tokens_per_s_per_user']:.1f} tok/s per user, "
            f"{a['realtime_users']} real-time user{'' if a['realtime_users'] == 1 else 's'}")


def verdict_lines(base: Profile, gpu: Gpu, t: Targets, gates: list[dict], alternatives: list[dict]) -> list[str]:
    """Failing predictions in words, each naming what would pass that gate, with its predicted figures."""
    lines = []
    for g in gates:
        if g["verdict"] != "fail":
            continue
        if g["metric"] == "per_user_output_tokens_per_s":
            ceilings = [f"≤ {alt['decode_tokens_per_s_per_user']:.1f} {alt['weights']}"
                        for alt in alternatives if alt.get("variant_of_this_model")]
            line = (f"{_size(base)} cannot reach {g['threshold']:g} tok/s per user on {gpu.name} "
                    f"({gpu.bandwidth_gbs:g} GB/s): ≤ {g['predicted']:.1f} {base.weights}"
                    + (", " + ", ".join(ceilings) if ceilings else "") + " (ceilings)")
        elif g["metric"] == "ttft_p99_ms":
            line = (f"prefill of {t.prompt_tokens} prompt tokens alone takes ≥ {g['predicted']:g} ms on "
                    f"{gpu.name}: TTFT cannot be {g['op']} {g['threshold']:g} ms")
        else:
            line = f"{g['name']}: predicted at most {g['predicted']} ({g['metric']}), not {g['op']} {g['threshold']:g}"
        passing = [a for a in alternatives if g["metric"] in a["passes_gates"]]
        line += ("; would pass it: " + "; ".join(_figures(a) for a in passing) if passing
                 else "; nothing checked here passes it on this GPU")
        lines.append(line)
    return lines


def from_shape(name: str, config: dict, weights: str = "bf16", source: str = "") -> Profile:
    """A model known only by its config.json (no headers at hand), in a given format."""
    shape = Shape.of(config)
    kv = shape.kv_bytes_per_token()
    shell = Profile(name, weights, "bf16", shape, 0, 0, 0, kv, source)
    out = variant(shell, weights)
    out.name, out.source = name, source or "from its config.json"
    return out


def assess(model: ModelInfo, gpu: Gpu, t: Targets, gates, kv_cache_dtype: str = "auto",
           others: list[Profile] = ()) -> dict:
    """The verdict's `speed`: the prediction, the gates on it, alternatives (this model's fp8 and 4-bit
    variants, and the other models given, e.g. a MoE), and the failing gates in words."""
    base = profile(model, kv_cache_dtype)
    speed = predict(base, gpu, t)
    speed["gates"] = judge(gates, speed)
    four = "4-bit" in base.weights or base.weights.startswith("W4")
    formats = [] if four else (["4-bit"] if base.weights == "fp8" or "8" in base.weights else ["fp8", "4-bit"])
    candidates = [(variant(base, w), True) for w in formats] + [(p, False) for p in others]
    alternatives = []
    for candidate, own in candidates:
        figures = predict(candidate, gpu, Targets(**{**t.__dict__, "kv_limit_users": None}))
        verdicts = judge(gates, figures)
        alternatives.append({"model": candidate.name, "weights": candidate.weights, "variant_of_this_model": own,
                             "source": candidate.source,
                             "decode_tokens_per_s_per_user": figures["decode_tokens_per_s_per_user"],
                             "realtime_users": figures["realtime_users"], "ttft_floor_ms": figures["ttft_floor_ms"],
                             "passes_gates": [v["metric"] for v in verdicts if v["verdict"] == "pass"]})
    speed["alternatives"] = alternatives
    speed["verdict"] = verdict_lines(base, gpu, t, speed["gates"], alternatives)
    speed["passes"] = all(g["verdict"] != "fail" for g in speed["gates"] if not g["observe_only"])
    return speed


# Qwen/Qwen3-30B-A3B's config.json (the fields the arithmetic reads): the default alternative's shape when
# neither the local cache nor the Hub gave its headers (phase1, model.alternatives).
# https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
QWEN3_30B_A3B = {"hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
                 "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_attention_heads": 32, "head_dim": 128,
                 "num_key_value_heads": 4, "vocab_size": 151936}
MOE_ALTERNATIVE = "Qwen/Qwen3-30B-A3B"


def recorded(state: dict | None) -> dict | None:
    """The prediction phase1's fit step recorded in the ledger's state (None if it made none)."""
    step = ((state or {}).get("phases", {}).get("phase1", {}).get("steps", {}).get("phase1.fit") or {})
    found = (step.get("measurements") or {}).get("speed")
    return found if isinstance(found, dict) and "decode_tokens_per_s_per_user" in found else None


def measured_of_sweep(run: dict) -> dict:
    """What a `bench --sweep` measured that the prediction names: 1-user speed and TTFT, users served."""
    one = next((p for p in run.get("probes", []) if p.get("users") == 1), None)
    out = dict(run.get("metrics") or {})
    if one:
        out["per_user_output_tokens_per_s"] = one.get("per_user_output_tokens_per_s")
        out["ttft_p99_ms"] = (one.get("ttft_ms") or {}).get("p99")
    return out


def compare(predicted: dict, measured: dict) -> list[dict]:
    """Predicted ceiling (a floor for TTFT) beside what a real run measured: the model checked on every run.
    `measured_share` is measured / predicted: ≤ 1 expected for speeds and users, ≥ 1 for TTFT."""
    rows = []
    for metric, key in PREDICTED.items():
        p, m = predicted.get(key), measured.get(metric)
        if p is None or m is None:
            continue
        rows.append({"metric": metric, "predicted": p, "measured": m,
                     "measured_share": round(m / p, 2) if p else None})
    return rows


def stream_triad_gbs(size_mb: int = 256, repeats: int = 5, threads: int = 0, cores: list[int] | None = None) -> float:
    """This machine's memory bandwidth, STREAM-style: a = b + s·c over arrays far larger than the caches,
    split over `threads` (0: every CPU; numpy releases the GIL), the best of `repeats`. numpy does it in
    two passes (a = s·c, then a += b): 5 array transfers counted, as STREAM counts its 3.

    `cores`: one thread pinned to each of these CPUs, as an inference engine binds its compute threads —
    the figure to predict it with (vLLM-CPU on x86 reserves a CPU for its engine: a 2-core box computes on
    one, and one core pulls about half of what two do). The caller's own affinity is left as it was."""
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    threads = len(cores) if cores else (threads or os.cpu_count() or 1)
    n = size_mb * 2**20 // 8
    b, c, a = np.ones(n), np.full(n, 2.0), np.empty(n)
    bounds = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]

    def triad(i: int) -> None:
        if cores:  # this pool thread only (Linux: pid 0 is the calling thread)
            os.sched_setaffinity(0, {cores[i]})
        lo, hi = bounds[i]
        np.multiply(c[lo:hi], 3.0, out=a[lo:hi])
        np.add(a[lo:hi], b[lo:hi], out=a[lo:hi])

    best = math.inf
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(triad, range(threads)))
            best = min(best, time.perf_counter() - start)
    return 5 * n * 8 / best / 1e9
