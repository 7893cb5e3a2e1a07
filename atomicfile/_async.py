"""The asyncio form: the sync protocol's steps, each run as one worker-thread job.

This is the only module that imports asyncio; `import atomicfile` loads it on first use.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, AnyStr, Generic, TypeVar, overload

from ._core import _NEW, AtomicFile, atomic_write

if TYPE_CHECKING:
    from typing import Literal

    from _typeshed import ReadableBuffer

    from ._core import FileTarget
    from ._log import AnyLogger
    from ._permissions import Permissions

_T = TypeVar("_T")


async def run(func: Callable[..., _T], *args: Any) -> _T:
    """Run the blocking `func(*args)` in the default executor, with the caller's context.

    A thread can't be interrupted, so a cancellation lets the step finish (no other step,
    such as the cleanup, ever runs beside it), then is raised: a commit under way either
    completes or, if it fails, leaves the old target.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, contextvars.copy_context().run, func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError as cancel:
        while not future.done():
            try:
                await asyncio.wait((future,))
            except asyncio.CancelledError:
                pass
        if not future.cancelled() and future.exception() is not None:
            raise cancel from future.exception()
        raise


class AsyncFile(Generic[AnyStr]):
    """The temp file of an `async with AtomicFile(...)` block, with coroutine methods.

    Each method runs the file's own method in a worker thread, so the event loop never
    blocks on I/O. `wrapped` is the underlying file object.
    """

    __slots__ = ("_file", "_owner")
    _file: IO[AnyStr]

    def __init__(self, file: IO[AnyStr], owner: AtomicFile[Any]) -> None:
        self._file = file
        self._owner = owner

    def __repr__(self) -> str:
        return f"<AsyncFile {self._file!r}>"

    if not TYPE_CHECKING:  # a run-time message only: type checkers already reject `with`

        def __enter__(self):
            raise TypeError("AsyncFile is not a context manager: use 'async with AtomicFile(...)'")

        def __exit__(self, *args):  # pragma: no cover - __enter__ raises
            pass

    @property
    def wrapped(self) -> IO[AnyStr]:
        """The synchronous file object this wraps."""
        return self._file

    @property
    def name(self) -> str:
        """The temp file's path."""
        return str(self._file.name)

    @property
    def mode(self) -> str:
        return self._file.mode

    @property
    def encoding(self) -> str | None:
        """The text encoding; None in binary mode."""
        return getattr(self._file, "encoding", None)

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _live(self) -> IO[AnyStr]:
        self._owner._check_live()
        return self._file

    @overload
    async def write(self: AsyncFile[str], data: str) -> int: ...
    @overload
    async def write(self: AsyncFile[bytes], data: ReadableBuffer) -> int: ...
    async def write(self, data: Any) -> int:
        return await run(self._live().write, data)

    @overload
    async def writelines(self: AsyncFile[str], lines: Iterable[str]) -> None: ...
    @overload
    async def writelines(self: AsyncFile[bytes], lines: Iterable[ReadableBuffer]) -> None: ...
    async def writelines(self, lines: Iterable[Any]) -> None:
        await run(self._live().writelines, lines)

    async def flush(self) -> None:
        await run(self._live().flush)

    async def read(self, size: int = -1) -> AnyStr:
        return await run(self._live().read, size)

    async def readline(self, size: int = -1) -> AnyStr:
        return await run(self._live().readline, size)

    async def readlines(self, hint: int = -1) -> list[AnyStr]:
        return await run(self._live().readlines, hint)

    async def seek(self, offset: int, whence: int = 0) -> int:
        return await run(self._live().seek, offset, whence)

    async def tell(self) -> int:
        return await run(self._live().tell)

    async def truncate(self, size: int | None = None) -> int:
        return await run(self._live().truncate, size)

    def fileno(self) -> int:
        return self._file.fileno()


async def enter(af: AtomicFile[Any]) -> AsyncFile[Any]:
    """`async with` entry: open in a thread; if cancelled meanwhile, undo the open."""
    af._expect(_NEW, "open")  # fail fast, before a thread hop
    try:
        file = await run(af.__enter__)
    except asyncio.CancelledError as cancel:
        if af._is_open:
            await run(af.__exit__, type(cancel), cancel, cancel.__traceback__)
        raise
    return AsyncFile(file, af)


async def atomic_write_async(
    file: FileTarget,
    data: str | ReadableBuffer,
    *,
    mode: Literal["w", "x", "a"] = "w",
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    permissions: Permissions = None,
    logger: AnyLogger | None = None,
    durable: bool = True,
    follow_symlinks: bool = True,
    fs: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """`atomic_write` as a coroutine: the whole write runs as one worker-thread job.

    Cancelling it lets the job finish (the file then holds the new data, or the old if the
    write failed) before `CancelledError` is raised: never a partial file or a stray temp.
    """
    await run(
        lambda: atomic_write(
            file,
            data,
            mode=mode,
            encoding=encoding,
            errors=errors,
            newline=newline,
            permissions=permissions,
            logger=logger,
            durable=durable,
            follow_symlinks=follow_symlinks,
            fs=fs,
            storage_options=storage_options,
        )
    )
