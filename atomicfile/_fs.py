"""The platform's file-system primitives: durable sync (of a file, a directory, a whole
tree), locks, copying, no-clobber and exchanging renames, mount points, and the flags and
errors the writers and the sweep share."""

from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WINDOWS = os.name == "nt"

if not WINDOWS:
    import fcntl

# A directory fsync that the file system refuses as unsupported is not a failed sync:
# there is nothing more this process can do to make the rename durable there.
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})
# copy_file_range(2): errors that mean "not here", so the plain read/write loop is used.
_COPY_FALLBACK = frozenset(
    {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}
)
_COPY_CHUNK = 1 << 20


if sys.platform == "darwin":

    def fsync_file(fd: int) -> None:
        """Push the file's data and metadata to stable storage. Never retried on failure.
        fsync(2) on macOS only reaches the drive's cache; F_FULLFSYNC asks the drive to
        flush it (Apple's fsync(2) man page). File systems that lack it answer ENOTSUP."""
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EINVAL, errno.ENOTTY):
                raise
        os.fsync(fd)

else:
    #: Push the file's data and metadata to stable storage. Never retried on failure. The C
    #: function itself: no Python frame on the write path.
    fsync_file = os.fsync


def fsync_dir(fd: int) -> bool:
    """Make a rename in the directory open as `fd` durable. False where the file system
    can't (it rejects fsync on directories); any other error is raised."""
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno in _DIR_FSYNC_UNSUPPORTED:
            return False
        raise
    return True


# flock(2) answers these where the file system has no locks (NFS without lockd, some FUSE).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


if WINDOWS:

    def try_lock(fd: int) -> bool | None:
        """No lock is needed: a file another handle holds open cannot be deleted here."""
        return True

    def unlock(fd: int) -> None:
        """Nothing to drop (`try_lock` takes none)."""

    def set_append(fd: int) -> None:
        """Nothing to turn on: Windows has no descriptor flag for it (the copy's writer
        seeks to the end instead)."""

else:

    def try_lock(fd: int) -> bool | None:
        """Take the temp's advisory lock without waiting: True, False if someone else holds
        a lock on it, None where the file system has no locks.

        The stale-temp sweep takes the lock before removing a temp: a live writer's lock
        keeps its temp safe. flock(2) locks belong to the open file description, so a sweep
        in the same process conflicts too (POSIX fcntl locks would not). Never blocking: any
        user who can open the fresh temp could otherwise hold the writer forever.
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            if err.errno in _NO_LOCKS:
                return None
            raise
        return True

    def unlock(fd: int) -> None:
        """Drop this descriptor's flock, ignoring errors: before a close where a forked
        child's copy of the descriptor would otherwise keep holding it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass

    def set_append(fd: int) -> None:
        """Turn on O_APPEND once the copy of the old content is in ('a' modes):
        copy_file_range refuses a destination opened for appending (EBADF)."""
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)


def close_quietly(*fds: int) -> None:
    """Close each descriptor that is open (>= 0), ignoring errors: for release paths, where
    the data was already made durable or the write already failed."""
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def copy_contents(src_fd: int, dst_fd: int) -> None:
    """Copy all of `src_fd` into `dst_fd` from their current offsets, in the kernel if it can."""
    if hasattr(os, "copy_file_range"):
        copied = 0
        try:
            while n := os.copy_file_range(src_fd, dst_fd, 1 << 30):
                copied += n
            return
        except OSError as err:
            if copied or err.errno not in _COPY_FALLBACK:
                raise
    while chunk := os.read(src_fd, _COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view) :]


RENAME_NOREPLACE = 1
_renameat2: Any = None


