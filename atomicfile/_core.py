"""The atomic write protocol, synchronous: `AtomicFile` and `atomic_write`.

Every step lives here (create the temp, finish it, publish it, roll it back); the async
form in `_async` runs these same steps in a worker thread.
"""

from __future__ import annotations

import errno
import os

from . import _log, _permissions
from ._errors import needs_wrapping
from ._modes import parse_mode
from ._store import LocalTemp, resolve
from ._txn import COMMITTED, COMMITTING, DISCARDED, FAILED, OPEN, Writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    import io
    from types import TracebackType
    from typing import (
        IO,
        Any,
        AnyStr,
        BinaryIO,
        Generic,
        Literal,
        Protocol,
        TypeVar,
        overload,
    )

    from _typeshed import ReadableBuffer, StrOrBytesPath
    from typing_extensions import Unpack

    from ._async import AsyncFile
    from ._batch import SharedDirs
    from ._lock import TargetLock
    from ._log import AnyLogger
    from ._options import Options
    from ._permissions import Permissions
    from ._store import Store, Temp

    class _UPathLike(Protocol):
        """universal-pathlib's UPath, as far as AtomicFile reads it."""

        @property
        def protocol(self) -> str: ...
        @property
        def path(self) -> str: ...
        @property
        def fs(self) -> Any: ...

    #: A local path, an fsspec URL ('s3://bucket/key'), or a UPath.
    FileTarget = StrOrBytesPath | _UPathLike

    _F = TypeVar("_F", bound="IO[Any]", covariant=True)

    TextMode = Literal[
        "w", "wt", "tw", "x", "xt", "tx", "a", "at", "ta", "r+", "+r", "r+t", "rt+", "+rt",
        "+tr", "tr+", "t+r", "w+", "+w", "w+t", "wt+", "+wt", "+tw", "tw+", "t+w", "x+", "+x",
        "x+t", "xt+", "+xt", "+tx", "tx+", "t+x", "a+", "+a", "a+t", "at+", "+at", "+ta", "ta+",
        "t+a",
    ]  # fmt: skip
    BinaryWriteMode = Literal["wb", "bw", "xb", "bx", "ab", "ba"]
    BinaryUpdateMode = Literal[
        "r+b", "rb+", "+rb", "+br", "br+", "b+r", "w+b", "wb+", "+wb", "+bw", "bw+", "b+w",
        "x+b", "xb+", "+xb", "+bx", "bx+", "b+x", "a+b", "ab+", "+ab", "+ba", "ba+", "b+a",
    ]  # fmt: skip
    BinaryMode = Literal[BinaryWriteMode, BinaryUpdateMode]
else:
    # `typing` costs more to import than this whole package; these stand-ins keep
    # `import atomicfile` cheap while type checkers see the real names above.
    _F = None

    class Generic:
        def __class_getitem__(cls, params):
            if params is _F:
                return cls  # `class AtomicFile(Generic[_F])` itself
            import types

            return types.GenericAlias(cls, params)  # AtomicFile[io.TextIOWrapper]

    def overload(func):
        return func


