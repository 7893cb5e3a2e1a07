"""`AtomicDirectory`: replace a whole directory tree in one step.

The new tree is built as the directory `tree` inside a private staging directory beside
the target (same parent, so the same file system): `.<name>.<16 hex>.tmp`, mode 0700,
owned by the writer, locked (flock on a descriptor of it) so that the stale-temp sweep
never removes a live one. The writer holds both open, and the path it hands out resolves
through the descriptor of `tree` (`/proc/<pid>/fd/N`, where there is a /proc): a user who
controls the parent and renames the staging directory away can't redirect the writes.

On commit the tree is made durable, then exchanged with the target by
renameat2(staging_fd, "tree", parent_fd, name, RENAME_EXCHANGE): the source is named in a
directory nobody else can write, so what is published is what was staged, and at every
instant the target's name leads to the old tree or to the new one. The old tree, now
`tree` in the staging directory (still locked), is then removed, or kept. Only then is the
new top directory given the old one's owner (never a foreign one in a sticky
world-writable parent): nobody else can touch the tree before it is published.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _fs, _naming, _permissions
from ._clean import STAGING_TREE
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
_SETID = stat.S_ISUID | stat.S_ISGID

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

        with AtomicDirectory("site") as d:       # d: pathlib.Path of the new tree
            (d / "index.html").write_text(html)

    The block fills a fresh directory (any way: `open()`, `shutil.copytree(...,
    dirs_exist_ok=True)`, other libraries, child processes of the same user). On Linux `d`
    is `/proc/<pid>/fd/<n>`: it leads to that directory through a descriptor this object
    holds, whatever happens to names in the parent. A clean exit (or `commit()`) makes
    every file and directory in it durable (unless `durable=False`), exchanges it with the
    target (renameat2 RENAME_EXCHANGE on Linux, renamex_np RENAME_SWAP on macOS; a plain
    rename when there is no target yet), fsyncs the parent, removes the old tree, or keeps
    it (`keep_old=True`; its path is then `old_path`), and gives the new top directory the
    old one's owner and group where it may. An exception (or `discard()`) removes the
    staging tree and leaves the target untouched.

    Options: `permissions` for the new top directory (None keeps the old one's mode, or
    gives a new one mkdir's default less the umask; an int; or a hook `(target,
    current_stat) -> int`), `logger`, `durable` (default True), `keep_old`, `fallback`
    (where no atomic exchange exists: False raises, True replaces in two renames with an
    instant where the target is missing; the old tree waits as `.<name>.<16 hex>.old`
    in between, which the sweep never removes).

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
        self._tfd = -1  # the new tree, `tree` in the staging directory until the exchange
        self._extra_fd = -1  # a target that appeared during the commit, locked
        self._name = ""  # the staging directory's name in the parent
        self._aside = ""  # fallback=True: the old tree's name in the parent once moved aside
        self._handed: Path | None = None  # what `open()` returned
        self._final_mode: int | None = None
        self._owner: tuple[int, int] | None = None  # given to the new tree after the exchange
        self._target_stat: os.stat_result | None = None
        self._parent_stat: os.stat_result | None = None
        #: The kept old tree (`keep_old=True`) after a commit that replaced one.
        self.old_path: Path | None = None

    def __repr__(self) -> str:
        return f"<AtomicDirectory {self.path!r} {self._state}>"

    @property
    def staging_path(self) -> Path | None:
        """The new tree's path (what `open()` returned) while the write is open, else None."""
        return self._handed if self._state == _OPEN else None

    # -- the protocol ------------------------------------------------------------------

    def open(self) -> Path:
        """Create the staging directory beside the target and return the new tree's path.

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
        assert self._handed is not None
        return self._handed

    def _open(self) -> None:
        self._dfd = dfd = os.open(self._dir or os.curdir, _DIR_FLAGS)
        self._parent_stat = parent = os.fstat(dfd)
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
                os.mkdir(name, 0o700, dir_fd=dfd)
            except FileExistsError:
                continue
            sfd = self._claim(name, parent)
            if sfd >= 0:
                self._sfd, self._name = sfd, name
                break
        else:
            raise FileExistsError(errno.EEXIST, "No free staging directory name", self.path)
        # The sweep's mark of a staging directory (with `tree` the only entry): exactly
        # 0700, whatever the umask.
        os.fchmod(sfd, 0o700)
        # The new tree: private while it fills, its mode is set at commit.
        os.mkdir(STAGING_TREE, 0o700, dir_fd=sfd)
        self._tfd = tfd = os.open(STAGING_TREE, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=sfd)
        self._handed = _bound_path(tfd, os.path.join(self._dir, name, STAGING_TREE))
        log = self._log
        if log.debug:
            from ._log import DEBUG, STARTED

            log.emit(DEBUG, STARTED, {
                "target_path": self.path,
                "temp_path": os.path.join(self._dir, name),
                "operation": "atomic_directory",
            })  # fmt: skip

    def _claim(self, name: str, parent: os.stat_result) -> int:
        """Open and lock the directory we just made as `name`: its descriptor, or -1 when
        it is no longer ours to use (then the caller takes a new name).

        Between our mkdir and our flock a sweep may find it unlocked: if the sweep holds
        the lock, the directory is the sweep's to remove; if the sweep removed it already,
        the name is gone or names something else. Either way we never work in it."""
        dfd = self._dfd
        try:
            sfd = os.open(name, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=dfd)
        except (FileNotFoundError, NotADirectoryError):
            return -1
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink put at the name
                return -1
            raise
        try:
            mine = os.fstat(sfd)
            theirs = mine.st_dev != parent.st_dev or mine.st_uid != _permissions.euid()
            if theirs or _fs.try_lock(sfd) is False:
                os.close(sfd)
                return -1
            # Locked: make sure the name still leads to it (not removed meanwhile).
            try:
                now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(sfd)
            raise
        if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(sfd)
            return -1
        return sfd

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
                self._set_mode()
                if self._durable:
                    self._step = "fsync"
                    from ._batch import sync_tree

                    sync_tree(self._tfd, walk=True)
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
            self._drop_old(exchanged)
            self._give_owner()
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

    def _set_mode(self) -> None:
        """The new top directory's final mode, before the exchange; while its owner or
        group is still the writer's and should become the old tree's, without set-id and
        group bits (the writer's group must not gain access, even for an instant)."""
        self._step = "chmod"
        tfd = self._tfd
        final = self._final_mode
        if final is None:
            final = 0o777 & ~_umask()  # what mkdir would have given
        self._final_mode = final
        mine = os.fstat(tfd)
        self._owner = self._owner_to_give(mine)
        if self._owner is not None:
            final &= ~(_SETID | 0o070)
        os.fchmod(tfd, final)

    def _owner_to_give(self, mine: os.stat_result) -> tuple[int, int] | None:
        """The old tree's (uid, gid) if the new tree should get them, else None.

        In a sticky world-writable parent (/tmp) the new tree stays the writer's when the
        old one was another user's, as `AtomicFile` does for a file: anyone may create
        the name there first, and must not be handed the writer's new tree."""
        old = self._target_stat
        if old is None or not hasattr(os, "fchown"):
            return None
        if (old.st_uid, old.st_gid) == (mine.st_uid, mine.st_gid):
            return None
        parent = self._parent_stat
        assert parent is not None
        sticky_shared = parent.st_mode & stat.S_ISVTX and parent.st_mode & stat.S_IWOTH
        if sticky_shared and old.st_uid != mine.st_uid:
            return None
        return old.st_uid, old.st_gid

    def _give_owner(self) -> None:
        """After the exchange (through the descriptor we hold): the old tree's owner and
        group, then the full final mode. Best effort: on a refusal the mode stays narrow."""
        owner = self._owner
        if owner is None or self._final_mode is None:
            return
        try:
            os.fchown(self._tfd, *owner)
            os.fchmod(self._tfd, self._final_mode)
        except OSError as exc:
            self._warn_owner(exc)

    def _lock_target(self) -> int:
        """Open and lock the current target: once exchanged it sits in the staging
        directory, and the lock keeps the sweep off it while we remove or keep it.
        -1: no target."""
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
        """Put the new tree at the target's name. True: a target was replaced (the old
        tree is now `tree` in the staging directory, or aside with `fallback=True`);
        False: there was no target."""
        sfd, dfd, base = self._sfd, self._dfd, self._base
        for _ in range(2):
            if old_fd >= 0:
                try:
                    _fs.rename_between(sfd, STAGING_TREE, dfd, base, _fs.RENAME_EXCHANGE)
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
                _rename_new(sfd, STAGING_TREE, dfd, base)
                return False
            except FileExistsError:
                old_fd = self._lock_target()  # one appeared meanwhile: exchange with it
                if old_fd < 0:
                    continue
                self._extra_fd = old_fd
        raise _error(errno.EAGAIN, self.path, "The target kept changing during the commit")

    def _two_renames(self) -> bool:
        """The documented fallback: old tree aside, new tree in; the target's name is
        missing in between. The aside name `.<name>.<hex>.old` is not temp-shaped: if the
        process dies between the two renames the sweep leaves the old tree there, to be
        renamed back by hand. An exception (KeyboardInterrupt included) at any point puts
        the old tree back unless the new one is already in."""
        dfd, base = self._dfd, self._base
        aside = _kept_name(base)
        try:
            _rename_noreplace_dir(dfd, base, dfd, aside)
            _rename_noreplace_dir(self._sfd, STAGING_TREE, dfd, base)
        except BaseException:
            try:
                # Decided by the file system, not by how far we got: the interrupt may
                # land right after a rename returned.
                _rename_noreplace_dir(dfd, aside, dfd, base)
            except OSError:
                pass  # never moved aside, or the new tree is in: nothing to undo
            raise
        self._aside = aside
        return True

    def _drop_old(self, exchanged: bool) -> None:
        """Keep the old tree (renamed to `.<name>.<hex>.old`) or remove it."""
        if self._aside:  # fallback=True: it is already under a kept name
            aside, self._aside = self._aside, ""
            if self._keep_old:
                self.old_path = self._path_of(aside)
            else:
                self._remove(self._dfd, aside)
        elif exchanged and self._keep_old:
            for _ in range(_ATTEMPTS):
                kept = _kept_name(self._base)
                try:
                    _rename_noreplace_dir(self._sfd, STAGING_TREE, self._dfd, kept)
                except FileExistsError:
                    continue
                except OSError as exc:
                    self._warn_cleanup(exc)
                    return
                self.old_path = self._path_of(kept)
                break
        self._remove_staging()

    def _path_of(self, name: str) -> Path:
        from pathlib import Path

        return Path(os.path.join(self._dir, name))

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
        """Empty the staging directory through its descriptor (nobody else can write in
        it), then remove its name if the name is still it."""
        name, self._name = self._name, ""
        sfd = self._sfd
        self._remove(sfd, STAGING_TREE)
        try:
            now = os.stat(name, dir_fd=self._dfd, follow_symlinks=False)
            mine = os.fstat(sfd)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                os.rmdir(name, dir_fd=self._dfd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._warn_cleanup(exc)  # a named leftover the sweep can remove

    def _remove(self, dir_fd: int, name: str) -> None:
        try:
            remove_tree(dir_fd, name)
        except NotADirectoryError:
            try:
                os.unlink(name, dir_fd=dir_fd)  # a symlink exchanged in: the link goes
            except OSError as exc:
                self._warn_cleanup(exc)
        except OSError as exc:
            self._warn_cleanup(exc)

    def _release(self) -> None:
        for attr in ("_tfd", "_sfd", "_dfd", "_extra_fd"):
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

    def _warn_owner(self, exc: OSError) -> None:
        from ._log import OWNER_KEPT_FAILED, WARNING, error_code

        log: EventLog = self._log
        if log.enabled(WARNING):
            log.emit(WARNING, OWNER_KEPT_FAILED, {
                "target_path": self.path,
                "error_code": error_code(exc),
                "operation": "atomic_directory",
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


def _bound_path(fd: int, by_name: str) -> Path:
    """A path to the directory open as `fd` that resolves through the descriptor, not
    through names another user may change: `/proc/<pid>/fd/<fd>` (child processes of the
    same user reach it too). Where /proc doesn't lead there (no /proc: macOS, BSD), the
    path by name."""
    from pathlib import Path

    proc = f"/proc/{os.getpid()}/fd/{fd}"
    try:
        seen, mine = os.stat(proc), os.fstat(fd)
    except OSError:
        return Path(by_name)
    if (seen.st_dev, seen.st_ino) == (mine.st_dev, mine.st_ino):
        return Path(proc)
    return Path(by_name)


def _kept_name(base: str) -> str:
    """`.<base>.<16 hex>.old`: apart from the temp shape, so the sweep never removes it."""
    return _naming.temp_name(base, _naming.token())[: -len(".tmp")] + ".old"


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


def _rename_new(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """The new tree to a name that had no target: FileExistsError if one appeared."""
    try:
        _rename_noreplace_dir(src_fd, src, dst_fd, dst)
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from exc
        raise


def _rename_noreplace_dir(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename the directory `src` (in `src_fd`) to `dst` (in `dst_fd`) only if `dst` does
    not exist (EEXIST).

    renameat2(RENAME_NOREPLACE) where there is one; else a check, then rename(2), which at
    worst replaces a directory that appeared empty in between (never a file: ENOTDIR,
    never a non-empty directory: ENOTEMPTY)."""
    try:
        _fs.rename_between(src_fd, src, dst_fd, dst, _fs.RENAME_NOREPLACE)
        return
    except OSError as exc:
        if exc.errno not in _fs.EXCHANGE_UNSUPPORTED - {errno.EXDEV}:
            raise
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
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
