"""A load generator for LLM servers: OpenAI SSE (vLLM, Ollama's /v1) and Ollama's native NDJSON.

One asyncio loop, raw HTTP/1.1 over keep-alive connections (no client library between the socket and
the clock): each chunk is time-stamped with perf_counter_ns as its bytes are read. Metrics follow
`vllm bench serve`'s definitions (FACTS.md):

    TTFT  request sent → first chunk with output: content, or a thinking model's reasoning
    TTFA  request sent → first token of the answer itself (after Qwen3's thinking: delta.reasoning, or a
          <think>…</think> block in content) — what a client that drops reasoning (ChatOpenAI) waits for
    ITL   time between consecutive output chunks
    TPOT  (E2E − TTFT) / (output tokens − 1)
    E2E   request sent → last byte
    output throughput = output tokens / wall time of the run

Token counts come from the server (usage / eval_count), never from chunk counts. Every request is
bounded in time; the run is bounded in count or duration.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

WORDS = ("graph entity relation source answer question context document node edge "
         "그래프 개체 관계 출처 답변 질문 문서").split()


@dataclass
class RequestResult:
    ok: bool
    start_ns: int
    end_ns: int = 0
    first_token_ns: int | None = None  # first output: content or reasoning
    first_answer_ns: int | None = None  # first token of the answer (outside the thinking)
    chunk_ns: list[int] = field(default_factory=list)  # arrival of each output chunk
    reasoning_chunks: int = 0  # chunks of thinking (delta.reasoning, Ollama's message.thinking, a <think> block)
    splitter: object = None  # a ThinkSplitter while the answer has not started
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str = ""  # kind: refused | http_4xx | http_5xx | disconnect | timeout | protocol
    text: list[str] | None = None  # the answer's pieces, kept only when the next turn sends it back (history)
    words_sent: int = 0  # words in the prompt: the server must count at least this many prompt tokens
    question: int | None = None  # GraphRAG fan-out: the user question this map or reduce call belongs to
    stage: str = ""  # "map" | "reduce" in a fan-out

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_ns is None else (self.first_token_ns - self.start_ns) / 1e9

    @property
    def ttfa_s(self) -> float | None:
        return None if self.first_answer_ns is None else (self.first_answer_ns - self.start_ns) / 1e9

    @property
    def e2e_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def itls_s(self) -> list[float]:
        return [(b - a) / 1e9 for a, b in zip(self.chunk_ns, self.chunk_ns[1:])]

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """mean, median, p90, p95, p99 (linear interpolation, as numpy's default)."""
    if not values:
        return {k: None for k in ("mean", "median", "p90", "p95", "p99")}
    data = sorted(values)

    def pct(p: float) -> float:
        k = (len(data) - 1) * p / 100
        lo, hi = int(k), min(int(k) + 1, len(data) - 1)
        return data[lo] + (data[hi] - data[lo]) * (k - lo)

    return {"mean": statistics.fmean(data), "median": pct(50), "p90": pct(90), "p95": pct(95), "p99": pct(99)}


def summarize(results: list[RequestResult], wall_s: float, target_concurrency: int | None = None) -> dict:
    ok = [r for r in results if r.ok]
    ms = lambda xs: {k: (None if v is None else round(v * 1000, 3)) for k, v in percentiles(xs).items()}  # noqa: E731
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    tpots = [r.tpot_s for r in ok if r.tpot_s]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
    busy = sum(r.e2e_s for r in results)
    summary = {
        "requests": len(results), "completed": len(ok), "errors": errors, "wall_s": round(wall_s, 3),
        "ttft_ms": ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "ttfa_ms": ms([r.ttfa_s for r in ok if r.ttfa_s is not None]),
        "thinking": {"requests": sum(1 for r in ok if r.reasoning_chunks),
                     "without_answer": sum(1 for r in ok if r.first_answer_ns is None)},
        "itl_ms": ms([x for r in ok for x in r.itls_s]),
        "tpot_ms": ms(tpots),
        "e2e_ms": ms([r.e2e_s for r in ok]),
        "output_tokens": out_tokens,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "output_tokens_per_s": round(out_tokens / wall_s, 2) if wall_s else None,
        "requests_per_s": round(len(ok) / wall_s, 3) if wall_s else None,
        "per_user_output_tokens_per_s": percentiles([1 / t for t in tpots])["median"] if tpots else None,
        "achieved_concurrency": round(busy / wall_s, 2) if wall_s else None,
        "sustained_concurrency": sustained_concurrency(results, target_concurrency),
    }
    if target_concurrency:
        summary["target_concurrency"] = target_concurrency
    # The names phase4's gates read.
    summary["metrics"] = {
        "ttft_p99_ms": summary["ttft_ms"]["p99"],
        "ttfa_p99_ms": summary["ttfa_ms"]["p99"],
        "e2e_p99_ms": summary["e2e_ms"]["p99"],
        "per_user_output_tokens_per_s": (round(summary["per_user_output_tokens_per_s"], 2)
                                         if summary["per_user_output_tokens_per_s"] else None),
        "output_tokens_per_s": summary["output_tokens_per_s"],
        "error_rate": round((len(results) - len(ok)) / len(results), 4) if results else None,
    }
    return summary


def progress_line(results: list[RequestResult], in_flight: int, now_ns: int | None = None,
                  window_s: float = 5.0) -> str:
    """The live line on stderr: requests done and in flight, TTFT and tokens/s over the last seconds."""
    now = time.perf_counter_ns() if now_ns is None else now_ns
    recent = [r for r in results if r.ok and r.end_ns >= now - window_s * 1e9]
    ttfts = [r.ttft_s for r in recent if r.ttft_s is not None]
    tokens = sum(r.output_tokens or 0 for r in recent)
    errors = sum(1 for r in results if not r.ok)
    ttft = f"TTFT p50 {statistics.median(ttfts) * 1000:.0f} ms" if ttfts else "TTFT -"
    return (f"{len(results)} done, {in_flight} in flight; last {window_s:g} s: {ttft}, {tokens / window_s:.0f} tok/s"
            + (f"; {errors} errors" if errors else ""))


def sustained_concurrency(results: list[RequestResult], concurrency: int | None = None) -> float | None:
    """Requests in flight, time-averaged from the first start until the generator could no longer keep
    every stream busy — the moment the first stream ran out of work (the `concurrency`-th latest end),
    or without a concurrency the last start: whether it kept the concurrency asked for, leaving out the
    run's ramp-down."""
    if len(results) < 2:
        return None
    t0 = min(r.start_ns for r in results)
    ends = sorted(r.end_ns for r in results)
    t1 = ends[-concurrency] if concurrency and len(ends) >= concurrency else max(r.start_ns for r in results)
    if t1 <= t0:
        return None
    busy = sum(max(0, min(r.end_ns, t1) - max(r.start_ns, t0)) for r in results)
    return round(busy / (t1 - t0), 2)


# ---- the client ------------------------------------------------------------------------------------
@dataclass
class Target:
    url: str  # base, e.g. http://127.0.0.1:8001
    api: str  # openai | ollama
    model: str
    api_key: str | None = None

    def request(self, messages: list[dict], max_tokens: int, ignore_eos: bool) -> tuple[str, bytes]:
        if self.api == "openai":
            body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "stream": True,
                    "stream_options": {"include_usage": True}}
            if ignore_eos:
                body["ignore_eos"] = True
            return "/v1/chat/completions", json.dumps(body).encode()
        body = {"model": self.model, "messages": messages, "stream": True,
                "options": {"num_predict": max_tokens}}
        return "/api/chat", json.dumps(body).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _read_body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]):
    """Yield the response body in pieces as they arrive (chunked or content-length)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("closed mid-body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    else:
        remaining = int(headers.get("content-length", "0"))
        while remaining > 0:
            data = await reader.read(min(65536, remaining))
            if not data:
                raise ConnectionError("closed mid-body")
            remaining -= len(data)
            yield data


async def send_one(conn: Connection, target: Target, messages: list[dict], max_tokens: int,
                   ignore_eos: bool, timeout: float, keep_text: bool = False) -> RequestResult:
    path, body = target.request(messages, max_tokens, ignore_eos)
    head = (f"POST {path} HTTP/1.1\r\nHost: {conn.host}:{conn.port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            + (f"authorization: Bearer {target.api_key}\r\n" if target.api_key else "") + "\r\n").encode()
    result = RequestResult(ok=False, start_ns=time.perf_counter_ns(), text=[] if keep_text else None,
                           words_sent=words_in(messages))
    try:
        await asyncio.wait_for(_exchange(conn, target, head + body, result), timeout)
    except asyncio.TimeoutError:
        result.error = "timeout"
        conn.close()
    except ConnectionRefusedError:
        result.error = "refused"
        conn.close()
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        result.error = "disconnect"
        conn.close()
    except (ValueError, KeyError):
        result.error = "protocol"
        conn.close()
    result.end_ns = result.end_ns or time.perf_counter_ns()
    return result


async def _exchange(conn: Connection, target: Target, payload: bytes, result: RequestResult) -> None:
    await conn.open()
    result.start_ns = time.perf_counter_ns()
    conn.writer.write(payload)
    await conn.writer.drain()
    status_line = await conn.reader.readline()
    if not status_line:
        raise ConnectionError("closed before the status line")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await conn.reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    buffer = b""
    done = False
    async for piece in _read_body_chunks(conn.reader, headers):
        now = time.perf_counter_ns()
        if status != 200:
            continue
        buffer += piece
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            line = line.strip()
            if not line:
                continue
            done = _handle_line(target.api, line, now, result) or done
    result.end_ns = time.perf_counter_ns()
    if headers.get("connection", "").lower() == "close":
        conn.close()
    if status != 200:
        result.error = f"http_{status // 100}xx"
        return
    if not done:
        raise ConnectionError("stream ended before its last event")
    result.ok = True


def _handle_line(api: str, line: bytes, now: int, result: RequestResult) -> bool:
    """Process one SSE/NDJSON line; True when it was the stream's final event."""
    if api == "openai":
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        chunk = json.loads(data)
        if chunk.get("usage"):
            result.prompt_tokens = chunk["usage"].get("prompt_tokens")
            result.output_tokens = chunk["usage"].get("completion_tokens")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            _output(result, delta.get("content"), delta.get("reasoning") or delta.get("reasoning_content"), now)
        return False
    obj = json.loads(line)
    message = obj.get("message") or {}
    _output(result, message.get("content") or obj.get("response"), message.get("thinking") or obj.get("thinking"),
            now)
    if obj.get("done"):
        result.prompt_tokens = obj.get("prompt_eval_count")
        result.output_tokens = obj.get("eval_count")
        return True
    return False


