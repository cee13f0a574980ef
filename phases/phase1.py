"""phase1 — prepare: preflight, then vLLM running alone next to Ollama, proven to answer.

Steps: GPU → system memory → runtime reachable → port free → Ollama answers → Ollama's context against
max_model_len (a warning: prompts it takes today vLLM would refuse) → memory-fit verdict
(before any download; "fits with changes" stops, naming the values to re-run with) → the advised values
adopted (only with --apply-fit-advice) → disk space → download (pinned, verified, resumable) → unload Ollama's chat
model (only with consent) → start vLLM with tiered readiness, recording predicted vs actual KV cache
→ a short benchmark of vLLM alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from migrator.core import fit, gpus, speed
from migrator.adapters import gpu, vllm as vllm_launch
from migrator.core.config import DEFAULT_ALTERNATIVES, Settings, host_path, is_path_like, parse_size, split_revision
from migrator.core.engine import ADOPTED_SETTINGS, Context, Outcome, Phase, Step, Undo, UndoStage, adopt_settings
from migrator.core.errors import DockerUnavailable, EnvironmentMissing, MigrateError
from migrator.core.secrets import redact
from migrator.files.envfile import read_project_env
from phases.context import OllamaContext


class GpuPresent(Step):
    id = "phase1.gpu"
    title = "GPU and driver"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        host = ctx.settings.host
        if host.assume_gpu and not host.assume_gpu_memory:
            g = gpus.lookup(host.assume_gpu)
            return Outcome.passed(f"planning for {g.name} ({g.memory_gb:g} GB{', unified' if g.unified else ''}, "
                                  f"{g.bandwidth_gbs:g} GB/s); this host's GPU not read")
        if host.assume_gpu_memory:
            return Outcome.passed(f"planning for {host.assume_gpu_memory} "
                                  f"({'unified' if host.assume_unified else 'discrete'}); this host's GPU not read")
        if ctx.settings.vllm.device == "cpu":
            return Outcome.passed("vllm.device is cpu: no GPU needed")
        report = _gpu_report(ctx)
        if report.error or not report.gpus:
            return Outcome.failed(report.error or "nvidia-smi lists no GPU",
                                  "install the NVIDIA driver, or plan from here with --check --assume-gpu-memory 26GiB")
        g = report.gpus[0]
        memory = ("unified memory: budget from system RAM" if g.unified and not g.warning
                  else g.warning or f"{(g.free_bytes or 0) / 2**30:.1f}/{(g.total_bytes or 0) / 2**30:.1f} GiB free")
        out = Outcome.passed(f"{g.name}, driver {g.driver}, CUDA {report.cuda_version or '?'}, "
                             f"compute {g.compute_capability}; {memory}",
                             gpu=g.name, driver=g.driver, cuda=report.cuda_version, unified=g.unified)
        out.warning = bool(g.warning)
        return out


class RuntimeReachable(Step):
    id = "phase1.runtime"
    title = "vLLM runtime reachable"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        return ctx.vllm_runtime.check(ctx)


def _ours_answers(ctx: Context) -> bool:
    """vLLM already answers on the port with our served model (a resumed or repeated run)."""
    from migrator.adapters.http import OpenAIServer

    v = ctx.settings.vllm
    p = OpenAIServer(v.url, vllm_launch.api_key(ctx.settings)).models(timeout=2)
    return p.ok and any(m.get("id") == ctx.settings.model.served_name for m in (p.body or {}).get("data", []))


class PortFree(Step):
    id = "phase1.port"
    title = "vLLM port free"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        if not vllm_launch.port_in_use(v.host, v.port):
            return Outcome.passed(f"{v.host}:{v.port} free")
        if _ours_answers(ctx):
            return Outcome.passed(f"{v.host}:{v.port} already serves {ctx.settings.model.served_name}")
        mine = ctx.vllm_runtime.running_ours(ctx)
        if mine:  # an interrupted start of ours, still loading: the start step adopts or replaces it
            return Outcome.passed(f"{v.host}:{v.port} held by our own {', '.join(mine)}, not yet ready")
        return Outcome.failed(f"port {v.host}:{v.port} is in use by another program",
                              "stop it, or choose another port with --port / vllm.port")


class SystemMemory(Step):
    id = "phase1.ram"
    title = "system memory"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        mem = gpu.meminfo()
        total, available = mem.get("MemTotal", 0), mem.get("MemAvailable", 0)
        message = f"{available / 2**30:.1f} GiB available of {total / 2**30:.1f} GiB"
        if available < 4 * 2**30:
            return Outcome.failed(message + ": too little for vLLM's process and the backend",
                                  "stop other services first", ram_available_gib=round(available / 2**30, 1))
        return Outcome.passed(message, ram_total_gib=round(total / 2**30, 1),
                              ram_available_gib=round(available / 2**30, 1))


class OllamaAnswers(Step):
    id = "phase1.ollama"
    title = "Ollama answers (the rollback target)"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        from migrator.adapters.http import OllamaServer

        server = OllamaServer(ctx.settings.ollama.url)
        version = server.version()
        if not version.ok:
            return Outcome.warn(f"Ollama not answering at {server.base_url} ({version.describe()}): "
                                 "rollback will have nothing to return to until it runs")
        loaded = server.loaded()
        models = [{"name": m.get("name"), "size_vram": m.get("size_vram")}
                  for m in (loaded.body or {}).get("models", [])] if loaded.ok else []
        held = sum(int(m["size_vram"] or 0) for m in models)
        return Outcome.passed(
            f"Ollama {version.body.get('version', '?')}; loaded: "
            + (", ".join(f"{m['name']} ({int(m['size_vram'] or 0) / 2**30:.1f} GiB)" for m in models) or "none"),
            ollama_loaded=[m["name"] for m in models], ollama_vram_bytes=held,
        )


def _ollama_chat_model(ctx: Context) -> dict | None:
    """Ollama's chat model as /api/ps lists it while loaded, else None."""
    from migrator.adapters.http import OllamaServer

    probe = OllamaServer(ctx.settings.ollama.url).loaded(timeout=2)
    if not probe.ok:
        return None
    return next((m for m in (probe.body or {}).get("models", []) if m.get("name") == ctx.settings.ollama.model), None)


