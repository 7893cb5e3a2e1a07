"""All-or-nothing writes to S3 (a real moto_server on 127.0.0.1) and fsspec's memory store."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import warnings
from typing import Any

import pytest

import atomicfile
from atomicfile import AtomicFile, SessionFileError, _store, atomic_write, clean_stale_temps
from remote.s3server import PART, Bucket, HoldingRelay, MiB, Server, options

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
    """moto ignores If-Match on CompleteMultipartUpload, so the condition sent there (the
    same for a PUT and a completion) is checked in isolation: the ETag the copy came from,
    If-None-Match when there was no object or for 'x', none for 'w'; and the version
    `atomic_update` expects, for 'w'."""
    from atomicfile import _modes, _remote, _s3

    store = _s3.S3Store(None, "b/k", "s3://b/k")
    temp = _remote.RemoteTemp(store, _modes.parse_mode("ab"), None)  # type: ignore[arg-type]
    temp._version_read = '"abc"'
    assert _s3.condition(temp.expected(False)) == {"IfMatch": '"abc"'}
    temp._version_read = None  # there was no object
    assert _s3.condition(temp.expected(False)) == {"IfNoneMatch": "*"}
    assert _s3.condition(temp.expected(True)) == {"IfNoneMatch": "*"}
    write = _remote.RemoteTemp(store, _modes.parse_mode("wb"), None)  # type: ignore[arg-type]
    assert _s3.condition(write.expected(False)) == {}
    store.expect('"def"')
    assert _s3.condition(write.expected(False)) == {"IfMatch": '"def"'}
    store.expect(None)
    assert _s3.condition(write.expected(False)) == {"IfNoneMatch": "*"}


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


# -- interrupted, or left open at exit ---------------------------------------------------------


def test_sigint_during_create_multipart_upload_aborts_it(
    bucket: Bucket, holding_relay: HoldingRelay
) -> None:
    """A real SIGINT lands in the writer's thread while its CreateMultipartUpload is on the
    wire (held by the relay); the request reaches the server only after the interrupt was
    handled, so the upload is created after the writer gave up on the answer."""
    relay = holding_relay
    bucket.put("key", OLD)
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    def interrupt_while_held() -> None:
        if relay.held.wait(60):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            interrupted.wait(60)
        relay.release()  # now the server creates the upload

    previous = signal.signal(signal.SIGINT, on_sigint)
    interrupter = threading.Thread(target=interrupt_while_held)
    interrupter.start()
    try:
        with (
            pytest.raises(KeyboardInterrupt),
            AtomicFile(bucket.url(), "wb", storage_options=options(relay.url)) as f,
        ):
            f.write(blob(PART))  # a full part: CreateMultipartUpload, held by the relay
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupter.join()
    assert interrupted.is_set() and relay.answered.wait(60)  # the server made the upload
    assert_untouched(bucket)  # ... and it was aborted


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_signal_during_create_multipart_upload(
    bucket: Bucket, holding_relay: HoldingRelay, signum: int, status: int
) -> None:
    relay = holding_relay
    bucket.put("key", OLD)
    env = dict(os.environ, AWS_ENDPOINT_URL=relay.url)
    child = subprocess.Popen(
        [sys.executable, "-m", "atomicfile", "write", bucket.url()],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0,
    )  # fmt: skip
    assert child.stdin is not None and child.stderr is not None
    stdin = child.stdin.fileno()

    def feed() -> None:
        """More than a part: the writer starts its upload; the rest waits in the pipe."""
        data = memoryview(blob(PART + MiB))
        try:
            while data:
                data = data[os.write(stdin, data) :]
        except BrokenPipeError:
            pass  # the writer has exited

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        assert relay.held.wait(60), "the writer never started its multipart upload"
        child.send_signal(signum)
    finally:
        relay.release()
        returncode = child.wait(timeout=60)
        feeder.join()
        child.stdin.close()
    stderr = child.stderr.read()
    child.stderr.close()
    name = signal.Signals(signum).name
    assert returncode == status, stderr
    said = f"atomicfile: interrupted by {name}; {bucket.url()!r} left unchanged\n"
    assert stderr.decode() == said
    assert relay.answered.wait(60)  # the server made the upload
    assert_untouched(bucket)  # ... and it was aborted


OPEN_AT_EXIT = r"""
import sys
from atomicfile import AtomicFile
so = eval(sys.argv[2])
af = AtomicFile(sys.argv[1], "wb", storage_options=so)
f = af.open()
f.write(b"x" * (6 * 2**20))
f.write(b"y" * 100)  # left in the file's buffer
print("part uploaded", flush=True)
if sys.argv[3] == "raise":
    raise SystemExit("leaving with the write open")