def _output(result: RequestResult, content: str | None, reasoning: str | None, now: int) -> None:
    """One chunk's output: time-stamped whether it is thinking or answer; the answer's first token found
    past a raw <think> block (content is split only until the answer starts: the hot path stays cheap)."""
    if not (content or reasoning):
        return
    result.first_token_ns = result.first_token_ns or now
    result.chunk_ns.append(now)
    if reasoning:
        result.reasoning_chunks += 1
    if not content:
        return
    if result.first_answer_ns is None:
        if result.splitter is None:
            from migrator.adapters.http import ThinkSplitter

            result.splitter = ThinkSplitter()
        thinking, answer = result.splitter.feed(content)
        if thinking:
            result.reasoning_chunks += 1
        if answer.strip():
            result.first_answer_ns, result.splitter = now, None
    if result.text is not None:
        result.text.append(content)


def synthetic_messages(words: int, seed: int, vocabulary: tuple[str, ...] | None = None) -> list[dict]:
    rng = random.Random(seed)
    pool = vocabulary or WORDS
    return [{"role": "user", "content": " ".join(rng.choice(pool) for _ in range(max(1, words)))}]


# Candidates for an exact-length prompt vocabulary: common words most tokenizers keep whole.
ONE_TOKEN_CANDIDATES = tuple(("the of and to in is that for on with as by at from this are be was it an or which "
                              "their has have not graph entity relation source answer question context document "
                              "node edge data model system time world people city water year day work school "
                              "language music history science").split())


