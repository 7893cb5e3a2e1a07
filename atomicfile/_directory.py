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
instant the target's name leads to the old tree or to the new one. Right after, the new
top directory gets the old one's owner (never a foreign one in a sticky world-writable
parent) and its final mode: nobody else can touch the tree before it is published. The old
tree, now `tree` in the staging directory (still locked), is then removed, or kept.

rename(2) moves a directory to another parent only with write access to it (its `..`
entry changes), and both trees move between the staging directory and the parent: the new
top directory keeps its owner's write until it is published, and an old one of the
writer's that lacks it is lent it (given back when the old tree is kept). Another user's
old tree that this one can't write can't be replaced (EACCES, said plainly).

The lifecycle (states, misuse errors, `discard()`, `with`, garbage collection, the fork
guard) is `_txn.Writer`'s; the staging directory's life, the log hooks and `async with` are
`_staging.StagedWriter`'s (shared with `atomic_path`); this module supplies the open and
commit phases and the cleanup.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _fs, _naming, _permissions
from ._clean import STAGING_TREE
from ._errors import needs_wrapping
from ._staging import ATTEMPTS, StagedWriter, bound_path
from ._txn import COMMITTED, FAILED, OPEN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from _typeshed import StrOrBytesPath

    from ._log import AnyLogger, EventLog
    from ._permissions import Permissions

_SETID = stat.S_ISUID | stat.S_ISGID
_NO_EXCHANGE = (
    "This system or file system can't exchange two directories atomically "
    "(renameat2 RENAME_EXCHANGE); pass fallback=True to replace the directory in two "
    "renames, with an instant where it is missing"
)
_NOT_MOVABLE = (
    "The target directory is another user's and not writable by this one: replacing it "
    "moves it into the staging directory, which rename(2) allows only with write access "
    "to the directory (its '..' entry changes); replace it as its owner or as root"
)


