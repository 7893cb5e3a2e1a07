"""Fixtures for the remote tests: a real S3 server (`moto_server` from `moto[server]`) on
127.0.0.1, started as a subprocess on a free port and stopped by its pid; a fresh bucket per
test; a killable relay in front of the server. Nothing leaves loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest.importorskip("s3fs", reason="the s3 extra (fsspec, s3fs) is not installed")
pytest.importorskip("moto.server", reason="moto[server] is not installed")

import sys

from remote.s3server import PROXY, Bucket, HoldingRelay, Server, moto_server


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


@pytest.fixture
def bucket(endpoint: str) -> Bucket:
    return Bucket(endpoint)


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


@pytest.fixture
def holding_relay(endpoint: str) -> Iterator[HoldingRelay]:
    """A relay that holds the first CreateMultipartUpload until the test releases it."""
    relay = HoldingRelay(endpoint)
    try:
        yield relay
    finally:
        relay.close()