def fit_prompt(target: Target, input_tokens: int) -> tuple[int, tuple[str, ...] | None, str] | None:
    """(words, vocabulary, how) for synthetic prompts of `input_tokens` as the served model's tokenizer counts
    them (vLLM's /tokenize, chat template included). "exact": the vocabulary holds words that are one token
    each after a space, so every mix of them has the same count (any real model's tokenizer has plenty).
    "mean": too few such words (a toy tokenizer): the word count is fitted on the average of eight prompts.
    None without /tokenize (Ollama): one word per token."""
    from migrator.adapters.http import OpenAIServer

    if target.api != "openai":
        return None
    server = OpenAIServer(target.url, target.api_key)

    def count(text: str) -> int | None:
        probe = server.tokenize(target.model, [{"role": "user", "content": text}], timeout=10)
        return probe.body["count"] if probe.ok else None

    one = count("the")
    if one is None:
        return None
    single = tuple(w for w in ONE_TOKEN_CANDIDATES if count(w) == one and count(f"{w} {w}") == one + 1
                   and count(f"{w} {w} {w}") == one + 2)
    if len(single) >= 8:  # enough to keep prompts distinct (no prefix-cache hits between requests)
        words = max(1, input_tokens - (one - 1))
        if count(synthetic_messages(words, 1, single)[0]["content"]) == input_tokens:
            return words, single, "exact"
    words = input_tokens
    for _ in range(4):
        counts = [count(synthetic_messages(words, seed)[0]["content"]) for seed in range(8)]
        if None in counts:
            return None
        mean = sum(counts) / len(counts)
        if abs(mean - input_tokens) <= max(1.0, 0.01 * input_tokens):
            break
        words = max(1, round(words * input_tokens / mean))
    return words, None, "mean"