if WINDOWS:

    def rename_noreplace(src: str, dst: str, dir_fd: int | None) -> bool:
        """Rename `src` to `dst`, failing with EEXIST if `dst` exists: os.rename already
        refuses to replace on Windows."""
        os.rename(src, dst)
        return False

    def rename_noreplace_between(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> bool:
        """No directory descriptors on Windows."""
        raise OSError(errno.ENOSYS, "No directory descriptors on Windows", src, None, dst)

else:

    def rename_noreplace(src: str, dst: str, dir_fd: int | None) -> bool:
        """Rename `src` to `dst` (both relative to `dir_fd`), failing with EEXIST if `dst`
        exists: no window between the check and the rename.

        Linux: renameat2(RENAME_NOREPLACE) (3.15+; Python has no binding, so through ctypes).
        Where the kernel or file system lacks it, link(2), which also fails with EEXIST
        atomically, then returns True: the caller must remove the `src` name.
        """
        fd = AT_FDCWD if dir_fd is None else dir_fd
        return rename_noreplace_between(fd, src, fd, dst)

    def rename_noreplace_between(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> bool:
        """`rename_noreplace` from one directory to another: `src` relative to `src_dir_fd`,
        `dst` relative to `dst_dir_fd`; EEXIST if `dst` exists, checked atomically. True when
        the link(2) fallback was used: the caller must remove the `src` name."""
        func = _renameat2 or _load_renameat2()
        if func:
            names = os.fsencode(src), os.fsencode(dst)
            if func(src_dir_fd, names[0], dst_dir_fd, names[1], RENAME_NOREPLACE) == 0:
                return False
            import ctypes

            code = ctypes.get_errno()
            if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise OSError(code, os.strerror(code), src, None, dst)
        os.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
        return True


AT_FDCWD = -100


def _load_renameat2() -> Any:
    """libc's renameat2, or False where there is none (then link(2) is used)."""
    global _renameat2
    _renameat2 = _libc_rename("renameat2") if sys.platform.startswith("linux") else False
    return _renameat2


def _libc_rename(name: str) -> Any:
    """libc's `name`, a rename of the renameat2 shape (dirfd, path, dirfd, path, flags), or
    False where libc has none. ctypes is imported here, on first use, never at import."""
    try:
        import ctypes

        func = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (ImportError, OSError, AttributeError):
        return False
    func.argtypes = (
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint,
    )  # fmt: skip
    func.restype = ctypes.c_int
    return func


RENAME_EXCHANGE = 2  # linux/fs.h; macOS's RENAME_SWAP has the same value (sys/stdio.h)
#: Errors that mean "no atomic exchange here" (old kernel, or a file system that refuses it).
EXCHANGE_UNSUPPORTED = frozenset(
    {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}
)
_renameatx_np: Any = None


def _load_renameatx_np() -> Any:
    global _renameatx_np
    _renameatx_np = _libc_rename("renameatx_np")
    return _renameatx_np


# statx(2), Linux 5.8+: STATX_ATTR_MOUNT_ROOT in stx_attributes marks the root of a mount,
# and the kernel sets it in stx_attributes_mask where it knows the attribute; AT_EMPTY_PATH
# makes an empty path mean the descriptor itself. Offsets are those of struct statx in
# linux/stat.h (stx_attributes at 8, stx_attributes_mask at 56; the struct is 256 bytes).
_AT_EMPTY_PATH = 0x1000
_STATX_ATTR_MOUNT_ROOT = 0x2000
_STATX_SIZE = 256
_statx: Any = None


def is_mount_root(fd: int) -> bool | None:
    """Whether the directory open as `fd` is the root of a mount: True, False, or None where
    this system can't tell (not Linux, or neither statx nor /proc answers).

    `st_dev` can't tell: a bind mount of a directory of the same file system has the device
    of the tree it is mounted in. Linux 5.8+ says it in statx's STATX_ATTR_MOUNT_ROOT; older
    kernels through the mount ids of the directory and of its "..", which from a mount's
    root leads to the mount point's parent, on the mount above (path_resolution(7)).
    """
    if not sys.platform.startswith("linux"):
        return None
    func = _statx if _statx is not None else _load_statx()
    if func:
        import ctypes

        buf = ctypes.create_string_buffer(_STATX_SIZE)
        # Mask 0: no field is wanted; the attributes come with every call, and a network
        # file system need not fetch anything for it.
        if func(fd, b"", _AT_EMPTY_PATH, 0, buf) == 0:
            attributes = int.from_bytes(buf.raw[8:16], sys.byteorder)
            known = int.from_bytes(buf.raw[56:64], sys.byteorder)
            if known & _STATX_ATTR_MOUNT_ROOT:
                return bool(attributes & _STATX_ATTR_MOUNT_ROOT)
    # No statx (glibc < 2.28, a seccomp filter) or a kernel older than 5.8.
    try:
        parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    try:
        mine, above = _fdinfo_mount_id(fd), _fdinfo_mount_id(parent)
    finally:
        os.close(parent)
    if mine is None or above is None:
        return None
    return mine != above


def _fdinfo_mount_id(fd: int) -> int | None:
    """The `mnt_id:` line of /proc/self/fdinfo/<fd> (Linux 3.15+, proc(5)); None if absent."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _load_statx() -> Any:
    """libc's statx, or False where it has none. ctypes is imported on first use only."""
    global _statx
    try:
        import ctypes

        func = ctypes.CDLL(None, use_errno=True).statx
    except (ImportError, OSError, AttributeError):
        _statx = False
        return False
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p)
    func.restype = ctypes.c_int
    _statx = func
    return func


def rename_between(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str, flags: int) -> None:
    """renameat2(`flags`) from `src` in one directory descriptor to `dst` in another:
    RENAME_NOREPLACE or RENAME_EXCHANGE (Linux), RENAME_EXCHANGE as renameatx_np's
    RENAME_SWAP (macOS, which has no RENAME_NOREPLACE of that value). Raises OSError;
    ENOSYS where the system has no such call, an errno in `EXCHANGE_UNSUPPORTED` where the
    file system refuses the flag."""
    import ctypes

    if sys.platform == "darwin" and flags == RENAME_EXCHANGE:
        func = _renameatx_np if _renameatx_np is not None else _load_renameatx_np()
    elif sys.platform.startswith("linux"):
        func = _renameat2 if _renameat2 is not None else _load_renameat2()
    else:
        func = False
    if not func:
        raise OSError(errno.ENOSYS, "No renameat2 on this system", src, None, dst)
    if func(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), src, None, dst)


