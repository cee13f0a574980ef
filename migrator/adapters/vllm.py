"""How vLLM is started (a container or a local process), and the tiered readiness probe.

Both runtimes take the same vLLM arguments. Secrets (the API key) go in through the environment,
never on the command line, where `ps` and the ledger would show them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from migrator.core.config import Settings, host_path

CONTAINER_PORT = 8000


def model_arg(settings: Settings, project: Path) -> str:
    """model.id as a local directory (relative to the project; absolute, whatever the cwd) when it is one,
    else the repo id."""
    model = settings.model.id
    local = host_path(model, project)
    return local if os.path.isdir(local) else model


def is_local_model(settings: Settings, project: Path) -> bool:
    model = model_arg(settings, project)
    return os.path.isabs(model) and os.path.isdir(model)


START_LIMITS = "vllm_start_limits"  # ledger resource: phase1's unified-memory limits, used by every later start


def start_limits(ctx) -> dict:
    """The limits phase1 recorded for vLLM's start on unified memory (or planned, in a dry-run): {} if none."""
    return ctx.resources.get(START_LIMITS) or ctx.memo.get(START_LIMITS) or {}


def vllm_args(settings: Settings, model: str, model_dir: str | None = None, project: Path | None = None,
              limits: dict | None = None) -> list[str]:
    """vLLM's command line. `model_dir`: the local model directory (its chat template tells a thinking model);
    `project`: where the backend's code is read for tool calls (`vllm.tool_calling: auto`); `limits` (see
    `start_limits`): on unified memory the KV cache vLLM gets is the fit verdict's budget, not what its start-up
    profiling makes of a fraction of the whole pool (vllm#46307), and the sequences it batches are bounded.
    A flag of the same name in vllm.extra_args wins."""
    v = settings.vllm
    limits = limits or {}
    args = [
        "--model", model,
        "--served-model-name", settings.model.served_name,
        "--max-model-len", str(v.max_model_len),
        "--gpu-memory-utilization", str(v.gpu_memory_utilization),
        "--tensor-parallel-size", str(v.tensor_parallel_size),
    ]
    if v.enable_chunked_prefill:
        args.append("--enable-chunked-prefill")
    kv_bytes = limits.get("kv_cache_memory_bytes")
    if kv_bytes and not _given(settings, "--kv-cache-memory-bytes"):
        args += ["--kv-cache-memory-bytes", str(int(kv_bytes))]
    max_num_seqs = v.max_num_seqs or limits.get("max_num_seqs")
    if max_num_seqs and not _given(settings, "--max-num-seqs"):
        args += ["--max-num-seqs", str(int(max_num_seqs))]
    return args + reasoning_args(settings, model_dir) + tool_args(settings, project) + list(v.extra_args)


# ---- Qwen3's thinking and tool calls: flags decided from the model and the backend's code ----------------
_QWEN3 = re.compile(r"^qwen3", re.I)
# Qwen3 checkpoints whose chat template has no enable_thinking switch: 2507 Instruct and Coder never think,
# 2507 Thinking always does; embedding and reranker models do not chat.
_QWEN3_NO_SWITCH = re.compile(r"instruct-2507|thinking-2507|coder|embedding|reranker", re.I)
THINKING_OFF = json.dumps({"enable_thinking": False})


def _chat_template(model_dir: str) -> str | None:
    """The chat template a local model directory ships (chat_template.jinja, else tokenizer_config.json's)."""
    folder = Path(model_dir)
    try:
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    except OSError:
        pass
    try:
        template = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "…"}, …]
        template = " ".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    return template if isinstance(template, str) else None


