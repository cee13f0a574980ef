"""`bench`: one load test against vLLM or Ollama, recorded in the ledger for status and phase4's gates."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from migrator.core.config import Settings
from migrator.core.errors import ConfigError, ExitCode, MigrateError
from migrator.core.ledger import Ledger, atomic_write_bytes, now_iso
from migrator.bench.loadgen import LoadSpec, Target, run_load


def default_target(settings: Settings, backend: str) -> Target:
    from migrator.adapters.vllm import api_key

    if backend == "ollama":
        return Target(settings.ollama.url, "ollama", settings.ollama.model)
    v = settings.vllm
    return Target(v.url, "openai", settings.model.served_name, api_key(settings))


def check_safe(target: Target, spec: LoadSpec, settings: Settings) -> None:
    """Load goes to this machine (or hosts the operator named), bounded in count and time."""
    host = urlsplit(target.url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1" or host in settings.bench.allowed_hosts):
        raise ConfigError(f"refusing to load {host}: only loopback or bench.allowed_hosts",
                          f"add {host} to bench.allowed_hosts in migrate.yaml if it is your own server")
    if spec.requests > settings.bench.max_requests:
        raise ConfigError(f"--requests {spec.requests} exceeds bench.max_requests ({settings.bench.max_requests})",
                          "lower it, or raise bench.max_requests")
    if spec.duration_s and spec.duration_s > settings.bench.max_duration_s:
        raise ConfigError(f"--duration {spec.duration_s} exceeds bench.max_duration_s", "lower it")
    if target.api not in ("openai", "ollama"):
        raise ConfigError(f"--api {target.api} is not valid", "openai or ollama")


SHIPPED_PROMPTS = {"en": "graphrag-en.jsonl", "ko": "graphrag-ko.jsonl"}  # GraphRAG-shaped: context + question


def prompts_path(name: str) -> Path:
    """`en` / `ko` name the prompt sets shipped with the tool; anything else is a file path."""
    if name in SHIPPED_PROMPTS:
        return Path(__file__).resolve().parent / "prompts" / SHIPPED_PROMPTS[name]
    return Path(name)


def load_prompts(path: Path) -> list[list[dict]]:
    """JSONL: {"prompt": "…"} or {"messages": [...]} per line (multi-turn allowed); `en`, `ko`: the shipped sets."""
    from migrator.files.prompts import read_jsonl_prompts

    path = prompts_path(str(path))
    if not path.is_file():
        raise ConfigError(f"prompt file {path} not found", "give a JSONL file, or en / ko for the shipped sets")
    return read_jsonl_prompts(path)


def run(project: Path, settings: Settings, target: Target, spec: LoadSpec, prompts: list[list[dict]] | None,
        record: bool, progress=None, calibrate: bool = True) -> dict:
    check_safe(target, spec, settings)
    result = measure(target, spec, prompts, progress, calibrate)
    from migrator.core.gates import judge_gates

    result["gates"] = judge_gates(settings.gates, result)
    if record:
        ledger = Ledger(project)
        with ledger.locked("graphrag-migrate bench"):
            ledger.load()
            result["saved"] = str(record_result(ledger, result))
    return result


@dataclass
class BenchOptions:
    """What `bench` was asked for, as the CLI's options name it (choices as plain strings)."""

    url: str | None = None
    api: str | None = None
    model: str | None = None
    backend: str = "vllm"
    concurrency: int = 8
    rate: float | None = None
    poisson: bool = False
    requests: int = 50
    duration: float | None = None
    input_tokens: int = 128
    output_tokens: int = 64
    prompts: str | None = None
    timeout: float = 120.0
    record: bool = True
    sweep: bool = False
    compare: bool = False
    max_users: int | None = None
    turns: int | None = None
    think: float | None = None
    fanout: int = 0
    gate: bool = False
    diff: tuple[Path, Path] | None = None
    calibrate: bool = True


@dataclass
class BenchOutcome:
    """What `bench` did, for rendering: `kind` names the rendering ("diff", "capacity" or "run") and
    `parts` are its arguments; `exit_code` is the status the run earned."""

    kind: str
    exit_code: ExitCode
    parts: dict = field(default_factory=dict)


