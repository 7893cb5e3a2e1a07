"""The local file system's side of an atomic write on Windows: the steps of `_local` by
full paths, the closest safe thing where there are no directory descriptors.

What differs from POSIX, and why:
- no *at() calls: names are joined to the target's directory as given, each step resolving
  it again (a parent swapped meanwhile is not detected here);
- the temp is closed before the rename and before its removal: Windows can't rename or
  delete a file that is open;
- a symlink target is resolved with `os.path.realpath`;
- there is no directory to fsync (NTFS journals the rename) and no flock: the stale-temp
  sweep goes by age there.

`_store` chooses this module or `_local` once, at import; nothing else asks which.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _fs, _naming, _permissions
from ._local import file_object, kind_refusal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

    from ._log import EventLog
    from ._modes import Mode
    from ._permissions import Permissions

_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NOINHERIT = getattr(os, "O_NOINHERIT", 0)
_ATTEMPTS = 10000  # as `_local`: tempfile's TMP_MAX
_SEPS = os.sep + (os.altsep or "")


def _error(code: int, path: str, message: str | None = None) -> OSError:
    return OSError(code, message or os.strerror(code), path)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class LocalTemp:
    """One write's temp file beside the target, by full paths (see the module docstring)."""

    __slots__ = (
        "_base",
        "_created",
        "_dir",
        "_fd",
        "_log",
        "_mode",
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
        self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None
    ) -> None:
        self.path = path
        self._mode = mode
        self.follow = follow
        self._log = log
        self.step = "open"
        self._dir, self._base = os.path.split(path)
        self._fd = -1
        self._created = False
        self.target_stat: os.stat_result | None = None
        self.temp_stat: os.stat_result | None = None
        self.final_mode: int | None = None
        self.temp_name = ""
        self.temp_path: str | None = None
        #: make_parents=True: `[]` (Windows has no directory fsync: nothing is kept in it).
        self.parents: list[int] | None = None

    def _full(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def _new_name(self) -> None:
        self.temp_name = name = _naming.temp_name(self._base, _naming.token())
        self.temp_path = self._full(name)

    def inspect(self) -> OSError | None:
        """Find the file to replace; return the error `open()` would raise instead."""
        path = self.path
        problem: OSError | None = None
        if not path:
            problem = _error(errno.ENOENT, path)
        elif path.endswith(tuple(_SEPS)) and path.rstrip(_SEPS):
            problem = _error(errno.EISDIR, path)
        else:
            try:
                if self.parents is not None and self._dir and not os.path.isdir(self._dir):
                    os.makedirs(self._dir, exist_ok=True)  # no *at calls on Windows
                problem = self._check_target(self._resolve())
            except OSError as err:
                problem = err
        self._new_name()
        return problem

    def _resolve(self) -> os.stat_result | None:
        st = _lstat(self._full(self._base))
        if st is None or not stat.S_ISLNK(st.st_mode):
            return st
        kind = self._mode.kind
        if kind == "x":
            raise _error(errno.EEXIST, self.path)  # O_EXCL: a link is an existing file
        if not self.follow:
            if kind != "w":
                raise _error(errno.ELOOP, self.path)  # what O_NOFOLLOW gives open()
            return None  # the link itself is replaced
        self._dir, self._base = os.path.split(os.path.realpath(self._full(self._base)))
        return _lstat(self._full(self._base))

    def _check_target(self, st: os.stat_result | None) -> OSError | None:
        problem = kind_refusal(self._mode.kind, st, self.path)
        if problem is not None or st is None:
            return problem
        if not os.access(self._full(self._base), os.W_OK):
            return _error(errno.EACCES, self.path)
        self.target_stat = st
        return None

    def target_key(self) -> tuple[int, int, str]:
        """The target's directory identity and its name there (see `_local`)."""
        d = os.stat(self._dir or os.curdir)
        return d.st_dev, d.st_ino, self._base

    def target_exists(self) -> bool:
        return _lstat(self._full(self._base)) is not None

    def create(self, permissions: Permissions) -> None:
        """Create the temp, never opening what is already there; for 'a' and 'r+' it
        starts as a copy of the target."""
        target = self.target_stat
        self.step = "permissions"
        self.final_mode = _permissions.final_mode(
            permissions, self._full(self._base), target, file=True
        )
        self.step = "create temp"
        mode = self._mode
        flags = os.O_CREAT | os.O_EXCL | _O_BINARY | _O_NOINHERIT
        flags |= os.O_RDWR if mode.plus or mode.kind == "r" else os.O_WRONLY
        create_mode = _permissions.create_mode(self.final_mode)
        for _ in range(_ATTEMPTS):
            assert self.temp_path is not None
            try:
                self._fd = os.open(self.temp_path, flags, create_mode)
            except FileExistsError:
                self._new_name()
                continue
            except OSError:
                raise
            except BaseException:
                self._created = True  # interrupted just after the create: remove the name
                raise
            self._created = True
            break
        else:
            raise FileExistsError(errno.EEXIST, "No free temp file name", self.temp_path)
        self.temp_stat = os.fstat(self._fd)
        if target is not None and mode.needs_copy:
            self.step = "copy"
            src = os.open(self._full(self._base), os.O_RDONLY | _O_BINARY | _O_NOINHERIT)
            try:
                _fs.copy_contents(src, self._fd)
            finally:
                os.close(src)
            os.lseek(self._fd, 0, os.SEEK_SET if mode.kind == "r" else os.SEEK_END)
        self.step = "open"

    def open_file(
        self, mode: str, buffering: int, encoding: str | None, errors: str | None,
        newline: str | None, name: str | bytes,
    ) -> IO[Any]:  # fmt: skip
        assert self.temp_stat is not None
        return file_object(
            self._fd, self.temp_stat, mode, buffering, encoding, errors, newline, name
        )

    def finish(self, durable: bool) -> None:
        """The final mode (Windows keeps only the read-only bit of it), then fsync."""
        self.step = "chmod"
        final, temp = self.final_mode, self.temp_stat
        assert temp is not None and self.temp_path is not None
        if final is not None and stat.S_IMODE(temp.st_mode) != final:
            os.chmod(self.temp_path, final)
        if durable:
            self.step = "fsync"
            _fs.fsync_file(self._fd)

    def publish(self, durable: bool, exclusive: bool) -> bool:
        """Close the temp (Windows can't rename an open file), then rename it over the
        target ('x': only if there is none)."""
        self.step = "close"
        self._close()
        self.step = "rename"
        assert self.temp_path is not None
        dst = self._full(self._base)
        if exclusive:
            leftover = _fs.rename_noreplace(self.temp_path, dst, None)
        else:
            os.replace(self.temp_path, dst)
            leftover = False
        self._created = leftover
        return leftover

    def sync_dir(self) -> bool:
        return True  # NTFS journals the rename; there is no directory handle to flush

    def remove(self) -> bool | OSError:
        """Close and unlink the temp if we made it. False: nothing to remove; True:
        removed; else the error (logged by the caller, never raised)."""
        if not self._created:
            return False
        self._created = False
        self._close()  # Windows can't delete an open file
        assert self.temp_path is not None
        try:
            os.unlink(self.temp_path)
        except OSError as exc:
            return exc
        return True

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        _fs.close_quietly(fd)

    def release(self) -> None:
        self._close()

    def forget(self) -> None:
        self._created = False
        self._close()

    def size(self) -> int:
        assert self.temp_path is not None
        return os.stat(self.temp_path).st_size
