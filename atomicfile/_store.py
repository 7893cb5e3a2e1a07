"""Where a write goes: `resolve()` picks the store that holds a target, once per write,
for every entry point; nothing after it asks which store it has.

A store makes the temps of its targets (`temp()`) and says what it can do:

- `batchable`: its temps can wait for one durability point together (`AtomicBatch`'s one
  `syncfs`) and share directory descriptors; an object store's upload commits alone.
- `lockable`: a write can hold a lock on the target (`lock=True`).
- `conditional`: instead (object stores), the final write can be made conditional: the
  store `read()`s an object with its version and `expect()`s it on the next write
  (`atomic_update`'s cycle).
- `sweeps_by_age`: `sweep()` (`clean_stale_temps`) can tell what a killed writer left only by
  its age (`older_than` is required), not by a lock that a live writer holds.

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
    from datetime import timedelta
    from typing import IO, Any, Protocol

    from ._log import AnyLogger, EventLog
    from ._modes import Mode
    from ._permissions import Permissions

    class Store(Protocol):
        """Where targets live: makes their temps, says what it can do."""

        batchable: bool
        lockable: bool
        conditional: bool
        sweeps_by_age: bool

        def temp(
            self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None
        ) -> Temp: ...
        def sweep(
            self, where: Any, *, recursive: bool, target: str | None, dry_run: bool,
            logger: AnyLogger | None, older_than: float | timedelta | None,
        ) -> list[str]: ...  # fmt: skip

    class ConditionalStore(Store, Protocol):
        """A store whose writes can be made conditional on the version read (`conditional`)."""

        def read(self) -> tuple[bytes | None, Any]: ...
        def expect(self, version: Any) -> None: ...

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

    #: Writes are made safe by the lock, not by a condition on a version read.
    conditional = False
    #: A temp's writer holds a lock on it: the sweep knows a live writer without its age.
    sweeps_by_age = False

    def temp(self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None) -> Temp:
        return LocalTemp(path, mode, follow, log, dirs)

    def sweep(
        self, where: Any, *, recursive: bool, target: str | None, dry_run: bool,
        logger: AnyLogger | None, older_than: float | timedelta | None,
    ) -> list[str]:  # fmt: skip
        """Remove the temps killed writers left in the directory `where` (`_clean`)."""
        from ._clean import sweep

        return sweep(where, recursive=recursive, target=target, dry_run=dry_run,
                     logger=logger, older_than=older_than)  # fmt: skip


#: The one local store (it holds no state of its own).
LOCAL = LocalStore()

#: The object stores, by fsspec protocol: the module that holds each one (imported only
#: when a target is in it), whose `resolve(file, fs, storage_options, permissions, durable,
#: follow_symlinks)` returns its `Store` for the target, raising before any I/O.
STORES = {
    "s3": "_s3", "s3a": "_s3", "memory": "_memory", "gs": "_gcs", "gcs": "_gcs",
    "az": "_azure", "abfs": "_azure", "abfss": "_azure",
}  # fmt: skip
SUPPORTED = (
    "s3:// (s3fs), gs:// (gcsfs), az:// and abfs:// (adlfs), memory:// (fsspec's memory "
    "file system) and local files"
)
#: What fsspec calls the local file system: the local store again.
_LOCAL_PROTOCOLS = ("file", "local")
#: Protocols fsspec knows, for the error given when fsspec is not installed at all.
_FSSPEC_NAMES = frozenset({
    "s3", "s3a", "gs", "gcs", "gcsfs", "az", "abfs", "abfss", "adl", "memory", "http",
    "https", "hdfs", "webhdfs", "sftp", "ftp", "ssh", "github", "git", "zip", "tar", "hf",
    "dbfs", "oci", "oss", "r2", "wasb",
})  # fmt: skip


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
    (`"s3://bucket/key"`, `"gs://…"`, `"az://…"`), a UPath or `fs=` an object store
    (`STORES`), whose extra is imported only then (`file://` and fsspec's local file system
    are the local store again). Raises `ValueError`/`TypeError` (an unsupported store,
    options that mean nothing there) or `ImportError` (the extra is missing) before any I/O.
    """
    if (
        fs is None
        and storage_options is None
        and ("://" not in file if isinstance(file, str) else type(file).__module__[:5] != "upath")
    ):
        return LOCAL, os.fspath(file)  # the usual case, decided without a call
    module, local = _route(file, fs, storage_options)
    if module is None:
        return LOCAL, local
    import importlib

    store = importlib.import_module(f".{module}", __package__).resolve(
        file, fs, storage_options, permissions, durable, follow_symlinks
    )
    return store, store.url


def _route(file: Any, fs: Any, storage_options: Any) -> tuple[str | None, str]:
    """The module of the object store that holds `file`, or (None, its local path)."""
    what = repr(str(file)) if not isinstance(file, bytes) else repr(file)
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(f"storage_options must be a dict, not {type(storage_options).__name__}")
    if type(file).__module__.startswith("upath"):
        if fs is not None or storage_options is not None:
            raise ValueError("a UPath carries its own file system: don't pass fs= or "
                             "storage_options= with it")  # fmt: skip
        protocols: tuple[str, ...] = (str(file.protocol),) if file.protocol else ("file",)
        local = str(file.path)
    elif fs is not None:
        if storage_options is not None:
            raise ValueError("storage_options configure a file system: give them to it, "
                             "not beside fs=")  # fmt: skip
        if not isinstance(file, str):
            raise TypeError(f"with fs=, the target must be a str path, not {type(file).__name__}")
        protocol = getattr(fs, "protocol", ())
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        local = fs._strip_protocol(file) if any(p in _LOCAL_PROTOCOLS for p in protocols) else ""
    elif isinstance(file, str) and "://" in file:
        protocol, _, local = file.partition("://")
        protocols = (protocol,)
        if (
            protocol not in STORES
            and protocol not in _LOCAL_PROTOCOLS
            and not _fsspec_knows(protocol, what)
        ):
            return None, _plain(file, storage_options)  # a local name that has '://' in it
    else:
        return None, _plain(file, storage_options)
    for protocol in protocols:
        if protocol in _LOCAL_PROTOCOLS:
            return None, local
        if protocol in STORES:
            return STORES[protocol], ""
    name = protocols[0] if protocols else type(fs).__name__
    raise ValueError(f"AtomicFile can't write {what}: the {name!r} store is not supported; "
                     f"supported are {SUPPORTED}")  # fmt: skip


def _fsspec_knows(protocol: str, what: str) -> bool:
    """Whether fsspec names `protocol` (then it is a store, even if not supported here)."""
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError as exc:
        if protocol in _FSSPEC_NAMES:
            err = ImportError(f"writing to {what} needs fsspec: pip install 'pyatomicfile[s3]'")
            raise err from exc
        return False
    return protocol in known_implementations or protocol in registry


def _plain(file: Any, storage_options: dict[str, Any] | None) -> str:
    if storage_options is not None:
        raise ValueError(
            "storage_options apply to an fsspec URL (such as 's3://bucket/key'), "
            f"not to the local path {os.fsdecode(os.fspath(file))!r}"
        )
    return os.fsdecode(os.fspath(file))
