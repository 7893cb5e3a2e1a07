"""`AtomicBatch`: many atomic file writes published together, with one durability point.

Each file is an `AtomicFile` (same parameters, same file objects, same temp files). What the
batch changes is the order of the commit phases: every temp is prepared (flushed, final
metadata) without an fsync, then all are made durable together (one `syncfs` per file
system where that is trusted, else an fsync each), then all are renamed, then each distinct
directory is fsynced once.
"""

from __future__ import annotations

import errno
import os
import sys

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
    from ._local import SharedDirs
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


class _Entry:
    __slots__ = ("af", "dev", "directory", "key")

    def __init__(self, af: AtomicFile[Any], key: Hashable, directory: str) -> None:
        self.af = af
        self.key = key
        self.directory = directory
        self.dev = -1  # the temp's file system, when the batch is durable


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

    Raises `SessionFileError` (also the builtin `OSError` subclass) as `AtomicFile` does;
    the same target twice in one batch is a `FileExistsError` one.
    """

    def __init__(self, *, durable: bool = True, logger: AnyLogger | None = None) -> None:
        self._durable = bool(durable)
        self._logger = logger
        self._entries: list[_Entry] = []
        self._keys: set[Hashable] = set()
        #: One descriptor per file system whose syncfs is trusted (a dup of its first
        #: temp's fd, opened before anything was written there: syncfs reports the errors
        #: since then), with that temp's target for the error.
        self._devices: dict[int, tuple[int, str]] = {}
        #: File systems where each temp gets its own fsync instead.
        self._untrusted: set[int] = set()
        #: The targets' directories, each opened once and shared by its files' writes.
        self._dirs: SharedDirs = {}
        #: Shared directory descriptor -> (st_dev, st_ino), for the same-target check.
        self._dir_ids: dict[int, tuple[int, int]] = {}
        #: (soft limit before, soft limit we set) once EMFILE made us raise RLIMIT_NOFILE.
        self._limit: tuple[int, int] | None = None
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

        Raises `SessionFileError` as `AtomicFile.open()` does, and a `FileExistsError` one
        when `file` is already in the batch (the same file through another path or a
        symlink counts); the batch itself stays usable.
        """
        self._expect_open()

        def make() -> AtomicFile[Any]:
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
            if af.store.batchable:
                af._dirs = self._dirs
            return af

        af = make()
        # A local target is known by its directory's identity and its name there, both as
        # the write resolved them (no realpath: that is a stat per path component).
        local = af.store.batchable and not _WINDOWS
        key: Hashable = None if local else _target_key(af.path, follow_symlinks)
        if key in self._keys:
            raise _twice(af.path)
        try:
            f: IO[Any] = af.open()
        except SessionFileError as exc:
            # A batch holds one descriptor per file until it commits (its temp, locked
            # against the sweep): past the soft RLIMIT_NOFILE (often 1024), raise it toward
            # the hard limit for the batch's life, as Go programs do at start.
            if exc.errno != errno.EMFILE or not self._more_descriptors():
                raise
            af = make()
            f = af.open()
        if local:
            key = self._local_key(af)
            if key in self._keys:
                af._end("discarded", None)
                raise _twice(af.path)
        temp_path = af.temp_path
        assert temp_path is not None
        entry = _Entry(af, key, os.path.dirname(temp_path))
        self._entries.append(entry)
        self._keys.add(key)
        if self._durable and af.store.batchable:  # a local file (remote stores commit alone)
            try:
                entry.dev = self._note_device(af, f)
            except BaseException as exc:
                self._entries.pop()
                self._keys.discard(key)
                af._fail(exc)
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise SessionFileError(af.path, "atomic write", exc, "open") from exc
                raise
        return f

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
        The data goes into the temp file now; the target changes when the batch commits."""
        if mode not in _BINARY:
            raise ValueError(f"AtomicBatch.write mode must be 'w', 'x' or 'a', not {mode!r}")
        open_mode: Any = mode
        if not isinstance(data, str):
            open_mode = _BINARY[mode]
            memoryview(data)  # TypeError now for data that is neither
        f = self.open(
            file,
            open_mode,
            -1,
            encoding,
            errors,
            newline,
            permissions=permissions,
            follow_symlinks=follow_symlinks,
            fs=fs,
        )
        try:
            f.write(data)
        except BaseException as exc:
            entry = self._entries.pop()
            self._keys.discard(entry.key)
            entry.af._fail(exc)
            if isinstance(exc, OSError) and exc.errno is not None:
                raise SessionFileError(entry.af.path, "atomic write", exc, "write") from exc
            raise

    def _local_key(self, af: AtomicFile[Any]) -> Hashable:
        temp: Any = af._temp
        dfd = temp._dfd
        if temp._own_dfd:  # not a shared directory (a symlink led elsewhere): no cache
            st = os.fstat(dfd)
            return st.st_dev, st.st_ino, temp._base
        ident = self._dir_ids.get(dfd)
        if ident is None:
            st = os.fstat(dfd)
            self._dir_ids[dfd] = ident = (st.st_dev, st.st_ino)
        return *ident, temp._base

    def _note_device(self, af: AtomicFile[Any], f: IO[Any]) -> int:
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

        On an error before the renames nothing is published and every temp is removed. A
        rename that fails (the target of an 'x' file appeared, the directory became
        read-only...) stops the batch there: 'x' files are renamed first, so their
        refusal publishes nothing; a failing rename of another file leaves the files renamed
        before it published. Raises `SessionFileError` (or the original exception).
        """
        self._expect_open()
        if self._discard_requested:
            raise RuntimeError(_MISUSE[_DISCARDED])
        self._state = _COMMITTING
        entries = self._entries
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
            except BaseException as exc:
                self._state = _FAILED if isinstance(exc, Exception) else _DISCARDED
                self._abandon(exc)
                raise
            # 'x' files first: the likeliest refusal (the target appeared) publishes nothing.
            order = sorted(entries, key=lambda e: e.af._mode.kind != "x")
            self._publish(order)
            self._complete(order)
        finally:
            self._close_devices()

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
        synced: set[str] = set()
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
        """Close the batch's own descriptors (syncfs handles, shared directories); give
        back the descriptor limit it raised."""
        devices, self._devices = self._devices, {}
        dirs, self._dirs = self._dirs, {}
        self._dir_ids = {}
        _fs.close_quietly(*(fd for fd, _ in devices.values()), *(fd for fd, _ in dirs.values()))
        limit, self._limit = self._limit, None
        if limit is not None:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft == limit[1]:  # unless someone changed it since
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit[0], hard))

    def _more_descriptors(self) -> bool:
        """Double the soft RLIMIT_NOFILE (up to the hard one); False where it can't grow."""
        try:
            import resource
        except ImportError:
            return False
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft >= hard:
            return False
        new = soft * 2 if hard == resource.RLIM_INFINITY else min(soft * 2, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (OSError, ValueError):
            return False
        self._limit = (self._limit[0] if self._limit else soft, new)
        return True

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
        if self._state != _NEW:
            return
        if exc is None and not self._discard_requested:
            self.commit()
            return
        self._state = _DISCARDED if exc is None or not isinstance(exc, Exception) else _FAILED
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

        f = await run(
            lambda: self.open(
                file,
                mode,
                buffering,
                encoding,
                errors,
                newline,
                permissions=permissions,
                follow_symlinks=follow_symlinks,
                fs=fs,
            )
        )
        return AsyncFile(f, self._entries[-1].af)

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
