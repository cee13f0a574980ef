"""Integration checks (plan §7.2), each recorded with its measurement.

Against vLLM directly (phase3, and staging's vLLM): streaming (chunks arrive one by one, TTFT; a thinking
model's reasoning counts as output, and is said so), a Korean prompt (Hangul ratio of the answer on a real
model; framing and UTF-8 only on a random-weight test model — said so), errors surface as vLLM's HTTP errors
instead of hangs (wrong model name, over-long prompt), a tool call and a json_schema answer accepted when the
backend uses them, and the longest prompt the operator supplies fits max_model_len (Ollama silently truncated
such prompts; vLLM refuses them).

Through a backend on vLLM, when `backend.chat_path` is set (staging's backend; production's right after
phase4's switch when there is no staging): a streamed answer, two turns of one conversation, and an
answer, not a hang, when vLLM refuses a prompt.
"""

from __future__ import annotations

import time

from migrator.adapters import vllm as vllm_launch
from migrator.core.engine import Context, Outcome, Step

KOREAN_PROMPT = "그래프 기반 검색이 무엇인지 한국어로 두 문장으로 설명해 주세요."


def hangul_ratio(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if "\uac00" <= c <= "\ud7a3" or "\u3131" <= c <= "\u318e") / len(letters)


class IntegrationChecks(Step):
    id = "phase3.integration"
    title = "integration checks (streaming, Korean, errors, longest prompt, backend)"
    read_only = True

    def __init__(self, prompt_file: str | None = None, through_backend: bool = True):
        self.prompt_file = prompt_file
        self.through_backend = through_backend
        if not through_backend:
            self.title = "integration checks against vLLM (streaming, Korean, errors, longest prompt)"

    def check(self, ctx: Context) -> Outcome:
        failures, notes, m = self.vllm_checks(ctx)
        if self.through_backend:
            failures += backend_checks(ctx, m)
        summary = "; ".join(notes)
        if failures:
            return Outcome.failed("; ".join(failures), "see each check; re-run after fixing", **m)
        return Outcome.passed(f"stream TTFT {m['ttft_ms']} ms, {m['stream_content_chunks']} chunks"
                              + (f"; {summary}" if summary else ""), **m)

    def vllm_checks(self, ctx: Context) -> tuple[list[str], list[str], dict]:
        from migrator.adapters.http import OpenAIServer
        from migrator.core.errors import MigrateError
        from migrator.files.prompts import read_prompt_file

        v, name = ctx.settings.vllm, ctx.settings.model.served_name
        server = OpenAIServer(v.url, vllm_launch.api_key(ctx.settings))
        failures, notes, m = [], [], {}

        s = server.stream(name, [{"role": "user", "content": "Describe a knowledge graph."}], max_tokens=16,
                          timeout=60, extra={"ignore_eos": True})
        # Output is content and a thinking model's reasoning alike (TTFT is the first of either).
        m.update(stream_ok=s.ok, stream_content_chunks=s.content_chunks, ttft_ms=round(s.ttft_ms or 0, 1),
                 stream_completion_tokens=s.usage.get("completion_tokens"))
        if s.reasoning_chunks or s.reasoning_text:
            m.update(stream_reasoning_chunks=s.reasoning_chunks,
                     first_answer_ms=None if s.first_answer_ms is None else round(s.first_answer_ms, 1))
            notes.append(thinking_note(ctx, s))
        if not (s.ok and s.output_chunks >= 2):
            failures.append(f"streaming: {s.error or f'{s.output_chunks} output chunk(s)'}")

        k = server.stream(name, [{"role": "user", "content": KOREAN_PROMPT}], max_tokens=32, timeout=60)
        said = k.answer or k.reasoning_text  # a thinking model may not reach its answer in 32 tokens
        ratio = hangul_ratio(k.answer) if k.answer.strip() else None
        m.update(korean_ok=k.ok, korean_hangul_ratio=None if ratio is None else round(ratio, 2))
        if not k.ok or "\ufffd" in said and ctx.settings.model.real_weights:
            failures.append(f"Korean prompt: {k.error or 'broken UTF-8 in the answer'}")
        elif not ctx.settings.model.real_weights:
            notes.append("Korean: framing and encoding only (model.real_weights is false: random test weights)")
        elif ratio is None:
            notes.append("Korean: the answer did not start within 32 tokens (all thinking): encoding checked only")
        elif ratio < 0.5:
            failures.append(f"Korean prompt answered in {ratio:.0%} Hangul")

        failures += tool_checks(ctx, server, m)

        start = time.monotonic()
        wrong = server.complete(name + "-no-such-model", "hi", timeout=30)
        m["wrong_model_status"] = wrong.status
        if wrong.status != 404:
            failures.append(f"wrong model name: expected vLLM's 404, got {wrong.describe()}")
        long_prompt = "word " * (v.max_model_len * 2)
        too_long = server.complete(name, long_prompt, timeout=60)
        m.update(over_long_status=too_long.status, error_checks_s=round(time.monotonic() - start, 2))
        if too_long.status != 400:
            failures.append(f"over-long prompt: expected vLLM's 400, got {too_long.describe()}")

        if self.prompt_file:
            try:
                prompts = read_prompt_file(ctx.path(self.prompt_file))
            except MigrateError as exc:
                return failures + [f"--prompt-file: {exc.message}"], notes, m
            counts = []
            for messages in prompts:  # counted with the chat template, as the completion will count them
                p = server.tokenize(name, messages, timeout=30)
                if not p.ok:
                    failures.append(f"/tokenize: {p.describe()}")
                    break
                counts.append(p.body["count"])
            if counts:
                longest = max(counts)
                m.update(longest_prompt_tokens=longest, prompts_checked=len(counts))
                if longest >= v.max_model_len:
                    failures.append(f"the longest prompt has {longest} tokens; max_model_len is {v.max_model_len}"
                                    " (Ollama truncated it silently; vLLM refuses it)")

        return failures, notes, m


