"""HTTP probes of the servers in the migration: vLLM's OpenAI API, Ollama's API, the backend."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class Probe:
    """The answer of one HTTP probe; `ok` is False for any transport error or non-2xx status."""

    ok: bool
    status: int | None = None
    body: Any = None
    error: str = ""
    elapsed_ms: float = 0.0

    def describe(self) -> str:
        if self.ok:
            return f"HTTP {self.status} in {self.elapsed_ms:.0f} ms"
        return self.error or f"HTTP {self.status}"


class RequestFailed(Exception):
    """No answer at all: refused, unresolvable, timed out before the headers, reset — the message says which."""


@dataclass
class Reply:
    """A POSTed request's reply read to its end, as it streamed. `error`: no reply came (RequestFailed's
    message). `cut`: the status came but the body was cut off (the exception, with what had arrived)."""

    status: int | None
    body: bytes = b""
    chunks: int = 0
    first_chunk_ms: float | None = None
    error: str = ""
    cut: BaseException | None = None


def post_and_read(url: str, body: Any, timeout: float, headers: dict | None = None) -> Reply:
    """POST `body` as JSON and read the reply chunk by chunk to its end — the backend's chat endpoint, which
    may stream (FastAPI's StreamingResponse) or not, and may drop the connection mid-body."""
    import http.client

    start = time.perf_counter()
    try:
        conn, resp = open_request("POST", url, timeout, json.dumps(body).encode(), headers)
    except RequestFailed as exc:
        return Reply(None, error=str(exc))
    reply = Reply(resp.status)
    try:
        while piece := resp.read1(65536):
            reply.chunks += 1
            reply.body += piece
            if reply.first_chunk_ms is None:
                reply.first_chunk_ms = round((time.perf_counter() - start) * 1000, 1)
    except (http.client.HTTPException, OSError) as exc:  # dropped, timed out or cut off (IncompleteRead)
        reply.cut = exc
    finally:
        conn.close()
    return reply


def open_request(method: str, url: str, timeout: float, body: bytes | None, headers: dict | None):
    """One request with the standard library's http.client.

    http.client rather than httpx for probes: importing httpx (httpcore, anyio, trio) costs ~120 ms
    of the CLI's start-up, and probes are single loopback requests. It also never reads proxy
    settings from the environment, so no proxy sees loopback traffic or tokens.
    """
    import http.client
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    hdrs = {"accept": "*/*", **(headers or {})}
    if body is not None:
        hdrs["content-type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        return conn, conn.getresponse()
    except ConnectionRefusedError:
        conn.close()
        raise RequestFailed(f"connection refused at {url}") from None
    except socket.gaierror:
        conn.close()
        raise RequestFailed(f"cannot resolve {parts.hostname} (no DNS or no network)") from None
    except (socket.timeout, TimeoutError):
        conn.close()
        raise RequestFailed(f"no answer from {url} (timed out after {timeout:g} s)") from None
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise RequestFailed(f"{type(exc).__name__} from {url}: {exc}") from None


def request(method: str, url: str, timeout: float = 2.0, json_body: Any = None,
            headers: dict | None = None) -> Probe:
    import socket

    start = time.perf_counter()
    body = json.dumps(json_body).encode() if json_body is not None else None
    try:
        conn, resp = open_request(method, url, timeout, body, headers)
        try:
            raw = resp.read()
        except (socket.timeout, TimeoutError):
            raise RequestFailed(f"no answer from {url} (timed out after {timeout:g} s)") from None
        finally:
            conn.close()
    except RequestFailed as exc:
        return Probe(False, error=str(exc), elapsed_ms=(time.perf_counter() - start) * 1000)
    elapsed = (time.perf_counter() - start) * 1000
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    ok = 200 <= resp.status < 300
    return Probe(ok, resp.status, parsed, "" if ok else f"HTTP {resp.status} from {url}", elapsed)


def get(url: str, timeout: float = 2.0, headers: dict | None = None) -> Probe:
    return request("GET", url, timeout, headers=headers)


class ThinkSplitter:
    """Qwen3's thinking, told apart from its answer in a stream: `delta.reasoning` (vLLM with
    `--reasoning-parser`; `reasoning_content` before vLLM 0.19) is thinking, and so is a `<think>…</think>`
    block at the start of `delta.content` (no parser: `model.reasoning: raw`, as on Ollama). `feed` takes
    one piece of content and returns (thinking, answer); a tag split across chunks is held back until whole."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.state = "start"  # start → think → answer, or start → answer
        self.held = ""

    def feed(self, piece: str) -> tuple[str, str]:
        if self.state == "answer":
            return "", piece
        self.held += piece
        if self.state == "start":
            head = self.held.lstrip()
            if not head or (self.OPEN.startswith(head) and head != self.OPEN):
                return "", ""  # whitespace, or the start of "<think>": wait for more
            if not head.startswith(self.OPEN):
                self.state, answer, self.held = "answer", self.held, ""
                return "", answer
            self.state, self.held = "think", head[len(self.OPEN):]
        if self.CLOSE in self.held:
            thinking, answer = self.held.split(self.CLOSE, 1)
            self.state, self.held = "answer", ""
            return thinking, answer.lstrip()
        keep = len(self.CLOSE) - 1  # a "</thi" at the end may be the start of the closing tag
        thinking, self.held = self.held[:-keep] if len(self.held) > keep else "", self.held[-keep:]
        return thinking, ""

    def flush(self) -> tuple[str, str]:
        """What was held back when the stream ended: an unclosed thinking block stays thinking."""
        held, self.held = self.held, ""
        return (held, "") if self.state == "think" else ("", held if held.strip() else "")


def delta_reasoning(delta: dict) -> str:
    """The thinking a chat-completion delta carries: vLLM 0.32's `reasoning`, older `reasoning_content`."""
    return delta.get("reasoning") or delta.get("reasoning_content") or ""


@dataclass
class StreamResult:
    """A streamed chat completion as it arrived. Output is the answer *and* Qwen3's thinking: a model that
    thinks streams output long before its first answer token (`ttft_ms` vs `first_answer_ms`)."""

    ok: bool
    ttft_ms: float | None = None  # first output chunk (content or reasoning), as `vllm bench serve` times it
    first_answer_ms: float | None = None  # first chunk of the answer itself (outside the thinking)
    total_ms: float = 0.0
    chunks: int = 0
    content_chunks: int = 0
    reasoning_chunks: int = 0  # chunks of delta.reasoning
    text: str = ""  # delta.content as sent (with a raw <think> block, if any)
    reasoning_text: str = ""  # the thinking: delta.reasoning, or the raw <think> block's inside
    answer: str = ""  # the content without its <think> block: what the user reads
    usage: dict = field(default_factory=dict)
    error: str = ""
    status: int | None = None
    body: Any = None

    @property
    def output_chunks(self) -> int:
        return self.content_chunks + self.reasoning_chunks


class OpenAIServer:
    """vLLM's OpenAI-compatible API (and anything that speaks it)."""

    def __init__(self, base_url: str, api_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def health(self, timeout: float = 2.0) -> Probe:
        return get(f"{self.base_url}/health", timeout)

    def models(self, timeout: float = 5.0) -> Probe:
        return get(f"{self.base_url}/v1/models", timeout, self.headers)

    def version(self, timeout: float = 2.0) -> Probe:
        return get(f"{self.base_url}/version", timeout)

    def metrics_text(self, timeout: float = 5.0) -> Probe:
        return get(f"{self.base_url}/metrics", timeout)

    def complete(self, model: str, prompt: str, max_tokens: int = 1, timeout: float = 60.0) -> Probe:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens, "temperature": 0}
        return request("POST", f"{self.base_url}/v1/chat/completions", timeout, body, self.headers)

    def tokenize(self, model: str, messages: list[dict] | None = None, prompt: str | None = None,
                 timeout: float = 30.0) -> Probe:
        """vLLM's /tokenize: how many tokens the served tokenizer makes of `messages` (chat template
        included, as a chat completion counts them) or of a bare `prompt`. `ok` only with an integer
        count, in `body["count"]`. The API key goes along: vLLM's own --api-key covers /v1/* only, but a
        gateway in front of it may guard every path."""
        body = {"model": model, **({"messages": messages} if messages is not None else {"prompt": prompt or ""})}
        url = f"{self.base_url}/tokenize"
        probe = request("POST", url, timeout, body, self.headers)
        if probe.ok and not (isinstance(probe.body, dict) and type(probe.body.get("count")) is int):
            return Probe(False, probe.status, probe.body, f"no token count in the answer from {url}",
                         probe.elapsed_ms)
        return probe

    def stream(self, model: str, messages: list[dict], max_tokens: int = 16,
               timeout: float = 60.0, extra: dict | None = None) -> StreamResult:
        """A streamed chat completion; measures TTFT as the first chunk with non-empty content."""
        import socket

        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, **(extra or {})}
        url = f"{self.base_url}/v1/chat/completions"
        start = time.perf_counter()
        result = StreamResult(ok=False)
        try:
            conn, resp = open_request("POST", url, timeout, json.dumps(body).encode(), self.headers)
            try:
                result.status = resp.status
                if resp.status != 200:
                    raw = resp.read().decode("utf-8", errors="replace")
                    try:
                        result.body = json.loads(raw)
                    except ValueError:
                        result.body = raw
                    result.error = f"HTTP {resp.status} from {url}"
                    return result
                lines = (line.decode("utf-8").rstrip("\r\n") for line in iter(resp.readline, b""))
                done = False
                splitter = ThinkSplitter()
                for event in iter_sse(lines):
                    if event == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(event)
                    result.chunks += 1
                    if chunk.get("usage"):
                        result.usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        piece, reasoning = delta.get("content") or "", delta_reasoning(delta)
                        if not (piece or reasoning):
                            continue
                        now = (time.perf_counter() - start) * 1000
                        result.ttft_ms = now if result.ttft_ms is None else result.ttft_ms
                        thinking, answer = splitter.feed(piece) if piece else ("", "")
                        if reasoning:
                            result.reasoning_chunks += 1
                        if piece:
                            result.content_chunks += 1
                            result.text += piece
                        result.reasoning_text += reasoning + thinking
                        result.answer += answer
                        if answer.strip() and result.first_answer_ms is None:
                            result.first_answer_ms = now
                thinking, answer = splitter.flush()
                result.reasoning_text += thinking
                result.answer += answer
                result.ok = done
                if not done:
                    result.error = "stream ended without data: [DONE]"
            finally:
                conn.close()
        except RequestFailed as exc:
            result.error = str(exc)
        except (socket.timeout, TimeoutError):
            result.error = f"stream from {url} stalled (no data for {timeout:g} s)"
        except (ValueError, OSError) as exc:
            result.error = f"broken stream from {url}: {exc}"
        result.total_ms = (time.perf_counter() - start) * 1000
        return result


def iter_sse(lines: Iterator[str]) -> Iterator[str]:
    """The `data:` payloads of a server-sent-event stream."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


class OllamaServer:
    """Ollama's native API."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    def version(self, timeout: float = 2.0) -> Probe:
        return get(f"{self.base_url}/api/version", timeout)

    def loaded(self, timeout: float = 2.0) -> Probe:
        return get(f"{self.base_url}/api/ps", timeout)

    def tags(self, timeout: float = 2.0) -> Probe:
        return get(f"{self.base_url}/api/tags", timeout)

    def show(self, model: str, timeout: float = 5.0) -> Probe:
        """/api/show: a model's details; `model_info["<arch>.context_length"]` is its own maximum context."""
        return request("POST", f"{self.base_url}/api/show", timeout, {"model": model})

    def set_keep_alive(self, model: str, keep_alive: Any, timeout: float = 120.0) -> Probe:
        """keep_alive 0 unloads the model now; a duration (or -1) loads it and keeps it."""
        return request("POST", f"{self.base_url}/api/generate", timeout,
                       {"model": model, "prompt": "", "keep_alive": keep_alive, "stream": False})
