"""An object store's side of an atomic write (see `_store.Temp`): S3 through s3fs, and
fsspec's memory file system.

An object store has no rename, but it publishes an object in one step: a PUT, or the
completion of a multipart upload. Until then readers see the old object (or none). So the
"temp" of a remote write is an upload that is not complete yet, and discarding it is
aborting the upload. Nothing here uses `fs.open()` or `fs.transaction`: a transaction
belongs to the shared, cached file-system instance, so one thread's commit would publish
another thread's half-written file. Each write holds its own upload and ends it itself.

Two shapes of temp:
- 'w' and 'x' without '+' stream: what the user writes fills a buffer of one part
  (the file system's block size, 50 MiB for s3fs by default); each full part is uploaded
  while the block runs, so memory does not grow with the object's size. A write that never
  fills a part is one PUT at the commit (as fast as `fs.pipe`).
- 'a', 'r+' and every '+' mode need to read and seek: the temp is an anonymous local file
  (in `$TMPDIR`) that starts as a copy of the object and is uploaded at the commit.
  The memory file system always takes this shape.

The commit is conditional where the store can check a condition: 'x' sends
`If-None-Match: *` (also for empty content), and 'a'/'r+' send `If-Match: <the ETag read>`
so that a concurrent update is reported (`ESTALE`) instead of lost; an 'a' of a key that did
not exist sends `If-None-Match: *`. A failed commit aborts the upload.

Every request is sent on the file system's event loop (fsspec's I/O thread) and awaited
from the writer's thread as a future that is kept: when the wait is interrupted (Ctrl-C, the
CLI's SIGTERM) while CreateMultipartUpload is on the wire, `remove()` still collects the
upload's id from that future and aborts the upload. Writes still open when the interpreter
exits are aborted by an exit hook, while that thread still runs; later in the shutdown it
is gone, and no request is attempted (waiting for one would never end).

The protocol's state machine, log events and error wrapping stay in `_core`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import io
import os
import sys
import threading
import weakref

from . import _fs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

    from ._log import EventLog
    from ._modes import Mode
    from ._permissions import Permissions

SUPPORTED = "s3:// (s3fs), memory:// (fsspec's memory file system) and local files"
EXTRA = "pip install 'pyatomicfile[s3]'"
#: S3's smallest part (all but the last); a part size below it is raised to it.
MIN_PART = 5 * 2**20
#: Protocols fsspec knows, for the error given when fsspec is not installed at all.
_FSSPEC_NAMES = frozenset({
    "s3", "s3a", "gs", "gcs", "gcsfs", "az", "abfs", "abfss", "adl", "memory", "http",
    "https", "hdfs", "webhdfs", "sftp", "ftp", "ssh", "github", "git", "zip", "tar", "hf",
    "dbfs", "oci", "oss", "r2", "wasb",
})  # fmt: skip
_LOCAL_PROTOCOLS = ("file", "local")
#: The memory file system's check-then-publish runs under this lock (one process).
_memory_lock = threading.Lock()
#: Writes whose upload was started and is not yet completed or aborted (see `_abort_at_exit`).
_open_uploads: weakref.WeakSet[RemoteTemp] = weakref.WeakSet()
_exit_hook = False
_exit_hook_lock = threading.Lock()


# -- choosing the store ---------------------------------------------------------------------


class Target:
    """A remote target, resolved once in `AtomicFile.__init__`: its store and key."""

    __slots__ = ("fs", "key", "kind", "url")
    #: An upload commits alone: no shared durability point with local temps.
    batchable = False
    #: No locks on an object: its writes are conditional instead (If-Match).
    lockable = False

    def __init__(self, fs: Any, key: str, kind: str, url: str) -> None:
        self.fs = fs
        self.key = key
        self.kind = kind  # "s3" or "memory"
        self.url = url

    def temp(
        self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None
    ) -> RemoteTemp:
        return RemoteTemp(self, mode, log)


def _missing_extra(what: str, exc: ImportError) -> ImportError:
    err = ImportError(f"writing to {what} needs fsspec, s3fs and universal-pathlib: {EXTRA}")
    err.__cause__ = exc
    return err


def _protocol_of(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _kind(fs: Any, what: str) -> str | None:
    """'s3' or 'memory' for a supported store, None for fsspec's local file system."""
    protocols = _protocol_of(fs)
    if "s3" in protocols and type(fs).__module__.startswith("s3fs"):
        return "s3"
    if "memory" in protocols and type(fs).__module__.startswith("fsspec"):
        return "memory"
    if any(p in _LOCAL_PROTOCOLS for p in protocols):
        return None
    name = protocols[0] if protocols else type(fs).__name__
    raise ValueError(
        f"AtomicFile can't write {what}: the {name!r} file system is not supported "
        f"(its abort is not verified); supported are {SUPPORTED}"
    )