# -- shared by the writers and the sweep: flags, errors, directory renames, trees ------------

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: A directory named inside one we hold: never through a symlink put at its name.
DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
#: A directory the caller named by path: its symlinks followed, as open() follows them.
DIR_FLAGS_FOLLOW = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
#: An entry of a tree opened to be judged by its descriptor: never a symlink followed, never
#: a wait on a FIFO or a device someone put there, never a controlling terminal taken.
ENTRY_FLAGS = (
    os.O_RDONLY | _O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    | _O_CLOEXEC
)  # fmt: skip


def error(code: int, path: str, message: str | None = None) -> OSError:
    """An OSError of `code` about `path`, with `message` or the system's text for `code`:
    the builtin subclass for that errno (PermissionError for EACCES, ...), as the OS raises."""
    return OSError(code, message or os.strerror(code), path)


def rename_dir_noreplace(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """Rename the directory `src` (in `src_dir_fd`) to `dst` (in `dst_dir_fd`) only if `dst`
    does not exist: FileExistsError (EEXIST) if it does.

    renameat2(RENAME_NOREPLACE) where the system and file system have it. Elsewhere (link(2),
    `rename_noreplace`'s fallback, can't link a directory) a check, then rename(2): at worst
    it replaces a directory that appeared empty in between, never a file (ENOTDIR) nor a
    non-empty directory (ENOTEMPTY)."""
    try:
        rename_between(src_dir_fd, src, dst_dir_fd, dst, RENAME_NOREPLACE)
        return
    except OSError as exc:
        if exc.errno not in EXCHANGE_UNSUPPORTED - {errno.EXDEV}:
            raise
    try:
        os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


# -- making a whole tree durable ----------------------------------------------------------

#: statfs f_type of the local file systems whose syncfs(2) writes back every dirty inode
#: and commits the journal (ext2/3/4, xfs, btrfs, f2fs; tmpfs and ramfs have nothing to
#: write). FUSE, NFS and others are left to fsync(2), which they forward to the server.
_SYNCFS_TRUSTED = frozenset({0xEF53, 0x58465342, 0x9123683E, 0xF2F52010, 0x01021994, 0x858458F6})
_libc: Any = None


def _load_libc() -> Any:
    """libc with syncfs and fstatfs typed, or False (not Linux, or ATOMICFILE_NO_SYNCFS set:
    then every tree is made durable file by file)."""
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


def syncfs_trusted(fd: int) -> bool:
    """Whether one syncfs(2) makes everything written on `fd`'s file system durable and
    reports a failure to: a local file system of `_SYNCFS_TRUSTED`, on Linux 5.8+."""
    libc = _load_libc()
    if not libc or not _kernel_reports_syncfs_errors():
        return False
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first word
    if libc.fstatfs(fd, buf) != 0:
        return False
    f_type = int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder)
    return f_type in _SYNCFS_TRUSTED


