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


def _client(timeout: float, headers: dict | None = None):
    import httpx

    # trust_env=False: a proxy from the environment must never see loopback traffic or tokens.
    return httpx.Client(timeout=timeout, headers=headers or {}, trust_env=False)


def _describe_error(exc: Exception, url: str) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return f"connection refused at {url}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from {url} (timed out)"
    return f"{type(exc).__name__} from {url}: {exc}"


def request(method: str, url: str, timeout: float = 2.0, json_body: Any = None,
            headers: dict | None = None) -> Probe:
    import httpx

    start = time.perf_counter()
    try:
        with _client(timeout, headers) as client:
            resp = client.request(method, url, json=json_body)
    except httpx.HTTPError as exc:
        return Probe(False, error=_describe_error(exc, url), elapsed_ms=(time.perf_counter() - start) * 1000)
    elapsed = (time.perf_counter() - start) * 1000
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    return Probe(200 <= resp.status_code < 300, resp.status_code, body,
                 "" if resp.is_success else f"HTTP {resp.status_code} from {url}", elapsed)


def get(url: str, timeout: float = 2.0, headers: dict | None = None) -> Probe:
    return request("GET", url, timeout, headers=headers)


@dataclass
class StreamResult:
    ok: bool
    ttft_ms: float | None = None
    total_ms: float = 0.0
    chunks: int = 0
    content_chunks: int = 0
    text: str = ""
    usage: dict = field(default_factory=dict)
    error: str = ""
    status: int | None = None
    body: Any = None


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

    def stream(self, model: str, messages: list[dict], max_tokens: int = 16,
               timeout: float = 60.0, extra: dict | None = None) -> StreamResult:
        """A streamed chat completion; measures TTFT as the first chunk with non-empty content."""
        import httpx

        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, **(extra or {})}
        url = f"{self.base_url}/v1/chat/completions"
        start = time.perf_counter()
        result = StreamResult(ok=False)
        try:
            with _client(timeout, self.headers) as client:
                with client.stream("POST", url, json=body) as resp:
                    result.status = resp.status_code
                    if resp.status_code != 200:
                        resp.read()
                        try:
                            result.body = resp.json()
                        except ValueError:
                            result.body = resp.text
                        result.error = f"HTTP {resp.status_code} from {url}"
                        return result
                    done = False
                    for event in iter_sse(resp.iter_lines()):
                        if event == "[DONE]":
                            done = True
                            break
                        chunk = json.loads(event)
                        result.chunks += 1
                        if chunk.get("usage"):
                            result.usage = chunk["usage"]
                        for choice in chunk.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content") or ""
                            if piece:
                                if result.ttft_ms is None:
                                    result.ttft_ms = (time.perf_counter() - start) * 1000
                                result.content_chunks += 1
                                result.text += piece
                    result.ok = done
                    if not done:
                        result.error = "stream ended without data: [DONE]"
        except httpx.HTTPError as exc:
            result.error = _describe_error(exc, url)
        except ValueError as exc:
            result.error = f"malformed SSE chunk from {url}: {exc}"
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

    def set_keep_alive(self, model: str, keep_alive: Any, timeout: float = 120.0) -> Probe:
        """keep_alive 0 unloads the model now; a duration (or -1) loads it and keeps it."""
        return request("POST", f"{self.base_url}/api/generate", timeout,
                       {"model": model, "prompt": "", "keep_alive": keep_alive, "stream": False})
