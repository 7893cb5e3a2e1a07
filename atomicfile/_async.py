"""The async form: the sync protocol's steps, each run as one worker-thread job, on the
runtime that runs the caller (asyncio or trio, found once per call).

Importing this module imports no event loop library: the runtime's module
(`_runtime_asyncio`, `_runtime_trio`) is loaded at first use, so code under trio never
imports asyncio.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, AnyStr, Generic, TypeVar, overload

from ._core import AtomicFile, atomic_write
from ._txn import NEW

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Literal, Protocol

    from _typeshed import ReadableBuffer
    from typing_extensions import Unpack

    from ._core import FileTarget
    from ._options import Options

    class Runtime(Protocol):
        """What the async form needs from an event loop library (one module per library)."""

        NAME: str

        async def run(self, func: Callable[..., _T], *args: Any) -> _T:
            """`func(*args)` in a worker thread. Once started it completes; a cancellation
            that came meanwhile is raised after it, chained to its error."""

        async def run_shielded(self, func: Callable[..., _T], *args: Any) -> _T:
            """`func(*args)` in a worker thread, started and completed even if cancelled."""

        async def checkpoint(self, cause: BaseException | None = None) -> None:
            """Raise a pending cancellation (chained to `cause`), else return."""

        async def sleep(self, seconds: float) -> None:
            """Pause the calling task (a cancellation point)."""

        def is_cancellation(self, exc: BaseException) -> bool: ...


_T = TypeVar("_T")

#: Small writes up to this many bytes (characters in text mode) in all wait on the loop
#: thread for the next thread job (usually the commit) instead of making their own.
BUFFER_LIMIT = 64 * 1024

SUPPORTED = "asyncio (with uvloop or anyio's asyncio backend too) and trio (guest mode and \
anyio's trio backend included)"

_runtimes: dict[str, Runtime] = {}


def current_runtime() -> Runtime:
    """The runtime running the caller, found without importing anything: trio (and anyio on
    trio) names itself in `sniffio.thread_local`, which trio imports; otherwise a running
    asyncio loop. RuntimeError naming the supported runtimes when neither is there."""
    sniffio = sys.modules.get("sniffio")
    name: str | None = None
    if sniffio is not None:
        name = sniffio.thread_local.name
        if name is None:
            cvar = getattr(sniffio, "current_async_library_cvar", None)
            name = cvar.get() if cvar is not None else None
    if name is None:
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and asyncio._get_running_loop() is not None:
            name = "asyncio"
    runtime = _runtimes.get(name or "")
    if runtime is not None:
        return runtime
    if name == "asyncio":
        from . import _runtime_asyncio as module
    elif name == "trio":
        from . import _runtime_trio as module  # type: ignore[no-redef]
    elif name is None:
        raise RuntimeError(
            "atomicfile's async form needs a running event loop in this thread, and none is "
            f"running; it supports {SUPPORTED}. Outside a loop, use AtomicFile with 'with'."
        )
    else:
        raise RuntimeError(
            f"atomicfile's async form can't run under {name}; it supports {SUPPORTED}"
        )
    _runtimes[name] = module
    return module


class AsyncFile(Generic[AnyStr]):
    """The temp file of an `async with AtomicFile(...)` block, with coroutine methods.

    Every blocking call runs in a worker thread, so the event loop never blocks on I/O. In
    write-only buffered modes, small writes (up to 64 KiB in all) are kept in memory on the
    loop thread and written out by the next thread job, usually the commit: they are not
    suspension points, and an error on those bytes (ENOSPC, an encoding error) surfaces at
    `flush()` or at the commit, as the same exception. `wrapped` is the underlying file
    object (with the kept bytes written into it).
    """

    __slots__ = ("_buffers", "_file", "_owner", "_pending", "_pending_size", "_runtime", "_text")
    _file: IO[AnyStr]

    def __init__(
        self,
        file: IO[AnyStr],
        owner: AtomicFile[Any],
        runtime: Runtime | None = None,
        keep_small_writes: bool = False,
    ) -> None:
        self._file = file
        self._owner = owner
        self._runtime = current_runtime() if runtime is None else runtime
        self._text = isinstance(file, io.TextIOBase)
        # Only when this module's exit writes them out (`async with AtomicFile`; a batch
        # commits its files itself). Write-only and buffered: read/seek would need the bytes
        # in the file at once, and an unbuffered write() reports what the system call took.
        self._buffers = (
            keep_small_writes and not file.readable() and not isinstance(file, io.RawIOBase)
        )
        self._pending: list[Any] = []
        self._pending_size = 0

    def __repr__(self) -> str:
        return f"<AsyncFile {self._file!r}>"

    if not TYPE_CHECKING:  # a run-time message only: type checkers already reject `with`

        def __enter__(self):
            raise TypeError("AsyncFile is not a context manager: use 'async with AtomicFile(...)'")

        def __exit__(self, *args):  # pragma: no cover - __enter__ raises
            pass

    @property
    def wrapped(self) -> IO[AnyStr]:
        """The synchronous file object this wraps, holding every byte written so far."""
        self._write_pending()
        return self._file

    @property
    def name(self) -> str | Any:
        """What `open()` would give: the file's `name` (bytes stay bytes)."""
        return self._file.name

    @property
    def mode(self) -> str:
        """The mode the write was opened with, as `open()` would give it."""
        return self._file.mode

    @property
    def encoding(self) -> str | None:
        """The text encoding; None in binary mode."""
        return getattr(self._file, "encoding", None)

    @property
    def closed(self) -> bool:
        """Whether the temp file is closed, as it is once the write has ended."""
        return self._file.closed

    # -- the in-memory buffer ----------------------------------------------------------

    def _keep(self, data: Any) -> int | None:
        """Keep `data` for the next thread job and return what write() returns, or None
        when it doesn't fit (the caller then writes it in a thread job)."""
        if self._text:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            size = count = len(data)
        elif type(data) is bytes:
            size = count = len(data)
        else:
            if isinstance(data, str):
                raise TypeError("a bytes-like object is required, not 'str'")
            view = memoryview(data)
            size = count = view.nbytes
            data = view.tobytes()  # the caller may change a bytearray after we return
        if self._pending_size + size > BUFFER_LIMIT:
            return None
        self._pending.append(data)
        self._pending_size += size
        return count

    def _take(self) -> list[Any]:
        chunks, self._pending, self._pending_size = self._pending, [], 0
        return chunks

    def _write_pending(self) -> None:
        if self._pending:
            _write_chunks(self._file, self._take(), self._text)

    async def _job(self, func: Callable[..., _T], *args: Any) -> _T:
        """One thread job that first writes the kept bytes, then runs `func(*args)`."""
        self._owner._check_live()
        if not self._pending:
            return await self._runtime.run(func, *args)
        chunks = self._take()
        started = False

        def job() -> _T:
            nonlocal started
            started = True
            _write_chunks(self._file, chunks, self._text)
            return func(*args)

        try:
            return await self._runtime.run(job)
        except BaseException:
            if not started:  # cancelled before the job ran: the bytes are still ours
                self._pending[:0] = chunks
                self._pending_size += sum(map(len, chunks))
            raise

    # -- the file's methods ------------------------------------------------------------

    @overload
    async def write(self: AsyncFile[str], data: str) -> int: ...
    @overload
    async def write(self: AsyncFile[bytes], data: ReadableBuffer) -> int: ...
    async def write(self, data: Any) -> int:
        """Write `data` into the temp file (a small write may be kept in memory: see above);
        return what the file's `write` returns."""
        if self._buffers:
            self._owner._check_live()
            count = self._keep(data)
            if count is not None:
                return count
        return await self._job(self._file.write, data)

    @overload
    async def writelines(self: AsyncFile[str], lines: Iterable[str]) -> None: ...
    @overload
    async def writelines(self: AsyncFile[bytes], lines: Iterable[ReadableBuffer]) -> None: ...
    async def writelines(self, lines: Iterable[Any]) -> None:
        """Write each of `lines` into the temp file, as the file's `writelines`."""
        if self._buffers and isinstance(lines, (list, tuple)):
            # A list is read here; any other iterable may do work, so the thread reads it.
            self._owner._check_live()
            mark = (len(self._pending), self._pending_size)
            for line in lines:
                if self._keep(line) is None:
                    del self._pending[mark[0] :]
                    self._pending_size = mark[1]
                    break
            else:
                return
        await self._job(self._file.writelines, lines)

    async def flush(self) -> None:
        """Flush the kept bytes and Python's buffer into the temp file (no fsync)."""
        await self._job(self._file.flush)

    async def read(self, size: int = -1) -> AnyStr:
        """Read from the temp file (`+`, `a` and `r+` modes), as the file's `read`."""
        return await self._job(self._file.read, size)

    async def readline(self, size: int = -1) -> AnyStr:
        """Read one line from the temp file, as the file's `readline`."""
        return await self._job(self._file.readline, size)

    async def readlines(self, hint: int = -1) -> list[AnyStr]:
        """Read the remaining lines from the temp file, as the file's `readlines`."""
        return await self._job(self._file.readlines, hint)

    async def seek(self, offset: int, whence: int = 0) -> int:
        """Move the temp file's position, as the file's `seek`; return the new one."""
        return await self._job(self._file.seek, offset, whence)

    async def tell(self) -> int:
        """The temp file's position, as the file's `tell`."""
        return await self._job(self._file.tell)

    async def truncate(self, size: int | None = None) -> int:
        """Truncate the temp file (never the target), as the file's `truncate`."""
        return await self._job(self._file.truncate, size)

    def fileno(self) -> int:
        """The temp file's descriptor (on the calling thread, after the kept bytes)."""
        self._write_pending()
        return self._file.fileno()


