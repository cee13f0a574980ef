"""A stand-in for the Hugging Face Hub (no hub is reachable here): the endpoints huggingface_hub's
snapshot_download, hf_hub_download and get_safetensors_metadata call, serving local directories.

    /api/health                                   reachability probe
    GET  /api/models/{repo}/revision/{rev}        repo info (sha)
    GET  /api/models/{repo}/tree/{sha}            file list with sizes, LFS sha256
    HEAD /{repo}/resolve/{rev}/{file}             X-Repo-Commit, ETag / X-Linked-Etag, sizes
    GET  /{repo}/resolve/{rev}/{file}             content, with Range (resume)

Faults: a gated repo (401 without the right token), unknown repos (404), `cut_after` to drop the
connection part-way through one file once, `stall_after` to send part of a file and then hang, `hang`
to answer nothing at all for a file (the health probe still answers). `SilentServer` is a Hub that
accepts connections and never answers; `write_safetensors_index` gives a sharded model directory the
`model.safetensors.index.json` the real Hub repos carry.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path], gated: dict[str, str] | None = None):
        self.repos = repos
        self.gated = gated or {}  # repo -> token that may read it
        self.cut_after: dict[str, int] = {}  # file name -> bytes to send before dropping, once
        self.stall_after: dict[str, int] = {}  # file name -> bytes to send before hanging, once
        self.hang: set[str] = set()  # file names whose requests get no answer at all (until `release`)
        self.release = threading.Event()  # ends a stall
        self.requests: list[tuple[str, str, str]] = []  # (method, path, range header)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()  # no handler left waiting on a stall or a hang
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _send_part(self, headers: dict, part: bytes) -> None:
                """Headers promising the whole file, then only `part` of it."""
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(part)
                self.wfile.flush()
                self.close_connection = True

            def _error(self, status: int, code: str, message: str, head: bool = False):
                self._send(status, json.dumps({"error": message}).encode(),
                           {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message},
                           head)

            def _repo(self, repo: str, head: bool = False) -> bool:
                if repo not in hub.repos:
                    self._error(404, "RepoNotFound", "Repository Not Found", head)
                    return False
                if repo in hub.gated:
                    auth = self.headers.get("authorization", "")
                    if auth != f"Bearer {hub.gated[repo]}":
                        self._error(401, "GatedRepo", f"Access to model {repo} is restricted.", head)
                        return False
                return True

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

            def _route(self, head: bool):
                path = unquote(urlsplit(self.path).path)
                hub.requests.append(("HEAD" if head else "GET", path, self.headers.get("range", "")))
                if path == "/api/health":
                    return self._send(200, b"{}", {"Content-Type": "application/json"}, head)
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"]:
                    repo = "/".join(parts[2:4])
                    if not self._repo(repo, head):
                        return
                    if parts[4] == "revision":
                        body = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                "siblings": [{"rfilename": f} for f in hub.files(repo)]}
                        return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
                    if parts[4] == "tree":
                        entries = []
                        for name, p in hub.files(repo).items():
                            data = p.read_bytes()
                            entry = {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
                            if name.endswith(".safetensors"):
                                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                "pointerSize": 134}
                            entries.append(entry)
                        return self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, head)
                    return self._error(404, "EntryNotFound", "not found", head)
                # /{org}/{name}/resolve/{rev}/{file...}
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                    if not self._repo(repo, head):
                        return
                    if filename in hub.hang:
                        hub.release.wait(60)
                        self.close_connection = True
                        return
                    files = hub.files(repo)
                    if filename not in files:
                        return self._error(404, "EntryNotFound", f"{filename} not found", head)
                    data = files[filename].read_bytes()
                    lfs = filename.endswith(".safetensors")
                    etag = hashlib.sha256(data).hexdigest() if lfs else _git_oid(data)
                    headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                               "Content-Type": "application/octet-stream"}
                    if lfs:
                        headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": len(data)})
                    start = 0
                    rng = self.headers.get("range", "")
                    if rng.startswith("bytes="):
                        first, _, last = rng[6:].partition("-")
                        start = int(first)
                        end = int(last) if last else len(data) - 1
                        end = min(end, len(data) - 1)
                        body = data[start:end + 1]
                        headers.update({"Content-Range": f"bytes {start}-{end}/{len(data)}",
                                        "Content-Length": len(body)})
                        status = 206
                    else:
                        body, status = data, 200
                        headers["Content-Length"] = len(body)
                    if head:
                        headers["Content-Length"] = len(data)
                        return self._send(200, b"", headers, head=True)
                    stall = hub.stall_after.pop(filename, None) if status == 200 else None
                    if stall is not None:
                        self._send_part(headers, body[:stall])
                        hub.release.wait(60)  # then hang up, as a stalled transfer ends
                        return
                    cut = hub.cut_after.pop(filename, None) if status == 200 else None
                    if cut is not None:
                        self._send_part(headers, body[:cut])
                        self.connection.shutdown(2)  # drop the connection mid-file
                        return
                    return self._send(status, body, headers)
                return self._error(404, "EntryNotFound", "not found", head)

        return Handler


class SilentServer:
    """A Hub that accepts every connection and never answers (a hung proxy or a wedged server): each
    connection held open, unread, until stop(). `connections` counts what reached it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def connections(self) -> int:
        return len(self.held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by stop()
                return
            self.held.append(conn)

    def start(self) -> "SilentServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self.held:
            conn.close()
        self.thread.join(5)


def write_safetensors_index(model_dir: Path) -> Path:
    """model.safetensors.index.json for a directory of shards (the Hub's sharded layout, which
    get_safetensors_metadata and read_hub read first), built from the shards' own headers."""
    weight_map = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with open(shard, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            weight_map.update({name: shard.name for name in json.loads(fh.read(size)) if name != "__metadata__"})
    out = model_dir / "model.safetensors.index.json"
    out.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
