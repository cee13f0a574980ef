"""migrate.yaml: typed settings with the plan's defaults.

Precedence, lowest first: built-in defaults < migrate.yaml < environment variables
(`GRAPHRAG_MIGRATE_<SECTION>__<KEY>`, e.g. `GRAPHRAG_MIGRATE_VLLM__PORT=8002`) < command-line flags
(`--set vllm.port=8002`, and the named flags some commands have). A missing migrate.yaml means
"defaults". Every bad value fails with the key, the value and what is allowed; unknown keys fail too,
so a typo never silently falls back to a default. An error message never echoes more than a short line
of a value, and never one that looks like a secret; YAML anchors and aliases are refused (an alias bomb
of a few lines expands to gigabytes).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from migrator.core.errors import ConfigError
from migrator.core.secrets import looks_like_secret, redact, register_secret

ENV_PREFIX = "GRAPHRAG_MIGRATE_"
CONFIG_FILENAME = "migrate.yaml"

# vLLM release the defaults, the simulator and the tests are pinned to.
VLLM_VERSION = "0.32.0"

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:\-]*(@sha256:[0-9a-f]{64})?$")
_SERVICE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_ENVVAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# --api-key as vLLM's argparse reads it: underscores for dashes, and any prefix from --api-k (abbreviations)
_API_KEY_ARG_RE = re.compile(r"^--api[-_]k(e(y)?)?(=|\s|$)")
_SHOWN_MAX = 60  # characters of a value an error message may echo


def _cut(text: str, limit: int = _SHOWN_MAX) -> str:
    text = " ".join(str(text).split())  # one line
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _shown(raw: Any) -> str:
    """A value as an error message shows it: its repr, secrets masked, cut to ~60 characters."""
    return _cut(redact(repr(raw)))


def _choices(*allowed: str):
    def check(value: Any) -> str | None:
        return None if value in allowed else f"one of {', '.join(allowed)}"

    return check


def _matches(pattern: re.Pattern, what: str):
    def check(value: Any) -> str | None:
        return None if pattern.match(str(value)) else what

    return check


def _between(low: float, high: float, low_open: bool = False):
    def check(value: Any) -> str | None:
        ok = (value > low if low_open else value >= low) and value <= high
        return None if ok else f"a number {'>' if low_open else '>='} {low} and <= {high}"

    return check


def _url(value: Any) -> str | None:
    return None if re.match(r"^https?://[^\s/]+(/\S*)?$", str(value)) else "an http(s) URL"


def _setting(default: Any, check=None, help: str = "") -> Any:
    return field(default=default, metadata={"check": check, "help": help})


def _setting_list(factory, help: str = "", check=None) -> Any:
    return field(default_factory=factory, metadata={"check": check, "help": help})



def parse_size(text: str) -> int:
    """'26GiB', '26G', '1024MiB' → bytes (binary); '26GB' → 26 × 10**9 (decimal)."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B?)\s*", text, re.I)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 26GiB)")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    if m.group(3).upper() == "B" and m.group(2):
        scale = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)

@dataclass
class ProjectSettings:
    compose_file: str = _setting("docker/docker-compose.yml", help="the user's compose file")
    env_file: str = _setting("docker/.env", help="the env file compose reads")
    backend_service: str = _setting(
        "backend", _matches(_SERVICE_RE, "a compose service name"), "the backend's compose service"
    )
    backend_runtime: str = _setting(
        "compose", _choices("compose", "none"),
        "compose: recreate the backend service to apply env changes; none: it re-reads the env file",
    )
    backend_url: str = _setting(
        "http://localhost:8000", _url, "where the backend answers (its /health is probed)"
    )
    compose_project_name: str = _setting(
        "", help="compose project name; empty = compose's own default (the directory name)"
    )
    network: str = _setting(
        "", lambda v: None if v == "" or _NAME_RE.match(str(v)) else "a Docker network name",
        "the one network phase3 puts vLLM on; empty = every network of the LLM services (read from compose)",
    )
    llm_services: list = _setting_list(
        list, "compose services that call the LLM besides backend_service (a worker, a second API); vLLM joins "
              "their networks and they get its env keys; empty = backend_service alone")

    def services_calling_llm(self) -> list[str]:
        """backend_service, then the other llm_services, each once: every service that reads the switch
        (phase3 wires each to vLLM; phase4 and rollback recreate each)."""
        return [self.backend_service, *(name for name in self.llm_services if name != self.backend_service)]