def _ollama_chat_model_bytes(ctx: Context, unified: bool) -> int:
    """What Ollama's chat model holds of the memory vLLM would use: on unified memory its whole `size`
    (GB10's Ollama reports size_vram 0 while it uses the same pool), on a discrete GPU its `size_vram`."""
    model = _ollama_chat_model(ctx) or {}
    return int(model.get("size" if unified else "size_vram") or 0)


def _budget(ctx: Context) -> fit.Budget:
    """What vLLM may use now. Measured figures (GPU free, MemAvailable) already exclude Ollama's share;
    an assumed size is the whole device, so Ollama's loaded model is taken out of it here."""
    assumed, unified = ctx.settings.host.assume_gpu_memory, ctx.settings.host.assume_unified
    if not assumed:
        assumed, unified = _assumed_gpu_memory(ctx)
    if assumed:
        size = parse_size(assumed)
        held = _ollama_chat_model_bytes(ctx, unified)
        return fit.Budget(size, max(0, size - held), unified, held, f"assumed {assumed}", assumed=True)
    if ctx.settings.vllm.device == "gpu":
        report = gpu.query()
        if report.gpus and not report.gpus[0].unified:
            g = report.gpus[0]
            n = ctx.settings.vllm.tensor_parallel_size
            return fit.Budget(g.total_bytes * n, g.free_bytes * n, False, _ollama_chat_model_bytes(ctx, False),
                              f"{n} × {g.name}")
        if not report.gpus:
            raise EnvironmentMissing(report.error or "nvidia-smi lists no GPU",
                                     "plan with --check --assume-gpu-memory 26GiB [--assume-unified]")
    mem = gpu.meminfo()
    return fit.Budget(mem["MemTotal"], mem["MemAvailable"], True, _ollama_chat_model_bytes(ctx, True),
                      "system RAM (unified)")


def _assumed_gpu_memory(ctx: Context) -> tuple[str, bool]:
    """--assume-gpu alone plans for that GPU's memory too (unified when it is, as GB10's): (size, unified),
    ("", False) without one."""
    g = gpus.lookup(ctx.settings.host.assume_gpu) if ctx.settings.host.assume_gpu else None
    if g is None:
        return "", False
    return f"{g.memory_gb:g}GB", ctx.settings.host.assume_unified or g.unified


def _gpu_report(ctx: Context) -> gpu.GpuReport:
    """nvidia-smi's answer for which GPU this is, read once a run (the preflight and the speed prediction
    both need the name; the memory budget queries again, since free memory changes)."""
    if "gpu_report" not in ctx.memo:
        ctx.memo["gpu_report"] = gpu.query()
    return ctx.memo["gpu_report"]


def _speed_gpu(ctx: Context) -> tuple[gpus.Gpu | None, str]:
    """The GPU the speed prediction divides by — assumed, or this host's from nvidia-smi — or why none."""
    host, v = ctx.settings.host, ctx.settings.vllm
    g = gpus.lookup(host.assume_gpu) if host.assume_gpu else None
    if g is None and not host.assume_bandwidth:
        if v.device == "cpu":
            return None, ("vllm.device is cpu: pass --assume-bandwidth GB/s to predict — the bandwidth of the "
                          "cores vLLM computes on (vLLM-CPU keeps one for its engine), not the whole machine's")
        report = _gpu_report(ctx)
        if not report.gpus:
            return None, "no GPU read: pass --assume-gpu NAME or --assume-bandwidth GB/s"
        g = gpus.lookup(report.gpus[0].name)
        if g is None:
            return None, (f"{report.gpus[0].name} is not in the GPU table: pass --assume-bandwidth GB/s "
                          "(its memory bandwidth)")
    if host.assume_bandwidth:
        bandwidth = float(host.assume_bandwidth.lower().replace("gb/s", ""))
        g = gpus.Gpu(f"{g.name if g else 'a part'} at {bandwidth:g} GB/s", bandwidth, g.memory_gb if g else 0,
                     g.unified if g else False, dict(g.tflops) if g else {}, ("--assume-bandwidth",))
    n = v.tensor_parallel_size
    if n > 1:  # tensor parallel: n × the bandwidth and FLOPs, an upper bound (all-reduces cost extra)
        g = gpus.Gpu(f"{n} × {g.name}", g.bandwidth_gbs * n, g.memory_gb * n, g.unified,
                     {k: (x * n if x else x) for k, x in g.tflops.items()}, g.sources)
    return g, ""


# An alternative's Hub lookup in a check: each request's timeout, and the whole read's (retries included).
# A Hub found unreachable is not asked again in the same run (ctx.memo[HUB_DOWN]).
HUB_REQUEST_TIMEOUT_S = 2.0
HUB_DEADLINE_S = 5.0
HUB_DOWN = "hub_unreachable"
ALTERNATIVES = "alternatives"


def _is_the_model(ctx: Context, model: fit.ModelInfo, entry: str) -> bool:
    """An alternative naming the model being checked (its id, its config's name, or its directory)."""
    repo = split_revision(entry)[0]
    if repo.lower() in {ctx.settings.model.id.lower(), model.name.lower()}:
        return True
    if not vllm_launch.is_local_model(ctx.settings, ctx.project):
        return False
    mine, theirs = vllm_launch.model_arg(ctx.settings, ctx.project), host_path(entry, ctx.project)
    return os.path.isdir(theirs) and os.path.samefile(mine, theirs)