def thinking_model(settings: Settings, model_dir: str | None = None) -> tuple[bool, str]:
    """Whether the model thinks with Qwen3's `enable_thinking` switch, and why. A local model directory's chat
    template decides (it reads `enable_thinking` or not); else the name: Qwen3 family (model.id's last part
    starts with Qwen3), except checkpoints without the switch. vLLM 0.32 drops a chat-template kwarg the
    template does not read, so a wrong guess is harmless — but a kwarg is never passed blindly."""
    template = _chat_template(model_dir) if model_dir and os.path.isdir(model_dir) else None
    if template is not None:
        reads = "enable_thinking" in template
        return reads, f"its chat template {'reads' if reads else 'has no'} enable_thinking"
    name = settings.model.id.rstrip("/").rsplit("/", 1)[-1]
    if _QWEN3.match(name) and not _QWEN3_NO_SWITCH.search(name):
        return True, f"{name} is a Qwen3 model (thinks unless told not to)"
    return False, f"{name} is not a Qwen3 thinking model"


def _given(settings: Settings, *flags: str) -> bool:
    """The operator passed one of these flags in vllm.extra_args: theirs wins, ours is left out."""
    return any(arg.split("=", 1)[0] in flags for arg in settings.vllm.extra_args)


def reasoning_args(settings: Settings, model_dir: str | None = None) -> list[str]:
    """model.reasoning as vLLM flags — on a thinking model only: off = thinking disabled in the chat template
    for every request, parse = `--reasoning-parser qwen3` (thinking in delta.reasoning), raw = nothing (thinking
    in content between <think> tags)."""
    if not thinking_model(settings, model_dir)[0] or _given(
            settings, "--reasoning-parser", "--default-chat-template-kwargs"):
        return []
    mode = settings.model.reasoning
    if mode == "off":
        return ["--default-chat-template-kwargs", THINKING_OFF]
    if mode == "parse":
        return ["--reasoning-parser", "qwen3"]
    return []


def tool_calling_evidence(settings: Settings, project: Path | None) -> list[str]:
    """Why vLLM gets tool calling (empty: it does not): `vllm.tool_calling: on`, or with `auto` each place the
    backend's code calls bind_tools / with_structured_output or passes tools= (`file:line what`)."""
    mode = settings.vllm.tool_calling
    if mode == "on":
        return ["vllm.tool_calling: on"]
    if mode == "off" or project is None:
        return []
    from migrator.files.pysource import tool_calling_sites

    backend = Path(host_path(settings.backend.dir, project))
    return tool_calling_sites(backend) if backend.is_dir() else []


def tool_args(settings: Settings, project: Path | None) -> list[str]:
    """Tool calls and `with_structured_output` need vLLM's auto tool choice with Qwen's (hermes) parser, else
    vLLM answers HTTP 400."""
    if _given(settings, "--enable-auto-tool-choice", "--tool-call-parser") or not tool_calling_evidence(settings,
                                                                                                        project):
        return []
    return ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


def secret_env(settings: Settings) -> dict[str, str]:
    name = settings.vllm.api_key_env
    if name and os.environ.get(name):
        return {"VLLM_API_KEY": os.environ[name]}
    return {}


def api_key(settings: Settings) -> str | None:
    return secret_env(settings).get("VLLM_API_KEY")


def process_command(settings: Settings, model: str, project: Path | None = None,
                    limits: dict | None = None) -> list[str]:
    v = settings.vllm
    args = vllm_args(settings, model, model if os.path.isdir(model) else None, project, limits)
    return [v.python, "-m", v.server_module, *args, "--host", v.host, "--port", str(v.port)]


