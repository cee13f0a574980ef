"""phase4 — deploy: the plan's §7.1 gates on the recorded load-test result.

Only the gate evaluation is here; staging, the watched production switch and monitoring are
issue 7's remaining work, and the load test that produces the figures is issue 5's.
"""

from __future__ import annotations

from migrator.config import Settings
from migrator.engine import Context, Outcome, Phase, Step


class Gates(Step):
    id = "phase4.gates"
    title = "plan §7.1 gates pass on the load test"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        result = ctx.resources.get("loadtest")
        if not result:
            return Outcome.failed("no load-test result recorded",
                                  "run the load test first (graphrag-migrate bench: not available yet)")
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
    return Phase("phase4", "deploy", [Gates()])
