"""`AtomicBatch`: many atomic file writes published together, with one durability point.

Each file is an `AtomicFile` (same parameters, same file objects, same temp files). What the
batch changes is the order of the commit phases: every temp is prepared (flushed, final
metadata) without an fsync, then all are made durable together (one `syncfs` per file
system where that is trusted, else an fsync each), then all are renamed, then each distinct
directory is fsynced once.

Files may join a batch from several threads or tasks at once: the state they share (the
list of files, the directory descriptors, the syncfs handles) is guarded by one lock, never
held while a file's data is written.
"""

from __future__ import annotations

import errno
import os
import sys
import threading

# Loaded only when AtomicBatch is first used (lazy in __init__): `typing` is affordable here.
from collections.abc import Hashable
from typing import IO, TYPE_CHECKING, Any, Literal, overload

from . import _fs
from ._core import AtomicFile
from ._errors import SessionFileError
from ._fs import WINDOWS as _WINDOWS
from ._txn import COMMITTED as _COMMITTED
from ._txn import COMMITTING as _COMMITTING
from ._txn import OPEN as _OPEN

if TYPE_CHECKING:
    import io
    from types import TracebackType
    from typing import BinaryIO

    from _typeshed import ReadableBuffer, StrOrBytesPath
    from typing_extensions import Self

    from ._async import AsyncFile
    from ._core import BinaryMode, BinaryUpdateMode, BinaryWriteMode, TextMode
    from ._log import AnyLogger
    from ._permissions import Permissions


_NEW, _DONE, _DISCARDED, _FAILED = "open", "committed", "discarded", "failed"
_MISUSE = {
    _COMMITTING: "AtomicBatch is being committed",
    _DONE: "AtomicBatch was already committed; create a new AtomicBatch for another batch",
    _DISCARDED: "AtomicBatch was discarded; create a new AtomicBatch for another batch",
    _FAILED: "AtomicBatch already failed; create a new AtomicBatch for another batch",
}
_BINARY = {"w": "wb", "x": "xb", "a": "ab"}
_NO_DATA: Any = object()  # `_add` for `open()`: no data to write


class _Entry:
    __slots__ = ("af", "dev", "directory", "key")

    def __init__(self, af: AtomicFile[Any], key: Hashable, directory: Hashable) -> None:
        self.af = af
        self.key = key  # the target, to refuse it twice
        self.directory = directory  # the target's directory, fsynced once per batch
        self.dev = -1  # the temp's file system, when the batch is durable


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