def _size(value) -> str | None:
    if value == "":
        return None
    try:
        parse_size(str(value))
        return None
    except ValueError:
        return "a size such as 26GiB, 128G or 24000MiB"


def _known_gpu(name: Any) -> bool:
    from migrator.core import gpus

    return gpus.lookup(str(name)) is not None


def _gpu_names() -> list[str]:
    from migrator.core import gpus

    return list(gpus.GPUS)


@dataclass
class HostSettings:
    assume_gpu_memory: str = _setting(
        "", _size, "plan for a GPU of this size instead of reading this host's (e.g. 26GiB); empty = read it"
    )
    assume_unified: bool = _setting(False, help="with assume_gpu_memory: the size is a unified memory pool (GB10)")
    assume_gpu: str = _setting(
        "", lambda v: None if v == "" or _known_gpu(v) else "a GPU of the table: " + ", ".join(_gpu_names()), "predict speed for this GPU (GB10, H100 SXM, L40S …, see README) instead of nvidia-smi's; empty = read it"
    )
    assume_bandwidth: str = _setting(
        "", lambda v: None if v == "" or re.fullmatch(r"\s*[\d.]+\s*(GB/s)?\s*", str(v), re.I) else "GB/s, e.g. 273 or 273GB/s",
        "predict speed for a part of this memory bandwidth (GB/s) not in the GPU table; overrides assume_gpu's",
    )


@dataclass
class BackendSettings:
    dir: str = _setting("backend", help="the backend's source root (read by phase2, never imported)")
    config_module: str = _setting("src/core/config.py", help="settings class file, under backend.dir")
    llm_module: str = _setting("src/core/llm.py", help="LLM factory file, under backend.dir")
    requirements: str = _setting("requirements.txt", help="dependency file (requirements*.txt, pyproject.toml, Pipfile), under backend.dir")
    import_root: str = _setting(
        "", help="directory under backend.dir that imports start from; empty = src/ in a src layout, else backend.dir")
    wait_s: float = _setting(60.0, _between(0, 3600), "seconds to wait for the backend after recreating it")
    settings_fields: list = _setting_list(
        lambda: ["llm_backend", "vllm_base_url", "vllm_model"],
        "names of the backend-switch, vLLM URL and vLLM model fields in the settings class")
    test_command: str = _setting(
        "python3 -m pytest -q -p no:cacheprovider", help="the backend's unit tests, run in backend.dir; empty = skip"
    )
    python: str = _setting("python3", help="python with the backend's packages (phase2's ChatOpenAI check); "
                           "also parses what this tool's Python cannot (newer syntax)")
    python_version: str = _setting(
        "", _matches(re.compile(r"^(\d+\.\d+)?$"), "a version such as 3.12, or empty"),
        "the Python the backend is written for (init: requires-python, Dockerfile, .python-version); empty = unknown")
    chat_path: str = _setting("", help="the backend's chat endpoint phase4 proves the switch through, then checks (e.g. /chat); empty = phase4 refuses to switch unless --accept-unproven")
    chat_message_field: str = _setting("message", help="JSON field of the question in that endpoint's body")
    chat_session_field: str = _setting("session_id", help="JSON field that keeps a conversation together")
    history_path: str = _setting("", help="endpoint returning a session's turns ({session} is replaced); empty = skip")


