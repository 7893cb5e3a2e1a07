"""`AtomicDirectory`: replace a whole directory tree in one step.

The new tree is built in a staging directory beside the target (same parent, so the same
file system), named like a temp file (`.<name>.<16 hex>.tmp`) and locked (flock on a
descriptor of it) so that the stale-temp sweep never removes a live one. On commit it is made
durable, then exchanged with the target by renameat2(RENAME_EXCHANGE): at every instant the
target's name leads to the old tree or to the new one. The old tree, now under the staging
name (and locked by us), is then removed, or kept.

Every step works relative to a descriptor of the parent directory, opened once.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _fs, _naming, _permissions
from ._errors import SessionFileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType
    from typing import Any

    from _typeshed import StrOrBytesPath

    from ._log import AnyLogger, EventLog
    from ._permissions import Permissions

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
_ATTEMPTS = 100

_NEW, _OPEN, _COMMITTING, _COMMITTED, _DISCARDED, _FAILED = (
    "new", "open", "committing", "committed", "discarded", "failed",
)  # fmt: skip
_MISUSE = {
    _OPEN: "AtomicDirectory is already open; create a new AtomicDirectory for another write",
    _COMMITTING: "AtomicDirectory is being committed",
    _COMMITTED: "AtomicDirectory was already committed",
    _DISCARDED: "AtomicDirectory was discarded",
    _FAILED: "AtomicDirectory already failed",
}
_NO_EXCHANGE = (
    "This system or file system can't exchange two directories atomically "
    "(renameat2 RENAME_EXCHANGE); pass fallback=True to replace the directory in two "
    "renames, with an instant where it is missing"
)


class AtomicDirectory:
    """Replace the directory `path` with a new tree in one step: readers and crashes see
    the old tree or the new one, never a mix, never a missing one.

        with AtomicDirectory("site") as d:       # d: pathlib.Path of the staging directory
            (d / "index.html").write_text(html)

    The block fills a fresh staging directory beside the target (any way: `open()`,
    `shutil.copytree`, other libraries). A clean exit (or `commit()`) makes every file and
    directory in it durable (unless `durable=False`), exchanges it with the target
    (renameat2 RENAME_EXCHANGE on Linux, renamex_np RENAME_SWAP on macOS; a plain rename
    when there is no target yet), fsyncs the parent, and removes the old tree, or keeps it
    (`keep_old=True`; its path is then `old_path`). An exception (or `discard()`) removes
    the staging tree and leaves the target untouched.

    Options: `permissions` for the new top directory (None keeps the old one's mode, or
    gives a new one mkdir's default less the umask; an int; or a hook `(target,
    current_stat) -> int`), `logger`, `durable` (default True), `keep_old`, `fallback`
    (where no atomic exchange exists: False raises, True replaces in two renames with an
    instant where the target is missing).

    Raises `ValueError`/`TypeError` for bad arguments before any I/O, and
    `SessionFileError` (also the builtin subclass `open()` would raise:
    `NotADirectoryError` for a target that is a file, `PermissionError`...) on a file
    system error, with the target untouched.
    """

    def __init__(
        self,
        path: StrOrBytesPath,
        *,
        permissions: Permissions = None,
        logger: AnyLogger | None = None,
        durable: bool = True,
        keep_old: bool = False,
        fallback: bool = False,
    ) -> None:
        _permissions.check(permissions)
        text = os.fsdecode(os.fspath(path))
        stripped = text.rstrip(os.sep + (os.altsep or "")) or text
        head, base = os.path.split(stripped)
        if base in ("", os.curdir, os.pardir):
            raise ValueError(f"AtomicDirectory needs a path that names a directory, not {text!r}")
        #: The target directory, as a `str` path.
        self.path: str = text
        self._dir = head
        self._base = base
        self._permissions = permissions
        self._logger = logger
        self._durable = bool(durable)
        self._keep_old = bool(keep_old)
        self._fallback = bool(fallback)
        self._state = _NEW
        self._in_with = False
        self._discard_requested = False
        self._dfd = -1  # the parent directory
        self._sfd = -1  # the staging directory (its flock keeps the sweep away)
        self._extra_fd = -1  # a target that appeared during the commit, locked
        self._name = ""  # the staging directory's name in the parent
        self._final_mode: int | None = None
        self._target_stat: os.stat_result | None = None
        #: The kept old tree (`keep_old=True`) after a commit that replaced one.
        self.old_path: Path | None = None

    def __repr__(self) -> str:
        return f"<AtomicDirectory {self.path!r} {self._state}>"

    @property
    def staging_path(self) -> Path | None:
        """The staging directory while the write is open, else None."""
        if self._state != _OPEN:
            return None
        from pathlib import Path

        return Path(os.path.join(self._dir, self._name))

    # -- the protocol ------------------------------------------------------------------

    def open(self) -> Path:
        """Create the staging directory beside the target and return its path.

        Raises `SessionFileError` when the parent is missing or not writable, or the target
        exists and is not a directory, is a symlink, or is a mount point; nothing is
        created then.
        """
        if self._state != _NEW:
            raise RuntimeError(_MISUSE[self._state])
        from ._log import EventLog, now

        self._log = EventLog(self._logger)
        self._start = now()
        self._state = _OPEN
        self._pid = os.getpid()  # a forked child never removes its parent's staging tree
        self._step = "open"
        try:
            self._open()
        except BaseException as exc:
            self._end(_FAILED if isinstance(exc, Exception) else _DISCARDED, exc)
            if isinstance(exc, OSError) and exc.errno is not None:
                raise SessionFileError(self.path, "atomic directory", exc, self._step) from exc
            raise
        staging = self.staging_path
        assert staging is not None
        return staging

    def _open(self) -> None:
        self._dfd = dfd = os.open(self._dir or os.curdir, _DIR_FLAGS)
        parent = os.fstat(dfd)
        try:
            st: os.stat_result | None = os.stat(self._base, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            self._check_target(st, parent)
        self._target_stat = st
        self._step = "permissions"
        self._final_mode = _permissions.final_mode(self._permissions, self.path, st)
        self._step = "create temp"
        for _ in range(_ATTEMPTS):
            name = _naming.temp_name(self._base, _naming.token())
            try:
                # Private while it fills: the final mode is set at commit.
                os.mkdir(name, 0o700, dir_fd=dfd)
            except FileExistsError:
                continue
            self._name = name
            break
        else:
            raise FileExistsError(errno.EEXIST, "No free staging directory name", self.path)
        self._sfd = sfd = os.open(name, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=dfd)
        mine = os.fstat(sfd)
        if mine.st_dev != parent.st_dev or (hasattr(os, "geteuid") and mine.st_uid != os.geteuid()):
            raise _error(errno.EAGAIN, self.path, "The staging directory was replaced")
        _fs.try_lock(sfd)  # None where the file system has no locks: nothing more to do
        log = self._log
        if log.debug:
            from ._log import DEBUG, STARTED

            log.emit(DEBUG, STARTED, {
                "target_path": self.path,
                "temp_path": os.path.join(self._dir, name),
                "operation": "atomic_directory",
            })  # fmt: skip

    def _check_target(self, st: os.stat_result, parent: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise _error(
                errno.ELOOP,
                self.path,
                "The target is a symbolic link: give the directory it points to",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise _error(errno.ENOTDIR, self.path)
        if st.st_dev != parent.st_dev:
            raise _error(
                errno.EBUSY, self.path, "The target is a mount point: it can't be replaced"
            )

    def commit(self) -> None:
        """Make the staging tree durable, exchange it with the target, fsync the parent,
        then remove (or keep) the old tree. On an error before the exchange the target is
        untouched and the staging tree removed; raises `SessionFileError`."""
        if self._state != _OPEN:
            raise RuntimeError(_MISUSE[self._state])
        if self._discard_requested:
            raise RuntimeError("AtomicDirectory was discarded; it can't be committed")
        self._state = _COMMITTING
        from ._log import now

        old_fd = -1
        published = False
        try:
            try:
                self._finish_top()
                if self._durable:
                    self._step = "fsync"
                    from ._batch import sync_tree

                    sync_tree(self._sfd, walk=True)
                self._step = "rename"
                exchanged_at = now()
                old_fd = self._lock_target()
                exchanged = self._swap(old_fd)
                published = True
            except BaseException as exc:
                if published:
                    raise
                self._end(_FAILED if isinstance(exc, Exception) else _DISCARDED, exc)
                if isinstance(exc, OSError) and exc.errno is not None:
                    err = SessionFileError(self.path, "atomic directory", exc, self._step)
                    raise err from exc
                raise
            self._state = _COMMITTED
            log = self._log
            if log.debug:
                from ._log import DEBUG, RENAMED, ms

                log.emit(DEBUG, RENAMED, {
                    "temp_path": os.path.join(self._dir, self._name),
                    "target_path": self.path,
                    "duration": ms(exchanged_at),
                    "operation": "exchange" if exchanged else "rename",
                })  # fmt: skip
            sync_error: OSError | None = None
            if self._durable:
                try:
                    if not _fs.fsync_dir(self._dfd):
                        self._warn_dir_sync()
                except OSError as exc:
                    sync_error = exc
            if exchanged:
                self._drop_old()
            if sync_error is not None:
                # The new tree is in place but may not survive a power loss: say so.
                self._state = _FAILED
                self._log_failure(sync_error)
                err = SessionFileError(self.path, "atomic directory", sync_error, "fsync directory")
                raise err from sync_error
        finally:
            if old_fd >= 0:
                os.close(old_fd)
            self._release()
        if self._log.debug:
            from ._log import COMPLETED, DEBUG, ms

            self._log.emit(DEBUG, COMPLETED, {
                "target_path": self.path,
                "total_duration": ms(self._start),
            })  # fmt: skip

    def _finish_top(self) -> None:
        """The new top directory's mode (and the old one's owner, where we may)."""
        self._step = "chmod"
        sfd = self._sfd
        final = self._final_mode
        if final is None:
            final = 0o777 & ~_umask()  # what mkdir would have given
        old = self._target_stat
        if old is not None and hasattr(os, "fchown"):
            mine = os.fstat(sfd)
            if (mine.st_uid, mine.st_gid) != (old.st_uid, old.st_gid):
                try:
                    os.fchown(sfd, old.st_uid, old.st_gid)
                except OSError:
                    final &= ~(stat.S_ISUID | stat.S_ISGID | 0o070)  # best effort, never wider
        os.fchmod(sfd, final)

    def _lock_target(self) -> int:
        """Open and lock the current target: once exchanged it sits under a temp name,
        and the lock keeps the sweep off it while we remove or keep it. -1: no target."""
        try:
            fd = os.open(self._base, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=self._dfd)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _error(errno.ELOOP, self.path, "The target became a symbolic link") from exc
            raise
        try:
            self._check_target(os.fstat(fd), os.fstat(self._dfd))
            _fs.try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _swap(self, old_fd: int) -> bool:
        """Put the staging tree at the target's name. True: exchanged (the old tree is now
        under the staging name); False: there was no target."""
        dfd, name, base = self._dfd, self._name, self._base
        for _ in range(2):
            if old_fd >= 0:
                try:
                    _fs.exchange(name, base, dfd)
                    return True
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        old_fd = -1  # the target went away meanwhile: a plain rename
                        continue
                    if exc.errno not in _fs.EXCHANGE_UNSUPPORTED:
                        raise
                    if not self._fallback:
                        raise _error(exc.errno or errno.ENOTSUP, self.path, _NO_EXCHANGE) from exc
                    return self._two_renames()
            try:
                self._rename_new(name, base, dfd)
                return False
            except FileExistsError:
                old_fd = self._lock_target()  # one appeared meanwhile: exchange with it
                if old_fd < 0:
                    continue
                self._extra_fd = old_fd
        raise _error(errno.EAGAIN, self.path, "The target kept changing during the commit")

    @staticmethod
    def _rename_new(name: str, base: str, dfd: int) -> None:
        try:
            _rename_noreplace_dir(name, base, dfd)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), base) from exc
            raise

    def _two_renames(self) -> bool:
        """The documented fallback: old tree aside, new tree in. The target's name is
        missing between the two renames."""
        dfd, base = self._dfd, self._base
        aside = _naming.temp_name(base, _naming.token())
        os.rename(base, aside, src_dir_fd=dfd, dst_dir_fd=dfd)
        try:
            os.rename(self._name, base, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.rename(aside, base, src_dir_fd=dfd, dst_dir_fd=dfd)
            raise
        self._name = aside  # where the old tree now is
        return True

    def _drop_old(self) -> None:
        """The old tree is under the staging name: keep it (renamed) or remove it."""
        dfd, name = self._dfd, self._name
        if self._keep_old:
            for _ in range(_ATTEMPTS):
                kept = _naming.temp_name(self._base, _naming.token())[:-4] + ".old"
                try:
                    _rename_noreplace_dir(name, kept, dfd)
                except FileExistsError:
                    continue
                except OSError as exc:
                    self._warn_cleanup(exc)
                    return
                from pathlib import Path

                self.old_path = Path(os.path.join(self._dir, kept))
                return
            return
        self._remove_staging()

    def discard(self) -> None:
        """Abandon the new tree: remove the staging directory, leave the target. Inside
        `with`, a clean exit then leaves the target alone. Does nothing once ended."""
        if self._state == _NEW:
            self._state = _DISCARDED
        elif self._state == _OPEN:
            if self._in_with:
                self._discard_requested = True
            else:
                self._end(_DISCARDED, None)

    # -- context managers ----------------------------------------------------------------

    def __enter__(self) -> Path:
        path = self.open()
        self._in_with = True
        return path

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_with = False
        if self._state != _OPEN:
            return
        if exc is None:
            if self._discard_requested:
                self._end(_DISCARDED, None)
            else:
                self.commit()
            return
        self._end(_FAILED if isinstance(exc, Exception) else _DISCARDED, exc)

    async def __aenter__(self) -> Path:
        from ._async import run

        if self._state != _NEW:
            raise RuntimeError(_MISUSE[self._state])
        try:
            return await run(self.__enter__)
        except BaseException as exc:
            if self._state == _OPEN:  # cancelled while the thread created it: undo
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

    def __del__(self) -> None:
        # An abandoned open write is discarded, as AtomicFile does, with the same warning.
        if getattr(self, "_state", None) == _OPEN and getattr(self, "_pid", None) == os.getpid():
            import warnings

            warnings.warn(
                f"unfinished {self!r} discarded: call its commit() or use 'with'",
                ResourceWarning,
                stacklevel=2,
            )
            try:
                self._end(_DISCARDED, None)
            except Exception:
                pass

    # -- the end -----------------------------------------------------------------------

    def _end(self, state: str, exc: BaseException | None) -> None:
        """Remove the staging tree (still locked), release, then log."""
        self._state = state
        if self._name:
            self._remove_staging()
        self._release()
        log = getattr(self, "_log", None)
        if log is None:
            return
        try:
            if state == _FAILED and exc is not None:
                self._log_failure(exc)
            elif log.debug:
                from ._log import DEBUG, DISCARDED

                fields: dict[str, Any] = {"target_path": self.path, "operation": "discard"}
                if exc is not None:
                    fields["reason"] = type(exc).__name__
                log.emit(DEBUG, DISCARDED, fields)
        except Exception:
            if exc is None:
                raise

    def _remove_staging(self) -> None:
        name, self._name = self._name, ""
        try:
            remove_tree(self._dfd, name)
        except OSError as exc:
            self._warn_cleanup(exc)  # a named leftover the sweep can remove

    def _release(self) -> None:
        for attr in ("_sfd", "_dfd", "_extra_fd"):
            fd = getattr(self, attr, -1)
            setattr(self, attr, -1)
            _fs.close_quietly(fd)

    def _log_failure(self, exc: BaseException) -> None:
        from ._log import ERROR, FAILED, error_code

        log: EventLog = self._log
        if log.enabled(ERROR):
            log.emit(ERROR, FAILED, {
                "target_path": self.path,
                "temp_path": os.path.join(self._dir, self._name) if self._name else None,
                "error_code": error_code(exc),
                "error_message": str(exc),
                "operation": "atomic_directory",
            })  # fmt: skip

    def _warn_cleanup(self, exc: OSError) -> None:
        from ._log import CLEANUP_FAILED, WARNING, error_code

        log: EventLog = self._log
        if log.enabled(WARNING):
            log.emit(WARNING, CLEANUP_FAILED, {
                "temp_path": self.path,
                "cleanup_error_code": error_code(exc),
            })  # fmt: skip

    def _warn_dir_sync(self) -> None:
        from ._log import DIR_SYNC_SKIPPED, WARNING

        log: EventLog = self._log
        if log.enabled(WARNING):
            log.emit(WARNING, DIR_SYNC_SKIPPED, {
                "target_path": self.path,
                "directory": self._dir,
                "operation": "fsync_directory",
            })  # fmt: skip


def _error(code: int, path: str, message: str | None = None) -> OSError:
    return OSError(code, message or os.strerror(code), path)


def _umask() -> int:
    """The process umask, read without changing it where /proc says it (Linux 4.7+)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # racy with other threads; only where /proc has no answer
    os.umask(mask)
    return mask


def _rename_noreplace_dir(src: str, dst: str, dir_fd: int) -> None:
    """Rename the directory `src` to `dst` only if `dst` does not exist (EEXIST).

    renameat2(RENAME_NOREPLACE) where there is one; else a check, then rename(2), which at
    worst replaces a directory that appeared empty in between (never a file: ENOTDIR,
    never a non-empty directory: ENOTEMPTY)."""
    func = _fs._renameat2 or _fs._load_renameat2()
    if func:
        if func(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _fs.RENAME_NOREPLACE) == 0:
            return
        import ctypes

        code = ctypes.get_errno()
        if code not in _fs.EXCHANGE_UNSUPPORTED - {errno.EXDEV}:
            raise OSError(code, os.strerror(code), src, None, dst)
    try:
        os.stat(dst, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove the tree `name` (relative to `dir_fd`) with the sweep's `_clean.remove_tree`
    (descriptor-relative, never following a symlink nor entering a mount point, read-only
    directories of ours opened up first); a name already gone is no error."""
    from ._clean import remove_tree as remove

    try:
        remove(dir_fd, name)
    except FileNotFoundError:
        pass
