"""Google Cloud Storage through gcsfs: the requests of one write (see `_object`).

- A write that outgrows one part is a resumable upload session (JSON API): each full part
  is one chunk sent to the session, and only the last chunk, which states the total size,
  finalizes the object, at the commit. Until then readers see the old object (or none).
- A smaller write is one multipart upload (metadata and bytes) at the commit.
- The condition travels as `ifGenerationMatch`: 0 for "no object yet" ('x', or an 'a' of
  an absent object), else the generation the 'a'/'r+' copy was read from; GCS checks it
  when the object is finalized and answers 412 otherwise.
- An exception, `discard()` or GC cancels the session (DELETE on its URI).

A session left by a killed writer can't be listed (GCS has no call for it) and so can't be
swept: it holds no visible object and GCS drops it one week after it began.

Requests go through gcsfs's own `_call` (its session, credentials, retries and errors),
never through `fs.open()`, whose close finalizes what was written so far.
"""

from __future__ import annotations

import errno

from . import _object, _remote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._permissions import Permissions

#: Why `atomicfile clean gs://...` has nothing to do (`_object.Store.sweep`).
UNSWEEPABLE = (
    "a killed writer leaves a resumable upload session, which GCS can't list; it holds no "
    "visible object and GCS drops it a week after it began"
)
EXTRA = "fsspec, gcsfs and universal-pathlib: pip install 'pyatomicfile[gcs]'"
#: A chunk of a resumable upload (all but the last) is a multiple of 256 KiB.
CHUNK = 256 * 2**10
_TYPE = "application/octet-stream"
#: Separates the metadata from the bytes in a one-request upload (never in JSON).
_BOUNDARY = "atomicfile-part-boundary"


def resolve(
    file: Any,
    fs: Any,
    storage_options: dict[str, Any] | None,
    permissions: Permissions,
    durable: bool,
    follow_symlinks: bool,
) -> _object.Store:
    _remote.refuse_local_options(_remote.describe(file), permissions, durable, follow_symlinks)
    fs, key, url = _remote.file_system(file, fs, storage_options, EXTRA)
    bucket, name, _ = fs.split_path(key)
    return _object.Store(lambda: Client(fs, bucket, name, url), url, UNSWEEPABLE)


def store_error(exc: BaseException, url: str, condition: str | None = None) -> OSError:
    """The builtin `OSError` (with an errno) for gcsfs's answer; `exc` is its cause."""
    code = getattr(exc, "code", None)  # gcsfs's HttpError
    if isinstance(exc, FileExistsError) or code == 412:  # gcsfs raises 412 as this
        return _object.condition_failed(url, condition, exc)
    if isinstance(exc, FileNotFoundError) or code == 404:
        number = errno.ENOENT
    elif code in (401, 403) or str(exc).startswith("Forbidden"):
        number = errno.EACCES
    elif isinstance(exc, ValueError):
        number = errno.EINVAL  # gcsfs's "Bad Request ... invalid"
    else:
        number = _remote.errno_in_chain(exc)
    return _object.error(number, url, exc, str(exc).partition("\n")[0])


#: Where the errors of a request come from (besides OSError and gcsfs's ValueError).
_STORE_MODULES = ("gcsfs", "aiohttp", "google", "requests", "fsspec")


def _is_store_error(exc: BaseException) -> bool:
    return (
        isinstance(exc, OSError)
        or type(exc).__module__.startswith(_STORE_MODULES)
        or (type(exc) is ValueError and str(exc).startswith("Bad Request"))
    )