def thinking_note(ctx: Context, s) -> str:
    """What the operator should know when vLLM's model thinks (Qwen3 with thinking left on)."""
    if s.reasoning_chunks:
        return (f"the model thinks: {s.reasoning_chunks} of its output chunks were delta.reasoning "
                "(model.reasoning: parse), which ChatOpenAI drops — the backend's max_tokens must cover the "
                "thinking and the answer, or answers come back empty; model.reasoning: off turns it off")
    return ("the model thinks in its content (<think>…</think>, model.reasoning: raw), as on Ollama: the "
            "backend shows or strips it as it did")


def tool_checks(ctx: Context, server, m: dict) -> list[str]:
    """When the backend calls tools or asks for structured output (vllm.tool_calling): a tool call and a
    json_schema answer must be accepted — vLLM started without --enable-auto-tool-choice answers HTTP 400."""
    from migrator.adapters.http import request

    evidence = vllm_launch.tool_calling_evidence(ctx.settings, ctx.project)
    if not evidence:
        return []
    name, url, failures = ctx.settings.model.served_name, server.base_url + "/v1/chat/completions", []
    ask = [{"role": "user", "content": "Which entities does the graph link to Seoul?"}]
    tool = {"type": "function", "function": {
        "name": "lookup_entity", "description": "Look an entity up in the knowledge graph.",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}
    call = request("POST", url, 60, {"model": name, "messages": ask, "tools": [tool], "tool_choice": "auto",
                                     "max_tokens": 64}, server.headers)
    m.update(tool_call_status=call.status, tool_calling_because=evidence[0])
    if call.status != 200:
        failures.append(f"tool call ({evidence[0]}): expected 200, got {call.describe()}: "
                        f"{_error_message(call.body)} — vLLM needs --enable-auto-tool-choice --tool-call-parser "
                        "hermes (vllm.tool_calling)")
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    structured = request("POST", url, 60, {"model": name, "messages": ask, "max_tokens": 64, "response_format": {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}}, server.headers)
    m["json_schema_status"] = structured.status
    if structured.status != 200:
        failures.append(f"json_schema response: expected 200, got {structured.describe()}: "
                        f"{_error_message(structured.body)}")
    return failures


def _error_message(body) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else (error or body)
    return str(message)[:200]


def backend_checks(ctx: Context, m: dict) -> list[str]:
    """Through the backend (which must be on vLLM): what is wrong, measurements added to `m`."""
    from migrator.adapters.http import request

    v, b, failures = ctx.settings.vllm, ctx.settings.backend, []
    chat_path = b.chat_path
    if not chat_path:
        return failures
    url = ctx.settings.project.backend_url.rstrip("/") + chat_path
    status, chunks, ttft_ms, _, cut = _stream_text(url, {b.chat_message_field: "What does the graph connect?"})
    m.update(backend_status=status, backend_chunks=chunks, backend_ttft_ms=ttft_ms)
    if status != 200 or not chunks or cut:
        failures.append(f"backend {chat_path}: HTTP {status}, {chunks} chunk(s)" + (f", {cut}" if cut else ""))
    # Chat history through the backend: two turns of one conversation.
    session = f"graphrag-migrate-probe-{int(time.time())}"
    first = _stream_text(url, {b.chat_message_field: "Remember the code word: orchid.",
                               b.chat_session_field: session})
    second = _stream_text(url, {b.chat_message_field: "What was the code word?",
                                b.chat_session_field: session})
    m.update(history_turn_statuses=[first[0], second[0]])
    if first[0] != 200 or second[0] != 200 or first[4] or second[4]:
        failures.append(f"multi-turn probe: HTTP {first[0]}, {second[0]}"
                        + "".join(f", {t[4]}" for t in (first, second) if t[4]))
    elif ctx.settings.model.real_weights and "orchid" not in (second[3] or "").lower():
        failures.append("multi-turn probe: the second answer does not recall the first turn")
    if b.history_path:
        h = request("GET", ctx.settings.project.backend_url.rstrip("/") + b.history_path.format(session=session))
        turns = h.body.get("turns", []) if isinstance(h.body, dict) else (h.body if isinstance(h.body, list) else [])
        m["history_turns"] = len(turns)
        if len(turns) < 4:
            failures.append(f"history: {len(turns)} turns kept after two questions (expected 4)")
    # The backend's error path: a question vLLM must refuse (over max_model_len) gets an answer, not a hang.
    start = time.monotonic()
    e = _stream_text(url, {b.chat_message_field: "word " * (v.max_model_len * 2)})
    m.update(backend_error_status=e[0], backend_error_s=round(time.monotonic() - start, 2))
    if e[4]:  # the backend dropped the connection: it did not hang, but its client sees a broken reply
        m["backend_error_cut"] = e[4]
    if e[0] is None:
        failures.append(f"backend {chat_path}: no answer when vLLM refuses an over-long prompt (hang)")
    return failures


def _stream_text(url: str, body: dict) -> tuple[int | None, int, float | None, str, str]:
    """POST and read the streamed reply: (status, chunks received, ms to the first chunk, text, cut).
    `cut` says why a reply whose status came was not read to its end: a backend whose stream raises after
    the headers went (FastAPI's StreamingResponse when the LLM refuses) drops the connection mid-body —
    an answer, not a hang, but not a whole one either. "" when the reply ended properly."""
    from migrator.adapters.http import post_and_read

    reply = post_and_read(url, body, 60)
    if reply.status is None:
        return None, 0, None, "", ""
    cut = (f"the stream was cut off after {len(reply.body)} bytes ({type(reply.cut).__name__})"
           if reply.cut is not None else "")
    return reply.status, reply.chunks, reply.first_chunk_ms, reply.body.decode("utf-8", errors="replace"), cut
