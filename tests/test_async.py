"""The async form's own behaviour (README "Async"):
AsyncFile's methods, nothing blocking on the loop thread, cancellation at every await point,
misuse, and the lazy loading of the async names. Cases shared with the sync form live in the
other test modules, through the `form` fixture."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import atomicfile
import atomicfile._fs
from atomicfile import AsyncFile, AtomicFile, SessionFileError, atomic_write_async

from conftest import listing


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


TEMP_NAME = re.compile(r"^\.(?P<base>.+)\.[0-9a-f]{16}\.tmp$")
TRIALS = int(os.environ.get("ATOMICFILE_STRESS_TRIALS", "60"))


# -- AsyncFile: methods, types, attributes -------------------------------------------------


async def test_text_write_methods(tmp_path: Path) -> None:
    target = tmp_path / "t"
    af = AtomicFile(target, encoding="utf-8")
    async with af as f:
        assert isinstance(f, AsyncFile)
        assert isinstance(f.wrapped, io.TextIOWrapper)
        assert f.wrapped is f.wrapped
        assert f.mode == "w"
        assert f.encoding == "utf-8"
        assert f.name == str(target)  # what open() would give; the temp is beside it
        (temp,) = [n for n in listing(tmp_path) if n != "t"]
        match = TEMP_NAME.match(temp)
        assert match and match["base"] == "t"
        n = await f.write("héllo\n")
        assert type(n) is int and n == 6  # characters, as TextIOWrapper.write returns
        assert await f.writelines(["a\n", "b\n"]) is None
        assert await f.flush() is None
        assert await f.tell() == len("héllo\na\nb\n".encode())
    assert target.read_text("utf-8") == "héllo\na\nb\n"
    assert listing(tmp_path) == ["t"]


async def test_binary_write_methods(tmp_path: Path) -> None:
    target = tmp_path / "t"
    async with AtomicFile(target, "wb") as f:
        assert isinstance(f.wrapped, io.BufferedWriter)
        assert f.mode == "wb"
        assert f.encoding is None
        assert await f.write(b"abc") == 3
        assert await f.write(bytearray(b"de")) == 2
        assert await f.writelines([b"f", memoryview(b"gh")]) is None
        assert await f.flush() is None
        assert await f.tell() == 8
    assert target.read_bytes() == b"abcdefgh"
    assert listing(tmp_path) == ["t"]


async def test_unbuffered_binary(tmp_path: Path) -> None:
    async with AtomicFile(tmp_path / "t", "wb", buffering=0) as f:
        assert isinstance(f.wrapped, io.FileIO)
        assert await f.write(b"raw") == 3
    assert (tmp_path / "t").read_bytes() == b"raw"
    assert listing(tmp_path) == ["t"]


async def test_text_update_methods(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("one\ntwo\nthree\n")
    async with AtomicFile(target, "r+") as f:
        assert f.mode == "r+"
        assert await f.tell() == 0  # r+ starts at 0
        line = await f.readline()
        assert type(line) is str and line == "one\n"
        assert await f.readlines() == ["two\n", "three\n"]
        assert await f.seek(0) == 0
        assert await f.read(3) == "one"
        assert await f.seek(0, os.SEEK_END) == 14
        assert await f.write("four\n") == 5
        assert await f.seek(4) == 4
        assert await f.truncate() == 4
        assert await f.seek(0) == 0
        whole = await f.read()
        assert type(whole) is str and whole == "one\n"
    assert target.read_text() == "one\n"
    assert listing(tmp_path) == ["t"]


async def test_binary_update_methods(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"0123456789")
    async with AtomicFile(target, "r+b") as f:
        assert isinstance(f.wrapped, io.BufferedRandom)
        with open(target, "r+b") as plain:
            assert f.mode == plain.mode  # what open() reports: 'rb+'
        data = await f.read(4)
        assert type(data) is bytes and data == b"0123"
        assert await f.tell() == 4
        assert await f.write(b"ab") == 2
        assert await f.truncate(8) == 8
        assert await f.seek(-2, os.SEEK_END) == 6
        assert await f.read() == b"67"
        assert await f.readline() == b""
        assert await f.seek(0) == 0
        assert await f.readlines() == [b"0123ab67"]
    assert target.read_bytes() == b"0123ab67"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("mode", ["a+", "ab+", "w+", "wb+", "x+"])
async def test_plus_modes_read_back(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "t"
    if mode[0] != "x":
        target.write_text("old")
    blob: Any = (lambda s: s.encode()) if "b" in mode else (lambda s: s)
    async with AtomicFile(target, mode) as f:
        start = 3 if mode[0] == "a" else 0
        assert await f.tell() == start  # 'a' at the end of the copied content
        await f.write(blob("new"))
        assert await f.seek(0) == 0
        assert await f.read() == blob("oldnew" if mode[0] == "a" else "new")
    assert target.read_text() == ("oldnew" if mode[0] == "a" else "new")
    assert listing(tmp_path) == ["t"]


async def test_repr_and_fileno(tmp_path: Path) -> None:
    af = AtomicFile(tmp_path / "t", "wb")
    async with af as f:
        assert f.fileno() == f.wrapped.fileno()
        assert af.temp_path is not None
        assert (
            os.path.samefile(f"/proc/self/fd/{f.fileno()}", af.temp_path) or sys.platform != "linux"
        )
        assert "AsyncFile" in repr(f)
        assert f.closed is False


# -- nothing blocks the loop ------------------------------------------------------------------


class Threads:
    """Records which thread ran each wrapped library step, then calls through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
        self.seen: dict[str, set[int]] = {}
        self.where = str(where)
        fs = atomicfile._fs
        for name in ("fsync_file", "fsync_dir", "copy_contents", "rename_noreplace", "try_lock"):
            monkeypatch.setattr(fs, name, self._wrap(name, getattr(fs, name)))
        for name in ("replace", "unlink", "fchmod", "open", "stat", "fstat"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name), paths=True))

    def _wrap(self, name: str, func: Callable[..., Any], paths: bool = False) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            first = args[0] if args else None
            if (
                not paths
                or not isinstance(first, (str, bytes))
                or os.fsdecode(first).startswith(self.where)
                # the store's names are relative to the target directory's fd
                or kwargs.get("dir_fd") is not None
                or kwargs.get("src_dir_fd") is not None
            ):
                self.seen.setdefault(name, set()).add(threading.get_ident())
            return func(*args, **kwargs)

        return wrapper


