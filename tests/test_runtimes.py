"""The async form on every runtime: asyncio, uvloop, trio, trio's guest mode over
asyncio, anyio on both backends. Cancellation at fixed points and at random deadlines, the
error outside any loop, no asyncio under trio, and the in-memory buffer of small writes.

Shared write cases run on every runtime through the `form` fixture (conftest); this module
holds what is about runtimes themselves. The bodies use anyio's API, which works on plain
asyncio and plain trio too, so one body runs on each runtime."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio

import atomicfile._fs
from atomicfile import AsyncFile, AtomicFile, SessionFileError, atomic_write_async

from conftest import RUNTIMES, listing, run_async

TRIALS = int(os.environ.get("ATOMICFILE_STRESS_TRIALS", "60"))

OLD = b"the old content\n" * 64
NEW = bytes(range(256)) * 512  # 128 KiB: two buffer fills, so some writes are thread jobs
CHUNKS = [NEW[i : i + 16384] for i in range(0, len(NEW), 16384)]

Main = Callable[[], Coroutine[Any, Any, None]]


def run_uvloop(main: Main) -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is optional (not installable here)")
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def run_guest(main: Main) -> None:
    """`main` in trio's guest mode, hosted by an asyncio loop that keeps running its own
    tasks (a heartbeat) meanwhile; re-raises what `main` raised."""

    async def host() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while not done.done():
                beats += 1
                await asyncio.sleep(0)

        beat = loop.create_task(heartbeat())
        trio.lowlevel.start_guest_run(
            main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        outcome = await done
        await beat
        assert beats > 0  # the host loop ran beside the guest
        outcome.unwrap()

    asyncio.run(host())


ALL = (*RUNTIMES, "uvloop", "trio-guest")


def run_on(runtime: str, main: Main) -> None:
    if runtime == "uvloop":
        run_uvloop(main)
    elif runtime == "trio-guest":
        run_guest(main)
    else:
        run_async(runtime, main)


@pytest.fixture(params=ALL)
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def check_after(directory: Path, target: Path) -> bytes:
    """Old or new, exactly; never partial; no temp file left."""
    assert listing(directory) == [target.name]
    content = target.read_bytes()
    assert content in (OLD, NEW), f"partial target: {len(content)} bytes"
    return content


def call_soon_threadsafe() -> Callable[[Callable[[], object]], object]:
    """The running loop's thread-safe 'call this soon' (whichever library runs it)."""
    try:
        import sniffio

        trio_running = sniffio.current_async_library() == "trio"
    except Exception:  # pragma: no cover - sniffio comes with anyio and trio
        trio_running = False
    if trio_running:
        return trio.lowlevel.current_trio_token().run_sync_soon
    return asyncio.get_running_loop().call_soon_threadsafe


# -- every runtime: a write, a one-call write, the supported-runtime detection -------------


def test_writes_on_every_runtime(tmp_path: Path, runtime: str) -> None:
    target = tmp_path / "t"
    target.write_bytes(OLD)
    loop_threads: set[int] = set()

    async def main() -> None:
        loop_threads.add(threading.get_ident())
        async with AtomicFile(target, "wb") as f:
            assert isinstance(f, AsyncFile)
            for chunk in CHUNKS:
                assert await f.write(chunk) == len(chunk)
        assert target.read_bytes() == NEW
        await atomic_write_async(tmp_path / "one", "text")
        async with AtomicFile(tmp_path / "text", "w", encoding="utf-8") as g:
            await g.write("héllo")
            await g.flush()
            assert await g.tell() == len("héllo".encode())

    run_on(runtime, main)
    assert target.read_bytes() == NEW
    assert (tmp_path / "one").read_text() == "text"
    assert (tmp_path / "text").read_text("utf-8") == "héllo"
    assert listing(tmp_path) == ["one", "t", "text"]
    assert loop_threads == {threading.get_ident()}


def test_guest_mode_writes_with_the_trio_runtime(tmp_path: Path) -> None:
    """The issue's failure: under guest mode the asyncio loop is running too; the trio task
    must get trio's thread jobs, and nothing may be left behind."""
    seen: list[str] = []

    async def main() -> None:
        from atomicfile._async import current_runtime

        seen.append(current_runtime().NAME)
        async with AtomicFile(tmp_path / "t", "wb") as f:
            await f.write(NEW)
        await atomic_write_async(tmp_path / "u", OLD)

    run_guest(main)
    assert seen == ["trio"]
    assert (tmp_path / "t").read_bytes() == NEW
    assert (tmp_path / "u").read_bytes() == OLD
    assert listing(tmp_path) == ["t", "u"]