def resolve(
    file: Any,
    fs: Any,
    storage_options: dict[str, Any] | None,
    permissions: Permissions,
    durable: bool,
    follow_symlinks: bool,
) -> Target | str:
    """The store for `file`: a `Target`, or a `str` path for the local store. Raises
    `ValueError` (unsupported store, options that mean nothing for an object) or
    `ImportError` (the `s3` extra is missing) before any I/O."""
    what = repr(str(file)) if not isinstance(file, bytes) else repr(file)
    local: str | None = None
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(f"storage_options must be a dict, not {type(storage_options).__name__}")
    if type(file).__module__.startswith("upath"):
        if fs is not None or storage_options is not None:
            raise ValueError("a UPath carries its own file system: don't pass fs= or "
                             "storage_options= with it")  # fmt: skip
        if not file.protocol or file.protocol in _LOCAL_PROTOCOLS:
            local = file.path
        else:
            fs, key, url = file.fs, file.path, str(file)
    elif fs is not None:
        if storage_options is not None:
            raise ValueError("storage_options configure a file system: give them to it, "
                             "not beside fs=")  # fmt: skip
        if not isinstance(file, str):
            raise TypeError(f"with fs=, the target must be a str path, not {type(file).__name__}")
        key = fs._strip_protocol(file)
        url = fs.unstrip_protocol(key) if hasattr(fs, "unstrip_protocol") else file
        if _kind(fs, what) is None:
            local = key
    elif isinstance(file, str) and "://" in file:
        protocol = file.partition("://")[0]
        if protocol in _LOCAL_PROTOCOLS:
            local = file.partition("://")[2]
        else:
            try:
                import fsspec
            except ImportError as exc:
                if protocol in _FSSPEC_NAMES:
                    raise _missing_extra(what, exc) from None
                return _plain(file, storage_options)
            from fsspec.registry import known_implementations, registry

            if protocol not in known_implementations and protocol not in registry:
                return _plain(file, storage_options)  # a local name that has '://' in it
            if protocol not in ("s3", "s3a", "memory"):
                raise ValueError(f"AtomicFile can't write {what}: the {protocol!r} store is "
                                 f"not supported; supported are {SUPPORTED}")  # fmt: skip
            try:
                fs, key = fsspec.core.url_to_fs(file, **(storage_options or {}))
            except ImportError as exc:
                raise _missing_extra(what, exc) from None
            url = file
    else:
        return _plain(file, storage_options)
    if local is not None:
        return str(local)
    kind = _kind(fs, what)
    if kind is None:
        return str(key)
    for name, bad in (
        ("permissions", permissions is not None),
        ("follow_symlinks=False", not follow_symlinks),
        ("durable=False", not durable),
    ):
        if bad:
            raise ValueError(
                f"{name} means nothing for an object in a store ({what}): leave it out "
                "(an object has no mode bits nor links, and a completed upload is durable)"
            )
    return Target(fs, key, kind, url)


def _plain(file: Any, storage_options: dict[str, Any] | None) -> str:
    if storage_options is not None:
        raise ValueError(
            "storage_options apply to an fsspec URL (such as 's3://bucket/key'), "
            f"not to the local path {os.fsdecode(os.fspath(file))!r}"
        )
    return os.fsdecode(os.fspath(file))


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
        number = _errno_in_chain(exc)
    err = OSError(number, message or os.strerror(number), url)
    err.__cause__ = exc
    return err


#: Where the errors of a request to the store come from (besides OSError).
_STORE_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "s3fs", "fsspec")


def is_store_error(exc: BaseException) -> bool:
    """An error of the request (the store's answer, the connection), not of our code."""
    return isinstance(exc, OSError) or type(exc).__module__.startswith(_STORE_MODULES)


