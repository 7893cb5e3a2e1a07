"""Read-modify-write without lost updates: `atomic_update` and `atomic_update_async`.

One update is a cycle: read the current content, call `fn(old)`, publish what it returns
atomically. What keeps two cycles from losing each other's change depends on the store:

- a local file: "lock, read, fn, write, unlock". The write is an `AtomicFile(...,
  lock=True)`: the lock (`_lock`) is taken before the target is looked at, the old content
  is read from the very descriptor the lock holds, and the lock is held until the commit
  (directory fsync included) or the discard is over. `fn` runs once.
- an object store (no locks to take): "read the object with its version (ETag), call fn,
  write on condition that the version is unchanged (If-Match; If-None-Match: * where there
  was no object), and on a conflict read again and call fn again, until timeout". The store
  knows its versions and conditions (`read()`, `expect()`); the loop (`_conditional_cycle`)
  is written once here. `fn` may run more than once, each time on the content it replaces.
"""

from __future__ import annotations

import errno
import io
import time

from ._core import AtomicFile
from ._errors import SessionFileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any, Literal, TypeVar, overload

    from _typeshed import ReadableBuffer
    from typing_extensions import Unpack

    from ._core import FileTarget
    from ._options import WriteOptions
    from ._store import ConditionalStore

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
    """The write of one cycle: locked where the store has locks, else (an object store)
    made conditional later (ValueError/TypeError for bad arguments, before I/O)."""
    af: AtomicFile[Any] = AtomicFile(
        file, "wb" if binary else "w", -1, encoding, errors, newline, **options
    )
    if af.store.conditional:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise ValueError(f"timeout must be None or seconds >= 0, not {timeout!r}")
    elif not af.store.lockable:
        raise NotImplementedError("atomic_update needs flock(2): POSIX only for now")
    else:
        af._use_lock(timeout)
    return af


def _conditional_cycle(
    af: AtomicFile[Any], fn: Callable[[Any], Any], binary: bool, encoding: str | None,
    errors: str | None, newline: str | None, timeout: float | None, again: Callable[[], Any],
) -> Any:  # fmt: skip
    """The object-store cycle (see the module docstring); `again()` makes the next write."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        old = _read_versioned(af, binary, encoding, errors, newline)
        new = fn(old)  # raising: nothing was opened, nothing to clean up
        conflict = _publish_if_unchanged(af, new, binary)
        if conflict is None:
            return new
        af = _next_attempt(af, conflict, deadline, timeout, again)


def _read_versioned(
    af: AtomicFile[Any], binary: bool, encoding: str | None, errors: str | None,
    newline: str | None,
) -> Any:  # fmt: skip
    """The object's content (decoded as `_open_and_read` does; None: no object); the next
    write through `af` publishes only over the version read."""
    store: ConditionalStore = af.store  # type: ignore[assignment]
    try:
        data, version = store.read()
    except OSError as exc:
        raise SessionFileError(af.path, "atomic write", exc, "read") from exc
    store.expect(version)
    if data is None or binary:
        return data
    return io.TextIOWrapper(io.BytesIO(data), encoding, errors, newline).read()


def _publish_if_unchanged(af: AtomicFile[Any], new: Any, binary: bool) -> OSError | None:
    """Write `new` through `af`; the conflict (the object changed since it was read) if its
    condition failed, else None."""
    file = af.open()
    try:
        _write_and_commit(af, file, new, binary)
    except SessionFileError as exc:
        from ._remote import CONFLICTS

        # A store may check the condition when an upload begins, while the content is
        # written or flushed (a GCS resumable session), as well as at the commit.
        if exc.errno in CONFLICTS and exc.step in ("write", "flush", "commit"):
            return exc
        raise
    return None


def _next_attempt(
    af: AtomicFile[Any], conflict: OSError, deadline: float | None, timeout: float | None,
    again: Callable[[], Any],
) -> AtomicFile[Any]:  # fmt: skip
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(
            errno.ETIMEDOUT,
            f"No update within {timeout} s: the object changed at every attempt",
            af.path,
        ) from conflict
    return again()  # type: ignore[no-any-return]


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

    An object store (`"s3://…"`, `"gs://…"`, `"az://…"`) has no locks: the write is
    conditional on the version read (If-Match or ifGenerationMatch; If-None-Match: * or
    ifGenerationMatch=0 for a new object), and when another writer changed
    the object meanwhile, it is read again and `fn` called again on the new content, until
    `timeout` (then `TimeoutError`); so `fn` may run more than once there.
    """
    af = _writer(file, binary, encoding, errors, newline, timeout, options)
    if af.store.conditional:
        again = lambda: _writer(file, binary, encoding, errors, newline, timeout, options)  # noqa: E731
        return _conditional_cycle(af, fn, binary, encoding, errors, newline, timeout, again)
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
    with a non-blocking lock and the loop's own sleep (an object store's cycle has no wait:
    its requests run in worker threads). The file work runs in worker
    threads; a sync `fn` runs on the loop (keep it quick), an async one is awaited.
    Cancelled while waiting or while `fn` runs: nothing is written and nothing stays
    locked. Cancelled during the final write: it completes, then the cancellation is raised.
    """
    from inspect import isawaitable

    from ._async import current_runtime, open_when_locked, run

    runtime = current_runtime()
    af = _writer(file, binary, encoding, errors, newline, timeout, options)
    if af.store.conditional:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            old = await run(_read_versioned, af, binary, encoding, errors, newline)
            new = fn(old)
            if isawaitable(new):
                new = await new
            conflict = await run(_publish_if_unchanged, af, new, binary)
            if conflict is None:
                return new
            again = lambda: _writer(file, binary, encoding, errors, newline, timeout, options)  # noqa: E731
            af = _next_attempt(af, conflict, deadline, timeout, again)
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
