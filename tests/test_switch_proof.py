"""phase4 proves the switch through the backend's own chat endpoint, judged by vLLM's counters (issue "Real
projects", item 1): whatever /health looks like, a mis-wired backend that only *says* llm_backend=vllm is
rolled back, and phase4 touches nothing unless phases 1–3 completed and the switch can be proven."""

import json

import pytest

from conftest import QUICK_WATCH, prepare_switch, run_cli, tree_digest
from migrator.adapters.http import OpenAIServer, get, request
from migrator.app import api
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger
from migrator.files.envfile import EnvFile
from phases.backend import prove_llm
from phases.phase4 import backend_answers


def llm_backend(project) -> str | None:
    return EnvFile.from_bytes((project / "docker" / ".env").read_bytes()).get("LLM_BACKEND")


def phase4_steps(project) -> dict:
    return Ledger(project).read_state()["phases"]["phase4"]["steps"]


def audit(project) -> list[dict]:
    return Ledger(project).read_audit()


def rollback_actions(project) -> dict:
    done = run_cli("--project", str(project), "--json", "rollback", "--wait", "10")
    assert done.exit_code == 0, done.stdout
    return {a["name"]: a for a in json.loads(done.stdout)["actions"]}


# ---- the sandbox backend's real-world shapes ---------------------------------------------------------
def _stand_ins(servers, tmp_path, llm_backend_value: str, *backend_args: str):
    """The vLLM simulator, the Ollama stand-in and a sandbox backend whose env file says `llm_backend_value`."""
    vllm = servers.start("migrator.sim.vllm", "--served-model-name", "m")
    ollama = servers.start("migrator.sim.ollama", "--preload")
    env = tmp_path / "backend.env"
    env.write_text(f"LLM_BACKEND={llm_backend_value}\nVLLM_BASE_URL=http://127.0.0.1:{vllm}/v1\nVLLM_MODEL=m\n"
                   f"OLLAMA_BASE_URL=http://127.0.0.1:{ollama}\n")
    backend = servers.start("migrator.sim.backend", "--env-file", str(env), *backend_args)
    return f"http://127.0.0.1:{vllm}", f"http://127.0.0.1:{backend}", env


def _served(vllm_url: str) -> float:
    from migrator.core import promql

    return promql.total(promql.parse(OpenAIServer(vllm_url).metrics_text().body), "vllm:request_success_total")


@pytest.mark.parametrize("args, health", [
    ((), {"status": "ok", "llm_backend": "vllm", "model": "m"}),
    (("--health", "plain"), {"status": "ok"}),
    (("--health", "none"), None),
])
def test_sandbox_backend_health_shapes(servers, tmp_path, args, health):
    vllm, backend, _ = _stand_ins(servers, tmp_path, "vllm", *args)
    h = get(backend + "/health")
    assert (h.body if h.ok else None) == health and (h.ok or h.status == 404)
    before = _served(vllm)
    assert request("POST", backend + "/chat", 30, {"message": "hi"}).ok
    assert _served(vllm) == before + 1  # on vLLM, as its env file says


def test_mis_wired_sandbox_backend_claims_vllm_but_talks_to_ollama(servers, tmp_path):
    vllm, backend, _ = _stand_ins(servers, tmp_path, "vllm", "--ignore-llm-backend")
    assert get(backend + "/health").body["llm_backend"] == "vllm"  # the lie a /health-only check believed
    before = _served(vllm)
    answer = request("POST", backend + "/chat", 30, {"message": "hi"})
    assert answer.ok and answer.body["answer"]
    assert _served(vllm) == before  # Ollama answered