class AtomicFile(Writer, Generic[_F]):
    """Write a file so that it holds the old content or the new one, never a mix.

    The positional parameters are `open()`'s. Writes go to a temp file beside the target;
    a clean exit from `with` (or `commit()`) flushes it, sets its permissions, fsyncs it and
    renames it over the target. An exception (or `discard()`) removes the temp and leaves
    the target as it was. `async with` gives a file whose methods are coroutines.

    Keyword options: `permissions` (None keeps an existing file's bits, an int mode, or a hook
    `(target, current_stat) -> int`), `logger`, `durable` (fsync the file and its directory;
    default True), `follow_symlinks` (replace what a symlink points to; default True),
    `lock` (True: wait for the other `lock=True` writers and `atomic_update` calls of this
    target, in any thread, task or process, and keep them waiting until this write ends; so
    an 'a' or 'r+' copy is never stale), `timeout` (seconds to wait for that lock: None waits
    as long as it takes, 0 tries once; then `TimeoutError`, nothing written). See `_lock`.

    Object stores: a URL such as `"s3://bucket/key"` (with `storage_options`, as
    `fsspec.open` takes them), a `UPath`, or a path with `fs=` an fsspec file system
    (s3fs, memory). The object is replaced in one step at the commit; an exception aborts
    the upload and leaves the old object. See `_remote`.

    Raises `ValueError`/`TypeError` for bad arguments before any I/O, and `SessionFileError`
    (also the builtin `OSError` subclass `open()` would raise) when the file system fails.
    """

    _kind = "AtomicFile"
    _abandoned_hint = "keep the AtomicFile and call its commit()"

    #: Set by `AtomicBatch`: directory descriptors its writes share (see `_local.LocalTemp`).
    _dirs: SharedDirs | None = None

    if TYPE_CHECKING:

        @overload
        def __init__(
            self: AtomicFile[io.TextIOWrapper],
            file: FileTarget,
            mode: TextMode = "w",
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            **options: Unpack[Options],
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[io.FileIO],
            file: FileTarget,
            mode: BinaryMode,
            buffering: Literal[0],
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[Options],
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[io.BufferedRandom],
            file: FileTarget,
            mode: BinaryUpdateMode,
            buffering: Literal[-1, 1] = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[Options],
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[io.BufferedWriter],
            file: FileTarget,
            mode: BinaryWriteMode,
            buffering: Literal[-1, 1] = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[Options],
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[BinaryIO],
            file: FileTarget,
            mode: BinaryMode,
            buffering: int = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[Options],
        ) -> None: ...

        @overload
        def __init__(
            self: AtomicFile[IO[Any]],
            file: FileTarget,
            mode: str,
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            **options: Unpack[Options],
        ) -> None: ...

    def __init__(
        self,
        file: FileTarget,
        mode: str = "w",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        *,
        permissions: Permissions = None,
        logger: AnyLogger | None = None,
        durable: bool = True,
        follow_symlinks: bool = True,
        fs: Any = None,
        storage_options: dict[str, Any] | None = None,
        lock: bool = False,
        timeout: float | None = None,
        make_parents: bool = False,
    ) -> None:
        self._mode = parsed = parse_mode(mode)
        if not isinstance(buffering, int) or isinstance(buffering, bool):
            raise TypeError(f"buffering must be an int, not {type(buffering).__name__}")
        if parsed.binary:
            # One test for the usual all-None case; the pairs are built only to name the error.
            if encoding is not None or errors is not None or newline is not None:
                for name, value in (
                    ("encoding", encoding), ("errors", errors), ("newline", newline)
                ):  # fmt: skip
                    if value is not None:
                        raise ValueError(f"binary mode doesn't take an {name} argument")
        else:
            if buffering == 0:
                raise ValueError("can't have unbuffered text I/O")
            if newline not in (None, "", "\n", "\r", "\r\n"):
                raise ValueError(f"illegal newline value: {newline!r}")
            if encoding is not None and encoding != "locale":
                import codecs

                codecs.lookup(encoding)  # LookupError now, not after the temp exists
        if permissions is not None:  # None, the default, needs no check: skip the call
            _permissions.check(permissions, file=True)
        #: Where the target lives: the local file system or an object store.
        self.store: Store
        #: What `open()` would give as the file's `name`: the target as passed (an
        #: object's URL).
        self.name: str | bytes
        self.store, self.name = resolve(
            file,
            fs,
            storage_options,
            permissions=permissions,
            durable=durable,
            follow_symlinks=follow_symlinks,
        )
        #: The target, as a `str` path (the URL of an object). A `str` is what fsdecode()
        #: would return unchanged: skip its Python-level call for the usual case.
        given = self.name
        self.path: str = given if isinstance(given, str) else os.fsdecode(given)
        #: The mode string, as given.
        self.mode: str = mode
        self._open_args = (buffering, encoding, errors, newline)
        self._permissions = permissions
        self._logger = logger
        self._durable = bool(durable)
        self._follow = bool(follow_symlinks)
        self._file: IO[Any] | None = None
        self._temp: Temp | None = None
        if make_parents:
            # Object stores have no directories: a key's prefix needs no creating, so the
            # option is accepted there and does nothing.
            self._make_parents = True
        if lock is not False or timeout is not None:
            if not isinstance(lock, bool):
                raise TypeError(f"lock must be True or False, not {type(lock).__name__}")
            if not lock:
                raise ValueError("timeout= is how long lock=True waits: pass lock=True too")
            self._use_lock(timeout)

    def _use_lock(self, timeout: float | None) -> None:
        """Make this write take the target's lock at open (`_lock`), waiting up to
        `timeout`; or the error that says why it can't, before any I/O."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise ValueError(f"timeout must be None or seconds >= 0, not {timeout!r}")
        if not self.store.lockable:
            raise ValueError(
                "lock=True works on local files on POSIX only (it is a flock(2)): object "
                "stores have no locks; use atomic_update(), which makes the write conditional"
            )
        self._locking = True
        self._timeout = timeout

    # Per-write fields whose starting value is shared, as class attributes: each write sets
    # only those it changes (fewer attribute stores on the hot path of a small write).
    _size_hint: int | None = None
    #: The file `async with` gave, while the block runs.
    _async_file: AsyncFile[Any] | None = None
    _leftover = False
    #: The file's position when open() returned it ('a': the end of the copy).
    _opened_at = 0
    #: lock=True: the write takes the target's lock (`_lock`) at open, waiting `_timeout`.
    _locking = False
    _timeout: float | None = None
    _lock: TargetLock | None = None
    #: make_parents=True: a local write creates the target's missing directories.
    _make_parents = False
    #: The async form waited for the lock already (between sleeps on its loop).
    _lock_waited = False
    #: perf_counter() readings for the DEBUG events' durations, taken only when DEBUG is on.
    _start = 0.0
    _renamed_at = 0.0

    def __repr__(self) -> str:
        return f"<AtomicFile {self.path!r} mode={self.mode!r} {self._state}>"

    @property
    def temp_path(self) -> str | None:
        """The temp file's path while a write is open, else None."""
        temp = self._temp
        return temp.temp_path if temp is not None and self._state == OPEN else None

    # -- the protocol ------------------------------------------------------------------

    def open(self) -> _F:
        """Create the temp file beside the target and return it as `open()` would.

        For 'a' and 'r+' the temp starts as a copy of the target. Raises `SessionFileError`
        as `open()` would raise its `OSError` (missing directory, target is a directory,
        'x' and the target exists, 'r+' and it doesn't, permission denied...). Keep the
        `AtomicFile`: its `commit()` publishes what the file holds.
        """
        self._begin()
        temp = self._temp or self._new_temp()  # made by the async form's lock wait
        log = self._log
        try:
            if self._locking and not self._take_lock(0 if self._lock_waited else self._timeout):
                raise TimeoutError(
                    errno.ETIMEDOUT,
                    f"No lock within {self._timeout} s: another writer holds the target",
                    self.path,
                )
            problem = temp.inspect()
            if problem is None and self._lock is not None:
                problem = self._lock.check(temp.target_stat)  # type: ignore[attr-defined]
            if log.debug:
                fields: dict[str, Any] = {
                    "target_path": self.path,
                    "temp_path": temp.temp_path,
                    "operation": "atomic_write",
                }
                if self._size_hint is not None:
                    fields["size"] = self._size_hint
                log.emit(_log.DEBUG, _log.STARTED, fields)
            if problem is not None:
                raise problem
            temp.create(self._permissions)
            self._file = file = temp.open_file(self.mode, *self._open_args, name=self.name)
            if self._mode.kind == "a":
                self._opened_at = file.tell()  # the copy's end (see `_abandoned`)
        except BaseException as exc:
            self._fail(exc)
            if needs_wrapping(exc):
                raise self._error(exc, temp.step) from exc
            raise
        return file  # type: ignore[return-value]

    def _new_temp(self) -> Temp:
        """This write's event log and its store's temp (nothing on disk yet)."""
        self._log = log = _log.EventLog(self._logger)
        if log.debug:  # only the DEBUG events report durations
            self._start = _log.now()
        self._temp = temp = self.store.temp(self.path, self._mode, self._follow, log, self._dirs)
        if self._make_parents and isinstance(temp, LocalTemp):
            temp.parents = []
        return temp

    def _take_lock(self, timeout: float | None) -> bool:
        """Take the target's lock (`_lock`), relative to the directory the write binds;
        False when not had within `timeout` (nothing held then). The async form calls it
        with 0 before `open()`, between sleeps on its loop."""
        temp = self._temp or self._new_temp()
        assert isinstance(temp, LocalTemp)  # lock=True is refused for other stores
        temp.step = "lock"
        lock = self._lock
        if lock is None:
            from ._lock import TargetLock

            dfd, name = temp.lock_target()
            self._lock = lock = TargetLock(dfd, name, self.path, self._follow)
        if not lock.acquire(timeout):
            return False  # step stays "lock", for the TimeoutError
        temp.step = "open"
        return True

    def _drop_lock(self) -> None:
        """The async lock wait was cancelled before `open()`: release all, write nothing."""
        self._state = DISCARDED
        self._unlock()
        if self._temp is not None:
            self._temp.release()

    def _unlock(self) -> None:
        lock = self._lock
        if lock is not None:
            lock.release()

    def _old_content(self) -> bytes | None:
        """The target's content as the lock holds it (None: no target), for atomic_update."""
        assert self._lock is not None
        return self._lock.read()

    def commit(self) -> None:
        """Publish the written content: flush, set permissions, fsync, rename, fsync the
        directory. On error the target is untouched, the temp is removed, and
        `SessionFileError` (or the original non-OSError exception) is raised."""
        self._prepare(self._durable)
        self._publish()
        self._complete(self._durable)

    # The phases of commit(), in order. AtomicBatch runs each phase over all its files
    # (prepare all without fsync, make them durable together, publish all, one directory
    # fsync per directory), so they are separate; commit() is just the three in a row.

    def _prepare(self, sync: bool) -> None:
        """Close the user's file, set the final metadata, fsync the temp if `sync`."""
        self._begin_commit()
        log = self._log
        temp, file = self._temp, self._file
        assert temp is not None and file is not None
        temp.step = "flush"
        try:
            file.close()  # flushes; the fd stays ours (closefd=False)
            temp.finish(sync)
            if log.debug:
                self._size_hint = temp.size()
                log.emit(_log.DEBUG, _log.WRITTEN, {
                    "temp_path": temp.temp_path,
                    "size": self._size_hint,
                    "duration": _log.ms(self._start),
                    "operation": "write_file",
                })  # fmt: skip
        except BaseException as exc:
            self._fail(exc)
            if needs_wrapping(exc):
                raise self._error(exc, temp.step) from exc
            raise

    def _publish(self) -> None:
        """Rename the prepared temp over the target (the step that makes the write seen)."""
        temp = self._temp
        assert temp is not None
        if self._log.debug:
            self._renamed_at = _log.now()
        published = False
        try:
            self._leftover = temp.publish(self._durable, self._mode.kind == "x")
            published = True
        except BaseException as exc:
            if published:  # an interrupt landed just after the rename: the write is done
                self._settle()
                raise
            self._fail(exc)
            if needs_wrapping(exc):
                raise self._error(exc, temp.step) from exc
            raise
        self._state = COMMITTED
        self._file = None

    def _complete(self, sync_dir: bool) -> None:
        """After the rename: drop a leftover name, fsync the directory if `sync_dir`,
        release the descriptors, log the end."""
        log = self._log
        temp = self._temp
        assert temp is not None
        lock = self._lock
        try:
            if lock is not None:
                # The old inode's lock protects nothing now: the name leads to the temp,
                # whose sweep lock (a flock too) we hold until the end, so the next writer
                # waits there, until the directory fsync is done. Closing the old inode
                # now lets the file system free it in the commit the fsync waits for.
                lock.release()
            if self._leftover:
                self._log_removal(temp.remove())
            if log.debug:
                log.emit(_log.DEBUG, _log.RENAMED, {
                    "temp_path": temp.temp_path,
                    "target_path": self.path,
                    "duration": _log.ms(self._renamed_at),
                    "operation": "rename",
                })  # fmt: skip
            if sync_dir:
                try:
                    synced = temp.sync_dir()
                except OSError as exc:
                    # The new content is in place but may not survive a power loss: say so.
                    self._state = FAILED
                    self._log_failure(exc)
                    raise self._error(exc, "fsync directory") from exc
                if not synced:
                    self._warn_dir_sync()
        finally:
            if lock is not None:
                lock.release()  # if the try failed before the release above
                temp.drop_sweep_lock()  # type: ignore[attr-defined]  # lock=True: local
            temp.release()  # the temp's fd (its sweep lock: the next writer may go now)
        if log.debug:
            log.emit(_log.DEBUG, _log.COMPLETED, {
                "target_path": self.path,
                "size": self._size_hint,
                "total_duration": _log.ms(self._start),
            })  # fmt: skip

    def _settle(self) -> None:
        """After the rename: the write is committed; release what it holds."""
        self._state = COMMITTED
        self._file = None
        if self._temp is not None:
            self._temp.release()
        self._unlock()

    # -- context managers: `with` and discard() are the base's (`_txn.Writer`) ----------

    if TYPE_CHECKING:

        def __enter__(self) -> _F: ...

    async def __aenter__(self: AtomicFile[IO[AnyStr]]) -> AsyncFile[AnyStr]:
        # One generic signature, no overloads: a text file gives AsyncFile[str], a binary one
        # AsyncFile[bytes], and IO[Any] (a mode known only at run time) AsyncFile[Any].
        from ._async import enter

        self._async_file = file = await enter(self)
        return file

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from ._async import leave

        async_file, self._async_file = self._async_file, None
        await leave(self, async_file, exc_type, exc, tb)

    # -- the steps ---------------------------------------------------------------------

    def _check_live(self) -> None:
        """The async file's guard: its methods need a write that is open, not discarded."""
        if not self._committable:
            what = "discarded" if self._discard_requested else self._state
            raise RuntimeError(f"the AtomicFile behind this AsyncFile is {what}: it can't be used")

    def _forget(self) -> None:
        """A forked child's copy of an open write: close its descriptors, touch nothing."""
        self._state = DISCARDED
        file, self._file = self._file, None
        if file is not None:
            try:
                # Flushing would write the child's buffered bytes into the parent's temp.
                file.close() if file.closed else _drop_buffer(file)
            except Exception:
                pass
        if self._temp is not None:
            self._temp.forget()
        if self._lock is not None:
            self._lock.forget()

    def _abandoned(self) -> tuple[str, type[Warning]]:
        """A file still open and never written when its AtomicFile is collected: most
        likely `f = AtomicFile(p).open()`, which keeps no AtomicFile, so the write is gone
        before the first `f.write`. Say so by default (a RuntimeWarning is shown, a
        ResourceWarning is not), naming the pattern to use; otherwise the base's warning."""
        file = self._file
        try:
            untouched = file is not None and not file.closed and file.tell() == self._opened_at
        except Exception:
            untouched = False  # can't tell: say only what is sure
        if not untouched:
            return super()._abandoned()
        return (
            f"{self!r} was garbage-collected with its file open and nothing written: the "
            "write is discarded and the file closed, so writing to it fails ('I/O operation "
            "on closed file'). `f = AtomicFile(path).open()` keeps no AtomicFile; use "
            "`with AtomicFile(path) as f: ...`, or keep it: `af = AtomicFile(path); "
            "f = af.open(); ...; af.commit()`",
            RuntimeWarning,
        )

    def _log_failure(self, exc: BaseException) -> None:
        log = self._log
        if log.enabled(_log.ERROR):
            log.emit(_log.ERROR, _log.FAILED, {
                "target_path": self.path,
                "temp_path": self._temp.temp_path if self._temp is not None else None,
                "error_code": _log.error_code(exc),
                "error_message": str(exc),
                "operation": "atomic_write",
            })  # fmt: skip

    def _log_discard(self, reason: BaseException | None) -> None:
        log = self._log
        if log.debug:
            fields = {
                "target_path": self.path,
                "temp_path": self._temp.temp_path if self._temp is not None else None,
                "operation": "discard",
            }
            if reason is not None:
                fields["reason"] = type(reason).__name__
            log.emit(_log.DEBUG, _log.DISCARDED, fields)

    def _cleanup(self) -> bool | OSError:
        """Close and unlink the temp; return what the unlink did, for the log."""
        file, self._file = self._file, None
        temp = self._temp
        if temp is None:
            return False
        removal = temp.remove()  # while the sweep lock is still held: no sweep races us
        if file is not None:
            try:
                file.close()
            except Exception:
                pass  # the same error the write already reported (ENOSPC...)
        temp.release()
        if self._lock is not None:
            self._lock.release()
        return removal

    def _log_removal(self, removal: bool | OSError) -> None:
        if removal is False:
            return
        log, temp = self._log, self._temp
        assert temp is not None
        if removal is True:
            if log.debug:
                log.emit(_log.DEBUG, _log.CLEANED, {
                    "temp_path": temp.temp_path,
                    "operation": "cleanup",
                })  # fmt: skip
        elif log.enabled(_log.WARNING):
            log.emit(_log.WARNING, _log.CLEANUP_FAILED, {
                "temp_path": temp.temp_path,
                "cleanup_error_code": _log.error_code(removal),
            })  # fmt: skip

    def _warn_dir_sync(self) -> None:
        log = self._log
        if log.enabled(_log.WARNING):
            log.emit(_log.WARNING, _log.DIR_SYNC_SKIPPED, {
                "target_path": self.path,
                "directory": os.path.dirname(self.path),
                "operation": "fsync_directory",
            })  # fmt: skip

    # -- the batch's protocol ----------------------------------------------------------
    # `AtomicBatch` opens each of its files with open(), then runs commit()'s phases over
    # all of them instead of commit(): prepare every file (no fsync), one durability point,
    # publish every file, complete every file (one directory fsync per directory). These
    # methods are all it uses of a file, besides the public ones (open(), discard(), the
    # `with` exit for an error in a file's data write, `path`, `store`, `temp_path`).

    def share_dirs(self, dirs: SharedDirs) -> None:
        """Before open(): take the target's directory descriptor from `dirs`, which the
        writes of one batch share (a local target's; other stores have none)."""
        self._dirs = dirs

    def prepare(self, sync: bool) -> None:
        """commit()'s first phase: close the user's file, set the final metadata, fsync the
        temp only if `sync` (the batch makes its temps durable together instead)."""
        self._prepare(sync)

    def publish(self) -> None:
        """commit()'s second phase: rename the prepared temp over the target."""
        self._publish()

    def complete(self, sync_dir: bool) -> None:
        """commit()'s last phase: fsync the directory only if `sync_dir` (once per
        directory in a batch), release the descriptors, log the end."""
        self._complete(sync_dir)

    def abandon(self, cause: BaseException | None) -> None:
        """End the write, open or prepared, without publishing: a discard when `cause` is
        None, else a failure caused by `cause` (the batch's error, for each of its files).
        Does nothing once the write has ended."""
        if self._state == OPEN or self._state == COMMITTING:
            if cause is None:
                self._end(DISCARDED, None)
            else:
                self._fail(cause)

    def made_parents(self) -> bool:
        """After open(): whether this write created its target's directories
        (make_parents=True); its `complete()` then fsyncs their parents too."""
        temp = self._temp
        return isinstance(temp, LocalTemp) and bool(temp.parents)

    def is_exclusive(self) -> bool:
        """An 'x' write: its target must not exist when it is published."""
        return self._mode.kind == "x"

    def target_key(self) -> tuple[int, int, str]:
        """After open(), for a local target on POSIX: the target as the write resolved it,
        its directory's (st_dev, st_ino) and its name there. Two spellings of one file give
        one key; two files, two keys."""
        temp = self._temp
        assert isinstance(temp, LocalTemp), "a local write, opened"
        return temp.target_key()

    def target_exists(self) -> bool:
        """After open(), for a local target: whether something is at its name now."""
        temp = self._temp
        assert isinstance(temp, LocalTemp), "a local write, opened"
        return temp.target_exists()


