"""The platform's file-system primitives: durable sync, locks, copying, no-clobber rename."""

from __future__ import annotations

import errno
import os
import sys

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


def fsync_file(fd: int) -> None:
    """Push the file's data and metadata to stable storage. Never retried on failure."""
    if sys.platform == "darwin":
        # fsync(2) on macOS only reaches the drive's cache; F_FULLFSYNC asks the drive to
        # flush it (Apple's fsync(2) man page). File systems that lack it answer ENOTSUP.
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EINVAL, errno.ENOTTY):
                raise
    os.fsync(fd)


def fsync_dir(path: str) -> bool:
    """Make a rename in directory `path` durable. False where the file system can't.

    A directory we may not open for reading (mode 0o300) and file systems that reject fsync
    on directories are reported as False so the caller can log them. Any other error is
    raised. Windows has no directory handle to flush and needs none (NTFS journals the
    rename): nothing to do, nothing to report.
    """
    if WINDOWS:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        return False
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno in _DIR_FSYNC_UNSUPPORTED:
            return False
        raise
    finally:
        os.close(fd)
    return True


def lock(fd: int) -> None:
    """Hold an advisory lock on the temp file for as long as it is open.

    The stale-temp sweep takes the lock before removing a temp: a live writer's lock keeps
    its temp safe. flock(2) locks belong to the open file description, so a sweep in the
    same process conflicts too (POSIX fcntl locks would not). Windows needs no lock: a file
    another handle holds open cannot be deleted there.
    """
    if not WINDOWS:
        fcntl.flock(fd, fcntl.LOCK_EX)


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


def set_append(fd: int) -> None:
    """Turn on O_APPEND once the copy of the old content is in ('a' modes): copy_file_range
    refuses a destination opened for appending (EBADF)."""
    if not WINDOWS:
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)


def link_noreplace(src: str, dst: str) -> bool:
    """Give `src`'s file the name `dst`, failing with EEXIST if `dst` exists: no window between.

    POSIX has no portable no-clobber rename, but link(2) fails with EEXIST atomically; it
    returns True because the caller must then remove the `src` name. On Windows os.rename
    already refuses to replace, and leaves no `src` name behind.
    """
    if WINDOWS:
        os.rename(src, dst)
        return False
    os.link(src, dst)
    return True
