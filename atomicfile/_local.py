"""The local file system's side of an atomic write on POSIX: a temp file beside the target,
published by a rename. (Windows has its own, `_local_nt`; `_store` picks one at import.)

The target's directory is opened once, at the start, and every later step (create, copy,
rename, unlink, the directory fsync) works relative to that descriptor: a parent directory
swapped for a symlink mid-write redirects nothing, and a working directory deeper than
PATH_MAX works as it does for `open()`. Links are resolved here, one at a time, and checked
against what the kernel resolves (which applies `fs.protected_symlinks`).

The protocol's state machine, its log events and its error wrapping live in `_core`; this
module only does the file-system work of one write (see `_store.Temp`).
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from . import _fs, _naming, _permissions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

    from ._batch import SharedDirs
    from ._log import EventLog
    from ._modes import Mode
    from ._permissions import Permissions

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in for the target must not hang us
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_PATH = getattr(os, "O_PATH", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
#: Attempts at a free temp name, as tempfile's TMP_MAX: a directory full of guesses can't
#: stall a writer for long, and nobody can predict the names (see `_naming.token`).
_ATTEMPTS = 10000
#: A fresh temp locked by someone else was opened by another user between our create and
#: our lock: try this many fresh names, then go on without the lock rather than block.
_LOCK_ATTEMPTS = 3
_MAXSYMLINKS = 40  # Linux's limit on links followed in one lookup (ELOOP past it)
_SEPS = os.sep + (os.altsep or "")
_SEP_ENDINGS = tuple(_SEPS)
_HAS_XATTRS = hasattr(os, "listxattr")

if sys.platform.startswith("linux"):

    def _closes_to_open(dev: int) -> bool:
        """Whether the file system may need the temp closed before the rename (NFS, SMB and
        FUSE send the data at close): Linux gives every file system without a block device
        of its own device major 0 (tmpfs, btrfs and overlayfs too)."""
        return not os.major(dev)

else:

    def _closes_to_open(dev: int) -> bool:
        """Elsewhere the device number is not known to tell a network file system apart:
        every file system may."""
        return True


# String operations in place of os.path's on the write path: a fraction of the cost. No
# normalisation either: "a/../b" must stay what the kernel resolves, which differs from the
# lexical "b" when `a` is a symlink.
def split(path: str) -> tuple[str, str]:
    head, sep, tail = path.rpartition("/")
    return head or sep, tail


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory and directory[-1] != "/" else directory + name


#: Directories already reported as lacking locks (log once per directory).
_unlocked_dirs: set[str] = set()


def _error(code: int, path: str, message: str | None = None) -> OSError:
    return OSError(code, message or os.strerror(code), path)


class LocalTemp:
    """One write's temp file in the target's directory, and the steps that publish it."""

    __slots__ = (
        "_base",
        "_created",
        "_dfd",
        "_dir",
        "_dir_fsync",
        "_dir_stat",
        "_dirs",
        "_fd",
        "_keep",
        "_log",
        "_mode",
        "_own_dfd",
        "_src",
        "_xattrs",
        "final_mode",
        "follow",
        "parents",
        "path",
        "step",
        "target_stat",
        "temp_name",
        "temp_path",
        "temp_stat",
    )  # fmt: skip

    def __init__(
        self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: SharedDirs | None = None
    ) -> None:
        self.path = path
        self._mode = mode
        self.follow = follow
        self._log = log
        #: The protocol step under way, for the error's `step`.
        self.step = "open"
        self._dir, self._base = split(path)
        #: The target's directory, open: every name below is relative to it (-1: not yet).
        self._dfd = -1
        self._dir_fsync = True
        self._dir_stat: os.stat_result | None = None
        #: Directory descriptors shared by the writes of one batch (the batch closes them),
        #: one per directory, found by the directory's identity.
        self._dirs = dirs
        self._own_dfd = True
        self._fd = -1
        self._src = -1
        self._created = False
        self._keep = True
        self._xattrs: dict[str, bytes] | None = None
        self.target_stat: os.stat_result | None = None
        self.temp_stat: os.stat_result | None = None
        self.final_mode: int | None = None
        self.temp_name = ""
        self.temp_path: str | None = None
        #: None, or make_parents=True: a list (`[]` to start) that creates the directory
        #: where it is missing and then holds the directories a new directory was made in,
        #: deepest first (fsynced after the rename when durable; see `_parents`).
        self.parents: list[int] | None = None

    # -- names -------------------------------------------------------------------------

    def _new_name(self, name_max: int = _naming.NAME_MAX) -> None:
        self.temp_name = name = _naming.temp_name(self._base, _naming.token(), name_max)
        self.temp_path = join(self._dir, name)

    # -- open --------------------------------------------------------------------------

    def inspect(self) -> OSError | None:
        """Bind the target's directory and find the file to replace; return the error
        `open()` would raise instead (the caller logs the start of the write first), but
        for a permission refusal, which `create()` or `plan()` raise."""
        path = self.path
        problem: OSError | None
        if not path:
            problem = _error(errno.ENOENT, path)
        elif path.endswith(_SEP_ENDINGS) and path.rstrip(_SEPS):
            # "name/" must be a directory: open() gives EISDIR for every mode that may
            # create, and for 'r+' whatever resolving the path gives (ENOENT, ENOTDIR).
            problem = _error(errno.EISDIR, path)
            if self._mode.kind == "r":
                try:
                    os.stat(path)
                except OSError as err:
                    problem = err
        else:
            try:
                if self._dfd < 0:  # else bound already, by `lock_target()`
                    try:
                        self._bind(self._dir)
                    except OSError as err:
                        self._bind_missing(err)
                st = self._lstat()
                if st is not None and stat.S_ISLNK(st.st_mode):
                    st = self._through_link(st)
                problem = self._check_target(st)
            except OSError as err:
                problem = err
        self._new_name()
        return problem

    def lock_target(self) -> tuple[int, str]:
        """Bind the target's directory now, before `inspect()`, and return it with the
        target's name in it: what the lock of `lock=True` is taken relative to (`_lock`).
        `inspect()` then works in that same directory: the name is resolved once."""
        if self._dfd < 0:
            try:
                self._bind(self._dir)
            except OSError as err:
                self._bind_missing(err)
        return self._dfd, self._base

    def _bind_missing(self, err: OSError) -> None:
        """Binding the target's directory failed with `err`: with `make_parents` and a
        missing directory, create it and bind that; else the error as `open()` gives it
        (naming the file it was asked for, not its directory). Only this failure path pays
        for make_parents."""
        if err.errno == errno.ENOENT and self.parents is not None:
            self._bind_made()  # its error names the component in the way
            return
        raise OSError(err.errno, err.strerror, self.path) from None

    def _bind_made(self) -> None:
        """make_parents=True and the directory is missing: create it (`_parents`), and bind
        the descriptor that walk ends with (the path is not resolved again)."""
        from ._parents import make_dirs

        fd, self.parents = make_dirs(self._dir or ".")
        dirs = self._dirs
        self._own_dfd = dirs is None
        self._dir_stat = None
        if dirs is None:
            self._dfd, self._dir_fsync = fd, True
        else:
            self._dfd, self._dir_fsync, self._dir_stat = dirs.add(fd, True)

    def _bind(self, directory: str) -> None:
        """Open `directory` as the one all later names are relative to."""
        self._dir_stat = None
        fd = self._dfd
        where = directory or "."
        dirs = self._dirs
        if fd < 0 and dirs is not None:
            shared = dirs.find(where)
            if shared is not None:
                self._dfd, self._dir_fsync, self._dir_stat = shared
                self._own_dfd = False
                return
        at = fd if fd >= 0 else None  # a link's relative directory: from the current one
        try:
            new = os.open(where, _DIR_FLAGS, dir_fd=at)
            dir_fsync = True
        except PermissionError:
            if not _O_PATH:
                raise
            # A directory we may write but not read (0o300): O_PATH still anchors the
            # names; only its fsync is impossible (reported, as before).
            new = os.open(where, _O_PATH | _O_DIRECTORY | _O_CLOEXEC, dir_fd=at)
            dir_fsync = False
        if fd >= 0 and self._own_dfd:
            os.close(fd)
        self._own_dfd = fd >= 0 or dirs is None
        if self._own_dfd:
            self._dfd, self._dir_fsync = new, dir_fsync
        else:
            # The batch keeps one descriptor per directory: this one, or the one another
            # write opened meanwhile (then `new` is closed).
            assert dirs is not None
            self._dfd, self._dir_fsync, self._dir_stat = dirs.add(new, dir_fsync)

    def target_key(self) -> tuple[int, int, str]:
        """The target as the write resolved it: its directory's (st_dev, st_ino) and its
        name there (what tells two spellings of one file apart from two files)."""
        d = self._dir_stat
        if d is None:
            self._dir_stat = d = os.fstat(self._dfd)
        return d.st_dev, d.st_ino, self._base

    def target_exists(self) -> bool:
        """Whether something is at the target's name now (an 'x' write's last check)."""
        return self._lstat() is not None

    def _lstat(self) -> os.stat_result | None:
        try:
            return os.stat(self._base, dir_fd=self._dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _through_link(self, link: os.stat_result) -> os.stat_result | None:
        """The target is a symlink: replace the link itself, or what it points to."""
        kind = self._mode.kind
        if kind == "x":
            # O_EXCL semantics: a symlink, even a dangling one, is an existing file.
            raise _error(errno.EEXIST, self.path)
        if not self.follow:
            if kind != "w":
                # 'a'/'r+' would read through the link: what O_NOFOLLOW gives open().
                raise _error(
                    errno.ELOOP, self.path, _NO_FOLLOW_READ.format("a" if kind == "a" else "r+")
                )
            return None  # the link itself is replaced; it has no mode worth keeping
        # What the kernel resolves, with its protections (fs.protected_symlinks: EACCES, as
        # open() gets), is the file we must end up replacing.
        try:
            kernel: os.stat_result | None = os.stat(self._base, dir_fd=self._dfd)
        except FileNotFoundError:
            kernel = None  # dangling: open() would create the file it points to
        if kernel is not None and not stat.S_ISREG(kernel.st_mode):
            return kernel  # a directory, FIFO, device: _check_target says what open() would
        st: os.stat_result | None = link
        for _ in range(_MAXSYMLINKS):
            if st is None or not stat.S_ISLNK(st.st_mode):
                break
            dest = os.readlink(self._base, dir_fd=self._dfd)
            head, base = split(dest)
            if not base:
                raise _error(errno.EISDIR, self.path)
            if head:
                self._bind(head)  # an absolute `head` ignores the current directory fd
                self._dir = head if dest.startswith(os.sep) else join(self._dir, head)
            self._base = base
            st = self._lstat()
        else:
            raise _error(errno.ELOOP, self.path)
        same = (
            kernel.st_dev == st.st_dev and kernel.st_ino == st.st_ino
            if kernel is not None and st is not None
            else kernel is None and st is None
        )
        if not same:
            # /proc/self/fd/N of a deleted file or a memfd names no path that can be
            # replaced; or the link changed while we followed it.
            raise _error(
                errno.EINVAL,
                self.path,
                "The target's link does not lead to a path that can be replaced atomically",
            )
        return st

    def _check_target(self, st: os.stat_result | None) -> OSError | None:
        problem = kind_refusal(self._mode.kind, st, self.path)
        if problem is None and st is not None:
            # Whether this writer may write the file is decided once it is known who the
            # writer is to the file system (`_refusal`): by the temp's owner in `create()`.
            self.target_stat = st
        return problem

    def _refusal(self, uid: int) -> OSError | None:
        """The EACCES `open()` would give for the target, `uid` being who the file system
        takes the writer for (the owner of the temp it just created, or the euid)."""
        st = self.target_stat
        if st is None or (st.st_uid == uid and st.st_mode & stat.S_IWUSR):
            # The writer's own, owner-writable file (the usual rewrite): the kernel checks
            # only the owner bits here, and protected_regular never refuses an owner.
            return None
        euid = _permissions.euid()
        if not _permissions.may_write(st, self._base, self._dfd, euid):
            return _error(errno.EACCES, self.path)
        if st.st_uid != euid and self._mode.kind != "r" and self._protected_regular(st):
            # fs.protected_regular: open(O_CREAT) of someone else's file in a sticky
            # world-writable directory is refused, even for root.
            return _error(errno.EACCES, self.path)
        return None

    def _sticky_dir(self) -> os.stat_result | None:
        """The bound directory's stat if it is sticky. Read once per write, from the
        descriptor (it is asked at inspect and again at finish, for a foreign owner only)."""
        d = self._dir_stat
        if d is None:
            self._dir_stat = d = os.fstat(self._dfd)
        return d if d.st_mode & stat.S_ISVTX else None

    def _protected_regular(self, st: os.stat_result) -> bool:
        d = self._sticky_dir()
        if d is None or st.st_uid == d.st_uid:
            return False
        level = _permissions.protected_regular()
        return bool(
            (level >= 1 and d.st_mode & stat.S_IWOTH) or (level >= 2 and d.st_mode & stat.S_IWGRP)
        )

    def create(self, permissions: Permissions) -> None:
        """Create the temp, locked, with a mode no wider than the final one; for 'a' and
        'r+' it starts as a copy of the target."""
        target = self.target_stat
        copy = target is not None and self._mode.needs_copy
        # Whether open() would refuse the target is asked now, with geteuid, when anything
        # could happen before the temp exists (a copy, a permissions hook) or the file is
        # read-only to its owner; else once the temp's owner says who the writer is.
        early = target is not None and (
            copy or permissions is not None or not target.st_mode & stat.S_IWUSR
        )
        if early:
            refusal = self._refusal(_permissions.euid())
            if refusal is not None:
                raise refusal
        if copy:
            self.step = "open"
            self._open_source()
            target = self.target_stat  # the source's own stat now
        self.step = "permissions"
        self._keep = keep = permissions is None
        if keep:
            # The usual case, inline (what `_permissions.final_mode` gives for None): the
            # target's path string is built only for a hook, which receives it.
            self.final_mode = None if target is None else stat.S_IMODE(target.st_mode)
        else:
            self.final_mode = _permissions.final_mode(
                permissions, join(self._dir, self._base), target, file=True
            )
        if target is not None and _HAS_XATTRS:
            self._read_xattrs()
        self.step = "create temp"
        # O_APPEND now unless a copy comes first (copy_file_range refuses an appending fd).
        try:
            self._create_temp(append=self._mode.kind == "a" and not copy)
        except OSError:
            if target is not None and not early:
                refusal = self._refusal(_permissions.euid())
                if refusal is not None:  # the error open() gives comes first, as it did
                    self.step = "open"
                    raise refusal from None
            raise
        if target is not None and not early:
            # The temp's owner is the writer's file-system uid, had without a geteuid call.
            # A refusal leaves the temp to the caller's cleanup, as any error does.
            assert self.temp_stat is not None
            refusal = self._refusal(self.temp_stat.st_uid)
            if refusal is not None:
                self.step = "open"
                raise refusal
        if copy:
            self.step = "copy"
            self._copy_in()
        self.step = "open"

    def _open_source(self) -> None:
        """Open the file the copy reads, once, and decide from that descriptor."""
        assert self.target_stat is not None
        self._src = src = os.open(
            self._base,
            os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC,
            dir_fd=self._dfd,
        )
        st = os.fstat(src)
        old = self.target_stat
        if (st.st_dev, st.st_ino) != (old.st_dev, old.st_ino):
            raise _error(errno.EAGAIN, self.path, "The target was replaced while being opened")
        self.target_stat = st  # mode and owner from the file we read

    def _create_temp(self, append: bool) -> None:
        mode = self._mode
        flags = os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        flags |= os.O_RDWR if mode.plus or mode.kind == "r" else os.O_WRONLY
        if append:
            flags |= os.O_APPEND
        create_mode = _permissions.create_mode(self.final_mode)
        name_max = _naming.NAME_MAX
        dfd = self._dfd
        locked_out = 0
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.temp_name, flags, create_mode, dir_fd=dfd)
                self._fd, self._created = fd, True
            except FileExistsError:
                self._new_name(name_max)
                continue
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EPERM):
                    raise self._cannot_create(err) from None
                if err.errno != errno.ENAMETOOLONG or name_max != _naming.NAME_MAX:
                    err.filename = self.temp_path  # the full path, not the name at the fd
                    raise
                # The file system's names are shorter than Linux's usual 255 bytes.
                name_max = os.fpathconf(dfd, "PC_NAME_MAX")
                self._new_name(name_max)
                continue
            except BaseException:
                # A signal handler's exception (KeyboardInterrupt) just after open()
                # returned: the file is there and ours, so the cleanup must remove the name.
                self._created = True
                raise
            locked = _fs.try_lock(fd)
            if locked is False and locked_out < _LOCK_ATTEMPTS:
                # Someone opened our fresh temp and locked it before we could: never wait
                # on them. Leave that name, take another.
                locked_out += 1
                self.remove()
                self._close_fd()
                self._new_name(name_max)
                continue
            if locked is None:
                self._note_unlocked()
            self.temp_stat = st = os.fstat(fd)
            if st.st_nlink:
                return
            # A stale-temp sweep removed the name between our create and our lock.
            self._created = False
            self._close_fd()
            self._new_name(name_max)
        raise FileExistsError(errno.EEXIST, "No free temp file name", self.temp_path)

    def _cannot_create(self, err: OSError) -> OSError:
        """EACCES/EPERM creating the temp: the bare temp name says nothing to the user;
        name the directory it was to be made in, and the target."""
        where = self._dir or "."
        return PermissionError(
            err.errno,
            f"{err.strerror}: can't create a temp file in the directory {where!r} to replace "
            f"{self.path!r} (the new content is written beside the target, then renamed over "
            "it: the directory must be writable)",
            where,
        )

    def _note_unlocked(self) -> None:
        directory = self._dir
        if directory not in _unlocked_dirs:
            _unlocked_dirs.add(directory)
            log = self._log
            if log.debug:
                from ._log import DEBUG, UNLOCKED

                log.emit(DEBUG, UNLOCKED, {
                    "temp_path": self.temp_path,
                    "directory": directory,
                    "operation": "lock",
                })  # fmt: skip

    def _copy_in(self) -> None:
        """'a' continues at the end of the copy, 'r+' starts at 0."""
        fd, src = self._fd, self._src
        if src >= 0:
            try:
                _fs.copy_contents(src, fd)
            finally:
                self._src = -1
                os.close(src)
        if self._mode.kind == "r":
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            _fs.set_append(fd)

    def _read_xattrs(self) -> None:
        """The target's extended attributes that carry access and identity, kept for the
        new file (POSIX ACLs, the SELinux label, user.*). From the copy's source descriptor
        when there is one; else by name relative to the directory fd."""
        ref: int | str
        follow = True
        if self._src >= 0:
            ref = self._src
        else:
            ref, follow = self._proc_ref(), False
        try:
            names = os.listxattr(ref, follow_symlinks=follow)
        except OSError:
            return  # no xattrs here (ENOTSUP) or no /proc: nothing to keep
        kept = {}
        for name in names:
            if name in _KEPT_XATTRS or name.startswith("user."):
                try:
                    kept[name] = os.getxattr(ref, name, follow_symlinks=follow)
                except OSError:
                    pass
        self._xattrs = kept

    def _proc_ref(self) -> str:
        """The target as a path that the xattr calls resolve from the directory fd."""
        return f"/proc/self/fd/{self._dfd}/{self._base}"

    def open_file(
        self, mode: str, buffering: int, encoding: str | None, errors: str | None,
        newline: str | None, name: str | bytes,
    ) -> IO[Any]:  # fmt: skip
        """The temp's file object, exactly as `open()` builds it, owning no fd (we keep it
        past a user's `close()` to chmod, fsync and unlink). Its `name` is `name`."""
        assert self.temp_stat is not None
        return file_object(
            self._fd, self.temp_stat, mode, buffering, encoding, errors, newline, name
        )

    # -- commit ------------------------------------------------------------------------

    def finish(self, durable: bool) -> None:
        """Give the temp the target's owner, access xattrs and final mode, then fsync."""
        self.step = "chmod"
        fd = self._fd
        final = self.final_mode
        target = self.target_stat
        temp = self.temp_stat
        assert temp is not None
        if target is not None and (
            self._xattrs or target.st_uid != temp.st_uid or target.st_gid != temp.st_gid
        ):
            # Same owner and group, no xattrs to copy (the usual rewrite): `_keep_identity`
            # would leave `final` as it is, so it is called only when there is work.
            final = self._keep_identity(fd, target, temp, final)
        # A new file's default mode was set exactly by the kernel at create (0o644 less the
        # umask): nothing to do then. Set-id bits never come from the create.
        if final is not None and stat.S_IMODE(temp.st_mode) != final:
            os.fchmod(fd, final)
        if durable:
            self.step = "fsync"
            _fs.fsync_file(fd)

    def _keep_identity(
        self, fd: int, target: os.stat_result, temp: os.stat_result, final: int | None
    ) -> int | None:
        """Owner, group and access xattrs of the old file; narrow `final` where they can't
        be kept, so that nobody gains access they didn't have."""
        uid, gid = temp.st_uid, temp.st_gid
        want_uid, want_gid = target.st_uid, target.st_gid
        if want_uid != uid and self._sticky_world_writable():
            # Never hand new content to another user in a shared sticky directory (the
            # kernel's fs.protected_regular reasoning): the file becomes the writer's.
            want_uid, want_gid = uid, gid
        if (uid, gid) != (want_uid, want_gid):
            try:
                os.fchown(fd, want_uid, want_gid)
                uid, gid = want_uid, want_gid
            except OSError as exc:
                # A non-root writer can't give a file away, but may keep its group.
                if want_gid != gid:
                    try:
                        os.fchown(fd, -1, want_gid)
                        gid = want_gid
                    except OSError:
                        pass
                self._warn(_OWNER, exc)
        acl_kept = self._write_xattrs(fd) if self._xattrs else None
        if not self._keep or final is None:
            return final
        if uid != target.st_uid:
            final &= ~stat.S_ISUID  # set-uid to a new owner: never
        if gid != target.st_gid:
            # A group that could not read or write the file must not gain it: no group
            # bits (and no set-gid) for the group it now has.
            final &= ~(stat.S_ISGID | 0o070)
        if acl_kept is False:
            final = _narrow_for_acl(final, (self._xattrs or {}).get(_ACL_ACCESS))
        return final

    def _sticky_world_writable(self) -> bool:
        d = self._sticky_dir()
        return d is not None and bool(d.st_mode & stat.S_IWOTH)

    def _write_xattrs(self, fd: int) -> bool | None:
        """Copy the kept xattrs onto the temp. True/False: whether the old file's access
        ACL is now the temp's; None when it had none."""
        xattrs = self._xattrs
        acl = None
        if xattrs:
            for name, value in xattrs.items():
                try:
                    os.setxattr(fd, name, value)
                    if name == _ACL_ACCESS:
                        acl = True
                except OSError as exc:
                    if name == _ACL_ACCESS:
                        acl = False
                        self._warn(_ACL, exc)
        return acl

    def _warn(self, what: str, exc: OSError) -> None:
        from . import _log

        log = self._log
        message = _log.OWNER_KEPT_FAILED if what == _OWNER else _log.ACL_KEPT_FAILED
        if log.enabled(_log.WARNING):
            log.emit(_log.WARNING, message, {
                "target_path": self.path,
                "temp_path": self.temp_path,
                "error_code": _log.error_code(exc),
                "operation": "chown" if what == _OWNER else "setxattr",
            })  # fmt: skip

    def publish(self, durable: bool, exclusive: bool) -> bool:
        """Rename the temp over the target ('x': only if there is none). Returns whether
        the temp name is still there to remove (the no-clobber link fallback leaves it)."""
        self.step = "close"
        if not durable and _closes_to_open(self.temp_stat.st_dev):  # type: ignore[union-attr]
            # Without fsync, close() is where NFS, SMB or FUSE send the data (close-to-open),
            # so it must precede the rename; a duplicate keeps the sweep lock across it. A
            # file system on a block device (ext4, xfs on a disk) has one host and no such
            # step.
            fd = self._fd
            self._fd = os.dup(fd)
            _fs.close_quietly(fd)
        self.step = "rename"
        dfd, src, dst = self._dfd, self.temp_name, self._base
        try:
            if exclusive:
                leftover = _fs.rename_noreplace(src, dst, dfd)
            else:
                os.replace(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd)
                leftover = False
        except OSError as err:
            # The error names what the user can find: full paths, not the bare names
            # given relative to the directory fd.
            err.filename, err.filename2 = self.temp_path, join(self._dir, self._base)
            if err.errno == errno.EBUSY:
                self._explain_busy(err)
            raise
        self._created = leftover
        return leftover

    # -- atomic_path: a file another program wrote, published with this write's policy ----

    def directory(self) -> tuple[int, str, str]:
        """After `inspect()`: the bound directory's descriptor, its path and the target's
        name in it (where `atomic_path` puts its staging directory)."""
        return self._dfd, self._dir, self._base

    def plan(self, permissions: Permissions) -> None:
        """What `create()` decides before a temp exists (the final mode, the target's
        access xattrs), for a file this write does not create itself (`atomic_path`). A new
        target's default, 0o644 less the umask, is made explicit: that file was not created
        with it."""
        refusal = self._refusal(_permissions.euid())
        if refusal is not None:
            raise refusal
        self.step = "permissions"
        target = self.target_stat
        self._keep = permissions is None
        final = _permissions.final_mode(permissions, join(self._dir, self._base), target, file=True)
        if final is None:
            from ._directory import umask

            final = _permissions.NEW_FILE_MODE & ~umask()
        self.final_mode = final
        if target is not None and _HAS_XATTRS:
            self._read_xattrs()

    def adopt(self, fd: int) -> None:
        """Take `fd` (a regular file, open) as this write's temp: `finish()` then gives it
        the owner, xattrs and mode as it gives a temp of ours, and fsyncs it. It is not
        ours to unlink by name: `remove()` leaves it (its directory is removed whole)."""
        self._fd = fd
        self.temp_stat = os.fstat(fd)

    def publish_from(self, src_dir_fd: int, name: str, shown: str, exclusive: bool) -> None:
        """Rename `name` in the directory `src_dir_fd` over the target, in one step (both
        directories are held open: no name is resolved from a path string); `exclusive`:
        only if there is no target (EEXIST, checked atomically). `shown`: the source's path
        for the error. (The link fallback of `exclusive` leaves `name` for its caller,
        whose staging directory goes whole.)"""
        self.step = "rename"
        try:
            if exclusive:
                _fs.rename_noreplace_between(src_dir_fd, name, self._dfd, self._base)
            else:
                os.replace(name, self._base, src_dir_fd=src_dir_fd, dst_dir_fd=self._dfd)
        except OSError as err:
            err.filename, err.filename2 = shown, join(self._dir, self._base)
            if err.errno == errno.EBUSY:
                self._explain_busy(err)
            raise

    def _explain_busy(self, err: OSError) -> None:
        """EBUSY from the rename: when the target is the root of a mount (a single file
        bind-mounted: Docker's `-v cfg.json:/app/cfg.json`, a Kubernetes subPath), raise
        the error that says so and what to do; else return (the error stays as it is)."""
        if not _O_PATH:
            return
        try:
            fd = os.open(self._base, _O_PATH | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=self._dfd)
        except OSError:
            return
        try:
            mounted = _fs.is_mount_root(fd)
        finally:
            os.close(fd)
        if mounted:
            raise OSError(errno.EBUSY, _MOUNTED, err.filename, None, err.filename2) from err

    def sync_dir(self) -> bool:
        """Make the rename durable. False where the file system (or our access) can't."""
        synced = self._dir_fsync and _fs.fsync_dir(self._dfd)
        if self.parents:
            # make_parents created directories: each one's name, deepest first (`_parents`).
            from ._parents import sync_parents

            synced = sync_parents(self.parents) and synced
        return synced

    # -- the end -----------------------------------------------------------------------

    def remove(self) -> bool | OSError:
        """Unlink the temp name if we created it and still own it. False: nothing to
        remove; True: removed; else the error (the caller logs it, never raises it)."""
        if not self._created:
            return False
        self._created = False
        try:
            os.unlink(self.temp_name, dir_fd=self._dfd)
        except OSError as exc:
            return exc
        return True

    def drop_sweep_lock(self) -> None:
        """After the rename the temp is the target, and its sweep lock is a lock on the new
        target: drop it before closing, or a forked child's copy of the descriptor keeps
        every `lock=True` writer of the target waiting (`_lock`). Only that path calls it."""
        if self._fd >= 0:
            _fs.unlock(self._fd)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        _fs.close_quietly(fd)

    def release(self) -> None:
        """Close every descriptor this write holds (temp, copy source, directory)."""
        temp, src, dfd = self._fd, self._src, self._dfd
        self._fd, self._src, self._dfd = -1, -1, -1
        if not self._own_dfd:
            dfd = -1  # none, or the batch's, closed by the batch
        _fs.close_quietly(temp, src, dfd)
        made = self.parents
        if made:
            self.parents = []
            _fs.close_quietly(*made)

    def forget(self) -> None:
        """In a forked child: the write is the parent's. Close our copies, touch nothing."""
        self._created = False
        self.release()

    def size(self) -> int:
        return os.fstat(self._fd).st_size