def _hub_alternative(ctx: Context, repo: str, revision: str) -> tuple[speed.Profile | None, str]:
    """(profile, source) from the Hub's config.json and safetensors headers, or (None, why not), in
    bounded time; never a request with HF_HUB_OFFLINE=1, nor after this run found the Hub unreachable."""
    from migrator.adapters import hf

    if hf.hub_offline():
        return None, "HF_HUB_OFFLINE=1: the Hub not asked"
    if ctx.memo.get(HUB_DOWN):
        return None, f"{ctx.memo[HUB_DOWN]}; not asked again this run"
    try:
        token = _hf_token(ctx)
    except MigrateError:
        token = None  # an unreadable env file is the env-file steps' to report; the Hub may not need a token
    try:
        info = hf.read_hub_within(repo, revision, token, HUB_DEADLINE_S, HUB_REQUEST_TIMEOUT_S)
        found = speed.profile(info, _kv_dtype(ctx))
    except hf.HubUnreachable as exc:
        ctx.memo[HUB_DOWN] = exc.reason
        return None, exc.reason
    except hf.HubRefused as exc:
        return None, exc.reason
    except MigrateError as exc:
        return None, redact(exc.message)
    except Exception as exc:  # a malformed answer: the check goes on without this alternative, saying why
        return None, redact(f"could not read its metadata from the Hub ({type(exc).__name__}: {str(exc)[:120]})")
    found.source = f"the Hub ({hf.hub_endpoint()}): config.json and safetensors headers of {repo}@{revision}"
    return found, found.source


def _look_up(ctx: Context, entry: str) -> tuple[speed.Profile | None, str, str]:
    """(profile or None, found_in, source) for one alternative: a local directory, else the local HF
    cache, else the Hub, else — for the built-in default only — its config.json's shape built in."""
    from migrator.adapters import hf

    kv = _kv_dtype(ctx)
    local = host_path(entry, ctx.project)
    if os.path.isdir(local):
        try:
            found = speed.profile(fit.read_local(Path(local)), kv)
        except (MigrateError, OSError, ValueError, KeyError, TypeError) as exc:
            return None, "", f"local directory {local} unreadable: {getattr(exc, 'message', exc)}"
        found.source = f"local directory {local}"
        return found, "local_dir", found.source
    if is_path_like(entry):
        return None, "", f"no such local directory: {local}"
    repo, revision = split_revision(entry)
    revision = revision or "main"
    try:
        cached = hf.local_snapshot(repo, revision, _hub_cache(ctx))
        if cached is not None:  # a snapshot without weights (config only) is passed over for the Hub
            found = speed.profile(fit.read_local(Path(cached)), kv)
            found.source = f"local HF cache ({cached})"
            return found, "hf_cache", found.source
    except (MigrateError, OSError, ValueError, KeyError, TypeError):
        pass
    found, why = _hub_alternative(ctx, repo, revision)
    if found is not None:
        return found, "hub", why
    if repo == speed.MOE_ALTERNATIVE and revision == "main":
        source = f"shape of its config.json built in (bf16, not in the local cache; {why})"
        return speed.from_shape(repo, speed.QWEN3_30B_A3B, source=source), "built_in", source
    return None, "", why


def _alternatives(ctx: Context, model: fit.ModelInfo,
                  shape: speed.Shape) -> list[tuple[str, speed.Profile | None, str, str]]:
    """model.alternatives looked up once a run: (entry, profile or None, found_in, source) each. The
    default (a MoE) is named for a dense model only, as it always was; a list the operator set is judged
    whatever the model is. An entry naming the model itself is skipped."""
    entries = list(ctx.settings.model.alternatives)
    if entries == list(DEFAULT_ALTERNATIVES) and shape.experts:
        return []
    memo = ctx.memo.setdefault(ALTERNATIVES, {})
    out = []
    for entry in entries:
        if _is_the_model(ctx, model, entry):
            continue
        if entry not in memo:
            memo[entry] = _look_up(ctx, entry)
        out.append((entry, *memo[entry]))
    return out