async def run(func: Callable[..., _T], *args: Any) -> _T:
    """One thread job on the caller's runtime, for the other async front doors
    (`AtomicBatch`, `AtomicDirectory`): it always runs to completion, even under a pending
    cancellation (their commit and cleanup must not be skipped), then a cancellation that
    came meanwhile is raised, chained to the job's error if it failed."""
    runtime = current_runtime()
    try:
        result = await runtime.run_shielded(func, *args)
    except BaseException as err:
        if not runtime.is_cancellation(err):
            await runtime.checkpoint(err)
        raise
    await runtime.checkpoint()
    return result


def _write_chunks(file: IO[Any], chunks: list[Any], text: bool) -> None:
    file.write(chunks[0] if len(chunks) == 1 else ("" if text else b"").join(chunks))


async def enter(af: AtomicFile[Any]) -> AsyncFile[Any]:
    """`async with` entry: open in a thread; if cancelled meanwhile, undo the open."""
    runtime = current_runtime()  # the unsupported-runtime error comes before any I/O
    af._expect_new()  # fail fast, before a thread hop
    if af._locking:
        file = await open_when_locked(af, runtime, af.__enter__)
        return AsyncFile(file, af, runtime, keep_small_writes=True)
    try:
        file = await runtime.run(af.__enter__)
    except BaseException as err:
        if af._committable:  # the open completed, then the cancellation came
            await runtime.run_shielded(af.__exit__, type(err), err, err.__traceback__)
        raise
    return AsyncFile(file, af, runtime, keep_small_writes=True)


