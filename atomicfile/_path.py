"""`atomic_path`: a path for tools that write a file themselves (sqlite3's backup, h5py,
`np.save`, a subprocess's `-o`), published over the target in one step.

The path is `<staging>/<target's name>`: the staging directory is `.<name>.<16 hex>.tmp`
beside the target (the same file system), mode 0700, the writer's, locked (a flock on a
descriptor of it) so the sweep keeps it while the writer lives. As for `AtomicDirectory`,
the path handed out resolves through that descriptor (`/proc/<pid>/fd/N/<name>` where
there is a /proc): renaming the staging directory away redirects nothing.

On commit the file is opened relative to the staging descriptor (O_NOFOLLOW, O_NONBLOCK)
and everything is decided from that descriptor: a regular file with one link, or a clear
error. It is then finished as `AtomicFile` finishes its temp (`LocalTemp.finish`: the
target's owner, access xattrs and mode; fsync) and renamed over the target between the two
directory descriptors. The staging directory (and whatever the tool left beside the file:
a journal) is removed after, and on every failure.

The lifecycle (states, misuse errors, `discard()`, `with`, garbage collection, the fork
guard) is `_txn.Writer`'s; the staging directory's life, the log hooks and `async with` are
`_staging.StagedWriter`'s (shared with `AtomicDirectory`); this module supplies the open and
commit phases and the cleanup.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _fs, _permissions
from ._errors import needs_wrapping
from ._staging import StagedWriter, bound_path
from ._txn import COMMITTED, FAILED, OPEN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from _typeshed import StrOrBytesPath

    from ._local import LocalTemp
    from ._log import AnyLogger
    from ._permissions import Permissions

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOTHING = "Nothing was written at the path atomic_path gave; the target is left as it was"


class AtomicPath(StagedWriter):
    """A path to write the target's new content to, with any tool; published over the
    target in one step on a clean exit. Made by `atomic_path()`: see there."""

    _kind = "atomic_path"
    _operation = "atomic path"
    #: The block runs other code (sqlite3, a subprocess): its errors pass unchanged.
    _wraps_block_errors = False
    _abandoned_hint = "use 'with atomic_path(...)'"
    _log_operation = "atomic_path"

    _temp: LocalTemp | None = None
    _fd = -1  # the file found at the path, at commit

    def __init__(
        self,
        file: StrOrBytesPath,
        *,
        permissions: Permissions = None,
        logger: AnyLogger | None = None,
        durable: bool = True,
        follow_symlinks: bool = True,
        make_parents: bool = False,
        overwrite: bool = True,
    ) -> None:
        if os.name == "nt":
            raise NotImplementedError(
                "atomic_path needs directory descriptors (POSIX); on Windows write to a "
                "path of your own beside the target and publish it with atomic_move"
            )
        given = os.fspath(file)
        text = given if isinstance(given, str) else os.fsdecode(given)
        if "://" in text:
            raise ValueError(
                f"atomic_path works on local files, not {text!r}: an object store has no "
                "path a tool can write to; write the object with AtomicFile"
            )
        if permissions is not None:
            _permissions.check(permissions, file=True)
        #: The target, as a `str` path.
        self.path: str = text
        self._permissions = permissions
        self._logger = logger
        self._durable = bool(durable)
        self._follow = bool(follow_symlinks)
        self._make_parents = bool(make_parents)
        self._overwrite = bool(overwrite)

    def __repr__(self) -> str:
        return f"<atomic_path {self.path!r} {self._state}>"

    @property
    def staging_path(self) -> Path | None:
        """The path handed out (what `open()` returned) while the write is open, else None."""
        return self._handed if self._state == OPEN else None

    # -- the protocol ------------------------------------------------------------------

    def open(self) -> Path:
        """Bind the target's directory, make the locked staging directory beside the target
        and return the path to write, which does not exist yet.

        Raises `SessionFileError` as `AtomicFile` would for the target (missing directory,
        a directory or FIFO at the target, permission denied...); nothing is created then.
        """
        self._begin()
        from ._local import LocalTemp
        from ._log import EventLog, now
        from ._modes import parse_mode

        self._log = log = EventLog(self._logger)
        self._start = now()
        mode = parse_mode("wb" if self._overwrite else "xb")
        self._temp = temp = LocalTemp(self.path, mode, self._follow, log)
        if self._make_parents:
            temp.parents = []
        try:
            problem = temp.inspect()
            if problem is not None:
                raise problem
            temp.plan(self._permissions)
            temp.step = "create temp"
            self._stage(temp)
        except BaseException as exc:
            self._fail(exc)
            if needs_wrapping(exc):
                raise self._error(exc, temp.step) from exc
            raise
        assert self._handed is not None
        return self._handed

    if TYPE_CHECKING:

        def __enter__(self) -> Path: ...

        async def __aenter__(self) -> Path: ...

    def _stage(self, temp: LocalTemp) -> None:
        dfd, directory, base = temp.directory()
        sfd = self._make_staging(dfd, directory, base, os.fstat(dfd))
        assert self._temp_path is not None
        self._handed = bound_path(sfd, self._temp_path) / base
        self._log_started()

    def commit(self) -> None:
        """Publish the file at the path: check it is a regular file, give it the target's
        permission policy, fsync it (durable), rename it over the target, fsync the
        directory; then remove the staging directory. Raises `SessionFileError`
        (`FileNotFoundError` when nothing was written there) with the target untouched."""
        self._begin_commit()
        temp = self._temp
        assert temp is not None
        from ._log import now

        published = False
        try:
            try:
                temp.step = "commit"  # finish() and publish_from() name their own steps
                self._fd = self._open_result(temp)
                temp.adopt(self._fd)
                temp.finish(self._durable)
                renamed_at = now()
                temp.publish_from(
                    self._sfd, temp.directory()[2], str(self._handed), not self._overwrite
                )
                published = True
            except BaseException as exc:
                if published:
                    raise
                self._fail(exc)
                if needs_wrapping(exc):
                    raise self._error(exc, temp.step) from exc
                raise
            self._state = COMMITTED
            self._log_renamed(str(self._handed), renamed_at, "rename")
            late: OSError | None = None
            if self._durable:
                try:
                    if not temp.sync_dir():
                        self._warn_dir_sync(temp.directory()[1])
                except OSError as exc:
                    late = exc  # in place, but may not survive a power loss: say so
            self._log_removal(self._remove_staging())
            if late is not None:
                self._state = FAILED
                self._log_failure(late)
                raise self._error(late, "fsync directory") from late
        finally:
            self._release()
        self._log_completed()

    def _open_result(self, temp: LocalTemp) -> int:
        """The file the tool left at the path, open, checked from its descriptor."""
        base = temp.directory()[2]
        shown = str(self._handed)
        try:
            fd = os.open(
                base, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=self._sfd
            )
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, _NOTHING, shown) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _fs.error(
                    errno.ELOOP,
                    shown,
                    "A symbolic link was left at the path: atomic_path "
                    "publishes a regular file, never a link; the target is left as it was",
                ) from None
            if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket
                raise _not_regular(shown) from None
            raise
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise _fs.error(
                    errno.EISDIR,
                    shown,
                    "A directory was left at the path: atomic_path "
                    "publishes a regular file; the target is left as it was",
                )
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(shown)
            if st.st_nlink != 1:
                raise _fs.error(
                    errno.EMLINK,
                    shown,
                    "The file at the path has other hard links: "
                    "publishing it would change their mode and owner too; write a file of "
                    "its own there (copy, not link); the target is left as it was",
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- the base's hooks --------------------------------------------------------------

    def _cleanup(self) -> bool | OSError:
        removal = self._remove_staging() if self._name else False
        self._release()
        return removal

    def _parent_fd(self) -> int:
        temp = self._temp
        assert temp is not None
        return temp.directory()[0]

    def _cannot_create(self, exc: PermissionError, directory: str) -> OSError:
        """EACCES making the staging directory: name the directory and the target."""
        where = directory or os.curdir
        return PermissionError(
            exc.errno,
            f"Permission denied: can't create the staging directory in {where!r}, where "
            f"{self.path!r} is replaced (the directory must be writable)",
            self.path,
        )

    def _release(self) -> None:
        fd, sfd = self._fd, self._sfd
        self._fd = self._sfd = -1
        temp = self._temp
        if temp is not None:
            temp.release()  # the directory (and the adopted fd, which it then owns)
            if temp.temp_stat is not None:
                fd = -1
        _fs.close_quietly(fd, sfd)


def atomic_path(
    file: StrOrBytesPath,
    *,
    permissions: Permissions = None,
    logger: AnyLogger | None = None,
    durable: bool = True,
    follow_symlinks: bool = True,
    make_parents: bool = False,
    overwrite: bool = True,
) -> AtomicPath:
    """A path for a tool that writes the target's new content itself; on a clean exit the
    file it wrote there replaces the target in one step.

        with atomic_path("app.db") as tmp:          # tmp: pathlib.Path, named "app.db"
            dst = sqlite3.connect(str(tmp))
            src.backup(dst)
            dst.close()

    `tmp` does not exist yet; its name is the target's (a format chosen by the extension
    is right), in a private 0700 staging directory beside the target, locked so that
    `clean_stale_temps` keeps it while this process lives. On a clean exit the file there
    is fsynced (unless `durable=False`), given the target's permissions, owner and access
    xattrs as `AtomicFile` gives them (`permissions=`: None keeps an existing target's, or
    0o644 less the umask for a new one; an int; a hook), renamed over the target, and the
    directory fsynced; the staging directory is removed. `overwrite=False`: only if the
    target does not exist, as open mode 'x' (checked at the start, and atomically by the
    rename: `FileExistsError`). `make_parents=True` creates missing directories. `async
    with` works too.

    Raises `SessionFileError`: `FileNotFoundError` when nothing was written at the path,
    `IsADirectoryError`/`OSError` (ELOOP, EINVAL, EMLINK) when what is there is not a
    regular file of its own; in every failure, and on an exception in the block (which
    propagates unchanged), the target is left as it was and the staging directory removed.
    `ValueError`/`TypeError` for bad options before any I/O (an object store's URL: use
    `AtomicFile`).
    """
    return AtomicPath(
        file,
        permissions=permissions,
        logger=logger,
        durable=durable,
        follow_symlinks=follow_symlinks,
        make_parents=make_parents,
        overwrite=overwrite,
    )


def _not_regular(shown: str) -> OSError:
    return _fs.error(
        errno.EINVAL,
        shown,
        "Not a regular file at the path (a FIFO, socket or device): atomic_path publishes "
        "a regular file; the target is left as it was",
    )
