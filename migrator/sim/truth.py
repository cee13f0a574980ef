"""Ground-truth streaming server (a stand-in, not vLLM): OpenAI-style SSE with a known TTFT and ITL, whose own
timestamps are the truth a load generator's figures are judged against.

For every completion it records, on CLOCK_MONOTONIC (time.perf_counter_ns, shared by every process on the
machine): when the request's last byte was read, and when each content chunk was handed to the kernel. TTFT
truth = first chunk − request read; ITL truth = between chunks. `GET /truth?last=N` returns the medians and
means over the last N completions (warm-up requests come first and are left out), and the time window they
span (for request rates and the client's CPU over exactly that window).

Lean on purpose — asyncio.Protocol, no framework, preformatted bytes — so that at the request rates the
standard tools reach, the server is not the bottleneck. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
         b"transfer-encoding: chunked\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


class Truth:
    def __init__(self, ttft_s: float, itl_s: float):
        self.ttft_s, self.itl_s = ttft_s, itl_s
        self.done: list[tuple[int, int, list[int]]] = []  # (request read, first chunk, every chunk) in ns

    def summary(self, last: int) -> dict:
        done = self.done[-last:] if last else self.done
        ttfts = [(first - read) / 1e6 for read, first, _ in done]
        itls = [(b - a) / 1e6 for _, _, chunks in done for a, b in zip(chunks, chunks[1:])]
        return {
            "completions": len(done), "ttft_ms_median": statistics.median(ttfts) if ttfts else None,
            "ttft_ms_mean": statistics.fmean(ttfts) if ttfts else None,
            "itl_ms_mean": statistics.fmean(itls) if itls else None,
            "itl_ms_median": statistics.median(itls) if itls else None,
            "window_start_ns": min((r for r, _, _ in done), default=None),
            "window_end_ns": max((c[-1] for _, _, c in done if c), default=None),
        }


class TruthProtocol(asyncio.Protocol):
    def __init__(self, truth: Truth):
        self.truth = truth
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body, self.buffer = self.buffer[end + 4:end + 4 + length], self.buffer[end + 4 + length:]
            read_ns = time.perf_counter_ns()
            method, path = head.split(" ", 2)[:2]
            self.route(method, path, body, read_ns)

    def reply(self, status: str, obj) -> None:
        payload = json.dumps(obj).encode()
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (status.encode(), len(payload), payload))

    def route(self, method: str, path: str, body: bytes, read_ns: int) -> None:
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            request = json.loads(body or b"{}")
            tokens = int(request.get("max_completion_tokens") or request.get("max_tokens") or 16)
            asyncio.get_running_loop().create_task(self.stream(request, tokens, read_ns, path.endswith("chat/completions")))
        elif path.startswith("/truth"):
            last = int(path.partition("last=")[2] or 0) if "last=" in path else 0
            self.reply("200 OK", self.truth.summary(last))
        elif path == "/health":
            self.reply("200 OK", {})
        elif path == "/v1/models":
            self.reply("200 OK", {"object": "list", "data": [{"id": "truth", "object": "model", "max_model_len": 1 << 20}]})
        else:
            self.reply("404 Not Found", {"error": {"message": f"{path} not served here", "code": 404}})

    async def stream(self, request: dict, tokens: int, read_ns: int, chat: bool) -> None:
        t = self.transport
        t.write(_HEAD)
        ident = "cmpl-truth"
        content = ({"id": ident, "object": "chat.completion.chunk", "model": "truth",
                    "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]} if chat else
                   {"id": ident, "object": "text_completion", "model": "truth",
                    "choices": [{"index": 0, "text": "tok ", "finish_reason": None}]})
        piece = _event(content)
        loop = asyncio.get_running_loop()
        start = loop.time()
        chunks: list[int] = []
        for i in range(tokens):
            due = start + self.truth.ttft_s + i * self.truth.itl_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if t.is_closing():
                return
            chunks.append(time.perf_counter_ns())
            t.write(piece)
        usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
        t.write(_event({"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                        "model": "truth", "choices": [], "usage": usage}) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        if chunks:
            self.truth.done.append((read_ns, chunks[0], chunks))


async def serve(host: str, port: int, truth: Truth, ready=None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: TruthProtocol(truth), host, port, backlog=1024)
    if ready is not None:
        ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migrator.sim.truth", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=10.0)
    args = p.parse_args(argv)
    truth = Truth(args.ttft_ms / 1000, args.itl_ms / 1000)
    print(f"ground-truth server on {args.host}:{args.port} (TTFT {args.ttft_ms} ms, ITL {args.itl_ms} ms)",
          file=sys.stderr, flush=True)
    try:
        asyncio.run(serve(args.host, args.port, truth))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
