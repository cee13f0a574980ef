"""The drain before a backend recreate (issue #17): the pure wait (core.drain) on a fake clock, the observers on
real sockets and the vLLM simulator, and — through the process runtime with the stand-ins — a stream in flight
that survives phase4's switch and rollback, one that `rollback --now` cuts and reports, and a drain that times
out proceeding (rollback) or stopping the switch (deploy.drain_on_timeout: stop), each saying so."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from migrator.core.drain import Disruption, DrainResult, answers_cut, drain, skip
from conftest import QUICK_WATCH, migrate_to_vllm, prepare_switch


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def scripted(counts):
    """An observer answering each count in turn, then the last one for ever."""
    seq = list(counts)

    def observe():
        return seq.pop(0) if len(seq) > 1 else seq[0]

    return observe


def test_drain_ends_once_nothing_was_in_flight_for_the_quiet_period():
    clock = FakeClock()
    result = drain(scripted([2, 1, 0]), timeout_s=30, quiet_s=1.0, seen_by="gauge", clock=clock,
                   sleep=clock.sleep, poll_s=0.25)
    assert result.drained and not result.timed_out and result.in_flight == 0
    assert result.waited_s == pytest.approx(1.5)  # two busy looks, then 1 s of zeros
    assert result.describe() == "drained in 1.5 s (no request in flight by gauge)"


def test_a_request_between_two_quiet_looks_starts_the_quiet_period_again():
    clock = FakeClock()
    result = drain(scripted([0, 0, 1, 0]), timeout_s=30, quiet_s=1.0, clock=clock, sleep=clock.sleep, poll_s=0.25)
    assert result.drained
    assert result.waited_s == pytest.approx(1.75)  # the quiet period counted from the look after the 1


def test_a_drain_that_times_out_says_how_many_requests_are_still_in_flight():
    clock = FakeClock()
    result = drain(scripted([3, 2]), timeout_s=5, quiet_s=1.0, seen_by="connections to port 8000", clock=clock,
                   sleep=clock.sleep, poll_s=0.5)
    assert result.timed_out and not result.drained and result.in_flight == 2
    assert result.waited_s == pytest.approx(5.0)
    assert result.describe() == "drain timed out after 5 s with 2 requests in flight (connections to port 8000)"


def test_nothing_to_observe_is_a_quiet_period_bounded_by_the_timeout():
    clock = FakeClock()
    result = drain(lambda: None, timeout_s=30, quiet_s=2.0, seen_by="Ollama has no gauge", clock=clock,
                   sleep=clock.sleep, poll_s=0.5)
    assert result.unseen and not result.drained and not result.timed_out
    assert result.waited_s == pytest.approx(2.0)
    assert "nothing shows requests in flight (Ollama has no gauge): waited a quiet period of 2 s" == result.describe()
    short = drain(lambda: None, timeout_s=0.5, quiet_s=2.0, clock=clock, sleep=clock.sleep, poll_s=0.5)
    assert short.waited_s == pytest.approx(0.5)


def test_what_the_users_saw_is_one_line():
    assert Disruption("switch", 0, 1.42).line() == "switch: 0 answers cut, requests refused for 1.4 s (backend boot)"
    assert Disruption("rollback", 2, None, "the backend re-reads the env file: nothing restarted",
                      "--now").line() == ("rollback: 2 answers cut (--now), no request refused "
                                          "(the backend re-reads the env file: nothing restarted)")


def test_answers_cut_counts_now_and_a_killed_backend_but_not_what_the_grace_period_finished():
    drained = DrainResult(1.0, 0, "g", drained=True)
    assert answers_cut(drained, 40.0, 30.0) == (0, "")
    timed_out = DrainResult(30.0, 2, "g", timed_out=True)
    assert answers_cut(timed_out, 3.0, 30.0) == (0, "2 requests finished in the grace period")
    assert answers_cut(timed_out, 31.0, 30.0) == (2, "killed after its 30 s grace period")
    now = skip(lambda: 3, "g")
    assert now.skipped and now.waited_s == 0
    assert answers_cut(now, 0.5, 0.0) == (3, "--now: in flight when the backend was stopped")


def _samples(*rows):
    from migrator.core.drain import PortSample

    return [PortSample(float(i), listening, established) for i, (listening, established) in enumerate(rows)]


def test_a_kill_cuts_what_was_open_at_the_last_look_before_the_port_went():
    from migrator.core.drain import stop_seen

    # answers come and go (3, 1, 2) while compose gets to the stop; the kill closes listener and all at once
    seen = stop_seen(_samples((True, 3), (True, 1), (True, 2), (False, 0), (False, 0), (True, 0)))
    assert (seen.stopped_accepting_at, seen.open_at_exit, seen.stop_s) == (3.0, 2, 0.0)


def test_sigterm_closes_the_listener_first_and_the_answers_end_after():
    from migrator.core.drain import stop_seen

    # uvicorn on SIGTERM: no new connections from t=2, its two answers end one by one (or at the grace kill)
    seen = stop_seen(_samples((True, 2), (True, 2), (False, 2), (False, 1), (False, 1), (False, 0), (True, 0)))
    assert (seen.stopped_accepting_at, seen.open_at_exit, seen.stop_s) == (2.0, 1, 3.0)


def test_a_port_never_seen_listening_shows_no_stop():
    from migrator.core.drain import stop_seen

    assert stop_seen(_samples((False, 0), (False, 0), (True, 0))).open_at_exit is None
    assert stop_seen([]).stopped_accepting_at is None


def test_settle_returns_at_the_first_moment_nothing_is_in_flight_and_gives_up_at_its_budget():
    from migrator.core.drain import settle

    clock = FakeClock()
    assert settle(scripted([2, 1, 0, 3]), 5.0, clock, clock.sleep, poll_s=0.5) == 1.0
    busy = FakeClock()
    assert settle(lambda: 1, 2.0, busy, busy.sleep, poll_s=0.5) is None and busy.now >= 2.0
    assert settle(lambda: None, 2.0, clock, clock.sleep) is None  # nothing to see: no wait


def test_what_the_port_showed_at_exit_counts_over_the_drains_earlier_look():
    timed_out = DrainResult(0.0, 3, "g", timed_out=True)  # 3 in flight when the drain gave up
    assert answers_cut(timed_out, 2.0, 0.0, at_exit=1) == (1, "killed after its 0 s grace period")
    assert answers_cut(timed_out, 2.0, 0.0, at_exit=0) == (0, "killed after its 0 s grace period")
    assert answers_cut(timed_out, 2.0, 30.0, at_exit=2) == (0, "3 requests finished in the grace period")
    now = skip(lambda: 0, "g")  # nothing at the drain's look, two by the time the stop came
    assert answers_cut(now, 1.0, 0.0, at_exit=2) == (2, "--now: in flight when the backend was stopped")


def test_port_watch_sees_a_server_stop_accepting_and_its_connections_end(tmp_path):
    from migrator.adapters.inflight import PortWatch
    from migrator.core.drain import stop_seen

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    accepted = [server.accept()[0] for _ in clients]
    with PortWatch(port, interval_s=0.02) as watch:
        time.sleep(0.2)
        server.close()  # stops accepting, as uvicorn on SIGTERM; the two answers still open
        time.sleep(0.2)
        for s in accepted + clients:
            s.close()  # the process exits: its connections go
        time.sleep(0.2)
    seen = stop_seen(watch.samples)
    assert seen.open_at_exit == 2, watch.samples
    assert seen.stopped_accepting_at is not None
    assert all(a.at <= b.at for a, b in zip(watch.samples, watch.samples[1:]))


def test_connections_counts_the_established_sockets_on_a_listening_port():
    from migrator.adapters.inflight import connections

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        assert connections(port) == 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        accepted = [server.accept()[0] for _ in clients]
        assert connections(port) == 2
        for s in clients + accepted:
            s.close()
    finally:
        server.close()
    assert connections(port) is None  # nothing listens: nothing can be seen there


def _stream(url: str, body: dict, out: dict) -> None:
    """POST a streamed question, read it to its end; `out` gets the text (or the error that ended it)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", body.pop("_path", "/chat"), json.dumps(body),
                     {"content-type": "application/json", "connection": "close"})
        resp = conn.getresponse()
        out["status"] = resp.status
        out["text"] = resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out.setdefault("text", "")
    finally:
        conn.close()