def drive(coro: Coroutine[Any, Any, Any]) -> None:
    """Step a coroutine with no event loop at all, as a bare `coro.send(None)` runner."""
    try:
        coro.send(None)
    finally:
        coro.close()


@pytest.mark.parametrize("call", ["async with", "atomic_write_async"])
def test_outside_any_event_loop(tmp_path: Path, call: str) -> None:
    target = tmp_path / "t"
    target.write_bytes(OLD)
    af = AtomicFile(target, "wb")
    coro = af.__aenter__() if call == "async with" else atomic_write_async(target, NEW)
    with pytest.raises(RuntimeError) as info:
        drive(coro)
    message = str(info.value)
    assert "no" in message and "running" in message
    for name in ("asyncio", "uvloop", "anyio", "trio"):
        assert name in message, message
    assert listing(tmp_path) == ["t"]  # before anything touched the disk
    assert target.read_bytes() == OLD
    assert repr(af).endswith("new>")  # still unused: a later `with` works
    with af as f:
        f.write(NEW)
    assert target.read_bytes() == NEW


@pytest.mark.parametrize("call", ["async with", "atomic_write_async"])
def test_under_an_unsupported_runtime(tmp_path: Path, call: str) -> None:
    """A library other than asyncio and trio names itself through sniffio (as curio-style
    libraries do): refused by name, before any I/O, even with an asyncio loop running."""
    import sniffio

    target = tmp_path / "t"

    async def main() -> None:
        token = sniffio.current_async_library_cvar.set("curio")
        try:
            if call == "async with":
                async with AtomicFile(target, "wb") as f:  # pragma: no cover - refused
                    await f.write(NEW)
            else:
                await atomic_write_async(target, NEW)
        finally:
            sniffio.current_async_library_cvar.reset(token)

    with pytest.raises(RuntimeError, match="can't run under curio; it supports asyncio") as info:
        asyncio.run(main())
    assert "trio" in str(info.value)
    assert listing(tmp_path) == []


TRIO_ONLY = """
import sys, trio
from atomicfile import AtomicFile, atomic_write_async

async def main():
    async with AtomicFile(sys.argv[1], "wb") as f:
        await f.write(b"x" * 100000)
        await f.flush()
    await atomic_write_async(sys.argv[1], "done")

assert "asyncio" not in sys.modules, "trio itself imported asyncio"
trio.run(main)
print("asyncio" in sys.modules, "atomicfile._runtime_trio" in sys.modules)
"""