def words_in(messages: list[dict]) -> int:
    """Words sent in a request: a lower bound on its prompt tokens for any tokenizer (a word is ≥ 1 token)."""
    return sum(len(str(m.get("content", "")).split()) for m in messages)


@dataclass
class LoadSpec:
    requests: int = 50
    duration_s: float | None = None
    concurrency: int | None = 8
    rate: float | None = None  # requests/s; with poisson, the mean rate
    poisson: bool = False
    input_tokens: int = 128
    output_tokens: int = 64
    ignore_eos: bool = True
    timeout_s: float = 120.0
    warmup: int = 1  # warm-up rounds (not counted): each sends as many 4-token requests at once as the run will
    seed: int = 0
    users: int | None = None  # users instead of streams: turn, think, next turn with the history
    fanout: int = 0  # GraphRAG-shaped: each user question = this many parallel calls (map), then one (reduce)
    prompt_words: int | None = None  # words per synthetic prompt; set by fit_prompt() to hit input_tokens exactly
    prompt_vocabulary: tuple[str, ...] | None = None  # one-token words (fit_prompt): every prompt the same count
    turns: int = 1  # turns per conversation (a user starts a new one after the last)
    think_s: float = 0.0  # mean reading time between a user's turns (uniform 0.5–1.5 × this)


async def run_load(target: Target, spec: LoadSpec, prompts: list[list[dict]] | None = None,
                   on_progress=None) -> dict:
    """One run, summarised, with its trust checks."""
    results, wall = await execute(target, spec, prompts, on_progress)
    return summarize_run(results, wall, spec)


async def execute(target: Target, spec: LoadSpec, prompts: list[list[dict]] | None = None,
                  on_progress=None, should_stop=None) -> tuple[list[RequestResult], float]:
    """One run: every request's timeline and the wall time. `should_stop(results)` ends it early
    (checked before each new request); `on_progress(results, in_flight)` is called once a second from a
    task of its own, never between a response and the next request. The garbage collector is paused for
    the run: in a process with a large heap (the CLI's), a full collection stalls the loop mid-stream."""
    import gc

    collecting = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return await _execute(target, spec, prompts, on_progress, should_stop)
    finally:
        gc.unfreeze()
        if collecting:
            gc.enable()


