"""`atomic_move`: publish a file that already exists (written by another tool, downloaded,
built) at its final name, in one step and durably.

On one file system: fsync the file, rename it (RENAME_NOREPLACE for `overwrite=False`, so
"only if absent" is checked by the kernel, not by us beforehand), fsync both directories.
Across file systems (EXDEV), where no rename can do it: copy into a locked temp beside the
destination, as `AtomicFile` writes one, publish that by rename, and only then remove the
source. Both directories are opened once; every step names files relative to them.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _fs, _local, _naming
from ._errors import SessionFileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
# O_NONBLOCK: a FIFO at `src` must not hang the open (it is refused after the fstat).
_SRC_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC
_ATTEMPTS = 100
_OPERATION = "atomic move"


def atomic_move(
    src: StrOrBytesPath,
    dst: StrOrBytesPath,
    *,
    overwrite: bool = True,
    durable: bool = True,
    make_parents: bool = False,
) -> None:
    """Move the regular file `src` to `dst` in one step: `dst` holds its old content (or
    is absent) until it holds all of `src`'s, never a part; a power loss after the return
    loses nothing (`durable=True`, the default: the file and both directories fsynced).

    `overwrite=False`: fail with `FileExistsError` if `dst` exists, checked atomically (a
    file that appears meanwhile is never replaced). A symlink at `dst` is replaced itself.
    Across file systems `src` is copied into a temp beside `dst` (its mode bits, owner and
    group where the process may set them, and its times), published, and only then
    removed; the copy takes time, `dst` still changes in one step. `make_parents=True`
    creates `dst`'s missing directories (as `os.makedirs`; durable with the move).

    Raises `SessionFileError` (also the builtin subclass: `FileNotFoundError` for a missing
    `src` or directory, `FileExistsError`, `IsADirectoryError` when `src` or `dst` is a
    directory, ...): `src` and `dst` are then as they were, and no temp is left, except
    for a failure after `dst` was published (step "remove source" or "fsync directory"),
    when `dst` is the new file and `src` may remain. `ValueError` before any I/O if a path
    is empty or names a directory (ends with a separator).
    """
    move = _Move(os.fsdecode(os.fspath(src)), os.fsdecode(os.fspath(dst)))
    try:
        move.run(overwrite, durable, make_parents)
    except OSError as err:
        raise SessionFileError(move.dst, _OPERATION, err, move.step) from err
    finally:
        move.close()


class _Move:
    """One move: the two directories' descriptors, the source's, and the step under way."""

    def __init__(self, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        self.src_dir, self.src_name = _local.split(src)
        self.dst_dir, self.dst_name = _local.split(dst)
        for path, name in ((src, self.src_name), (dst, self.dst_name)):
            if not name or name in (".", ".."):
                raise ValueError(f"atomic_move moves a file: {path!r} names a directory")
        self.step = "open directory"
        self.src_dfd = self.dst_dfd = self.fd = -1
        #: make_parents=True: the directories a new directory of dst's was made in.
        self.parents: list[int] = []

    def run(self, overwrite: bool, durable: bool, make_parents: bool = False) -> None:
        self.src_dfd = os.open(self.src_dir or ".", _DIR_FLAGS)
        same_dir = self.dst_dir == self.src_dir
        if same_dir:
            self.dst_dfd = self.src_dfd
        else:
            try:
                self.dst_dfd = os.open(self.dst_dir or ".", _DIR_FLAGS)
            except FileNotFoundError:
                if not make_parents:
                    raise
                self.step = "make directories"
                from ._parents import make_dirs

                self.dst_dfd, self.parents = make_dirs(self.dst_dir)
        self.step = "open"
        self.fd = self._open_source()
        if durable:
            self.step = "fsync"
            _fs.fsync_file(self.fd)
        self.step = "rename"
        try:
            self._rename(overwrite)
        except OSError as err:
            if err.errno != errno.EXDEV:
                err.filename, err.filename2 = self.src, self.dst
                raise
            self._copy_across(overwrite, durable)  # another file system: no rename there
            return
        if durable:
            self.step = "fsync directory"
            _fs.fsync_dir(self.dst_dfd)
            self._sync_parents()
            if not same_dir:
                _fs.fsync_dir(self.src_dfd)  # the source's name is gone: make that durable

    def _sync_parents(self) -> None:
        """make_parents created directories for dst: each one's name, deepest first."""
        if self.parents:
            from ._parents import sync_parents

            sync_parents(self.parents)

    def _open_source(self) -> int:
        try:
            fd = os.open(self.src_name, _SRC_FLAGS, dir_fd=self.src_dfd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "A symbolic link: atomic_move moves a regular file",
                              self.src) from None  # fmt: skip
            err.filename = self.src
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                raise OSError(errno.EISDIR, "Is a directory: atomic_move moves a regular file",
                              self.src)  # fmt: skip
            raise OSError(errno.EINVAL, "Not a regular file: atomic_move moves one", self.src)
        return fd

    def _rename(self, overwrite: bool) -> None:
        src, dst = self.src_name, self.dst_name
        if overwrite:
            os.replace(src, dst, src_dir_fd=self.src_dfd, dst_dir_fd=self.dst_dfd)
        elif _fs.rename_noreplace_between(self.src_dfd, src, self.dst_dfd, dst):
            os.unlink(src, dir_fd=self.src_dfd)  # the link(2) fallback left both names

    def _copy_across(self, overwrite: bool, durable: bool) -> None:
        """Copy into a locked temp beside `dst`, publish it, then remove `src`."""
        self.step = "create temp"
        dfd = self.dst_dfd
        temp, tfd = self._create_temp()
        try:
            self.step = "copy"
            _fs.copy_contents(self.fd, tfd)
            self.step = "chmod"
            _keep_metadata(self.fd, tfd)
            if durable:
                self.step = "fsync"
                _fs.fsync_file(tfd)
            else:
                # NFS sends the data at close (close-to-open): close a duplicate before the
                # rename, keeping our descriptor and with it the sweep lock.
                self.step = "close"
                os.close(os.dup(tfd))
            self.step = "rename"
            if overwrite:
                os.replace(temp, self.dst_name, src_dir_fd=dfd, dst_dir_fd=dfd)
                temp = ""
            elif not _fs.rename_noreplace(temp, self.dst_name, dfd):
                temp = ""  # renamed; else linked, and the temp name is removed below
        except OSError as err:
            if self.step == "rename":  # full paths, not the names relative to the fd
                err.filename, err.filename2 = _local.join(self.dst_dir, temp), self.dst
            raise
        finally:
            if temp:
                try:
                    os.unlink(temp, dir_fd=dfd)  # while our lock still keeps the sweep off
                except OSError:
                    pass
            os.close(tfd)
        if durable:
            self.step = "fsync directory"
            _fs.fsync_dir(dfd)
            self._sync_parents()
        self.step = "remove source"
        # The name is removed only if it still is the file copied: a file put there
        # meanwhile is someone else's.
        now = os.stat(self.src_name, dir_fd=self.src_dfd, follow_symlinks=False)
        copied = os.fstat(self.fd)
        if (now.st_dev, now.st_ino) == (copied.st_dev, copied.st_ino):
            os.unlink(self.src_name, dir_fd=self.src_dfd)
            if durable:
                self.step = "fsync directory"
                _fs.fsync_dir(self.src_dfd)

    def _create_temp(self) -> tuple[str, int]:
        """A new temp beside `dst`, locked as AtomicFile's are (the sweep leaves it alone),
        created no more open than `src`'s mode (the umask can only narrow it)."""
        mode = stat.S_IMODE(os.fstat(self.fd).st_mode) & 0o777
        dfd = self.dst_dfd
        for _ in range(_ATTEMPTS):
            name = _naming.temp_name(self.dst_name, _naming.token())
            try:
                tfd = os.open(name, _TEMP_FLAGS, mode, dir_fd=dfd)
            except FileExistsError:
                continue
            except OSError as err:
                err.filename = _local.join(self.dst_dir, name)  # not the bare name at the fd
                raise
            if _fs.try_lock(tfd) is not False and os.fstat(tfd).st_nlink:
                return name, tfd
            # Locked by someone else, or swept between the create and the lock: another name.
            try:
                if os.fstat(tfd).st_nlink:
                    os.unlink(name, dir_fd=dfd)
            finally:
                os.close(tfd)
        raise OSError(errno.EEXIST, "No free temp file name", self.dst)

    def close(self) -> None:
        dst_dfd = self.dst_dfd if self.dst_dfd != self.src_dfd else -1
        _fs.close_quietly(self.fd, self.src_dfd, dst_dfd, *self.parents)


def _keep_metadata(src_fd: int, fd: int) -> None:
    """What a rename would have kept: mode bits, owner and group (where the process may
    set them), access and modification times. Never more access than the source gave: an
    owner not kept loses set-uid, a group not kept loses its bits and set-gid."""
    st = os.fstat(src_fd)
    mine = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
        except OSError:
            mode &= ~stat.S_ISUID
            try:
                os.fchown(fd, -1, st.st_gid)
            except OSError:
                mode &= ~(stat.S_ISGID | 0o070)
    os.fchmod(fd, mode)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


async def atomic_move_async(
    src: StrOrBytesPath,
    dst: StrOrBytesPath,
    *,
    overwrite: bool = True,
    durable: bool = True,
    make_parents: bool = False,
) -> None:
    """`atomic_move` as a coroutine: the whole move (a copy, across file systems) runs as
    one worker-thread job, which a cancellation lets finish before it is raised."""
    from ._async import current_runtime

    await current_runtime().run(
        lambda: atomic_move(
            src, dst, overwrite=overwrite, durable=durable, make_parents=make_parents
        )
    )
