"""vLLM's /tokenize through one client (OpenAIServer.tokenize), used by bench's prompt fitting and by
phase3's longest-prompt check. vLLM's own --api-key guards /v1/* only, so the simulator answers /tokenize
without the key as vLLM does; a gateway in front of vLLM that guards every path (a stand-in here) shows
whether the key is sent."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from migrator.adapters.http import OpenAIServer, get
from migrator.sim.vllm import chat_prompt_tokens, count_tokens

KEY = "sk-test-" + "0123456789abcdef"
MODEL = "m"


class Gateway:
    """A loopback reverse proxy that refuses any request without `Authorization: Bearer KEY` (401) and
    forwards the rest to `upstream`; it keeps (method, path, authorized) of every request."""

    def __init__(self, upstream_port: int):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                authorized = self.headers.get("authorization") == f"Bearer {KEY}"
                seen.append((self.command, self.path, authorized))
                if not authorized:
                    self.send_response(401)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None,
                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                self.send_header("content-type", resp.getheader("content-type") or "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sim(servers):
    """The vLLM simulator started with --api-key, as phase1 starts vLLM when vllm.api_key_env is set."""
    return servers.start("migrator.sim.vllm", "--served-model-name", MODEL, "--max-model-len", "512",
                         "--api-key", KEY)


@pytest.fixture
def gateway(sim):
    g = Gateway(sim)
    yield g
    g.close()


def test_tokenize_counts_messages_with_the_chat_template_and_a_bare_prompt_without(sim):
    server = OpenAIServer(f"http://127.0.0.1:{sim}", KEY)
    messages = [{"role": "system", "content": "graph context"}, {"role": "user", "content": "which nodes?"}]
    chat = server.tokenize(MODEL, messages)
    assert chat.ok and chat.body["count"] == chat_prompt_tokens(messages)
    bare = server.tokenize(MODEL, prompt="which nodes?")
    assert bare.ok and bare.body["count"] == count_tokens("which nodes?")
    assert chat.body["count"] > bare.body["count"]
    # The simulator, as vLLM, guards /v1/* with the key: without it a completion route is refused.
    assert get(f"http://127.0.0.1:{sim}/v1/models").status == 401
    assert OpenAIServer(f"http://127.0.0.1:{sim}", KEY).models().ok


def test_tokenize_sends_the_api_key(gateway):
    messages = [{"role": "user", "content": "hello graph"}]
    keyed = OpenAIServer(gateway.url, KEY).tokenize(MODEL, messages)
    assert keyed.ok and keyed.body["count"] == chat_prompt_tokens(messages)
    keyless = OpenAIServer(gateway.url).tokenize(MODEL, messages)
    assert not keyless.ok and keyless.status == 401
    assert gateway.seen == [("POST", "/tokenize", True), ("POST", "/tokenize", False)]


def test_tokenize_without_a_count_is_not_ok(servers):
    """Ollama has no /tokenize, and a 2xx answer without an integer count is no count either."""
    ollama = servers.start("migrator.sim.ollama")
    probe = OpenAIServer(f"http://127.0.0.1:{ollama}").tokenize(MODEL, prompt="x")
    assert not probe.ok and probe.status == 404
    # "/tokenize" lands in the query string: Ollama's /api/version answers 200 with {"version": …}, no count.
    probe = OpenAIServer(f"http://127.0.0.1:{ollama}/api/version?").tokenize(MODEL, prompt="x")
    assert probe.status == 200 and not probe.ok and "no token count" in probe.error


def test_bench_fits_synthetic_prompts_through_a_gateway_that_wants_the_key(gateway):
    from migrator.bench.loadgen import Target, fit_prompt

    words, vocabulary, how = fit_prompt(Target(gateway.url, "openai", MODEL, KEY), 100)
    assert how == "exact" and len(vocabulary) >= 8
    assert {path for _m, path, _a in gateway.seen} == {"/tokenize"} and all(a for _m, _p, a in gateway.seen)


def integration_context(project, port, monkeypatch):
    from migrator.cli.output import Output
    from migrator.core.config import Settings
    from migrator.core.engine import Context
    from migrator.core.ledger import Ledger

    monkeypatch.setenv("TEST_VLLM_KEY", KEY)
    settings = Settings()
    settings.vllm.host, settings.vllm.port, settings.vllm.max_model_len = "127.0.0.1", port, 512
    settings.vllm.api_key_env = "TEST_VLLM_KEY"
    settings.model.served_name, settings.model.real_weights = MODEL, False
    return Context(project, settings, Ledger(project), Output(quiet=True))


def test_phase3_longest_prompt_check_sends_the_api_key_to_tokenize(gateway, tmp_path, monkeypatch):
    """It sent none: behind a gateway guarding every path the check failed with "/tokenize: HTTP 401"."""
    from phases.integration import IntegrationChecks

    prompts = tmp_path / "prompts.jsonl"
    long_question = "why " * 100
    long_messages = [{"role": "system", "content": "ctx"}, {"role": "user", "content": long_question}]
    prompts.write_text('{"prompt": "short"}\n' + json.dumps({"messages": long_messages}) + "\n")
    ctx = integration_context(tmp_path, gateway.port, monkeypatch)
    outcome = IntegrationChecks(str(prompts), through_backend=False).check(ctx)
    assert outcome.ok, outcome.message
    longest = chat_prompt_tokens(long_messages)
    assert outcome.measurements["longest_prompt_tokens"] == longest and outcome.measurements["prompts_checked"] == 2
    tokenize = [a for _m, path, a in gateway.seen if path == "/tokenize"]
    assert tokenize == [True, True]
    assert all(a for _m, _p, a in gateway.seen)  # and every other probe of the check


def test_phase3_names_the_bad_line_of_the_prompt_file_as_bench_does(sim, tmp_path, monkeypatch):
    from migrator.bench import run as bench
    from migrator.core.errors import ConfigError
    from phases.integration import IntegrationChecks

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"question": "no prompt key"}\n')
    ctx = integration_context(tmp_path, sim, monkeypatch)
    outcome = IntegrationChecks(str(prompts), through_backend=False).check(ctx)
    with pytest.raises(ConfigError) as bench_error:
        bench.load_prompts(prompts)
    assert not outcome.ok and outcome.message == f"--prompt-file: {bench_error.value.message}"
    assert f"{prompts}:2 is not" in outcome.message