def test_trio_never_imports_asyncio(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", TRIO_ONLY, str(tmp_path / "t")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
    assert (tmp_path / "t").read_text() == "done"
    assert listing(tmp_path) == ["t"]


# -- cancellation at fixed points -----------------------------------------------------------


class Outcome:
    """What came out of a cancelled body: the exception (if any) and how far it got."""

    def __init__(self) -> None:
        self.exc: BaseException | None = None
        self.caught = False
        self.after_block = False


def cancelled_run(runtime: str, body: Callable[[anyio.CancelScope], Any]) -> Outcome:
    """Run `body(scope)` inside a cancel scope on `runtime`; record what left the body."""
    out = Outcome()

    async def main() -> None:
        with anyio.CancelScope() as scope:
            try:
                await body(scope)
                out.after_block = True
            except BaseException as exc:
                out.exc = exc
                raise
        out.caught = scope.cancelled_caught

    run_on(runtime, main)
    return out


def assert_cancelled(out: Outcome) -> None:
    """The cancellation propagated: it left the body, as the runtime's cancellation."""
    assert out.caught, "the cancellation did not propagate"
    assert not out.after_block
    cancelled = (asyncio.CancelledError, trio.Cancelled)
    assert isinstance(out.exc, cancelled), repr(out.exc)


@pytest.fixture
def old_target(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "t"
    target.write_bytes(OLD)
    yield target


def canceller(scope: anyio.CancelScope) -> Callable[[], None]:
    """Called from a worker thread: asks the loop to cancel `scope` while that thread's job
    still runs (the loop handles it before the job's completion)."""
    soon = call_soon_threadsafe()
    fired: list[int] = []

    def cancel() -> None:
        assert threading.current_thread() is not threading.main_thread()
        assert not fired, "fired twice"
        fired.append(1)
        soon(scope.cancel)

    return cancel


def test_cancel_before_entry(tmp_path: Path, old_target: Path, runtime: str) -> None:
    async def body(scope: anyio.CancelScope) -> None:
        scope.cancel()
        async with AtomicFile(old_target, "wb") as f:
            await f.write(NEW)  # pragma: no cover - never reached

    assert_cancelled(cancelled_run(runtime, body))
    assert check_after(tmp_path, old_target) == OLD


def test_cancel_after_entry(tmp_path: Path, old_target: Path, runtime: str) -> None:
    async def body(scope: anyio.CancelScope) -> None:
        async with AtomicFile(old_target, "wb") as f:
            await f.write(CHUNKS[0])  # kept in memory: not a suspension point
            scope.cancel()
            await anyio.sleep(0)  # the block's own checkpoint raises it
            await f.write(NEW)  # pragma: no cover

    assert_cancelled(cancelled_run(runtime, body))
    assert check_after(tmp_path, old_target) == OLD


def test_cancel_during_open_job(tmp_path: Path, old_target: Path, runtime: str) -> None:
    async def body(scope: anyio.CancelScope) -> None:
        cancel = canceller(scope)

        def hook(path: Any, current: Any) -> int:  # runs inside the open job
            cancel()
            return 0o644

        async with AtomicFile(old_target, "wb", permissions=hook) as f:
            await f.write(NEW)  # pragma: no cover

    assert_cancelled(cancelled_run(runtime, body))
    assert check_after(tmp_path, old_target) == OLD


def test_cancel_mid_write(tmp_path: Path, old_target: Path, runtime: str) -> None:
    """In a write's thread job: the job finishes, the cancellation comes right after."""

    async def body(scope: anyio.CancelScope) -> None:
        cancel = canceller(scope)

        def lines() -> Iterator[bytes]:  # a generator: writelines reads it in the thread
            yield CHUNKS[0]
            cancel()
            yield from CHUNKS[1:]

        async with AtomicFile(old_target, "wb") as f:
            await f.write(b"kept in memory, written by the job first")
            await f.writelines(lines())
            await f.write(b"never")  # pragma: no cover

    assert_cancelled(cancelled_run(runtime, body))
    assert check_after(tmp_path, old_target) == OLD


@pytest.mark.parametrize("durable", [True, False])
def test_cancel_during_commit(
    tmp_path: Path, old_target: Path, runtime: str, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """The commit is under way in its thread: it completes (shielded), then the cancellation
    propagates. Small writes still in memory are part of the commit job."""
    holder: list[Callable[[], None]] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(os.fsdecode(dst)) == old_target.name:
            holder[0]()
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)

    async def body(scope: anyio.CancelScope) -> None:
        holder.append(canceller(scope))
        async with AtomicFile(old_target, "wb", durable=durable) as f:
            for chunk in CHUNKS:
                await f.write(chunk)

    out = cancelled_run(runtime, body)
    monkeypatch.undo()
    assert_cancelled(out)
    assert check_after(tmp_path, old_target) == NEW


def test_cancel_during_failing_commit(
    tmp_path: Path, old_target: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit's fsync fails (EIO, injected where the core calls it) as a cancel arrives:
    old content, no temp, the cancellation propagates chained to the failure."""
    holder: list[Callable[[], None]] = []
    fired: list[int] = []

    def fsync_file(fd: int) -> None:
        fired.append(fd)
        holder[0]()
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomicfile._fs, "fsync_file", fsync_file)

    async def body(scope: anyio.CancelScope) -> None:
        holder.append(canceller(scope))
        async with AtomicFile(old_target, "wb") as f:
            await f.write(CHUNKS[0])

    out = cancelled_run(runtime, body)
    monkeypatch.undo()
    assert len(fired) == 1
    assert_cancelled(out)
    failure = find_in_chain(out.exc, SessionFileError)
    assert failure is not None and failure.errno == errno.EIO and failure.step == "fsync"
    assert check_after(tmp_path, old_target) == OLD


def find_in_chain(exc: BaseException | None, kind: type[BaseException]) -> Any:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def test_cancel_during_cleanup_chains_the_block_error(
    tmp_path: Path, old_target: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block failed; the cleanup runs in its thread when the cancel comes: the temp is
    still removed, the cancellation propagates, and the block's error is chained to it."""
    holder: list[Callable[[], None]] = []
    real_unlink = os.unlink
    removed: list[str] = []

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(os.fsdecode(path)).startswith(".t."):
            removed.append(os.fsdecode(path))
            holder[0]()
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    failure = KeyError("the block failed")

    async def body(scope: anyio.CancelScope) -> None:
        holder.append(canceller(scope))
        async with AtomicFile(old_target, "wb") as f:
            await f.write(NEW)
            raise failure

    out = cancelled_run(runtime, body)
    monkeypatch.undo()
    assert len(removed) == 1
    assert_cancelled(out)
    assert find_in_chain(out.exc, KeyError) is failure
    assert check_after(tmp_path, old_target) == OLD


def test_cancel_during_atomic_write_async(tmp_path: Path, old_target: Path, runtime: str) -> None:
    """Its one thread job is the whole write: it completes, then the cancellation."""

    async def body(scope: anyio.CancelScope) -> None:
        cancel = canceller(scope)

        def hook(path: Any, current: Any) -> int:
            cancel()
            return 0o644

        await atomic_write_async(old_target, NEW, permissions=hook)

    assert_cancelled(cancelled_run(runtime, body))
    assert check_after(tmp_path, old_target) == NEW


# -- cancellation at random deadlines --------------------------------------------------------


@pytest.mark.stress
def test_cancel_at_random_deadlines(tmp_path: Path, runtime: str) -> None:
    """TRIALS writes (an `async with` of 8 x 16 KiB, or one `atomic_write_async`) under a
    deadline drawn at random from 0-3 ms: the target is old or new exactly, no temp, and
    the cancellation propagated exactly when the write did not finish."""
    target = tmp_path / "t"
    rng = random.Random(11)
    outcomes: dict[tuple[str, bool, bytes], int] = {}

    async def trials() -> None:
        for trial in range(TRIALS):
            target.write_bytes(OLD)
            kind = "one call" if trial % 4 == 3 else "async with"
            finished = False
            with anyio.move_on_after(rng.uniform(0, 0.003)) as scope:
                if kind == "async with":
                    async with AtomicFile(target, "wb", durable=trial % 2 == 0) as f:
                        for chunk in CHUNKS:
                            await f.write(chunk)
                else:
                    await atomic_write_async(target, NEW, durable=trial % 2 == 0)
                finished = True
            content = check_after(tmp_path, target)
            assert scope.cancelled_caught is not finished, (trial, kind)
            if finished:
                assert content == NEW
            key = (kind, scope.cancelled_caught, content)
            outcomes[key] = outcomes.get(key, 0) + 1

    run_on(runtime, trials)
    assert sum(outcomes.values()) == TRIALS
    # A deadline of ~0 cancels before anything happened: that corner is always reached.
    assert any(caught and content == OLD for (_, caught, content) in outcomes), outcomes


# -- the in-memory buffer of small writes ----------------------------------------------------


def _count_thread_jobs(monkeypatch: pytest.MonkeyPatch, jobs: list[str]) -> None:
    """From now on, each thread job the running loop's runtime module starts is appended to
    `jobs` ("run", or "shielded" for a commit's); call it inside the loop."""
    from atomicfile import _async

    rt = _async.current_runtime()
    real_run, real_shielded = rt.run, rt.run_shielded

    async def run(func: Any, *args: Any) -> Any:
        jobs.append("run")
        return await real_run(func, *args)

    async def run_shielded(func: Any, *args: Any) -> Any:
        jobs.append("shielded")
        return await real_shielded(func, *args)

    monkeypatch.setattr(rt, "run", run)
    monkeypatch.setattr(rt, "run_shielded", run_shielded)


def test_small_writes_cost_no_thread_job(
    tmp_path: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small `async with` write is two thread jobs: the open and the commit. Counted where
    the runtime module starts them."""
    jobs: list[str] = []

    async def main() -> None:
        _count_thread_jobs(monkeypatch, jobs)
        data = bytearray(b"a" * 1000)
        async with AtomicFile(tmp_path / "t", "wb") as f:
            for _ in range(60):  # 60,000 bytes: under the 64 KiB budget
                assert await f.write(data) == 1000
            data[:] = b"b" * 1000  # a copy was kept: the change must not reach the file
        monkeypatch.undo()

    run_on(runtime, main)
    assert jobs == ["run", "shielded"]
    assert (tmp_path / "t").read_bytes() == b"a" * 60000
    assert listing(tmp_path) == ["t"]


def test_atomic_write_async_is_one_thread_job(
    tmp_path: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole durable write (temp, write, fsync, rename, directory fsync) is one thread
    job, each time: nothing before or after it goes to a thread."""
    jobs: list[str] = []

    async def main() -> None:
        _count_thread_jobs(monkeypatch, jobs)
        for i in range(3):
            await atomic_write_async(tmp_path / "t", b"%d" % i, durable=True)
        monkeypatch.undo()

    run_on(runtime, main)
    assert jobs == ["run"] * 3
    assert (tmp_path / "t").read_bytes() == b"2"
    assert listing(tmp_path) == ["t"]


def test_past_the_budget_a_write_is_a_thread_job(tmp_path: Path) -> None:
    seen: list[int] = []

    async def main() -> None:
        async with AtomicFile(tmp_path / "t", "w") as f:
            await f.write("x" * 60000)
            assert f.wrapped.tell() == 60000  # `wrapped` writes out what was kept first
            seen.append(threading.get_ident())
            await f.write("y" * 10000)
            await f.write("z" * 60000)  # 70,000 over: one job writes both
            assert await f.tell() == 130000

    run_async("trio", main)
    assert (tmp_path / "t").read_text() == "x" * 60000 + "y" * 10000 + "z" * 60000
    assert listing(tmp_path) == ["t"]


def test_buffered_write_errors_surface_at_flush_and_commit(tmp_path: Path, runtime: str) -> None:
    """An encoding error on kept text surfaces at flush(), or at the commit, as the same
    exception the sync write raises; the target is untouched and no temp is left."""
    target = tmp_path / "t"
    target.write_bytes(OLD)
    with (
        pytest.raises(UnicodeEncodeError) as sync_error,
        open(os.devnull, "w", encoding="ascii") as dev,
    ):
        dev.write("é")
    caught: list[BaseException] = []

    async def main() -> None:
        for where in ("flush", "commit"):
            try:
                async with AtomicFile(target, "w", encoding="ascii") as f:
                    assert await f.write("é") == 1  # kept: no error yet
                    if where == "flush":
                        await f.flush()
                        raise AssertionError("flush did not raise")  # pragma: no cover
            except UnicodeEncodeError as err:
                caught.append(err)

    run_on(runtime, main)
    assert [type(e) for e in caught] == [type(sync_error.value)] * 2
    assert all(e.reason == sync_error.value.reason for e in caught)  # type: ignore[attr-defined]
    assert check_after(tmp_path, target) == OLD


def test_buffered_enospc_surfaces_at_commit_as_session_error(tiny_fs: Path, runtime: str) -> None:
    """A real ENOSPC (64 KiB tmpfs) on bytes kept in memory: SessionFileError at the commit,
    also an OSError with errno ENOSPC, chained to the original; nothing left behind."""
    target = tiny_fs / "t"
    target.write_bytes(b"old")
    caught: list[BaseException] = []

    async def main() -> None:
        try:
            async with AtomicFile(target, "wb") as f:
                for _ in range(16):  # 64 KiB kept, with the old file: more than fits
                    await f.write(b"x" * 4096)
        except OSError as err:
            caught.append(err)

    run_on(runtime, main)
    (err,) = caught
    assert isinstance(err, SessionFileError) and err.errno == errno.ENOSPC
    assert err.__cause__ is err.cause and err.cause.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert listing(tiny_fs) == ["t"]


def test_async_file_name_is_the_wrapped_files(tmp_path: Path, runtime: str) -> None:
    names: list[Any] = []

    async def main() -> None:
        for path in (str(tmp_path / "s"), os.fsencode(tmp_path / "b")):
            async with AtomicFile(path, "wb") as f:
                names.append((f.name, f.wrapped.name))

    run_on(runtime, main)
    assert [type(a) for a, _ in names] == [type(b) for _, b in names]
    assert all(a == b for a, b in names)
    assert listing(tmp_path) == ["b", "s"]


def test_asyncio_jobs_run_in_the_loops_default_executor(tmp_path: Path) -> None:
    """`loop.set_default_executor()` is honoured: every thread job runs in its threads."""
    from concurrent.futures import ThreadPoolExecutor

    names: set[str] = set()

    def hook(path: Any, current: Any) -> int:  # runs inside the open job
        names.add(threading.current_thread().name)
        return 0o644

    async def main() -> None:
        executor = ThreadPoolExecutor(1, thread_name_prefix="ours")
        asyncio.get_running_loop().set_default_executor(executor)
        async with AtomicFile(tmp_path / "t", "wb", permissions=hook) as f:
            await f.write(b"x" * 100000)  # past the budget: a write job
            names.add(await asyncio.to_thread(lambda: threading.current_thread().name))
        await atomic_write_async(tmp_path / "u", b"y", permissions=hook)

    asyncio.run(main())
    assert names and all(name.startswith("ours") for name in names), names
    assert listing(tmp_path) == ["t", "u"]