async def test_library_steps_run_off_the_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    target = tmp_path / "t"
    target.write_text("old")
    threads = Threads(monkeypatch, tmp_path)

    with umask(0o022):
        # 0o666 under umask 0o022: created 0o644, then chmod; 'a': copied in; durable: fsyncs.
        async with AtomicFile(target, "a", permissions=0o666) as f:
            await f.write("new")
            await f.flush()
        async with AtomicFile(tmp_path / "x", "xb") as f:  # no-clobber rename
            await f.write(b"x")
        with pytest.raises(ValueError):
            async with AtomicFile(target) as f:  # cleanup after a failure
                await f.write("no")
                raise ValueError
        af = AtomicFile(target)
        async with af as f:  # discard
            await f.write("no")
            af.discard()
        await atomic_write_async(target, b"whole")
        await atomic_write_async(tmp_path / "fast", "t", durable=False)

    monkeypatch.undo()
    assert target.read_bytes() == b"whole"
    assert listing(tmp_path) == ["fast", "t", "x"]
    expected = {"fsync_file", "fsync_dir", "copy_contents", "rename_noreplace", "try_lock",
                "replace", "unlink", "fchmod", "open", "stat", "fstat"}  # fmt: skip
    assert set(threads.seen) == expected, "a wrapped step never ran: the check is vacuous"
    on_loop = sorted(name for name, idents in threads.seen.items() if loop_thread in idents)
    assert on_loop == [], f"ran on the event loop thread: {on_loop}"