class Client:
    """The requests of one write to `gs://bucket/name`."""

    def __init__(self, fs: Any, bucket: str, name: str, url: str) -> None:
        self.fs = fs
        self.bucket = bucket
        self.name = name
        self.url = url
        size = int(getattr(fs, "default_block_size", 0) or 0)
        self.part_size = max(CHUNK, size - size % CHUNK)
        self.session: str | None = None  # the resumable session's URI
        self.offset = 0  # bytes the session holds

    def call(
        self, *args: Any, condition: str | None = None, session: str | None = None, **kwargs: Any
    ) -> Any:
        """gcsfs's request; its error as a builtin `OSError`. `session`: the session URI
        the request goes to, kept out of the error (gcsfs names it in its own)."""
        try:
            return self.fs.call(*args, **kwargs)
        except Exception as exc:
            if not _is_store_error(exc):
                raise  # a bug or a bad option (TypeError...): not the store's answer
            err = store_error(exc, self.url, condition)
            if session is None:
                raise err from exc
        # The session URI is a bearer capability: neither in the message nor in a cause.
        err.strerror = str(err.strerror).replace(session, "(the upload session)")
        err.__cause__ = None
        raise err

    @staticmethod
    def _precondition(condition: str | None) -> dict[str, str]:
        if condition is None:
            return {}
        return {"ifGenerationMatch": "0" if condition == _object.ABSENT else condition}

    def _metadata(self) -> dict[str, Any] | None:
        try:
            found = self.call("GET", "b/{}/o/{}", self.bucket, self.name, json_out=True)
        except FileNotFoundError:
            return None
        return found  # type: ignore[no-any-return]

    def version(self) -> str | None:
        found = self._metadata()
        return None if found is None else str(found["generation"])

    def read_into(self, fd: int) -> str | None:
        """The object's bytes of one generation, read a part at a time."""
        found = self._metadata()
        if found is None:
            return None
        generation, size = str(found["generation"]), int(found["size"])
        for start in range(0, size, self.part_size):
            end = min(start + self.part_size, size) - 1
            _, data = self.call(
                "GET", "b/{}/o/{}", self.bucket, self.name, alt="media",
                generation=generation, headers={"Range": f"bytes={start}-{end}"},
            )  # fmt: skip
            _remote.write_all(fd, data)
        return generation

    def start(self, condition: str | None) -> str:
        headers, _ = self.call(
            "POST", f"{self.fs._location}/upload/storage/v1/b/{{}}/o", self.bucket,
            uploadType="resumable", name=self.name, json={"name": self.name},
            headers={"X-Upload-Content-Type": _TYPE}, condition=condition,
            **self._precondition(condition),
        )  # fmt: skip
        self.session = str(headers["Location"])
        self.offset = 0
        # The session URI is a bearer capability: logs name the object only.
        return f"{self.url} (resumable upload)"

    def _send(self, data: bytes, total: str, condition: str | None = None) -> None:
        """PUT `data` at the session's offset; resend what the server did not keep."""
        assert self.session is not None
        view = memoryview(data)
        while True:
            span = f"{self.offset}-{self.offset + len(view) - 1}" if view else "*"
            headers, _ = self.call(
                "PUT", self.session, data=_object.Body(view), condition=condition,
                session=self.session,
                headers={"Content-Range": f"bytes {span}/{total}", "Content-Type": _TYPE},
            )  # fmt: skip
            # "Range: bytes=0-N" is what the session holds now. Without it: nothing yet
            # (308), or, for the last chunk, all of it (the object is finalized).
            kept = headers.get("Range")
            if kept:
                end = int(kept.rpartition("-")[2]) + 1
            else:
                end = self.offset + len(view) if total != "*" else self.offset
            if end <= self.offset and view:
                message = "the upload session kept none of a chunk"
                raise _object.error(errno.EIO, self.url, None, message)
            view = view[end - self.offset :]
            self.offset = end
            if not view:
                return

    def part(self, data: bytes) -> None:
        self._send(data, "*")

    def finish(self, data: bytes, condition: str | None) -> None:
        self._send(data, str(self.offset + len(data)), condition)
        self.session = None

    def put(self, data: bytes, condition: str | None) -> None:
        """One multipart upload (metadata and bytes): the object, finalized at once."""
        import json

        head = (
            f"--{_BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps({'name': self.name})}\r\n"
            f"--{_BOUNDARY}\r\nContent-Type: {_TYPE}\r\n\r\n"
        )
        body = b"".join((head.encode(), data, f"\r\n--{_BOUNDARY}--".encode()))
        self.call(
            "POST", f"{self.fs._location}/upload/storage/v1/b/{{}}/o", self.bucket,
            uploadType="multipart", data=_object.Body(body), condition=condition,
            headers={"Content-Type": f'multipart/related; boundary="{_BOUNDARY}"'},
            **self._precondition(condition),
        )  # fmt: skip

    def abort(self) -> bool:
        """Cancel the session: GCS answers 499, which gcsfs takes as success."""
        session, self.session = self.session, None
        if session is None:
            return False
        try:
            self.call("DELETE", session, session=session)
        except FileNotFoundError:
            return False  # already gone
        return True

    def forget(self) -> None:
        self.session = None
