"""Where a write goes: `resolve()` picks the store that holds a target, once per write,
for every entry point; nothing after it asks which store it has.

A store makes the temps of its targets (`temp()`) and says what it can do:

- `batchable`: its temps can wait for one durability point together (`AtomicBatch`'s one
  `syncfs`) and share directory descriptors; an object store's upload commits alone.
- `lockable`: a write can hold a lock on the target (`lock=True`); object stores make the
  final write conditional instead.

A temp (`Temp` below) does the work of one write that differs between stores; the state
machine (`_txn.Writer`), the log events and the error wrapping are written once, in the
writers:

- `inspect()`: find the target; return the `OSError` that `open()` would raise instead.
  `temp_path` is set afterwards (for the first log event).
- `create(permissions)`: make the temp (for 'a'/'r+', starting from the target's content).
- `open_file(...)`: the file object the user writes, named `name`.
- `finish(durable)`: after the user's file is flushed and closed: metadata, durability.
- `publish(durable, exclusive)`: replace the target in one step (`exclusive`: only if it
  does not exist); True when a temp name is left for `remove()`.
- `sync_dir()`: make the publication durable; False where the store can't.
- `remove()`: drop the temp (False: nothing to drop, True: dropped, or the error).
- `release()`: free what the write holds; `forget()`: the same in a forked child,
  without touching anything shared.
- `step`: the step under way, for `SessionFileError.step`.
"""

from __future__ import annotations

import os
import sys

# The platform's local temp, chosen once: nothing on the write path asks which it is.
if sys.platform == "win32":
    from ._local_nt import LocalTemp as LocalTemp
else:
    from ._local import LocalTemp as LocalTemp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Protocol

    from ._log import EventLog
    from ._modes import Mode
    from ._permissions import Permissions

    class Store(Protocol):
        """Where targets live: makes their temps, says what it can do."""

        batchable: bool
        lockable: bool

        def temp(
            self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None
        ) -> Temp: ...

    class Temp(Protocol):
        step: str
        temp_path: str | None

        def inspect(self) -> OSError | None: ...
        def create(self, permissions: Permissions) -> None: ...
        def open_file(
            self,
            mode: str,
            buffering: int,
            encoding: str | None,
            errors: str | None,
            newline: str | None,
            name: str | bytes,
        ) -> IO[Any]: ...
        def finish(self, durable: bool) -> None: ...
        def publish(self, durable: bool, exclusive: bool) -> bool: ...
        def sync_dir(self) -> bool: ...
        def remove(self) -> bool | OSError: ...
        def release(self) -> None: ...
        def forget(self) -> None: ...
        def size(self) -> int: ...


class LocalStore:
    """The local file system: a temp file beside the target, renamed over it."""

    __slots__ = ()
    batchable = True
    #: `lock=True` and `atomic_update` take a flock(2) on the target: POSIX only.
    lockable = sys.platform != "win32"

    def temp(self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None) -> Temp:
        return LocalTemp(path, mode, follow, log, dirs)


#: The one local store (it holds no state of its own).
LOCAL = LocalStore()

#: Object stores with a module of their own, by URL protocol and by fsspec package (the
#: rest, S3 and fsspec's memory store, are `_remote`'s).
_OBJECT_MODULES = {"gs": "_gcs", "gcs": "_gcs", "az": "_azure", "abfs": "_azure",
                   "abfss": "_azure"}  # fmt: skip
_FS_PACKAGES = {"gcsfs": "_gcs", "adlfs": "_azure"}


def _object_module(file: Any, fs: Any) -> str | None:
    """The module of the store `file` (or `fs=`) is in, if it has one of its own."""
    if fs is not None:
        return _FS_PACKAGES.get(type(fs).__module__.partition(".")[0])
    if type(file).__module__[:5] == "upath":
        return _OBJECT_MODULES.get(str(file.protocol))
    if isinstance(file, str):
        return _OBJECT_MODULES.get(file.partition("://")[0])
    return None


def resolve(
    file: Any,
    fs: Any = None,
    storage_options: dict[str, Any] | None = None,
    *,
    permissions: Permissions = None,
    durable: bool = True,
    follow_symlinks: bool = True,
) -> tuple[Store, str | bytes]:
    """The store that holds `file`, and the target's name as `open()` would give it (for
    an object: its URL).

    A local path (`str`, `bytes`, `os.PathLike`) is the local store; an fsspec URL
    (`"s3://bucket/key"`, `"gs://…"`, `"az://…"`), a UPath or `fs=` an object store, whose
    extra is imported only then (`file://` and fsspec's local file system are the local
    store again). Raises
    `ValueError`/`TypeError` (an unsupported store, options that mean nothing there) or
    `ImportError` (the extra is missing) before any I/O.
    """
    if (
        fs is None
        and storage_options is None
        and ("://" not in file if isinstance(file, str) else type(file).__module__[:5] != "upath")
    ):
        return LOCAL, os.fspath(file)  # the usual case, decided without a call
    name = _object_module(file, fs)
    if name is not None:
        import importlib

        module = importlib.import_module(f".{name}", __package__)
        store = module.resolve(file, fs, storage_options, permissions, durable, follow_symlinks)
        return store, store.url
    from . import _remote

    where = _remote.resolve(file, fs, storage_options, permissions, durable, follow_symlinks)
    if isinstance(where, str):
        return LOCAL, where
    return where, where.url