# ---- the proof itself, against the stand-ins ---------------------------------------------------------
def test_proof_names_the_cause(servers, tmp_path):
    vllm, backend, env = _stand_ins(servers, tmp_path, "vllm", "--health", "plain")
    proven = prove_llm(backend, "/chat", "message", vllm, "vllm", 2, "after the switch")
    assert proven.ok and proven.measurements["vllm_requests_delta"] == 1, proven.message
    assert proven.measurements["vllm_generation_tokens_delta"] > 0 and proven.measurements["answer_bytes"] > 0
    assert proven.message.startswith("proven through /chat: vLLM served 1 request(s)")

    on_ollama = prove_llm(backend, "/chat", "message", vllm, "ollama", 2, "after the rollback")
    assert not on_ollama.ok and "answered through vLLM (vLLM served 1 request(s)), not Ollama" in on_ollama.message

    env.write_text(env.read_text().replace("LLM_BACKEND=vllm", "LLM_BACKEND=ollama"))
    stale = prove_llm(backend, "/chat", "message", vllm, "vllm", 2, "after the switch")
    assert not stale.ok and stale.measurements["vllm_requests_delta"] == 0
    assert stale.message == ("the backend answered but vLLM served no request: the backend is not reading "
                             "LLM_BACKEND/VLLM_BASE_URL")
    assert "vLLM's log" not in stale.fix
    back = prove_llm(backend, "/chat", "message", vllm, "ollama", 2, "after the rollback")
    assert back.ok and back.message.startswith("answered through Ollama (vLLM's request counter did not rise")

    env.write_text(env.read_text().replace("LLM_BACKEND=ollama", "LLM_BACKEND=vllm").replace(
        vllm.rsplit(":", 1)[1] + "/v1", "9/v1"))  # the backend's VLLM_BASE_URL points nowhere
    broken = prove_llm(backend, "/chat", "message", vllm, "vllm", 2, "after the switch")
    assert not broken.ok and broken.message.startswith("backend answered HTTP 503 after the switch: ")
    assert "connection refused" in broken.message.lower(), broken.message

    gone = prove_llm("http://127.0.0.1:9", "/chat", "message", vllm, "vllm", 0.5, "after the switch")
    assert not gone.ok and gone.message.startswith("backend did not answer in 0.5 s after the switch (")


# ---- phase4 on the sandbox ---------------------------------------------------------------------------
@pytest.mark.parametrize("sandbox_backend_args, health", [
    (("--health", "llm-field"), "llm_backend=vllm"), (("--health", "plain"), "plain"), (("--health", "none"), "none"),
], ids=["llm-field", "plain", "none"])
def test_the_switch_is_proven_by_vllm_counters_with_each_health_shape(sandbox, sandbox_backend_args, health, cli):
    before = tree_digest(sandbox)
    prepare_switch(sandbox)
    result = cli("--project", str(sandbox), *QUICK_WATCH, "phase4")
    assert result.exit_code == 0, result.stderr
    backend = phase4_steps(sandbox)["phase4.backend"]
    m = backend["measurements"]
    assert m["vllm_requests_delta"] >= 1 and m["vllm_generation_tokens_delta"] > 0, backend
    assert m["answer_status"] == 200 and m["answer_bytes"] > 0 and m["backend_health"] == health
    assert backend["message"].startswith("proven through /chat: vLLM served")
    assert phase4_steps(sandbox)["phase4.watch"]["status"] == "passed"  # the watch accepts each shape too
    # Rollback's own proof, pointing at Ollama: the backend answers while vLLM (stopped) serves nothing.
    probe = rollback_actions(sandbox)["backend answers"]
    assert probe["ok"] and "answered through Ollama (vLLM is down" in probe["result"], probe
    assert tree_digest(sandbox) == before


@pytest.mark.parametrize("sandbox_backend_args", [("--ignore-llm-backend",)], ids=["mis-wired"])
def test_a_mis_wired_backend_is_rolled_back_with_the_cause(sandbox, sandbox_backend_args, cli):
    """Its /health says llm_backend=vllm (the env file's value), its chat goes to Ollama: vLLM's counters
    show it, phase4 rolls back by itself and says so in words."""
    before = tree_digest(sandbox)
    prepare_switch(sandbox)
    result = cli("--project", str(sandbox), *QUICK_WATCH, "--set", "backend.wait_s=1", "phase4")
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert ("the backend answered but vLLM served no request: the backend is not reading LLM_BACKEND/VLLM_BASE_URL"
            " (its /health claims llm_backend=vllm) — rolled back automatically (back on Ollama)") in result.stderr
    assert "vLLM's log" not in result.stderr  # vLLM is healthy: it is not the one to look at
    steps = phase4_steps(sandbox)
    assert steps["phase4.backend"]["status"] == "failed" and "phase4.watch" not in steps
    m = steps["phase4.backend"]["measurements"]
    assert m["vllm_requests_delta"] == 0 and m["answer_status"] == 200 and m["backend_health"] == "llm_backend=vllm"
    assert llm_backend(sandbox) == "ollama"
    assert tree_digest(sandbox) == before  # the env file byte-identical to before the migration