# The models phase1's speed check names beside this model's own fp8/4-bit variants when a gate cannot pass:
# the MoE that reaches "30 tok/s per user" on a GB10 (its shape is built into migrator.core.speed).
DEFAULT_ALTERNATIVES = ("Qwen/Qwen3-30B-A3B",)
MAX_ALTERNATIVES = 8  # each may cost a Hub lookup in a check that must stay fast
_REVISION_SEP = "@"


def is_path_like(entry: str) -> bool:
    """An alternative written as a path (/abs, ./rel, ../rel, ~/…) is a local directory, never a Hub id."""
    return entry in (".", "..", "~") or entry.startswith(("/", "./", "../", "~/"))


def split_revision(entry: str) -> tuple[str, str]:
    """'ORG/NAME@rev' → ('ORG/NAME', 'rev'); no '@' → (entry, ''). Paths keep their '@'."""
    if is_path_like(entry) or _REVISION_SEP not in entry:
        return entry, ""
    repo, _, revision = entry.rpartition(_REVISION_SEP)
    return repo, revision


def _alternatives(value: Any) -> str | None:
    """Each entry a Hub id (ORG/NAME, optionally @revision) or a local directory; a few, each once."""
    if len(value) > MAX_ALTERNATIVES:
        return f"at most {MAX_ALTERNATIVES} models (each may be looked up on the Hub during a check)"
    seen = set()
    for entry in value:
        if entry in seen:
            return f"each model once ({_cut(entry)} is listed twice)"
        seen.add(entry)
        if is_path_like(entry):
            continue
        repo, revision = split_revision(entry)
        if not _MODEL_RE.match(repo) or (_REVISION_SEP in entry and not _NAME_RE.match(revision)):
            return (f"Hub ids (ORG/NAME or ORG/NAME@revision) or local directories (/abs, ./rel, ~/…); "
                    f"{_cut(entry, 40)!r} is neither")
    return None


@dataclass
class ModelSettings:
    id: str = _setting(
        "Qwen/Qwen2.5-32B-Instruct",
        help="Hugging Face repo id (ORG/NAME) or a local directory",
    )
    served_name: str = _setting(
        "Qwen/Qwen2.5-32B-Instruct",
        _matches(re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]*$"), "letters, digits and _ . : / -"),
        "vLLM --served-model-name; the backend's VLLM_MODEL must equal it",
    )
    revision: str = _setting(
        "main", _matches(_NAME_RE, "a branch, tag or commit"), "revision to download"
    )
    real_weights: bool = _setting(
        True, help="false for random-weight test models: language checks then test framing only"
    )
    reasoning: str = _setting(
        "off", _choices("off", "parse", "raw"),
        "Qwen3's thinking on vLLM: off = --default-chat-template-kwargs enable_thinking false; parse = "
        "--reasoning-parser qwen3 (thinking streamed in delta.reasoning, which ChatOpenAI drops); raw = thinking "
        "in content as <think>…</think>, as on Ollama. Applied to Qwen3-family models only",
    )
    alternatives: list = _setting_list(
        lambda: list(DEFAULT_ALTERNATIVES),
        "models phase1's speed check judges beside this one's fp8/4-bit variants: Hub ids (ORG/NAME[@revision]) "
        "or local directories, each read from the directory, the local HF cache or the Hub (config.json and "
        "safetensors headers); the default MoE is named for a dense model only, a list you set is judged whatever "
        "the model; empty = none", _alternatives)


