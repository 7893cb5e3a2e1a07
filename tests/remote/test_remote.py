"""All-or-nothing writes to S3 (a real moto_server on 127.0.0.1) and fsspec's memory store."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from typing import Any

import pytest

import atomicfile
from atomicfile import AtomicFile, SessionFileError, _store, atomic_write, clean_stale_temps
from remote.s3server import PART, Bucket, MiB, Server, options

OLD = b"old content"


def blob(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def assert_untouched(bucket: Bucket, key: str = "key") -> None:
    assert bucket.get(key) == OLD
    assert bucket.keys() == [key]
    assert bucket.uploads() == []


# -- writes that succeed ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [100, 6 * MiB], ids=["100B", "6MiB"])
def test_binary_write_replaces_object(bucket: Bucket, form: Any, size: int) -> None:
    bucket.put("key", OLD)
    data = blob(size)
    form.write(bucket.url(), data[: size // 2], data[size // 2 :], mode="wb",
               storage_options=bucket.options)  # fmt: skip
    assert bucket.get() == data
    assert bucket.keys() == ["key"]
    assert bucket.uploads() == []


def test_60mib_multipart_write(bucket: Bucket) -> None:
    bucket.put("key", OLD)
    chunk = blob(MiB)
    with AtomicFile(bucket.url(), "wb", storage_options=bucket.options) as f:
        for _ in range(60):
            f.write(chunk)
    assert bucket.get() == chunk * 60
    assert bucket.keys() == ["key"]
    assert bucket.uploads() == []


def test_text_mode(bucket: Bucket, form: Any) -> None:
    form.write(bucket.url(), "héllo\n", "wörld\n", mode="w", encoding="utf-8", newline="\r\n",
               storage_options=bucket.options)  # fmt: skip
    assert bucket.get() == "héllo\r\nwörld\r\n".encode()
    assert bucket.uploads() == []


def test_atomic_write_and_async_form(bucket: Bucket, form: Any) -> None:
    form.write_all(bucket.url(), b"via atomic_write", storage_options=bucket.options)
    assert bucket.get() == b"via atomic_write"
    form.write_all(bucket.url(), "text", mode="a", storage_options=bucket.options)
    assert bucket.get() == b"via atomic_writetext"


def test_upath_and_fs_forms(bucket: Bucket) -> None:
    upath = pytest.importorskip("upath")
    path = upath.UPath(bucket.url("u"), **bucket.options)
    with AtomicFile(path, "w") as f:
        f.write("from a UPath")
        assert f.name == bucket.url("u")
    with AtomicFile(f"{bucket.name}/f", "wb", fs=bucket.fs) as g:
        g.write(b"from fs=")
    assert bucket.get("u") == b"from a UPath"
    assert bucket.get("f") == b"from fs="
    assert bucket.keys() == ["f", "u"]


def test_append_and_r_plus_start_from_object(bucket: Bucket, form: Any) -> None:
    bucket.put("key", OLD)
    form.write(bucket.url(), b" + more", mode="ab", storage_options=bucket.options)
    assert bucket.get() == OLD + b" + more"
    form.write(bucket.url(), b"NEW", mode="r+b", inside=lambda f: None,
               storage_options=bucket.options)  # fmt: skip
    assert bucket.get() == b"NEW" + (OLD + b" + more")[3:]
    assert bucket.uploads() == []


def test_append_larger_than_a_part(bucket: Bucket) -> None:
    bucket.put("key", blob(6 * MiB))
    with AtomicFile(bucket.url(), "ab", storage_options=bucket.options) as f:
        f.write(b"tail")
    assert bucket.get() == blob(6 * MiB) + b"tail"
    assert bucket.uploads() == []


# -- exceptions, discard, GC -----------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    "written", [0, 100, 6 * MiB], ids=["before-write", "after-100B", "after-a-part"]
)
def test_exception_keeps_old_object(bucket: Bucket, form: Any, written: int) -> None:
    bucket.put("key", OLD)
    chunks = [blob(written)] if written else []
    with pytest.raises(Boom):
        form.write(bucket.url(), *chunks, mode="wb", raise_=Boom(),
                   storage_options=bucket.options)  # fmt: skip
    assert_untouched(bucket)


def test_exception_at_55_percent_of_60mib(bucket: Bucket) -> None:
    bucket.put("key", OLD)
    chunk = blob(MiB)
    with pytest.raises(Boom), AtomicFile(bucket.url(), "wb", storage_options=bucket.options) as f:
        for i in range(60):
            if i == 33:
                assert bucket.uploads() == ["key"]  # parts are on the server, unpublished
                raise Boom
            f.write(chunk)
    assert_untouched(bucket)


def test_discard_aborts(bucket: Bucket) -> None:
    bucket.put("key", OLD)
    af = AtomicFile(bucket.url(), "wb", storage_options=bucket.options)
    f = af.open()
    f.write(blob(6 * MiB))
    assert af.temp_path is not None and "uploadId=" in af.temp_path
    af.discard()
    assert_untouched(bucket)


def test_dropped_write_is_aborted_by_gc(bucket: Bucket) -> None:
    bucket.put("key", OLD)
    af = AtomicFile(bucket.url(), "wb", storage_options=bucket.options)
    f = af.open()
    f.write(blob(6 * MiB))
    assert bucket.uploads() == ["key"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del af, f
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in seen)
    assert_untouched(bucket)


# -- create-only ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 100, 6 * MiB], ids=["empty", "100B", "multipart"])
def test_x_racing_x_one_wins(bucket: Bucket, size: int) -> None:
    """Both writers open (and pass the open-time check) before either commits; the
    conditional PUT / completion lets exactly one win. The commits run one after the other:
    moto checks If-None-Match and stores the object in two steps, so two completions landing
    at the same instant can both pass there (S3 itself decides them atomically)."""
    files = [AtomicFile(bucket.url(), "xb", storage_options=bucket.options) for _ in range(2)]
    for i, af in enumerate(files):
        af.open().write(bytes([65 + i]) * size)
    if size > PART:
        assert bucket.uploads() == ["key", "key"]
    files[1].commit()
    with pytest.raises(FileExistsError) as info:
        files[0].commit()
    assert isinstance(info.value, SessionFileError) and info.value.errno == errno.EEXIST
    assert info.value.step == "commit"
    assert bucket.get() == b"B" * size
    assert bucket.keys() == ["key"]
    assert bucket.uploads() == []


def test_x_empty_on_existing_key(bucket: Bucket, form: Any) -> None:
    bucket.put("key", OLD)
    with pytest.raises(FileExistsError) as info:
        form.write(bucket.url(), mode="xb", storage_options=bucket.options)
    assert info.value.errno == errno.EEXIST
    assert_untouched(bucket)


def test_x_empty_when_key_appears_before_commit(bucket: Bucket) -> None:
    """The create-only condition is sent with the empty PUT itself (s3fs's touch is not)."""
    with (
        pytest.raises(FileExistsError) as info,
        AtomicFile(bucket.url(), "xb", storage_options=bucket.options),
    ):
        bucket.put("key", OLD)  # another writer, after our open-time check
    assert isinstance(info.value, SessionFileError) and info.value.step == "commit"
    assert_untouched(bucket)


def test_append_detects_concurrent_update(bucket: Bucket) -> None:
    """'a' commits with If-Match on the ETag it copied (moto honours it on a PUT)."""
    bucket.put("key", OLD)
    with (
        pytest.raises(SessionFileError) as info,
        AtomicFile(bucket.url(), "ab", storage_options=bucket.options) as f,
    ):
        f.write(b" mine")
        bucket.put("key", b"theirs")
    assert info.value.errno == errno.ESTALE
    assert bucket.get() == b"theirs"
    assert bucket.uploads() == []


def test_append_condition_on_multipart_completion() -> None:
    """moto ignores If-Match on CompleteMultipartUpload, so the condition sent there is
    checked in isolation: the same ETag the copy came from."""
    from atomicfile import _modes, _remote

    class FakeTarget:
        kind, url, key, fs = "memory", "s3://b/k", "b/k", None

    temp = _remote.RemoteTemp(FakeTarget(), _modes.parse_mode("ab"), None)  # type: ignore[arg-type]
    temp._etag, temp._existed = '"abc"', True
    temp.store = object()  # type: ignore[assignment]
    assert temp._condition(False) == {"IfMatch": '"abc"'}
    temp._existed = False
    assert temp._condition(False) == {"IfNoneMatch": "*"}
    assert temp._condition(True) == {"IfNoneMatch": "*"}


# -- readers, faults --------------------------------------------------------------------------


def test_readers_never_see_a_part(bucket: Bucket) -> None:
    bucket.put("key", OLD)
    new = blob(3 * PART + 100)
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
        for i in range(0, len(new), MiB):
            f.write(new[i : i + MiB])
            assert bucket.get() == OLD  # parts uploaded so far are not visible
    stop.set()
    reader.join()
    assert bucket.get() == new
    assert seen <= {OLD, new}


def test_missing_bucket(endpoint: str, form: Any) -> None:
    url = "s3://no-such-bucket-here/key"
    for data in (b"small", blob(6 * MiB)):
        with pytest.raises(FileNotFoundError) as info:
            form.write(url, data, mode="wb", storage_options=options(endpoint))
        assert isinstance(info.value, SessionFileError) and info.value.errno == errno.ENOENT
        assert info.value.filename == url


def test_server_killed_mid_upload(
    bucket: Bucket, proxy: tuple[Server, str], caplog: pytest.LogCaptureFixture
) -> None:
    relay, relay_url = proxy
    bucket.put("key", OLD)
    so = options(relay_url, config_kwargs={"retries": {"max_attempts": 1}})
    with (
        pytest.raises(SessionFileError) as info,
        AtomicFile(bucket.url(), "wb", storage_options=so) as f,
    ):
        f.write(blob(6 * MiB))  # one part through the relay
        relay.kill()
        f.write(blob(6 * MiB))  # the next part: nobody answers
    err = info.value
    assert isinstance(err, OSError) and err.errno is not None
    assert err.__cause__ is not None and err.__cause__.__cause__ is not None
    assert bucket.get() == OLD and bucket.keys() == ["key"]
    # The abort could not reach the server either: the upload is left for the sweep.
    assert bucket.uploads() == ["key"]
    assert clean_stale_temps(bucket.url(""), older_than=0, storage_options=bucket.options)
    assert bucket.uploads() == []


# -- a killed writer, the sweep ----------------------------------------------------------------

WRITER = r"""
import sys
from atomicfile import AtomicFile
so = eval(sys.argv[2])
af = AtomicFile(sys.argv[1], "wb", storage_options=so)
f = af.open()
f.write(b"x" * (6 * 2**20))
print("part uploaded", flush=True)
sys.stdin.read()
"""


def test_sigkilled_writer_upload_is_swept(bucket: Bucket) -> None:
    bucket.put("keep/key", OLD)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, bucket.url("keep/key"), repr(bucket.options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline() == b"part uploaded\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.stdin is not None
    child.stdin.close()
    child.stdout.close()
    assert bucket.uploads() == ["keep/key"]
    # Another prefix is not touched; a dry run aborts nothing.
    assert (
        clean_stale_temps(bucket.url("other/"), older_than=0, storage_options=bucket.options) == []
    )
    found = clean_stale_temps(
        bucket.url("keep/"), older_than=3600, dry_run=True, storage_options=bucket.options
    )
    assert len(found) == 1 and found[0].startswith(bucket.url("keep/key") + "?uploadId=")
    assert bucket.uploads() == ["keep/key"]
    # moto dates every upload in 2010: any limit finds it (see test_sweep_never_aborts_young).
    assert clean_stale_temps(bucket.url("keep/"), older_than=3600,
                             storage_options=bucket.options) == found  # fmt: skip
    assert bucket.uploads() == []
    assert bucket.get("keep/key") == OLD


def test_sweep_never_aborts_young() -> None:
    """moto's upload timestamps are fixed (2010): the age rule is checked in isolation."""
    from datetime import datetime, timedelta, timezone

    from atomicfile._remote_clean import stale

    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    uploads = [
        {"Key": "old", "Initiated": now - timedelta(hours=25)},
        {"Key": "young", "Initiated": now - timedelta(hours=23)},
        {"Key": "future", "Initiated": now + timedelta(hours=1)},
    ]
    assert [u["Key"] for u in stale(uploads, now, 24 * 3600)] == ["old"]
    assert [u["Key"] for u in stale(uploads, now, 0)] == ["old", "young"]


def test_sweep_needs_older_than(bucket: Bucket) -> None:
    with pytest.raises(ValueError, match="older_than"):
        clean_stale_temps(bucket.url(""), storage_options=bucket.options)


# -- the command ------------------------------------------------------------------------------


def test_cli_write_and_clean(bucket: Bucket, tmp_path: Any) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL=bucket.endpoint)
    data = blob(6 * MiB + 17)
    done = subprocess.run(
        [sys.executable, "-m", "atomicfile", "write", bucket.url("cli")],
        input=data, env=env, capture_output=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert bucket.get("cli") == data
    assert bucket.uploads() == []
    start = bucket.fs.call_s3("create_multipart_upload", Bucket=bucket.name, Key="p/left")
    done = subprocess.run(
        [sys.executable, "-m", "atomicfile", "clean", bucket.url("p/"), "--older-than", "24h"],
        env=env, capture_output=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{bucket.url('p/left')}?uploadId={start['UploadId']}\n"
    assert bucket.uploads() == []


# -- options, stores, imports ------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [{"permissions": 0o600}, {"follow_symlinks": False}, {"durable": False}],
    ids=["permissions", "follow_symlinks", "durable"],
)
def test_local_only_options_refused(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="means nothing for an object"):
        AtomicFile("s3://bucket/key", "w", **option)


@pytest.mark.parametrize("url", ["hdfs://h/k", "http://h/k", "ftp://h/k"])
def test_unsupported_store_named(url: str) -> None:
    with pytest.raises(ValueError, match=r"supported are s3:// \(s3fs\), memory://"):
        AtomicFile(url, "w")


def test_storage_options_on_a_local_path(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="storage_options apply to an fsspec URL"):
        AtomicFile(str(tmp_path / "f"), "w", storage_options={})
    assert os.listdir(tmp_path) == []


def test_file_url_and_local_fs_use_the_local_store(tmp_path: Any) -> None:
    import fsspec

    atomic_write(f"file://{tmp_path}/a", b"1")
    atomic_write(f"{tmp_path}/b", b"2", fs=fsspec.filesystem("file"))
    af = AtomicFile(f"file://{tmp_path}/c", "wb")
    assert af.store is _store.LOCAL and af.path == f"{tmp_path}/c"
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    assert (tmp_path / "a").read_bytes() == b"1"


def test_memory_store(form: Any) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    url = "memory://atomicfile-tests/obj"
    form.write_all(url, b"old")
    with pytest.raises(Boom):
        form.write(url, b"new", mode="wb", raise_=Boom())
    assert fs.cat(url) == b"old"
    form.write(url, b"+", mode="ab")
    assert fs.cat(url) == b"old+"
    with pytest.raises(FileExistsError):
        form.write_all(url, b"", mode="x")
    assert fs.cat(url) == b"old+"
    fs.rm(url)


def test_error_mapping_in_isolation() -> None:
    """moto grants every request: a refusal's mapping is checked on the error itself."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    from atomicfile._remote import store_error

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
    err = store_error(PermissionError("no"), "s3://b/k")
    assert type(err) is PermissionError and err.errno == errno.EACCES
    wrapped = OSError("x")
    wrapped.__cause__ = denied
    assert store_error(wrapped, "s3://b/k").errno == errno.EACCES
    dropped = store_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "s3://b/k")
    assert dropped.errno == errno.EIO and isinstance(dropped.__cause__, EndpointConnectionError)
    wrapped_err = SessionFileError("s3://b/k", "atomic write", err, "commit")
    assert isinstance(wrapped_err, PermissionError)


def test_log_events_name_the_url(bucket: Bucket, caplog: pytest.LogCaptureFixture) -> None:
    bucket.put("key", OLD)
    with caplog.at_level(logging.DEBUG, logger="atomicfile"):
        atomic_write(bucket.url(), b"logged", storage_options=bucket.options)
        with pytest.raises(Boom), AtomicFile(bucket.url(), "wb", storage_options=bucket.options):
            raise Boom
    fields = [(r.getMessage(), getattr(r, "target_path", None)) for r in caplog.records]
    from atomicfile import _log

    assert (_log.STARTED, bucket.url()) in fields
    assert (_log.COMPLETED, bucket.url()) in fields
    assert (_log.FAILED, bucket.url()) in fields


IMPORTS = r"""
import sys, os, tempfile
import atomicfile
d = tempfile.mkdtemp()
atomicfile.atomic_write(os.path.join(d, "f"), b"x")
with atomicfile.AtomicFile(os.path.join(d, "g"), "w") as f:
    f.write("y")
loaded = sorted(m for m in ("fsspec", "s3fs", "upath", "botocore") if m in sys.modules)
print(loaded)
"""


def test_local_writes_import_no_remote_package() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, check=True)
    assert done.stdout == b"[]\n"


def test_missing_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['fsspec'] = None\n"
        "from atomicfile import AtomicFile\n"
        "try:\n    AtomicFile('s3://b/k', 'w')\n"
        "except ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert b"pip install 'pyatomicfile[s3]'" in done.stdout


def test_async_exception_and_cancel_keep_old(bucket: Bucket) -> None:
    bucket.put("key", OLD)

    async def main() -> None:
        async with AtomicFile(bucket.url(), "wb", storage_options=bucket.options) as f:
            await f.write(blob(6 * MiB))
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert_untouched(bucket)
    assert atomicfile.atomic_write_async is not None