def test_vllm_in_flight_is_its_running_gauge(servers):
    from migrator.adapters.inflight import vllm_in_flight

    port = servers.start("migrator.sim.vllm", "--itl-ms", "20")
    url = f"http://127.0.0.1:{port}"
    assert vllm_in_flight(url) == 0
    out: dict = {}
    body = {"_path": "/v1/chat/completions", "model": "sim-model", "max_tokens": 60, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    worker = threading.Thread(target=_stream, args=(url, body, out))
    worker.start()
    deadline = time.monotonic() + 5
    while vllm_in_flight(url) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vllm_in_flight(url) == 1
    worker.join(30)
    assert vllm_in_flight(url) == 0 and "[DONE]" in out["text"]


def _backend_url(root) -> str:
    from migrator.core.config import load_settings

    return load_settings(root / "migrate.yaml").project.backend_url


def _ask_in_background(root, tokens: int) -> tuple[threading.Thread, dict]:
    out: dict = {}
    worker = threading.Thread(target=_stream, args=(_backend_url(root), {"message": "long answer", "stream": True,
                                                                         "max_tokens": tokens}, out))
    worker.start()
    time.sleep(0.4)  # the stream is under way
    assert worker.is_alive(), out
    return worker, out


def test_a_stream_in_flight_through_the_backend_survives_the_switch(sandbox, cli):
    prepare_switch(sandbox)
    worker, out = _ask_in_background(sandbox, 60)  # Ollama stand-in: 40 ms a token, ~2.5 s
    result = cli("--project", sandbox, "--json", *QUICK_WATCH, "phase4")
    worker.join(30)
    assert result.exit_code == 0, result.stderr
    assert out["status"] == 200 and out["text"].endswith("[done]\n"), out  # finished on Ollama, whole
    backend = next(s for s in json.loads(result.stdout)["steps"] if s["id"] == "phase4.backend")
    assert backend["measurements"]["answers_cut"] == 0
    assert "switch: 0 answers cut, no request refused (the backend re-reads the env file" in backend["message"]


def test_rollback_lets_a_stream_on_vllm_finish_before_it_stops_vllm(sandbox, cli):
    migrate_to_vllm(sandbox)
    worker, out = _ask_in_background(sandbox, 600)  # the vLLM simulator: ~5 ms a token, ~3 s
    result = cli("--project", sandbox, "--json", "rollback")
    worker.join(30)
    assert result.exit_code == 0, result.stderr
    assert out["status"] == 200 and out["text"].endswith("[done]\n"), out  # whole, from vLLM
    recreate = next(a for a in json.loads(result.stdout)["actions"] if a["name"] == "recreate backend")
    assert "drained in" in recreate["result"] and "rollback: 0 answers cut" in recreate["result"], recreate


def test_rollback_now_cuts_the_stream_in_flight_and_says_how_many(sandbox, cli):
    migrate_to_vllm(sandbox)
    worker, out = _ask_in_background(sandbox, 2000)  # ~10 s: still running when vLLM is stopped
    started = time.monotonic()
    result = cli("--project", sandbox, "--json", "rollback", "--now")
    worker.join(30)
    assert result.exit_code == 0, result.stderr
    assert not out["text"].endswith("[done]\n"), out  # cut mid-answer
    recreate = next(a for a in json.loads(result.stdout)["actions"] if a["name"] == "recreate backend")
    assert "no drain (--now); 1 request in flight" in recreate["result"], recreate
    assert "rollback: 1 answer cut" in recreate["result"], recreate
    assert time.monotonic() - started < 8  # it did not wait for the answer


def test_a_rollback_drain_that_times_out_proceeds_and_says_what_it_cut(sandbox, cli):
    migrate_to_vllm(sandbox)
    worker, out = _ask_in_background(sandbox, 2000)
    result = cli("--project", sandbox, "--json", "--set", "deploy.drain_timeout_s=0.5", "rollback")
    worker.join(30)
    assert result.exit_code == 0, result.stderr
    recreate = next(a for a in json.loads(result.stdout)["actions"] if a["name"] == "recreate backend")
    assert "drain timed out after" in recreate["result"] and "with 1 request in flight" in recreate["result"]
    assert "rollback: 1 answer cut" in recreate["result"], recreate
    assert not out["text"].endswith("[done]\n")  # vLLM stopped under it, as the report says


class RestartingBackend:
    """A backend runtime that recreates, as compose does, on real processes: the sandbox backend started with
    its environment fixed from the env file (as a container's), and a recreate that SIGTERMs it — the old one
    finishing its answers in flight for up to `grace_s`, as uvicorn does — then starts it again, reading the
    env file afresh."""

    name = "restarting"
    recreates = True

    def __init__(self, root, logs):
        import sys

        from migrator.adapters import process

        self.root, self.logs, self.handles, self.graces = root, logs, [], []
        self.port = int(_backend_url(root).rsplit(":", 1)[1])
        running = process.listening_pid(self.port)  # the fixture's self-reloading backend: replaced
        if running:
            process.stop(process.ProcessHandle(running, process._start_ticks(running), [], ""), 5)
        self.command = [sys.executable, "-m", "migrator.sim.backend", "--port", str(self.port)]
        self._start()

    def _start(self):
        import os

        from migrator.adapters import process
        from migrator.adapters.net import wait_port
        from migrator.files.envfile import EnvFile
        from conftest import REPO

        env = EnvFile.from_bytes((self.root / "docker" / ".env").read_bytes())
        fixed = {**os.environ, **{k: env.get(k) for k in ("LLM_BACKEND", "OLLAMA_BASE_URL", "OLLAMA_MODEL",
                                                         "VLLM_BASE_URL", "VLLM_MODEL") if env.get(k)}}
        self.handles.append(process.start_detached(self.command, self.logs / "restarting-backend.log", fixed,
                                                   cwd=REPO))
        assert wait_port(self.port, 10)

    def recreate_plan(self, ctx):
        return ["SIGTERM the backend process, start it again"]

    def recreate(self, ctx, compose=None, grace_s=None, at_stop=None):
        from migrator.adapters import process

        self.graces.append(grace_s)
        if at_stop is not None:
            at_stop()
        process.stop(self.handles[-1], grace_s or 0)
        self._start()
        return True, "service 'backend' recreated"

    def stop_all(self):
        from migrator.adapters import process

        for handle in self.handles:
            process.stop(handle, 3)


@pytest.fixture
def restarting(sandbox, tmp_path):
    runtime = RestartingBackend(sandbox, tmp_path / "logs")
    yield runtime
    runtime.stop_all()


def _phase4_with(root, runtime, **deploy):
    from migrator.app import api
    from migrator.core.config import load_settings
    from migrator.core.engine import run_phase

    settings = load_settings(root / "migrate.yaml")
    settings.deploy.watch_s, settings.deploy.probe_interval_s = 0.5, 0.25
    for key, value in deploy.items():
        setattr(settings.deploy, key, value)
    ctx = api.context(root, settings)
    ctx.wiring.backend = runtime

    def run():
        with ctx.ledger.locked("phase4"):
            ctx.ledger.load()
            return run_phase(api.build_phase("phase4", ctx.settings), ctx)

    return ctx, run


def test_a_switch_drain_that_times_out_stops_there_when_told_to(sandbox, restarting):
    from migrator.core.errors import CheckFailed
    from migrator.files.envfile import EnvFile

    prepare_switch(sandbox)
    worker, out = _ask_in_background(sandbox, 300)  # ~12 s on the Ollama stand-in: in flight at the drain
    ctx, run = _phase4_with(sandbox, restarting, drain_timeout_s=0.5, drain_on_timeout="stop")
    with pytest.raises(CheckFailed) as failed:
        run()
    worker.join(30)
    assert "drain timed out after" in failed.value.message and "with 1 request in flight" in failed.value.message
    assert "not switched (deploy.drain_on_timeout: stop), production untouched on Ollama" in failed.value.message
    env = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes())
    assert env.get("LLM_BACKEND") == "ollama" and restarting.graces == []  # nothing recreated
    assert out["text"].endswith("[done]\n")