def bench_command(project: Path, settings: Callable[[], Settings], options: BenchOptions, out) -> BenchOutcome:
    """`bench`: a diff of two saved runs, a sweep (or Ollama-vs-vLLM compare), or one load test.

    `settings` is called only when the run needs them (--diff reads two files, nothing else); `out` is
    a Reporter (migrator.core.ports) the progress lines go to."""
    if options.diff:
        a, b = load_saved(options.diff[0]), load_saved(options.diff[1])
        return BenchOutcome("diff", ExitCode.OK, {"paths": options.diff, "a": a, "b": b, "rows": diff_runs(a, b)})
    settings = settings()
    target = default_target(settings, options.backend)
    target.url, target.api = options.url or target.url, options.api or target.api
    target.model = options.model or target.model
    loaded = load_prompts(options.prompts) if options.prompts else None
    spec = spec_of(options, target)
    if options.sweep or options.compare:
        if options.max_users is not None:
            settings.bench.sweep_max_users = options.max_users
        spec.turns = options.turns or settings.bench.turns
        spec.think_s = settings.bench.think_s if options.think is None else options.think
        targets = [("ollama", default_target(settings, "ollama")), ("vllm", default_target(settings, "vllm"))] \
            if options.compare else [(options.backend, target)]
        runs, rows, written = capacity(project, settings, targets, spec, loaded, options.record, out.info,
                                       lambda probe: out.info(probe_line(probe)))
        completed = all(p["completed"] for r in runs.values() for p in r["probes"])
        return BenchOutcome("capacity", ExitCode.OK if completed else ExitCode.CHECK_FAILED,
                            {"runs": runs, "rows": rows, "written": written})
    from migrator.bench.loadgen import progress_line

    result = run(project, settings, target, spec, loaded, options.record,
                 lambda results, in_flight: out.info("  " + progress_line(results, in_flight)), options.calibrate)
    passed = result["completed"] and (result["gates"]["passed"] or not options.gate)
    return BenchOutcome("run", ExitCode.OK if passed else ExitCode.CHECK_FAILED, {"result": result})


def spec_of(options: BenchOptions, target: Target) -> LoadSpec:
    """The load the options describe: fixed concurrency or a rate, or GraphRAG-shaped fan-out users."""
    spec = LoadSpec(requests=options.requests, duration_s=options.duration,
                    concurrency=None if options.rate else options.concurrency, rate=options.rate,
                    poisson=options.poisson, input_tokens=options.input_tokens, output_tokens=options.output_tokens,
                    timeout_s=options.timeout, ignore_eos=target.api == "openai")
    if options.fanout:
        if options.fanout < 0 or options.rate:
            raise ConfigError("--fanout takes a positive count and fixed --concurrency (no --rate)",
                              "drop --rate, or --fanout")
        spec.users, spec.concurrency, spec.fanout = options.concurrency, None, options.fanout
        spec.turns, spec.think_s = options.turns or 1, options.think or 0.0
    return spec


def probe_line(p: dict) -> str:
    """One sweep probe, as the progress line shows it."""
    return (f"  {p['users']} users: TTFT p99 {p['ttft_ms']['p99'] or 0:.0f} ms, "
            f"{p['per_user_output_tokens_per_s'] or 0:.1f} tok/s per user, real-time met "
            f"{p['realtime']['fraction']:.0%}, 30 s met {p['wait']['fraction']:.0%}")


def fit_synthetic_prompts(target: Target, spec: LoadSpec, prompts: list[list[dict]] | None):
    """Without given prompts, size the synthetic ones to `spec.input_tokens` as the served tokenizer counts
    (sets spec.prompt_words/prompt_vocabulary); returns loadgen.fit_prompt's answer, None if nothing was fitted."""
    from migrator.bench.loadgen import fit_prompt

    if prompts or spec.prompt_words is not None:
        return None
    fitted = fit_prompt(target, spec.input_tokens)
    spec.prompt_words, spec.prompt_vocabulary = fitted[:2] if fitted else (None, None)
    return fitted


def measure(target: Target, spec: LoadSpec, prompts: list[list[dict]] | None = None, progress=None,
            calibrate: bool = True) -> dict:
    """One load test's result (no safety check, nothing recorded): the part phase4's staging shares.
    With `calibrate`, the client's own overhead at this concurrency is measured first (about a second)."""
    from migrator.bench import loadgen
    from migrator.bench.scrape import Scraper, split_ttft

    width = spec.concurrency or (spec.users or 8) * max(1, spec.fanout)  # streams the run keeps open at most
    calibration = loadgen.calibrate(width, spec.output_tokens) if calibrate else None
    fitted = fit_synthetic_prompts(target, spec, prompts)
    with Scraper(target.url, target.api, target.api_key) as scraper:
        summary = asyncio.run(run_load(target, spec, prompts, progress))
    summary["input_tokens_fitted"] = fitted[2] if fitted else False  # "exact", "mean" or False
    summary["server"] = scraper.report()
    if summary["server"].get("gpu_utilization_pct_mean") is not None:
        summary["metrics"]["gpu_utilization_pct"] = summary["server"]["gpu_utilization_pct_mean"]
    split = split_ttft(summary["ttft_ms"]["median"], summary["server"])
    if split:
        summary["ttft_split"] = split
    if calibration is not None:
        summary["calibration"] = calibration
        summary["trust"]["client_overhead_ms"] = calibration.get("overhead_ms")
    return {"at": now_iso(), "target": {"url": target.url, "api": target.api, "model": target.model},
            "spec": asdict(spec), **summary}