def process_env(settings: Settings, project: Path, downloaded: dict | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    if settings.vllm.host.startswith("127.") or settings.vllm.host == "localhost":
        env["VLLM_HOST_IP"] = "127.0.0.1"  # else vLLM binds its internal sockets to eth0
    if is_local_model(settings, project) or (downloaded or {}).get("verified"):
        env["HF_HUB_OFFLINE"] = "1"  # the model is on disk: vLLM must not reach for the Hub
    env.update(secret_env(settings))
    return env


def container_spec(settings: Settings, project: Path, include_secrets: bool = False,
                   downloaded: dict | None = None, limits: dict | None = None,
                   command_prefix: list[str] | None = None, restart: str = "no") -> dict:
    """Keyword arguments for docker SDK `containers.run` (shown by --dry-run without secrets).
    `command_prefix`: what goes before vLLM's arguments for an image whose entrypoint is not vLLM's
    (NVIDIA's NGC images: `vllm serve`). `restart`: "no" until readiness has passed with these settings
    on this host (see `readiness_fingerprint`): a start that wedges the host must not start again after the
    power-cycle."""
    v = settings.vllm
    model = model_arg(settings, project)
    # Bind sources absolute: docker takes a relative one for a volume name, compose resolves it from the
    # compose file's directory — neither is the directory migrate.yaml means.
    volumes = {host_path(v.hf_cache, project): {"bind": "/root/.cache/huggingface", "mode": "rw"},
               host_path(v.vllm_cache, project): {"bind": "/root/.cache/vllm", "mode": "rw"}}
    environment = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    revision: list[str] = []
    model_dir = model if os.path.isabs(model) and os.path.isdir(model) else None
    if model_dir:  # model_arg's local directory (a repo id is relative)
        volumes[model] = {"bind": "/model", "mode": "ro"}
        model = "/model"
        environment["HF_HUB_OFFLINE"] = "1"
    elif downloaded and downloaded.get("verified") and downloaded.get("repo") == model:
        environment["HF_HUB_OFFLINE"] = "1"  # in the mounted cache, pinned to the verified commit
        revision = ["--revision", downloaded["commit"]]
    if include_secrets:
        environment.update(secret_env(settings))
    spec: dict = {
        "image": v.image,
        "name": v.container_name,
        "command": [*(command_prefix or []), *vllm_args(settings, model, model_dir, project, limits), *revision],
        "environment": environment,
        "volumes": volumes,
        "ipc_mode": "host",
        "restart_policy": {"Name": restart},
        "labels": {"org.graphrag-migrate.managed": "true"},
    }
    if v.network_mode == "host":
        spec["network_mode"] = "host"
        spec["command"] += ["--host", v.host, "--port", str(v.port)]
        spec["environment"]["VLLM_HOST_IP"] = v.host
    else:
        spec["ports"] = {f"{CONTAINER_PORT}/tcp": (v.host, v.port)}
        spec["command"] += ["--port", str(CONTAINER_PORT)]
    if v.cpuset:
        spec["cpuset_cpus"] = v.cpuset
    if v.device == "gpu":
        spec["device_requests"] = [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]
    return spec


READINESS_PROVEN = "vllm_readiness_proven"  # ledger resource: the fingerprint of the last start that became ready


def host_id() -> str:
    """This machine (its systemd machine-id, else its host name): a proof of readiness is this host's."""
    try:
        return Path("/etc/machine-id").read_text().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


def readiness_fingerprint(settings: Settings, project: Path, downloaded: dict | None, limits: dict | None) -> str:
    """What a start's safety depends on: this host, the image, the device and vLLM's arguments (model,
    memory settings, limits, extra args). Any of them changed, and the proof no longer holds."""
    import hashlib
    import json

    command = container_spec(settings, project, downloaded=downloaded, limits=limits)["command"]
    data = {"host": host_id(), "image": settings.vllm.image, "device": settings.vllm.device, "command": command}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def restart_policy(ctx, settings: Settings | None = None) -> str:
    """unless-stopped once readiness has passed on this host with these settings (recorded by phase1),
    else "no" (vllm#46307: a start-up that wedges a GB10 would otherwise run again after the reboot)."""
    settings = settings or ctx.settings
    proven = (ctx.resources.get(READINESS_PROVEN) or {}).get("fingerprint")
    current = readiness_fingerprint(settings, ctx.project, ctx.resources.get("model"), start_limits(ctx))
    return "unless-stopped" if proven and proven == current else "no"


def prove_readiness(ctx, how: str) -> None:
    """Readiness has passed on this host with these settings: recorded, so compose may restart vLLM by itself."""
    from migrator.core.ledger import now_iso

    ctx.resources[READINESS_PROVEN] = {
        "fingerprint": readiness_fingerprint(ctx.settings, ctx.project, ctx.resources.get("model"), start_limits(ctx)),
        "at": now_iso(), "by": how}
    ctx.ledger.save()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host if host not in ("0.0.0.0", "") else "127.0.0.1", port)) == 0


