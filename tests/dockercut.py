"""A fault injector in front of the real dockerd (test-only): it relays the Docker API over a unix socket of its
own until a request containing `cut_on` arrives, then drops every connection and stops listening — to its
clients (the docker SDK, the compose CLI through DOCKER_HOST), dockerd has stopped at that moment. `restore()`
listens again: dockerd is back. The real daemon keeps running for the rest of the test session."""

from __future__ import annotations

import os
import socket
import threading


class DockerCut:
    def __init__(self, path: str, cut_on: bytes, upstream: str = "/var/run/docker.sock"):
        self.path, self.cut_on, self.upstream = path, cut_on, upstream
        self.cut_seen = threading.Event()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> "DockerCut":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and self.cut_on and self.cut_on in data:
                    self.cut_seen.set()
                    self.cut()  # the request never reaches dockerd
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open.clear()

    def restore(self) -> None:
        self.cut_on = b""
        self.start()
