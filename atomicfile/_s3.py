"""S3 through s3fs: the store, its temp (see `_remote` for what object stores share) and its
sweep.

Two shapes of temp:
- 'w' and 'x' without '+' stream: what the user writes fills a buffer of one part
  (the file system's block size, 50 MiB for s3fs by default); each full part is uploaded
  while the block runs, so memory does not grow with the object's size. A write that never
  fills a part is one PUT at the commit (as fast as `fs.pipe`).
- 'a', 'r+' and every '+' mode spool (`_remote.RemoteTemp`) and are uploaded the same way
  at the commit.

The condition travels as `If-None-Match: *` or `If-Match: <ETag>` on the PUT or on
CompleteMultipartUpload; S3 answers 412 (`ESTALE`/`EEXIST`) when it does not hold.

Every request is sent on the file system's event loop (fsspec's I/O thread) and awaited
from the writer's thread as a future that is kept: when the wait is interrupted (Ctrl-C, the
CLI's SIGTERM) while CreateMultipartUpload is on the wire, `remove()` still collects the
upload's id from that future and aborts the upload.

The sweep (`S3Store.sweep`) aborts the incomplete multipart uploads that killed writers left
under a prefix. The prefix is a directory: `s3://b/team/alice` (or `.../alice/`) means the
keys under `team/alice/`, never `team/alice2/...` nor `team/alice.csv` (nor the key
`team/alice` itself). A raw key prefix is asked for with a final `*`: `s3://b/team/alice*`.
An upload has no lock to show that its writer is alive, so age is the only evidence: an
upload is aborted only when its start (`Initiated`, the server's clock) is older than
`older_than`. Choose a limit longer than any write can take. A bucket lifecycle rule
(`AbortIncompleteMultipartUpload`) does the same on the server's side, without a caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import errno
import io
import os
import sys

from . import _remote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import IO, Any

    from ._log import AnyLogger, EventLog
    from ._modes import Mode
    from ._permissions import Permissions

EXTRA = "fsspec, s3fs and universal-pathlib: pip install 'pyatomicfile[s3]'"
#: S3's smallest part (all but the last); a part size below it is raised to it.
MIN_PART = 5 * 2**20


def resolve(
    file: Any,
    fs: Any,
    storage_options: dict[str, Any] | None,
    permissions: Permissions,
    durable: bool,
    follow_symlinks: bool,
) -> S3Store:
    """The S3 store of `file` (a URL, a UPath, or a path with `fs=`), before any I/O."""
    what = _remote.describe(file)
    fs, key, url = _remote.file_system(file, fs, storage_options, EXTRA)
    if not type(fs).__module__.startswith("s3fs"):
        raise ValueError(f"AtomicFile can't write {what}: only s3fs's file system is "
                         "supported for s3://")  # fmt: skip
    _remote.refuse_local_options(what, permissions, durable, follow_symlinks)
    return S3Store(fs, key, url)


class S3Store(_remote.RemoteStore):
    """An object in a bucket."""

    __slots__ = ()

    def temp(self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None) -> S3Temp:
        return S3Temp(self, mode, log)

    def read(self) -> tuple[bytes | None, str | None]:
        """The object's content and ETag; (None, None) when there is none."""
        return _Client(self).get()

    def sweep_prefix(self, older_than: float, dry_run: bool, logger: AnyLogger | None) -> list[str]:
        """Abort the incomplete uploads under this prefix (a directory; a raw key prefix
        when the URL ends with '*') started more than `older_than` seconds ago; return
        them as `s3://bucket/key?uploadId=...`, sorted."""
        limit = older_than
        url = self.url
        raw = url.endswith("*")
        if "*" in url[:-1]:
            raise ValueError(f"a '*' is allowed only at the end of the prefix (a raw key "
                             f"prefix), not in {url!r}")  # fmt: skip
        fs = self.fs
        bucket, prefix, _ = fs.split_path(fs._strip_protocol(url[:-1]) if raw else self.key)
        # The key comes without its trailing '/'s: a directory gets one back (never its
        # neighbours' keys); a raw prefix keeps what was given ('team/alice/*': the directory).
        if prefix and (not raw or url[:-1].endswith("/")):
            prefix += "/"
        from . import _log

        log = _log.EventLog(logger)

        def call(method: str, **kwargs: Any) -> Any:
            try:
                return fs.call_s3(method, Bucket=bucket, **kwargs)
            except Exception as exc:
                if not _remote.is_store_error(exc):
                    raise
                raise _remote.store_error(exc, url) from exc

        uploads: list[dict[str, Any]] = []
        marker: dict[str, str] = {}
        while True:
            page = call("list_multipart_uploads", Prefix=prefix, **marker)
            uploads.extend(page.get("Uploads", []))
            if not page.get("IsTruncated"):
                break
            marker = {"KeyMarker": page["NextKeyMarker"],
                      "UploadIdMarker": page["NextUploadIdMarker"]}  # fmt: skip
        now = datetime.datetime.now(datetime.timezone.utc)
        done: list[str] = []
        for upload in stale(uploads, now, limit):
            name = f"s3://{bucket}/{upload['Key']}?uploadId={upload['UploadId']}"
            if not dry_run:
                call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])
                if log.debug:
                    log.emit(_log.DEBUG, _log.CLEANED, {"temp_path": name, "operation": "cleanup"})
            done.append(name)
        return sorted(done)


