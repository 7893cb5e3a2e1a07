"""What users see from a type checker (`mypy --strict`, with `warn_unused_ignores`).

Never run, only checked: `assert_type` pins what must type-check, and each
`# type: ignore[code]` marks a line that must NOT type-check (if the error vanished, the
unused ignore fails the check). Not collected by pytest (no `test_` prefix).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Any, BinaryIO

from typing_extensions import assert_type

from atomicfile import (
    AsyncFile,
    AtomicFile,
    SessionFileError,
    atomic_update,
    atomic_update_async,
    atomic_write,
    atomic_write_async,
)


def sync_text(p: str) -> None:
    with AtomicFile(p) as f:
        assert_type(f, io.TextIOWrapper)
        assert_type(f.write("x"), int)
    with AtomicFile(p, "w", encoding="utf-8", errors="strict", newline="") as f:
        assert_type(f, io.TextIOWrapper)
    for_each_text_mode: list[AtomicFile[io.TextIOWrapper]] = [
        AtomicFile(p, "w"), AtomicFile(p, "wt"), AtomicFile(p, "x"), AtomicFile(p, "a"),
        AtomicFile(p, "r+"), AtomicFile(p, "w+"), AtomicFile(p, "a+"), AtomicFile(p, "x+t"),
    ]  # fmt: skip
    assert_type(for_each_text_mode[0].open(), io.TextIOWrapper)


def sync_binary(p: Path, b: bytes, fd_path: os.PathLike[str]) -> None:
    with AtomicFile(p, "wb") as f:
        assert_type(f, io.BufferedWriter)
    with AtomicFile(p, "ab") as f:
        assert_type(f, io.BufferedWriter)
    with AtomicFile(p, "xb") as f:
        assert_type(f, io.BufferedWriter)
    with AtomicFile(p, "r+b") as f:
        assert_type(f, io.BufferedRandom)
        assert_type(f.read(), bytes)
    with AtomicFile(p, "wb+") as f:
        assert_type(f, io.BufferedRandom)
    with AtomicFile(p, "ab+") as f:
        assert_type(f, io.BufferedRandom)
    with AtomicFile(p, "wb", buffering=0) as f:
        assert_type(f, io.FileIO)
    with AtomicFile(p, "r+b", 0) as f:
        assert_type(f, io.FileIO)
    with AtomicFile(p, "wb", buffering=4096) as f:
        assert_type(f, BinaryIO)
    with AtomicFile(os.fsencode(p), "wb") as f:
        assert_type(f, io.BufferedWriter)
    with AtomicFile(fd_path, "wb") as f:
        assert_type(f, io.BufferedWriter)
        f.write(b)
        f.write(bytearray(b))
        f.write(memoryview(b))


def sync_options(p: str) -> None:
    import logging

    def hook(target: Path, current: os.stat_result | None) -> int:
        return 0o600

    AtomicFile(p, permissions=0o600)
    AtomicFile(p, permissions=hook)
    AtomicFile(p, permissions=None, logger=logging.getLogger("x"))
    AtomicFile(p, logger=logging.LoggerAdapter(logging.getLogger("x"), {"k": 1}))
    AtomicFile(p, durable=False, follow_symlinks=False)
    af = AtomicFile(p, "wb")
    assert_type(af.path, str)
    assert_type(af.mode, str)
    assert_type(af.temp_path, str | None)
    assert_type(af.commit(), None)
    assert_type(af.discard(), None)


def modes_checked_at_run_time(p: str) -> None:
    # As with typeshed's open(): a mode outside the literals falls to the `str` overload
    # (IO[Any]), and the ValueError comes at run time, before any I/O.
    assert_type(AtomicFile(p, "r"), AtomicFile[IO[Any]])
    assert_type(AtomicFile(p, "wb", encoding="utf-8"), AtomicFile[IO[Any]])
    assert_type(AtomicFile(p, "wq"), AtomicFile[IO[Any]])


def sync_must_not_type_check(p: str, b: bytes) -> None:
    AtomicFile(p, permissions="644")  # type: ignore[call-overload]
    AtomicFile(p, 0)  # type: ignore[call-overload]
    AtomicFile(123)  # type: ignore[call-overload]
    with AtomicFile(p) as text:
        text.write(b)  # type: ignore[arg-type]
    with AtomicFile(p, "wb") as binary:
        binary.write("str")  # type: ignore[arg-type]


async def async_text(p: str) -> None:
    async with AtomicFile(p) as f:
        assert_type(f, AsyncFile[str])
        assert_type(await f.write("x"), int)
        assert_type(await f.writelines(["a", "b"]), None)
        assert_type(await f.flush(), None)
        assert_type(f.name, str | Any)  # typeshed's IO.name: bytes for a bytes path
        assert_type(f.mode, str)
        assert_type(f.encoding, str | None)
        assert_type(f.wrapped, IO[str])
    async with AtomicFile(p, "r+") as f:
        assert_type(f, AsyncFile[str])
        assert_type(await f.read(), str)
        assert_type(await f.read(3), str)
        assert_type(await f.readline(), str)
        assert_type(await f.readlines(), list[str])
        assert_type(await f.seek(0), int)
        assert_type(await f.seek(0, os.SEEK_END), int)
        assert_type(await f.tell(), int)
        assert_type(await f.truncate(), int)
        assert_type(await f.truncate(3), int)
    async with AtomicFile(p, "a+", encoding="utf-8") as f:
        assert_type(f, AsyncFile[str])


async def async_binary(p: Path) -> None:
    async with AtomicFile(p, "wb") as f:
        assert_type(f, AsyncFile[bytes])
        assert_type(await f.write(b"x"), int)
        assert_type(f.wrapped, IO[bytes])
    async with AtomicFile(p, "r+b") as f:
        assert_type(f, AsyncFile[bytes])
        assert_type(await f.read(), bytes)
        assert_type(await f.readline(), bytes)
        assert_type(await f.readlines(), list[bytes])
    async with AtomicFile(p, "wb", buffering=0) as f:
        assert_type(f, AsyncFile[bytes])
    async with AtomicFile(p, "wb") as f:
        # Bytes-like data, as the sync file's write() takes (typeshed: ReadableBuffer);
        # mypy >= 2 no longer promotes bytearray/memoryview to bytes.
        assert_type(await f.write(bytearray(b"x")), int)
        assert_type(await f.write(memoryview(b"x")), int)
        await f.writelines([bytearray(b"x"), memoryview(b"y")])
    async with AtomicFile(p, "ab", buffering=4096) as f:
        assert_type(f, AsyncFile[bytes])


async def async_must_not_type_check(p: str) -> None:
    async with AtomicFile(p, "wb") as binary:
        await binary.write("str")  # type: ignore[arg-type]
    async with AtomicFile(p) as text:
        await text.write(b"bytes")  # type: ignore[arg-type]
        text.write("not awaited")  # type: ignore[unused-coroutine]


def one_call(p: str, b: bytes) -> None:
    assert_type(atomic_write(p, "text"), None)
    assert_type(atomic_write(p, b), None)
    atomic_write(p, bytearray(b))
    atomic_write(p, memoryview(b))
    atomic_write(Path(p), "t", mode="x", encoding="utf-8", errors="strict", newline="\n")
    atomic_write(os.fsencode(p), b, mode="a", permissions=0o600, durable=False,
                 follow_symlinks=False, logger=None)  # fmt: skip
    atomic_write(p, 123)  # type: ignore[arg-type]
    atomic_write(p, "t", mode="r+")  # type: ignore[arg-type]
    atomic_write(p, "t", "w")  # type: ignore[call-arg]


async def one_call_async(p: str, b: bytes) -> None:
    assert_type(await atomic_write_async(p, "text"), None)
    assert_type(await atomic_write_async(Path(p), b, mode="x", durable=False), None)
    await atomic_write_async(p, 123)  # type: ignore[arg-type]
    atomic_write_async(p, "not awaited")  # type: ignore[unused-coroutine]


def errors(exc: SessionFileError) -> None:
    assert_type(exc.path, str)
    assert_type(exc.operation, str)
    assert_type(exc.step, str)
    assert_type(exc.cause, OSError)
    assert_type(exc.errno, int | None)
    assert_type(exc.strerror, str | None)
    assert_type(exc.filename, Any)
    caught: OSError = exc
    del caught
    try:
        atomic_write("p", "x")
    except PermissionError as err:  # what open() callers already catch
        assert_type(err, PermissionError)


def runtime_mode(p: str, mode: str) -> None:
    # typeshed's open() fallback: a mode known only at run time gives IO[Any].
    with AtomicFile(p, mode) as f:
        assert_type(f, IO[Any])


async def async_runtime_mode(p: str, mode: str, opts: dict[str, Any]) -> None:
    # The `str` mode fallback (IO[Any]) gives AsyncFile[Any] under `async with`.
    async with AtomicFile(p, mode) as f:
        assert_type(f, AsyncFile[Any])
        assert_type(await f.write("text or bytes: only the run time knows"), int)
    # Options from a dict: the binary overloads all fit, so the file type is Any.
    async with AtomicFile(p, "wb", **opts) as g:
        assert_type(g, AsyncFile[Any])
    async with AtomicFile(p, "w", **opts) as h:
        assert_type(h, AsyncFile[Any])


async def async_from_an_io_any(af: AtomicFile[IO[Any]], bf: AtomicFile[BinaryIO]) -> None:
    async with af as f:
        assert_type(f, AsyncFile[Any])
    async with bf as g:
        assert_type(g, AsyncFile[bytes])


# -- many files ------------------------------------------------------------------------------

from atomicfile import AtomicBatch, AtomicDirectory  # noqa: E402


def directory(p: str, b: bytes) -> None:
    with AtomicDirectory(p) as d:
        assert_type(d, Path)
    ad = AtomicDirectory(Path(p), permissions=0o755, durable=False, keep_old=True)
    assert_type(ad.open(), Path)
    assert_type(ad.commit(), None)
    assert_type(ad.old_path, Path | None)
    assert_type(ad.staging_path, Path | None)
    AtomicDirectory(b, permissions=lambda target, current: 0o700, fallback=True).discard()
    AtomicDirectory(p, permissions="755")  # type: ignore[arg-type]
    AtomicDirectory(p, True)  # type: ignore[call-arg]


async def directory_async(p: str) -> None:
    async with AtomicDirectory(p) as d:
        assert_type(d, Path)


def batch(p: str, b: bytes) -> None:
    with AtomicBatch() as batch:
        assert_type(batch, AtomicBatch)
        assert_type(batch.open(p), io.TextIOWrapper)
        assert_type(batch.open(p, "wb"), io.BufferedWriter)
        assert_type(batch.open(p, "r+b"), io.BufferedRandom)
        assert_type(batch.open(p, "wb", 0), io.FileIO)
        assert_type(
            batch.open(Path(p), "w", encoding="utf-8", follow_symlinks=False), io.TextIOWrapper
        )
        mode: str = "w"
        assert_type(batch.open(p, mode), IO[Any])
        assert_type(batch.write(p, "text"), None)
        assert_type(batch.write(b, b"bytes", mode="x", permissions=0o600), None)
        batch.write(p, 123)  # type: ignore[arg-type]
        batch.open(1.5)  # type: ignore[call-overload]
        assert_type(batch.paths, list[str])
        # Each file's options are TargetOptions: storage_options and fs too; durable and
        # logger are the batch's.
        url, so = "s3://bucket/key", {"anon": True}
        assert_type(batch.open(url, "wb", storage_options=so), io.BufferedWriter)
        assert_type(batch.open(url, "w", encoding="utf-8", storage_options=None), io.TextIOWrapper)
        assert_type(batch.open(p, "r+b", fs=object(), permissions=0o600), io.BufferedRandom)
        assert_type(batch.write(url, b"x", mode="x", storage_options=so), None)
        assert_type(batch.write(p, "x", permissions=lambda target, current: 0o600), None)
        batch.open(p, "w", storage_options=1)  # type: ignore[call-overload]
        batch.open(p, "wb", durable=False)  # type: ignore[call-overload]
        batch.write(p, "x", logger=None)  # type: ignore[call-arg]
        batch.write(p, "x", follow_symlinks=None)  # type: ignore[arg-type]
    AtomicBatch(durable=False).discard()
    AtomicBatch(True)  # type: ignore[call-arg]


async def batch_async(p: str) -> None:
    async with AtomicBatch() as batch:
        assert_type(await batch.aopen(p), AsyncFile[str])
        assert_type(await batch.aopen(p, "wb"), AsyncFile[bytes])
        assert_type(await batch.awrite(p, b"x"), None)
        url, so = "s3://bucket/key", {"anon": True}
        assert_type(await batch.aopen(url, "wb", storage_options=so), AsyncFile[bytes])
        assert_type(await batch.aopen(url, storage_options=so, fs=None), AsyncFile[str])
        assert_type(await batch.awrite(url, "x", mode="a", storage_options=so), None)
        await batch.aopen(p, "w", durable=True)  # type: ignore[call-overload]
        await batch.awrite(p, b"x", storage_options="anon")  # type: ignore[arg-type]
        await batch.awrite(p, b"x", durable=True)  # type: ignore[call-arg]


def update(p: str) -> None:
    assert_type(atomic_update(p, lambda old: str(int(old or "0") + 1)), str)
    assert_type(atomic_update(p, lambda old: (old or b"") + b"!", binary=True), bytes)
    assert_type(atomic_update(Path(p), lambda old: "", encoding="utf-8", timeout=0.5), str)
    atomic_update(p, lambda old: old + "x")  # type: ignore[operator]  # old may be None
    atomic_update(p, lambda old: b"x")  # type: ignore[arg-type, return-value]
    atomic_update(p, lambda old: "", binary=True, encoding="utf-8")  # type: ignore[call-overload]
    atomic_update(p, lambda old: "", lock=True)  # type: ignore[call-overload]
    with AtomicFile(p, "r+", lock=True, timeout=1.5) as f:
        assert_type(f, io.TextIOWrapper)
    AtomicFile(p, lock=True, timeout="1")  # type: ignore[call-overload]


async def update_async(p: str) -> None:
    async def bump(old: str | None) -> str:
        return str(int(old or "0") + 1)

    assert_type(await atomic_update_async(p, bump), str)
    assert_type(await atomic_update_async(p, lambda old: old or ""), str)
    assert_type(await atomic_update_async(p, lambda old: old or b"", binary=True), bytes)
    async with AtomicFile(p, "wb", lock=True) as f:
        assert_type(f, AsyncFile[bytes])


def helpers(p: str) -> None:
    from atomicfile import AtomicBatch, AtomicDirectory, AtomicPath, atomic_path

    with AtomicFile(p, "wb", make_parents=True) as f:
        assert_type(f, io.BufferedWriter)
    atomic_write(p, "x", make_parents=True)
    assert_type(atomic_update(p, lambda old: "", make_parents=True), str)
    with AtomicDirectory(p, make_parents=True) as d:
        assert_type(d, Path)
    with AtomicBatch() as batch:
        batch.write(p, "x", make_parents=True)
        assert_type(batch.open(p, "wb", make_parents=True), io.BufferedWriter)
    assert_type(atomic_path(p), AtomicPath)
    with atomic_path(Path(p), permissions=0o600, make_parents=True, durable=False) as tmp:
        assert_type(tmp, Path)
    atomic_path(p, make_parents="yes")  # type: ignore[arg-type]
    atomic_path(p, "wb")  # type: ignore[call-arg, arg-type]  # keyword-only options
    AtomicFile(p, make_parents=1.5)  # type: ignore[call-overload]


async def helpers_async(p: str) -> None:
    from atomicfile import atomic_path

    async with atomic_path(p) as tmp:
        assert_type(tmp, Path)
    await atomic_write_async(p, b"x", make_parents=True)