STRACE_SCRIPT = """
import asyncio, os, sys, threading
from atomicfile import AtomicFile, atomic_write_async

d = sys.argv[1]
t = os.path.join(d, "t")

async def main():
    print(os.getpid(), threading.get_native_id(), flush=True)  # the loop's thread
    os.path.exists("/atomicfile-mark-start")
    os.umask(0o022)
    async with AtomicFile(t, "a", permissions=0o666) as f:  # copy, chmod
        await f.write("x" * 200000)
        await f.flush()
    async with AtomicFile(t, "r+") as f:
        await f.read(10)
        await f.seek(0)
        await f.write("y")
        await f.truncate(20)
        await f.tell()
    async with AtomicFile(os.path.join(d, "x"), "xb", buffering=0) as f:
        await f.write(b"x")
    try:
        async with AtomicFile(t) as f:
            await f.writelines(["z"] * 1000)
            raise ValueError
    except ValueError:
        pass
    af = AtomicFile(t)
    async with af as f:
        await f.write("discarded")
        af.discard()
    await atomic_write_async(t, b"bytes")
    await atomic_write_async(os.path.join(d, "nd"), "t", durable=False)
    os.path.exists("/atomicfile-mark-end")

asyncio.run(main())
"""


@pytest.mark.needs("strace")
def test_no_file_syscall_on_the_loop_thread(tmp_path: Path) -> None:
    """Real proof, not wrappers: strace every file syscall of an async session and check
    that none touching the target's directory came from the loop's thread (the main one).
    This covers the writes, reads, seeks and flushes that no Python wrapper can see."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "t").write_text("old")
    script = tmp_path / "script.py"
    script.write_text(STRACE_SCRIPT)
    trace = tmp_path / "trace"
    done = subprocess.run(
        ["strace", "-f", "-qq", "-y", "-s", "0", "-o", str(trace),
         "-e", "trace=%file,%desc,copy_file_range,flock,fsync,fdatasync",
         sys.executable, str(script), str(work)],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    if done.returncode and "ptrace" in done.stderr:
        pytest.skip(f"strace can't trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    pid, loop_tid = map(int, done.stdout.split())
    assert pid == loop_tid  # asyncio.run runs the loop on the main thread

    lines = trace.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "/atomicfile-mark-start" in line)
    end = next(i for i, line in enumerate(lines) if "/atomicfile-mark-end" in line)
    ours = [line for line in lines[start + 1 : end] if str(work) in line]
    on_loop = [line for line in ours if int(line.split()[0]) == loop_tid]
    assert on_loop == [], "file syscalls on the event loop thread:\n" + "\n".join(on_loop)

    # The check is not vacuous: every kind of step was seen, from worker threads.
    calls = {re.match(r"\d+\s+(?:<\.\.\. )?(\w+)", line)[1] for line in ours}  # type: ignore[index]
    for needed in ("write", "read", "lseek", "ftruncate", "fsync", "flock", "copy_file_range",
                   "fchmod", "close", "open|openat", "unlink|unlinkat",
                   "rename|renameat|renameat2"):  # fmt: skip
        assert calls & set(needed.split("|")), (needed, sorted(calls))
    assert (work / "t").read_bytes() == b"bytes"
    assert listing(work) == ["nd", "t", "x"]


class Heartbeat:
    """A task that counts loop iterations until stopped."""

    def __init__(self) -> None:
        self.ticks = 0
        self.running = True
        self.task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while self.running:
            self.ticks += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self.running = False
        await self.task


BIG = 64 << 20


async def test_loop_keeps_running_during_a_large_durable_write(tmp_path: Path) -> None:
    payload = b"\xa5" * BIG
    target = tmp_path / "big"
    beat = Heartbeat()
    await asyncio.sleep(0)
    before_open = beat.ticks
    async with AtomicFile(target, "wb") as f:  # durable=True: fsync of 64 MiB
        before_write = beat.ticks
        await f.write(payload)
        during_write = beat.ticks - before_write
    during_all = beat.ticks - before_open
    before_one_call = beat.ticks
    await atomic_write_async(target, payload)
    during_one_call = beat.ticks - before_one_call
    await beat.stop()
    assert during_write > 3, during_write
    assert during_all > during_write
    assert during_one_call > 3, during_one_call
    assert os.path.getsize(target) == BIG
    assert listing(tmp_path) == ["big"]


# -- cancellation ---------------------------------------------------------------------------

OLD = b"the old content\n" * 64
NEW = bytes(range(256)) * 512  # 128 KiB
CHUNKS = [NEW[i : i + 16384] for i in range(0, len(NEW), 16384)]  # 8 writes, 8 thread jobs


def check_after(directory: Path, target: Path) -> bytes:
    """Old or new, exactly; never partial; no temp file left."""
    assert listing(directory) == [target.name]
    content = target.read_bytes()
    assert content in (OLD, NEW), f"partial target: {len(content)} bytes"
    return content


async def run_cancelled(task: asyncio.Task[Any], cancelled: bool) -> None:
    """If the cancel reached the task, CancelledError comes out of it; else it succeeded."""
    if cancelled:
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await task


POINTS = ("start", "call_soon", "entered", "middle", "exiting")


@pytest.mark.stress
async def test_cancel_async_with_at_varied_points(tmp_path: Path) -> None:
    """TRIALS cancellations of an `async with` write. Where it lands: "start" cancels after
    N loop iterations from task creation (N=0: before the task ran; else during the thread
    job that creates the temp); "call_soon" right after the task's first step; "entered",
    "middle" and "exiting" once the block signalled it reached that point (the first write,
    the fifth, the commit), each plus N = 0..3 extra loop iterations."""
    target = tmp_path / "t"
    outcomes: dict[tuple[str, bool, bytes], int] = {}
    loop = asyncio.get_running_loop()
    trials = TRIALS
    for trial in range(trials):
        point = POINTS[trial % len(POINTS)]
        extra = (trial // len(POINTS)) % 4
        durable = trial % 2 == 0
        target.write_bytes(OLD)
        phases = {name: asyncio.Event() for name in ("entered", "middle", "exiting")}

        async def writer(phases: dict[str, asyncio.Event] = phases, d: bool = durable) -> None:
            async with AtomicFile(target, "wb", durable=d) as f:
                phases["entered"].set()
                for i, chunk in enumerate(CHUNKS):
                    await f.write(chunk)
                    if i == 3:
                        phases["middle"].set()
                phases["exiting"].set()

        task = loop.create_task(writer())
        if point == "call_soon":
            handle: list[bool] = []
            loop.call_soon(lambda t=task, h=handle: h.append(t.cancel()))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            (cancelled,) = handle
        else:
            if point != "start":
                await phases[point].wait()
            for _ in range(extra):
                await asyncio.sleep(0)
            cancelled = task.cancel()
        await run_cancelled(task, cancelled)
        content = check_after(tmp_path, target)
        # Small writes are kept in memory, not suspension points: where the cancel landed
        # is told by how far the block got, not by the point it was aimed at.
        if cancelled and not phases["exiting"].is_set():
            assert content == OLD, (trial, point, extra)  # cancelled inside the block
        else:
            assert content == NEW, (trial, point, extra)  # a commit under way completes
        key = (point, cancelled, content)
        outcomes[key] = outcomes.get(key, 0) + 1

    # Deterministic corners were reached: cancelled before anything ran, and cancelled
    # while the commit ran in its thread (which completed all the same).
    if trials >= len(POINTS):
        assert outcomes.get(("start", True, OLD)), outcomes
        assert outcomes.get(("exiting", True, NEW)), outcomes
        assert outcomes.get(("middle", True, OLD)), outcomes


@pytest.mark.stress
async def test_cancel_atomic_write_async_at_varied_points(tmp_path: Path) -> None:
    """TRIALS cancellations of `atomic_write_async` after N = 0..5 loop iterations: N=0
    before it started (old content), otherwise while its one thread job runs, or after it
    finished (new content either way: a write under way is never abandoned half-done)."""
    target = tmp_path / "t"
    loop = asyncio.get_running_loop()
    seen: set[tuple[bool, bytes]] = set()
    for trial in range(TRIALS):
        target.write_bytes(OLD)
        task = loop.create_task(atomic_write_async(target, NEW, durable=trial % 2 == 0))
        n = trial % 6
        for _ in range(n):
            await asyncio.sleep(0)
        cancelled = task.cancel()
        await run_cancelled(task, cancelled)
        content = check_after(tmp_path, target)
        assert content == (OLD if n == 0 else NEW), (trial, n, cancelled)
        seen.add((cancelled, content))
    assert (True, OLD) in seen
    assert (True, NEW) in seen  # cancelled while the job ran: it finished, then the cancel


# Deterministic points: the worker thread itself asks the loop to cancel the task, so the
# cancel is handled while that very thread job is still running (the loop handles callbacks
# in order: the cancel comes before the job's completion).


class Canceller:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[Any] | None = None
        self.fired = 0

    def __call__(self) -> None:
        assert threading.current_thread() is not threading.main_thread()
        assert self.task is not None
        self.fired += 1
        self.loop.call_soon_threadsafe(self.task.cancel)

    async def run(self, coro: Any) -> BaseException | None:
        self.task = self.loop.create_task(coro)
        try:
            await self.task
        except BaseException as exc:
            return exc
        return None


@pytest.fixture
def old_target(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "t"
    target.write_bytes(OLD)
    yield target


def _hook_calling(cancel: Canceller) -> Callable[[Any, Any], int]:
    def hook(path: Any, current: Any) -> int:
        cancel()
        return 0o644

    return hook


async def test_cancel_during_open_job(tmp_path: Path, old_target: Path) -> None:
    cancel = Canceller()

    async def writer() -> None:
        async with AtomicFile(old_target, "wb", permissions=_hook_calling(cancel)) as f:
            await f.write(NEW)  # pragma: no cover - never reached

    exc = await cancel.run(writer())
    assert cancel.fired == 1
    assert type(exc) is asyncio.CancelledError
    assert check_after(tmp_path, old_target) == OLD


async def test_cancel_during_write_job(tmp_path: Path, old_target: Path) -> None:
    cancel = Canceller()

    def lines() -> Iterator[bytes]:  # consumed by writelines in the worker thread
        yield CHUNKS[0]
        cancel()
        yield from CHUNKS[1:]

    async def writer() -> None:
        async with AtomicFile(old_target, "wb") as f:
            await f.writelines(lines())
            await f.write(b"never")  # pragma: no cover

    exc = await cancel.run(writer())
    assert cancel.fired == 1
    assert type(exc) is asyncio.CancelledError
    assert check_after(tmp_path, old_target) == OLD


@pytest.mark.parametrize("durable", [True, False])
async def test_cancel_during_commit_job(
    tmp_path: Path, old_target: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """The commit is under way in its thread: it completes, then CancelledError."""
    cancel = Canceller()
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        # renameat(dirfd, temp, dirfd, "t"): the target's name relative to its directory
        if os.fsdecode(dst) == old_target.name and kwargs.get("dst_dir_fd") is not None:
            cancel()  # just before the rename: the cancel is handled while it runs
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)

    async def writer() -> None:
        async with AtomicFile(old_target, "wb", durable=durable) as f:
            for chunk in CHUNKS:
                await f.write(chunk)

    exc = await cancel.run(writer())
    monkeypatch.undo()
    assert cancel.fired == 1
    assert type(exc) is asyncio.CancelledError
    assert check_after(tmp_path, old_target) == NEW


async def test_cancel_during_failing_commit(
    tmp_path: Path, old_target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit's fsync fails (EIO: injected, no real device fails on demand) while a
    cancel arrives: old content, no temp, CancelledError chained to the failure."""
    cancel = Canceller()
    fired: list[int] = []

    def fsync_file(fd: int) -> None:
        fired.append(fd)
        cancel()
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomicfile._fs, "fsync_file", fsync_file)

    async def writer() -> None:
        async with AtomicFile(old_target, "wb") as f:
            await f.write(NEW)

    exc = await cancel.run(writer())
    monkeypatch.undo()
    assert len(fired) == 1
    assert type(exc) is asyncio.CancelledError
    # Python 3.10's Task re-raises a fresh CancelledError whose __context__ is ours.
    ours = exc if exc.__cause__ is not None else exc.__context__
    assert ours is not None
    assert isinstance(ours.__cause__, SessionFileError), repr(ours.__cause__)
    assert ours.__cause__.errno == errno.EIO and ours.__cause__.step == "fsync"
    assert check_after(tmp_path, old_target) == OLD