def test_a_wrong_chat_path_fails_the_proof_and_rolls_back(sandbox, cli):
    prepare_switch(sandbox)
    result = cli("--project", str(sandbox), *QUICK_WATCH, "--set", "backend.chat_path=/no-such-chat", "phase4")
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "backend answered HTTP 404 after the switch: Not Found — rolled back automatically" in result.stderr
    assert "vLLM's log" not in result.stderr and llm_backend(sandbox) == "ollama"


@pytest.mark.parametrize("missing", ["phase3", "phase2"])
def test_phase4_refuses_without_the_earlier_phases_and_touches_nothing(sandbox, missing, cli):
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    if missing == "phase3":
        assert cli("--project", str(sandbox), "phase2").exit_code == 0
    else:  # phase2 failed (the backend's tests), phase3 ran
        failed = cli("--project", str(sandbox), "--set", "backend.test_command=false", "phase2")
        assert failed.exit_code == ExitCode.CHECK_FAILED
        assert cli("--project", str(sandbox), "phase3").exit_code == 0
    before, env_before = tree_digest(sandbox), (sandbox / "docker" / ".env").read_bytes()
    result = cli("--project", str(sandbox), *QUICK_WATCH, "phase4")
    assert result.exit_code == ExitCode.CHECK_FAILED
    if missing == "phase3":
        assert "phase3 has not run — nothing was touched" in result.stderr
        assert "run `graphrag-migrate phase3`" in result.stderr and "--accept-failed" not in result.stderr
    else:
        assert "phase2 failed at phase2.unit-tests (`false` failed" in result.stderr
        assert "graphrag-migrate phase4 --accept-failed phase2" in result.stderr
    steps = phase4_steps(sandbox)
    assert list(steps) == ["phase4.prerequisites"] and steps["phase4.prerequisites"]["status"] == "failed"
    assert tree_digest(sandbox) == before and (sandbox / "docker" / ".env").read_bytes() == env_before
    assert not (sandbox / "monitoring").exists()
    cli("--project", str(sandbox), "rollback", "--wait", "5")


def test_accept_failed_phase2_proceeds_with_a_warning_in_the_audit_log(sandbox, cli):
    before = tree_digest(sandbox)
    prepare_switch(sandbox)
    assert cli("--project", str(sandbox), "--set", "backend.test_command=false", "phase2").exit_code == 1
    checked = cli("--project", str(sandbox), "phase4", "--check", "--accept-failed", "phase2")
    assert "accepted by --accept-failed phase2" in checked.stderr
    assert not [e for e in audit(sandbox) if e["action"] == "accept-failed"]  # --check records nothing
    result = cli("--project", str(sandbox), *QUICK_WATCH, "phase4", "--accept-failed", "phase2")
    assert result.exit_code == 0, result.stderr
    message = phase4_steps(sandbox)["phase4.prerequisites"]["message"]
    assert "phase2 failed at phase2.unit-tests" in message and "accepted by --accept-failed phase2" in message
    accepted = [e for e in audit(sandbox) if e["action"] == "accept-failed"]
    assert len(accepted) == 1 and accepted[0]["phase"] == "phase2" and accepted[0]["user"]
    assert accepted[0]["what"].startswith("phase2 failed at phase2.unit-tests")
    assert phase4_steps(sandbox)["phase4.backend"]["measurements"]["vllm_requests_delta"] >= 1
    rollback_actions(sandbox)
    assert tree_digest(sandbox) == before


@pytest.mark.parametrize("phase", ["phase1", "phase3", "phase9"])
def test_accept_failed_takes_only_phase2(sandbox, phase, cli):
    result = cli("--project", str(sandbox), "phase4", "--accept-failed", phase)
    assert result.exit_code == ExitCode.USAGE
    assert f"--accept-failed {phase}: only phase2's failure can be accepted" in result.stderr
    assert "phase4" not in Ledger(sandbox).read_state()["phases"]