async def _execute(target: Target, spec: LoadSpec, prompts: list[list[dict]] | None, on_progress,
                   should_stop) -> tuple[list[RequestResult], float]:
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    prompt_at = (lambda i: prompts[i % len(prompts)]) if prompts else (
        lambda i: synthetic_messages(spec.prompt_words or spec.input_tokens, spec.seed + i, spec.prompt_vocabulary))
    width = spec.users or spec.concurrency or 1
    warm = [Connection(host, port) for _ in range(width)]
    for _ in range(spec.warmup):  # the server sees the run's batch size before anything is counted
        await asyncio.gather(*(send_one(c, target, prompt_at(i), 4, spec.ignore_eos, spec.timeout_s)
                               for i, c in enumerate(warm)))
    for c in warm:
        c.close()

    results: list[RequestResult] = []
    in_flight = [0]

    async def send(conn: Connection, messages: list[dict], keep_text: bool = False) -> RequestResult:
        in_flight[0] += 1
        try:
            return await send_one(conn, target, messages, spec.output_tokens, spec.ignore_eos, spec.timeout_s,
                                  keep_text)
        finally:
            in_flight[0] -= 1

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1.0)
            on_progress(results, in_flight[0])

    tick = asyncio.create_task(ticker()) if on_progress else None
    start = time.perf_counter()
    deadline = start + spec.duration_s if spec.duration_s else None
    issued = 0

    def more() -> bool:
        if should_stop is not None and should_stop(results):
            return False
        if deadline is not None:
            return time.perf_counter() < deadline and issued < (spec.requests or 10**9)
        return issued < spec.requests

    questions = [0]

    async def fan_out(conn: Connection, map_conns: list[Connection], history: list[dict]) -> RequestResult:
        """One GraphRAG question: `fanout` calls at once (map), then one call combining their answers (reduce)."""
        nonlocal issued
        question, first = questions[0], issued
        questions[0] += 1
        issued += spec.fanout + 1
        maps = await asyncio.gather(*(send(c, history + prompt_at(first + k), keep_text=True)
                                      for k, c in enumerate(map_conns)))
        partial = "\n".join("".join(m.text or []) for m in maps)
        for m in maps:
            m.question, m.stage, m.text = question, "map", None
        reduce = await send(conn, history + [{"role": "user", "content": "Answer from these notes:\n" + partial}],
                            keep_text=spec.turns > 1)
        reduce.question, reduce.stage = question, "reduce"
        results.extend(maps)
        return reduce

    if spec.users:
        async def user(u: int) -> None:
            nonlocal issued
            conn, rng, history, turn = Connection(host, port), random.Random(spec.seed * 7919 + u), [], 0
            map_conns = [Connection(host, port) for _ in range(spec.fanout)]
            def room() -> bool:  # a fan-out question is sent whole or not at all
                return not spec.fanout or spec.duration_s is not None or issued + spec.fanout + 1 <= spec.requests

            while more() and room():
                if turn % spec.turns == 0:
                    history = []  # a new conversation
                if spec.fanout:
                    messages = history + prompt_at(issued)
                    r = await fan_out(conn, map_conns, history)
                else:
                    i = issued
                    issued += 1
                    messages = history + prompt_at(i)
                    r = await send(conn, messages, keep_text=spec.turns > 1)
                results.append(r)
                turn += 1
                if spec.turns > 1:
                    history = messages + [{"role": "assistant", "content": "".join(r.text or [])}]
                    r.text = None  # kept for the next turn only
                if spec.think_s and more():
                    await asyncio.sleep(spec.think_s * rng.uniform(0.5, 1.5))
            for c in [conn, *map_conns]:
                c.close()

        await asyncio.gather(*(user(u) for u in range(spec.users)))
    elif spec.rate:
        rng = random.Random(spec.seed)
        pool: list[Connection] = []
        tasks = []

        async def one(i: int) -> None:
            conn = pool.pop() if pool else Connection(host, port)
            r = await send(conn, prompt_at(i))
            results.append(r)
            pool.append(conn)

        next_at = time.perf_counter()
        while more():
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(issued)))
            issued += 1
            next_at += rng.expovariate(spec.rate) if spec.poisson else 1 / spec.rate
        await asyncio.gather(*tasks)
        for c in pool:
            c.close()
    else:
        async def worker() -> None:
            nonlocal issued
            conn = Connection(host, port)
            while more():
                i = issued
                issued += 1
                results.append(await send(conn, prompt_at(i)))
            conn.close()

        await asyncio.gather(*(worker() for _ in range(spec.concurrency or 1)))
    wall = time.perf_counter() - start
    if tick is not None:
        tick.cancel()
    return results, wall