def stale(
    uploads: Iterable[dict[str, Any]], now: datetime.datetime, older_than: float
) -> list[dict[str, Any]]:
    """The uploads started more than `older_than` seconds before `now` (never one younger,
    nor one started 'in the future' by a skewed clock)."""
    limit = now - datetime.timedelta(seconds=older_than)
    return [u for u in uploads if u["Initiated"] <= limit and u["Initiated"] <= now]


# -- requests --------------------------------------------------------------------------------


class _Client:
    """The S3 requests one write makes, through s3fs's client (its retries, its errors)."""

    def __init__(self, target: S3Store) -> None:
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
            if not _remote.is_store_error(exc):
                raise  # a bug or a bad option (TypeError...): not the store's answer
            raise _remote.store_error(exc, self.url, condition) from exc

    def head(self) -> str | None:
        """The object's ETag, None if there is no object."""
        try:
            return str(self.call("head_object")["ETag"])
        except FileNotFoundError:
            return None

    def _chunks(self) -> tuple[Any, str | None]:
        """The object's body (an iterator of chunks) and its ETag; (None, None) if there is
        no object."""
        try:
            response = self.call("get_object")
        except FileNotFoundError:
            return None, None
        body = response["Body"]

        def chunks() -> Any:
            try:
                while chunk := self.answer(self._run(body.read, 2**20)):
                    yield chunk
            finally:
                body.close()

        return chunks(), str(response["ETag"])

    def read_into(self, fd: int) -> str | None:
        """Copy the object into `fd`; its ETag, None (nothing written) if there is none."""
        chunks, etag = self._chunks()
        for chunk in chunks or ():
            _remote.write_all(fd, chunk)  # the spool's own errors (ENOSPC...) as they are
        return etag

    def get(self) -> tuple[bytes | None, str | None]:
        chunks, etag = self._chunks()
        return (None, None) if chunks is None else (b"".join(chunks), etag)

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


def condition(expected: Any) -> dict[str, str]:
    """The request's condition for `RemoteTemp.expected()`'s answer (boto's names)."""
    if expected is _remote.ANY:
        return {}
    if expected is None:
        return {"IfNoneMatch": "*"}
    return {"IfMatch": str(expected)}


class _PartWriter(io.RawIOBase):
    """The raw file under a streaming write: fills one part in memory and uploads each full
    part as the next part of the write's multipart upload. `close()` publishes nothing."""

    def __init__(self, temp: S3Temp, name: str | bytes) -> None:
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
        if len(temp.buffer) >= temp.client.part_size:
            temp.upload_full_parts()
        return len(view)


# -- the temp --------------------------------------------------------------------------------


