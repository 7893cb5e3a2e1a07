"""`AtomicBatch`: many atomic file writes published together, with one durability point.

Each file is an `AtomicFile` (same parameters, same file objects, same temp files). What the
batch changes is the order of the commit phases, which it runs through `AtomicFile`'s batch
protocol (`prepare`, `publish`, `complete`, `abandon`): every temp is prepared (flushed,
final metadata) without an fsync, then all are made durable together (one `syncfs` per file
system where that is trusted, else an fsync each), then all are renamed, then each distinct
directory is fsynced once.

The batch's lifecycle is `_txn.Writer`'s (states, misuse errors, `discard()`, `with`, the
garbage-collection discard, the fork guard), except that a batch is open from its
construction: files join it until it commits.

Files may join a batch from several threads or tasks at once: the state they share (the
list of files, the directory descriptors, the syncfs handles) is guarded by one lock, never
held while a file's data is written.
"""

from __future__ import annotations

import errno
import os
import threading

# Loaded only when AtomicBatch is first used (lazy in __init__): `typing` is affordable here.
from collections.abc import Hashable
from typing import IO, TYPE_CHECKING, Any, Literal, overload

from . import _fs, _txn
from ._core import AtomicFile
from ._errors import SessionFileError, needs_wrapping
from ._fs import WINDOWS
from ._txn import COMMITTED, COMMITTING, DISCARDED, FAILED, OPEN, ThreadedAsync, misuse

if TYPE_CHECKING:
    import io
    from typing import BinaryIO

    from _typeshed import ReadableBuffer, StrOrBytesPath
    from typing_extensions import Self, Unpack

    from ._async import AsyncFile
    from ._core import BinaryMode, BinaryUpdateMode, BinaryWriteMode, TextMode
    from ._log import AnyLogger
    from ._options import TargetOptions

    #: open()'s buffering, encoding, errors and newline, as the batch passes them on.
    OpenArgs = tuple[int, str | None, str | None, str | None]


_BINARY = {"w": "wb", "x": "xb", "a": "ab"}
_NO_DATA: Any = object()  # `_add` for `open()`: no data to write


class _Entry:
    __slots__ = ("af", "dev", "directory", "exclusive", "key", "made_parents")

    def __init__(self, af: AtomicFile[Any], key: Hashable, directory: Hashable, dev: int) -> None:
        self.af = af
        self.key = key  # the target, to refuse it twice
        self.directory = directory  # the target's directory, fsynced once per batch
        self.dev = dev  # a local temp's file system (-1: none that can share a syncfs)
        # Asked once, after open(): the commit reads them for every file.
        self.exclusive = af.is_exclusive()  # 'x': renamed first, its target checked first
        self.made_parents = af.made_parents()  # its complete() fsyncs the parents it made


class SharedDirs:
    """The directories of a batch's targets, each opened once and shared by the writes into
    it: one descriptor per directory, not one per file.

    A directory is found by its identity (st_dev, st_ino), never by the path string: a
    relative path after `os.chdir()`, or a path whose components were renamed, leads to
    the directory it names now. Safe for writes in several threads at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[tuple[int, int], tuple[int, bool]] = {}

    def find(self, path: str) -> tuple[int, bool, os.stat_result] | None:
        """The shared descriptor of the directory `path` leads to now (and its stat), or
        None: then the caller opens it, and gets the error `open()` would."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        with self._lock:
            shared = self._fds.get((st.st_dev, st.st_ino))
        if shared is None:
            return None
        fd, dir_fsync = shared
        return fd, dir_fsync, st

    def add(self, fd: int, dir_fsync: bool) -> tuple[int, bool, os.stat_result]:
        """Share the directory just opened as `fd`, and return the descriptor to use: `fd`,
        or the one another write shared first for the same directory (`fd` is closed)."""
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            shared, sync = self._fds.setdefault((st.st_dev, st.st_ino), (fd, dir_fsync))
        if shared != fd:
            os.close(fd)
        return shared, sync, st

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        _fs.close_quietly(*(fd for fd, _ in fds.values()))