def kind_refusal(kind: str, st: os.stat_result | None, path: str) -> OSError | None:
    """The error `open()` gives for a target found as `st` (None: there is none) in a mode
    of `kind`, permissions apart: 'r+' of nothing, 'x' of anything, a directory; and what
    a rename can't replace without destroying it (a FIFO, a device). Both temps use it."""
    if st is None:
        return _error(errno.ENOENT, path) if kind == "r" else None
    if kind == "x":
        return _error(errno.EEXIST, path)
    if stat.S_ISDIR(st.st_mode):
        return _error(errno.EISDIR, path)
    if not stat.S_ISREG(st.st_mode):
        # Renaming over a FIFO or a device would not write to it, it would remove it.
        return _error(errno.EINVAL, path, "Not a regular file: it can't be replaced")
    return None


def file_object(
    fd: int, st: os.stat_result, mode: str, buffering: int, encoding: str | None,
    errors: str | None, newline: str | None, name: str | bytes,
) -> IO[Any]:  # fmt: skip
    """`open(fd, mode, ...)` as `open()` would build it for a file with stat `st`, not owning
    `fd`, and named `name` (what `open()` would give: the target, not the temp)."""
    if buffering < 0:
        # open()'s own default (FileIO's _blksize), given explicitly so that open() skips
        # its isatty() probe, an ioctl per write: a temp file is never a terminal.
        blksize = st.st_blksize
        buffering = blksize if blksize > 1 else 8192
    file: Any = open(  # noqa: SIM115 - the caller owns and closes it
        fd, mode, buffering, encoding, errors, newline, closefd=False
    )
    raw = file if buffering == 0 else file.buffer.raw if "b" not in mode else file.raw
    raw.name = name
    return file  # type: ignore[no-any-return]