def _speed(ctx: Context, model: fit.ModelInfo, figures: dict) -> dict:
    """The prediction for the model and GPU in force, judged on the plan's gates; {"skipped": why} if none."""
    g, why = _speed_gpu(ctx)
    if g is None:
        return {"skipped": why}
    b = ctx.settings.bench
    context = b.predict_prompt_tokens + b.predict_output_tokens
    kv_users = int(figures.get("kv_tokens", 0) // context) if figures.get("kv_tokens") else None
    realtime = [gate.threshold for gate in ctx.settings.gates if gate.metric == "realtime_users"]
    targets = speed.Targets(b.predict_prompt_tokens, b.predict_output_tokens, b.slo_tokens_per_s, b.slo_ttft_ms,
                            b.slo_e2e_s, tuple(sorted({1, 5, 10, *(int(t) + 1 for t in realtime)})),
                            kv_users or None)
    try:
        shape_known = speed.Shape.of(model.config)
    except (KeyError, TypeError, ValueError):
        return {"skipped": "config.json lacks the fields the prediction needs"}
    looked_up = _alternatives(ctx, model, shape_known)
    read = [item for item in looked_up if item[1] is not None]
    predicted = speed.assess(model, g, targets, ctx.settings.gates, _kv_dtype(ctx), [p for _, p, _, _ in read])
    for alternative, (entry, _, found_in, _) in zip(predicted["alternatives"][-len(read):] if read else [], read):
        alternative.update(entry=entry, found_in=found_in)
    unread = [{"entry": entry, "source": source} for entry, p, _, source in looked_up if p is None]
    if unread:
        predicted["alternatives_not_checked"] = unread
    if predicted["verdict"]:  # the words say what the figures rest on, and what could not be checked
        predicted["verdict"] += [f"{entry} from the {source}" for entry, _, found_in, source in read
                                 if found_in == "built_in"]
        if unread:  # "nothing checked here passes it" must not hide them
            predicted["verdict"].append("not checked (no metadata read): " + "; ".join(
                f"{u['entry']} — {u['source']}" for u in unread))
    return predicted


def _hf_token(ctx: Context) -> str | None:
    """HF_TOKEN from the environment or the project's env file; never printed or recorded."""
    from migrator.adapters import hf as download

    env = read_project_env(ctx)
    return download.hf_token({"HF_TOKEN": env.get("HF_TOKEN") or ""} if env else {})


def _model_info(ctx: Context) -> fit.ModelInfo:
    """Read once per run (the Hub is slow and the fit and disk steps both need it); errors too."""
    if "model_info" not in ctx.memo:
        local = vllm_launch.model_arg(ctx.settings, ctx.project)
        try:
            if Path(local).is_dir():
                ctx.memo["model_info"] = fit.read_local(Path(local))
            else:
                from migrator.adapters import hf

                ctx.memo["model_info"] = hf.read_hub(ctx.settings.model.id, ctx.settings.model.revision,
                                                     _hf_token(ctx))
        except EnvironmentMissing as exc:
            ctx.memo["model_info"] = exc
    found = ctx.memo["model_info"]
    if isinstance(found, EnvironmentMissing):
        raise found
    return found


def _kv_dtype(ctx: Context) -> str:
    return "fp8" if "fp8" in " ".join(ctx.settings.vllm.extra_args) else "auto"


def _fit(ctx: Context, unload: bool | None = None) -> tuple[fit.ModelInfo, fit.Budget, dict, fit.Verdict]:
    """The verdict for the settings in force, and the settings that would make it "fits" ({} if none)."""
    model, budget = _model_info(ctx), _budget(ctx)
    v = ctx.settings.vllm
    may_unload = bool(ctx.options.get("unload_ollama")) if unload is None else unload
    verdict = fit.assess(model, budget, v.gpu_memory_utilization, v.max_model_len, _kv_dtype(ctx), may_unload)
    changes: dict = {}
    if verdict.verdict == "fits with changes":
        changes, after = fit.advised_settings(model, budget, v.gpu_memory_utilization, v.max_model_len,
                                              _kv_dtype(ctx), may_unload)
        changes = changes if after.verdict == "fits" else {}
    return model, budget, changes, verdict


def _as_sets(changes: dict) -> str:
    return " ".join(f"--set {key}={value}" for key, value in changes.items())


def _speed_summary(predicted: dict) -> str:
    if "skipped" in predicted:
        return f"; speed not predicted ({predicted['skipped']})"
    ttft = predicted["ttft_floor_ms"]
    line = (f"; predicted on {predicted['gpu']}: ≤ {predicted['decode_tokens_per_s_per_user']:g} tok/s per user "
            f"({predicted['weight_gb_read_per_token']:g} GB read per token), TTFT ≥ "
            f"{'?' if ttft is None else f'{ttft:g}'} ms for {predicted['prompt_tokens']} prompt tokens, "
            f"{predicted['realtime_users']} real-time / {predicted['wait_users']} 30-second users (ceilings)")
    return line + "".join(f". {text}" for text in predicted["verdict"])


class MemoryFit(Step):
    """The verdict before any download. "Fits with changes" stops here: vLLM started with the unsafe
    value would fail (or starve Ollama) later; the failure names the exact values to re-run with —
    or, with --apply-fit-advice, the next step adopts them."""

    id = "phase1.fit"
    title = "model fits in memory (verdict before download)"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        model, budget, changes, v = _fit(ctx)
        f = v.figures
        summary = (f"{v.verdict}: {model.name} {f['weight_gib']} GiB weights, {f['budget_gib']} GiB for vLLM "
                   f"({budget.source}), KV room for {f['kv_tokens']:,} tokens = "
                   f"{f['max_concurrency_at_max_len']} × {f['max_model_len']}-token sequences")
        predicted = _speed(ctx, model, f)
        measurements = {**f, "verdict": v.verdict, "model": model.name, "model_source": model.source,
                        "speed": predicted}
        summary += _speed_summary(predicted)
        if v.verdict == "does not fit":
            return Outcome.failed(summary + ". " + "; ".join(v.reasons), "; ".join(v.advice), **measurements)
        if v.verdict == "fits":
            if predicted.get("passes") is False:  # a prediction warns; only a measurement blocks (phase4)
                return Outcome.warn(summary, **measurements)
            return Outcome.passed(summary, **measurements)
        measurements["advised"] = changes
        if changes and ctx.options.get("apply_fit_advice"):
            return Outcome.warn(summary + ". " + "; ".join(v.reasons)
                                + f"; --apply-fit-advice: {', '.join(f'{k}={x}' for k, x in changes.items())} "
                                "adopted by the next step", **measurements)
        if not changes:
            return Outcome.failed(summary + ". " + "; ".join(v.reasons), "; ".join(v.advice), **measurements)
        ways = [f"re-run with {_as_sets(changes)} (and put the same in migrate.yaml: phase3 renders vLLM's "
                "service from it)"]
        if not ctx.options.get("unload_ollama") and budget.held_by_ollama \
                and _fit(ctx, unload=True)[3].verdict == "fits":
            ways.append("or with --unload-ollama (rollback reloads it)")
        ways.append("or with --apply-fit-advice to use the advised values for this migration (recorded)")
        return Outcome.failed(summary + ". " + "; ".join(v.reasons) + ": phase1 stops here rather than start "
                              "vLLM with a value that does not fit", "; ".join(ways), **measurements)


class AdoptFitAdvice(Step):
    """--apply-fit-advice: the fit's advised values used instead of migrate.yaml's, and recorded, so that
    phase1's vLLM, phase3's compose service and staging all run with them (migrate.yaml is not edited)."""

    id = "phase1.fit-advice"
    title = "the fit's advised settings adopted (only with --apply-fit-advice)"

    def _changes(self, ctx: Context) -> dict:
        return _fit(ctx)[2] if ctx.options.get("apply_fit_advice") else {}

    def check(self, ctx: Context) -> Outcome:
        adopted = ctx.resources.get(ADOPTED_SETTINGS) or {}
        changes = self._changes(ctx)
        if changes:
            return Outcome.failed("to adopt: " + ", ".join(f"{k}={x}" for k, x in changes.items()))
        if adopted:
            return Outcome.passed("in use: " + ", ".join(f"{k}={e['value']} (migrate.yaml: {e['configured']})"
                                                         for k, e in adopted.items()))
        if not ctx.options.get("apply_fit_advice"):
            return Outcome.passed("not requested (--apply-fit-advice): migrate.yaml's values")
        return Outcome.passed("nothing to adopt: the configured values fit")

    def plan(self, ctx: Context) -> list[str]:
        changes, lines = self._changes(ctx), []
        for key, value in changes.items():
            section, name = key.split(".", 1)
            lines.append(f"use {key}={value} instead of {getattr(getattr(ctx.settings, section), name)} for this "
                         "migration (recorded in the ledger; migrate.yaml unchanged; rollback forgets it)")
            if ctx.dry_run:  # in memory only: the later steps' plans (vLLM's command) show what the run would use
                setattr(getattr(ctx.settings, section), name, value)
        return lines

    def apply(self, ctx: Context) -> Outcome:
        changes = self._changes(ctx)
        adopt_settings(ctx, changes, self.id)
        return Outcome.passed("adopted " + ", ".join(f"{k}={x}" for k, x in changes.items()), adopted=changes)

    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.FILES, "adopted settings", forget_adopted_settings)]


