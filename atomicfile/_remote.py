"""What the object stores' writes share (see `_store.Temp`): the store and temp bases, the
local spool, the conditions, the error mapping and the exit hook. Each store has its own
module (`_s3`, `_memory`); `_store.resolve()` picks it.

An object store has no rename, but it publishes an object in one step: a PUT, or the
completion of a multipart upload. Until then readers see the old object (or none). So the
"temp" of a remote write is an upload that is not complete yet, and discarding it is
aborting the upload. Nothing here uses `fs.open()` or `fs.transaction`: a transaction
belongs to the shared, cached file-system instance, so one thread's commit would publish
another thread's half-written file. Each write holds its own upload and ends it itself.

'a', 'r+' and every '+' mode need to read and seek: their temp is an anonymous local file
(in `$TMPDIR`, the spool) that starts as a copy of the object and is uploaded at the
commit. A store may stream the other modes instead (`_s3`).

The commit is conditional (`RemoteTemp.expected`): 'x' only if there is no object (also
for empty content); 'a'/'r+' only if the object is still the version the copy came from
(else `ESTALE`, a concurrent update reported instead of lost), or still absent if there
was none; `atomic_update` makes any write conditional on the version it read
(`RemoteStore.expect`). A failed commit aborts the upload.

Writes still open when the interpreter exits are aborted by an exit hook (`track`), while
fsspec's I/O thread still runs; later in the shutdown it is gone, and no request is
attempted (waiting for one would never end).

The protocol's state machine, log events and error wrapping stay in the writers.
"""

from __future__ import annotations

import atexit
import errno
import io
import os
import threading
import weakref

from . import _fs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import timedelta
    from typing import IO, Any

    from ._log import AnyLogger, EventLog
    from ._modes import Mode
    from ._permissions import Permissions

#: Writes whose upload was started and is not yet completed or aborted (see `_abort_at_exit`).
_open_uploads: weakref.WeakSet[Any] = weakref.WeakSet()
_exit_hook = False
_exit_hook_lock = threading.Lock()


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: "Whatever is there": a write that publishes without a condition ('w').
ANY: Any = _Any()


# -- choosing the store ---------------------------------------------------------------------


def describe(file: Any) -> str:
    """The target as error messages name it."""
    return repr(str(file)) if not isinstance(file, bytes) else repr(file)


def missing_extra(what: str, extra: str, exc: ImportError) -> ImportError:
    """`extra`: what to install, and how."""
    err = ImportError(f"writing to {what} needs {extra}")
    err.__cause__ = exc
    return err


