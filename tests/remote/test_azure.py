"""All-or-nothing writes to Azure Blob storage through adlfs, against a real Azurite on
127.0.0.1 (tests/remote/clouds.py; Azurite is an npm package that .ci/run installs).

Azurite enforces what these tests need: If-None-Match: * and If-Match on Put Blob and Put
Block List, and the discarding of a blob's other uncommitted blocks at a commit. What no
Azure API offers: dropping uncommitted blocks alone, so after a failed write the tests show
them uncommitted (never listed nor read), not gone; Azure deletes them after a week.
"""

from __future__ import annotations

import errno
import gc
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from remote.clouds import (
    AZURE_PART,
    BUMP,
    FAIL,
    Container,
    MiB,
    azure_options,
    azurite,
    azurite_program,
    clean_cli,
    relay,
    update,
    update_cli,
)

pytest.importorskip("adlfs", reason="the azure extra (adlfs) is not installed")

from atomicfile import AtomicFile, SessionFileError, atomic_update, atomic_write, clean_stale_temps

from helpers import unavailable

OLD = b"old content"


def blob(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    program = azurite_program()
    if program is None:
        unavailable(
            "needs Azurite (node and npm: apt-get install nodejs npm; then "
            "npm install --prefix ~/.cache/atomicfile/azurite azurite@3.37, as .ci/run does)"
        )
        raise AssertionError("unreachable")
    with azurite(program) as url:
        yield url


@pytest.fixture
def container(endpoint: str) -> Container:
    return Container(endpoint)


def assert_untouched(container: Container, key: str = "key") -> None:
    assert container.get(key) == OLD
    assert container.keys() == [key]


class Boom(Exception):
    pass


# -- writes that succeed ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [100, 3 * AZURE_PART + 17], ids=["100B", "4-blocks"])
@pytest.mark.parametrize("scheme", ["az", "abfs"])
def test_write_replaces_blob(container: Container, form: Any, size: int, scheme: str) -> None:
    container.put("key", OLD)
    data = blob(size)
    form.write(container.url(scheme=scheme), data[: size // 2], data[size // 2 :], mode="wb",
               storage_options=container.options)  # fmt: skip
    assert container.get() == data
    assert container.keys() == ["key"]
    assert container.uncommitted() == 0


def test_text_append_r_plus(container: Container, form: Any) -> None:
    form.write(container.url(), "héllo\n", mode="w", encoding="utf-8", newline="\r\n",
               storage_options=container.options)  # fmt: skip
    form.write(container.url(), b"+tail", mode="ab", storage_options=container.options)
    assert container.get() == "héllo\r\n".encode() + b"+tail"
    form.write(container.url(), b"H", mode="r+b", storage_options=container.options)
    assert container.get() == b"H" + ("héllo\r\n".encode() + b"+tail")[1:]


def test_append_larger_than_a_block(container: Container) -> None:
    container.put("key", blob(2 * AZURE_PART + 5))
    with AtomicFile(container.url(), "ab", storage_options=container.options) as f:
        f.write(b"tail")
    assert container.get() == blob(2 * AZURE_PART + 5) + b"tail"


def test_upath_and_fs_forms(container: Container) -> None:
    upath = pytest.importorskip("upath")
    with AtomicFile(upath.UPath(container.url("u"), **container.options), "w") as f:
        f.write("from a UPath")
    with AtomicFile(f"{container.name}/f", "wb", fs=container.fs) as g:
        g.write(b"from fs=")
    assert container.get("u") == b"from a UPath"
    assert container.get("f") == b"from fs="
    assert container.keys() == ["f", "u"]


# -- exceptions, discard, GC -----------------------------------------------------------------


@pytest.mark.parametrize("written", [0, 100, 3 * AZURE_PART], ids=["nothing", "100B", "blocks"])
def test_exception_keeps_old_blob(container: Container, form: Any, written: int) -> None:
    container.put("key", OLD)
    chunks = [blob(written)] if written else []
    with pytest.raises(Boom):
        form.write(container.url(), *chunks, mode="wb", raise_=Boom(),
                   storage_options=container.options)  # fmt: skip
    assert_untouched(container)


def test_exception_at_55_percent(container: Container) -> None:
    container.put("key", OLD)
    chunk = blob(MiB // 4)
    with (
        pytest.raises(Boom),
        AtomicFile(container.url(), "wb", storage_options=container.options) as f,
    ):
        for i in range(60):
            if i == 33:  # 55 %: 8 blocks are staged, not committed
                assert container.uncommitted() == 8
                assert container.get() == OLD
                raise Boom
            f.write(chunk)
    assert_untouched(container)
    # Staged, never committed: no API drops them alone; the next commit discards them.
    assert container.uncommitted() == 8
    atomic_write(container.url(), blob(3 * AZURE_PART), storage_options=container.options)
    assert container.uncommitted() == 0


def test_new_blob_never_appears(container: Container) -> None:
    with (
        pytest.raises(Boom),
        AtomicFile(container.url("new"), "xb", storage_options=container.options) as f,
    ):
        f.write(blob(3 * AZURE_PART))
        raise Boom
    assert container.keys() == []


def test_discard_and_gc(container: Container) -> None:
    container.put("key", OLD)
    af = AtomicFile(container.url(), "wb", storage_options=container.options)
    af.open().write(blob(2 * AZURE_PART))
    assert af.temp_path is not None and "uncommitted blocks" in af.temp_path
    af.discard()
    dropped = AtomicFile(container.url(), "wb", storage_options=container.options)
    f = dropped.open()
    f.write(blob(2 * AZURE_PART))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del dropped, f
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in seen)
    assert_untouched(container)


# -- conditions --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 100, 3 * AZURE_PART], ids=["empty", "100B", "blocks"])
def test_x_racing_x_one_wins(container: Container, size: int) -> None:
    files = [AtomicFile(container.url(), "xb", storage_options=container.options) for _ in "ab"]
    for i, af in enumerate(files):
        af.open().write(bytes([65 + i]) * size)
    files[1].commit()
    with pytest.raises(FileExistsError) as info:
        files[0].commit()
    assert isinstance(info.value, SessionFileError) and info.value.errno == errno.EEXIST
    assert info.value.step == "commit"
    assert container.get() == b"B" * size
    assert container.keys() == ["key"]


def test_w_racing_w_never_mixes_blocks(container: Container) -> None:
    """Both stage blocks into the same blob; the first commit discards the other's, whose
    commit then fails (EAGAIN) instead of publishing a mixture."""
    files = [AtomicFile(container.url(), "wb", storage_options=container.options) for _ in "ab"]
    for i, af in enumerate(files):
        af.open().write(bytes([65 + i]) * (3 * AZURE_PART))
    files[1].commit()
    with pytest.raises(SessionFileError) as info:
        files[0].commit()
    assert info.value.errno == errno.EAGAIN
    assert container.get() == b"B" * (3 * AZURE_PART)


@pytest.mark.parametrize("size", [5, 2 * AZURE_PART], ids=["put", "blocks"])
def test_append_detects_concurrent_update(container: Container, size: int) -> None:
    container.put("key", OLD)
    with (
        pytest.raises(SessionFileError) as info,
        AtomicFile(container.url(), "ab", storage_options=container.options) as f,
    ):
        f.write(blob(size))
        container.put("key", b"theirs")
    assert info.value.errno == errno.ESTALE
    assert container.get() == b"theirs"


def test_x_when_blob_appears_before_commit(container: Container) -> None:
    with (
        pytest.raises(FileExistsError),
        AtomicFile(container.url(), "xb", storage_options=container.options),
    ):
        container.put("key", OLD)  # another writer, after our open-time check
    assert_untouched(container)


# -- readers, faults --------------------------------------------------------------------------


def test_readers_never_see_a_block(container: Container) -> None:
    container.put("key", OLD)
    new = blob(6 * AZURE_PART + 100)
    seen: set[bytes] = set()
    stop = threading.Event()

    def poll() -> None:
        for _ in range(10000):  # bounded
            seen.add(container.get())
            if stop.is_set():
                return

    reader = threading.Thread(target=poll)
    reader.start()
    with AtomicFile(container.url(), "wb", storage_options=container.options) as f:
        for i in range(0, len(new), AZURE_PART // 2):
            f.write(new[i : i + AZURE_PART // 2])
            assert container.get() == OLD
    stop.set()
    reader.join()
    assert container.get() == new
    assert seen <= {OLD, new}


def test_missing_container(endpoint: str, form: Any) -> None:
    url = "az://no-such-container/key"
    for data in (b"small", blob(2 * AZURE_PART)):
        with pytest.raises(FileNotFoundError) as info:
            form.write(url, data, mode="wb", storage_options=azure_options(endpoint))
        assert isinstance(info.value, SessionFileError) and info.value.errno == errno.ENOENT
        assert info.value.filename == url


def test_server_killed_mid_upload(container: Container) -> None:
    """The writer reaches Azurite through a relay; SIGKILL it between two blocks: the write
    fails and the old blob is untouched behind it. The writer's service client is made
    with `retry_total=0` (adlfs has no option for it): with the SDK's retries the same
    failure takes over a minute."""
    import adlfs
    from azure.storage.blob.aio import BlobServiceClient

    container.put("key", OLD)
    proxy, via = relay(int(container.endpoint.rsplit(":", 1)[1]))
    options = azure_options(via)
    fs = adlfs.AzureBlobFileSystem(**options)
    fs.service_client = BlobServiceClient.from_connection_string(
        options["connection_string"], retry_total=0
    )
    try:
        with (
            pytest.raises(SessionFileError) as info,
            AtomicFile(f"{container.name}/key", "wb", fs=fs) as f,
        ):
            f.write(blob(2 * AZURE_PART))  # a block through the relay
            proxy.kill()
            f.write(blob(2 * AZURE_PART))  # the next: nobody answers
        assert info.value.errno is not None and info.value.__cause__ is not None
        assert_untouched(container)
    finally:
        proxy.kill()


def test_error_mapping_in_isolation() -> None:
    """Azurite grants every request: a refusal's mapping is checked on the SDK's error."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    from atomicfile import _azure

    denied = ClientAuthenticationError("no")
    denied.status_code = 403
    err = _azure.store_error(denied, "az://c/k")
    assert type(err) is PermissionError and err.errno == errno.EACCES
    conflict = HttpResponseError("x")
    conflict.error_code = "ConditionNotMet"  # type: ignore[attr-defined]
    assert _azure.store_error(conflict, "az://c/k", '"0x1"').errno == errno.ESTALE
    assert _azure.store_error(conflict, "az://c/k", "*").errno == errno.EEXIST


def test_credentials_never_in_errors_or_logs(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    from remote.clouds import AZURITE_KEY

    with caplog.at_level("DEBUG", logger="atomicfile"), pytest.raises(SessionFileError) as info:
        atomic_write("az://no-such-container/key", b"x", storage_options=container.options)
    af = AtomicFile(container.url(), "wb", storage_options=container.options)
    shown = [str(info.value), repr(info.value), str(info.value.__cause__), repr(af), caplog.text]
    af.discard()
    assert not [s for s in shown if AZURITE_KEY in s or "AccountKey" in s]


def test_missing_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['adlfs'] = None\n"
        "from atomicfile import AtomicFile\n"
        "try:\n    AtomicFile('abfs://c/k', 'w')\n"
        "except ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert b"pip install 'pyatomicfile[azure]'" in done.stdout


def test_batch(container: Container) -> None:
    """AtomicBatch over blobs (it takes fs=): an exception publishes none; a clean exit
    all."""
    from atomicfile import AtomicBatch

    container.put("a", OLD)
    with pytest.raises(Boom), AtomicBatch() as batch:
        batch.open(f"{container.name}/a", "wb", fs=container.fs).write(blob(2 * AZURE_PART))
        batch.write(f"{container.name}/b", b"new b", fs=container.fs)
        raise Boom
    assert container.keys() == ["a"] and container.get("a") == OLD
    with AtomicBatch() as batch:
        batch.write(f"{container.name}/a", b"new a", fs=container.fs)
        batch.write(f"{container.name}/b", b"new b", fs=container.fs)
    assert container.get("a") == b"new a" and container.get("b") == b"new b"


WRITER = r"""
import sys
from atomicfile import AtomicFile
af = AtomicFile(sys.argv[1], "wb", storage_options=eval(sys.argv[2]))
f = af.open()
f.write(b"x" * (3 * 2**20))
f.flush()
print("blocks staged", flush=True)
sys.stdin.read()
"""


def test_sigkilled_writer_leaves_the_blob(container: Container) -> None:
    """A killed writer's staged blocks stay uncommitted (never visible); the blob's next
    commit discards them, as Azure does after a week: nothing needs a sweep."""
    import os
    import signal

    container.put("key", OLD)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, container.url(), repr(container.options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline() == b"blocks staged\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert_untouched(container)
    assert container.uncommitted() == 2
    atomic_write(container.url(), blob(2 * AZURE_PART), storage_options=container.options)
    assert container.uncommitted() == 0


@pytest.mark.parametrize("scheme", ["az", "abfs", "abfss"])
def test_every_protocol_is_this_store(container: Container, scheme: str) -> None:
    from atomicfile import _store

    store, name = _store.resolve(container.url(scheme=scheme), None, container.options)
    assert name == container.url(scheme=scheme) and not store.batchable
    assert type(store).__module__ == "atomicfile._object"


# -- atomic_update: read with the ETag, fn, publish with If-Match / If-None-Match: * ----------


def test_lock_names_atomic_update(container: Container) -> None:
    with pytest.raises(ValueError, match="atomic_update"):
        AtomicFile(container.url(), "w", lock=True, storage_options=container.options)
    with pytest.raises(ValueError, match="atomic_update"):
        atomic_update(container.url(), str, lock=True, storage_options=container.options)  # type: ignore[call-overload]
    assert container.keys() == []


@pytest.mark.parametrize("size", [0, 2 * AZURE_PART], ids=["put", "blocks"])
def test_update_keeps_a_write_between_the_read_and_the_write(
    container: Container, form: Any, size: int
) -> None:
    """fn writes the blob itself the first time: the conditional commit (Put Blob, or Put
    Block List above a block) fails, fn runs again on the new content, both changes
    survive, and no block stays uncommitted."""
    container.put("key", b"a")
    seen: list[Any] = []
    pad = blob(size)

    def fn(old: bytes | None) -> bytes:
        seen.append(old)
        if len(seen) == 1:
            container.put("key", b"a+theirs")
        return (old or b"")[:8] + b"+mine" + pad

    opts = container.options
    new = update(form, container.url(), fn, binary=True, storage_options=opts)
    assert new == b"a+theirs+mine" + pad
    assert [s[:8] if s else s for s in seen] == [b"a", b"a+theirs"]
    assert container.get() == new and container.keys() == ["key"]
    assert container.uncommitted() == 0


def test_update_a_new_blob(container: Container, form: Any) -> None:
    """fn(None) for a missing blob; published with If-None-Match: *, so a blob created
    meanwhile is a conflict: fn runs again on it."""
    assert update(form, container.url("a"), str, storage_options=container.options) == "None"
    assert container.get("a") == b"None"
    seen: list[Any] = []

    def fn(old: str | None) -> str:
        seen.append(old)
        if len(seen) == 1:
            container.put("b", b"theirs+")
        return f"{old or ''}mine"

    assert update(form, container.url("b"), fn, storage_options=container.options) == "theirs+mine"
    assert seen == [None, "theirs+"]
    assert container.get("b") == b"theirs+mine" and container.keys() == ["a", "b"]


def test_update_timeout_names_the_blob(container: Container) -> None:
    container.put("key", b"0")
    calls: list[Any] = []

    def fn(old: str | None) -> str:
        calls.append(old)
        container.put("key", b"theirs")
        return "mine"

    with pytest.raises(TimeoutError) as info:
        atomic_update(container.url(), fn, timeout=0, storage_options=container.options)
    assert info.value.filename == container.url()
    assert isinstance(info.value.__cause__, SessionFileError)
    assert info.value.__cause__.errno == errno.ESTALE
    assert calls == ["0"] and container.get() == b"theirs" and container.keys() == ["key"]


def test_update_fn_raising_stages_nothing(container: Container, form: Any) -> None:
    """fn raising: its exception as it is, the blob untouched, no block staged."""
    container.put("key", OLD)
    boom = Boom("fn")

    def fn(old: str | None) -> str:
        raise boom

    with pytest.raises(Boom) as info:
        update(form, container.url(), fn, storage_options=container.options)
    assert info.value is boom
    assert_untouched(container)
    assert container.uncommitted() == 0


def test_sweep_is_a_value_error_that_says_why(container: Container) -> None:
    """Azure can't drop uncommitted blocks alone: clean_stale_temps says so instead of
    claiming to have swept; the CLI in one line, exit status 2."""
    with pytest.raises(ValueError, match=r"can't be swept: .*no call to drop.*a week"):
        clean_stale_temps(container.url("dir"), older_than=0, storage_options=container.options)
    env = {"AZURE_STORAGE_CONNECTION_STRING": container.options["connection_string"]}
    done = clean_cli(container.url("dir"), env)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.count(b"\n") == 1 and b"can't be swept" in done.stderr


def test_cli_update_of_a_blob(container: Container) -> None:
    """`atomicfile update az://… -- COMMAND`: COMMAND's output replaces the blob; a failing
    COMMAND changes nothing and its status is the exit status."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": container.options["connection_string"]}
    container.put("key", b"41")
    done = update_cli(container.url(), env, BUMP)
    assert done.returncode == 0, done.stderr
    assert container.get() == b"42\n"
    done = update_cli(container.url(), env, FAIL)
    assert done.returncode == 5 and done.stderr.count(b"\n") == 1
    assert container.get() == b"42\n" and container.keys() == ["key"]
    assert container.uncommitted() == 0
