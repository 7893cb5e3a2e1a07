"""Helpers for the remote tests: a real S3 server, `moto_server` (from `moto[server]`) on 127.0.0.1,
started as a subprocess on a free port, stopped by its pid. Nothing leaves loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import s3fs

MiB = 2**20
#: Parts of 5 MiB (S3's smallest) so that a few MiB already make a multipart upload.
PART = 5 * MiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A process serving on 127.0.0.1:port; `kill()` ends it with SIGKILL, by its pid."""

    def __init__(self, argv: list[str], ready: bytes) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.output: list[bytes] = []
        assert self.proc.stdout is not None
        # Its own announcement, read line by line (no polling): it is listening then.
        for line in self.proc.stdout:
            self.output.append(line)
            if ready in line:
                break
        else:
            raise RuntimeError(f"{argv[0]} did not start: {b''.join(self.output)!r}")
        # Keep draining its output so that it never blocks on a full pipe.
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._drainer.join()  # its output ends with it
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = _free_port()
    server = Server(
        [sys.executable, "-c", "from moto.server import main; main()",
         "-H", "127.0.0.1", "-p", str(port)],
        b"Running on",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # It answers: one real request must succeed before any test runs.
        import urllib.request

        with urllib.request.urlopen(f"{url}/moto-api/reset", data=b"", timeout=30) as r:
            assert r.status == 200
        yield url
    finally:
        server.kill()


def options(endpoint: str, **extra: Any) -> dict[str, Any]:
    """storage_options for s3fs against `endpoint`: 5 MiB parts, no instance cache."""
    so: dict[str, Any] = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "default_block_size": PART,
        "skip_instance_cache": True,
    }
    so.update(extra)
    return so


class Bucket:
    """A fresh bucket on the server, and what the tests check it with."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.name = f"b-{uuid.uuid4().hex[:12]}"
        self.options = options(endpoint)
        self.fs = s3fs.S3FileSystem(**self.options)
        self.fs.call_s3("create_bucket", Bucket=self.name)

    def url(self, key: str = "key") -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.fs.call_s3("put_object", Bucket=self.name, Key=key, Body=data)

    def get(self, key: str = "key") -> bytes:
        body = self.fs.cat_file(f"{self.name}/{key}")
        assert isinstance(body, bytes)
        return body

    def keys(self) -> list[str]:
        """The exact listing of the bucket: proves no stray object."""
        listed = self.fs.call_s3("list_objects_v2", Bucket=self.name)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def uploads(self) -> list[str]:
        """Incomplete multipart uploads: proves no upload was left pending."""
        listed = self.fs.call_s3("list_multipart_uploads", Bucket=self.name)
        return sorted(u["Key"] for u in listed.get("Uploads", []))


PROXY = r"""
import socket, sys, threading
target = int(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print("port", listener.getsockname()[1], flush=True)
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    client, _ = listener.accept()
    upstream = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
"""


class HoldingRelay:
    """A TCP relay on 127.0.0.1 (threads of the test process) in front of the server that
    holds the first CreateMultipartUpload request (`POST /bucket/key?uploads`) on its way.

    `held` is set once it holds that request; `release()` sends it on; `answered` is set when
    the server's answer to it comes back (the upload then exists on the server, whether or
    not the writer is still there to read the answer). Everything else passes through."""

    def __init__(self, endpoint: str) -> None:
        self._server = ("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.held = threading.Event()
        self.answered = threading.Event()
        self._released = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() doesn't)
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        for s in self._sockets:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._server)
            self._sockets += [client, server]
            holding = threading.Event()  # this connection carries the held request
            for target, args in ((self._to_server, (client, server, holding)),
                                 (self._to_client, (server, client, holding))):  # fmt: skip
                thread = threading.Thread(target=target, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _to_server(
        self, client: socket.socket, server: socket.socket, holding: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                request_line = data.partition(b"\r\n")[0]
                if (
                    not self.held.is_set()
                    and request_line.startswith(b"POST ")
                    and b"?uploads " in request_line
                ):
                    holding.set()
                    self.held.set()
                    self._released.wait()
                server.sendall(data)
        # Half-close only: the server still answers the request it has.
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _to_client(
        self, server: socket.socket, client: socket.socket, holding: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if holding.is_set():
                    self.answered.set()
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
