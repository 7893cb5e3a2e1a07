"""atomic_update on object stores (a real moto_server on 127.0.0.1, and fsspec's memory
store): read with the ETag, fn, a conditional write; on a conflict, read and call fn again.

moto's limits, written down where they matter: moto honours If-Match and If-None-Match on a
PUT (what these small objects use) but not on CompleteMultipartUpload, so the condition
sent there is checked in isolation (test_remote.py,
test_append_condition_on_multipart_completion); and moto's check-then-store is not one step
under concurrent requests, so concurrent updaters are counted on the memory store, whose
check and store are one step."""

from __future__ import annotations

import errno
import threading
from typing import Any

import pytest

from atomicfile import AtomicFile, SessionFileError, atomic_update, atomic_update_async
from remote.s3server import Bucket, MiB


def update(form: Any, target: Any, fn: Any, **options: Any) -> Any:
    """atomic_update through the form: sync, or atomic_update_async on its runtime."""
    if not form.is_async:
        return atomic_update(target, fn, **options)
    result: list[Any] = []

    async def main() -> None:
        result.append(await atomic_update_async(target, fn, **options))

    form.run(main)
    return result[0]


def test_a_write_between_the_read_and_the_write_is_kept(bucket: Bucket, form: Any) -> None:
    """Another writer publishes while fn runs (fn itself writes the object, the first time):
    the conditional write fails, fn runs again on the new content, both changes survive."""
    bucket.put("key", b"a\n")
    seen: list[Any] = []

    def fn(old: str | None) -> str:
        seen.append(old)
        if len(seen) == 1:
            bucket.put("key", b"a\ntheirs\n")
        return f"{old}mine\n"

    assert update(form, bucket.url(), fn, storage_options=bucket.options) == "a\ntheirs\nmine\n"
    assert seen == ["a\n", "a\ntheirs\n"]
    assert bucket.get() == b"a\ntheirs\nmine\n"
    assert bucket.keys() == ["key"] and bucket.uploads() == []


def test_a_new_key(bucket: Bucket, form: Any) -> None:
    """fn(None) for a missing key; the write is If-None-Match: *, so a key created meanwhile
    is a conflict: fn runs again on what was created."""
    assert (
        update(form, bucket.url("a"), lambda old: f"{old}", storage_options=bucket.options)
        == "None"
    )
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
    assert bucket.get("b") == b"theirs+mine"
    assert bucket.keys() == ["a", "b"] and bucket.uploads() == []


def test_timeout_names_the_target(bucket: Bucket) -> None:
    """timeout=0 tries once: a conflict is then a TimeoutError naming the target, and what
    the other writer published stays."""
    bucket.put("key", b"0")
    calls = []

    def fn(old: str | None) -> str:
        calls.append(old)
        bucket.put("key", b"theirs")
        return "mine"

    with pytest.raises(TimeoutError) as info:
        atomic_update(bucket.url(), fn, timeout=0, storage_options=bucket.options)
    assert info.value.filename == bucket.url() and bucket.url() in str(info.value)
    assert isinstance(info.value.__cause__, SessionFileError)
    assert info.value.__cause__.errno == errno.ESTALE
    assert calls == ["0"]
    assert bucket.get() == b"theirs"
    assert bucket.keys() == ["key"] and bucket.uploads() == []
    with pytest.raises(ValueError, match="timeout must be"):
        atomic_update(bucket.url(), fn, timeout=-1, storage_options=bucket.options)


def test_fn_raising_changes_nothing(bucket: Bucket, form: Any) -> None:
    bucket.put("key", b"old")
    boom = RuntimeError("boom")

    def fn(old: str | None) -> str:
        raise boom

    with pytest.raises(RuntimeError) as info:
        update(form, bucket.url(), fn, storage_options=bucket.options)
    assert info.value is boom
    assert bucket.get() == b"old"
    assert bucket.keys() == ["key"] and bucket.uploads() == []


def test_an_object_larger_than_a_part(bucket: Bucket) -> None:
    """A new content of several parts is a multipart upload, completed with If-Match."""
    bucket.put("key", b"x")
    new = atomic_update(bucket.url(), lambda old: old * (6 * MiB), binary=True,
                        storage_options=bucket.options)  # fmt: skip
    assert len(new) == 6 * MiB and bucket.get() == new
    assert bucket.uploads() == []


def test_wrong_type_and_failures_leave_no_upload(bucket: Bucket, endpoint: str) -> None:
    bucket.put("key", b"old")
    with pytest.raises(TypeError, match="must return str"):
        atomic_update(bucket.url(), lambda old: b"bytes", storage_options=bucket.options)
    with pytest.raises(SessionFileError) as info:
        atomic_update(f"s3://{bucket.name}-missing/key", lambda old: "x",
                      storage_options=bucket.options)  # fmt: skip
    # A missing bucket reads as a missing key (as for 'a'); the write then reports it.
    assert info.value.errno == errno.ENOENT and info.value.step == "commit"
    assert bucket.get() == b"old" and bucket.keys() == ["key"] and bucket.uploads() == []


def test_lock_on_an_object_names_atomic_update(bucket: Bucket) -> None:
    with pytest.raises(ValueError, match="atomic_update"):
        AtomicFile(bucket.url(), "w", lock=True, storage_options=bucket.options)
    with pytest.raises(ValueError, match="atomic_update"):
        atomic_update(bucket.url(), str, lock=True, storage_options=bucket.options)  # type: ignore[call-overload]
    assert bucket.keys() == [] and bucket.uploads() == []


def test_memory_store_threads_lose_no_increment() -> None:
    """8 threads x 25 updates of one object in the memory store end at exactly 200 (each
    conflict is retried)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    url = "memory://atomicfile-tests/counter"

    def bump() -> None:
        for _ in range(25):
            atomic_update(url, lambda old: str(int(old or "0") + 1))

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fs.cat(url) == b"200"
    fs.rm(url)


def test_memory_store_conflict_is_retried() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    url = "memory://atomicfile-tests/conflict"
    fs.pipe(url, b"a")
    seen: list[Any] = []

    def fn(old: str | None) -> str:
        seen.append(old)
        if len(seen) == 1:
            fs.pipe(url, b"b")
        return f"{old}+"

    assert atomic_update(url, fn) == "b+"
    assert seen == ["a", "b"] and fs.cat(url) == b"b+"
    fs.rm(url)


def test_cli_update_of_an_object(bucket: Bucket) -> None:
    """`atomicfile update s3://… -- COMMAND`: COMMAND's output replaces the object; a
    failing COMMAND changes nothing and its status is the exit status."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, AWS_ENDPOINT_URL=bucket.endpoint)
    bucket.put("key", b"41")
    update = [sys.executable, "-m", "atomicfile", "update", bucket.url(), "--", sys.executable]
    bump = "import sys; print(int(sys.stdin.read() or 0) + 1)"
    done = subprocess.run([*update, "-c", bump], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert bucket.get() == b"42\n"
    fail = "import sys; sys.stdin.read(); print('partial'); sys.exit(5)"
    done = subprocess.run([*update, "-c", fail], env=env, capture_output=True, timeout=60)
    assert done.returncode == 5
    assert done.stderr.decode().count("\n") == 1 and "exited with status 5" in done.stderr.decode()
    assert bucket.get() == b"42\n"
    assert bucket.keys() == ["key"] and bucket.uploads() == []