def test_a_switch_drain_that_times_out_proceeds_and_the_old_backend_finishes_the_answer(sandbox, restarting):
    prepare_switch(sandbox)
    # ~12 s through the old backend on Ollama: still in flight when phase4 reaches the drain on a loaded box
    worker, out = _ask_in_background(sandbox, 300)
    ctx, run = _phase4_with(sandbox, restarting, drain_timeout_s=0.5)
    report = run()
    worker.join(60)
    steps = {s.id: s for s in report.steps}
    assert "drain timed out after" in steps["phase4.drain"].message
    assert "switching anyway (deploy.drain_on_timeout: proceed)" in steps["phase4.drain"].message
    assert restarting.graces == [ctx.settings.deploy.stop_grace_s]  # the old backend got its grace period
    assert out["status"] == 200 and out["text"].endswith("[done]\n"), out  # finished on the old backend
    assert "switch: 0 answers cut (1 request finished in the grace period), requests refused for" \
        in steps["phase4.backend"].message
    assert steps["phase4.backend"].measurements["refused_s"] > 1  # the old one finished its answer first


def test_a_drained_switch_cuts_nothing_and_reports_the_refused_gap(sandbox, restarting):
    prepare_switch(sandbox)
    worker, out = _ask_in_background(sandbox, 30)  # ~1.3 s: done before the drain gives up
    ctx, run = _phase4_with(sandbox, restarting)
    report = run()
    worker.join(30)
    steps = {s.id: s for s in report.steps}
    assert steps["phase4.drain"].message.startswith("drained in"), steps["phase4.drain"].message
    assert out["text"].endswith("[done]\n")
    saw = steps["phase4.backend"].measurements
    assert saw["answers_cut"] == 0 and saw["users_saw"].startswith("switch: 0 answers cut, requests refused for")
    assert 0 < saw["refused_s"] < 5


