"""A FUSE file system without hard links (as vfat, exFAT, many FUSE file systems): a
passthrough to a backing directory whose link() fails with EPERM. Not a test module.

    python _nolinkfs.py BACKING MOUNTPOINT [--no-rename-flags]

`--no-rename-flags` refuses renameat2 flags (EINVAL), as file systems without
RENAME_NOREPLACE do; otherwise RENAME_NOREPLACE is honoured (the file system is served by
one thread, so the check and the rename are one step for its clients). Prints "ready" once
mounted (from FUSE's init), and unmounts on SIGTERM.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import mfusepy

RENAME_NOREPLACE = 1


class NoLinks(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, root: str, rename_flags: bool) -> None:
        self.root = root
        self.rename_flags = rename_flags

    def _p(self, path: str) -> str:
        return self.root + path

    def init(self, path: str) -> None:
        print("ready", flush=True)

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        st = os.lstat(self._p(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime",
                "st_ctime", "st_ino")  # fmt: skip
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", *os.listdir(self._p(path))]

    def access(self, path: str, amode: int) -> int:
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def open(self, path: str, flags: int) -> int:
        return os.open(self._p(path), flags & ~(os.O_CREAT | os.O_EXCL))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: Any = None) -> None:
        os.truncate(self._p(path), length)

    def flush(self, path: str, fh: int) -> None:
        pass

    def release(self, path: str, fh: int) -> None:
        os.close(fh)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        os.fsync(fh)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        pass

    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._p(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._p(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._p(path), uid, gid)

    def utimens(self, path: str, times: Any = None) -> None:
        pass

    def link(self, target: str, source: str) -> None:
        raise mfusepy.FuseOSError(errno.EPERM)  # no hard links here

    def rename(self, old: str, new: str) -> None:
        self.rename2(old, new, 0)

    def rename2(self, old: str, new: str, flags: int) -> None:
        if flags:
            if not self.rename_flags or flags != RENAME_NOREPLACE:
                raise mfusepy.FuseOSError(errno.EINVAL)
            if os.path.lexists(self._p(new)):
                raise mfusepy.FuseOSError(errno.EEXIST)
        os.rename(self._p(old), self._p(new))


class FlagsFUSE(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy drops rename's flags under libfuse 3; pass them on."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        self.operations.rename2(old.decode(), new.decode(), flags)
        return 0


def main() -> None:
    backing, mountpoint = sys.argv[1], sys.argv[2]
    rename_flags = "--no-rename-flags" not in sys.argv
    FlagsFUSE(NoLinks(backing, rename_flags), mountpoint, foreground=True, nothreads=True)


if __name__ == "__main__":
    main()
