"""`graphrag-migrate init`: write migrate.yaml from what the repo holds (thin: parse → call → render)."""

from __future__ import annotations

from typing import Annotated

import typer

from migrator.cli._common import command, state_of


@command
def init(ctx: typer.Context,
         force: Annotated[bool, typer.Option("--force", help="Replace an existing migrate.yaml (backed up first; rollback restores it).")] = False,
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the migrate.yaml it would write; write nothing.")] = False):
    """Write migrate.yaml from what this repo holds: compose files and services, the env file, the
    backend's settings, LLM call sites, Ollama, the chat endpoint — each value with its file:line.

    Reads the repo (Python parsed with ast, never imported or run; `docker compose config` when the
    docker CLI has compose). Lists what it could not decide. Several candidates for a key stop it (exit 1)
    naming the --set that settles it; --yes takes the best guess and says so.
    Touches: PROJECT/migrate.yaml (created; an existing one only with --force, backed up first).
    """
    from migrator.app import api

    state = state_of(ctx)
    result = api.init(state.project, state.config, state.overrides, force=force, dry_run=dry_run, yes=state.yes)
    _report(state.out, result)
    return result


def _report(out, result) -> None:
    for choice in result.choices:
        options = "; ".join(f"{value} ({', '.join(evidence)})" for value, evidence in choice.candidates)
        out.error(f"{choice.key}: {choice.what}: {options} — settle it with --set {choice.key}=VALUE, "
                  f"or --yes to take the best guess ({choice.best}: {choice.why})")
    for choice in result.guessed:
        out.warn(f"guessed {choice.key}={choice.best} ({choice.what}; {choice.why}) — --set {choice.key}=VALUE chooses")
    for item in result.undecided:
        out.warn(f"{item.key} undecided: {item.why} — {item.fix}")
    n = len(result.values)
    if result.choices:
        out.info(f"{result.config} not written: {len(result.choices)} choice(s) to make")
    elif result.dry_run:
        out.info(f"would write {result.config}: {n} values, {len(result.undecided)} undecided (nothing written)")
    elif result.written:
        backup = f"; the old one is in {result.backup}" if result.backup else ""
        out.info(f"wrote {result.config}: {n} values, {len(result.undecided)} undecided{backup}")
    else:
        out.info(f"{result.config} already says exactly this: left as it is")
    out.data(result.to_dict(), lambda console: result.text and out.text(result.text))