def protocols_of(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def file_system(
    file: Any, fs: Any, storage_options: dict[str, Any] | None, extra: str
) -> tuple[Any, str, str]:
    """The file system, key and URL of a target that `_store.resolve()` found to be in an
    object store: a UPath, a path with `fs=`, or a URL (fsspec and the store's package
    imported only now; `extra`: the install command named when they are missing)."""
    if type(file).__module__.startswith("upath"):
        return file.fs, str(file.path), str(file)
    if fs is not None:
        key = fs._strip_protocol(file)
        return fs, key, fs.unstrip_protocol(key) if hasattr(fs, "unstrip_protocol") else file
    try:
        import fsspec

        fs, key = fsspec.core.url_to_fs(file, **(storage_options or {}))
    except ImportError as exc:
        raise missing_extra(describe(file), extra, exc) from None
    return fs, str(key), file


def refuse_local_options(what: str, permissions: Any, durable: bool, follow: bool) -> None:
    """Options that mean nothing for an object: a ValueError before any I/O."""
    for name, bad in (
        ("permissions", permissions is not None),
        ("follow_symlinks=False", not follow),
        ("durable=False", not durable),
    ):
        if bad:
            raise ValueError(
                f"{name} means nothing for an object in a store ({what}): leave it out "
                "(an object has no mode bits nor links, and a completed upload is durable)"
            )


class RemoteStore:
    """An object store's target: its file system, key and URL; what a store module's
    `resolve()` returns. Subclasses make the temps (`temp()`), read an object with its
    version (`read()`), and sweep what killed writers left (`sweep()`)."""

    __slots__ = ("expected", "fs", "key", "url")
    #: An upload commits alone: no shared durability point with local temps.
    batchable = False
    #: No locks on an object: its writes are conditional instead (If-Match).
    lockable = False

    def __init__(self, fs: Any, key: str, url: str) -> None:
        self.fs = fs
        self.key = key
        self.url = url
        #: The version a 'w' write through this store must replace (`expect`).
        self.expected: Any = ANY

    #: `atomic_update` reads a version (`read()`) and writes on condition (`expect()`).
    conditional = True
    #: An upload has no lock that shows a live writer: only its age tells (`sweep`).
    sweeps_by_age = True

    def sweep(
        self, where: Any, *, recursive: bool, target: str | None, dry_run: bool,
        logger: AnyLogger | None, older_than: float | timedelta | None,
    ) -> list[str]:  # fmt: skip
        """Abort what killed writers left under this prefix, started more than
        `older_than` ago (required); every key under it is swept (`recursive` or not)."""
        if target is not None:
            raise ValueError(f"target= applies to a local directory; the sweep of {self.url!r} "
                             "takes every key under it")  # fmt: skip
        return self.sweep_prefix(seconds(older_than), dry_run, logger)

    def sweep_prefix(self, older_than: float, dry_run: bool, logger: AnyLogger | None) -> list[str]:
        raise NotImplementedError

    def expect(self, version: Any) -> None:
        """Make the writes through this store publish only over `version` (as `read()`
        returned it; None: only if there is no object), else fail with ESTALE/EEXIST."""
        self.expected = version


def seconds(older_than: float | timedelta | None) -> float:
    """`older_than` as seconds; a remote sweep must be given one (never a live upload)."""
    if older_than is None:
        raise ValueError(
            "a remote sweep needs older_than (seconds or a timedelta): an upload has no lock "
            "that tells a live writer from a dead one, only its age"
        )
    value = (
        older_than.total_seconds() if hasattr(older_than, "total_seconds") else float(older_than)
    )
    if not value >= 0:
        raise ValueError(f"older_than must be >= 0, not {older_than!r}")
    return value


# -- errors ----------------------------------------------------------------------------------


def _client_code(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return str(code) if code is not None else None
        seen = seen.__cause__
    return None


_BY_CODE = {
    "NoSuchBucket": errno.ENOENT,
    "NoSuchKey": errno.ENOENT,
    "NoSuchUpload": errno.ENOENT,
    "404": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "403": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
}

#: What a failed condition is reported as: the object changed (If-Match), it exists
#: (If-None-Match), or another conditional write was under way (S3's 409).
CONFLICTS = frozenset({errno.ESTALE, errno.EEXIST, errno.EAGAIN})


def store_error(exc: BaseException, url: str, condition: str | None = None) -> OSError:
    """The builtin `OSError` (with an errno) a user would catch for a store's error;
    `exc` is chained as its cause. `condition`: the header the failed request sent."""
    code = _client_code(exc)
    message = str(exc)
    if code in ("PreconditionFailed", "412") or (code is None and isinstance(exc, FileExistsError)):
        if condition == "If-Match":
            number, message = errno.ESTALE, "the object changed since it was read"
        else:
            number, message = errno.EEXIST, "the object exists"
    elif code == "ConditionalRequestConflict":
        number = errno.EAGAIN
    elif code in _BY_CODE:
        number = _BY_CODE[code]
    elif isinstance(exc, FileNotFoundError):
        number = errno.ENOENT
    elif isinstance(exc, PermissionError):
        number = errno.EACCES
    elif isinstance(exc, OSError) and exc.errno is not None and code is None:
        number = exc.errno
    else:
        number = errno_in_chain(exc)
    err = OSError(number, message or os.strerror(number), url)
    err.__cause__ = exc
    return err


#: Where the errors of a request to the store come from (besides OSError).
_STORE_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "s3fs", "fsspec")


def is_store_error(exc: BaseException) -> bool:
    """An error of the request (the store's answer, the connection), not of our code."""
    return isinstance(exc, OSError) or type(exc).__module__.startswith(_STORE_MODULES)


def errno_in_chain(exc: BaseException) -> int:
    """A dropped connection's errno (ECONNREFUSED...) where a cause has one, else EIO."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return errno.EIO


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- the temp --------------------------------------------------------------------------------


class RemoteTemp:
    """One write to an object store, on a local spool file; a store's temp subclasses it
    with `_version()`, `_read_into(fd)` and `publish()` (and may stream instead of
    spooling)."""

    __slots__ = ("__weakref__", "_existed", "_fd", "_log", "_mode", "_version_read", "step",
                 "target", "temp_path")  # fmt: skip

    def __init__(self, target: RemoteStore, mode: Mode, log: EventLog) -> None:
        self.target = target
        self._mode = mode
        self._log = log
        self.step = "open"
        self.temp_path: str | None = None
        self._fd = -1
        self._version_read: Any = None  # the version the 'a'/'r+' copy came from
        self._existed = False

    def _version(self) -> Any:
        """The object's version now; None if there is no object."""
        raise NotImplementedError

    def _read_into(self, fd: int) -> Any:
        """Copy the object into `fd`; its version, None (nothing written) if there is none."""
        raise NotImplementedError

    # -- open --------------------------------------------------------------------------

    def inspect(self) -> OSError | None:
        """'x' finds no object, 'r+' finds one (as `open()` would say); one look each.
        'w' asks nothing: a missing bucket is reported by the first upload."""
        kind = self._mode.kind
        if kind not in "xr":
            return None
        try:
            exists = self._version() is not None
        except OSError as exc:
            return exc
        if kind == "x" and exists:
            return OSError(errno.EEXIST, os.strerror(errno.EEXIST), self.target.url)
        if kind == "r" and not exists:
            return OSError(errno.ENOENT, os.strerror(errno.ENOENT), self.target.url)
        return None

    def create(self, permissions: Permissions) -> None:
        self.step = "create temp"
        import tempfile

        fd, name = tempfile.mkstemp(prefix=".atomicfile-", suffix=".tmp")
        os.unlink(name)  # anonymous: nothing to sweep if this process dies
        self._fd = fd
        if self._mode.needs_copy:
            self.step = "copy"
            self._version_read = version = self._read_into(fd)
            self._existed = version is not None
            if version is None and self._mode.kind == "r":
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), self.target.url)
            os.lseek(fd, 0, os.SEEK_SET)
            if self._mode.kind == "a":
                import fcntl

                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)

    def open_file(
        self, mode: str, buffering: int, encoding: str | None, errors: str | None,
        newline: str | None, name: str | bytes,
    ) -> IO[Any]:  # fmt: skip
        self.step = "open"
        file: Any = open(  # noqa: SIM115 - the caller owns and closes it
            self._fd, mode, buffering if buffering >= 0 else io.DEFAULT_BUFFER_SIZE,
            encoding, errors, newline, closefd=False,
        )  # fmt: skip
        raw = file if buffering == 0 else file.buffer.raw if "b" not in mode else file.raw
        raw.name = name
        return file  # type: ignore[no-any-return]

    # -- commit ------------------------------------------------------------------------

    def finish(self, durable: bool) -> None:
        self.step = "upload"

    def expected(self, exclusive: bool) -> Any:
        """The version the publication must replace: None (no object may be there),
        `ANY` (no condition), or a version (ETag...) the store checks."""
        if exclusive:
            return None
        if self._mode.needs_copy:
            return self._version_read  # None: there was no object, so none may appear
        return self.target.expected

    def spooled(self) -> bytes:
        """The spool's whole content (what the user wrote)."""
        fd = self._fd
        return os.pread(fd, os.fstat(fd).st_size, 0)

    def sync_dir(self) -> bool:
        return True  # a completed upload is durable when the store acknowledges it

    # -- the end -----------------------------------------------------------------------

    def remove(self) -> bool | OSError:
        return False  # a spool is anonymous: nothing to drop but its descriptor

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        _fs.close_quietly(fd)

    def forget(self) -> None:
        self.release()

    def size(self) -> int:
        return os.fstat(self._fd).st_size if self._fd >= 0 else 0