def test_a_reverse_proxy_in_front_of_the_backend_is_named_with_whether_it_retries(tmp_path):
    from phases.switchover import proxies_in

    conf = tmp_path / "nginx"
    conf.mkdir()
    (conf / "default.conf").write_text("upstream app { server backend:8000; }\nserver { location / { proxy_pass http://app; } }\n")
    model = {"services": {
        "backend": {"image": "graphrag-backend:local"},
        "proxy": {"image": "nginx:1.27-alpine", "volumes": [{"type": "bind", "source": str(conf), "target": "/etc/nginx/conf.d"}]},
        "edge": {"image": "traefik:v3.1", "labels": {"traefik.http.services.api.loadbalancer.server.url": "http://backend:8000"}},
        "ollama": {"image": "ollama/ollama:0.12.6"},
        "other-nginx": {"image": "nginx:1.27"},  # serves something else: never named
    }}
    lines = proxies_in(model, "backend", tmp_path)
    assert lines == [
        "reverse proxy 'proxy' (nginx) in front of 'backend': it retries on the next upstream only for idempotent "
        "requests: a chat POST gets a 502 (proxy_next_upstream … non_idempotent changes that)",
        "reverse proxy 'edge' (traefik) in front of 'backend': it does not retry unless its retry middleware is "
        "configured: a refused request gets a 502"]
    (conf / "default.conf").write_text("upstream app { server backend:8000; }\n"
                                       "proxy_next_upstream error timeout non_idempotent;\n")
    assert "retries a refused POST on the next upstream" in proxies_in(model, "backend", tmp_path)[0]