@dataclass
class Readiness:
    """Timings of each readiness tier, in seconds from the start of waiting."""

    ok: bool = False
    tiers: dict[str, float] = field(default_factory=dict)
    ttft_ms: float | None = None
    failed_tier: str = ""
    error: str = ""
    max_model_len: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


TIERS = ("port open", "/health 200", "/v1/models lists the model", "1-token completion", "streamed completion")


def wait_ready(settings: Settings, timeout: float, alive: Callable[[], str | None],
               on_tier: Callable[[str, float], None] | None = None, poll: float = 0.25,
               on_wait: Callable[[float], None] | None = None) -> Readiness:
    """Walk the tiers in order; `alive()` returns an error string when the server died meanwhile;
    `on_wait(elapsed)` is called about every 10 s while a tier is not reached (to show the log)."""
    from migrator.adapters.http import OpenAIServer

    v = settings.vllm
    server = OpenAIServer(v.url, api_key(settings))
    name = settings.model.served_name
    start = time.monotonic()
    result = Readiness()

    def reached(tier: str) -> None:
        result.tiers[tier] = round(time.monotonic() - start, 3)
        if on_tier:
            on_tier(tier, result.tiers[tier])

    def tier_check(tier: str) -> tuple[bool, str]:
        # No single probe may outlast the overall time-out (a hung server must not hold us for minutes).
        budget = max(1.0, min(60.0, timeout - (time.monotonic() - start)))
        if tier == "port open":
            return port_in_use(v.probe_host, v.port), "port closed"
        if tier == "/health 200":
            p = server.health()
            return p.ok, p.describe()
        if tier == "/v1/models lists the model":
            p = server.models(timeout=min(budget, 5.0))
            if not p.ok:
                return False, p.describe()
            models = {m.get("id"): m for m in (p.body or {}).get("data", [])}
            if name not in models:
                return False, f"/v1/models lists {sorted(models)} — expected '{name}' (model.served_name)"
            result.max_model_len = models[name].get("max_model_len")
            if result.max_model_len not in (None, v.max_model_len):
                return False, f"max_model_len is {result.max_model_len}, expected {v.max_model_len}"
            return True, ""
        if tier == "1-token completion":
            p = server.complete(name, "Hello", max_tokens=1, timeout=budget)
            return p.ok, p.describe() + (f": {p.body}" if not p.ok and p.body else "")
        s = server.stream(name, [{"role": "user", "content": "Say hello."}], max_tokens=8,
                          timeout=budget, extra={"ignore_eos": True})
        result.ttft_ms = round(s.ttft_ms, 1) if s.ttft_ms is not None else None
        # Output counts, thinking too: a Qwen3 with --reasoning-parser spends 8 tokens in delta.reasoning.
        return s.ok and s.output_chunks > 0, s.error or "no content or reasoning chunk"

    next_report = start + 10
    for tier in TIERS:
        last = ""
        while True:
            if on_wait is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + 10
                on_wait(time.monotonic() - start)
            died = alive()
            if died:
                result.failed_tier, result.error = tier, died
                return result
            ok, last = tier_check(tier)
            if ok:
                reached(tier)
                break
            definitive = tier in ("/v1/models lists the model", "1-token completion", "streamed completion") \
                and ("expected" in last or "HTTP 4" in last)
            if definitive or time.monotonic() - start > timeout:
                result.failed_tier = tier
                result.error = last if definitive else f"not ready after {timeout:.0f} s: {last}"
                return result
            time.sleep(poll)
    result.ok = True
    return result


