"""The atomic write protocol, synchronous: `AtomicFile` and `atomic_write`.

Every step lives here (create the temp, finish it, publish it, roll it back); the async
form in `_async` runs these same steps in a worker thread.
"""

from __future__ import annotations

import errno
import io
import os
import stat

from . import _fs, _naming, _permissions
from ._errors import SessionFileError
from ._modes import parse_mode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import IO, Any, BinaryIO, Generic, Literal, TypeGuard, TypeVar, overload

    from _typeshed import ReadableBuffer, StrOrBytesPath

    from ._async import AsyncFile
    from ._log import AnyLogger, EventLog
    from ._permissions import Permissions

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


_NEW, _OPEN, _COMMITTED, _DISCARDED, _FAILED = "new", "open", "committed", "discarded", "failed"
_AGAIN = "; create a new AtomicFile for another write"
_MISUSE = {
    ("open", _OPEN): "AtomicFile is already open" + _AGAIN,
    ("open", _COMMITTED): "AtomicFile was already committed" + _AGAIN,
    ("open", _DISCARDED): "AtomicFile was discarded" + _AGAIN,
    ("open", _FAILED): "AtomicFile already failed" + _AGAIN,
    ("commit", _NEW): "AtomicFile is not open: call open() or use 'with' before commit()",
    ("commit", _COMMITTED): "AtomicFile was already committed",
    ("commit", _DISCARDED): "AtomicFile was discarded; it can't be committed",
    ("commit", _FAILED): "AtomicFile already failed; it can't be committed",
}

if os.name == "posix":
    # String operations in place of os.path's on the write path: a fraction of the cost.
    # No normalisation either: "a/../b" must stay what the kernel resolves, which differs
    # from the lexical "b" when `a` is a symlink.
    def _split(path: str) -> tuple[str, str]:
        head, sep, tail = path.rpartition("/")
        return head or sep, tail

    def _join(directory: str, name: str) -> str:
        return f"{directory}/{name}" if directory and directory[-1] != "/" else directory + name

    def _absolute(path: str) -> str:
        return path if path[:1] == "/" else _join(os.getcwd(), path)

else:

    def _split(path: str) -> tuple[str, str]:
        return os.path.split(path)

    def _join(directory: str, name: str) -> str:
        return os.path.join(directory, name)

    def _absolute(path: str) -> str:
        return os.path.abspath(path)


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)

_rng: Any = None
#: The `_log` module, imported by the first write (`logging` costs more than this package).
_log: Any = None
#: Bumped in every forked child: an AtomicFile opened before the fork is the parent's.
_forks = 0


def _after_fork() -> None:
    global _forks
    _forks += 1
    if _rng is not None:
        _rng.seed()  # or parent and child would draw the same temp names


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _event_log(logger: AnyLogger | None) -> EventLog:
    global _log
    if _log is None:
        from . import _log as module

        _log = module
    return _log.EventLog(logger)  # type: ignore[no-any-return]


def _token() -> int:
    """64 random bits for a temp name. O_EXCL, not secrecy, makes the name safe, so the
    fast PRNG will do (as tempfile's does; no getrandom() call per write)."""
    global _rng
    if _rng is None:
        import random

        _rng = random.Random()
    return int(_rng.getrandbits(64))


