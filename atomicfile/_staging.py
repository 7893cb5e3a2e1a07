"""The private staging directory of `AtomicDirectory` and `atomic_path`, written once.

`.<name>.<16 hex>.tmp` beside the target (the same file system), mode 0700, the writer's,
locked (a flock on a descriptor of it) so the sweep (`_clean`) keeps it while the writer
lives. It is made under a fresh name, taken again under a new one when a sweep took it
between our mkdir and our flock (`claim`), reached through its descriptor (`bound_path`),
emptied through that descriptor and its name removed only while the name still leads to
it (`_clean.remove_tree`: never following a symlink); a forked child only closes its copy.

`StagedWriter` is what the two writers share: these steps and fields, the forked child's
`_forget`, the log hooks, and (`_txn.ThreadedAsync`) the async `with`. Each writer keeps
what differs: what it stages (a file, a tree), how it publishes it, what else it holds.
"""

from __future__ import annotations

import errno
import os

from . import _fs, _naming, _permissions
from ._txn import DISCARDED, ThreadedAsync

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from ._log import EventLog

#: Names tried for a staging directory (or a kept old tree) before giving up.
ATTEMPTS = 100


class StagedWriter(ThreadedAsync):
    """A write staged in a locked private directory beside its target."""

    #: The `operation` of this writer's started and failed events.
    _log_operation = "staged"

    # Starting values shared by every instance (the base's convention).
    _sfd = -1  # the staging directory, locked (its flock keeps the sweep away)
    _name = ""  # its name in the target's directory, until it is removed
    _temp_path: str | None = None  # its path, for the log and errors
    _handed: Path | None = None  # what `open()` returned
    _start = 0.0
    _log: EventLog  # set by `open()`

    # -- the writer's part ---------------------------------------------------------------

    def _parent_fd(self) -> int:
        """The descriptor of the directory the staging directory is in."""
        raise NotImplementedError

    def _release(self) -> None:
        """Close every descriptor the write holds (the staging one included)."""
        raise NotImplementedError

    def _empty_staging(self, sfd: int) -> bool | OSError:
        """Remove what is in the staging directory: True, or the error (returned or
        raised) that stops the removal. By default every entry."""
        return clear(sfd)

    def _cannot_create(self, exc: PermissionError, directory: str) -> OSError | None:
        """The error to raise instead of mkdir's EACCES, or None for that one."""
        return None

    # -- the staging directory -----------------------------------------------------------

    def _make_staging(self, dfd: int, directory: str, base: str, parent: os.stat_result) -> int:
        """Make and lock a new staging directory for `base` in `dfd` (`directory` by name,
        `parent` its stat), a new name each time a sweep took the last one; its
        descriptor (also `_sfd`; `_name` and `_temp_path` are set)."""
        for _ in range(ATTEMPTS):
            name = _naming.temp_name(base, _naming.token())
            try:
                os.mkdir(name, 0o700, dir_fd=dfd)
            except FileExistsError:
                continue
            except PermissionError as exc:
                better = self._cannot_create(exc, directory)
                if better is None:
                    raise
                raise better from None
            sfd = claim(dfd, name, parent)
            if sfd >= 0:
                self._sfd, self._name = sfd, name
                break
        else:
            raise FileExistsError(errno.EEXIST, "No free staging directory name", self.path)
        self._temp_path = os.path.join(directory, name)
        # The sweep's mark of a staging directory: exactly 0700, whatever the umask.
        os.fchmod(sfd, 0o700)
        return sfd

    def _remove_staging(self) -> bool | OSError:
        """Empty the staging directory through its descriptor (only this writer can write
        in it), then remove its name if the name still leads to it. True when done, else
        the error of the step that stopped it: the staging directory then stays (the
        sweep removes it once this writer is gone) and is what the one warning names."""
        name, self._name = self._name, ""
        sfd, dfd = self._sfd, self._parent_fd()
        try:
            emptied = self._empty_staging(sfd)
            if emptied is not True:
                return emptied
            now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            mine = os.fstat(sfd)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                os.rmdir(name, dir_fd=dfd)
        except FileNotFoundError:
            pass  # renamed away by whoever controls the directory: theirs to remove
        except OSError as exc:
            return exc
        return True

    # -- the base's hooks ----------------------------------------------------------------

    def _forget(self) -> None:
        """A forked child's copy of an open write: close its descriptors (the flock stays
        the parent's: it belongs to the open file description), remove nothing."""
        self._state = DISCARDED
        self._name = ""
        self._release()

    # -- the log ---------------------------------------------------------------------------

    def _log_started(self) -> None:
        log: EventLog = self._log
        if log.debug:
            from ._log import DEBUG, STARTED

            log.emit(DEBUG, STARTED, {
                "target_path": self.path,
                "temp_path": self._temp_path,
                "operation": self._log_operation,
            })  # fmt: skip

    def _log_renamed(self, temp_path: str | None, since: float, operation: str) -> None:
        log: EventLog = self._log
        if log.debug:
            from ._log import DEBUG, RENAMED, ms

            log.emit(DEBUG, RENAMED, {
                "temp_path": temp_path,
                "target_path": self.path,
                "duration": ms(since),
                "operation": operation,
            })  # fmt: skip

    def _log_completed(self) -> None:
        log: EventLog = self._log
        if log.debug:
            from ._log import COMPLETED, DEBUG, ms

            log.emit(DEBUG, COMPLETED, {
                "target_path": self.path,
                "total_duration": ms(self._start),
            })  # fmt: skip

    def _log_failure(self, exc: BaseException) -> None:
        from ._log import ERROR, FAILED, error_code

        log: EventLog = self._log
        if log.enabled(ERROR):
            log.emit(ERROR, FAILED, {
                "target_path": self.path,
                "temp_path": self._temp_path,
                "error_code": error_code(exc),
                "error_message": str(exc),
                "operation": self._log_operation,
            })  # fmt: skip

    def _log_discard(self, reason: BaseException | None) -> None:
        log: EventLog = self._log
        if log.debug:
            from ._log import DEBUG, DISCARDED

            fields = {
                "target_path": self.path,
                "temp_path": self._temp_path,
                "operation": "discard",
            }
            if reason is not None:
                fields["reason"] = type(reason).__name__
            log.emit(DEBUG, DISCARDED, fields)

    def _log_removal(self, removal: bool | OSError, path: str | None = None) -> None:
        """One event for one removal: DEBUG when done, else one WARNING naming what was
        left (`path`, by default the staging directory) and why (its errno)."""
        if removal is False:
            return
        from ._log import CLEANED, CLEANUP_FAILED, DEBUG, WARNING, error_code

        log: EventLog = self._log
        where = path or self._temp_path
        if removal is True:
            if log.debug:
                log.emit(DEBUG, CLEANED, {"temp_path": where, "operation": "cleanup"})
        elif log.enabled(WARNING):
            log.emit(WARNING, CLEANUP_FAILED, {
                "temp_path": where,
                "cleanup_error_code": error_code(removal),
            })  # fmt: skip

    def _warn_dir_sync(self, directory: str) -> None:
        from ._log import DIR_SYNC_SKIPPED, WARNING

        log: EventLog = self._log
        if log.enabled(WARNING):
            log.emit(WARNING, DIR_SYNC_SKIPPED, {
                "target_path": self.path,
                "directory": directory,
                "operation": "fsync_directory",
            })  # fmt: skip


def claim(dfd: int, name: str, parent: os.stat_result) -> int:
    """Open and lock the staging directory just made as `name` in `dfd`: its descriptor,
    or -1 when it is no longer ours to use (then the caller takes a new name).

    Between our mkdir and our flock a sweep may find it unlocked: if the sweep holds the
    lock, the directory is the sweep's to remove; if the sweep removed it already, the
    name is gone or names something else. Either way we never work in it."""
    try:
        sfd = os.open(name, _fs.DIR_FLAGS, dir_fd=dfd)
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


def clear(sfd: int) -> bool:
    """Remove every entry of the directory open as `sfd` (files unlinked, directories with
    the sweep's walk, `_clean.remove_tree`); raises the error that stops it."""
    from ._clean import remove_tree

    for entry in os.listdir(sfd):
        try:
            os.unlink(entry, dir_fd=sfd)
        except IsADirectoryError:
            remove_tree(sfd, entry)
        except OSError as exc:
            if exc.errno != errno.EPERM:  # EPERM: a directory, on some systems
                raise
            remove_tree(sfd, entry)
    return True


def bound_path(fd: int, by_name: str) -> Path:
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