def forget_adopted_settings(ctx: Context) -> tuple[bool, str] | None:
    """Rollback: the next migration judges migrate.yaml's values afresh."""
    adopted = ctx.resources.pop(ADOPTED_SETTINGS, None)
    if not adopted:
        return None
    ctx.ledger.save()
    return True, "forgot " + ", ".join(f"{k}={e['value']}" for k, e in adopted.items()) + " (migrate.yaml's values hold again)"


class DiskSpace(Step):
    id = "phase1.disk"
    title = "disk space for the model"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        if vllm_launch.is_local_model(ctx.settings, ctx.project):
            return Outcome.passed("model is already on disk")
        where, free = gpu.disk_free(ctx.settings.vllm.hf_cache)
        try:
            need = int(_model_info(ctx).weight_bytes * 1.1)
        except EnvironmentMissing as exc:  # the fit step reports metadata problems; here only the size matters
            return Outcome.passed(f"{free / 2**30:.0f} GiB free at {where}; model size unknown ({exc})")
        if free < need:
            return Outcome.failed(f"{free / 2**30:.1f} GiB free at {where}, the model needs {need / 2**30:.1f} GiB",
                                  "free disk space or point vllm.hf_cache elsewhere", free_gib=round(free / 2**30, 1))
        return Outcome.passed(f"{free / 2**30:.0f} GiB free at {where} (needs {need / 2**30:.1f} GiB)",
                              free_gib=round(free / 2**30, 1))


def _hub_cache(ctx: Context) -> str:
    import os

    return os.path.join(os.path.expanduser(ctx.settings.vllm.hf_cache), "hub")


class DownloadModel(Step):
    id = "phase1.download"
    title = "model downloaded and verified"

    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.PROBE, "downloaded model", downloaded_model_note)]

    def check(self, ctx: Context) -> Outcome:
        from migrator.adapters import hf as download

        if vllm_launch.is_local_model(ctx.settings, ctx.project):
            return Outcome.passed(f"local model at {vllm_launch.model_arg(ctx.settings, ctx.project)}")
        recorded = ctx.resources.get("model") or {}
        if recorded.get("repo") == ctx.settings.model.id and recorded.get("path") and recorded.get("verified"):
            if Path(recorded["path"]).is_dir():
                return Outcome.passed(f"{recorded['repo']}@{recorded['commit'][:12]} at {recorded['path']}")
        import os

        if os.environ.get("HF_HUB_OFFLINE") == "1":
            path = download.local_snapshot(ctx.settings.model.id, ctx.settings.model.revision, _hub_cache(ctx))
            if path is not None:
                return Outcome.passed(f"offline: found {ctx.settings.model.id} in the cache at {path}")
            return Outcome.failed(f"HF_HUB_OFFLINE=1 and {ctx.settings.model.id} is not in {_hub_cache(ctx)}",
                                  "download it on a connected machine into that cache, or unset HF_HUB_OFFLINE")
        return Outcome.failed(f"{ctx.settings.model.id} not downloaded yet")

    def plan(self, ctx: Context) -> list[str]:
        return [f"snapshot_download {ctx.settings.model.id}@{ctx.settings.model.revision} (pinned to its commit) "
                f"into {_hub_cache(ctx)}; verify sizes and sha256"]

    def apply(self, ctx: Context) -> Outcome:
        from migrator.adapters import hf as download

        token = _hf_token(ctx)
        snapshot = download.resolve(ctx.settings.model.id, ctx.settings.model.revision, token)
        cache = _hub_cache(ctx)
        record = {"repo": snapshot.repo_id, "commit": snapshot.commit, "cache_dir": cache,
                  "bytes": snapshot.total_bytes, "verified": False}
        ctx.resources["model"] = record
        ctx.ledger.save()
        Path(cache).mkdir(parents=True, exist_ok=True)
        where, free = gpu.disk_free(cache)
        need = download.missing_bytes(snapshot, cache)
        if free < need:
            return Outcome.failed(f"{need / 2**30:.1f} GiB still to download, {free / 2**30:.1f} GiB free at {where}",
                                  "free disk space or set vllm.hf_cache elsewhere")
        ctx.out.info(f"downloading {snapshot.repo_id}@{snapshot.commit[:12]}: {len(snapshot.files)} files, "
                     f"{snapshot.total_bytes / 2**30:.2f} GiB ({need / 2**30:.2f} GiB still missing)")
        path = download.fetch(snapshot, cache, token, console=ctx.out.progress_console())
        problems = download.verify(snapshot, path)
        if problems:
            return Outcome.failed("downloaded files do not match the Hub: " + "; ".join(problems[:3]),
                                  f"delete {path} and re-run phase1")
        template = download.chat_template_source(path)
        if template is None and "--chat-template" not in ctx.settings.vllm.extra_args:
            return Outcome.failed(f"{snapshot.repo_id}@{snapshot.commit[:12]} has no chat template (no "
                                  "chat_template.jinja, chat_template.json or tokenizer_config.json chat_template): "
                                  "vLLM would refuse every chat request with HTTP 400",
                                  "use the model's -Instruct/chat variant, or add --chat-template FILE to "
                                  "vllm.extra_args")
        record.update({"path": str(path), "verified": True})
        ctx.ledger.save()
        return Outcome.passed(f"{snapshot.repo_id}@{snapshot.commit[:12]} verified at {path}"
                              + (f"; chat template from {template}" if template else ""),
                              commit=snapshot.commit, bytes=snapshot.total_bytes, chat_template=template or "")