def test_phase3_file_gives_the_backend_its_grace_period(tmp_path):
    """The backend's stop_grace_period in the tool's compose file, merged by compose with the user's service."""
    import subprocess

    import yaml

    from migrator.app import api
    from migrator.app.rehearse import make_sandbox
    from migrator.adapters.net import free_port
    from phases.phase3 import render_vllm_service

    root = tmp_path / "p"
    make_sandbox(root, free_port(), free_port(), free_port())
    (root / "migrate.yaml").write_text((root / "migrate.yaml").read_text().replace(
        "backend_runtime: none", "backend_runtime: compose").replace("runtime: process", "runtime: docker")
        + "deploy:\n  stop_grace_s: 45\n")
    ctx = api.context(root)
    rendered = render_vllm_service(ctx)
    assert yaml.safe_load(rendered)["services"]["backend"] == {"stop_grace_period": "45s"}
    (root / "docker" / "docker-compose.vllm.yml").write_text(rendered)
    merged = subprocess.run(["docker", "compose", "-f", "docker-compose.yml", "-f", "docker-compose.vllm.yml",
                             "config", "--format", "json"], cwd=root / "docker", capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    backend = json.loads(merged.stdout)["services"]["backend"]
    assert backend["stop_grace_period"] == "45s" and backend["image"] == "graphrag-backend:local"