class AtomicFile(Generic[_F]):
    """Write a file so that it holds the old content or the new one, never a mix.

    The positional parameters are `open()`'s. Writes go to a temp file beside the target;
    a clean exit from `with` (or `commit()`) flushes it, sets its permissions, fsyncs it and
    renames it over the target. An exception (or `discard()`) removes the temp and leaves
    the target as it was. `async with` gives a file whose methods are coroutines.

    Keyword options: `permissions` (None keeps an existing file's bits, an int mode, or a hook
    `(target, current_stat) -> int`), `logger`, `durable` (fsync the file and its directory;
    default True), `follow_symlinks` (replace what a symlink points to; default True).

    Raises `ValueError`/`TypeError` for bad arguments before any I/O, and `SessionFileError`
    (also the builtin `OSError` subclass `open()` would raise) when the file system fails.
    """

    if TYPE_CHECKING:

        @overload
        def __init__(
            self: AtomicFile[io.TextIOWrapper],
            file: StrOrBytesPath,
            mode: TextMode = "w",
            buffering: int = -1,
            encoding: str | None = None,
            errors: str | None = None,
            newline: str | None = None,
            *,
            permissions: Permissions = None,
            logger: AnyLogger | None = None,
            durable: bool = True,
            follow_symlinks: bool = True,
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[io.FileIO],
            file: StrOrBytesPath,
            mode: BinaryMode,
            buffering: Literal[0],
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            *,
            permissions: Permissions = None,
            logger: AnyLogger | None = None,
            durable: bool = True,
            follow_symlinks: bool = True,
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[io.BufferedRandom],
            file: StrOrBytesPath,
            mode: BinaryUpdateMode,
            buffering: Literal[-1, 1] = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            *,
            permissions: Permissions = None,
            logger: AnyLogger | None = None,
            durable: bool = True,
            follow_symlinks: bool = True,
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[io.BufferedWriter],
            file: StrOrBytesPath,
            mode: BinaryWriteMode,
            buffering: Literal[-1, 1] = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            *,
            permissions: Permissions = None,
            logger: AnyLogger | None = None,
            durable: bool = True,
            follow_symlinks: bool = True,
        ) -> None: ...
        @overload
        def __init__(
            self: AtomicFile[BinaryIO],
            file: StrOrBytesPath,
            mode: BinaryMode,
            buffering: int = -1,
            encoding: None = None,
            errors: None = None,
            newline: None = None,
            *,
            permissions: Permissions = None,
            logger: AnyLogger | None = None,
            durable: bool = True,
            follow_symlinks: bool = True,
        ) -> None: ...

    def __init__(
        self,
        file: StrOrBytesPath,
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
    ) -> None:
        self._state = _NEW
        self._mode = parsed = parse_mode(mode)
        if not isinstance(buffering, int) or isinstance(buffering, bool):
            raise TypeError(f"buffering must be an int, not {type(buffering).__name__}")
        if parsed.binary:
            for name, value in (("encoding", encoding), ("errors", errors), ("newline", newline)):
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
        _permissions.check(permissions)
        #: The target, as a `str` path.
        self.path: str = os.fsdecode(os.fspath(file))
        #: The mode string, as given.
        self.mode: str = mode
        #: The temp file's path while a write is open, else None.
        self.temp_path: str | None = None
        self._open_args = (buffering, encoding, errors, newline)
        self._permissions = permissions
        self._logger = logger
        self._durable = bool(durable)
        self._follow = bool(follow_symlinks)
        self._file: IO[Any] | None = None
        self._fd = -1
        self._real = self.path
        self._final_mode: int | None = None
        self._target_stat: os.stat_result | None = None
        self._temp_stat: os.stat_result | None = None
        self._in_with = False
        self._discard_requested = False
        self._size_hint: int | None = None
        self._created = False
        self._link_replaced = False
        self._forks = _forks

    def __repr__(self) -> str:
        return f"<AtomicFile {self.path!r} mode={self.mode!r} {self._state}>"

    # -- the protocol ------------------------------------------------------------------

    def open(self) -> _F:
        """Create the temp file beside the target and return it as `open()` would.

        For 'a' and 'r+' the temp starts as a copy of the target. Raises `SessionFileError`
        as `open()` would raise its `OSError` (missing directory, target is a directory,
        'x' and the target exists, 'r+' and it doesn't, permission denied...).
        """
        self._expect(_NEW, "open")
        self._log = log = _event_log(self._logger)
        self._start = _log.now()
        self._state = _OPEN
        step = "open"
        try:
            problem = self._inspect()
            directory, base = _split(self._real)
            self.temp_path = _join(directory, _naming.temp_name(base, _token()))
            if log.debug:
                fields: dict[str, Any] = {
                    "target_path": self.path,
                    "temp_path": self.temp_path,
                    "operation": "atomic_write",
                }
                if self._size_hint is not None:
                    fields["size"] = self._size_hint
                log.emit(_log.DEBUG, _log.STARTED, fields)
            if problem is not None:
                raise problem
            step = "permissions"
            self._final_mode = _permissions.final_mode(
                self._permissions, self._real, self._target_stat
            )
            copy = self._mode.needs_copy and (self._target_stat is not None or self._link_replaced)
            step = "create temp"
            # O_APPEND now unless a copy comes first (copy_file_range refuses an appending fd).
            self._create(directory, base, append=self._mode.kind == "a" and not copy)
            if copy:
                step = "copy"
                self._copy_target()
            step = "open"
            self._file = self._wrap()
        except BaseException as exc:
            self._fail(exc)
            if _needs_wrapping(exc):
                raise SessionFileError(self.path, "atomic write", exc, step) from exc
            raise
        return self._file  # type: ignore[return-value]

    def commit(self) -> None:
        """Publish the written content: flush, set permissions, fsync, rename, fsync the
        directory. On error the target is untouched, the temp is removed, and
        `SessionFileError` (or the original non-OSError exception) is raised."""
        self._expect(_OPEN, "commit")
        if self._discard_requested:
            raise RuntimeError(_MISUSE[("commit", _DISCARDED)])
        log = self._log
        fd, temp = self._fd, self.temp_path
        assert self._file is not None and temp is not None
        published = False
        size = self._size_hint
        step = "flush"
        try:
            self._file.close()  # flushes; the fd stays ours (closefd=False)
            step = "chmod"
            self._apply_metadata()
            if self._durable:
                step = "fsync"
                _fs.fsync_file(fd)
            if log.debug:
                size = os.fstat(fd).st_size
                log.emit(_log.DEBUG, _log.WRITTEN, {
                    "temp_path": temp,
                    "size": size,
                    "duration": _log.ms(self._start),
                    "operation": "write_file",
                })  # fmt: skip
            step = "rename"
            renamed_at = _log.now()
            self._fd = fd = self._release_before_rename(fd)
            if self._mode.kind == "x":
                leftover = _fs.link_noreplace(temp, self._real)
            else:
                os.replace(temp, self._real)
                leftover = False
            published = True
        except BaseException as exc:
            if published:  # an interrupt landed just after the rename: the write is done
                self._settle(fd)
                raise
            self._fail(exc)
            if _needs_wrapping(exc):
                raise SessionFileError(self.path, "atomic write", exc, step) from exc
            raise
        if leftover:
            self._remove_temp()
        self._settle(fd)
        if log.debug:
            log.emit(_log.DEBUG, _log.RENAMED, {
                "temp_path": temp,
                "target_path": self.path,
                "duration": _log.ms(renamed_at),
                "operation": "rename",
            })  # fmt: skip
        if self._durable:
            try:
                synced = _fs.fsync_dir(_split(self._real)[0])
            except OSError as exc:
                # The new content is in place but may not survive a power loss: say so.
                self._state = _FAILED
                self._log_failure(exc)
                raise SessionFileError(self.path, "atomic write", exc, "fsync directory") from exc
            if not synced:
                self._warn_dir_sync()
        if log.debug:
            log.emit(_log.DEBUG, _log.COMPLETED, {
                "target_path": self.path,
                "size": size,
                "total_duration": _log.ms(self._start),
            })  # fmt: skip
        self.temp_path = None

    def _settle(self, fd: int) -> None:
        """After the rename: the write is committed; release the fd and its sweep lock."""
        self._state = _COMMITTED
        self._file = None
        if fd >= 0:
            self._fd = -1
            try:
                os.close(fd)
            except OSError:
                pass  # fsynced (or closed once already) before the rename: nothing is lost

    def discard(self) -> None:
        """Abandon the write: remove the temp and leave the target as it was.

        Inside `with`, the temp is removed when the block ends and a clean exit then leaves
        the target alone. Does nothing when the write already ended (committed, discarded or
        failed), so it is safe in a `finally:`.
        """
        if self._state == _NEW:
            self._state = _DISCARDED
        elif self._state == _OPEN:
            if self._in_with:
                self._discard_requested = True
            else:
                self._discard_now()

    # -- context managers ----------------------------------------------------------------

    def __enter__(self) -> _F:
        file = self.open()
        self._in_with = True
        return file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_with = False
        if self._state != _OPEN:
            return  # committed, discarded or failed inside the block
        if exc is None:
            if self._discard_requested:
                self._discard_now()
            else:
                self.commit()
            return
        self._fail(exc)
        if _needs_wrapping(exc):
            # The block's writes go to the temp file: its I/O errors are the write's errors.
            raise SessionFileError(self.path, "atomic write", exc, "write") from exc

    if TYPE_CHECKING:

        @overload
        async def __aenter__(self: AtomicFile[IO[str]]) -> AsyncFile[str]: ...
        @overload
        async def __aenter__(self: AtomicFile[IO[bytes]]) -> AsyncFile[bytes]: ...

    async def __aenter__(self) -> AsyncFile[Any]:
        from ._async import enter

        return await enter(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from ._async import run

        await run(self.__exit__, exc_type, exc, tb)

    def __del__(self) -> None:
        # An abandoned open write is discarded, as an unclosed file is closed, with the same
        # ResourceWarning. Never in a forked child: the temp belongs to the parent.
        if getattr(self, "_state", None) == _OPEN and self._forks == _forks:
            import warnings

            warnings.warn(f"unfinished {self!r} discarded", ResourceWarning, stacklevel=2)
            try:
                self._cleanup()
            except Exception:
                pass

    # -- the steps ---------------------------------------------------------------------

    def _expect(self, state: str, action: str) -> None:
        if self._state != state:
            raise RuntimeError(_MISUSE[(action, self._state)])

    def _check_live(self) -> None:
        """The async file's guard: its methods need a write that is open, not discarded."""
        if self._state != _OPEN or self._discard_requested:
            what = "discarded" if self._discard_requested else self._state
            raise RuntimeError(f"the AtomicFile behind this AsyncFile is {what}: it can't be used")

    @property
    def _is_open(self) -> bool:
        return self._state == _OPEN

    def _inspect(self) -> OSError | None:
        """Find the file to replace and its stat; return the error `open()` would raise."""
        path = self.path
        if not path:
            return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        seps = os.sep + (os.altsep or "")
        if path.endswith(tuple(seps)) and path.rstrip(seps):
            # "name/" must be a directory: open() gives EISDIR for every mode that may
            # create, and for 'r+' whatever resolving the path gives (ENOENT, ENOTDIR).
            if self._mode.kind == "r":
                try:
                    os.stat(path)
                except OSError as err:
                    return err
            return IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        # Absolute now: a chdir while the block runs must not move the rename.
        self._real = real = _absolute(path)
        try:
            st: os.stat_result | None = os.lstat(real)
        except FileNotFoundError:
            st = None
        except OSError as err:
            return err
        kind = self._mode.kind
        if st is not None and kind == "x":
            # O_EXCL semantics: a symlink, even a dangling one, is an existing file.
            return FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            if not self._follow:
                self._link_replaced = True  # its content is still what 'a'/'r+' start from
                return None  # the link itself is replaced; it has no mode worth keeping
            self._real = real = os.path.realpath(real)
            try:
                st = os.stat(real)
            except FileNotFoundError:
                st = None  # dangling: open() would create the file it points to
            except OSError as err:
                return err
        if st is None:
            if kind == "r":
                return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            return None
        if stat.S_ISDIR(st.st_mode):
            return IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(st.st_mode):
            # Renaming over a FIFO or a device would not write to it, it would remove it.
            return OSError(errno.EINVAL, "Not a regular file: it can't be replaced", path)
        if not _permissions.may_write(st, real):
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        self._target_stat = st
        return None

    def _create(self, directory: str, base: str, append: bool) -> None:
        """Create and lock the temp: O_CREAT|O_EXCL|O_NOFOLLOW, mode no wider than final."""
        mode = self._mode
        flags = os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY
        flags |= os.O_RDWR if mode.plus or mode.kind == "r" else os.O_WRONLY
        if append:
            flags |= os.O_APPEND
        create_mode = _permissions.create_mode(self._final_mode)
        name_max = _naming.NAME_MAX
        temp = self.temp_path
        assert temp is not None
        for _ in range(100):
            try:
                fd = os.open(temp, flags, create_mode)
                self.temp_path, self._fd, self._created = temp, fd, True
            except FileExistsError:
                temp = _join(directory, _naming.temp_name(base, _token(), name_max))
                continue
            except OSError as err:
                if err.errno != errno.ENAMETOOLONG or name_max != _naming.NAME_MAX:
                    raise
                # The file system's names are shorter than Linux's usual 255 bytes.
                name_max = os.pathconf(directory or ".", "PC_NAME_MAX")
                temp = _join(directory, _naming.temp_name(base, _token(), name_max))
                continue
            except BaseException:
                # A signal handler's exception (KeyboardInterrupt) just after open()
                # returned: the file is there and ours, so the cleanup must remove the name.
                self.temp_path, self._created = temp, True
                raise
            _fs.lock(fd)
            self._temp_stat = st = os.fstat(fd)
            if st.st_nlink:
                return
            # A stale-temp sweep removed the name between our create and our lock.
            self._fd, self._created = -1, False
            os.close(fd)
            temp = _join(directory, _naming.temp_name(base, _token(), name_max))
        raise FileExistsError(errno.EEXIST, "No free temp file name", temp)

    def _copy_target(self) -> None:
        """Start the temp as a copy of the target ('a' at its end, 'r+' at 0)."""
        fd, kind = self._fd, self._mode.kind
        try:
            src = os.open(self._real, os.O_RDONLY | _O_BINARY)
        except FileNotFoundError:
            if kind == "r":
                raise
            src = -1  # 'a' onto nothing (a dangling link being replaced): start empty
        if src >= 0:
            try:
                _fs.copy_contents(src, fd)
            finally:
                os.close(src)
        if kind == "r":
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            _fs.set_append(fd)

    def _wrap(self) -> IO[Any]:
        """The temp's file object, exactly as `open()` builds it, owning no fd (we keep it
        past a user's `close()` to chmod, fsync and unlink)."""
        buffering, encoding, errors, newline = self._open_args
        if buffering < 0:
            # open()'s own default (FileIO's _blksize), given explicitly so that open() skips
            # its isatty() probe, an ioctl per write: a temp file is never a terminal.
            assert self._temp_stat is not None
            blksize = self._temp_stat.st_blksize
            buffering = blksize if blksize > 1 else io.DEFAULT_BUFFER_SIZE
        file: Any = open(  # noqa: SIM115 - the caller owns and closes it
            self._fd, self.mode, buffering, encoding, errors, newline, closefd=False
        )
        raw = file if buffering == 0 else file.buffer.raw if self._mode.text else file.raw
        raw.name = self.temp_path
        return file  # type: ignore[no-any-return]

    def _apply_metadata(self) -> None:
        """Give the temp the target's owner (best effort) and the final mode, before fsync."""
        temp, target = self._temp_stat, self._target_stat
        assert temp is not None
        fd = self._fd
        if target is not None and (temp.st_uid, temp.st_gid) != (target.st_uid, target.st_gid):
            try:
                os.fchown(fd, target.st_uid, target.st_gid)
            except OSError as exc:
                # A non-root writer can't give a file away, but may keep its group.
                if target.st_gid != temp.st_gid:
                    try:
                        os.fchown(fd, -1, target.st_gid)
                    except OSError:
                        pass
                self._warn_owner(exc)
        final = self._final_mode
        # After the chown, which clears set-id bits; the temp never has those at create, so
        # they always differ here. A new file's default mode was set exactly by the kernel at
        # create (0o644 less the umask): nothing to do then.
        if final is not None and stat.S_IMODE(temp.st_mode) != final:
            os.fchmod(fd, final)

    def _release_before_rename(self, fd: int) -> int:
        """Close the temp before the rename where the platform needs it; return the fd
        that still holds the sweep lock (-1 if none), to close after the rename."""
        if _fs.WINDOWS:
            os.close(fd)  # Windows can't rename an open file
            return -1
        if self._durable:
            return fd  # fsync already pushed the data; close after the rename
        # Without fsync, close() is where NFS sends the data (close-to-open consistency), so
        # it must precede the rename; a duplicate fd keeps the lock across it.
        keep = os.dup(fd)
        try:
            os.close(fd)
        except OSError:
            os.close(keep)
            self._fd = -1
            raise
        return keep

    def _discard_now(self) -> None:
        self._state = _DISCARDED
        log = self._log
        if log.debug:
            log.emit(_log.DEBUG, _log.DISCARDED, {
                "target_path": self.path,
                "temp_path": self.temp_path,
                "operation": "discard",
            })  # fmt: skip
        self._cleanup()

    def _fail(self, exc: BaseException) -> None:
        """Failure: log it, remove the temp, leave the target untouched."""
        self._state = _FAILED
        self._log_failure(exc)
        self._cleanup()

    def _log_failure(self, exc: BaseException) -> None:
        log = self._log
        if log.enabled(_log.ERROR):
            log.emit(_log.ERROR, _log.FAILED, {
                "target_path": self.path,
                "temp_path": self.temp_path,
                "error_code": _log.error_code(exc),
                "error_message": str(exc),
                "operation": "atomic_write",
            })  # fmt: skip

    def _cleanup(self) -> None:
        """Close and unlink the temp. Its own failures are logged, never raised."""
        file, fd, self._file, self._fd = self._file, self._fd, None, -1
        if not _fs.WINDOWS:
            self._remove_temp()  # while the lock is still held: no sweep races us
        if file is not None:
            try:
                file.close()
            except Exception:
                pass  # the same error the write already reported (ENOSPC...)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        if _fs.WINDOWS:
            self._remove_temp()
        self.temp_path = None

    def _remove_temp(self) -> None:
        temp, log = self.temp_path, self._log
        if temp is None or not self._created:
            return
        self._created = False
        try:
            os.unlink(temp)
        except OSError as exc:
            if log.enabled(_log.WARNING):
                log.emit(_log.WARNING, _log.CLEANUP_FAILED, {
                    "temp_path": temp,
                    "cleanup_error_code": _log.error_code(exc),
                })  # fmt: skip
            return
        if log.debug:
            log.emit(_log.DEBUG, _log.CLEANED, {"temp_path": temp, "operation": "cleanup"})

    def _warn_dir_sync(self) -> None:
        log = self._log
        if log.enabled(_log.WARNING):
            log.emit(_log.WARNING, _log.DIR_SYNC_SKIPPED, {
                "target_path": self.path,
                "directory": _split(self._real)[0],
                "operation": "fsync_directory",
            })  # fmt: skip

    def _warn_owner(self, exc: OSError) -> None:
        log = self._log
        if log.enabled(_log.WARNING):
            log.emit(_log.WARNING, _log.OWNER_KEPT_FAILED, {
                "target_path": self.path,
                "temp_path": self.temp_path,
                "error_code": _log.error_code(exc),
                "operation": "chown",
            })  # fmt: skip


def _needs_wrapping(exc: BaseException) -> TypeGuard[OSError]:
    """An operating system error not yet wrapped in SessionFileError. OSErrors without an
    errno, such as io.UnsupportedOperation (also a ValueError), are Python's own and pass
    unchanged."""
    return (
        isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, SessionFileError)
    )


_BINARY: dict[str, BinaryWriteMode] = {"w": "wb", "x": "xb", "a": "ab"}


def atomic_write(
    file: StrOrBytesPath,
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
        size = memoryview(data).nbytes  # TypeError here for data that is neither
    # In binary mode, encoding/errors/newline get the ValueError open() gives them.
    af: AtomicFile[Any] = AtomicFile(
        file,
        open_mode,
        -1,
        encoding,
        errors,
        newline,
        permissions=permissions,
        logger=logger,
        durable=durable,
        follow_symlinks=follow_symlinks,
    )
    af._size_hint = size
    with af as f:
        f.write(data)