async def test_cancel_during_cleanup_job(
    tmp_path: Path, old_target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block failed; the cleanup runs in its thread when the cancel comes: the temp is
    still removed, and the cancellation propagates."""
    cancel = Canceller()
    real_unlink = os.unlink
    removed: list[str] = []

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(os.fsdecode(path)).startswith(".t."):
            removed.append(os.fsdecode(path))
            cancel()
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)

    async def writer() -> None:
        async with AtomicFile(old_target, "wb") as f:
            await f.write(NEW)
            raise KeyError("the block failed")

    exc = await cancel.run(writer())
    monkeypatch.undo()
    assert len(removed) == 1 and cancel.fired == 1
    assert type(exc) is asyncio.CancelledError
    assert check_after(tmp_path, old_target) == OLD


async def test_cancel_during_atomic_write_async_job(tmp_path: Path, old_target: Path) -> None:
    """Its one thread job is the whole write: it completes, then CancelledError."""
    cancel = Canceller()
    exc = await cancel.run(atomic_write_async(old_target, NEW, permissions=_hook_calling(cancel)))
    assert cancel.fired == 1
    assert type(exc) is asyncio.CancelledError
    assert check_after(tmp_path, old_target) == NEW


async def test_cancel_before_enter(tmp_path: Path, old_target: Path) -> None:
    """Cancelled before the task ever ran: nothing was touched at all."""
    loop = asyncio.get_running_loop()

    async def writer() -> None:  # pragma: no cover - never runs
        async with AtomicFile(old_target, "wb") as f:
            await f.write(NEW)

    task = loop.create_task(writer())
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert check_after(tmp_path, old_target) == OLD


# -- timeouts ---------------------------------------------------------------------------------

needs_timeout = pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout: 3.11+")


@needs_timeout
async def test_timeout_inside_the_block(tmp_path: Path, old_target: Path) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:  # type: ignore[attr-defined]
            async with AtomicFile(old_target, "wb") as f:
                await f.write(CHUNKS[0])
                deadline.reschedule(asyncio.get_running_loop().time())  # expired: now
                for chunk in CHUNKS[1:]:
                    await f.write(chunk)
    assert check_after(tmp_path, old_target) == OLD


@needs_timeout
async def test_timeout_during_atomic_write_async(tmp_path: Path, old_target: Path) -> None:
    """The deadline passes while the write's thread job runs (the job waits until the
    timeout has fired): TimeoutError, and the write under way completed."""
    loop = asyncio.get_running_loop()
    deadlines: list[Any] = []

    async def expire() -> None:
        deadlines[0].reschedule(loop.time())
        while not deadlines[0].expired():
            await asyncio.sleep(0)

    def hook(path: Any, current: Any) -> int:
        asyncio.run_coroutine_threadsafe(expire(), loop).result()
        return 0o644

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:  # type: ignore[attr-defined]
            deadlines.append(deadline)
            await atomic_write_async(old_target, NEW, permissions=hook)
    assert deadlines[0].expired()
    assert check_after(tmp_path, old_target) == NEW


async def test_wait_for_timeout(tmp_path: Path, old_target: Path) -> None:
    async def block_write() -> None:
        async with AtomicFile(old_target, "wb") as f:
            for chunk in CHUNKS:
                await f.write(chunk)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(block_write(), timeout=0)
    check_after(tmp_path, old_target)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(atomic_write_async(old_target, NEW), timeout=0)
    check_after(tmp_path, old_target)


# -- misuse -----------------------------------------------------------------------------------


async def test_sync_with_inside_async_with(tmp_path: Path) -> None:
    target = tmp_path / "t"
    af = AtomicFile(target)
    async with af as f:
        await f.write("new")
        with pytest.raises(RuntimeError, match="already open"), af:
            pass  # pragma: no cover
        await f.write("!")  # the outer write is unharmed
    assert target.read_text() == "new!"
    assert listing(tmp_path) == ["t"]


async def test_async_with_inside_sync_with(tmp_path: Path) -> None:
    target = tmp_path / "t"
    af = AtomicFile(target)
    with af as f:
        f.write("new")
        with pytest.raises(RuntimeError, match="already open"):
            async with af:
                pass  # pragma: no cover
        f.write("!")
    assert target.read_text() == "new!"
    assert listing(tmp_path) == ["t"]


async def test_async_with_twice(tmp_path: Path) -> None:
    af = AtomicFile(tmp_path / "t")
    async with af as f:
        await f.write("x")
    with pytest.raises(RuntimeError, match="already committed"):
        async with af:
            pass  # pragma: no cover
    assert listing(tmp_path) == ["t"]


async def test_methods_after_commit(tmp_path: Path) -> None:
    target = tmp_path / "t"
    async with AtomicFile(target, "w+") as f:
        await f.write("done")
    calls: list[Callable[[], Any]] = [
        lambda: f.write("more"), lambda: f.writelines(["more"]), f.flush, f.read,
        f.readline, f.readlines, lambda: f.seek(0), f.tell, f.truncate,
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(RuntimeError, match="committed"):
            await call()
    assert target.read_text() == "done"
    assert listing(tmp_path) == ["t"]


async def test_methods_after_discard_and_after_failure(tmp_path: Path) -> None:
    target = tmp_path / "t"
    af = AtomicFile(target)
    async with af as f:
        await f.write("x")
        af.discard()
        with pytest.raises(RuntimeError, match="discarded"):
            await f.write("y")
    with pytest.raises(RuntimeError, match="discarded"):
        await f.write("z")
    with pytest.raises(ValueError):
        async with AtomicFile(target) as g:
            raise ValueError
    with pytest.raises(RuntimeError, match="failed"):
        await g.write("z")
    assert listing(tmp_path) == []


async def test_async_file_is_not_a_context_manager(tmp_path: Path) -> None:
    async with AtomicFile(tmp_path / "t") as f:
        await f.write("x")
        with pytest.raises(TypeError, match="async with"), f:
            pass  # pragma: no cover
    # The TypeError was raised and caught inside the block: the write went through.
    assert (tmp_path / "t").read_text() == "x"
    assert listing(tmp_path) == ["t"]


# -- lazy import --------------------------------------------------------------------------------


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_does_not_load_asyncio_typing_logging() -> None:
    out = _fresh(
        "import sys\n"
        "heavy = ('asyncio', 'typing', 'logging')\n"
        "assert not [m for m in heavy if m in sys.modules], 'interpreter preloads them'\n"
        "import atomicfile\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print('AsyncFile' in vars(atomicfile), 'atomic_write_async' in vars(atomicfile))\n"
    )
    assert out.splitlines() == ["[]", "False False"]


def test_sync_write_does_not_load_asyncio(tmp_path: Path) -> None:
    out = _fresh(
        "import sys, atomicfile\n"
        f"atomicfile.atomic_write({str(tmp_path / 't')!r}, 'x')\n"
        f"with atomicfile.AtomicFile({str(tmp_path / 'u')!r}, 'wb') as f:\n"
        "    f.write(b'y')\n"
        "print('asyncio' in sys.modules)\n"
    )
    assert out == "False"
    assert listing(tmp_path) == ["t", "u"]


@pytest.mark.parametrize("name", ["atomic_write_async", "AsyncFile"])
def test_async_names_load_on_first_access(name: str) -> None:
    out = _fresh(
        "import sys, atomicfile\n"
        f"obj = atomicfile.{name}\n"
        "print('asyncio' in sys.modules, 'trio' in sys.modules)\n"
        f"print(obj is atomicfile._async.{name}, obj.__module__)\n"
        f"print('{name}' in vars(atomicfile), '{name}' in dir(atomicfile))\n"
        f"from atomicfile import {name} as again\n"
        "print(again is obj)\n"
    )
    # Importing the async names loads no event loop library: using them does.
    assert out.splitlines() == ["False False", "True atomicfile", "True True", "True"]


def test_from_import_of_async_names_and_unknown_attribute() -> None:
    out = _fresh(
        "import atomicfile\n"
        "from atomicfile import AsyncFile, atomic_write_async\n"
        "import asyncio\n"
        "print(asyncio.iscoroutinefunction(atomic_write_async), AsyncFile.__name__)\n"
        "try:\n"
        "    atomicfile.nope\n"
        "except AttributeError as e:\n"
        "    print('AttributeError', e)\n"
        "print(sorted(set(atomicfile.__all__) - set(dir(atomicfile))))\n"
    )
    assert out.splitlines() == [
        "True AsyncFile",
        "AttributeError module 'atomicfile' has no attribute 'nope'",
        "[]",
    ]


# -- the worker threads (asyncio) ----------------------------------------------------------


def _worker_name() -> str:
    return threading.current_thread().name


async def test_jobs_run_on_the_library_workers(tmp_path: Path) -> None:
    from atomicfile import _runtime_asyncio

    names = [await _runtime_asyncio.run(_worker_name) for _ in range(3)]
    assert names == ["atomicfile-worker"] * 3
    # The executor asyncio makes itself at the first run_in_executor(None) is no choice.
    await asyncio.get_running_loop().run_in_executor(None, _worker_name)
    assert await _runtime_asyncio.run(_worker_name) == "atomicfile-worker"
    await atomic_write_async(tmp_path / "t", b"x")
    assert (tmp_path / "t").read_bytes() == b"x"


async def test_set_default_executor_is_honoured(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from atomicfile import _runtime_asyncio

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="chosen") as pool:
        loop.set_default_executor(pool)
        assert (await _runtime_asyncio.run(_worker_name)).startswith("chosen")
        async with AtomicFile(tmp_path / "t", "wb") as f:
            await f.write(b"y")
        assert (tmp_path / "t").read_bytes() == b"y"
        await loop.shutdown_default_executor()


async def test_concurrent_jobs_get_their_own_threads() -> None:
    """A job that waits doesn't hold up the others (fsyncs of concurrent writes overlap)."""
    from atomicfile import _runtime_asyncio

    gate = threading.Barrier(3, timeout=10)
    idents = await asyncio.gather(*(_runtime_asyncio.run(gate.wait) for _ in range(3)))
    assert sorted(idents) == [0, 1, 2]  # all three waited at the barrier at once


