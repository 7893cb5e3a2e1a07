"""A real S3 server for the remote tests: `moto_server` (from `moto[server]`) on 127.0.0.1,
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

import pytest

s3fs = pytest.importorskip("s3fs", reason="the s3 extra (fsspec, s3fs) is not installed")
pytest.importorskip("moto.server", reason="moto[server] is not installed")

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
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


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


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_env() -> Iterator[None]:
    """Dummy credentials: no real account or profile is ever read."""
    saved = dict(os.environ)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    })  # fmt: skip
    os.environ.pop("AWS_PROFILE", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


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


@pytest.fixture
def bucket(endpoint: str) -> Bucket:
    return Bucket(endpoint)


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


@pytest.fixture
def proxy(endpoint: str) -> Iterator[tuple[Server, str]]:
    """A TCP relay process in front of the server: SIGKILL it and the 'server' is gone for
    the writer, while the tests still read the real one behind it."""
    port = endpoint.rsplit(":", 1)[1]
    server = Server([sys.executable, "-c", PROXY, port], b"port")
    relay_port = int(server.output[-1].split()[1])
    try:
        yield server, f"http://127.0.0.1:{relay_port}"
    finally:
        server.kill()