class AtomicBatch:
    """Write many files, then publish them all together: each target ends with the old
    content or the new one, and an error anywhere publishes none of them.

    `open()` takes `AtomicFile`'s parameters and returns the same file objects; `write()` is
    `atomic_write` into the batch. Nothing is published until the batch commits (a clean
    exit from `with`, or `commit()`): then all temps are made durable together (unless
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
    (the batch never changes the limit).

    Raises `SessionFileError` (also the builtin `OSError` subclass) as `AtomicFile` does;
    the same target twice in one batch is a `FileExistsError` one.
    """

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
        self._state = _NEW
        self._in_with = False
        self._discard_requested = False

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

        @overload
        def open(
            self,
            file: StrOrBytesPath,
            mode: TextMode = "w",
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
        ) -> IO[Any]: ...

    def open(
        self,
        file: StrOrBytesPath,
        mode: str = "w",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        *,
        permissions: Permissions = None,
        follow_symlinks: bool = True,
        fs: Any = None,
    ) -> IO[Any]:
        """Start the write of `file` in this batch and return its temp file, as
        `AtomicFile(file, mode, ...).open()` would. Don't close it yourself: the batch does.

        Raises `SessionFileError` as `AtomicFile.open()` does (`EMFILE` past the descriptor
        limit: see the class docstring), and a `FileExistsError` one when `file` is already
        in the batch (the same file through another path or a symlink counts); the batch
        itself stays usable.
        """
        args = (file, mode, buffering, encoding, errors, newline, permissions, follow_symlinks, fs)
        return self._add(args, _NO_DATA)[1]

    def write(
        self,
        file: StrOrBytesPath,
        data: str | ReadableBuffer,
        *,
        mode: Literal["w", "x", "a"] = "w",
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        permissions: Permissions = None,
        follow_symlinks: bool = True,
        fs: Any = None,
    ) -> None:
        """`atomic_write` into the batch: `str` is written as text, bytes-like as binary.
        The data goes into the temp file now; the target changes when the batch commits.
        A write that fails removes its own temp only; the batch goes on."""
        if mode not in _BINARY:
            raise ValueError(f"AtomicBatch.write mode must be 'w', 'x' or 'a', not {mode!r}")
        open_mode: Any = mode
        if not isinstance(data, str):
            open_mode = _BINARY[mode]
            memoryview(data)  # TypeError now for data that is neither
        args = (file, open_mode, -1, encoding, errors, newline, permissions, follow_symlinks, fs)
        self._add(args, data)

    def _add(self, args: tuple[Any, ...], data: Any) -> tuple[AtomicFile[Any], IO[Any]]:
        """Open a file in the batch, write `data` into it (unless `_NO_DATA`), then make it
        one of the batch's files. Other threads' files may join meanwhile: nothing here
        refers to the batch's last file, only to this one."""
        with self._lock:
            self._expect_open()
            self._busy += 1
        try:
            entry, f = self._start(*args)
            if data is not _NO_DATA:
                try:
                    f.write(data)
                except BaseException as exc:
                    entry.af._fail(exc)
                    if isinstance(exc, OSError) and exc.errno is not None:
                        raise SessionFileError(entry.af.path, "atomic write", exc, "write") from exc
                    raise
            self._join(entry, f)
            return entry.af, f
        finally:
            self._leave()

    def _start(
        self,
        file: StrOrBytesPath,
        mode: str,
        buffering: int,
        encoding: str | None,
        errors: str | None,
        newline: str | None,
        permissions: Permissions,
        follow_symlinks: bool,
        fs: Any,
    ) -> tuple[_Entry, IO[Any]]:
        af: AtomicFile[Any] = AtomicFile(
            file,
            mode,
            buffering,
            encoding,
            errors,
            newline,
            permissions=permissions,
            logger=self._logger,
            durable=self._durable,
            follow_symlinks=follow_symlinks,
            fs=fs,
        )
        # A local target is known by its directory's identity and its name there, both as
        # the write resolved them (no realpath: that is a stat per path component).
        local = af.store.batchable and not _WINDOWS
        key: Hashable = None
        if af.store.batchable:
            af._dirs = self._dirs
        if not local:
            key = _target_key(af.path, follow_symlinks)
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
        directory: Hashable
        if local:
            temp: Any = af._temp
            key = temp.target_key()
            directory = key[:2]  # type: ignore[index]  # (st_dev, st_ino, name)
        else:
            temp_path = af.temp_path
            assert temp_path is not None
            directory = os.path.dirname(temp_path)
        return _Entry(af, key, directory), f

    def _join(self, entry: _Entry, f: IO[Any]) -> None:
        """Make the opened file one of the batch's, unless the batch ended meanwhile or
        already has its target; then its temp is removed and the error raised."""
        af = entry.af
        with self._lock:
            if self._state != _NEW:
                refusal: BaseException = RuntimeError(_MISUSE[self._state])
            elif entry.key in self._keys:
                refusal = _twice(af.path)
            else:
                try:
                    if self._durable and af.store.batchable:  # remote stores commit alone
                        entry.dev = self._note_device(af, f)
                except BaseException as exc:
                    refusal = exc
                else:
                    self._entries.append(entry)
                    self._keys.add(entry.key)
                    return
        if isinstance(refusal, (RuntimeError, SessionFileError)):
            af._end("discarded", None)  # not this write's failure: the batch's refusal
            raise refusal
        af._fail(refusal)
        if isinstance(refusal, OSError) and refusal.errno is not None:
            err = SessionFileError(af.path, "atomic write", refusal, "open")
            if refusal.errno == errno.EMFILE:  # the syncfs handle's dup
                err = self._out_of_descriptors(af.path, err)
            raise err from refusal
        raise refusal

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            last = self._busy == 0 and self._state not in (_NEW, _COMMITTING)
        if last:
            self._close_devices()  # the batch ended while this write ran

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
            path, "atomic write", OSError(errno.EMFILE, message, path), exc.step
        )

    def _note_device(self, af: AtomicFile[Any], f: IO[Any]) -> int:
        """The temp's file system; its first temp gives the batch its syncfs handle.
        Called with the lock held."""
        fd = f.fileno()
        temp: Any = af._temp
        st = temp.temp_stat if temp is not None else None  # fstat'ed by the create
        dev = (st or os.fstat(fd)).st_dev
        if dev not in self._devices and dev not in self._untrusted:
            if _syncfs_trusted(fd):
                self._devices[dev] = (os.dup(fd), af.path)
            else:
                self._untrusted.add(dev)
        return dev

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
            self._expect_open()
            if self._discard_requested:
                raise RuntimeError(_MISUSE[_DISCARDED])
            self._state = _COMMITTING
            entries = list(self._entries)
        # 'x' files first: the likeliest refusal (the target appeared) comes before any
        # other file is published.
        order = sorted(entries, key=lambda e: e.af._mode.kind != "x")
        try:
            try:
                untrusted = self._untrusted
                for entry in entries:
                    # Local temps on a syncfs file system wait for the one syncfs; others
                    # (another local file system, a remote store) finish on their own.
                    alone = entry.dev in untrusted or not entry.af.store.batchable
                    entry.af._prepare(self._durable and alone)
                if self._durable:
                    self._sync_temps()
                self._check_exclusive(order)
            except BaseException as exc:
                self._state = _FAILED if isinstance(exc, Exception) else _DISCARDED
                self._abandon(exc)
                raise
            self._publish(order)
            self._complete(order)
        finally:
            self._close_devices()

    def _check_exclusive(self, order: list[_Entry]) -> None:
        """Every local 'x' target still absent, checked after the slow part of the commit,
        right before the renames. Not atomic with them: the rename itself refuses a target
        that appears in between (RENAME_NOREPLACE)."""
        for entry in order:
            af = entry.af
            if af._mode.kind != "x":
                break  # sorted: the 'x' files come first
            temp: Any = af._temp
            if af.store.batchable and temp.target_exists():
                err = FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), af.path)
                raise SessionFileError(af.path, "atomic write", err, "rename")

    def _publish(self, order: list[_Entry]) -> None:
        for i, entry in enumerate(order):
            try:
                entry.af._publish()
            except BaseException as exc:
                self._state = _FAILED
                for later in order[i + 1 :]:
                    later.af._fail(exc)
                done = [e for e in order[:i] if e.af._state == _COMMITTED]
                try:
                    self._complete(done)
                except Exception:
                    pass  # the rename's error is the one to report
                raise

    def _complete(self, order: list[_Entry]) -> None:
        """One directory fsync per distinct directory, then each file's end."""
        synced: set[Hashable] = set()
        error: BaseException | None = None
        for entry in order:
            first = entry.directory not in synced
            synced.add(entry.directory)
            try:
                entry.af._complete(self._durable and first)
            except BaseException as exc:
                error = error or exc
        if self._state == _COMMITTING:
            self._state = _DONE if error is None else _FAILED
        if error is not None:
            raise error

    def _sync_temps(self) -> None:
        """Make the prepared temps durable together: one syncfs per file system (the temps
        on other file systems were fsynced one by one while prepared)."""
        for fd, path in self._devices.values():
            try:
                _syncfs(fd)
            except OSError as exc:
                raise SessionFileError(path, "atomic write", exc, "fsync") from exc

    def discard(self) -> None:
        """Publish nothing: remove every temp. Inside `with`, the block's end does it and a
        clean exit then publishes nothing. Does nothing once the batch has ended."""
        with self._lock:
            if self._state != _NEW:
                return
            if self._in_with:
                self._discard_requested = True
                return
            self._state = _DISCARDED
        self._abandon(None)

    def _abandon(self, exc: BaseException | None) -> None:
        for entry in self._entries:
            af = entry.af
            if af._state in (_OPEN, _COMMITTING):
                if exc is None:
                    af._end("discarded", None)
                else:
                    af._fail(exc)
        self._close_devices()

    def _close_devices(self) -> None:
        """Close the batch's own descriptors (syncfs handles, shared directories), unless an
        `open`/`write` of another thread still uses them: the last one closes them then."""
        with self._lock:
            if self._busy:
                return
            devices, self._devices = self._devices, {}
        _fs.close_quietly(*(fd for fd, _ in devices.values()))
        self._dirs.close()

    def _expect_open(self) -> None:
        if self._state != _NEW:
            raise RuntimeError(_MISUSE[self._state])

    # -- context managers ----------------------------------------------------------------

    def __enter__(self) -> Self:
        self._expect_open()
        self._in_with = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_with = False
        with self._lock:
            if self._state != _NEW:
                return
            publish = exc is None and not self._discard_requested
            if not publish:
                failed = exc is not None and isinstance(exc, Exception)
                self._state = _FAILED if failed else _DISCARDED
        if publish:
            self.commit()
        else:
            self._abandon(exc)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from ._async import run

        await run(self.__exit__, exc_type, exc, tb)

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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
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
            *,
            permissions: Permissions = None,
            follow_symlinks: bool = True,
            fs: Any = None,
        ) -> AsyncFile[Any]: ...

    async def aopen(
        self,
        file: StrOrBytesPath,
        mode: str = "w",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        *,
        permissions: Permissions = None,
        follow_symlinks: bool = True,
        fs: Any = None,
    ) -> AsyncFile[Any]:
        """`open()` for `async with AtomicBatch()`: the temp is created in a worker thread
        and returned as an `AsyncFile` (coroutine methods), as `async with AtomicFile` does."""
        from ._async import AsyncFile, run

        args = (file, mode, buffering, encoding, errors, newline, permissions, follow_symlinks, fs)
        af, f = await run(self._add, args, _NO_DATA)
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
        permissions: Permissions = None,
        follow_symlinks: bool = True,
        fs: Any = None,
    ) -> None:
        """`write()` in a worker thread."""
        from ._async import run

        await run(
            lambda: self.write(
                file,
                data,
                mode=mode,
                encoding=encoding,
                errors=errors,
                newline=newline,
                permissions=permissions,
                follow_symlinks=follow_symlinks,
                fs=fs,
            )
        )


