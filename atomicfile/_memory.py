"""fsspec's memory file system (one process's dict of objects): the store and its temp (see
`_remote` for what object stores share).

Every write spools; the commit checks its condition and stores the object under one lock
(`_lock`), so that a check and its publication are one step for the threads of the process.
An object's version is the object itself: storing replaces it with a new one.
"""

from __future__ import annotations

import errno
import threading

from . import _remote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._log import AnyLogger, EventLog
    from ._modes import Mode
    from ._permissions import Permissions

EXTRA = "fsspec: pip install 'pyatomicfile[s3]'"
#: The check-then-publish of every memory write runs under this lock (one process).
_lock = threading.Lock()


def resolve(
    file: Any,
    fs: Any,
    storage_options: dict[str, Any] | None,
    permissions: Permissions,
    durable: bool,
    follow_symlinks: bool,
) -> MemoryStore:
    """The memory store of `file` (a URL, a UPath, or a path with `fs=`), before any I/O."""
    what = _remote.describe(file)
    fs, key, url = _remote.file_system(file, fs, storage_options, EXTRA)
    if not type(fs).__module__.startswith("fsspec"):
        raise ValueError(f"AtomicFile can't write {what}: only fsspec's own memory file "
                         "system is supported for memory://")  # fmt: skip
    _remote.refuse_local_options(what, permissions, durable, follow_symlinks)
    return MemoryStore(fs, fs._strip_protocol(key), url)


class MemoryStore(_remote.RemoteStore):
    """An object in fsspec's memory file system."""

    __slots__ = ()

    def temp(
        self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None
    ) -> MemoryTemp:
        return MemoryTemp(self, mode, log)

    def current(self) -> Any:
        """The object now (its version), None if there is none."""
        with _lock:
            return self.fs.store.get(self.key)

    def read(self) -> tuple[bytes | None, Any]:
        """The object's content and version; (None, None) when there is none."""
        version = self.current()
        return (None, None) if version is None else (bytes(version.getvalue()), version)

    def sweep_prefix(self, older_than: float, dry_run: bool, logger: AnyLogger | None) -> list[str]:
        """Nothing to sweep: a memory write's temp is an anonymous local file, gone with
        its process, and nothing reaches the store before the commit."""
        return []


class MemoryTemp(_remote.RemoteTemp):
    """One write to the memory store, on a local spool."""

    __slots__ = ()
    target: MemoryStore

    def _version(self) -> Any:
        return self.target.current()

    def _read_into(self, fd: int) -> Any:
        version = self._version()
        if version is not None:
            _remote.write_all(fd, version.getvalue())
        return version

    def publish(self, durable: bool, exclusive: bool) -> bool:
        self.step = "commit"
        expected = self.expected(exclusive)
        fs, key, url = self.target.fs, self.target.key, self.target.url
        data = self.spooled()
        with _lock:
            current = fs.store.get(key)
            if expected is None and current is not None:
                raise OSError(errno.EEXIST, "the object exists", url)
            if expected is not _remote.ANY and expected is not None and current is not expected:
                raise OSError(errno.ESTALE, "the object changed since it was read", url)
            fs.pipe_file(key, data)
        return False