async def test_job_error_and_context_reach_the_caller() -> None:
    import contextvars

    from atomicfile import _runtime_asyncio

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("caller's")
    assert await _runtime_asyncio.run(var.get) == "caller's"

    def fail() -> None:
        raise KeyError("job")

    with pytest.raises(KeyError, match="job"):
        await _runtime_asyncio.run(fail)

    def stop() -> None:
        raise StopIteration

    with pytest.raises(RuntimeError, match="StopIteration"):
        await _runtime_asyncio.run(stop)


def test_workers_after_fork_and_at_exit(tmp_path: Path) -> None:
    """A forked child gets fresh workers (the parent's threads aren't there); at exit a job
    still running completes before the interpreter goes, and asyncio.run() never waits
    for idle workers."""
    code = (
        "import asyncio, os, sys, threading, time\n"
        "from atomicfile import atomic_write_async, _runtime_asyncio as r\n"
        f"target = {str(tmp_path / 't')!r}\n"
        "async def main():\n"
        "    await atomic_write_async(target, b'parent')\n"
        "asyncio.run(main())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    asyncio.run(atomic_write_async(target + '-child', b'child'))\n"
        "    os._exit(0)\n"
        "assert os.waitpid(pid, 0)[1] == 0\n"
        "start = time.monotonic()\n"
        "async def slow():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    def job():\n"
        "        time.sleep(0.5)\n"
        "        open(target + '-late', 'w').close()\n"
        "    r._submit(r._Job(loop, __import__('contextvars').copy_context(), job, ()))\n"
        "asyncio.run(slow())\n"
        "print(time.monotonic() - start < 0.4)\n"  # asyncio.run didn't wait for the job
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.split() == ["True"]
    assert (tmp_path / "t").read_bytes() == b"parent"
    assert (tmp_path / "t-child").read_bytes() == b"child"
    assert (tmp_path / "t-late").exists()  # the job running at exit was waited for


async def test_worker_threads_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """More jobs at once than MAX_THREADS wait for a worker, in order; all complete."""
    import time

    from atomicfile import _runtime_asyncio

    monkeypatch.setattr(_runtime_asyncio, "MAX_THREADS", 2)
    workers = _runtime_asyncio._Workers()  # none idle yet: the bound decides alone
    monkeypatch.setattr(_runtime_asyncio, "_submit", workers.submit)
    running, most, lock = [0], [0], threading.Lock()

    def job(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i

    results = await asyncio.gather(*(_runtime_asyncio.run(job, i) for i in range(8)))
    assert results == list(range(8))
    assert most[0] == 2 and len(workers.threads) <= 2
    workers.drain()
    assert workers.threads == set()


def test_trio_jobs_respect_the_default_thread_limiter() -> None:
    trio = pytest.importorskip("trio")
    import time

    from atomicfile import _runtime_trio

    running, most, lock = [0], [0], threading.Lock()

    def job(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i

    async def main() -> list[int]:
        trio.to_thread.current_default_thread_limiter().total_tokens = 2
        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await _runtime_trio.run(job, i))

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(one, i)
        return sorted(results)

    assert trio.run(main) == list(range(6))
    assert most[0] == 2