def _twice(path: str) -> SessionFileError:
    err = OSError(errno.EEXIST, "The target is already written in this batch", path)
    return SessionFileError(path, "atomic write", err, "open")


def _target_key(path: str, follow: bool) -> str:
    """One spelling per target file, to refuse the same target twice in a batch."""
    if follow:
        return os.path.realpath(path)
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head or os.curdir), tail)


# -- one durability point for many files (Linux syncfs) --------------------------------

#: statfs f_type of the local file systems whose syncfs(2) writes back every dirty inode
#: and commits the journal (ext2/3/4, xfs, btrfs, f2fs; tmpfs and ramfs have nothing to
#: write). FUSE, NFS and others are left to fsync(2), which they forward to the server.
_SYNCFS_TRUSTED = frozenset({0xEF53, 0x58465342, 0x9123683E, 0xF2F52010, 0x01021994, 0x858458F6})
_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux") and os.environ.get("ATOMICFILE_NO_SYNCFS") is None:
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                libc.syncfs.argtypes = (ctypes.c_int,)
                libc.fstatfs.argtypes = (ctypes.c_int, ctypes.c_void_p)
                _libc = libc
            except (ImportError, OSError, AttributeError):
                _libc = False
    return _libc


def _kernel_reports_syncfs_errors() -> bool:
    """syncfs(2) returns writeback errors since Linux 5.8; before, it could hide them."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def _syncfs_trusted(fd: int) -> bool:
    libc = _load_libc()
    if not libc or not _kernel_reports_syncfs_errors():
        return False
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first word
    if libc.fstatfs(fd, buf) != 0:
        return False
    f_type = int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder)
    return f_type in _SYNCFS_TRUSTED


def _syncfs(fd: int) -> None:
    if _load_libc().syncfs(fd) != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def sync_tree(fd: int, walk: bool) -> None:
    """`_fs.sync_tree`, its home now."""
    from ._fs import sync_tree

    sync_tree(fd, walk)


def _fsync_walk(dir_fd: int) -> None:
    """`_fs.fsync_walk`, its home now."""
    from ._fs import fsync_walk

    fsync_walk(dir_fd)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | os.O_CLOEXEC
_ENTRY_FLAGS = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | os.O_CLOEXEC
)