@dataclass
class VllmSettings:
    runtime: str = _setting(
        "docker", _choices("docker", "process"), "docker (a container) or process (a local process)"
    )
    image: str = _setting(
        f"vllm/vllm-openai:v{VLLM_VERSION}",
        _matches(_IMAGE_RE, "an image reference with a pinned tag (repo:tag)"),
        "pinned vLLM image",
    )
    entrypoint: str = _setting(
        "auto", help="how the image starts vLLM: auto = read from `docker image inspect` (an entrypoint that is not "
                     "vLLM's, as in NVIDIA's NGC images, gets `vllm serve` before the arguments); image = its own "
                     "entrypoint serves vLLM; else the command put before vLLM's arguments (e.g. `vllm serve`)"
    )
    container_name: str = _setting(
        "graphrag-vllm", _matches(_NAME_RE, "a Docker container name"), "vLLM container name"
    )
    service_name: str = _setting(
        "vllm", _matches(_SERVICE_RE, "a compose service name"), "vLLM compose service name"
    )
    device: str = _setting("gpu", _choices("gpu", "cpu"), "gpu: request the NVIDIA GPU; cpu: vLLM-CPU (tests)")
    network_mode: str = _setting(
        "", _choices("", "host"), "'' = publish the port on vllm.host; host = the host's network"
    )
    hf_cache: str = _setting("~/.cache/huggingface", help="host HF cache, mounted into the container")
    vllm_cache: str = _setting("~/.cache/vllm", help="host vLLM compile cache, mounted into the container")
    host: str = _setting("127.0.0.1", help="address vLLM's port is bound to")
    port: int = _setting(8001, _between(1, 65535), "host port of vLLM's OpenAI API")
    gpu_memory_utilization: float = _setting(
        0.9, _between(0.0, 1.0, low_open=True), "vLLM --gpu-memory-utilization"
    )
    max_model_len: int = _setting(8192, _between(16, 10_000_000), "vLLM --max-model-len")
    enable_chunked_prefill: bool = _setting(
        False, help="pass --enable-chunked-prefill (vLLM's V1 engine has it on by default: only for older vLLMs)"
    )
    tensor_parallel_size: int = _setting(1, _between(1, 64), "vLLM --tensor-parallel-size")
    tool_calling: str = _setting(
        "auto", _choices("auto", "on", "off"),
        "--enable-auto-tool-choice --tool-call-parser hermes: auto = when the backend's code calls bind_tools, "
        "with_structured_output or passes tools=; on = always; off = never",
    )
    max_num_seqs: int = _setting(
        0, _between(0, 65536), "vLLM --max-num-seqs; 0 = on unified memory (GB10) the real-time users gate's "
                               "target, elsewhere vLLM's default"
    )
    startup_memory_floor: str = _setting(
        "4GiB", _size, "on unified memory, vLLM is stopped when MemAvailable falls below this during start-up; "
                       "empty = no watchdog"
    )
    extra_args: list = _setting_list(list, "more vLLM arguments, one list item each")
    cpuset: str = _setting(
        "", _matches(re.compile(r"^$|^\d+(-\d+)?(,\d+(-\d+)?)*$"), "a CPU list such as 0-15 or 0,2,4"),
        "CPUs vLLM may run on (Linux list, e.g. 0-15); empty = all. Keeps its busy-polling off the cores others need",
    )
    api_key_env: str = _setting(
        "",
        lambda v: None if v == "" or _ENVVAR_RE.match(str(v)) else "an environment variable name",
        "name of the env var holding vLLM's API key (never the key itself)",
    )
    python: str = _setting("python3", help="python that runs vLLM for runtime=process")
    server_module: str = _setting(
        "vllm.entrypoints.openai.api_server",
        _matches(re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$"), "a Python module name"),
        "module run as `python -m` for runtime=process (migrator.sim.vllm = the simulator)",
    )
    backend_base_url: str = _setting(
        "", help="VLLM_BASE_URL the backend uses; empty = http://<container_name>:8000/v1 "
                 "(docker) or http://<host>:<port>/v1 (process)",
    )
    startup_timeout_s: float = _setting(1200.0, _between(1, 86400), "readiness time-out")
    stop_timeout_s: float = _setting(10.0, _between(0, 600), "SIGTERM grace before kill")

    @property
    def probe_host(self) -> str:
        """The address to reach vLLM at from this host (a wildcard bind is reached on loopback)."""
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host

    @property
    def url(self) -> str:
        """vLLM's base URL from this host (no /v1): every probe, check and load test starts here."""
        return f"http://{self.probe_host}:{self.port}"


@dataclass
class OllamaSettings:
    url: str = _setting("http://localhost:11434", _url, "Ollama's API")
    model: str = _setting("qwen3:32b", help="the model the backend uses on Ollama")


@dataclass
class BenchSettings:
    allowed_hosts: list = _setting_list(list, "hosts besides loopback that `bench` may load (your own servers only)")
    max_requests: int = _setting(10000, _between(1, 1_000_000), "upper bound on one run's requests")
    max_duration_s: float = _setting(1800.0, _between(1, 86400), "upper bound on one run's duration")
    slo_ttft_ms: float = _setting(500.0, _between(1, 600000), "real-time SLO: a request's TTFT at most this (§7.1)")
    slo_tokens_per_s: float = _setting(
        30.0, _between(0, 100000), "real-time SLO: a request's output speed at least this (reading speed, §7.1)"
    )
    slo_e2e_s: float = _setting(30.0, _between(0.1, 86400), "30-second SLO: a request's E2E at most this")
    slo_fraction: float = _setting(
        0.95, _between(0.5, 1.0), "a user count is served when this share of its requests meets the SLO"
    )
    sweep_max_users: int = _setting(64, _between(1, 4096), "`bench --sweep` stops searching at this many users")
    sweep_min_requests: int = _setting(40, _between(1, 100000), "requests per probed user count, at least")
    turns: int = _setting(3, _between(1, 100), "turns per user conversation (each sends the history back)")
    think_s: float = _setting(2.0, _between(0, 3600), "mean time a user reads an answer before the next turn")
    predict_prompt_tokens: int = _setting(
        2000, _between(1, 10_000_000), "prompt length phase1's speed prediction assumes (TTFT floor, KV read per token)"
    )
    predict_output_tokens: int = _setting(
        500, _between(1, 1_000_000), "answer length phase1's speed prediction assumes (the 30-second SLO)"
    )


@dataclass
class DeploySettings:
    watch_s: float = _setting(300.0, _between(0, 86400), "how long phase4 watches production after the switch")
    probe_interval_s: float = _setting(5.0, _between(0.1, 3600), "seconds between probes while watching")
    staging: str = _setting(
        "auto", _choices("auto", "on", "off"),
        "staging project before production: auto = when the backend and vLLM run under compose",
    )
    staging_project: str = _setting("", help="staging's compose project name; empty = production's project name + -staging")
    staging_backend_url: str = _setting(
        "http://127.0.0.1:18000", _url, "where the staging backend answers (its port goes into staging's env file)"
    )
    staging_port_variable: str = _setting(
        "BACKEND_PORT", _matches(_ENVVAR_RE, "an environment variable name"),
        "env variable your compose file reads for the backend's port (set to the staging port)",
    )
    staging_vllm: str = _setting(
        "own", _choices("own", "production"),
        "own: staging starts its own vLLM; production: staging's backend uses production's vLLM (one GPU)",
    )
    staging_vllm_port: int = _setting(18001, _between(1, 65535), "port of staging's own vLLM")
    staging_requests: int = _setting(50, _between(1, 100000), "requests in staging's load test")
    staging_concurrency: int = _setting(8, _between(1, 4096), "concurrent streams in staging's load test")
    staging_output_tokens: int = _setting(64, _between(1, 32768), "output tokens per request in staging's load test")
    keep_staging: bool = _setting(False, help="leave the staging project running after phase4 (rollback removes it)")
    drain_timeout_s: float = _setting(
        30.0, _between(0, 3600),
        "before the backend is recreated (switch, rollback): longest wait for the answers in flight to finish",
    )
    drain_on_timeout: str = _setting(
        "proceed", _choices("proceed", "stop"),
        "phase4's switch when the drain times out: proceed (the grace period still lets them finish) or stop "
        "(production untouched); rollback always proceeds",
    )
    drain_quiet_s: float = _setting(
        1.0, _between(0, 600), "no request in flight for this long counts as drained (a quiet period where "
        "nothing shows requests: Ollama)",
    )
    stop_grace_s: float = _setting(
        30.0, _between(0, 3600),
        "the old backend's time to finish its answers after SIGTERM before SIGKILL (compose stop_grace_period)",
    )


@dataclass
class MonitoringSettings:
    dir: str = _setting("monitoring", help="where phase4 writes the Prometheus, alert and Grafana files")
    bearer_token_file: str = _setting("", help="token file Prometheus sends to /metrics (if a proxy guards it)")
    kv_cache_alert: float = _setting(0.9, _between(0.0, 1.0, low_open=True), "KV cache usage that alerts")
    waiting_alert: int = _setting(5, _between(0, 100000), "waiting requests that alert while the queue grows")


@dataclass
class Gate:
    name: str
    metric: str
    op: str
    threshold: float
    source: str = "bench"  # bench: the recorded load test; metrics: vLLM's /metrics during the watch window
    observe_only: bool = False  # recorded and shown, never blocks or rolls back

    def passes(self, value: float) -> bool:
        return {
            ">": value > self.threshold,
            ">=": value >= self.threshold,
            "<": value < self.threshold,
            "<=": value <= self.threshold,
        }[self.op]


def _default_gates() -> list[Gate]:
    # The plan's §7.1 success criteria. Real-time users come from `bench --sweep`, GPU utilisation from
    # nvidia-smi during the load test: each a note until measured, blocking once it is.
    return [
        Gate("per-user output speed", "per_user_output_tokens_per_s", ">", 30.0),
        Gate("P99 latency", "ttft_p99_ms", "<", 500.0),
        Gate("concurrent real-time users", "realtime_users", ">", 10.0),
        Gate("GPU utilisation", "gpu_utilization_pct", "<", 90.0),
        Gate("P99 latency in production", "ttft_p99_ms", "<", 500.0, source="metrics"),
        Gate("error rate in production", "error_rate", "<", 0.05, source="metrics"),
    ]


@dataclass
class Settings:
    project: ProjectSettings = field(default_factory=ProjectSettings)
    host: HostSettings = field(default_factory=HostSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    vllm: VllmSettings = field(default_factory=VllmSettings)
    ollama: OllamaSettings = field(default_factory=OllamaSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    gates: list[Gate] = field(default_factory=_default_gates)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Host directories vLLM's container mounts: relative ones are the project's, like every path in migrate.yaml.
_HOST_DIRS = ("hf_cache", "vllm_cache")


def host_path(value: str, project: Path) -> str:
    """A path setting as the host sees it: `~` expanded, a relative one taken from the project root (as
    every path in migrate.yaml is), normalised — absolute whatever the cwd, so a bind mount handed to
    docker or written into a compose file means the same directory from anywhere."""
    return os.path.abspath(os.path.join(project, os.path.expanduser(value)))


def anchor_paths(settings: Settings, project: Path) -> Settings:
    """`settings` with its relative host directories (vllm.hf_cache, vllm.vllm_cache) made absolute from
    the project root; the same object when none is relative (`~/…` stays as written)."""
    relative = {name: host_path(getattr(settings.vllm, name), project) for name in _HOST_DIRS
                if not os.path.isabs(os.path.expanduser(getattr(settings.vllm, name)))}
    if not relative:
        return settings
    return dataclasses.replace(settings, vllm=dataclasses.replace(settings.vllm, **relative))


_SECTIONS: dict[str, type] = {
    "project": ProjectSettings,
    "host": HostSettings,
    "backend": BackendSettings,
    "model": ModelSettings,
    "vllm": VllmSettings,
    "ollama": OllamaSettings,
    "bench": BenchSettings,
    "monitoring": MonitoringSettings,
    "deploy": DeploySettings,
}
_GATE_OPS = (">", ">=", "<", "<=")


def describe_keys() -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every setting; the README's table is checked against it."""
    rows = []
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{section}.{f.name}", default, f.metadata.get("help", "")))
    rows.append(("gates", "plan §7.1", "list of {name, metric, op, threshold, source, observe_only}"))
    return rows


def _unknown(key: str, allowed: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1) if len(key) <= 200 else []
    hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(sorted(allowed))}"
    return ConfigError(f"unknown key '{_cut(redact(key))}' in {where}", hint)


def _coerce(key: str, raw: Any, target: type, where: str) -> Any:
    """Turn a YAML or string value into the field's type, or fail naming key and value."""

    def bad(allowed: str) -> ConfigError:
        return ConfigError(f"{where}: {key} = {_shown(raw)} is not valid", f"expected {allowed}")

    if target is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return raw.lower() in ("true", "yes", "1", "on")
        raise bad("true or false")
    if target is int:
        if isinstance(raw, bool):
            raise bad("an integer")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
            return int(raw)
        raise bad("an integer")
    if target is float:
        if isinstance(raw, bool):
            raise bad("a number")
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise bad("a number")
    if target is list:
        if isinstance(raw, list) and all(isinstance(x, (str, int, float)) for x in raw):
            return [str(x) for x in raw]
        if isinstance(raw, str):
            import shlex

            return shlex.split(raw)
        raise bad("a list of strings")
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        return str(raw)
    raise bad("a string")


def _field_type(cls: type, name: str) -> type:
    annotation = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    return {"str": str, "int": int, "float": float, "bool": bool, "list": list}[str(annotation)]


def _set_value(settings: Settings, dotted: str, raw: Any, where: str) -> None:
    section, _, key = dotted.partition(".")
    if section not in _SECTIONS:
        raise _unknown(section, [*_SECTIONS, "gates"], where)
    cls = _SECTIONS[section]
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        raise _unknown(key, names, f"{where} section '{section}'")
    value = _coerce(dotted, raw, _field_type(cls, key), where)
    _refuse_secrets(dotted, value, where)
    check = {f.name: f for f in dataclasses.fields(cls)}[key].metadata.get("check")
    if check is not None:
        problem = check(value)
        if problem:
            raise ConfigError(f"{where}: {dotted} = {_shown(raw)} is not valid", f"expected {problem}")
    setattr(getattr(settings, section), key, value)


def _refuse_secrets(dotted: str, value: Any, where: str) -> None:
    """A key where a variable's NAME belongs, or on vLLM's command line (`ps`, state.json and
    `status --json` would show it): refused without echoing it, and masked wherever else it shows up."""
    if dotted == "vllm.api_key_env" and looks_like_secret(str(value)):
        register_secret(str(value))
        raise ConfigError(f"{where}: vllm.api_key_env is not valid: that looks like a key itself; give the NAME "
                          "of the variable that holds it",
                          "put the key in an environment variable (export VLLM_API_KEY=…) and set "
                          "vllm.api_key_env: VLLM_API_KEY")
    if dotted == "vllm.extra_args":
        for i, arg in enumerate(value):
            if _API_KEY_ARG_RE.match(arg):
                inline = arg.partition("=")[2] or "".join(arg.split(None, 1)[1:])  # `--api-key=K`, `--api-key K`
                register_secret(inline.strip() or (value[i + 1] if i + 1 < len(value) else None))
                raise ConfigError(f"{where}: vllm.extra_args passes --api-key to vLLM, where `ps`, state.json "
                                  "and `status --json` would show the key",
                                  "take it out of extra_args: put the key in an environment variable and name "
                                  "that variable in vllm.api_key_env (vLLM gets it through its environment)")


def _parse_gates(raw: Any, where: str) -> list[Gate]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: gates must be a list", "see README 'Configuration'")
    gates = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: gates[{i}] must be a mapping", "keys: name, metric, op, threshold")
        keys = ["name", "metric", "op", "threshold", "source", "observe_only"]
        unknown = set(item) - set(keys)
        if unknown:
            raise _unknown(sorted(unknown)[0], keys, f"{where} gates[{i}]")
        if item.get("source", "bench") not in ("bench", "metrics"):
            raise ConfigError(f"{where}: gates[{i}].source = {_shown(item['source'])} is not valid", "bench or metrics")
        missing = {"metric", "op", "threshold"} - set(item)
        if missing:
            raise ConfigError(f"{where}: gates[{i}] lacks {', '.join(sorted(missing))}", "keys: name, metric, op, threshold")
        if item["op"] not in _GATE_OPS:
            raise ConfigError(f"{where}: gates[{i}].op = {_shown(item['op'])} is not valid", f"expected one of {' '.join(_GATE_OPS)}")
        threshold = _coerce(f"gates[{i}].threshold", item["threshold"], float, where)
        from migrator.core.gates import metric_problem

        problem = metric_problem(str(item["metric"]), str(item.get("source", "bench")))
        if problem:
            raise ConfigError(f"{where}: gates[{i}].metric: {_cut(redact(problem), 400)}",
                              "fix the gate's metric in migrate.yaml")
        gates.append(Gate(str(item.get("name", item["metric"])), str(item["metric"]), item["op"], threshold,
                          str(item.get("source", "bench")),
                          _coerce(f"gates[{i}].observe_only", item.get("observe_only", False), bool, where)))
    return gates


_NO_ALIASES = "YAML aliases are not allowed"


def _unique_key_loader():
    """PyYAML's SafeLoader, except that a key given twice is an error (PyYAML keeps the last one silently)
    and that anchors and aliases are refused as they are read, before anything is built from them."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(None, None, _NO_ALIASES, event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{_cut(redact(str(key)))}' appears twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def load_settings(
    config_path: Path | None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    required: bool = False,
) -> Settings:
    """Defaults, then migrate.yaml, then GRAPHRAG_MIGRATE_* variables, then overrides."""
    settings = Settings()
    if config_path is not None and config_path.exists():
        import yaml

        try:
            data = yaml.load(config_path.read_text(encoding="utf-8"), Loader=_unique_key_loader())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            if problem == _NO_ALIASES:
                raise ConfigError(f"{config_path} line {mark.line + 1}: {_NO_ALIASES}",
                                  "write each value out: anchors (&name), aliases (*name) and merge keys (<<) "
                                  "are refused") from None
            raise ConfigError(f"{config_path} is not valid YAML{at}: {_cut(problem, 120)}",
                              "fix it, or delete the file to use defaults") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {config_path}: {exc}", "check the path and its permissions") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{config_path} must be a mapping of sections", "see README 'Configuration'")
        where = str(config_path)
        for section, values in data.items():
            if section == "gates":
                settings.gates = _parse_gates(values, where)
                continue
            if section not in _SECTIONS:
                raise _unknown(str(section), [*_SECTIONS, "gates"], where)
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: section '{section}' must be a mapping", "indent its keys under it")
            for key, raw in values.items():
                _set_value(settings, f"{section}.{key}", raw, where)
    elif required and config_path is not None:
        raise ConfigError(f"config file {config_path} does not exist", "fix --config or omit it to use defaults")

    environ = os.environ if environ is None else environ
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".", 1)
        if "." not in dotted:
            continue  # GRAPHRAG_MIGRATE_HOME and friends are not settings
        _set_value(settings, dotted, raw, f"environment variable {name}")

    for dotted, raw in (overrides or {}).items():
        _set_value(settings, dotted, raw, "command line")
    return settings


def parse_set_options(items: list[str]) -> dict[str, str]:
    """`--set section.key=value` pairs from the command line."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {_shown(item)} is not section.key=value", "e.g. --set vllm.port=8002")
        out[key.strip()] = value
    return out