def saved_path(ledger_root: Path, kind: str, suffix: str = "") -> Path:
    """A new name under .graphrag-migrate/bench/: time-stamped, never one an earlier run used."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        path = ledger_root / "bench" / f"{stamp}{f'.{n}' if n else ''}-{kind}{suffix}"
        if not path.exists():
            return path
    raise ConfigError(f"too many saved runs named {stamp}-{kind}", "clean up .graphrag-migrate/bench/")


def record_result(ledger: Ledger, result: dict, source: str = "bench") -> Path:
    """Save a run under the ledger and make it the load test phase4's gates judge. The caller holds the lock."""
    saved = saved_path(ledger.root, f"{source}-{result['target']['api']}", ".json")
    atomic_write_bytes(saved, json.dumps(result, indent=2).encode())
    ledger.state["resources"]["loadtest"] = {"at": result["at"], "target": result["target"], "source": source,
                                             "metrics": result["metrics"], "trust": result.get("trust", {}),
                                             "gates": result.get("gates"),
                                             "file": str(saved)}
    ledger.save()
    ledger.audit(source, "loadtest", "ok", target=result["target"], metrics=result["metrics"])
    return saved


# ---- capacity: the users-served search, and Ollama against vLLM ----------------------------------------
# The plan's predictions the comparison is shown next to (§2.3, §3.1, §3.2, §7.1, §10.1).
PLAN = {
    "realtime_users": {"ollama": "1–2", "vllm": "5–10 (gate: > 10)"},
    "wait_users": {"ollama": "—", "vllm": "—"},
}


def slo_of(settings: Settings):
    from migrator.bench.capacity import Slo

    b = settings.bench
    return Slo(ttft_ms=b.slo_ttft_ms, tokens_per_s=b.slo_tokens_per_s, e2e_s=b.slo_e2e_s, fraction=b.slo_fraction)


def run_sweep(project: Path, settings: Settings, target: Target, spec: LoadSpec, prompts: list[list[dict]] | None,
              record: bool, label: str, on_probe=None) -> dict:
    """`bench --sweep`: the users-served search against one server, recorded for status and the gates."""
    from migrator.bench import capacity

    b = settings.bench
    biggest = capacity.requests_for(b.sweep_max_users, spec.turns, b.sweep_min_requests)
    check_safe(target, LoadSpec(requests=biggest), settings)
    fit_synthetic_prompts(target, spec, prompts)
    found = capacity.sweep(target, spec, slo_of(settings), b.sweep_max_users, b.sweep_min_requests, prompts, on_probe)
    result = {"at": now_iso(), "label": label,
              "target": {"url": target.url, "api": target.api, "model": target.model}, **found}
    if record:
        ledger = Ledger(project)
        with ledger.locked("graphrag-migrate bench --sweep"):
            ledger.load()
            saved = saved_path(ledger.root, f"sweep-{label}", ".json")
            atomic_write_bytes(saved, json.dumps(result, indent=2).encode())
            ledger.state["resources"].setdefault("capacity", {})[label] = {
                "at": result["at"], "target": result["target"], "metrics": result["metrics"],
                "capacity": result["capacity"], "file": str(saved)}
            ledger.save()
            ledger.audit("bench", "sweep", "ok", target=result["target"], metrics=result["metrics"])
        result["saved"] = str(saved)
    return result


def capacity(project: Path, settings: Settings, targets: list[tuple[str, Target]], spec: LoadSpec,
             prompts: list[list[dict]] | None, record: bool, say=None, on_probe=None) -> tuple[dict, list | None, dict]:
    """`bench --sweep` (one target) or `--compare` (ollama and vllm): the runs by label, the side-by-side
    rows when both backends ran, and the report files written."""
    from migrator.bench import report
    from migrator.core import speed

    runs = {}
    for label, target in targets:
        if say:
            say(f"sweep {label} at {target.url} ({target.model})")
        runs[label] = run_sweep(project, settings, target, replace_spec(spec, target), prompts, record, label, on_probe)
    rows = comparison(runs["ollama"], runs["vllm"]) if {"ollama", "vllm"} <= runs.keys() else None
    ledger = Ledger(project)
    try:
        predicted = speed.recorded(ledger.read_state()) if ledger.state_path.exists() else None
    except MigrateError:  # an unreadable state costs the comparison, not the sweep's result
        predicted = None
    checked = speed.compare(predicted, speed.measured_of_sweep(runs["vllm"])) if predicted and "vllm" in runs else None
    if checked is not None:
        runs["vllm"]["predicted"] = {"gpu": predicted.get("gpu"), "rows": checked}
    written = report.write(saved_path(ledger.root, "report"), runs, rows, runs[targets[0][0]]["slo"])
    return runs, rows, written