class AtomicDirectory(StagedWriter):
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
    in between, which the sweep never removes), `make_parents` (create the parent's
    missing directories, as `os.makedirs`; durable with the tree).

    Raises `ValueError`/`TypeError` for bad arguments before any I/O, and
    `SessionFileError` (also the builtin subclass `open()` would raise:
    `NotADirectoryError` for a target that is a file, `PermissionError`...) on a file
    system error, with the target untouched.
    """

    _kind = "AtomicDirectory"
    _operation = "atomic directory"
    #: The block fills `d` any way it likes (open(), copytree, other libraries, child
    #: processes): its errors are its own and pass unchanged, not as the write's.
    _wraps_block_errors = False
    _log_operation = "atomic_directory"

    # Starting values shared by every instance (the base's convention).
    _dfd = -1  # the parent directory
    _tfd = -1  # the new tree, `tree` in the staging directory until the exchange
    _extra_fd = -1  # a target that appeared during the commit, locked
    _aside = ""  # fallback=True: the old tree's name in the parent once moved aside
    _final_mode: int | None = None
    _narrow = 0  # the final mode without group and set-id bits while the owner changes
    _owner: tuple[int, int] | None = None  # given to the new tree after the exchange
    _top_changed = False  # owner or mode changed after the exchange: fsync the top again
    _lent: tuple[int, int] | None = None  # (old tree's fd, its mode) while lent owner write
    _target_stat: os.stat_result | None = None
    _parent_stat: os.stat_result | None = None
    _step = "open"
    #: make_parents=True: a list, then the directories a new one was made in (`_parents`).
    _parents: list[int] | None = None

    def __init__(
        self,
        path: StrOrBytesPath,
        *,
        permissions: Permissions = None,
        logger: AnyLogger | None = None,
        durable: bool = True,
        keep_old: bool = False,
        fallback: bool = False,
        make_parents: bool = False,
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
        if make_parents:
            self._parents = []
        #: The kept old tree (`keep_old=True`) after a commit that replaced one.
        self.old_path: Path | None = None

    def __repr__(self) -> str:
        return f"<AtomicDirectory {self.path!r} {self._state}>"

    @property
    def staging_path(self) -> Path | None:
        """The new tree's path (what `open()` returned) while the write is open, else None."""
        return self._handed if self._state == OPEN else None

    # -- the protocol ------------------------------------------------------------------

    def open(self) -> Path:
        """Create the staging directory beside the target and return the new tree's path.

        Raises `SessionFileError` when the parent is missing or not writable, or the target
        exists and is not a directory, is a symlink, or is a mount point; nothing is
        created then.
        """
        self._begin()
        from ._log import EventLog, now

        self._log = EventLog(self._logger)
        self._start = now()
        try:
            self._open()
        except BaseException as exc:
            self._fail(exc)
            if needs_wrapping(exc):
                raise self._error(exc, self._step) from exc
            raise
        assert self._handed is not None
        return self._handed

    if TYPE_CHECKING:

        def __enter__(self) -> Path: ...

        async def __aenter__(self) -> Path: ...

    def _open(self) -> None:
        try:
            self._dfd = dfd = os.open(self._dir or os.curdir, _fs.DIR_FLAGS_FOLLOW)
        except FileNotFoundError:
            if self._parents is None:
                raise
            from ._parents import make_dirs

            dfd, self._parents = make_dirs(self._dir)
            self._dfd = dfd
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
        # The staging directory, with `tree` its only entry (the sweep's mark).
        sfd = self._make_staging(dfd, self._dir, self._base, parent)
        assert self._temp_path is not None
        # The new tree: private while it fills, its mode is set at commit.
        os.mkdir(STAGING_TREE, 0o700, dir_fd=sfd)
        self._tfd = tfd = os.open(STAGING_TREE, _fs.DIR_FLAGS, dir_fd=sfd)
        self._handed = bound_path(tfd, os.path.join(self._temp_path, STAGING_TREE))
        self._log_started()

    def _check_target(self, st: os.stat_result, parent: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise _fs.error(
                errno.ELOOP,
                self.path,
                "The target is a symbolic link: give the directory it points to",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise _fs.error(errno.ENOTDIR, self.path)
        if st.st_dev != parent.st_dev:
            raise _fs.error(
                errno.EBUSY, self.path, "The target is a mount point: it can't be replaced"
            )

    def commit(self) -> None:
        """Make the staging tree durable, exchange it with the target, fsync the parent,
        then remove (or keep) the old tree. On an error before the exchange the target is
        untouched and the staging tree removed; raises `SessionFileError`."""
        self._begin_commit()
        from ._log import now

        old_fd = -1
        published = False
        try:
            try:
                self._set_mode()
                if self._durable:
                    self._step = "fsync"
                    _fs.sync_tree(self._tfd, walk=True)
                self._step = "rename"
                exchanged_at = now()
                old_fd = self._lock_target()
                exchanged = self._swap(old_fd)
                published = True
            except BaseException as exc:
                if published:
                    raise
                self._fail(exc)
                if needs_wrapping(exc):
                    raise self._error(exc, self._step) from exc
                raise
            self._state = COMMITTED
            self._log_renamed(self._temp_path, exchanged_at, "exchange" if exchanged else "rename")
            # An error from here on comes after the new tree is in place: the old tree is
            # still dealt with, then the error is raised (the tree may lack its final mode,
            # or not survive a power loss).
            late: tuple[OSError, str] | None = None
            try:
                self._finish_top()
            except OSError as exc:
                late = (exc, "chmod")
            if self._durable:
                try:
                    if self._top_changed:
                        _fs.fsync_dir(self._tfd)
                    synced = _fs.fsync_dir(self._dfd)
                    if self._parents:
                        from ._parents import sync_parents

                        synced = sync_parents(self._parents) and synced
                    if not synced:
                        self._warn_dir_sync(self._dir)
                except OSError as exc:
                    late = late or (exc, "fsync directory")
            self._drop_old(exchanged)
            if late is not None:
                error, step = late
                self._state = FAILED
                self._log_failure(error)
                raise self._error(error, step) from error
        finally:
            if old_fd >= 0:
                os.close(old_fd)
            self._release()
        self._log_completed()

    def _set_mode(self) -> None:
        """The new top directory's mode before the exchange: its final mode, without group
        and set-id bits while its owner or group is still the writer's and should become
        the old tree's (the writer's group must not gain access, even for an instant), and
        with the owner's write: rename(2) moves a directory to another parent only with
        write access to it. Owner-only access for the writer, invisible to anyone else;
        `_finish_top` sets the final mode right after the exchange."""
        self._step = "chmod"
        final = self._final_mode
        if final is None:
            final = 0o777 & ~umask()  # what mkdir would have given
        self._final_mode = final
        self._owner = self._owner_to_give(os.fstat(self._tfd))
        self._narrow = final & ~(_SETID | 0o070) if self._owner is not None else final
        os.fchmod(self._tfd, self._narrow | stat.S_IWUSR)

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

    def _finish_top(self) -> None:
        """Right after the exchange, through the descriptor: the old tree's owner and
        group where the process may (best effort: on a refusal the mode stays without
        group and set-id bits), then the final mode, which takes back the owner's write
        if `_set_mode` only lent it for the move."""
        tfd, final = self._tfd, self._final_mode
        assert final is not None
        mode = final
        if self._owner is not None:
            try:
                os.fchown(tfd, *self._owner)
                self._top_changed = True
            except OSError as exc:
                self._warn_owner(exc)
                mode = self._narrow
        if mode != self._narrow | stat.S_IWUSR:
            os.fchmod(tfd, mode)
            self._top_changed = True

    def _lock_target(self) -> int:
        """Open and lock the current target: once exchanged it sits in the staging
        directory, and the lock keeps the sweep off it while we remove or keep it.
        -1: no target."""
        try:
            fd = os.open(self._base, _fs.DIR_FLAGS, dir_fd=self._dfd)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _fs.error(
                    errno.ELOOP, self.path, "The target became a symbolic link"
                ) from exc
            raise
        try:
            st = os.fstat(fd)
            self._check_target(st, os.fstat(self._dfd))
            _fs.try_lock(fd)
            self._lend_write(fd, st)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lend_write(self, fd: int, st: os.stat_result) -> None:
        """The exchange moves the old tree into the staging directory: rename(2) needs
        write access to it (its `..` changes). The writer's own old tree that lacks the
        owner's write gets it (owner-only: nobody else gains access) until it is removed;
        `_give_back` restores its mode when it stays. Another user's is left as it is
        (root needs nothing; anyone else gets `_NOT_MOVABLE` from `_swap`)."""
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid == _permissions.euid() and not mode & stat.S_IWUSR:
            os.fchmod(fd, mode | stat.S_IWUSR)
            self._lent = (fd, mode)

    def _give_back(self) -> None:
        """The old tree's own mode again, if `_lend_write` changed it (the fd is open)."""
        lent, self._lent = self._lent, None
        if lent is not None:
            os.fchmod(*lent)

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
                        self._give_back()  # it went away meanwhile: a plain rename
                        old_fd = -1
                        continue
                    if exc.errno == errno.EACCES and not _movable(os.fstat(old_fd)):
                        raise _fs.error(errno.EACCES, self.path, _NOT_MOVABLE) from exc
                    if exc.errno not in _fs.EXCHANGE_UNSUPPORTED:
                        raise
                    if not self._fallback:
                        raise _fs.error(
                            exc.errno or errno.ENOTSUP, self.path, _NO_EXCHANGE
                        ) from exc
                    return self._two_renames()
            try:
                _rename_new(sfd, STAGING_TREE, dfd, base)
                return False
            except FileExistsError:
                old_fd = self._lock_target()  # one appeared meanwhile: exchange with it
                if old_fd < 0:
                    continue
                self._extra_fd = old_fd
        raise _fs.error(errno.EAGAIN, self.path, "The target kept changing during the commit")

    def _two_renames(self) -> bool:
        """The documented fallback: old tree aside, new tree in; the target's name is
        missing in between. The aside name `.<name>.<hex>.old` is not temp-shaped: if the
        process dies between the two renames the sweep leaves the old tree there, to be
        renamed back by hand. An exception (KeyboardInterrupt included) at any point puts
        the old tree back unless the new one is already in."""
        dfd, base = self._dfd, self._base
        aside = _kept_name(base)
        try:
            _fs.rename_dir_noreplace(dfd, base, dfd, aside)
            _fs.rename_dir_noreplace(self._sfd, STAGING_TREE, dfd, base)
        except BaseException:
            try:
                # Decided by the file system, not by how far we got: the interrupt may
                # land right after a rename returned.
                _fs.rename_dir_noreplace(dfd, aside, dfd, base)
            except OSError:
                pass  # never moved aside, or the new tree is in: nothing to undo
            raise
        self._aside = aside
        return True

    def _drop_old(self, exchanged: bool) -> None:
        """Keep the old tree (renamed to `.<name>.<hex>.old`, its mode its own again) or
        remove it; then the staging directory. One warning for what is left, if anything."""
        if self._aside:  # fallback=True: it is already under a kept name
            aside, self._aside = self._aside, ""
            if self._keep_old:
                self._give_back_quietly(aside)
                self.old_path = self._path_of(aside)
            else:
                self._lent = None  # it goes
                self._log_removal(_remove(self._dfd, aside), os.path.join(self._dir, aside))
        elif exchanged and self._keep_old:
            for _ in range(ATTEMPTS):
                kept = _kept_name(self._base)
                try:
                    # Out of the staging directory to the parent: the lent write is
                    # still needed here, as for the exchange.
                    _fs.rename_dir_noreplace(self._sfd, STAGING_TREE, self._dfd, kept)
                except FileExistsError:
                    continue
                except OSError as exc:
                    # The old tree stays in the staging directory, which the sweep will
                    # remove once this writer lets go of it: say so.
                    self._give_back_quietly(None)
                    self._name = ""
                    self._log_removal(exc)
                    return
                self._give_back_quietly(kept)
                self.old_path = self._path_of(kept)
                break
        else:
            self._lent = None  # the old tree, if any, is removed with the staging directory
        self._log_removal(self._remove_staging())

    def _give_back_quietly(self, name: str | None) -> None:
        """`_give_back` after the commit: a failure is a warning naming the kept tree
        (`name` in the parent; None: still in the staging directory)."""
        try:
            self._give_back()
        except OSError as exc:
            self._log_removal(exc, os.path.join(self._dir, name) if name else None)

    def _path_of(self, name: str) -> Path:
        from pathlib import Path

        return Path(os.path.join(self._dir, name))

    # -- the base's hooks --------------------------------------------------------------

    def _cleanup(self) -> bool | OSError:
        """The old tree's mode back if it was lent write, the staging tree removed (still
        locked), every descriptor closed; returns what the removal did."""
        removal: bool | OSError = False
        try:
            self._give_back()
        except OSError as exc:
            removal = exc
        if self._name:
            removal = self._remove_staging()
        self._release()
        return removal

    def _forget(self) -> None:
        self._lent = None  # the old tree, if any, is the parent's
        super()._forget()

    def _parent_fd(self) -> int:
        return self._dfd

    def _empty_staging(self, sfd: int) -> bool | OSError:
        """`tree` (the new tree, or the old one after the exchange) is its only entry:
        removed, or the error (EXDEV: the tree holds a mount point, left with the
        directories that lead to it)."""
        return _remove(sfd, STAGING_TREE)

    def _release(self) -> None:
        for attr in ("_tfd", "_sfd", "_dfd", "_extra_fd"):
            fd = getattr(self, attr)
            setattr(self, attr, -1)
            _fs.close_quietly(fd)
        if self._parents:
            parents, self._parents = self._parents, []
            _fs.close_quietly(*parents)

    def _warn_owner(self, exc: OSError) -> None:
        from ._log import OWNER_KEPT_FAILED, WARNING, error_code

        log: EventLog = self._log
        if log.enabled(WARNING):
            log.emit(WARNING, OWNER_KEPT_FAILED, {
                "target_path": self.path,
                "error_code": error_code(exc),
                "operation": "atomic_directory",
            })  # fmt: skip


def _movable(st: os.stat_result) -> bool:
    """Whether this process may move the directory of `st` to another parent without its
    write bits: it is root (CAP_DAC_OVERRIDE) or the owner (who is lent write)."""
    euid = _permissions.euid()
    return euid == 0 or st.st_uid == euid


def _remove(dir_fd: int, name: str) -> bool | OSError:
    """Remove the tree `name` in `dir_fd` with the sweep's walk (`_clean.remove_tree`:
    relative to descriptors, never following a symlink nor entering a mount point, our
    read-only directories opened up first). True when gone (or already gone); else the
    error. Something other than a directory there (a symlink exchanged in) is unlinked."""
    from ._clean import remove_tree

    try:
        remove_tree(dir_fd, name)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError as exc:
            return exc
    except OSError as exc:
        return exc
    return True


def _kept_name(base: str) -> str:
    """`.<base>.<16 hex>.old`: apart from the temp shape, so the sweep never removes it."""
    return _naming.temp_name(base, _naming.token())[: -len(".tmp")] + ".old"


def umask() -> int:
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
        _fs.rename_dir_noreplace(src_fd, src, dst_fd, dst)
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from exc
        raise