def downloaded_model_note(ctx: Context) -> tuple[bool, str] | None:
    """Rollback keeps the download (65 GB is not fetched twice lightly) and says where it is."""
    model = ctx.resources.get("model") or {}
    if not model.get("path"):
        return None
    return True, (f"kept at {model['path']} ({model.get('bytes', 0) / 2**30:.1f} GiB); "
                  "delete it with `hf cache rm` when you no longer need it")


class UnloadOllama(Step):
    id = "phase1.unload-ollama"
    title = "Ollama's chat model unloaded (with consent)"

    def check(self, ctx: Context) -> Outcome:
        if not ctx.options.get("unload_ollama"):
            return Outcome.passed("not requested (--unload-ollama): Ollama keeps its models")
        loaded = _ollama_chat_model(ctx)  # loaded is listed, whatever size_vram says (0 on GB10)
        if loaded is None:
            return Outcome.passed(f"{ctx.settings.ollama.model} is not loaded")
        held = int(loaded.get("size") or 0)
        return Outcome.failed(f"{ctx.settings.ollama.model} holds {held / 2**30:.1f} GiB")

    def plan(self, ctx: Context) -> list[str]:
        return [f"POST {ctx.settings.ollama.url}/api/generate keep_alive=0 for {ctx.settings.ollama.model} "
                "(rollback reloads it)"]

    def apply(self, ctx: Context) -> Outcome | None:
        from migrator.adapters.http import OllamaServer

        name = ctx.settings.ollama.model
        unloaded = ctx.resources.setdefault("ollama_unloaded", [])
        if not any(item["model"] == name for item in unloaded):
            unloaded.append({"model": name, "keep_alive": "5m"})
        ctx.ledger.save()  # remembered before acting: rollback reloads it even after a crash here
        ctx.ledger.audit(self.id, "ollama-unload", "started", model=name, keep_alive="5m")  # and if state is lost
        probe = OllamaServer(ctx.settings.ollama.url).set_keep_alive(name, 0)
        if not probe.ok:
            return Outcome.failed(f"Ollama did not unload {name}: {probe.describe()}", "unload it by hand: ollama stop")
        return Outcome.passed(f"unloaded {name}; rollback reloads it")

    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.RELOAD, "reload Ollama models", reload_ollama),
                Undo(UndoStage.PROBE, "Ollama answers", probe_ollama)]


def reload_ollama(ctx: Context) -> tuple[bool, str]:
    """Load again what phase1 unloaded (recorded before it unloaded; rebuilt from the audit log if state is lost)."""
    from migrator.adapters.http import OllamaServer

    unloaded = ctx.resources.get("ollama_unloaded") or []
    if not unloaded:
        return True, "no Ollama model was unloaded by graphrag-migrate"
    server = OllamaServer(ctx.settings.ollama.url)
    back, failed = [], []
    for item in unloaded:
        probe = server.set_keep_alive(item["model"], item.get("keep_alive", "5m"))
        (back if probe.ok else failed).append(item)
    ctx.resources["ollama_unloaded"] = failed
    if failed:
        return False, f"could not reload {', '.join(i['model'] for i in failed)} from {server.base_url}"
    return True, f"reloaded {', '.join(i['model'] for i in back)}"


def probe_ollama(ctx: Context) -> tuple[bool, str]:
    from migrator.adapters.http import OllamaServer

    probe = OllamaServer(ctx.settings.ollama.url).version()
    if not probe.ok:
        return False, f"Ollama does not answer: {probe.describe()} — start Ollama before the backend needs it"
    version = probe.body.get("version", "?") if isinstance(probe.body, dict) else "?"
    return True, f"Ollama {version} answers at {ctx.settings.ollama.url}"


DEFAULT_MAX_NUM_SEQS = 16  # without a real-time users gate: still far below vLLM's own default (256+)


