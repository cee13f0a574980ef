"""Human renderings of the core's reports (stdout). `--json` bypasses all of this."""

from __future__ import annotations

from migrator.cli.output import Output
from migrator.cli.styles import style


def _table(title: str, *columns: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    return table


def phase_report(out: Output, report) -> None:
    """The steps' table and the diffs; at a terminal where every step was just printed as a progress
    line, one summary line (and the fixes still owed) stands in for the table."""
    def render(console):
        if out.steps_on_screen(s.title for s in report.steps):
            console.print(phase_summary(report), style="green" if report.ok else "red")
            for s in report.steps:
                if s.fix and s.status not in _DONE:
                    console.print(f"  {s.title}: {s.fix}")
        else:
            table = _table(f"{report.phase} — {report.mode}", "step", "status", "detail")
            for s in report.steps:
                detail = s.message
                if s.fix and s.status not in _DONE:
                    detail = f"{detail} → {s.fix}" if detail else s.fix
                if s.plan:
                    detail = "; ".join(s.plan) + (f" ({detail})" if detail else "")
                table.add_row(s.title, s.status, detail, style=style(s.status))
            console.print(table)
        for change in report.changes:
            console.file.write(change.diff())
        console.file.flush()

    out.data(report.to_dict(), render)


_DONE = ("ok", "passed", "satisfied")


def phase_summary(report) -> str:
    """`phase3 apply: ok — 7 steps: 5 passed, 2 satisfied` (counts in the order the statuses first appear)."""
    counts: dict[str, int] = {}
    for s in report.steps:
        counts[s.status] = counts.get(s.status, 0) + 1
    verdict = "ok" if report.ok else "FAILED"
    total = len(report.steps)
    return (f"{report.phase} {report.mode}: {verdict} — {total} step{'' if total == 1 else 's'}: "
            + ", ".join(f"{count} {status}" for status, count in counts.items()))


def status_report(out: Output, report) -> None:
    def render(console):
        console.print(f"project: {report.project}")
        if report.state_error:
            console.print(f"state: {report.state_error}", style="red")
        backend = report.llm_backend if report.llm_backend is not None else "(not set)"
        where = report.env_file if report.env_file_exists else (
            f"{report.env_file} (unreadable)" if report.env_file_error else f"{report.env_file} (missing)")
        console.print(f"LLM_BACKEND: {backend}   [{where}]")
        v = report.vllm
        line = f"vLLM: {v.get('url')} " + ("healthy" if v.get("healthy") else f"not answering ({v.get('health_error', '-')})")
        if "container" in v:
            line += f"; container {v['container']['name']}: {v['container']['status']}"
        if "process" in v:
            line += f"; process {v['process']['pid']}: {'running' if v['process']['running'] else 'gone'}"
        console.print(line)
        fit = v.get("fit") or {}
        if fit.get("actual_kv_tokens") is not None:
            console.print(f"KV cache: {fit['actual_kv_tokens']:,} tokens (predicted {fit.get('predicted_kv_tokens') or 0:,})")
        if report.ollama:
            o = report.ollama
            console.print(f"Ollama: {o['url']} " + (f"answers (version {o['version']})" if o["answers"] else f"not answering ({o['error']})"))
        if report.lock:
            lk = report.lock
            console.print(f"lock: {lk['id']} pid {lk['pid']} on {lk['host']} ({lk['command']})" + (" — stale" if lk["stale"] else ""))
        if report.phases:
            table = _table("phases", "phase", "step", "status", "when", "detail")
            for name, phase in report.phases.items():
                table.add_row(name, "", phase.get("status", "pending"), phase.get("finished_at", phase.get("started_at", "")), "",
                              style=style(phase.get("status", "pending")))
                for step_id, step in phase.get("steps", {}).items():
                    detail = step.get("message", "")
                    if step.get("measurements"):  # the speed prediction has its own line below
                        detail += " " + ", ".join(f"{k}={v}" for k, v in step["measurements"].items() if k != "speed")
                    table.add_row("", step_id, step.get("status", ""), step.get("at", ""), detail.strip(),
                                  style=style(step.get("status", "")))
            console.print(table)
        if report.loadtest:
            lt, m = report.loadtest, report.loadtest.get("metrics", {})
            console.print(f"load test ({lt.get('source', 'bench')}, {lt.get('at', '')}): TTFT p99 {m.get('ttft_p99_ms')} ms, "
                          f"{m.get('per_user_output_tokens_per_s')} tok/s per user, error rate {m.get('error_rate')}")
        for label, cap in report.capacity.items():
            m = cap.get("metrics", {})
            console.print(f"capacity {label} ({cap.get('at', '')}): {m.get('realtime_users')} real-time users, "
                          f"{m.get('wait_users')} within 30 s")
        if report.speed:
            sp = report.speed
            rows = "; ".join(f"{r['metric']} {r['measured']:g} (predicted {r['predicted']:g})" for r in sp["rows"])
            console.print(f"speed on {sp['gpu']} (phase1's ceilings): ≤ {sp['predicted']['decode_tokens_per_s_per_user']:g}"
                          f" tok/s per user, {sp['predicted']['realtime_users']} real-time users"
                          + (f"; measured: {rows}" if rows else "; not measured yet (bench, bench --sweep)"))
        for rel, what in report.drift.items():
            console.print(f"drift: {rel}: {what}", style="yellow")
        console.print("ok" if not report.problems else "problems: " + "; ".join(report.problems),
                      style="green" if not report.problems else "red")

    out.data(report.to_dict(), render)


def rollback_report(out: Output, report) -> None:
    def render(console):
        table = _table(f"rollback ({report.seconds:.1f} s)", "action", "result")
        for a in report.actions:
            table.add_row(a.name, ("✓ " if a.ok else "✗ ") + a.result, style=None if a.ok else "red")
        console.print(table)

    out.data(report.to_dict(), render)


def rehearsal_report(out: Output, result) -> None:
    def render(console):
        table = _table("rehearsal", "stage", "result", "detail")
        for row in result.rows:
            mark = "ok" if row["ok"] else ("not yet (expected)" if row["expected_failure"] else "FAILED")
            table.add_row(row["stage"], mark, row["detail"],
                          style="green" if row["ok"] else ("yellow" if row["expected_failure"] else "red"))
        console.print(table)
        console.print("rehearsal passed" if result.ok else "rehearsal FAILED",
                      style="green" if result.ok else "bold red")

    out.data(result.to_dict(), render)


def bench_outcome(out: Output, outcome) -> None:
    """`bench`'s result, whichever of its three kinds it is (migrator.bench.run.BenchOutcome)."""
    {"diff": bench_diff, "capacity": capacity_report, "run": bench_report}[outcome.kind](out, **outcome.parts)


def bench_report(out: Output, result) -> None:
    def render(console):
        t = result["target"]
        table = _table(f"{t['api']} {t['model']} at {t['url']} — {result['completed']}/{result['requests']} ok "
                       f"in {result['wall_s']} s", "metric", "mean", "median", "p90", "p95", "p99")
        thinking = result.get("thinking") or {}
        # A thinking model streams output long before its answer: time to the answer's first token beside TTFT.
        names = ("ttft_ms", "ttfa_ms", "itl_ms", "tpot_ms", "e2e_ms") if thinking.get("requests") else (
            "ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
        for name in names:
            row = result[name]
            table.add_row(name, *("-" if row[k] is None else f"{row[k]:.1f}" for k in ("mean", "median", "p90", "p95", "p99")))
        console.print(table)
        if thinking.get("requests"):
            console.print(f"thinking: {thinking['requests']} of {result['completed']} answers began with reasoning "
                          "(TTFT counts it, TTFA is the answer's first token)"
                          + (f"; {thinking['without_answer']} had no answer within max_tokens"
                             if thinking.get("without_answer") else ""), style="yellow")
        console.print(f"output {result['output_tokens_per_s']} tok/s, {result['requests_per_s']} req/s, "
                      f"per user {result['per_user_output_tokens_per_s'] or 0:.1f} tok/s, "
                      f"concurrency achieved {result.get('achieved_concurrency')}")
        if result["errors"]:
            console.print("errors: " + ", ".join(f"{k} {v}" for k, v in result["errors"].items()), style="red")
        q = result.get("questions")
        if q:
            e2e = q["e2e_ms"]
            console.print(f"questions (fan-out {q['fanout']} + reduce): {q['count']} answered, {q['failed']} failed; "
                          f"latency per question p50 {e2e['median'] or 0:.0f} ms, p99 {e2e['p99'] or 0:.0f} ms")
        server = result.get("server") or {}
        if "running_peak" in server:
            console.print(f"vLLM during the run: running peak {server['running_peak']:g} (mean {server['running_mean']:g}), "
                          f"waiting peak {server['waiting_peak']:g}, KV cache peak {server['kv_cache_usage_peak']:.0%}; "
                          f"server TTFT p50 {server.get('server_ttft_ms_p50')} ms, queueing p50 "
                          f"{server.get('server_queue_ms_p50')} ms")
        elif "models" in server:
            console.print(f"Ollama during the run: {', '.join(server['models']) or 'no model'} loaded, "
                          f"{(server.get('vram_share') or 0):.0%} of it in VRAM")
        if result.get("ttft_split"):
            split = result["ttft_split"]
            console.print(f"TTFT median split: {split['queue_ms']} ms queueing in vLLM, {split['rest_ms']} ms the rest")
        cal = result.get("calibration") or {}
        if cal.get("overhead_ms") is not None:
            console.print(f"client overhead {cal['overhead_ms']:g} ms at {cal['concurrency']} streams "
                          "(calibrated against a local server with known timing)")
        if result["trust"].get("note"):
            console.print("trust: " + result["trust"]["note"], style="yellow")
        g = result.get("gates")
        if g:
            for line in g["refused"]:
                console.print(f"gates not judged: {line}", style="red")
            for line in g["failed"]:
                console.print(f"gate failed: {line}", style="red")
            for line in g["notes"]:
                console.print(f"gate note: {line}", style="yellow")
            if g["passed"]:
                console.print("§7.1 gates on this load test: pass (" + ", ".join(
                    f"{k}={v}" for k, v in g["measured"].items() if v is not None) + ")", style="green")
        if result.get("saved"):
            console.print(f"saved: {result['saved']}")

    out.data(result, render)


def capacity_report(out: Output, runs: dict, rows: list | None, written: dict) -> None:
    def render(console):
        for label, run in runs.items():
            table = _table(f"{label} at {run['target']['url']} — users served", "users", "TTFT p50", "TTFT p99",
                           "E2E p99", "tok/s/user", "real-time met", "30 s met", "goodput")
            for p in run["probes"]:
                f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
                table.add_row(str(p["users"]), f(p["ttft_ms"]["median"]), f(p["ttft_ms"]["p99"]), f(p["e2e_ms"]["p99"]),
                              f(p["per_user_output_tokens_per_s"]), f"{p['realtime']['fraction']:.0%}",
                              f"{p['wait']['fraction']:.0%}", f(p["realtime"]["goodput_rps"]))
            console.print(table)
            for r in (run.get("predicted") or {}).get("rows", []):
                console.print(f"{r['metric']}: measured {r['measured']:g}, predicted {r['predicted']:g} "
                              f"({'floor' if r['metric'] == 'ttft_p99_ms' else 'ceiling'} on "
                              f"{run['predicted']['gpu']}; measured/predicted {r['measured_share']})")
            for scenario, name in (("realtime", "real-time users"), ("wait", "users within 30 s")):
                c = run["capacity"][scenario]
                upper = "?" if c["ci"][1] is None else c["ci"][1]
                console.print(f"{name}: {'≥ ' if c['at_least'] else ''}{c['users']} "
                              f"(90 % interval {c['ci'][0]}–{upper})")
        if rows:
            table = _table("Ollama vs vLLM", "figure", "Ollama", "vLLM", "ratio", "plan: Ollama", "plan: vLLM")
            cell = lambda v: "-" if v is None else (f"{v:g}" if isinstance(v, (int, float)) else str(v))  # noqa: E731
            for r in rows:
                table.add_row(f"{r['figure']} ({r['unit']})", cell(r["ollama"]), cell(r["vllm"]), cell(r["ratio"]),
                              cell(r["plan_ollama"]), cell(r["plan_vllm"]))
            console.print(table)
        console.print("report: " + ", ".join(written.values())
                      + ("" if "png" in written else " (PNG needs matplotlib: pip install 'graphrag-migrate[report]')"))

    out.data({"runs": runs, "comparison": rows, "report": written}, render)


def bench_diff(out: Output, paths, a: dict, b: dict, rows: list) -> None:
    def render(console):
        table = _table(f"A = {paths[0].name} ({a['target']['api']} {a['target']['model']}), "
                       f"B = {paths[1].name} ({b['target']['api']} {b['target']['model']})",
                       "figure", "A", "B", "change", "")
        for r in rows:
            cell = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
            change = "-" if r["change_pct"] is None else f"{r['change_pct']:+.1f} %"
            verdict = {True: "B better", False: "B worse", None: ""}[r["b_better"]]
            table.add_row(r["figure"], cell(r["a"]), cell(r["b"]), change, verdict)
        console.print(table)

    out.data({"a": str(paths[0]), "b": str(paths[1]), "rows": rows}, render)