def syncfs(fd: int) -> None:
    """syncfs(2) of the file system holding `fd`; OSError on failure."""
    if _load_libc().syncfs(fd) != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def sync_tree(fd: int, walk: bool) -> None:
    """Make the file system holding `fd` durable up to now: syncfs where trusted, else
    (`walk`) an fsync of every file and directory under the directory `fd` (`fsync_walk`),
    else an fsync of `fd` alone."""
    if syncfs_trusted(fd):
        syncfs(fd)
    elif walk:
        fsync_walk(fd)
    else:
        os.fsync(fd)


def fsync_walk(top: int) -> None:
    """fsync every regular file and directory under the directory open as `top`, each
    directory after its entries, `top` last.

    Each entry is opened relative to its directory with `ENTRY_FLAGS` and judged by the
    descriptor: a FIFO (or device) put in place of a file after the listing is opened
    without blocking and skipped, never read or waited on; a symlink fails to open (ELOOP)
    and is skipped; nothing is followed out of the tree. A mount point is not entered (as
    the removal of a tree never enters one): what is mounted there is another file system's
    (or, for a bind mount, is reached by syncfs already) and may hold the tree itself.
    Iterative: a deep tree needs no Python recursion."""
    import stat

    dev = os.fstat(top).st_dev
    # Frames: (descriptor, names still to visit); the top's descriptor is the caller's.
    frames: list[tuple[int, list[str]]] = [(top, _walk_names(top))]
    try:
        while frames:
            fd, names = frames[-1]
            if not names:
                frames.pop()
                try:
                    fsync_dir(fd)
                finally:
                    if fd != top:
                        os.close(fd)
                continue
            name = names.pop()
            try:
                sub = os.open(name, ENTRY_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
                    continue  # replaced by a symlink, removed, a socket: nothing to sync
                raise
            try:
                st = os.fstat(sub)
                if stat.S_ISREG(st.st_mode):
                    fsync_file(sub)
                elif stat.S_ISDIR(st.st_mode) and st.st_dev == dev and not is_mount_root(sub):
                    frames.append((sub, _walk_names(sub)))
                    sub = -1  # the frame owns it now
            finally:
                if sub >= 0:
                    os.close(sub)
    finally:
        for fd, _ in frames[1:]:
            os.close(fd)


def _walk_names(fd: int) -> list[str]:
    """The names of the directories and regular files in the directory open as `fd`."""
    with os.scandir(fd) as entries:
        return [
            e.name
            for e in entries
            if e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False)
        ]