def capacity_target(settings: Settings) -> int:
    """The concurrent users the plan's real-time gate asks for (`> 10` → 11): on a GB10 vLLM need not
    reserve for more sequences than that (vLLM's DGX Spark advice: keep --max-num-seqs low)."""
    import math

    gate = next((g for g in settings.gates if g.metric == "realtime_users" and g.op in (">", ">=")), None)
    if gate is None:
        return DEFAULT_MAX_NUM_SEQS
    return max(1, math.floor(gate.threshold) + 1 if gate.op == ">" else math.ceil(gate.threshold))


def _limits_basis(ctx: Context) -> str:
    v = ctx.settings.vllm
    return repr((ctx.settings.model.id, ctx.settings.model.revision, v.gpu_memory_utilization, v.max_model_len,
                 v.tensor_parallel_size, v.max_num_seqs, list(v.extra_args), capacity_target(ctx.settings)))


def _start_limits(ctx: Context, budget: fit.Budget) -> dict:
    """On unified memory read from this host (GB10), what vLLM is started with: its KV cache is the fit
    verdict's budget (--kv-cache-memory-bytes: start-up profiling of a fraction of the whole pool is what
    wedges the host, vllm#46307) and --max-num-seqs the capacity target. Kept while the settings they came
    from are unchanged, so a re-run recognises the vLLM it started. {} elsewhere."""
    if ctx.settings.vllm.device != "gpu" or not budget.unified or budget.assumed:
        return {}
    recorded = ctx.resources.get(vllm_launch.START_LIMITS) or {}
    if recorded.get("basis") == _limits_basis(ctx):
        return recorded
    try:
        verdict = _fit(ctx)[3]
    except EnvironmentMissing:  # a dry-run's plan without the model's metadata: the fit step says why
        return {}
    return {"kv_cache_memory_bytes": int(verdict.figures["kv_budget_bytes"]),
            "max_num_seqs": ctx.settings.vllm.max_num_seqs or capacity_target(ctx.settings),
            "basis": _limits_basis(ctx)}


class MemoryFloor:
    """The start-up watchdog on unified memory: MemAvailable sampled while vLLM starts; below the floor
    vLLM is stopped before the host runs out (a GB10 out of memory can need a power-cycle)."""

    def __init__(self, floor_bytes: int):
        self.floor = floor_bytes
        self.lowest: int | None = None
        self.crossed: int | None = None

    def breached(self) -> bool:
        available = gpu.meminfo().get("MemAvailable")
        if available is None:
            return False
        self.lowest = available if self.lowest is None else min(self.lowest, available)
        if available < self.floor:
            self.crossed = available
        return self.crossed is not None

    def figures(self) -> dict:
        return {"floor_gib": round(self.floor / 2**30, 2),
                "lowest_available_gib": round(self.lowest / 2**30, 2) if self.lowest is not None else None}

    def cause(self) -> str:
        return (f"host memory floor reached during start-up: MemAvailable {self.crossed / 2**30:.1f} GiB < "
                f"{self.floor / 2**30:.1f} GiB (vllm.startup_memory_floor); vLLM stopped")


def _memory_floor(ctx: Context, budget: fit.Budget) -> MemoryFloor | None:
    floor = ctx.settings.vllm.startup_memory_floor
    return MemoryFloor(parse_size(floor)) if floor and budget.unified else None


class StartVllm(Step):
    id = "phase1.start-vllm"
    title = "vLLM started and ready"

    def check(self, ctx: Context) -> Outcome:
        if _ours_answers(ctx):
            return Outcome.passed(f"vLLM answers with {ctx.settings.model.served_name}")
        return Outcome.failed("vLLM is not running")

    def plan(self, ctx: Context) -> list[str]:
        try:
            ctx.memo[vllm_launch.START_LIMITS] = _start_limits(ctx, _budget(ctx))  # shown, not recorded
        except EnvironmentMissing:  # no GPU to read here: the GPU step says so
            ctx.memo.pop(vllm_launch.START_LIMITS, None)
        return ctx.vllm_runtime.start_plan(ctx)

    def apply(self, ctx: Context) -> Outcome:
        v = ctx.settings.vllm
        budget = _budget(ctx)
        limits = _start_limits(ctx, budget)
        ctx.memo.pop(vllm_launch.START_LIMITS, None)
        if limits:
            ctx.resources[vllm_launch.START_LIMITS] = limits
        else:
            ctx.resources.pop(vllm_launch.START_LIMITS, None)
        floor = _memory_floor(ctx, budget)
        record: dict = {"runtime": v.runtime, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        started = ctx.vllm_runtime.start(ctx, record)  # recorded before it starts: a crash still knows it
        logs = started.logs

        def alive() -> str | None:
            died = started.alive()
            if died or floor is None or not floor.breached():
                return died
            return floor.cause()

        def show_log(elapsed: float) -> None:
            lines = [ln for ln in logs().splitlines() if ln.strip()]
            if lines:
                ctx.out.info(f"  … {elapsed:.0f} s, vLLM: {lines[-1].strip()[-160:]}")

        ready = vllm_launch.wait_ready(
            ctx.settings, v.startup_timeout_s, alive,
            on_tier=lambda tier, t: ctx.out.step("passed", f"  {tier}", f"{t:.1f} s"),
            on_wait=show_log,
        )
        record["readiness"] = ready.to_dict()
        if floor is not None:
            record["startup_memory"] = floor.figures()
        ctx.ledger.save()
        if floor is not None and floor.crossed is not None:
            stop_vllm(ctx)
            return Outcome.failed(
                f"vLLM did not start: {floor.cause()}",
                "free host memory (unload Ollama's model with --unload-ollama, stop other services, drop the page "
                "cache: sync; echo 3 > /proc/sys/vm/drop_caches) or lower vllm.max_model_len / "
                "vllm.gpu_memory_utilization, then re-run phase1", **floor.figures())
        if not ready.ok:
            cause = vllm_launch.classify_startup_failure(logs())
            if cause:
                return Outcome.failed(f"vLLM did not start: {cause[0]}", cause[1])
            return Outcome.failed(f"vLLM not ready at '{ready.failed_tier}': {ready.error}",
                                  "read the vLLM log (status shows where) and re-run phase1")
        actual = vllm_launch.actual_figures(ctx.settings, logs())
        predicted = ctx.ledger.step("phase1", "phase1.fit").get("measurements", {}).get("kv_tokens")
        record["actual"] = actual
        record["fit"] = {"predicted_kv_tokens": predicted, "actual_kv_tokens": actual.get("kv_cache_size_tokens")}
        ctx.ledger.save()
        vllm_launch.prove_readiness(ctx, self.id)  # phase3's compose service may now restart by itself
        kv = (f"; KV cache {actual['kv_cache_size_tokens']:,} tokens (predicted {predicted:,})"
              if actual.get("kv_cache_size_tokens") and predicted is not None else "")
        return Outcome.passed(
            f"ready in {max(ready.tiers.values()):.1f} s, TTFT {ready.ttft_ms} ms{kv}",
            ready_s=max(ready.tiers.values()), ttft_ms=ready.ttft_ms,
            kv_tokens_actual=actual.get("kv_cache_size_tokens"), kv_tokens_predicted=predicted,
        )
    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.STOP, STOP_VLLM, stop_vllm)]