class S3Temp(_remote.RemoteTemp):
    """One write to S3: a multipart upload not yet completed (or a PUT to come)."""

    __slots__ = ("buffer", "client", "ended", "parts", "starting", "upload_id", "written")
    target: S3Store

    def __init__(self, target: S3Store, mode: Mode, log: EventLog) -> None:
        super().__init__(target, mode, log)
        self.client = _Client(target)
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
        return self._mode.kind in "wx" and not self._mode.plus

    def _version(self) -> str | None:
        return self.client.head()

    def _read_into(self, fd: int) -> str | None:
        return self.client.read_into(fd)

    # -- open --------------------------------------------------------------------------

    def create(self, permissions: Permissions) -> None:
        if self._streams:
            self.step = "create temp"
            return
        super().create(permissions)

    def open_file(
        self, mode: str, buffering: int, encoding: str | None, errors: str | None,
        newline: str | None, name: str | bytes,
    ) -> IO[Any]:  # fmt: skip
        if not self._streams:
            return super().open_file(mode, buffering, encoding, errors, newline, name)
        self.step = "open"
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
        client = self.client
        size = client.part_size
        while len(self.buffer) >= size:
            if self.upload_id is None:
                self._start()
            assert self.upload_id is not None
            part = bytes(self.buffer[:size])
            del self.buffer[:size]
            self.parts.append(client.part(self.upload_id, len(self.parts) + 1, part))

    def _start(self) -> None:
        """Create the multipart upload. The request is kept in `starting` until its answer
        is read: if the wait is interrupted, `remove()` collects the id and aborts it."""
        self.starting = self.client.submit("create_multipart_upload")
        _remote.track(self)
        self._started(self.client.answer(self.starting))

    def _started(self, answer: dict[str, Any]) -> None:
        self.upload_id = upload_id = str(answer["UploadId"])
        self.starting = None
        self.temp_path = f"{self.target.url}?uploadId={upload_id}"

    # -- commit ------------------------------------------------------------------------

    def publish(self, durable: bool, exclusive: bool) -> bool:
        """Complete the upload (or PUT the object) in one step, conditionally where the
        mode asks; on failure the caller's cleanup aborts the upload."""
        self.step = "commit"
        if self.ended:  # aborted by the exit hook: what was written is gone
            raise self.aborted()
        when = condition(self.expected(exclusive))
        client = self.client
        if not self._streams:
            self._fill_from_spool()
        if self.upload_id is None:
            data = bytes(self.buffer)
            self.buffer = bytearray()
            client.put(data, when)
            return False
        if self.buffer or not self.parts:
            data = bytes(self.buffer)
            self.buffer = bytearray()
            self.parts.append(client.part(self.upload_id, len(self.parts) + 1, data))
        client.complete(self.upload_id, self.parts, when)
        self.upload_id = None  # completed: nothing to abort
        _remote.untrack(self)
        return False

    def _fill_from_spool(self) -> None:
        """A spooled temp: its content becomes the buffer and parts, as if streamed."""
        fd = self._fd
        size = self.client.part_size
        total = os.fstat(fd).st_size
        self.written = total
        offset = 0
        while total - offset > size:
            self.buffer = bytearray(os.pread(fd, size, offset))
            offset += size
            self.upload_full_parts()
        self.buffer = bytearray(os.pread(fd, total - offset, offset)) if total else bytearray()

    # -- the end -----------------------------------------------------------------------

    def remove(self) -> bool | OSError:
        """Abort the multipart upload, if one was started and not completed; also one whose
        CreateMultipartUpload answer the writer stopped waiting for (interrupted): its
        answer is awaited here. A failed or interrupted wait or abort leaves the write
        tracked: the exit hook tries again."""
        self.ended = True
        self.buffer = bytearray()
        client = self.client
        try:
            if self.upload_id is None and self.starting is not None:
                try:
                    self._started(client.answer(self.starting))
                except OSError:
                    self.starting = None  # the request failed: there is no upload
            if self.upload_id is None:
                _remote.untrack(self)
                return False
            try:
                client.abort(self.upload_id)
            except OSError as exc:
                return exc
        except OSError as exc:  # no request can be sent (the interpreter is exiting)
            return exc
        self.upload_id = None
        _remote.untrack(self)
        return True

    def aborted(self) -> OSError:
        return OSError(errno.ECANCELED, "the write's upload was aborted", self.target.url)

    def forget(self) -> None:
        """In a forked child: the upload is the parent's; drop it without a request."""
        self.upload_id = None
        self.starting = None
        self.release()

    def size(self) -> int:
        if self._fd >= 0:
            return os.fstat(self._fd).st_size
        return self.written