_NO_FOLLOW_READ = (
    "The target is a symbolic link and follow_symlinks=False: mode {!r} starts from the "
    "target's content, which would be read through the link (what O_NOFOLLOW refuses); "
    "pass follow_symlinks=True to write the file it points to, or use mode 'w' to replace "
    "the link itself"
)
_MOUNTED = (
    "The target is a mount point (a single file mounted on its own, as Docker's "
    "-v file:file or a Kubernetes subPath does): a rename can't replace it, so no atomic "
    "replace exists there; mount the directory that holds the file instead and write in it"
)
_ACL_ACCESS = "system.posix_acl_access"
_KEPT_XATTRS = frozenset({_ACL_ACCESS, "security.selinux"})
_OWNER, _ACL = "owner", "acl"


def _narrow_for_acl(mode: int, acl: bytes | None) -> int:
    """The mode for a file that loses its access ACL: the group bits become the owning
    group's own ACL entry masked by the ACL mask (what that group really had); named users
    and groups then fall to 'other', which never had more than they."""
    if not acl or len(acl) < 4:
        return mode & ~0o070
    group_obj, mask = 0, 7
    # Linux's xattr form: a 4-byte version, then (tag u16, perm u16, id u32) entries.
    for i in range(4, len(acl) - 7, 8):
        tag = int.from_bytes(acl[i : i + 2], "little")
        perm = int.from_bytes(acl[i + 2 : i + 4], "little")
        if tag == 0x04:  # ACL_GROUP_OBJ
            group_obj = perm
        elif tag == 0x10:  # ACL_MASK
            mask = perm
    return (mode & ~0o070) | ((group_obj & mask & 7) << 3)
