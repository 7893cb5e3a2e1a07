"""Read-modify-write without lost updates: `atomic_update` and `atomic_update_async`.

One update is a cycle: read the current content, call `fn(old)`, publish what it returns
atomically. What keeps two cycles from losing each other's change depends on the store:

- a local file: "lock, read, fn, write, unlock". The write is an `AtomicFile(...,
  lock=True)`: the lock (`_lock`) is taken before the target is looked at, the old content
  is read from the very descriptor the lock holds, and the lock is held until the commit
  (directory fsync included) or the discard is over. `fn` runs once.
- an object store (later, with no locks to take): "read with its version, fn, write on
  condition that the version is unchanged, and on a conflict read again and call fn again,
  until timeout". That loop belongs to the store (which alone knows its versions and
  conditions): it plugs in where `_writer` refuses a store today, as the store's own cycle
  beside the local `_cycle`, and the two public functions stay as they are.
"""

from __future__ import annotations

import io

from ._core import AtomicFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any, Literal, TypeVar, overload

    from _typeshed import ReadableBuffer
    from typing_extensions import Unpack

    from ._core import FileTarget
    from ._options import WriteOptions

    _B = TypeVar("_B", bound=ReadableBuffer)


def _writer(
    file: FileTarget,
    binary: bool,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
    timeout: float | None,
    options: dict[str, Any],
) -> AtomicFile[Any]:
    """The locked write of one cycle (ValueError/TypeError for bad arguments, before I/O)."""
    af: AtomicFile[Any] = AtomicFile(
        file, "wb" if binary else "w", -1, encoding, errors, newline, **options
    )
    if not af.store.lockable:
        # Object stores: the conditional cycle (read with its ETag, If-Match) comes with
        # their own update loop; until then, say so rather than update without a guard.
        raise NotImplementedError("atomic_update works on local files only for now")
    af._use_lock(timeout)
    return af


def _open_and_read(
    af: AtomicFile[Any], binary: bool, encoding: str | None, errors: str | None,
    newline: str | None,
) -> tuple[Any, Any]:  # fmt: skip
    """Open the write (taking the lock), and read the old content through the lock: bytes,
    or text decoded as `open(file, "r", encoding, errors, newline)` would; None when there
    is no target. A failure here ends the write (an OSError as SessionFileError)."""
    file = af.open()
    try:
        data = af._old_content()
        if data is None or binary:
            return file, data
        text = io.TextIOWrapper(io.BytesIO(data), encoding, errors, newline).read()
        return file, text
    except BaseException as exc:
        af.__exit__(type(exc), exc, exc.__traceback__)  # cleans up; wraps an OSError
        raise


def _write_and_commit(af: AtomicFile[Any], file: Any, new: Any, binary: bool) -> None:
    """Write `fn`'s result into the temp and publish it (a wrong type: TypeError, nothing
    written)."""
    try:
        if binary:
            if isinstance(new, str):
                raise TypeError("atomic_update(binary=True): fn must return bytes, not str")
        elif not isinstance(new, str):
            raise TypeError(
                f"atomic_update: fn must return str, not {type(new).__name__} "
                "(binary=True takes bytes)"
            )
        file.write(new)
    except BaseException as exc:
        af.__exit__(type(exc), exc, exc.__traceback__)
        raise
    af.commit()


# The typed signatures, for type checkers only: `import atomicfile` imports this module
# and must not import `typing` (see `_core`).
if TYPE_CHECKING:

    @overload
    def atomic_update(
        file: FileTarget,
        fn: Callable[[str | None], str],
        *,
        binary: Literal[False] = False,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        timeout: float | None = None,
        **options: Unpack[WriteOptions],
    ) -> str: ...
    @overload
    def atomic_update(
        file: FileTarget,
        fn: Callable[[bytes | None], _B],
        *,
        binary: Literal[True],
        encoding: None = None,
        errors: None = None,
        newline: None = None,
        timeout: float | None = None,
        **options: Unpack[WriteOptions],
    ) -> _B: ...


def atomic_update(
    file: FileTarget,
    fn: Callable[[Any], Any],
    *,
    binary: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    timeout: float | None = None,
    **options: Any,
) -> Any:
    """Replace `file` with `fn(old)`, where `old` is its content (None if it doesn't exist
    yet), with no update lost: every `atomic_update` and `lock=True` writer of the file, in
    any thread or process, runs one after the other. Returns what `fn` returned.

    Text by default (decoded and encoded as `open()` would, with `encoding`, `errors`,
    `newline`); `binary=True` gives and takes bytes. The write is atomic and durable, as
    `atomic_write`'s; other options are `AtomicFile`'s. `timeout` (seconds; None waits as
    long as it takes, 0 tries once) bounds the wait for the lock: then `TimeoutError`, and
    `fn` is not called. If `fn` raises, the file is untouched and its exception propagates
    as it is. `SessionFileError` when the file system fails (the file is then untouched).
    """
    af = _writer(file, binary, encoding, errors, newline, timeout, options)
    return _cycle(af, fn, binary, encoding, errors, newline)


def _cycle(
    af: AtomicFile[Any], fn: Callable[[Any], Any], binary: bool, encoding: str | None,
    errors: str | None, newline: str | None,
) -> Any:  # fmt: skip
    """The local cycle: lock, read, fn, write, unlock (see the module docstring)."""
    file, old = _open_and_read(af, binary, encoding, errors, newline)
    try:
        new = fn(old)
    except BaseException as exc:
        af._fail(exc)  # the user's own exception: cleaned up, then raised as it is
        raise
    _write_and_commit(af, file, new, binary)
    return new


# The typed signatures, for type checkers only: `import atomicfile` imports this module
# and must not import `typing` (see `_core`).
if TYPE_CHECKING:

    @overload
    async def atomic_update_async(
        file: FileTarget,
        fn: Callable[[str | None], str | Awaitable[str]],
        *,
        binary: Literal[False] = False,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        timeout: float | None = None,
        **options: Unpack[WriteOptions],
    ) -> str: ...
    @overload
    async def atomic_update_async(
        file: FileTarget,
        fn: Callable[[bytes | None], _B | Awaitable[_B]],
        *,
        binary: Literal[True],
        encoding: None = None,
        errors: None = None,
        newline: None = None,
        timeout: float | None = None,
        **options: Unpack[WriteOptions],
    ) -> _B: ...


async def atomic_update_async(
    file: FileTarget,
    fn: Callable[[Any], Any],
    *,
    binary: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    timeout: float | None = None,
    **options: Any,
) -> Any:
    """`atomic_update` as a coroutine, under asyncio or trio; `fn` may be sync or async.

    The wait for the lock never blocks the event loop nor parks a thread in it: it polls
    with a non-blocking lock and the loop's own sleep. The file work runs in worker
    threads; a sync `fn` runs on the loop (keep it quick), an async one is awaited.
    Cancelled while waiting or while `fn` runs: nothing is written and nothing stays
    locked. Cancelled during the final write: it completes, then the cancellation is raised.
    """
    from inspect import isawaitable

    from ._async import current_runtime, open_when_locked, run

    runtime = current_runtime()
    af = _writer(file, binary, encoding, errors, newline, timeout, options)
    opened, old = await open_when_locked(
        af, runtime, lambda: _open_and_read(af, binary, encoding, errors, newline)
    )
    try:
        new = fn(old)
        if isawaitable(new):
            new = await new
    except BaseException as exc:
        await runtime.run_shielded(af._fail, exc)  # cleaned up, then raised as it is
        raise
    await run(_write_and_commit, af, opened, new, binary)
    return new