STOP_VLLM = "stop vLLM"


def stop_vllm(ctx: Context) -> tuple[bool, str]:
    """Stop the vLLM phase1 started (phase3's compose service is the same container), from the recorded
    resource — or, with the state lost, the one the settings name (its container, or vLLM on its port)."""
    record = ctx.resources.get("vllm") or {}
    runtimes = [ctx.vllm_runtime]
    recorded = record.get("runtime")
    if recorded and recorded != ctx.vllm_runtime.name:  # started under another vllm.runtime than today's
        from migrator.adapters.runtime import vllm_runtime

        runtimes.insert(0, vllm_runtime(recorded))
    results: list[str] = []
    for runtime in runtimes:
        try:
            results += runtime.stop(ctx, record, ctx.state_known)
        except DockerUnavailable as exc:  # what the other runtime stopped is still said
            raise DockerUnavailable("; ".join([*results, exc.message]), exc.fix) from None
    ctx.resources.pop("vllm", None)
    ctx.resources.pop(vllm_launch.START_LIMITS, None)
    return True, "; ".join(results) or "no vLLM was started by graphrag-migrate"


def _predicted_per_user(ctx: Context, users: int, context: int) -> float | None:
    """The per-user ceiling at the benchmark's load, from the files on disk now (after the download), so
    the prediction is checked on every real run; None when no GPU figure or no local files."""
    local = vllm_launch.model_arg(ctx.settings, ctx.project)
    path = Path(local) if Path(local).is_dir() else Path((ctx.resources.get("model") or {}).get("path") or "/nonexistent")
    g, _ = _speed_gpu(ctx)
    if g is None or not path.is_dir():
        return None
    try:
        return speed.decode(speed.profile(fit.read_local(path), _kv_dtype(ctx)), g, users, context)["tokens_per_s_per_user"]
    except (EnvironmentMissing, OSError, ValueError, KeyError):
        return None


class Benchmark(Step):
    """The plan's phase-1 benchmark: a short load test of vLLM alone, recorded for comparison later."""

    id = "phase1.benchmark"
    title = "benchmark vLLM alone (short load test)"
    observes = True

    def check(self, ctx: Context) -> Outcome:
        if ctx.options.get("no_bench"):
            return Outcome.passed("skipped (--no-bench)")
        return self.recorded_pass(ctx) or Outcome.failed("not run yet")

    def plan(self, ctx: Context) -> list[str]:
        return ["graphrag-migrate bench --requests 16 --concurrency 4 --output-tokens 32 (vLLM)"]

    def apply(self, ctx: Context) -> Outcome:
        import asyncio

        from migrator.bench import run as bench
        from migrator.bench.loadgen import LoadSpec, run_load

        target = bench.default_target(ctx.settings, "vllm")
        spec = LoadSpec(requests=16, concurrency=4, input_tokens=64, output_tokens=32, timeout_s=300)
        bench.check_safe(target, spec, ctx.settings)
        s = asyncio.run(run_load(target, spec))
        if not s["completed"]:
            return Outcome.failed(f"every benchmark request failed: {s['errors']}", "check vLLM's log")
        ceiling = _predicted_per_user(ctx, spec.concurrency, spec.input_tokens + spec.output_tokens // 2)
        return Outcome.passed(
            f"4 users: TTFT p50 {s['ttft_ms']['median']:.0f} ms, p99 {s['ttft_ms']['p99']:.0f} ms; "
            f"{s['per_user_output_tokens_per_s'] or 0:.1f} tok/s per user"
            + (f" (predicted ceiling {ceiling:g} from the downloaded files)" if ceiling else "")
            + f"; {s['output_tokens_per_s']} tok/s in all", predicted_per_user_output_tokens_per_s=ceiling,
            ttft_p50_ms=s["ttft_ms"]["median"], ttft_p99_ms=s["ttft_ms"]["p99"],
            per_user_output_tokens_per_s=s["metrics"]["per_user_output_tokens_per_s"],
            output_tokens_per_s=s["output_tokens_per_s"], errors=sum(s["errors"].values()))

    def verify(self, ctx: Context) -> Outcome:
        return Outcome.passed()


def build(settings: Settings, options: dict) -> Phase:
    return Phase("phase1", "prepare", [GpuPresent(), SystemMemory(), RuntimeReachable(), PortFree(), OllamaAnswers(),
                                       OllamaContext(), MemoryFit(),
                                       AdoptFitAdvice(), DiskSpace(), DownloadModel(), UnloadOllama(), StartVllm(), Benchmark()])