async def open_when_locked(af: AtomicFile[Any], runtime: Runtime, job: Callable[[], _T]) -> _T:
    """The async wait of `lock=True`: return `job()` (which opens `af`), run in the same
    thread job as the attempt at the lock that succeeded.

    Each attempt is one non-blocking try in a worker thread, with the runtime's own sleep
    between them, so no thread ever blocks in a flock (the worker threads stay free for other
    writes, and an executor `asyncio.run()` joins at exit is never held) and the loop runs
    other tasks meanwhile.
    When the time is up, `job()` runs anyway: its `open()` looks once more and raises the
    `TimeoutError`, as the sync form does (and so for an error met while locking). A
    cancellation leaves nothing held, and undoes an open that completed meanwhile.
    """
    from ._lock import FIRST_PAUSE, MAX_PAUSE

    timeout = af._timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = FIRST_PAUSE
    time_up = False

    def attempt() -> Any:
        try:
            had = af._take_lock(0)
        except OSError:
            had = True  # open() meets the error again and fails the write with it
        if not (had or time_up):
            return _BUSY
        af._lock_waited = True  # open() only looks once more
        return job()

    try:
        while True:
            result = await runtime.run(attempt)
            if result is not _BUSY:
                return result  # type: ignore[no-any-return]
            left = pause if deadline is None else deadline - time.monotonic()
            if left <= 0:
                time_up = True
                continue
            await runtime.sleep(min(pause, left))
            pause = min(pause * 2, MAX_PAUSE)
    except BaseException as err:
        if af._committable:  # the open completed, then the cancellation came
            await runtime.run_shielded(af.__exit__, type(err), err, err.__traceback__)
        elif af._state == NEW:  # cancelled between attempts: at most the lock is held
            af._drop_lock()
        raise