def summarize_questions(results: list[RequestResult], fanout: int) -> dict:
    """Per user question of a fan-out: first map call sent → reduce call's last byte; failed if any call failed."""
    spans: dict[int, list[RequestResult]] = {}
    for r in results:
        if r.question is not None:
            spans.setdefault(r.question, []).append(r)
    done = [calls for calls in spans.values() if any(c.stage == "reduce" for c in calls)]
    ok = [calls for calls in done if all(c.ok for c in calls)]
    e2e = [(max(c.end_ns for c in calls) - min(c.start_ns for c in calls)) / 1e9 for calls in ok]
    return {"fanout": fanout, "count": len(done), "failed": len(done) - len(ok),
            "e2e_ms": {k: (None if v is None else round(v * 1000, 3)) for k, v in percentiles(e2e).items()}}


def summarize_run(results: list[RequestResult], wall: float, spec: LoadSpec) -> dict:
    summary = summarize(results, wall, spec.concurrency if not spec.rate and not spec.users else None)
    if spec.users:
        summary.update(target_users=spec.users, turns=spec.turns, think_s=spec.think_s)
    if spec.fanout:
        summary["questions"] = summarize_questions(results, spec.fanout)
        summary["metrics"]["question_e2e_p99_ms"] = summary["questions"]["e2e_ms"]["p99"]
    # Trust checks before a number is believed: the server's own counts against what was asked.
    asked = spec.output_tokens
    short = [r for r in results if r.ok and spec.ignore_eos and r.output_tokens is not None and r.output_tokens != asked]
    # A server that reports fewer prompt tokens than words were sent cut the prompt (Ollama: num_ctx).
    cut = [r for r in results if r.ok and r.prompt_tokens is not None and r.prompt_tokens < r.words_sent]
    summary["trust"] = {
        "prompt_truncated": len(cut),
        "output_tokens_mismatch": len(short),
        "note": "; ".join(n for n in (
            f"{len(cut)} prompts were cut by the server (fewer prompt tokens counted than words sent: "
            "Ollama truncates to num_ctx and then looks fast)" if cut else "",
            "the server ignored max_tokens/ignore_eos for some requests (Ollama's /v1 ignores ignore_eos)"
            if short else "") if n),
    }
    if spec.concurrency and summary.get("sustained_concurrency") is not None and not spec.rate and not spec.users:
        summary["trust"]["concurrency_ratio"] = round(summary["sustained_concurrency"] / spec.concurrency, 3)
    return summary


def calibrate(concurrency: int, output_tokens: int = 8, requests: int | None = None) -> dict:
    """The client's own overhead at this concurrency: our median TTFT against a local ground-truth server's
    true one (`migrator.sim.truth`, its own process, TTFT 20 ms). Every request's measured interval contains
    the server's, so the difference is what this client and the loopback add."""
    import subprocess
    import sys
    import urllib.request

    from migrator.adapters.net import free_port, wait_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "migrator.sim.truth", "--port", str(port), "--ttft-ms", "20",
                               "--itl-ms", "2"], stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, 10):
            return {"overhead_ms": None, "note": "the calibration server did not start"}
        n = requests or max(4 * concurrency, 32)
        spec = LoadSpec(requests=n, concurrency=concurrency, output_tokens=output_tokens)
        summary = asyncio.run(run_load(Target(f"http://127.0.0.1:{port}", "openai", "truth"), spec))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/truth?last={n}", timeout=10) as r:
            truth = json.load(r)
        client = summary["ttft_ms"]["median"]
        return {"overhead_ms": round(client - truth["ttft_ms_median"], 3), "concurrency": concurrency,
                "client_ttft_ms": client, "true_ttft_ms": round(truth["ttft_ms_median"], 3), "requests": n}
    finally:
        server.terminate()
        server.wait()
