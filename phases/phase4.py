"""phase4 — deploy: monitoring for vLLM, and the plan's §7.1 gates on the recorded load test.

Monitoring: a Prometheus scrape config, alert rules (engine down, waiting queue growing, KV cache high,
P99 TTFT over the gate) and a Grafana dashboard, rendered from templates and checked with the real
`promtool` when it is installed. (Staging and the watched production switch are not built yet.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from migrator.config import Settings
from migrator.engine import Context, Outcome, Phase, Step

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
    from migrator.templates import render

    m, v = ctx.settings.monitoring, ctx.settings.vllm
    out = ctx.path(m.dir)
    ttft_gate = next((g.threshold for g in ctx.settings.gates if g.metric == "ttft_p99_ms"), 500.0)
    target = f"{v.host if v.host not in ('0.0.0.0', '') else '127.0.0.1'}:{v.port}"
    return {
        out / "prometheus-vllm.yml": render("prometheus-vllm.yml.j2", rules_file="vllm-alerts.yml",
                                            bearer_token_file=m.bearer_token_file, target=target,
                                            service=v.service_name).encode(),
        out / "vllm-alerts.yml": render("vllm-alerts.yml.j2", waiting_threshold=m.waiting_alert,
                                        kv_threshold=m.kv_cache_alert, ttft_p99_s=ttft_gate / 1000).encode(),
        out / "grafana-vllm.json": render("grafana-vllm.json.j2", title="vLLM (graphrag-migrate)",
                                          panels=PANELS).encode(),
    }


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
        result = ctx.resources.get("loadtest")
        if not result:
            return Outcome.failed("no load-test result recorded",
                                  "run `graphrag-migrate bench` (it records the result for these gates)")
        metrics = result.get("metrics", {})
        failed, measured = [], {}
        for gate in ctx.settings.gates:
            value = metrics.get(gate.metric)
            measured[gate.metric] = value
            if value is None:
                failed.append(f"{gate.name}: {gate.metric} not measured")
            elif not gate.passes(float(value)):
                failed.append(f"{gate.name}: {value} not {gate.op} {gate.threshold:g}")
        if failed:
            return Outcome.failed("; ".join(failed), "see the load-test report", **measured)
        return Outcome.passed("all gates pass", **measured)


def build(settings: Settings, options: dict) -> Phase:
    return Phase("phase4", "deploy", [Monitoring(), Gates()])