# -- at exit ---------------------------------------------------------------------------------


def track(temp: Any) -> None:
    """Keep `temp` (weakly) for the exit hook until its upload is completed or aborted
    (`untrack`); at exit, its `remove()` aborts it."""
    global _exit_hook
    with _exit_hook_lock:
        if not _exit_hook:
            _exit_hook = True
            # s3fs closes its clients from weakref.finalize's exit hook, and atexit runs the
            # last registered hook first: make sure that one is registered before ours (any
            # finalizer registers it), so that ours runs while the clients are still open.
            weakref.finalize(_abort_at_exit, lambda: None)
            atexit.register(_abort_at_exit)
        _open_uploads.add(temp)


def untrack(temp: Any) -> None:
    _open_uploads.discard(temp)


def _abort_at_exit() -> None:
    """Abort the uploads of writes still open when the interpreter exits. atexit hooks run
    while fsspec's I/O thread still does; the objects' `__del__` run later, when it is gone
    and they must not wait for it (a store's requests refuse then). A write whose abort
    fails here (the store is unreachable) is left to the sweep."""
    for temp in list(_open_uploads):
        temp.remove()


if hasattr(os, "register_at_fork"):
    # A forked child's copy of an open write belongs to the parent: never abort it at exit.
    os.register_at_fork(after_in_child=_open_uploads.clear)
