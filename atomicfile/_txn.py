"""The lifecycle every writer shares: `AtomicFile`, `AtomicDirectory` and `AtomicBatch`.

One write moves through these states:

    new --open()--> open --commit()--> committing --> committed
                      |                    |
                      +--discard()/error---+--> discarded / failed

`Writer` holds the policy, written once: the misuse errors, `discard()`, `with`, the
garbage-collection discard (cleanup first, then the warning), the rule for wrapping an
`OSError` in `SessionFileError`, and the fork guard (a child never publishes or removes its
parent's write). Each writer supplies the work:

- `open()` calls `_begin()` first; `commit()` calls `_begin_commit()` first;
- `_cleanup()`: remove what the write made (temp file, staging tree) and close what it
  holds; returns what the removal did (`False`: nothing to remove, `True`, or the error);
- `_log_failure(exc)`, `_log_discard(reason)`, `_log_removal(removal)`: the log events;
- `_forget()`: a forked child's copy: close its descriptors, touch nothing shared.
"""

from __future__ import annotations

import os

from ._errors import SessionFileError, is_builtin_oserror, needs_wrapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

NEW, OPEN, COMMITTING = "new", "open", "committing"
COMMITTED, DISCARDED, FAILED = "committed", "discarded", "failed"

#: Bumped in every forked child: a write opened before the fork is the parent's.
forks = 0


def _after_fork() -> None:
    global forks
    forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def misuse(kind: str, action: str, state: str) -> str:
    """The message of the RuntimeError for `action` ("open" or "commit") in `state`."""
    again = f"; create a new {kind} for another write"
    if action == "open":
        what = {
            OPEN: "is already open",
            COMMITTING: "is being committed",
            COMMITTED: "was already committed",
            DISCARDED: "was discarded",
            FAILED: "already failed",
        }[state]
        return f"{kind} {what}{again}"
    if state == NEW:
        return f"{kind} is not open: call open() or use 'with' before commit()"
    if state == COMMITTING:
        return (
            f"{kind} is already being committed (by another thread?): one {kind} is one "
            "write, not to be shared between threads"
        )
    what = {
        COMMITTED: "was already committed",
        DISCARDED: "was discarded; it can't be committed",
        FAILED: "already failed; it can't be committed",
    }[state]
    return f"{kind} {what}"