# vLLM's own start-up failure lines (FACTS.md), most specific first, with the fix for each.
STARTUP_FAILURES: list[tuple[str, str, str]] = [
    ("Free memory on device", "another process holds GPU memory",
     "unload Ollama's models (phase1 --unload-ollama) or lower vllm.gpu_memory_utilization"),
    ("less than desired CPU memory utilization",
     "not enough free RAM: on the CPU backend --gpu-memory-utilization is a fraction of RAM",
     "lower vllm.gpu_memory_utilization (e.g. 0.5), or set VLLM_CPU_KVCACHE_SPACE (GiB)"),
    ("To serve at least one request with the model's max seq len",
     "the KV cache is too small for max_model_len",
     "lower vllm.max_model_len (vLLM printed an estimate above) or raise gpu_memory_utilization"),
    ("No available memory for the cache blocks", "no memory left for the KV cache",
     "use a quantised model (AWQ/GPTQ) or raise vllm.gpu_memory_utilization"),
    ("is greater than the derived max_model_len", "max_model_len exceeds the model's context",
     "set vllm.max_model_len to at most the model's max_position_embeddings"),
    ("no kernel image is available", "this vLLM build has no CUDA kernels for this GPU (GB10 is sm_121)",
     "use a CUDA 13 build: vllm/vllm-openai v0.20 or later without -cu129, or NVIDIA's NGC vLLM image"),
    ("CUDA driver version is insufficient", "the image's CUDA is newer than this host's NVIDIA driver",
     "update the NVIDIA driver (GB10: R580 or later), or use an image built for the driver's CUDA"),
    ("NV_ERR_NO_MEMORY", "the NVIDIA driver could not allocate memory (unified memory exhausted)",
     "read `sudo dmesg | grep -i nvrm`; free host memory (Ollama's models, page cache: sync; echo 3 > "
     "/proc/sys/vm/drop_caches) or lower vllm.gpu_memory_utilization / vllm.max_model_len"),
    ("CUDA out of memory", "the weights do not fit in GPU memory",
     "use a quantised variant (AWQ/GPTQ-Int4) or more tensor-parallel GPUs"),
    ("exec format error", "the image has no build for this CPU architecture",
     "use an image with a linux/arm64 variant on aarch64 hosts"),
    ("Engine core initialization failed", "the engine failed to start",
     "read the root cause in the log lines above it"),
]


def classify_startup_failure(log_text: str) -> tuple[str, str] | None:
    """(cause, fix) for the first known vLLM start-up failure found in a log, else None."""
    for needle, cause, fix in STARTUP_FAILURES:
        if needle in log_text:
            line = next((ln.strip() for ln in log_text.splitlines() if needle in ln), needle)
            return f"{cause} ({line[-200:]})", fix
    return None


def actual_figures(settings: Settings, log_text: str = "") -> dict:
    """What vLLM itself reports after start-up: KV cache size (from /metrics' vllm:cache_config_info,
    else the log), weight memory and concurrency (from the log)."""
    import re

    from migrator.adapters.http import OpenAIServer

    v = settings.vllm
    out: dict = {}
    metrics = OpenAIServer(v.url).metrics_text(timeout=5)
    if metrics.ok and isinstance(metrics.body, str):
        line = next((ln for ln in metrics.body.splitlines() if ln.startswith("vllm:cache_config_info{")), "")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        for key in ("kv_cache_size_tokens", "kv_cache_memory_bytes", "num_gpu_blocks", "block_size"):
            if labels.get(key, "None") not in ("None", ""):
                out[key] = int(float(labels[key]))
        if "kv_cache_size_tokens" not in out and "num_gpu_blocks" in out and "block_size" in out:
            out["kv_cache_size_tokens"] = out["num_gpu_blocks"] * out["block_size"]
    patterns = {
        "model_loading_gib": r"Model loading took ([\d.]+) ?GiB",
        "available_kv_cache_gib": r"Available KV cache memory: ([\d.]+) ?GiB",
        "log_kv_cache_tokens": r"KV cache size: ([\d,]+) tokens",
        "log_max_concurrency": r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x",
    }
    for key, pattern in patterns.items():
        m = re.search(pattern, log_text)
        if m:
            out[key] = float(m.group(1).replace(",", ""))
    if "kv_cache_size_tokens" not in out and "log_kv_cache_tokens" in out:
        out["kv_cache_size_tokens"] = int(out["log_kv_cache_tokens"])
    return out
