"""Sandbox backend — a stand-in for the user's GraphRAG FastAPI backend, used by `rehearse`.

It re-reads the env file on every request (so `backend_runtime: none` applies: no recreate needed),
answers /health with the active `llm_backend` and model, and proxies /chat to vLLM (OpenAI API) or
Ollama (native API) by LLM_BACKEND, as the real backend's ChatOpenAI / ChatOllama switch does.

Real backends come in other shapes, and phase4 must prove the switch on each: `--health plain` answers
`{"status": "ok"}` (most FastAPI apps), `--health none` has no /health at all (404), and
`--ignore-llm-backend` is a mis-wired backend that talks to Ollama whatever LLM_BACKEND says — while its
/health (default `llm-field`) still claims the env file's value, the lie a /health-only check believes.

A question with `"stream": true` is streamed as the reference backend streams it (plain text chunks,
relayed as the LLM sends them; `max_tokens` sets the answer's length; a last `[done]` line once the LLM
finished, so a client can tell a whole answer from a cut one), and SIGTERM is handled as uvicorn
handles it: stop accepting, finish the requests in flight (up to `--grace-s`), then exit — which is what
lets a drained switch or rollback cut no answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
from pathlib import Path

from migrator.sim.httpserver import HTTPServer, Request, Response


def read_env(path: Path | None) -> dict[str, str]:
    """The env file's values, or (no file given) this process's environment, fixed at start.

    Read the way a real backend reads it (pydantic-settings uses python-dotenv); where python-dotenv is
    not installed (the stand-ins' image is standard library only) a plain KEY=VALUE reader does."""
    import os

    if path is None:
        return dict(os.environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        from dotenv import dotenv_values
    except ImportError:
        return _plain_env(text)
    import io

    return {k: v or "" for k, v in dotenv_values(stream=io.StringIO(text)).items()}


def _plain_env(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) > 1:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


HEALTH_SHAPES = ("llm-field", "plain", "none")


async def relay_stream(backend: str, env: dict[str, str], question: str, max_tokens: int):
    """Yield the answer's text pieces as the LLM streams them (vLLM: SSE; Ollama: NDJSON). The blocking
    standard-library client runs in a thread; pieces cross into the event loop by a queue. A cut upstream
    ends the stream early (the client sees a short answer without the final line)."""
    import http.client
    from urllib.parse import urlsplit

    if backend == "vllm":
        url = env.get("VLLM_BASE_URL", "").rstrip("/") + "/chat/completions"
        body = {"model": env.get("VLLM_MODEL"), "max_tokens": max_tokens, "stream": True,
                "messages": [{"role": "user", "content": question}]}
    else:
        url = env.get("OLLAMA_BASE_URL", "http://127.0.0.1:11434").rstrip("/") + "/api/chat"
        body = {"model": env.get("OLLAMA_MODEL", "qwen3:32b"), "stream": True,
                "messages": [{"role": "user", "content": question}], "options": {"num_predict": max_tokens}}
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    parts = urlsplit(url)

    def pump() -> None:
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            conn.request("POST", parts.path, json.dumps(body).encode(), {"content-type": "application/json"})
            resp = conn.getresponse()
            for raw in iter(resp.readline, b""):
                line = raw.decode("utf-8", errors="replace").strip()
                if backend == "vllm":
                    if line == "data: [DONE]":
                        loop.call_soon_threadsafe(queue.put_nowait, "\n[done]\n")
                        continue
                    if not line.startswith("data:"):
                        continue
                    piece = "".join((c.get("delta") or {}).get("content") or ""
                                    for c in json.loads(line[5:]).get("choices") or [])
                elif line:
                    chunk = json.loads(line)
                    piece = (chunk.get("message") or {}).get("content") or ""
                    if chunk.get("done"):
                        loop.call_soon_threadsafe(queue.put_nowait, piece + "\n[done]\n")
                        continue
                else:
                    continue
                if piece:
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            conn.close()
        except (OSError, ValueError, http.client.HTTPException):
            pass  # the upstream went away mid-answer: the answer ends short
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    future = loop.run_in_executor(None, pump)
    while True:
        piece = await queue.get()
        if piece is None:
            break
        yield piece
    await future


class InFlight:
    """Requests being answered (a streamed one until its last chunk): what SIGTERM waits for."""

    def __init__(self) -> None:
        self.count = 0


def make_handler(env_path: Path | None, health: str = "llm-field", ignore_llm_backend: bool = False,
                 in_flight: InFlight | None = None):
    in_flight = in_flight if in_flight is not None else InFlight()

    async def handle(req: Request) -> Response:
        in_flight.count += 1
        try:
            resp = await answer(req)
        except BaseException:
            in_flight.count -= 1
            raise
        if resp.stream is None:
            in_flight.count -= 1
            return resp
        inner = resp.stream

        async def stream(writer) -> None:
            try:
                await inner(writer)
            finally:
                in_flight.count -= 1

        resp.stream = stream
        return resp

    async def answer(req: Request) -> Response:
        env = read_env(env_path)
        backend = env.get("LLM_BACKEND", "ollama") or "ollama"  # what the backend believes (and reports)
        if req.path == "/health" and health != "none":
            if health == "plain":
                return Response.json({"status": "ok"})
            model = env.get("VLLM_MODEL") if backend == "vllm" else env.get("OLLAMA_MODEL", "qwen3:32b")
            return Response.json({"status": "ok", "llm_backend": backend, "model": model})
        if req.path == "/chat" and req.method == "POST":
            asked = req.json() or {}
            question = asked.get("message", "")
            if asked.get("stream"):
                used = "ollama" if ignore_llm_backend else backend

                async def streamed(writer) -> None:
                    async for piece in relay_stream(used, env, question, int(asked.get("max_tokens", 16))):
                        await writer.send(piece.encode())

                return Response(200, content_type="text/plain; charset=utf-8", stream=streamed,
                                headers={"x-llm-backend": backend})
            if backend == "vllm" and not ignore_llm_backend:
                url = env.get("VLLM_BASE_URL", "").rstrip("/") + "/chat/completions"
                body = {"model": env.get("VLLM_MODEL"), "max_tokens": 16,
                        "messages": [{"role": "user", "content": question}]}
                # As ChatOpenAI: the answer is `content`; vLLM's `reasoning` (a thinking Qwen3) is dropped.
                answer = lambda r: r["choices"][0]["message"]["content"] or ""  # noqa: E731
            else:
                url = env.get("OLLAMA_BASE_URL", "http://127.0.0.1:11434").rstrip("/") + "/api/chat"
                body = {"model": env.get("OLLAMA_MODEL", "qwen3:32b"), "stream": False,
                        "messages": [{"role": "user", "content": question}], "options": {"num_predict": 16}}
                answer = lambda r: r["message"]["content"]  # noqa: E731
            request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:  # loopback only (sandbox)
                    return Response.json({"llm_backend": backend, "answer": answer(json.loads(resp.read()))})
            except OSError as exc:
                return Response.json({"llm_backend": backend, "error": str(exc)}, 503)
        return Response.json({"detail": "Not Found"}, 404)

    return handle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migrator.sim.backend")
    p.add_argument("--env-file", type=Path, default=None,
                   help="re-read this file on every request (default: use the process environment)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--health", choices=HEALTH_SHAPES, default="llm-field",
                   help="/health's shape: llm-field (status, llm_backend, model), plain ({status: ok}), none (404)")
    p.add_argument("--ignore-llm-backend", action="store_true",
                   help="mis-wired: /chat always goes to Ollama, whatever LLM_BACKEND says (/health still claims it)")
    p.add_argument("--grace-s", type=float, default=30.0,
                   help="on SIGTERM, stop accepting and finish the requests in flight for up to this long")
    args = p.parse_args(argv)
    in_flight = InFlight()
    server = HTTPServer(make_handler(args.env_file, args.health, args.ignore_llm_backend, in_flight),
                        {"x-stand-in": "graphrag-migrate sandbox backend"})
    return asyncio.run(serve(server, in_flight, args.port, args.grace_s, args.env_file))


async def serve(server: HTTPServer, in_flight: InFlight, port: int, grace_s: float, env_file: Path | None) -> int:
    """Until SIGTERM or Ctrl-C, then as uvicorn: the listening socket closed (new connections refused), the
    answers in flight finished for up to `grace_s`; exit 0 when none was cut."""
    import signal
    import time

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start("127.0.0.1", port)
    print(f"sandbox backend on 127.0.0.1:{port} reading {env_file or 'its environment'}", file=sys.stderr, flush=True)
    await stop.wait()
    assert server.server is not None
    server.server.close()
    waiting, deadline = in_flight.count, time.monotonic() + grace_s
    while in_flight.count > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    cut = in_flight.count
    await asyncio.sleep(0.05)  # the last answer's closing chunk is written just after its stream returns
    print(f"sandbox backend: stopped ({waiting} answers in flight at SIGTERM, {cut} cut)", file=sys.stderr, flush=True)
    return 0 if cut == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
