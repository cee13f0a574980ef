"""phase4's watch window: healthy production passes; vLLM dying or a metrics gate failing inside the
window rolls back automatically and says which gate failed with its value."""

import threading
import time

import pytest

from conftest import prepare_switch, tree_digest
from migrator.core import promql
from migrator.adapters import process
from migrator.adapters.http import OpenAIServer
from migrator.files.envfile import EnvFile
from migrator.core.ledger import Ledger
from phases.phase4 import window_metrics


def test_histogram_quantile_over_a_window_interpolates_like_prometheus():
    before = {0.1: 0.0, 0.5: 0.0, 1.0: 0.0, float("inf"): 0.0}
    after = {0.1: 10.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert promql.quantile(0.5, before, after) == 0.1 + (0.5 - 0.1) * (50 - 10) / (90 - 10)
    assert promql.quantile(0.99, before, after) == 0.5 + (1.0 - 0.5) * (99 - 90) / (100 - 90)
    assert promql.quantile(0.99, after, after) is None  # nothing observed in the window


migrate = prepare_switch  # phase1, phase3 and the load test; phase4 (switch, then watch) is the test's


WATCH = ["--set", "deploy.watch_s=3", "--set", "deploy.probe_interval_s=0.3"]


def test_healthy_window_passes_and_records_its_figures(sandbox, cli):
    migrate(sandbox)
    result = cli("--project", str(sandbox), *WATCH, "phase4")
    steps = Ledger(sandbox).read_state()["phases"]["phase4"]["steps"]
    assert result.exit_code == 0, result.stderr
    assert steps["phase4.watch"]["status"] == "passed" and steps["phase4.watch"]["measurements"]["watched_s"] >= 3
    assert "realtime_users not measured" in steps["phase4.gates"]["message"]  # no sweep yet: a note, not blocking
    cli("--project", str(sandbox), "rollback", "--wait", "5")


def test_vllm_dying_in_the_window_rolls_back_automatically(sandbox, cli):
    before = tree_digest(sandbox)
    migrate(sandbox)
    vllm = process.ProcessHandle.from_dict(Ledger(sandbox).read_state()["resources"]["vllm"]["process"])

    def watching() -> bool:  # the watch step is marked "applying" before it starts watching
        steps = Ledger(sandbox).read_state().get("phases", {}).get("phase4", {}).get("steps", {})
        return steps.get("phase4.watch", {}).get("status") == "applying"

    def kill_once_switched():  # in the watch window, however long the switch takes on a loaded box
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not watching():
            time.sleep(0.1)
        time.sleep(1.0)  # past the window's opening checks, into its health polls, as a rule
        process.stop(vllm, 1)

    killer = threading.Thread(target=kill_once_switched)
    killer.start()
    try:
        result = cli("--project", str(sandbox), *WATCH, "--set", "deploy.watch_s=20", "phase4")
    finally:
        killer.join()
    assert result.exit_code == 1
    # The window opens with the integration checks through the backend, then polls vLLM's health: on a loaded
    # box the kill may land in either, and both must roll back.
    assert "vLLM health" in result.stderr or "integration checks through the backend" in result.stderr, result.stderr
    assert "rolled back automatically (back on Ollama)" in result.stderr
    assert EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "ollama"
    assert tree_digest(sandbox) == before


@pytest.mark.parametrize("metric, threshold", [
    ("ttft_p99_ms", 500), ("'histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket[1m]))'", 0.5)])
def test_slow_first_tokens_fail_the_metrics_gate_and_roll_back(sandbox, metric, threshold, cli):
    # Only the production gate: the slow server would already fail the load-test gates.
    with open(sandbox / "migrate.yaml", "a") as f:
        f.write(f'gates:\n  - {{name: P99 latency in production, metric: {metric}, op: "<", '
                f'threshold: {threshold}, source: metrics}}\n')
    before = tree_digest(sandbox)
    migrate(sandbox, "--set", "vllm.extra_args=--ttft-ms 700")
    state = Ledger(sandbox).read_state()
    port = int(state["resources"]["vllm"]["command"][state["resources"]["vllm"]["command"].index("--port") + 1])
    stop = threading.Event()

    def traffic():  # production users while the window is watched
        server = OpenAIServer(f"http://127.0.0.1:{port}")
        while not stop.is_set():
            server.complete("qwen2.5-32b-instruct", "hi", max_tokens=2, timeout=10)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        result = cli("--project", str(sandbox), *WATCH, "--set", "deploy.watch_s=20",
                     "--set", "vllm.extra_args=--ttft-ms 700", "phase4")
    finally:
        stop.set()
        worker.join()
    assert result.exit_code == 1
    assert f"P99 latency in production: {metric.strip(chr(39))}=" in result.stderr
    assert f"not < {threshold:g}" in result.stderr
    assert "rolled back automatically" in result.stderr
    assert tree_digest(sandbox) == before


def test_without_staging_the_checks_through_the_backend_run_after_the_switch(sandbox, cli):
    """No staging (vLLM a process): the backend-through checks run on production right after the switch;
    a failure there rolls back at once, before the window. (A wrong chat path fails earlier, the switch's
    proof: test_switch_proof. Here the chat works and the history endpoint the checks read does not.)"""
    before = tree_digest(sandbox)
    migrate(sandbox)
    result = cli("--project", str(sandbox), *WATCH, "--set", "backend.history_path=/no-such-history/{session}",
                 "phase4")
    assert result.exit_code == 1
    assert "integration checks through the backend: history: 0 turns kept after two questions" in result.stderr
    assert "rolled back automatically (back on Ollama)" in result.stderr
    steps = Ledger(sandbox).read_state()["phases"]["phase4"]["steps"]
    assert steps["phase4.backend"]["measurements"]["vllm_requests_delta"] >= 1  # the switch itself was proven
    watch = steps["phase4.watch"]
    assert watch["measurements"]["backend_status"] == 200 and watch["measurements"]["history_turns"] == 0
    assert "watched_s" not in watch["measurements"]
    assert EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "ollama"
    assert tree_digest(sandbox) == before


def test_a_backend_that_does_not_come_up_on_vllm_rolls_back_automatically(sandbox, servers, tmp_path, cli):
    """The switch written, the backend still on Ollama after backend.wait_s: back to Ollama at once."""
    before = tree_digest(sandbox)
    migrate(sandbox)
    frozen_env = tmp_path / "frozen.env"  # a backend that never sees the switch
    frozen_env.write_bytes((sandbox / "docker" / ".env").read_bytes())
    port = servers.start("migrator.sim.backend", "--env-file", str(frozen_env))
    result = cli("--project", str(sandbox), *WATCH, "--set", f"project.backend_url=http://127.0.0.1:{port}",
                 "--set", "backend.wait_s=1", "phase4")
    assert result.exit_code == 1
    assert "backend reports llm_backend=ollama 1 s after the switch — rolled back automatically (back on Ollama)" \
        in result.stderr
    steps = Ledger(sandbox).read_state()["phases"]["phase4"]["steps"]
    assert steps["phase4.backend"]["status"] == "failed" and "phase4.watch" not in steps
    assert tree_digest(sandbox) == before


def test_window_metrics_from_two_real_scrapes(servers):
    port = servers.start("migrator.sim.vllm", "--served-model-name", "m", "--ttft-ms", "120")
    server = OpenAIServer(f"http://127.0.0.1:{port}")
    first = server.metrics_text().body
    for _ in range(5):
        server.complete("m", "hi", max_tokens=2)
    queries = ["histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket[5m]))",
               "increase(vllm:request_success_total)", "rate(vllm:request_success_total)",
               'increase(vllm:request_success_total{finished_reason="abort"}) / increase(vllm:request_success_total)',
               "max(vllm:num_requests_waiting)", "increase(vllm:no_such_metric_total)"]
    figures = window_metrics(first, server.metrics_text().body, queries, window_s=2.0)
    assert figures["requests_in_window"] == 5 and figures["error_rate"] == 0
    assert 100 <= figures["ttft_p99_ms"] <= 250  # within the 0.1–0.25 s bucket
    assert figures[queries[0]] * 1000 == pytest.approx(figures["ttft_p99_ms"], abs=0.1)  # the query form agrees
    assert figures[queries[1]] == 5 and figures[queries[2]] == 2.5 and figures[queries[3]] == 0
    assert figures[queries[4]] == 0  # a gauge, read at the window's end: nothing waiting now
    assert figures[queries[5]] is None  # not exposed: not measured (phase4's gates step refuses such a gate)


def test_queries_follow_renamed_metrics_and_counter_resets():
    before = promql.parse('vllm:gpu_cache_usage_perc 0.2\nvllm:request_success_total{finished_reason="stop"} 90\n')
    after = promql.parse('vllm:gpu_cache_usage_perc 0.7\nvllm:request_success_total{finished_reason="stop"} 4\n')
    assert promql.compile_query("max(vllm:kv_cache_usage_perc)").value(before, after, 1.0) == 0.7  # older name
    assert promql.compile_query("increase(vllm:request_success_total)").value(before, after, 1.0) == 4  # restarted
    assert promql.missing(promql.compile_query("rate(vllm:kv_cache_usage_perc)"), after) == []
    assert promql.missing(promql.compile_query("rate(a:b) / rate(vllm:request_success_total)"), after) == ["a:b"]
