"""Shared fixtures: one `form` that runs each case through the sync and the async front
door, real file systems (tiny tmpfs, read-only tmpfs) for real errors, the `needs` marker
(what a test needs from the machine: tests/helpers.py) and `other_user` (what a child
running as another uid needs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicfile import AtomicFile, atomic_write, atomic_write_async

from helpers import CHECKS, Staged, need, stage_for_other_user, staged_tmp, unavailable

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mount, chown, setuid)")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs("strace", ...)`: skip (fail under ATOMICFILE_REQUIRE_ALL=1) unless
    each named piece is usable; the reason names the package (tests/helpers.py)."""
    for marker in item.iter_markers("needs"):
        unknown = [n for n in marker.args if n not in CHECKS]
        assert not unknown, f"needs(): unknown {unknown}; known: {sorted(CHECKS)}"
        need(*marker.args)


@pytest.fixture(scope="session")
def other_user() -> Iterator[Staged]:
    """An interpreter and a copy of the package that uid 65534 (and any other uid) can
    run, for the tests whose children drop root: the checkout and the interpreter may sit
    in a 0700 directory (a home) that such a child can't enter."""
    if not IS_ROOT:
        pytest.skip("running a child as another uid needs root")
    where = staged_tmp()
    try:
        staged = stage_for_other_user(where, 65534)
        if isinstance(staged, str):
            unavailable(staged)
            raise AssertionError  # not reached
        yield staged
    finally:
        shutil.rmtree(where, ignore_errors=True)


def listing(directory: str | os.PathLike[str]) -> list[str]:
    """The exact directory listing: what proves no temp file was left behind."""
    return sorted(os.listdir(directory))


def temps(directory: str | os.PathLike[str]) -> list[str]:
    return [n for n in listing(directory) if n.endswith(".tmp")]


#: The runtimes the async form runs on in the shared cases: asyncio, trio, and anyio on
#: each of its backends. (uvloop and trio's guest mode: tests/test_runtimes.py.)
RUNTIMES = ("asyncio", "trio", "anyio-asyncio", "anyio-trio")


def run_async(runtime: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` to completion on a fresh event loop of `runtime` (one of RUNTIMES)."""
    if runtime == "asyncio":
        asyncio.run(main())
    elif runtime == "trio":
        import trio

        trio.run(main)
    else:
        import anyio

        anyio.run(main, backend=runtime.partition("-")[2])


class Form:
    """Runs one atomic write through the sync (`with`) or the async (`async with`) form, the
    latter on one of RUNTIMES.

    `write()` opens `AtomicFile(path, mode, **options)`, writes each chunk, calls
    `inside(file)` (synchronously, with the sync file object) and raises `raise_` if given;
    `write_all()` calls `atomic_write` / `atomic_write_async`; `run(main)` runs an async
    test body on the form's runtime.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind != "sync"

    def __repr__(self) -> str:
        return self.kind

    def run(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        assert self.is_async, "the sync form has no event loop"
        run_async(self.kind, main)

    def write(
        self,
        path: Any,
        *chunks: Any,
        mode: str = "w",
        inside: Callable[[Any], object] | None = None,
        raise_: BaseException | None = None,
        **options: Any,
    ) -> None:
        if not self.is_async:
            with AtomicFile(path, mode, **options) as f:
                for chunk in chunks:
                    f.write(chunk)
                if inside is not None:
                    inside(f)
                if raise_ is not None:
                    raise raise_
            return

        async def main() -> None:
            async with AtomicFile(path, mode, **options) as f:
                for chunk in chunks:
                    await f.write(chunk)
                if inside is not None:
                    inside(f.wrapped)
                if raise_ is not None:
                    raise raise_

        self.run(main)

    def write_all(self, path: Any, data: Any, **options: Any) -> None:
        if self.is_async:

            async def main() -> None:
                await atomic_write_async(path, data, **options)

            self.run(main)
        else:
            atomic_write(path, data, **options)


@pytest.fixture(params=["sync", *RUNTIMES])
def form(request: pytest.FixtureRequest) -> Form:
    """Each test that takes `form` runs through `with`, and through `async with` on each
    runtime."""
    return Form(request.param)


@pytest.fixture(params=["str", "bytes", "Path"])
def as_path(request: pytest.FixtureRequest) -> Callable[[Path], Any]:
    """Turns a Path into each of the path types AtomicFile accepts."""
    return {"str": str, "bytes": lambda p: os.fsencode(p), "Path": lambda p: p}[request.param]


@contextlib.contextmanager
def mount_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A real tmpfs at `where` with mount `options` (skips the test when not root)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs: writes past its size fail with a real ENOSPC."""
    with mount_tmpfs(tmp_path / "tiny", "size=64k,mode=0777") as where:
        yield where


@pytest.fixture
def readonly_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs holding `target` (b"old"), then remounted read-only: real EROFS."""
    with mount_tmpfs(tmp_path / "ro", "size=1m") as where:
        (where / "target").write_bytes(b"old")
        done = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
        yield where