def _drop_buffer(file: Any) -> None:
    """Close a file object without flushing what it buffered (a forked child's copy)."""
    buffer = getattr(file, "buffer", file)
    raw = getattr(buffer, "raw", None)
    if raw is not None:
        raw.close()  # the buffered layers now find it closed and write nothing


_BINARY: dict[str, BinaryWriteMode] = {"w": "wb", "x": "xb", "a": "ab"}


def atomic_write(
    file: FileTarget,
    data: str | ReadableBuffer,
    *,
    mode: Literal["w", "x", "a"] = "w",
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    **options: Unpack[Options],
) -> None:
    """Atomically replace `file` with `data`: `str` is written as text, bytes-like as binary.

    `mode="x"` fails if the file exists; `mode="a"` appends to a copy of it. Other options
    are `AtomicFile`'s. Raises `SessionFileError` if the file system fails; the file is
    then untouched.
    """
    if mode not in _BINARY:
        raise ValueError(f"atomic_write mode must be 'w', 'x' or 'a', not {mode!r}")
    open_mode: Any = mode
    size: int | None = None
    if not isinstance(data, str):
        open_mode = _BINARY[mode]
        try:
            size = memoryview(data).nbytes
        except TypeError:
            raise TypeError(
                f"data must be str or a bytes-like object, not {type(data).__name__}"
            ) from None
    # In binary mode, encoding/errors/newline get the ValueError open() gives them.
    af: AtomicFile[Any] = AtomicFile(file, open_mode, -1, encoding, errors, newline, **options)
    af._size_hint = size
    with af as f:
        f.write(data)
