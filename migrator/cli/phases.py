"""phase1 … phase4: each one command, the same three modes (check, dry-run, apply)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from migrator.cli._common import CheckOpt, ConfirmOpt, DryRunOpt, command, state_of


def run_phase_command(ctx: typer.Context, name: str, check: bool, dry_run: bool,
                      overrides: dict | None = None, options: dict | None = None):
    """Parse → call → render; the report carries the status `command` turns into the exit code."""
    from migrator.app import api
    from migrator.cli import render

    if check and dry_run:
        raise typer.BadParameter("--check and --dry-run are exclusive")
    app = state_of(ctx)
    settings = app.settings({k: v for k, v in (overrides or {}).items() if v is not None})
    if check:
        report = api.check_phase(name, app.project, settings, app.out, options)
    elif dry_run:
        report = api.dry_run_phase(name, app.project, settings, app.out, options)
    else:
        report = api.run_phase(name, app.project, settings, app.out, app.yes, options, app.argv)
    render.phase_report(app.out, report)
    return report


ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model: ORG/NAME on the Hub or a local directory (model.id).")]
PortOpt = Annotated[Optional[int], typer.Option("--port", help="vLLM host port (vllm.port).")]
RuntimeOpt = Annotated[Optional[str], typer.Option("--runtime", help="docker or process (vllm.runtime).")]


@command
def phase1(ctx: typer.Context, check: CheckOpt = False, dry_run: DryRunOpt = False,
           model: ModelOpt = None, port: PortOpt = None, runtime: RuntimeOpt = None,
           assume_gpu_memory: Annotated[Optional[str], typer.Option("--assume-gpu-memory", metavar="SIZE", help="Plan for a GPU of this size (e.g. 26GiB) instead of reading this host's.")] = None,
           assume_unified: Annotated[bool, typer.Option("--assume-unified", help="With --assume-gpu-memory: the size is a unified memory pool (GB10).")] = False,
           assume_gpu: Annotated[Optional[str], typer.Option("--assume-gpu", metavar="NAME", help="Predict speed (and plan memory, unless --assume-gpu-memory) for this GPU: GB10, H100 SXM, H100 PCIe, H200, A100 80GB, A100 40GB, L40S, L4, A10, RTX 4090, RTX 5090, RTX 6000 Ada.")] = None,
           assume_bandwidth: Annotated[Optional[str], typer.Option("--assume-bandwidth", metavar="GB/s", help="Predict speed for a part of this memory bandwidth (GB/s), for one not in the GPU table.")] = None,
           unload_ollama: Annotated[bool, typer.Option("--unload-ollama", help="Unload Ollama's chat model to free its memory; rollback reloads it.")] = False,
           no_bench: Annotated[bool, typer.Option("--no-bench", help="Skip the short benchmark of vLLM alone at the end.")] = False,
           apply_fit_advice: Annotated[bool, typer.Option("--apply-fit-advice", help="When the fit verdict is 'fits with changes': use its advised gpu_memory_utilization / max_model_len for this migration (recorded) instead of stopping.")] = False):
    """Prepare: preflight (GPU, runtime, port, Ollama), memory-fit verdict before any download, disk,
    then start vLLM alone next to Ollama and prove it answers.

    Touches: the vLLM container (vllm.container_name) or process; with --unload-ollama, Ollama's
    loaded chat model. No user file.
    """
    overrides = {"model.id": model, "vllm.port": port, "vllm.runtime": runtime,
                 "host.assume_gpu_memory": assume_gpu_memory, "host.assume_unified": assume_unified or None,
                 "host.assume_gpu": assume_gpu, "host.assume_bandwidth": assume_bandwidth}
    return run_phase_command(ctx, "phase1", check, dry_run, overrides,
                      {"unload_ollama": unload_ollama, "no_bench": no_bench, "apply_fit_advice": apply_fit_advice})


@command
def phase2(ctx: typer.Context, check: CheckOpt = False, dry_run: DryRunOpt = False,
           scaffold: Annotated[bool, typer.Option("--scaffold", help="Wire what is missing in your code's own style (all or nothing; shown as diffs, backed up).")] = False):
    """Backend wiring: check (with ast, never importing your code) that the backend reads LLM_BACKEND,
    VLLM_BASE_URL and VLLM_MODEL and chooses every Ollama model it builds by LLM_BACKEND; run its unit
    tests; stream from vLLM through the client it uses (ChatOpenAI).

    Touches: nothing without --scaffold. With --scaffold: the settings file (the three settings, declared
    as its others are), each ChatOllama/OllamaLLM call site (routed through select_llm), a new
    llm_switch.py beside them, the dependency file, and a test of the switch in the backend's tests/ —
    planned in full first, each backed up.
    """
    return run_phase_command(ctx, "phase2", check, dry_run, options={"scaffold": scaffold})


@command
def phase3(ctx: typer.Context, check: CheckOpt = False, dry_run: DryRunOpt = False,
           prompt_file: Annotated[Optional[str], typer.Option("--prompt-file", metavar="FILE", help="Your longest real prompts (text, or JSONL of {prompt} / {messages}): checked against max_model_len.")] = None,
           inline: Annotated[bool, typer.Option("--inline", help="Put the vLLM service inside your compose file (text edit keeping comments and order; diff shown; backed up) instead of a file of its own.")] = False,
           confirm: ConfirmOpt = False):
    """Integrate: vLLM as a compose service in its own file, beside production (which stays on Ollama),
    then the integration checks against vLLM (streaming, Korean, errors, longest prompt).

    Touches: writes docker-compose.vllm.yml next to your compose file (yours stays byte-identical);
    the env file (COMPOSE_FILE, VLLM_BASE_URL, VLLM_MODEL — not LLM_BACKEND), backed up first; starts
    the vLLM compose service in place of phase1's container. With --confirm, asks before that.
    """
    return run_phase_command(ctx, "phase3", check, dry_run,
                      options={"prompt_file": prompt_file, "inline": inline, "confirm": confirm})


@command
def phase4(ctx: typer.Context, check: CheckOpt = False, dry_run: DryRunOpt = False, confirm: ConfirmOpt = False,
           accept_failed: Annotated[Optional[list[str]], typer.Option("--accept-failed", metavar="PHASE", help="Switch although this phase did not pass (phase2 only); a warning, written to the audit log.")] = None,
           accept_unproven: Annotated[bool, typer.Option("--accept-unproven", help="Switch without backend.chat_path: the backend is then judged by its health alone (the switch unproven); written to the audit log.")] = False):
    """Deploy: monitoring files, staging (a separate compose project: checks and load test), the plan's
    §7.1 gates — then, only if they pass, the production switch (LLM_BACKEND=vllm, backend recreated
    and proven on vLLM by a question through its chat endpoint that vLLM's counters must show),
    watched for deploy.watch_s. Anything failing after the switch rolls back automatically. Refused
    before anything is touched unless phases 1–3 completed and phase2 passed.

    Touches: writes monitoring/ (Prometheus, alert rules, Grafana); the staging project (removed when
    done); the env file's LLM_BACKEND (backed up first) and the backend service. With --confirm, asks
    once before the switch.
    """
    return run_phase_command(ctx, "phase4", check, dry_run, options={
        "confirm": confirm, "accept_failed": list(accept_failed or []), "accept_unproven": accept_unproven})
