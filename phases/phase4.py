"""phase4 — deploy: monitoring, staging, the plan's §7.1 gates, then the production switch, watched.

Order: prerequisites → monitoring → staging → gates → LLM_BACKEND=vllm → backend recreated and proven →
watch. Nothing is touched unless phases 1–3 completed (phase2 passed, or its failure accepted with
`--accept-failed phase2`) and the switch can be proven (a known chat endpoint, or `--accept-unproven`).
Production changes only after the gates pass, so a failed gate leaves production on Ollama, untouched.
The switch is proven by a question through the backend's chat endpoint that vLLM's own counters must
show it served (phases/backend.py); a backend's /health saying `llm_backend=vllm` proves nothing.

Monitoring: a Prometheus scrape config, alert rules (engine down, waiting queue growing, KV cache high,
P99 TTFT over the gate) and a Grafana dashboard, rendered from templates and checked with the real
`promtool` when it is installed. Staging (phases/staging.py) runs the integration checks and the load test
on a separate compose project; gates with `source: bench` judge that load test (or the one `bench`
recorded, where there is no staging). After the switch, gates with `source: metrics` judge vLLM's /metrics
during the watch window, where a failure — or a backend that does not come up on vLLM — rolls back at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from migrator.core.config import Settings
from migrator.core.engine import Context, Outcome, Phase, Step, Undo, UndoStage
from migrator.core.errors import ConfigError
from migrator.core.gates import WATCH_METRICS, evaluate, judge_gates
from migrator.files.envfile import read_project_env
from phases.backend import Proof, probe_answer, prove_llm, wait_until_answers
from phases.phase3 import OLLAMA, EnvKeyStep, desired_env

EARLIER = ("phase1", "phase2", "phase3")
ACCEPTABLE = ("phase2",)  # checks of the backend's source: an operator may know better; phases 1 and 3 start vLLM
AGAIN = "then re-run phases 1–3 and phase4 (the rollback undid them)"
VLLM_AT_FAULT = "find the cause (vLLM's log, the bench report)"

PANELS = [
    {"title": "Time to first token (s)", "unit": "s", "targets": [
        {"expr": "histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
         "legend": "p50"},
        {"expr": "histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
         "legend": "p99"}]},
    {"title": "Inter-token latency (s)", "unit": "s", "targets": [
        {"expr": "histogram_quantile(0.99, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket[5m]) "
                 "or rate(vllm:time_per_output_token_seconds_bucket[5m])))", "legend": "p99"}]},
    {"title": "End-to-end latency (s)", "unit": "s", "targets": [
        {"expr": "histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))",
         "legend": "p99"}]},
    {"title": "Requests running / waiting", "unit": "short", "targets": [
        {"expr": "sum(vllm:num_requests_running)", "legend": "running"},
        {"expr": "sum(vllm:num_requests_waiting)", "legend": "waiting"}]},
    {"title": "KV cache usage", "unit": "percentunit", "targets": [
        {"expr": "max(vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc)", "legend": "KV cache"}]},
    {"title": "Tokens per second", "unit": "short", "targets": [
        {"expr": "sum(rate(vllm:generation_tokens_total[1m]))", "legend": "generated"},
        {"expr": "sum(rate(vllm:prompt_tokens_total[1m]))", "legend": "prompt"}]},
]
# Older names queries fall back to (vLLM drops deprecated names two minor versions after renaming them).
FALLBACK_METRICS = {"vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"}


def monitoring_files(ctx: Context) -> dict[Path, bytes]:
    from migrator.files.templates import render

    m, v = ctx.settings.monitoring, ctx.settings.vllm
    out = ctx.path(m.dir)
    ttft_gate = next((g.threshold for g in ctx.settings.gates if g.metric == "ttft_p99_ms"), 500.0)
    target = f"{v.probe_host}:{v.port}"
    return {
        out / "prometheus-vllm.yml": render("prometheus-vllm.yml.j2", rules_file="vllm-alerts.yml",
                                            bearer_token_file=m.bearer_token_file, target=target,
                                            service=v.service_name).encode(),
        out / "vllm-alerts.yml": render("vllm-alerts.yml.j2", waiting_threshold=m.waiting_alert,
                                        kv_threshold=m.kv_cache_alert, ttft_p99_s=ttft_gate / 1000).encode(),
        out / "grafana-vllm.json": render("grafana-vllm.json.j2", title="vLLM (graphrag-migrate)",
                                          panels=PANELS).encode(),
    }


def accepted_failures(options: dict) -> list[str]:
    """`--accept-failed`: phase2 only (a ConfigError, exit 2, for any other phase)."""
    accepted = list(dict.fromkeys(options.get("accept_failed") or ()))
    refused = [name for name in accepted if name not in ACCEPTABLE]
    if refused:
        raise ConfigError(f"--accept-failed {refused[0]}: only phase2's failure can be accepted",
                          f"{refused[0]} must complete: phase1 starts vLLM and phase3 hands it to production's "
                          f"compose; run `graphrag-migrate {refused[0]}`" if refused[0] in EARLIER else
                          "--accept-failed takes phase2")
    return accepted


def _not_done(name: str, record: dict) -> str:
    """Why an earlier phase does not count as done, in words."""
    status = record.get("status") or "pending"
    if status == "pending":
        return f"{name} has not run"
    if status == "failed":
        failed = record.get("failed_step", "?")
        said = (record.get("steps", {}).get(failed, {}).get("message") or "").strip()
        return f"{name} failed at {failed}" + (f" ({said[:160]})" if said else "")
    if status == "rolled_back":
        return f"{name} was rolled back"
    return f"{name} did not finish ({status.replace('_', ' ')})"


class Prerequisites(Step):
    """Before anything is touched: the phases the switch relies on completed, and the switch provable."""

    id = "phase4.prerequisites"
    title = "phases 1–3 completed (phase2 passed) and the switch provable"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        accepted = accepted_failures(ctx.options)
        phases = ctx.ledger.state["phases"]
        problems, to_run, taken = [], [], []
        for name in EARLIER:
            record = phases.get(name) or {}
            if record.get("status") == "completed":
                continue
            if name in accepted:
                taken.append(_not_done(name, record))
            else:
                problems.append(_not_done(name, record))
                to_run.append(name)
        unproven = not ctx.settings.backend.chat_path
        if unproven and not ctx.options.get("accept_unproven"):
            problems.append("phase4 cannot prove the switch: backend.chat_path is empty (the proof is a question "
                            "through the backend's chat endpoint that vLLM's /metrics must show it served)")
        if problems:
            fix = [" then ".join(f"`graphrag-migrate {n}`" for n in to_run)] if to_run else []
            if "phase2" in to_run:
                fix.append("or accept phase2's failure: `graphrag-migrate phase4 --accept-failed phase2`")
            if unproven and not ctx.options.get("accept_unproven"):
                fix.append("set backend.chat_path (e.g. /chat) and backend.chat_message_field in migrate.yaml, "
                           "or switch unproven: `graphrag-migrate phase4 --accept-unproven`")
            return Outcome.failed("; ".join(problems) + " — nothing was touched",
                                  ("run " if to_run else "") + "; ".join(fix))
        notes = [f"{what} — accepted by --accept-failed phase2" for what in taken]
        if unproven:
            notes.append("no backend.chat_path: the switch will be unproven — accepted by --accept-unproven")
        if ctx.recording:  # the operator's acceptance, on the record (never in --check or --dry-run)
            for what in taken:
                ctx.ledger.audit(self.id, "accept-failed", "accepted", phase="phase2", what=what,
                                 option="--accept-failed phase2")
            if unproven:
                ctx.ledger.audit(self.id, "accept-unproven", "accepted", what="switch without a proof through "
                                 "the backend (backend.chat_path empty)", option="--accept-unproven")
        done = [n for n in EARLIER if (phases.get(n) or {}).get("status") == "completed"]
        message = f"{', '.join(done) or 'no earlier phase'} completed"
        if notes:
            return Outcome.warn(message + "; " + "; ".join(notes) + " (recorded in the audit log)",
                                accepted_failed=[n for n in EARLIER if n in accepted and n not in done],
                                unproven=unproven)
        return Outcome.passed(message + f"; the switch will be proven through {ctx.settings.backend.chat_path}")


class Monitoring(Step):
    id = "phase4.monitoring"
    title = "Prometheus scrape config, alert rules and Grafana dashboard"

    def check(self, ctx: Context) -> Outcome:
        wanted = monitoring_files(ctx)
        stale = [p.name for p, data in wanted.items() if ctx.writer.read(p) != data]
        if stale:
            return Outcome.failed("to write: " + ", ".join(stale))
        return self.verify(ctx)

    def verify(self, ctx: Context) -> Outcome:
        files = monitoring_files(ctx)
        dashboard = next(p for p in files if p.suffix == ".json")
        try:
            json.loads(dashboard.read_text())
        except (OSError, ValueError) as exc:
            return Outcome.failed(f"{dashboard.name} is not valid JSON: {exc}")
        promtool = shutil.which("promtool")
        if promtool is None:
            return Outcome.warn(f"written to {ctx.settings.monitoring.dir}/ (promtool not installed: not validated)")
        config = next(p for p in files if p.name == "prometheus-vllm.yml")
        for args in (["check", "config", "--syntax-only", str(config)],
                     ["check", "rules", str(config.with_name("vllm-alerts.yml"))]):
            proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                return Outcome.failed(f"promtool {args[1]}: {(proc.stdout + proc.stderr).strip()[-300:]}",
                                      "check the monitoring settings")
        return Outcome.passed(f"written to {ctx.settings.monitoring.dir}/, validated by promtool")

    def plan(self, ctx: Context) -> list[str]:
        return [f"write {', '.join(p.name for p in monitoring_files(ctx))} into {ctx.settings.monitoring.dir}/"]

    def files(self, ctx: Context) -> dict[Path, bytes]:
        return monitoring_files(ctx)


class Gates(Step):
    id = "phase4.gates"
    title = "plan §7.1 gates pass on the load test"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        unknown = self.unknown_names(ctx)
        if unknown:
            return Outcome.failed("; ".join(unknown), "fix these gates' metrics in migrate.yaml (before the switch)")
        gates = [g for g in ctx.settings.gates if g.source == "bench"]
        if not gates:
            return Outcome.passed("no gates on the load test configured")
        result = ctx.resources.get("loadtest")
        if not result:
            return Outcome.failed("no load-test result recorded",
                                  "run `graphrag-migrate bench` (it records the result for these gates)")
        sweep = (ctx.resources.get("capacity") or {}).get("vllm") or {}
        metrics = {**result.get("metrics", {}), **sweep.get("metrics", {})}
        verdict = judge_gates(ctx.settings.gates, {"metrics": metrics, "trust": result.get("trust") or {}})
        if verdict["refused"]:
            return Outcome.failed("refusing to judge the gates on this load test: " + "; ".join(verdict["refused"]),
                                  "re-run the load test with fewer streams, or from a less busy client machine")
        failed, notes, measured = verdict["failed"], verdict["notes"], verdict["measured"]
        if failed:
            return Outcome.failed("; ".join(failed + notes), "see the load-test report (graphrag-migrate bench)",
                                  **measured)
        message = "all blocking gates pass" + "".join(f"; {n}" for n in notes)
        return Outcome.warn(message, **measured) if notes else Outcome.passed(message, **measured)

    @staticmethod
    def unknown_names(ctx: Context) -> list[str]:
        """Metrics gates whose query reads a name production's vLLM does not expose: found now, before the
        switch, rather than as a gate that never blocks during the watch. Unchecked when vLLM is unreachable."""
        from migrator.core import promql
        from migrator.adapters.http import OpenAIServer

        queries = [g for g in ctx.settings.gates if g.source == "metrics" and g.metric not in WATCH_METRICS]
        if not queries:
            return []
        v = ctx.settings.vllm
        scrape = OpenAIServer(v.url).metrics_text()
        if not scrape.ok:
            return []
        samples = promql.parse(scrape.body)
        out = []
        for gate in queries:
            gone = promql.missing(promql.compile_query(gate.metric), samples)
            if gone:
                out.append(f"{gate.name}: vLLM's /metrics has no {', '.join(gone)}")
        return out


class DrainBeforeSwitch(Step):
    """Right before the switch: no answer in flight through the backend about to be recreated (bounded by
    deploy.drain_timeout_s). Timed out: proceed (its grace period still lets the old backend finish them) or,
    with deploy.drain_on_timeout: stop, stop here with production untouched."""

    id = "phase4.drain"
    title = "no answer in flight through the backend (drained before the switch)"
    production = True  # asked with --confirm before the wait, not between the wait and the recreate
    observes = True  # waits and measures; changes nothing

    def check(self, ctx: Context) -> Outcome:
        env = read_project_env(ctx)
        if env is not None and env.get("LLM_BACKEND") == "vllm":
            return Outcome.passed("the env file already says LLM_BACKEND=vllm: nothing left to drain for")
        if not ctx.backend_runtime.recreates:
            return Outcome.passed("the backend re-reads the env file: nothing is restarted, no answer is cut")
        return Outcome.failed("not drained yet")

    def plan(self, ctx: Context) -> list[str]:
        from phases.switchover import in_flight_observer

        d = ctx.settings.deploy
        return [f"wait up to {d.drain_timeout_s:g} s until no answer is in flight ({in_flight_observer(ctx, False)[1]}"
                f"; quiet for {d.drain_quiet_s:g} s), then {d.drain_on_timeout} if it times out"]

    def apply(self, ctx: Context) -> Outcome:
        from phases.switchover import drain_backend

        result = drain_backend(ctx, "switch", on_vllm=False)
        ctx.memo["drain"] = result
        measured = {f"drain_{k}": v for k, v in result.to_dict().items()}
        if result.timed_out and ctx.settings.deploy.drain_on_timeout == "stop":
            return Outcome.failed(f"{result.describe()}: not switched (deploy.drain_on_timeout: stop), "
                                  "production untouched on Ollama",
                                  "re-run phase4 when fewer users are asking, raise deploy.drain_timeout_s, or "
                                  "set deploy.drain_on_timeout: proceed (the grace period lets them finish)",
                                  **measured)
        if result.timed_out:
            message = (f"{result.describe()}: switching anyway (deploy.drain_on_timeout: proceed); the old "
                       f"backend has {ctx.settings.deploy.stop_grace_s:g} s to finish them")
            ctx.out.warn(message)
            return Outcome.warn(message, **measured)
        return Outcome.passed(result.describe(), **measured)

    def verify(self, ctx: Context) -> Outcome:
        return Outcome.passed()


class SwitchToVllm(EnvKeyStep):
    """The production switch: one key in the env file, after the gates passed."""

    id = "phase4.switch"
    title = "production env file: LLM_BACKEND=vllm"
    production = True

    def wanted(self, ctx: Context) -> dict[str, str]:
        return desired_env(ctx)  # the endpoint keys too, should phase3's have been edited away


class BackendOnVllm(Step):
    id = "phase4.backend"
    title = "backend recreated and proven on vLLM (rolled back automatically if it is not)"
    production = True

    def check(self, ctx: Context) -> Outcome:
        env = read_project_env(ctx)
        if env is None or env.get("LLM_BACKEND") != "vllm":
            return Outcome.failed("the env file does not say LLM_BACKEND=vllm yet")
        if not ctx.settings.backend.chat_path:  # nothing to tell a recreated backend from a stale one
            return Outcome.failed("the switch cannot be proven (no backend.chat_path): recreate and wait")
        proof = prove_on_vllm(ctx, 0)
        if proof.ok and not ctx.backend_runtime.recreates:  # switched by the env file alone, just now
            from migrator.core.drain import Disruption

            saw = Disruption("switch", 0, None, "the backend re-reads the env file: nothing restarted")
            return Outcome.passed(f"{proof.message}; {saw.line()}", **proof.measurements, users_saw=saw.line(),
                                  answers_cut=0, refused_s=None)
        if proof.ok:
            return Outcome.passed(proof.message, **proof.measurements)
        return Outcome.failed(proof.message, proof.fix, **proof.measurements)

    def plan(self, ctx: Context) -> list[str]:
        b = ctx.settings.backend
        proof = (f"prove it: one question through {b.chat_path}; vLLM's request and token counters must rise"
                 if b.chat_path else "no backend.chat_path: wait for it to answer only (the switch unproven)")
        return ctx.backend_runtime.recreate_plan(ctx) + [proof]

    def apply(self, ctx: Context) -> Outcome | None:
        from migrator.core.drain import DrainResult
        from phases.phase3 import compose
        from phases.switchover import proxies, recreate_drained

        restarts = ctx.backend_runtime.recreates
        drained = ctx.memo.get("drain") or (DrainResult(0.0, None, "not drained in this run (resumed)") if restarts
                                            else DrainResult(0.0, 0, "nothing restarts", drained=True))
        ok, message, disruption = recreate_drained(ctx, "switch", drained, compose(ctx) if restarts else None)
        if not ok:
            return auto_rollback(ctx, "could not recreate the backend: " + message, {},
                                 "see the recreate's error above")
        users_saw = [disruption.line()] + proxies(ctx)
        for line in users_saw:
            ctx.out.info(line)
        wait_s = ctx.settings.backend.wait_s
        if not ctx.settings.backend.chat_path:  # --accept-unproven (the prerequisites refuse it otherwise)
            seen = wait_until_answers(ctx.settings.project.backend_url, "", wait_s, lambda b: b in (None, "vllm"))
            measured = {"backend_health": seen.health or "-", "backend_answered_s": seen.seconds, "unproven": True}
            if not seen.ok:
                problem = (f"backend reports llm_backend={seen.llm_backend} {wait_s:g} s after the switch"
                           if seen.answered else f"backend did not answer in {wait_s:g} s after the switch "
                           f"({seen.detail or seen.url})")
                return auto_rollback(ctx, problem, measured, "see the backend's own log")
            warning = (f"the switch is unproven: the backend answers at {seen.url} ({seen.health}), but without "
                       "backend.chat_path nothing shows it is on vLLM (--accept-unproven)")
            ctx.out.warn(warning)
            return Outcome.warn("; ".join([warning, *users_saw]), **measured, users_saw=users_saw[0])
        proof = prove_on_vllm(ctx, wait_s)
        if not proof.ok:
            return auto_rollback(ctx, proof.message, proof.measurements, proof.fix)
        return Outcome.passed("; ".join([proof.message, *users_saw]), **proof.measurements,
                              users_saw=users_saw[0], answers_cut=disruption.cut, refused_s=disruption.refused_s)

    def verify(self, ctx: Context) -> Outcome:
        return Outcome.passed()  # apply's proof is the verification (a second question would prove no more)

    def undos(self) -> list[Undo]:
        return [Undo(UndoStage.RECREATE, "recreate backend", recreate_backend),
                Undo(UndoStage.PROBE, "backend answers", backend_answers)]


def prove_on_vllm(ctx: Context, wait_s: float) -> Proof:
    b = ctx.settings.backend
    return prove_llm(ctx.settings.project.backend_url, b.chat_path, b.chat_message_field, ctx.settings.vllm.url,
                     "vllm", wait_s, "after the switch")


def recreate_backend(ctx: Context) -> tuple[bool, str]:
    """After the env file is restored, before vLLM is stopped: the answers in flight drained (bounded; not with
    `rollback --now`), then the backend recreated so that it reads the env file (a restart would not) — the old
    one finishing its answers on vLLM in its grace period. Says what the users saw."""
    from migrator.core.drain import DrainResult
    from phases.switchover import drain_backend, proxies, recreate_drained

    switched = bool(ctx.ledger.step("phase4", SwitchToVllm.id)) or not ctx.state_known
    if switched:
        drained = drain_backend(ctx, "rollback", on_vllm=True)
    else:  # production never went to vLLM: no answer of vLLM's to wait for
        drained = DrainResult(0.0, 0, "production was never switched", drained=True)
    ok, message, disruption = recreate_drained(ctx, "rollback", drained, wait_s=0.0 if not switched else None)
    if ok and ctx.backend_runtime.recreates and message.endswith("recreated"):
        message += " (reads LLM_BACKEND=ollama)"
    if ok and switched and disruption is not None:
        message = "; ".join([message, drained.describe(), disruption.line(), *proxies(ctx)])
        ctx.out.info(disruption.line())
    return ok, message


def backend_answers(ctx: Context) -> tuple[bool, str]:
    """The backend answers and — with a chat endpoint known — is proven on Ollama: a question answered while
    vLLM's request counter did not rise (or vLLM is down). Waits up to the rollback's wait."""
    wait_s = float(ctx.memo.get("rollback_wait_s", 60.0))
    url, b = ctx.settings.project.backend_url, ctx.settings.backend
    if b.chat_path:
        proof = prove_llm(url, b.chat_path, b.chat_message_field, ctx.settings.vllm.url, OLLAMA, wait_s,
                          "after the rollback")
        return proof.ok, f"backend at {url}: {proof.message}"
    seen = wait_until_answers(url, "", wait_s, lambda llm: llm in (None, OLLAMA))
    if seen.ok:
        said = f" (llm_backend={seen.llm_backend})" if seen.llm_backend else ""
        return True, f"backend answers at {seen.url}{said}; not proven to be on Ollama (no backend.chat_path)"
    if seen.answered:
        return False, f"backend at {seen.url} still reports llm_backend={seen.llm_backend}"
    return False, f"backend does not answer at {seen.url}: {seen.detail or '-'}"


def auto_rollback(ctx: Context, problem: str, measured: dict, fix: str = "") -> Outcome:
    """Production is on vLLM and something is wrong: back to Ollama now, then say why (and what to look at:
    vLLM's log only when vLLM is the one at fault)."""
    from phases.rollback import rollback

    ctx.out.error(f"{problem}: rolling back automatically")
    report = rollback(ctx, ctx.wiring.phases(ctx.settings))
    outcome = "back on Ollama" if report.exit_code == 0 else "rollback incomplete: see `graphrag-migrate status`"
    return Outcome.failed(f"{problem} — rolled back automatically ({outcome})",
                          f"{fix or VLLM_AT_FAULT}; {AGAIN}",
                          **measured, rollback_exit_code=int(report.exit_code))


def window_metrics(before: str, after: str, queries=(), window_s: float = 0.0) -> dict:
    """The metrics gates read, over the window between two scrapes of vLLM's /metrics: the named ones,
    and each PromQL-style query a gate gives as its metric (migrator.core.promql)."""
    from migrator.core import promql

    a, b = promql.parse(before), promql.parse(after)
    out: dict = {}
    for key, name in (("ttft_p99_ms", "vllm:time_to_first_token_seconds"),
                      ("itl_p99_ms", "vllm:inter_token_latency_seconds"),
                      ("e2e_p99_ms", "vllm:e2e_request_latency_seconds")):
        p99 = promql.quantile(0.99, promql.buckets(a, name), promql.buckets(b, name))
        out[key] = round(p99 * 1000, 1) if p99 is not None else None
    done = promql.total(b, "vllm:request_success_total") - promql.total(a, "vllm:request_success_total")
    bad = sum(promql.total(b, "vllm:request_success_total", finished_reason=r)
              - promql.total(a, "vllm:request_success_total", finished_reason=r) for r in ("error", "abort"))
    out["error_rate"] = round(bad / done, 4) if done > 0 else None
    out["requests_in_window"] = int(done)
    for query in queries:
        value = promql.compile_query(query).value(a, b, window_s)
        out[query] = None if value is None else round(value, 6)
    return out


class WatchProduction(Step):
    """After the switch: watch production for a window; a failed gate rolls back at once."""

    id = "phase4.watch"
    title = "production watched on vLLM (automatic rollback on a failed gate)"
    production = True
    observes = True  # a failure in the window rolls back everything; the window itself changes nothing

    def check(self, ctx: Context) -> Outcome:
        return self.recorded_pass(ctx) or Outcome.failed("not watched yet")

    def verify(self, ctx: Context) -> Outcome:
        return Outcome.passed()  # the window itself is the verification: apply's outcome says how it went

    def plan(self, ctx: Context) -> list[str]:
        first = []
        if backend_checks_due(ctx):
            first = [f"integration checks through the backend's {ctx.settings.backend.chat_path} (no staging ran them)"]
        return first + [f"watch {ctx.settings.deploy.watch_s:g} s: backend and vLLM health every "
                        f"{ctx.settings.deploy.probe_interval_s:g} s, metrics gates on vLLM's /metrics; "
                        "roll back on failure"]

    def apply(self, ctx: Context) -> Outcome:
        from migrator.adapters.http import OpenAIServer

        env = read_project_env(ctx)
        if env is None or env.get("LLM_BACKEND") != "vllm":
            return Outcome.failed("production is not on vLLM (LLM_BACKEND is not vllm)",
                                  "re-run phase4: it switches before it watches")
        checked: dict = {}  # the checks through the backend, before the window (their error probe is ours)
        if backend_checks_due(ctx):
            from phases.integration import backend_checks

            failures = backend_checks(ctx, checked)
            if failures:
                return auto_rollback(ctx, "integration checks through the backend: " + "; ".join(failures), checked,
                                     "see each check, and the backend's own log")
        v, d = ctx.settings.vllm, ctx.settings.deploy
        server = OpenAIServer(v.url)
        backend_url, chat_path = ctx.settings.project.backend_url, ctx.settings.backend.chat_path
        gates = [g for g in ctx.settings.gates if g.source == "metrics"]
        first = server.metrics_text()
        start_scrape = first.body if first.ok else ""
        start, probes, problem, measured, fix = time.monotonic(), 0, "", {}, ""
        ctx.out.info(f"watching production for {d.watch_s:g} s (Ctrl-C stops watching; rollback stays manual)")
        while True:
            probes += 1
            b, h = probe_answer(backend_url, chat_path), server.health(timeout=5)
            if not h.ok:
                problem = f"vLLM health: {h.describe()}"
            elif not b.answered:
                problem, fix = f"backend health: {b.detail or b.url}", "see the backend's own log"
            elif b.llm_backend not in (None, "vllm"):
                problem, fix = f"backend reports llm_backend={b.llm_backend}", "see the backend's own log"
            else:
                now = server.metrics_text()
                queries = [g.metric for g in gates if g.metric not in WATCH_METRICS]
                measured = (window_metrics(start_scrape, now.body, queries, time.monotonic() - start)
                            if now.ok and start_scrape else {})
                failed, _notes, _ = evaluate(gates, measured, missing_blocks=False)
                problem = failed[0] if failed else ""
            if problem or time.monotonic() - start >= d.watch_s:
                break
            time.sleep(d.probe_interval_s)
        measured.update(checked, watched_s=round(time.monotonic() - start, 1), probes=probes)
        if not problem:
            return Outcome.passed(f"healthy for {measured['watched_s']:g} s ({probes} probes)", **measured)
        return auto_rollback(ctx, problem, measured, fix)


def backend_checks_due(ctx: Context) -> bool:
    """The checks through the backend ran on staging's backend; without staging they run on production's."""
    from phases import staging

    return bool(ctx.settings.backend.chat_path) and not staging.applies(ctx)


def build(settings: Settings, options: dict) -> Phase:
    from phases.staging import Staging

    accepted_failures(options)  # an unacceptable --accept-failed is refused before anything runs
    return Phase("phase4", "deploy", [Prerequisites(), Monitoring(), Staging(), Gates(), DrainBeforeSwitch(),
                                      SwitchToVllm(), BackendOnVllm(), WatchProduction()])
