"""A moto_server on 127.0.0.1 for the remote benchmarks (the tests have their own fixture)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

MiB = 2**20


@contextlib.contextmanager
def moto() -> Iterator[str]:
    """Start moto_server on a free loopback port; stop it by its pid."""
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()",
         "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # its own announcement: listening
        if b"Running on" in line:
            break
    out = proc.stdout
    drain = threading.Thread(target=lambda: [None for _ in out], daemon=True)
    drain.start()
    url = f"http://127.0.0.1:{port}"
    try:
        urllib.request.urlopen(f"{url}/moto-api/reset", data=b"", timeout=30).close()
        yield url
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        drain.join()
        out.close()


def options(endpoint: str, **extra: Any) -> dict[str, Any]:
    so: dict[str, Any] = {
        "key": "bench",
        "secret": "bench",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    so.update(extra)
    return so
