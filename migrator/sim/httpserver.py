"""A small asyncio HTTP/1.1 server for the simulators (standard library only).

Standard library only so the simulators start in a fraction of a second, run inside the bare test
images (python3 and nothing else), and add no client-visible overhead of their own: their timestamps
are the ground truth the load-test accuracy benchmark compares against.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import dataclass, field
from typing import Awaitable, Callable

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[["StreamWriter"], Awaitable[None]] | None = None  # chunked body

    @classmethod
    def json(cls, obj, status: int = 200) -> "Response":
        return cls(status, json.dumps(obj).encode())

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> "Response":
        return cls(status, text.encode(), content_type)


class StreamWriter:
    """Writes one chunk of a chunked response at a time, flushed at once."""

    def __init__(self, writer: asyncio.StreamWriter):
        self._w = writer

    async def send(self, data: bytes) -> None:
        if data:
            self._w.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self._w.drain()


Handler = Callable[[Request], Awaitable[Response]]


class HTTPServer:
    def __init__(self, handler: Handler, extra_headers: dict[str, str] | None = None):
        self.handler = handler
        self.extra_headers = extra_headers or {}
        self.server: asyncio.base_events.Server | None = None
        self.hang = False  # fault injection: accept connections, never answer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                path, _, query = target.partition("?")
                if self.hang:
                    await asyncio.Event().wait()
                try:
                    resp = await self.handler(Request(method, path, query, headers, body))
                except Exception as exc:  # a simulator bug must show up as a 500, not a dead socket
                    resp = Response.json({"error": {"message": f"{type(exc).__name__}: {exc}"}}, 500)
                keep = headers.get("connection", "").lower() != "close"
                await self._write(writer, resp, keep)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _write(self, writer: asyncio.StreamWriter, resp: Response, keep: bool) -> None:
        head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}",
                f"content-type: {resp.content_type}",
                f"connection: {'keep-alive' if keep else 'close'}"]
        head += [f"{k}: {v}" for k, v in {**self.extra_headers, **resp.headers}.items()]
        if resp.stream is None:
            head.append(f"content-length: {len(resp.body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
            await writer.drain()
            return
        head.append("transfer-encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        await resp.stream(StreamWriter(writer))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True, backlog=1024)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]


def run_forever(start: Callable[[], Awaitable[None]], name: str) -> int:
    """Run a simulator until Ctrl-C or SIGTERM; exit 0 on a clean stop."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await start()
        await stop.wait()
        print(f"{name}: stopped", file=sys.stderr, flush=True)

    asyncio.run(main())
    return 0