def _errno_in_chain(exc: BaseException) -> int:
    """A dropped connection's errno (ECONNREFUSED...) where a cause has one, else EIO."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return errno.EIO


# -- the stores ------------------------------------------------------------------------------


class _S3:
    """The S3 requests one write makes, through s3fs's client (its retries, its errors)."""

    def __init__(self, target: Target) -> None:
        self.fs = fs = target.fs
        self.url = target.url
        bucket, key, _ = fs.split_path(target.key)
        self.where = {"Bucket": bucket, "Key": key}
        self.part_size = max(int(getattr(fs, "blocksize", 0) or 0), MIN_PART)

    def call(self, method: str, condition: str | None = None, **kwargs: Any) -> Any:
        return self.answer(self.submit(method, **kwargs), condition)

    def submit(self, method: str, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Send one request; `answer()` waits for it. Apart, so that a caller whose wait is
        interrupted still holds the request, and can collect its answer later."""
        return self._run(self.fs._call_s3, method, **self.where, **kwargs)

    def _run(self, func: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        loop = self.fs.loop
        if sys.is_finalizing() or loop.is_closed():
            # fsspec's thread stops with the interpreter: a wait for it would never end.
            why = "the interpreter is exiting"
        elif _running_loop() is loop:
            why = "called on fsspec's own I/O thread, which can't wait for itself"
        else:
            return asyncio.run_coroutine_threadsafe(func(*args, **kwargs), loop)
        raise OSError(errno.ECANCELED, f"no request can be sent: {why}", self.url)

    def answer(self, future: concurrent.futures.Future[Any], condition: str | None = None) -> Any:
        """The request's answer; its error as the builtin `OSError` (see `store_error`)."""
        while future not in concurrent.futures.wait((future,), timeout=1).done:
            pass  # a wake-up each second: a signal another thread received is handled here
        try:
            return future.result()
        except Exception as exc:
            if not is_store_error(exc):
                raise  # a bug or a bad option (TypeError...): not the store's answer
            raise store_error(exc, self.url, condition) from exc

    def head(self) -> str | None:
        """The object's ETag, None if there is no object."""
        try:
            return str(self.call("head_object")["ETag"])
        except FileNotFoundError:
            return None

    def read_into(self, fd: int) -> str | None:
        """Copy the object into `fd`; its ETag, None (nothing written) if there is none."""
        try:
            response = self.call("get_object")
        except FileNotFoundError:
            return None
        body = response["Body"]
        try:
            while chunk := self.answer(self._run(body.read, 2**20)):
                _write_all(fd, chunk)  # the spool's own errors (ENOSPC...) as they are
        finally:
            body.close()
        return str(response["ETag"])

    def part(self, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        done = self.call("upload_part", UploadId=upload_id, PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": done["ETag"]}

    def put(self, data: bytes, condition: dict[str, str]) -> None:
        self.call("put_object", _name(condition), Body=data, **condition)

    def complete(
        self, upload_id: str, parts: list[dict[str, Any]], condition: dict[str, str]
    ) -> None:
        self.call(
            "complete_multipart_upload",
            _name(condition),
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            **condition,
        )

    def abort(self, upload_id: str) -> None:
        self.call("abort_multipart_upload", UploadId=upload_id)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _name(condition: dict[str, str]) -> str | None:
    return "If-Match" if "IfMatch" in condition else "If-None-Match" if condition else None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _PartWriter(io.RawIOBase):
    """The raw file under a streaming write: fills one part in memory and uploads each full
    part as the next part of the write's multipart upload. `close()` publishes nothing."""

    def __init__(self, temp: RemoteTemp, name: str | bytes) -> None:
        super().__init__()
        self._temp = temp
        self.name = name
        self.mode = "wb"

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to closed file")
        temp = self._temp
        if temp.ended:  # never a new upload after the abort (the exit hook's, say)
            raise temp.aborted()
        view = memoryview(data).cast("B")
        temp.buffer += view
        temp.written += len(view)
        if len(temp.buffer) >= temp.store.part_size:  # type: ignore[union-attr]
            temp.upload_full_parts()
        return len(view)


# -- the temp --------------------------------------------------------------------------------


class RemoteTemp:
    """One write to an object store: an upload not yet completed, or a local spool file."""

    __slots__ = (
        "__weakref__", "_etag", "_existed", "_fd", "_log", "_mode", "buffer", "ended", "parts",
        "starting", "step", "store", "target", "temp_path", "upload_id", "written",
    )  # fmt: skip

    def __init__(self, target: Target, mode: Mode, log: EventLog) -> None:
        self.target = target
        self._mode = mode
        self._log = log
        self.step = "open"
        self.temp_path: str | None = None
        self.store: _S3 | None = _S3(target) if target.kind == "s3" else None
        self._fd = -1
        self._etag: Any = None  # the ETag (S3) or the object (memory) the copy came from
        self._existed = False
        self.buffer = bytearray()
        self.written = 0
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None
        #: The CreateMultipartUpload request until its answer is collected.
        self.starting: concurrent.futures.Future[Any] | None = None
        #: Removed (aborted, discarded): nothing more is written nor published.
        self.ended = False

    @property
    def _streams(self) -> bool:
        return self.store is not None and self._mode.kind in "wx" and not self._mode.plus

    # -- open --------------------------------------------------------------------------

    def inspect(self) -> OSError | None:
        """'x' finds no object, 'r+' finds one (as `open()` would say); one HEAD each.
        'w' asks nothing: a missing bucket is reported by the first upload."""
        kind = self._mode.kind
        if kind not in "xr":
            return None
        try:
            exists = self._exists()
        except OSError as exc:
            return exc
        if kind == "x" and exists:
            return OSError(errno.EEXIST, os.strerror(errno.EEXIST), self.target.url)
        if kind == "r" and not exists:
            return OSError(errno.ENOENT, os.strerror(errno.ENOENT), self.target.url)
        return None

    def _exists(self) -> bool:
        if self.store is not None:
            return self.store.head() is not None
        fs = self.target.fs
        return fs._strip_protocol(self.target.key) in fs.store

    def create(self, permissions: Permissions) -> None:
        self.step = "create temp"
        if self._streams:
            return
        import tempfile

        fd, name = tempfile.mkstemp(prefix=".atomicfile-", suffix=".tmp")
        os.unlink(name)  # anonymous: nothing to sweep if this process dies
        self._fd = fd
        if self._mode.needs_copy:
            self.step = "copy"
            self._etag = self._copy_in(fd)
            os.lseek(fd, 0, os.SEEK_SET)
            if self._mode.kind == "a":
                import fcntl

                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)

    def _copy_in(self, fd: int) -> Any:
        if self.store is not None:
            etag = self.store.read_into(fd)
        else:
            fs = self.target.fs
            with _memory_lock:
                etag = fs.store.get(fs._strip_protocol(self.target.key))
            if etag is not None:
                _write_all(fd, etag.getvalue())
        self._existed = etag is not None
        if etag is None and self._mode.kind == "r":
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), self.target.url)
        return etag

    def open_file(
        self, mode: str, buffering: int, encoding: str | None, errors: str | None,
        newline: str | None, name: str | bytes,
    ) -> IO[Any]:  # fmt: skip
        self.step = "open"
        if not self._streams:
            file: Any = open(  # noqa: SIM115 - the caller owns and closes it
                self._fd, mode, buffering if buffering >= 0 else io.DEFAULT_BUFFER_SIZE,
                encoding, errors, newline, closefd=False,
            )  # fmt: skip
            raw = file if buffering == 0 else file.buffer.raw if "b" not in mode else file.raw
            raw.name = name
            return file  # type: ignore[no-any-return]
        raw = _PartWriter(self, name)
        if buffering == 0:
            return raw  # type: ignore[return-value]
        size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
        buffered = io.BufferedWriter(raw, size)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding, errors, newline, line_buffering=buffering == 1)

    def upload_full_parts(self) -> None:
        """Upload each full part the buffer holds (the block's writes call this)."""
        store = self.store
        assert store is not None
        size = store.part_size
        while len(self.buffer) >= size:
            if self.upload_id is None:
                self._start(store)
            assert self.upload_id is not None
            part = bytes(self.buffer[:size])
            del self.buffer[:size]
            self.parts.append(store.part(self.upload_id, len(self.parts) + 1, part))

    def _start(self, store: _S3) -> None:
        """Create the multipart upload. The request is kept in `starting` until its answer
        is read: if the wait is interrupted, `remove()` collects the id and aborts it."""
        self.starting = store.submit("create_multipart_upload")
        _track(self)
        self._started(store.answer(self.starting))

    def _started(self, answer: dict[str, Any]) -> None:
        self.upload_id = upload_id = str(answer["UploadId"])
        self.starting = None
        self.temp_path = f"{self.target.url}?uploadId={upload_id}"

    # -- commit ------------------------------------------------------------------------

    def finish(self, durable: bool) -> None:
        self.step = "upload"

    def _condition(self, exclusive: bool) -> dict[str, str]:
        if exclusive or (self._mode.needs_copy and not self._existed):
            return {"IfNoneMatch": "*"}
        if self._mode.needs_copy and self.store is not None:
            return {"IfMatch": str(self._etag)}
        return {}

    def publish(self, durable: bool, exclusive: bool) -> bool:
        """Complete the upload (or PUT the object) in one step, conditionally where the
        mode asks; on failure the caller's cleanup aborts the upload."""
        self.step = "commit"
        if self.ended:  # aborted by the exit hook: what was written is gone
            raise self.aborted()
        condition = self._condition(exclusive)
        store = self.store
        if store is None:
            self._publish_memory(condition)
            return False
        if not self._streams:
            self._fill_from_spool(store)
        if self.upload_id is None:
            data = bytes(self.buffer)
            self.buffer = bytearray()
            store.put(data, condition)
            return False
        if self.buffer or not self.parts:
            data = bytes(self.buffer)
            self.buffer = bytearray()
            self.parts.append(store.part(self.upload_id, len(self.parts) + 1, data))
        store.complete(self.upload_id, self.parts, condition)
        self.upload_id = None  # completed: nothing to abort
        _open_uploads.discard(self)
        return False

    def _fill_from_spool(self, store: _S3) -> None:
        """A spooled temp: its content becomes the buffer and parts, as if streamed."""
        fd = self._fd
        size = store.part_size
        total = os.fstat(fd).st_size
        self.written = total
        offset = 0
        while total - offset > size:
            self.buffer = bytearray(os.pread(fd, size, offset))
            offset += size
            self.upload_full_parts()
        self.buffer = bytearray(os.pread(fd, total - offset, offset)) if total else bytearray()

    def _publish_memory(self, condition: dict[str, str]) -> None:
        fs = self.target.fs
        key = fs._strip_protocol(self.target.key)
        fd = self._fd
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        self.written = len(data)
        with _memory_lock:
            current = fs.store.get(key)
            if condition.get("IfNoneMatch") and current is not None:
                raise OSError(errno.EEXIST, "the object exists", self.target.url)
            if self._mode.needs_copy and self._existed and current is not self._etag:
                raise OSError(errno.ESTALE, "the object changed since it was read",
                              self.target.url)  # fmt: skip
            fs.pipe_file(key, data)

    def sync_dir(self) -> bool:
        return True  # a completed upload is durable when the store acknowledges it

    # -- the end -----------------------------------------------------------------------

    def remove(self) -> bool | OSError:
        """Abort the multipart upload, if one was started and not completed; also one whose
        CreateMultipartUpload answer the writer stopped waiting for (interrupted): its
        answer is awaited here. A failed or interrupted wait or abort leaves the write
        tracked: the exit hook tries again."""
        self.ended = True
        self.buffer = bytearray()
        store = self.store
        if store is None:
            return False
        try:
            if self.upload_id is None and self.starting is not None:
                try:
                    self._started(store.answer(self.starting))
                except OSError:
                    self.starting = None  # the request failed: there is no upload
            if self.upload_id is None:
                _open_uploads.discard(self)
                return False
            try:
                store.abort(self.upload_id)
            except OSError as exc:
                return exc
        except OSError as exc:  # no request can be sent (the interpreter is exiting)
            return exc
        self.upload_id = None
        _open_uploads.discard(self)
        return True

    def aborted(self) -> OSError:
        return OSError(errno.ECANCELED, "the write's upload was aborted", self.target.url)

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        _fs.close_quietly(fd)

    def forget(self) -> None:
        """In a forked child: the upload is the parent's; drop it without a request."""
        self.upload_id = None
        self.starting = None
        self.release()

    def size(self) -> int:
        if self._fd >= 0:
            return os.fstat(self._fd).st_size
        return self.written


# -- at exit ---------------------------------------------------------------------------------


def _track(temp: RemoteTemp) -> None:
    """Keep `temp` (weakly) for the exit hook until its upload is completed or aborted."""
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


def _abort_at_exit() -> None:
    """Abort the uploads of writes still open when the interpreter exits. atexit hooks run
    while fsspec's I/O thread still does; the objects' `__del__` run later, when it is gone
    and they must not wait for it (`_S3._run` refuses then). A write whose abort fails here
    (the store is unreachable) is left to the sweep."""
    for temp in list(_open_uploads):
        temp.remove()


if hasattr(os, "register_at_fork"):
    # A forked child's copy of an open write belongs to the parent: never abort it at exit.
    os.register_at_fork(after_in_child=_open_uploads.clear)