"""


@pytest.mark.parametrize("how", ["end", "raise"])
def test_write_open_at_exit_is_aborted_and_exit_does_not_hang(bucket: Bucket, how: str) -> None:
    bucket.put("key", OLD)
    done = subprocess.run(
        [sys.executable, "-c", OPEN_AT_EXIT, bucket.url(), repr(bucket.options), how],
        capture_output=True, timeout=120,  # a hang fails the test here
    )  # fmt: skip
    assert done.stdout == b"part uploaded\n"
    assert done.returncode == (0 if how == "end" else 1), done.stderr
    assert b"Traceback" not in done.stderr
    assert_untouched(bucket)


COMMIT_AT_EXIT = r"""
import atexit, errno, sys
from atomicfile import AtomicFile, SessionFileError

def at_exit():  # registered before the first upload: runs after atomicfile's exit hook
    try:
        af.commit()
    except SessionFileError as exc:
        print("commit at exit:", errno.errorcode[exc.errno], flush=True)

atexit.register(at_exit)
af = AtomicFile(sys.argv[1], "wb", storage_options=eval(sys.argv[2]))
f = af.open()
f.write(b"x" * (6 * 2**20))
"""


def test_commit_after_the_exit_hook_fails(bucket: Bucket) -> None:
    bucket.put("key", OLD)
    done = subprocess.run(
        [sys.executable, "-c", COMMIT_AT_EXIT, bucket.url(), repr(bucket.options)],
        capture_output=True, timeout=120,  # a hang fails the test here
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"commit at exit: ECANCELED\n"  # never a truncated object
    assert_untouched(bucket)


UNREACHABLE_AT_EXIT = r"""
import sys
from atomicfile import AtomicFile
af = AtomicFile(sys.argv[1], "wb", storage_options=eval(sys.argv[2]))
f = af.open()
f.write(b"x" * (6 * 2**20))
print("part uploaded", flush=True)
sys.stdin.read()  # the test kills the relay, then closes stdin: exit with the write open
"""


def test_exit_with_the_store_unreachable_does_not_hang(
    bucket: Bucket, proxy: tuple[Server, str]
) -> None:
    """The exit hook's abort fails (the relay is gone); the write's `__del__`, later in the
    shutdown, must not wait for a request either. The upload is left for the sweep."""
    relay, relay_url = proxy
    bucket.put("key", OLD)
    so = options(relay_url, config_kwargs={"retries": {"max_attempts": 1}})
    child = subprocess.Popen(
        [sys.executable, "-c", UNREACHABLE_AT_EXIT, bucket.url(), repr(so)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline() == b"part uploaded\n"
    relay.kill()
    _, stderr = child.communicate(timeout=120)  # a hang fails the test here
    assert child.returncode == 0, stderr
    assert bucket.get() == OLD and bucket.keys() == ["key"]
    assert bucket.uploads() == ["key"]  # left for the sweep, as documented
    assert clean_stale_temps(bucket.url(""), older_than=0, storage_options=bucket.options)
    assert_untouched(bucket)


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

    from atomicfile._s3 import stale

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


NEIGHBOURS = ["team/alice", "team/alice.csv", "team/alice2/y"]


def start_uploads(bucket: Bucket, *keys: str) -> dict[str, str]:
    """An incomplete upload per key (as killed writers leave them): key -> its name."""
    started = {}
    for key in keys:
        upload = bucket.fs.call_s3("create_multipart_upload", Bucket=bucket.name, Key=key)
        started[key] = f"{bucket.url(key)}?uploadId={upload['UploadId']}"
    return started


@pytest.mark.parametrize("url", ["team/alice", "team/alice/"])
def test_sweep_of_a_prefix_stays_in_its_directory(bucket: Bucket, url: str) -> None:
    started = start_uploads(bucket, "team/alice/x", "team/alice/sub/z", *NEIGHBOURS)
    swept = clean_stale_temps(bucket.url(url), older_than=0, storage_options=bucket.options)
    assert swept == sorted([started["team/alice/x"], started["team/alice/sub/z"]])
    assert bucket.uploads() == NEIGHBOURS


def test_sweep_of_a_raw_prefix_ends_with_a_star(bucket: Bucket) -> None:
    started = start_uploads(bucket, "team/alice/x", "team/bob/x", *NEIGHBOURS)
    swept = clean_stale_temps(bucket.url("team/alice*"), older_than=0,
                              storage_options=bucket.options)  # fmt: skip
    assert swept == sorted(started[k] for k in ["team/alice/x", *NEIGHBOURS])
    assert bucket.uploads() == ["team/bob/x"]
    with pytest.raises(ValueError, match=r"only at the end"):
        clean_stale_temps(bucket.url("team/*/x"), older_than=0, storage_options=bucket.options)


def test_sweep_of_upath_targets(bucket: Bucket, tmp_path: Any) -> None:
    """A UPath is swept by the store that holds it: an s3:// one aborts the uploads under
    its prefix, a local one sweeps the directory; the memory store has nothing to sweep
    (a memory write's temp is an anonymous local file)."""
    upath = pytest.importorskip("upath")
    started = start_uploads(bucket, "team/alice/x", *NEIGHBOURS)
    prefix = upath.UPath(bucket.url("team/alice"), **bucket.options)
    assert clean_stale_temps(prefix, older_than=0) == [started["team/alice/x"]]
    assert bucket.uploads() == NEIGHBOURS
    with pytest.raises(ValueError, match="older_than"):
        clean_stale_temps(prefix)
    with pytest.raises(ValueError, match="target= applies to a local directory"):
        clean_stale_temps(prefix, older_than=0, target="x")
    stale_temp = tmp_path / ".f.0123456789abcdef.tmp"
    stale_temp.write_bytes(b"left by a killed writer")
    (tmp_path / "f").write_bytes(b"kept")
    assert clean_stale_temps(upath.UPath(tmp_path)) == [str(stale_temp)]
    assert os.listdir(tmp_path) == ["f"]
    assert clean_stale_temps("memory://atomicfile-tests/", older_than=0) == []


def test_cli_clean_of_a_prefix_stays_in_its_directory(bucket: Bucket) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL=bucket.endpoint)
    started = start_uploads(bucket, "team/alice/x", *NEIGHBOURS)
    clean = [sys.executable, "-m", "atomicfile", "clean", "--older-than", "1h"]
    done = subprocess.run([*clean, bucket.url("team/alice")], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == started["team/alice/x"] + "\n"
    assert bucket.uploads() == NEIGHBOURS
    done = subprocess.run([*clean, bucket.url("team/alice*")], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "".join(sorted(started[k] + "\n" for k in NEIGHBOURS))
    assert bucket.uploads() == []


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


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert "Traceback" not in text and text.startswith("atomicfile: ")
    return text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["write", "--no-fsync", "{url}"], "durable=False means nothing for an object"),
        (["write", "--mode", "0600", "{url}"], "permissions means nothing for an object"),
        (["write", "--no-follow", "{url}"], "follow_symlinks=False means nothing for an object"),
        (["write", "hdfs://h/key"], "the 'hdfs' store is not supported"),
        (["write", "ftp://h/key"], "the 'ftp' store is not supported"),
        (["clean", "{url}"], "needs --older-than"),
        (["clean", "--older-than", "1h", "--recursive", "{url}"], "--recursive"),
        (["clean", "--older-than", "1h", "--target", "key", "{url}"], "--target"),
    ],
    ids=["no-fsync", "mode", "no-follow", "hdfs", "ftp", "clean-no-age", "clean-r", "clean-t"],
)
def test_cli_usage_errors_with_a_url(bucket: Bucket, args: list[str], says: str) -> None:
    """Options that don't fit the target: one line on stderr, exit 2, nothing uploaded or
    aborted."""
    bucket.put("key", OLD)
    start_uploads(bucket, "key")
    env = dict(os.environ, AWS_ENDPOINT_URL=bucket.endpoint)
    argv = [a.format(url=bucket.url()) for a in args]
    done = subprocess.run([sys.executable, "-m", "atomicfile", *argv], input=b"new",
                          env=env, capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in one_line(done.stderr)
    assert done.stdout == b""
    assert bucket.get() == OLD and bucket.keys() == ["key"] and bucket.uploads() == ["key"]


@pytest.mark.parametrize("args", [["write", "s3://b/key"], ["clean", "--older-than", "1h", "s3://b/p"]])
def test_cli_without_the_extra_says_so_in_one_line(args: list[str]) -> None:
    """`python -S`: the same interpreter without its site-packages, so without fsspec and
    s3fs (a real missing extra; atomicfile itself comes from PYTHONPATH)."""
    done = subprocess.run([sys.executable, "-S", "-m", "atomicfile", *args], input=b"new",
                          capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "pip install 'pyatomicfile[s3]'" in one_line(done.stderr)


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
    supported = (
        "supported are s3:// (s3fs), gs:// (gcsfs), az:// and abfs:// (adlfs), memory:// "
        "(fsspec's memory file system) and local files"
    )
    with pytest.raises(ValueError, match=re.escape(supported)):
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