class Writer:
    """The states, misuse errors, `discard()`, `with` and GC policy of one atomic write."""

    #: The class's name in errors and warnings.
    _kind = "Writer"
    #: `SessionFileError.operation` for this writer's errors.
    _operation = "atomic write"
    #: An OSError raised in the `with` block is the write's own error (it went to the
    #: temp): wrapped in SessionFileError. A batch, with no one target, leaves it as it is.
    _wraps_block_errors = True
    #: What to do instead, for the ResourceWarning of an abandoned write.
    _abandoned_hint = "call its commit() or use 'with'"

    # Per-write fields whose starting value is shared, as class attributes: a write sets
    # only those it changes (fewer attribute stores on the hot path of a small write).
    _state = NEW
    _in_with = False
    _discard_requested = False
    _forks = 0
    #: The target, as a `str` path (None for a batch, which has many).
    path: str | None = None

    # -- the subclass's work -------------------------------------------------------------

    def open(self) -> Any:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def _cleanup(self) -> bool | OSError:
        raise NotImplementedError

    def _forget(self) -> None:
        raise NotImplementedError

    def _log_failure(self, exc: BaseException) -> None:
        pass

    def _log_discard(self, reason: BaseException | None) -> None:
        pass

    def _log_removal(self, removal: bool | OSError) -> None:
        pass

    # -- the policy ----------------------------------------------------------------------

    @property
    def _committable(self) -> bool:
        """Open and no discard asked for: a clean exit now would publish."""
        return self._state == OPEN and not self._discard_requested

    def _expect_new(self) -> None:
        """The misuse error unless the write is still new (to fail before a thread hop)."""
        if self._state != NEW:
            raise RuntimeError(misuse(self._kind, "open", self._state))

    def _begin(self) -> None:
        """new -> open, or the misuse error; a fork from now on leaves the write here."""
        if self._state != NEW:
            raise RuntimeError(misuse(self._kind, "open", self._state))
        self._state = OPEN
        self._forks = forks

    def _begin_commit(self) -> None:
        """open -> committing (a second thread's commit now fails instead of racing), or
        the misuse error."""
        if self._forks != forks:
            raise RuntimeError(
                f"{self._kind} was opened before a fork(): only the parent process can commit it"
            )
        if self._state != OPEN:
            raise RuntimeError(misuse(self._kind, "commit", self._state))
        if self._discard_requested:
            raise RuntimeError(misuse(self._kind, "commit", DISCARDED))
        self._state = COMMITTING

    def _error(self, exc: OSError, step: str) -> SessionFileError:
        """`exc` (an OSError not yet wrapped) as this write's SessionFileError."""
        return SessionFileError(self.path or "", self._operation, exc, step)

    def discard(self) -> None:
        """Abandon the write: remove what it made and leave the target as it was.

        Inside `with`, the removal happens when the block ends and a clean exit then
        leaves the target alone. Does nothing once the write has ended (committed,
        discarded or failed), so it is safe in a `finally:`. In a forked child it only
        closes the child's copies of the descriptors: the write belongs to the parent.
        """
        state = self._state
        if state == NEW:
            self._state = DISCARDED
        elif state == OPEN:
            if self._forks != forks:
                self._forget()
            elif self._in_with:
                self._discard_requested = True
            else:
                self._end(DISCARDED, None)

    def __enter__(self) -> Any:
        value = self.open()
        self._in_with = True
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_with = False
        if self._state != OPEN:
            return  # committed, discarded or failed inside the block
        if self._forks != forks:
            self._forget()  # a forked child leaving the block: the write is the parent's
            return
        if exc is None:
            if self._discard_requested:
                self._end(DISCARDED, None)
            else:
                self.commit()
            return
        self._fail(exc)
        if self._wraps_block_errors and needs_wrapping(exc) and is_builtin_oserror(exc):
            # The block's writes go to the temp: its I/O errors are the write's errors.
            # Other OSError classes (ssl.SSLError, socket.gaierror, a user's own) are not
            # ours to rename: they propagate as the same object.
            raise self._error(exc, "write") from exc

    def __del__(self) -> None:
        # An abandoned open write is discarded, as an unclosed file is closed, with the same
        # ResourceWarning. Never in a forked child: what it made belongs to the parent.
        if getattr(self, "_state", None) == OPEN and self._forks == forks:
            message, category = self._abandoned()  # asked before the cleanup changes it
            try:
                self._end(DISCARDED, None)  # first: a warning turned error must not skip it
            except Exception:
                pass
            import warnings

            warnings.warn(message, category, stacklevel=2)

    def _abandoned(self) -> tuple[str, type[Warning]]:
        """The warning for an open write collected unfinished, as for an unclosed file."""
        return f"unfinished {self!r} discarded: {self._abandoned_hint}", ResourceWarning

    def _fail(self, exc: BaseException) -> None:
        """The write ends without publishing: an exception that is not an `Exception`
        (cancellation, KeyboardInterrupt, SystemExit) is a discard, anything else a failure."""
        self._end(FAILED if isinstance(exc, Exception) else DISCARDED, exc)

    def _end(self, state: str, exc: BaseException | None) -> None:
        """Remove what the write made first, then log: a logger that fails never hides the
        original error or leaves anything behind."""
        self._state = state
        removal = self._cleanup()
        try:
            if state == FAILED:
                assert exc is not None
                self._log_failure(exc)
            else:
                self._log_discard(exc)
            self._log_removal(removal)
        except Exception:
            if exc is None:
                raise  # a plain discard: the logger's error is the only one


class ThreadedAsync(Writer):
    """`async with` for a writer whose steps block (`AtomicDirectory`, `atomic_path`,
    `AtomicBatch`'s commit): the same `with`, `__enter__` and `__exit__` each run in a worker
    thread (`_async.run`, imported when first used: `import atomicfile` never imports
    asyncio). A writer whose `__enter__` does no I/O overrides `__aenter__`."""

    async def __aenter__(self) -> Any:
        from ._async import run

        self._expect_new()
        try:
            return await run(self.__enter__)
        except BaseException as exc:
            if self._state == OPEN:  # cancelled while the thread created it: undo
                await run(self.__exit__, type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from ._async import run

        await run(self.__exit__, exc_type, exc, tb)