def replace_spec(spec: LoadSpec, target: Target) -> LoadSpec:
    """The same load for another server: ignore_eos only where the API honours it (OpenAI; not Ollama's)."""
    import dataclasses

    return dataclasses.replace(spec, ignore_eos=target.api == "openai")


def _ratio(a, b) -> float | None:
    return round(b / a, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None


def _first(probes: list[dict], key: str, stat: str):
    return probes[0][key][stat] if probes and probes[0].get(key) else None


def comparison(ollama: dict, vllm: dict) -> list[dict]:
    """The side-by-side table: one row per figure, Ollama | vLLM | ratio | the plan's prediction."""
    rows = []

    def row(name: str, a, b, plan_key: str | None = None, unit: str = "") -> None:
        plan = PLAN.get(plan_key or "", {})
        rows.append({"figure": name, "unit": unit, "ollama": a, "vllm": b, "ratio": _ratio(a, b),
                     "plan_ollama": plan.get("ollama"), "plan_vllm": plan.get("vllm")})

    for scenario, name in (("realtime", "real-time users"), ("wait", "users within the 30-second SLO")):
        a, b = ollama["capacity"][scenario], vllm["capacity"][scenario]
        row(name, a["users"], b["users"], f"{scenario}_users", "users")
        row(f"goodput at {name}", a["goodput_rps"], b["goodput_rps"], unit="req/s")
    row("TTFT median, 1 user", _first(ollama["probes"], "ttft_ms", "median"),
        _first(vllm["probes"], "ttft_ms", "median"), unit="ms")
    row("output speed per user, 1 user", ollama["probes"][0]["per_user_output_tokens_per_s"] if ollama["probes"] else None,
        vllm["probes"][0]["per_user_output_tokens_per_s"] if vllm["probes"] else None, unit="tok/s")
    peak = lambda r: max((p["output_tokens_per_s"] or 0 for p in r["probes"]), default=None)  # noqa: E731
    row("peak output throughput", peak(ollama), peak(vllm), unit="tok/s")
    return rows


# ---- bench --diff: two saved runs side by side --------------------------------------------------------
DIFF_FIGURES = [  # (label, path into a saved result, True when higher is better)
    ("TTFT median (ms)", ("ttft_ms", "median"), False), ("TTFT p99 (ms)", ("ttft_ms", "p99"), False),
    ("ITL mean (ms)", ("itl_ms", "mean"), False), ("TPOT median (ms)", ("tpot_ms", "median"), False),
    ("E2E p99 (ms)", ("e2e_ms", "p99"), False), ("output tok/s", ("output_tokens_per_s",), True),
    ("requests/s", ("requests_per_s",), True), ("tok/s per user", ("per_user_output_tokens_per_s",), True),
    ("error rate", ("metrics", "error_rate"), False),
    ("real-time users", ("metrics", "realtime_users"), True), ("users within 30 s", ("metrics", "wait_users"), True),
    ("goodput (req/s)", ("metrics", "goodput_rps"), True),
]


def load_saved(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", "give two files saved under .graphrag-migrate/bench/") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a saved bench result ({exc})", "give a .json file `bench` saved") from None
    if not isinstance(doc, dict) or "target" not in doc:
        raise ConfigError(f"{path} is not a saved bench result", "give a .json file `bench` saved")
    return doc


def diff_runs(a: dict, b: dict) -> list[dict]:
    """Each figure both runs have: A, B, the change in percent, and whether B is better."""
    def pick(doc: dict, path: tuple):
        for key in path:
            doc = doc.get(key) if isinstance(doc, dict) else None
        return doc if isinstance(doc, (int, float)) else None

    rows = []
    for label, path, higher_better in DIFF_FIGURES:
        va, vb = pick(a, path), pick(b, path)
        if va is None and vb is None:
            continue
        change = round((vb - va) / va * 100, 1) if va and vb is not None else None
        better = None if va is None or vb is None or va == vb else (vb > va) == higher_better
        rows.append({"figure": label, "a": va, "b": vb, "change_pct": change, "b_better": better})
    return rows