def test_without_a_chat_path_phase4_stops_before_the_switch_unless_accept_unproven(sandbox, cli):
    before = tree_digest(sandbox)
    prepare_switch(sandbox)
    no_chat = ("--set", "backend.chat_path=")
    env_before = (sandbox / "docker" / ".env").read_bytes()
    refused = cli("--project", str(sandbox), *QUICK_WATCH, *no_chat, "phase4")
    assert refused.exit_code == ExitCode.CHECK_FAILED
    assert "phase4 cannot prove the switch: backend.chat_path is empty" in refused.stderr
    assert "--accept-unproven" in refused.stderr
    assert list(phase4_steps(sandbox)) == ["phase4.prerequisites"]  # before the switch: before anything
    assert (sandbox / "docker" / ".env").read_bytes() == env_before and not (sandbox / "monitoring").exists()

    result = cli("--project", str(sandbox), *QUICK_WATCH, *no_chat, "phase4", "--accept-unproven")
    assert result.exit_code == 0, result.stderr
    assert "the switch is unproven" in result.stderr
    steps = phase4_steps(sandbox)
    assert "the switch will be unproven — accepted by --accept-unproven" in steps["phase4.prerequisites"]["message"]
    assert steps["phase4.backend"]["message"].startswith("the switch is unproven: the backend answers at")
    assert steps["phase4.backend"]["measurements"]["unproven"] is True
    assert [e for e in audit(sandbox) if e["action"] == "accept-unproven" and e["user"]]
    settings = api.settings_for(sandbox, overrides={"backend.chat_path": ""})
    report = api.rollback(sandbox, settings, wait_s=10)
    probe = next(a for a in report.actions if a.name == "backend answers")
    assert probe.ok and "not proven to be on Ollama (no backend.chat_path)" in probe.result
    assert tree_digest(sandbox) == before


def test_rollback_probe_fails_while_the_backend_still_talks_to_vllm(sandbox, servers, tmp_path):
    """Rollback's proof is the switch's, reversed: an answer that vLLM served is not an answer from Ollama."""
    vllm, backend, env = _stand_ins(servers, tmp_path, "vllm", "--health", "plain")
    settings = api.settings_for(sandbox, overrides={"project.backend_url": backend,
                                                    "vllm.port": vllm.rsplit(":", 1)[1]})
    ctx = api.context(sandbox, settings)
    ctx.memo["rollback_wait_s"] = 2
    ok, said = backend_answers(ctx)
    assert not ok and "answered through vLLM (vLLM served 1 request(s)), not Ollama after the rollback" in said
    env.write_text(env.read_text().replace("LLM_BACKEND=vllm", "LLM_BACKEND=ollama"))
    ok, said = backend_answers(ctx)
    assert ok and "answered through Ollama (vLLM's request counter did not rise" in said, said


@pytest.mark.parametrize("args, proven", [(("--health", "plain"), True), (("--ignore-llm-backend",), False)],
                         ids=["plain-health", "mis-wired"])
def test_staging_proves_its_backend_on_its_vllm_the_same_way(sandbox, servers, tmp_path, args, proven):
    """Staging's backend is held to the production proof (the real project's /health has no llm_backend)."""
    from phases import staging

    vllm, backend, _ = _stand_ins(servers, tmp_path, "vllm", *args)
    settings = api.settings_for(sandbox, overrides={"deploy.staging_backend_url": backend,
                                                    "deploy.staging_vllm_port": vllm.rsplit(":", 1)[1]})
    ctx = api.context(sandbox, settings)
    outcome = staging.Staging._backend_on_vllm(ctx, staging.staging_settings(settings))
    if proven:
        assert outcome is None
    else:
        assert not outcome.ok and "the backend answered but vLLM served no request" in outcome.message
        assert outcome.measurements["vllm_requests_delta"] == 0


# ---- a backend whose stream breaks after the headers (FastAPI StreamingResponse, the LLM refusing) -----
def _read_request(conn) -> bytes:
    """The head and the content-length body of one request (they may arrive in separate segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return data
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        more = conn.recv(65536)
        if not more:
            break
        body += more
    return head + b"\r\n\r\n" + body


def _cut_stream_server():
    """A server that answers 200 with a chunked body, sends one chunk and closes the connection without the
    last chunk — what uvicorn does when a StreamingResponse's generator raises (the fixtures' backends on an
    over-long prompt that vLLM refuses with HTTP 400). Returns (url, server)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                _read_request(conn)  # all of it: a close with unread bytes would be a reset, not the cut-off
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener


def test_a_stream_cut_off_mid_answer_is_reported_not_an_internal_error():
    from phases.backend import ask
    from phases.integration import _stream_text

    url, listener = _cut_stream_server()
    try:
        status, body, error = ask(url + "/chat", "message", "hi", timeout=5)
        assert status is None and body == b"hello" and "IncompleteRead" in error and "after 5 bytes" in error
        status, chunks, _ttft, text, cut = _stream_text(url + "/chat", {"message": "hi"})
        assert (status, chunks, text) == (200, 1, "hello")  # an answer, not a hang: the error probe passes
        assert cut == "the stream was cut off after 5 bytes (IncompleteRead)"
    finally:
        listener.close()