class AtomicBatch(ThreadedAsync):
    """Write many files, then publish them all together: each target ends with the old
    content or the new one, and an error anywhere publishes none of them.

    `open()` takes `AtomicFile`'s parameters and returns the same file objects; `write()` is
    `atomic_write` into the batch. `durable` and `logger` are the batch's, for all its
    files; the other options (`permissions`, `follow_symlinks`, `fs`, `storage_options`)
    are each file's. Nothing is published until the batch commits (a clean exit from
    `with`, or `commit()`): then all temps are made durable together (unless
    `durable=False`), renamed over their targets, and each directory is fsynced once. An
    exception in the block, or `discard()`, removes every temp and publishes nothing.

    A crash (kill, power loss) during the renames leaves each file old or new: the batch is
    all-or-nothing for errors, per file for crashes. `AtomicDirectory` is all-or-nothing
    for both.

    `open`, `write`, `aopen` and `awrite` may run at once in several threads or tasks
    (`asyncio.gather`, a task group, a thread pool); a failing one removes only its own
    file. A write still running when the batch commits or is discarded is not part of it:
    its temp is removed and it raises `RuntimeError`. Each file holds one descriptor until
    the commit: past the process's `RLIMIT_NOFILE` an `open`/`write` fails with `EMFILE`
    (the batch never changes the limit). `commit`, `discard` and the end of `with` are the
    owner's: one thread.

    Raises `SessionFileError` (also the builtin `OSError` subclass) as `AtomicFile` does;
    the same target twice in one batch is a `FileExistsError` one.
    """

    _kind = "AtomicBatch"
    # An OSError raised in the block is not one file's: it ends the batch as it is.
    _wraps_block_errors = False
    #: The error that ended the batch: each file's failure names it (see `_cleanup`).
    _cause: BaseException | None = None

    def __init__(self, *, durable: bool = True, logger: AnyLogger | None = None) -> None:
        self._durable = bool(durable)
        self._logger = logger
        #: Guards the state below, which writes in several threads share. Never held while
        #: a file's data is written or the batch commits.
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._keys: set[Hashable] = set()
        #: One descriptor per file system whose syncfs is trusted (a dup of its first
        #: temp's fd, opened before anything was written there: syncfs reports the errors
        #: since then), with that temp's target for the error.
        self._devices: dict[int, tuple[int, str]] = {}
        #: File systems where each temp gets its own fsync instead.
        self._untrusted: set[int] = set()
        #: The targets' directories, each opened once and shared by its files' writes.
        self._dirs = SharedDirs()
        #: `open`/`write` calls under way: the shared descriptors stay open until the last
        #: one has joined the batch (or failed), even when the batch ends meanwhile.
        self._busy = 0
        # A batch has no "new" state: it is open from here, and files join it until it
        # commits (from now on, a fork leaves it to this process).
        self._begin()

    def __repr__(self) -> str:
        return f"<AtomicBatch {len(self._entries)} files {self._state}>"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def paths(self) -> list[str]:
        """The targets in this batch, in the order they were opened."""
        return [e.af.path for e in self._entries]

    # -- adding files ------------------------------------------------------------------

    if TYPE_CHECKING:

        @overload  # type: ignore[override]  # a batch's open() adds a file: see __enter__
        def open(
            self,
            file: StrOrBytesPath,
            mode: TextMode = "w",
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            **options: Unpack[TargetOptions],
        ) -> io.TextIOWrapper: ...
        @overload
        def open(
            self,
            file: StrOrBytesPath,
            mode: BinaryMode,
            buffering: Literal[0],
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[TargetOptions],
        ) -> io.FileIO: ...
        @overload
        def open(
            self,
            file: StrOrBytesPath,
            mode: BinaryUpdateMode,
            buffering: Literal[-1, 1] = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[TargetOptions],
        ) -> io.BufferedRandom: ...
        @overload
        def open(
            self,
            file: StrOrBytesPath,
            mode: BinaryWriteMode,
            buffering: Literal[-1, 1] = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[TargetOptions],
        ) -> io.BufferedWriter: ...
        @overload
        def open(
            self,
            file: StrOrBytesPath,
            mode: BinaryMode,
            buffering: int = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[TargetOptions],
        ) -> BinaryIO: ...
        @overload
        def open(
            self,
            file: StrOrBytesPath,
            mode: str,
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            **options: Unpack[TargetOptions],
        ) -> IO[Any]: ...

    def open(
        self,
        file: StrOrBytesPath,
        mode: str = "w",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        **options: Unpack[TargetOptions],
    ) -> IO[Any]:
        """Start the write of `file` in this batch and return its temp file, as
        `AtomicFile(file, mode, ...).open()` would. Don't close it yourself: the batch does.

        Raises `SessionFileError` as `AtomicFile.open()` does (`EMFILE` past the descriptor
        limit: see the class docstring), and a `FileExistsError` one when `file` is already
        in the batch (the same file through another path or a symlink counts); the batch
        itself stays usable.
        """
        args = (buffering, encoding, errors, newline)
        return self._add(file, mode, args, options, _NO_DATA)[1]

    def write(
        self,
        file: StrOrBytesPath,
        data: str | ReadableBuffer,
        *,
        mode: Literal["w", "x", "a"] = "w",
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        **options: Unpack[TargetOptions],
    ) -> None:
        """`atomic_write` into the batch: `str` is written as text, bytes-like as binary.
        The data goes into the temp file now; the target changes when the batch commits.
        A write that fails removes its own temp only; the batch goes on."""
        if mode not in _BINARY:
            raise ValueError(f"AtomicBatch.write mode must be 'w', 'x' or 'a', not {mode!r}")
        open_mode: str = mode
        buffering = -1
        if not isinstance(data, str):
            open_mode = _BINARY[mode]
            memoryview(data)  # TypeError now for data that is neither
            # The bytes go to the temp in one call, so a buffer would only copy them and
            # hold them (one per file until the commit): unbuffered, the file object costs
            # no lseek and the data is in the kernel before the file joins the batch.
            buffering = 0
        self._add(file, open_mode, (buffering, encoding, errors, newline), options, data)

    def _add(
        self, file: StrOrBytesPath, mode: str, args: OpenArgs, options: TargetOptions, data: Any
    ) -> tuple[AtomicFile[Any], IO[Any]]:
        """Open a file in the batch, write `data` into it (unless `_NO_DATA`), then make it
        one of the batch's files. Other threads' files may join meanwhile: nothing here
        refers to the batch's last file, only to this one."""
        with self._lock:
            self._expect_open()
            self._busy += 1
        try:
            entry, f = self._start(file, mode, args, options)
            if data is not _NO_DATA:
                try:
                    if isinstance(data, str):
                        f.write(data)
                    else:
                        _write_all(f, data)
                except BaseException as exc:
                    # What `with AtomicFile` does with an error in its block: the temp is
                    # removed, and a builtin OSError is raised as the write's SessionFileError.
                    entry.af.__exit__(type(exc), exc, exc.__traceback__)
                    raise
            self._join(entry, f)
            return entry.af, f
        finally:
            self._leave()

    def _start(
        self, file: StrOrBytesPath, mode: str, args: OpenArgs, options: TargetOptions
    ) -> tuple[_Entry, IO[Any]]:
        if "durable" in options or "logger" in options:
            raise TypeError(
                "durable= and logger= are the batch's, for all its files: pass them to "
                "AtomicBatch(...), not to one file"
            )
        af: AtomicFile[Any] = AtomicFile(
            file, mode, *args, logger=self._logger, durable=self._durable, **options
        )
        batchable = af.store.batchable
        # A local target is known by its directory's identity and its name there, both as
        # the write resolved them (no realpath: that is a stat per path component).
        local = batchable and not WINDOWS
        key: Hashable = None
        if batchable:
            af.share_dirs(self._dirs)
        if not local:
            # An object is known by its URL; a local file on Windows by its real path.
            key = af.path
            if batchable:
                key = _target_key(af.path, options.get("follow_symlinks", True))
            with self._lock:
                twice = key in self._keys
            if twice:
                raise _twice(af.path)
        try:
            f: IO[Any] = af.open()
        except SessionFileError as exc:
            if exc.errno == errno.EMFILE:
                raise self._out_of_descriptors(af.path, exc) from exc
            raise
        if local:
            dev, ino, name = af.target_key()
            # The temp is in the target's directory: on its file system.
            return _Entry(af, (dev, ino, name), (dev, ino), dev), f
        # The directory fsynced once per batch: the temp's (an object store's has none).
        temp_path = af.temp_path
        directory = af.path if temp_path is None else os.path.dirname(temp_path)
        return _Entry(af, key, directory, -1), f

    def _join(self, entry: _Entry, f: IO[Any]) -> None:
        """Make the opened file one of the batch's, unless the batch ended meanwhile or
        already has its target; then its temp is removed and the error raised."""
        af = entry.af
        with self._lock:
            if self._state != OPEN:
                refusal: BaseException = RuntimeError(misuse(self._kind, "open", self._state))
            elif entry.key in self._keys:
                refusal = _twice(af.path)
            else:
                try:
                    dev = entry.dev
                    if self._durable and dev != -1 and dev not in self._devices:
                        self._note_device(entry, f)
                except BaseException as exc:
                    refusal = exc
                else:
                    self._entries.append(entry)
                    self._keys.add(entry.key)
                    return
        if isinstance(refusal, (RuntimeError, SessionFileError)):
            af.abandon(None)  # not this write's failure: the batch's refusal
            raise refusal
        af.abandon(refusal)
        if needs_wrapping(refusal):
            err = SessionFileError(af.path, self._operation, refusal, "open")
            if refusal.errno == errno.EMFILE:  # the syncfs handle's dup
                err = self._out_of_descriptors(af.path, err)
            raise err from refusal
        raise refusal

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            last = self._busy == 0 and self._state not in (OPEN, COMMITTING)
        if last:
            self._close_devices()  # the batch ended while this write ran

    def _expect_open(self) -> None:
        """Files join until the commit starts. Called with the lock held."""
        if self._state != OPEN:
            raise RuntimeError(misuse(self._kind, "open", self._state))
        if self._forks != _txn.forks:
            raise RuntimeError(
                f"{self._kind} was opened before a fork(): only the parent process can add "
                "files to it"
            )

    def _out_of_descriptors(self, path: str, exc: SessionFileError) -> SessionFileError:
        try:
            import resource

            soft: object = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except ImportError:
            soft = "unknown"
        message = (
            "Too many open files: an AtomicBatch holds one descriptor per file until it "
            f"commits, and this one had {len(self._entries)} files when the process ran out "
            f"(the soft RLIMIT_NOFILE is {soft}). Allow more before the batch starts "
            "(resource.setrlimit, or ulimit -n): at least its number of files plus the "
            "descriptors the program holds; or split the files into smaller batches"
        )
        return SessionFileError(
            path, self._operation, OSError(errno.EMFILE, message, path), exc.step
        )

    def _note_device(self, entry: _Entry, f: IO[Any]) -> None:
        """The first temp on a file system gives the batch its syncfs handle there. Called
        with the lock held."""
        dev = entry.dev
        if dev not in self._devices and dev not in self._untrusted:
            fd = f.fileno()
            if _fs.syncfs_trusted(fd):
                self._devices[dev] = (os.dup(fd), entry.af.path)
            else:
                self._untrusted.add(dev)

    # -- ending ------------------------------------------------------------------------

    def commit(self) -> None:
        """Publish every file of the batch (see the class docstring for the order).

        On an error before the renames nothing is published and every temp is removed. The
        'x' files are renamed first, each target checked again just before the first rename:
        one that appeared while the batch was written fails the batch, nothing published.
        A rename that fails (an 'x' target that appeared after that check, the directory
        became read-only...) stops the batch there: the files renamed before it are
        published, the others not. Raises `SessionFileError` (or the original exception).
        """
        with self._lock:
            self._begin_commit()
            entries = list(self._entries)
        # 'x' files first: the likeliest refusal (the target appeared) comes before any
        # other file is published.
        order = [e for e in entries if e.exclusive]
        if order:
            order += [e for e in entries if not e.exclusive]
        else:
            order = entries
        renamed = 0
        durable = self._durable
        try:
            try:
                devices = self._devices
                for entry in entries:
                    # Temps on a file system with a syncfs handle wait for its one syncfs;
                    # the others (untrusted file systems, object stores) finish on their own.
                    entry.af.prepare(durable and entry.dev not in devices)
                if durable:
                    self._sync_temps()
                self._check_exclusive(order)
                for entry in order:
                    entry.af.publish()
                    renamed += 1
            except BaseException as exc:
                if renamed:
                    # The files renamed before the error are published: make them durable
                    # and release them; the rename's error is the one to report.
                    self._complete(order[:renamed])
                self._fail(exc)  # every other file is removed
                raise
            error = self._complete(order)
            if error is not None:
                self._state = FAILED
                raise error
            self._state = COMMITTED
        finally:
            self._close_devices()

    def _check_exclusive(self, order: list[_Entry]) -> None:
        """Every local 'x' target still absent, checked after the slow part of the commit,
        right before the renames. Not atomic with them: the rename itself refuses a target
        that appears in between (RENAME_NOREPLACE)."""
        for entry in order:
            if not entry.exclusive:
                break  # sorted: the 'x' files come first
            af = entry.af
            if af.store.batchable and af.target_exists():
                err = FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), af.path)
                raise SessionFileError(af.path, self._operation, err, "rename")

    def _complete(self, order: list[_Entry]) -> BaseException | None:
        """One directory fsync per distinct directory, then each file's end; the first
        error, once every file has ended."""
        synced: set[Hashable] = set()
        error: BaseException | None = None
        durable = self._durable
        for entry in order:
            # The file whose write created directories (make_parents) fsyncs their parents.
            sync = False
            if durable and (entry.made_parents or entry.directory not in synced):
                synced.add(entry.directory)
                sync = True
            try:
                entry.af.complete(sync)
            except BaseException as exc:
                error = error or exc
        return error

    def _sync_temps(self) -> None:
        """Make the prepared temps durable together: one syncfs per file system (the temps
        on other file systems were fsynced one by one while prepared)."""
        for fd, path in self._devices.values():
            try:
                _fs.syncfs(fd)
            except OSError as exc:
                raise SessionFileError(path, self._operation, exc, "fsync") from exc

    # -- the lifecycle's hooks (`_txn.Writer`: discard, with, GC and forks are its) -------

    def __enter__(self) -> Self:
        # Not the base's, which calls open(): a batch's open() adds a file. A batch is open
        # from its construction; `with` only says that the block's end commits it.
        with self._lock:
            self._expect_open()
        self._in_with = True
        return self

    def _fail(self, exc: BaseException) -> None:
        self._cause = exc  # each file's failure is the batch's error
        super()._fail(exc)

    def _cleanup(self) -> bool:
        """Remove every file's temp, then close the batch's descriptors. The state has
        changed already: the files read under the lock are all that will ever join."""
        with self._lock:
            entries = list(self._entries)
        cause = self._cause
        for entry in entries:
            entry.af.abandon(cause)
        self._close_devices()
        return False  # each file logged its own removal

    def _close_devices(self) -> None:
        """Close the batch's own descriptors (syncfs handles, shared directories), unless an
        `open`/`write` of another thread still uses them: the last one closes them then."""
        with self._lock:
            if self._busy:
                return
            devices, self._devices = self._devices, {}
        _fs.close_quietly(*(fd for fd, _ in devices.values()))
        self._dirs.close()

    def _forget(self) -> None:
        """A forked child's copy: close its copies of the descriptors, remove nothing. No
        lock taken: a thread of the parent may have held it at the fork."""
        self._state = DISCARDED
        for entry in self._entries:
            entry.af.discard()  # in a forked child, discard() only closes its copies
        devices, self._devices = self._devices, {}
        _fs.close_quietly(*(fd for fd, _ in devices.values()))
        self._dirs.close()

    def __del__(self) -> None:
        if getattr(self, "_entries", None):
            super().__del__()  # every temp removed first, then the ResourceWarning
        elif hasattr(self, "_dirs"):
            # Open from its construction, a batch that got no file is like an AtomicFile
            # never opened: nothing to discard, nothing to warn about. Only directories
            # opened by writes that failed are left to close.
            self._dirs.close()

    # -- async -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # No thread: entering a batch does no I/O (the base's `__aexit__` commits in one).
        return self.__enter__()

    if TYPE_CHECKING:

        @overload
        async def aopen(
            self,
            file: StrOrBytesPath,
            mode: TextMode = "w",
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            **options: Unpack[TargetOptions],
        ) -> AsyncFile[str]: ...
        @overload
        async def aopen(
            self,
            file: StrOrBytesPath,
            mode: BinaryMode,
            buffering: int = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            **options: Unpack[TargetOptions],
        ) -> AsyncFile[bytes]: ...
        @overload
        async def aopen(
            self,
            file: StrOrBytesPath,
            mode: str,
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            **options: Unpack[TargetOptions],
        ) -> AsyncFile[Any]: ...

    async def aopen(
        self,
        file: StrOrBytesPath,
        mode: str = "w",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        **options: Unpack[TargetOptions],
    ) -> AsyncFile[Any]:
        """`open()` for `async with AtomicBatch()`: the temp is created in a worker thread
        and returned as an `AsyncFile` (coroutine methods), as `async with AtomicFile` does."""
        from ._async import AsyncFile, run

        args = (buffering, encoding, errors, newline)
        af, f = await run(self._add, file, mode, args, options, _NO_DATA)
        return AsyncFile(f, af)

    async def awrite(
        self,
        file: StrOrBytesPath,
        data: str | ReadableBuffer,
        *,
        mode: Literal["w", "x", "a"] = "w",
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        **options: Unpack[TargetOptions],
    ) -> None:
        """`write()` in a worker thread."""
        from ._async import run

        await run(
            lambda: self.write(
                file, data, mode=mode, encoding=encoding, errors=errors, newline=newline, **options
            )
        )


def _write_all(f: IO[Any], data: ReadableBuffer) -> None:
    """`data` into an unbuffered binary file, whole: a raw write may take less of it."""
    done = f.write(data) or 0
    if type(data) is bytes and done == len(data):
        return  # the usual case, without a memoryview
    with memoryview(data) as view:
        size = view.nbytes
        if done < size:
            with view.cast("B") as rest:
                while done < size:
                    done += f.write(rest[done:]) or 0


def _twice(path: str) -> SessionFileError:
    err = OSError(errno.EEXIST, "The target is already written in this batch", path)
    return SessionFileError(path, "atomic write", err, "open")


def _target_key(path: str, follow: bool) -> str:
    """One spelling per target file, to refuse the same target twice in a batch."""
    if follow:
        return os.path.realpath(path)
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head or os.curdir), tail)