#: What an attempt at the lock returns when another writer holds it.
_BUSY: Any = object()


def _finish(
    af: AtomicFile[Any],
    async_file: AsyncFile[Any] | None,
    chunks: list[Any],
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """The exit's one thread job: write the kept bytes, then commit (or clean up)."""
    if chunks:
        assert async_file is not None
        try:
            _write_chunks(async_file._file, chunks, async_file._text)
        except BaseException as err:
            # What the sync form does when a write in the block fails: clean up, and raise
            # an OSError as SessionFileError, anything else unchanged.
            af.__exit__(type(err), err, err.__traceback__)
            raise
    af.__exit__(exc_type, exc, tb)


async def leave(
    af: AtomicFile[Any],
    async_file: AsyncFile[Any] | None,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """`async with` exit: commit or clean up as one shielded thread job, then raise a
    cancellation that came meanwhile (chained to the block's error, if any)."""
    if async_file is None:
        runtime, chunks = current_runtime(), []
    else:
        runtime, chunks = async_file._runtime, async_file._take()
    if exc is not None or not af._committable:
        chunks = []  # nothing will be published
    block_cancelled = exc is not None and runtime.is_cancellation(exc)
    try:
        await runtime.run_shielded(_finish, af, async_file, chunks, exc_type, exc, tb)
    except BaseException as err:
        if runtime.is_cancellation(err):  # asyncio: it came while the job ran
            if exc is not None and err is not exc and err.__cause__ is None:
                raise err from exc
            raise
        if not block_cancelled:
            await runtime.checkpoint(err)
        raise
    if not block_cancelled:
        await runtime.checkpoint(exc)


async def atomic_write_async(
    file: FileTarget,
    data: str | ReadableBuffer,
    *,
    mode: Literal["w", "x", "a"] = "w",
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    **options: Unpack[Options],
) -> None:
    """`atomic_write` as a coroutine: the whole write runs as one worker-thread job.

    Cancelling it lets the job finish (the file then holds the new data, or the old if the
    write failed) before the cancellation is raised: never a partial file or a stray temp.
    Under trio, a cancellation already pending when it is called leaves the file untouched.
    RuntimeError outside a supported event loop, before anything touches the disk.
    """
    runtime = current_runtime()
    await runtime.run(
        lambda: atomic_write(
            file, data, mode=mode, encoding=encoding, errors=errors, newline=newline, **options
        )
    )
