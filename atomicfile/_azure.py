"""Azure Blob storage through adlfs (`az://`, `abfs://`, `abfss://`): the requests of one
write (see `_object`).

- A write that outgrows one part stages each full part as a block (Put Block), under
  block ids of its own; only Put Block List, at the commit, makes them the blob. Staged
  blocks are never visible: readers see the old blob (or none) until then.
- A smaller write is one Put Blob at the commit (above 1 MiB: one block and its commit).
- The condition travels as `If-None-Match: *` ('x', or an 'a' of an absent blob) or
  `If-Match: <the ETag the 'a'/'r+' copy was read from>`, on the committing request.
- An exception, `discard()` or GC sends nothing: Azure has no call that drops uncommitted
  blocks alone. They are never visible, the blob's next commit (by anyone) discards
  them, and Azure deletes them a week after staging. For the same reason there is no
  sweep to run.

Two writers of one blob stage into the same blob: the first commit discards the other's
blocks, so the other's commit fails (`EAGAIN`: retry the write) rather than mixing them.

Requests go through adlfs's own service client (its credentials, its event loop), never
through `fs.open()`, whose close commits what was written so far.
"""

from __future__ import annotations

import base64
import errno
import uuid

from . import _object, _remote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._permissions import Permissions

#: Why `atomicfile clean az://...` has nothing to do (`_object.Store.sweep`).
UNSWEEPABLE = (
    "a killed writer leaves uncommitted blocks, which Azure has no call to drop; they are "
    "never visible, the blob's next commit discards them and Azure deletes them a week "
    "after staging"
)
EXTRA = "fsspec, adlfs and universal-pathlib: pip install 'pyatomicfile[azure]'"
#: The largest content sent as one Put Blob: the SDK hands a Put Blob's body to aiohttp as
#: bytes, and aiohttp warns (ResourceWarning) above 1 MiB that it may block its loop;
#: larger content is one staged block (a stream) and its commit.
SINGLE_PUT = 2**20


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
    container, name, _ = fs.split_path(key)
    return _object.Store(lambda: Client(fs, container, name, url), url, UNSWEEPABLE)


#: The answers that mean "the condition failed" (Put Blob with If-None-Match: * on an
#: existing blob is a 409 BlobAlreadyExists).
_CONDITION_CODES = ("ConditionNotMet", "BlobAlreadyExists", "TargetConditionNotMet")
_BY_CODE = {
    "ContainerNotFound": errno.ENOENT,
    "BlobNotFound": errno.ENOENT,
    "AuthenticationFailed": errno.EACCES,
    "AuthorizationFailure": errno.EACCES,
    "AuthorizationPermissionMismatch": errno.EACCES,
    "InsufficientAccountPermissions": errno.EACCES,
    # Another writer's commit discarded our staged blocks: nothing of ours was published.
    "InvalidBlockList": errno.EAGAIN,
    "InvalidBlockId": errno.EAGAIN,
}
_BY_STATUS = {404: errno.ENOENT, 401: errno.EACCES, 403: errno.EACCES}


def store_error(exc: BaseException, url: str, condition: str | None = None) -> OSError:
    """The builtin `OSError` (with an errno) for the Azure SDK's answer; `exc` its cause."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # the SDK's StorageErrorCode is a str enum
    status = getattr(exc, "status_code", None)
    if code in _CONDITION_CODES or status == 412:
        return _object.condition_failed(url, condition, exc)
    if code in _BY_CODE:
        number = _BY_CODE[code]
    elif status in _BY_STATUS:
        number = _BY_STATUS[status]
    else:
        number = _remote.errno_in_chain(exc)
    if number == errno.EAGAIN:
        message = "another writer committed the blob while this write's blocks were staged"
    else:
        message = str(code) if code else str(exc).partition("\n")[0]
    return _object.error(number, url, exc, message)


#: Where the errors of a request come from (besides OSError).
_STORE_MODULES = ("azure", "aiohttp", "adlfs", "fsspec")


def _is_store_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or type(exc).__module__.startswith(_STORE_MODULES)


class Client:
    """The requests of one write to `az://container/name`."""

    def __init__(self, fs: Any, container: str, name: str, url: str) -> None:
        self.fs = fs
        self.url = url
        self.blob = fs.service_client.get_blob_client(container, name)
        self.part_size = max(int(getattr(fs, "blocksize", 0) or 0), 2**20)
        self.prefix = ""  # this write's block ids begin with it
        self.blocks: list[str] = []

    def call(self, method: str, *args: Any, condition: str | None = None, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, getattr(self.blob, method), *args, **kwargs)
        except Exception as exc:
            if not _is_store_error(exc):
                raise  # a bug or a bad option (TypeError...): not the store's answer
            raise store_error(exc, self.url, condition) from exc

    @staticmethod
    def _precondition(condition: str | None) -> dict[str, Any]:
        if condition is None:
            return {}
        from azure.core import MatchConditions

        if condition == _object.ABSENT:
            return {"match_condition": MatchConditions.IfMissing}
        return {"etag": condition, "match_condition": MatchConditions.IfNotModified}

    def version(self) -> str | None:
        try:
            return str(self.call("get_blob_properties").etag)
        except FileNotFoundError:
            return None

    def read_into(self, fd: int) -> str | None:
        """The blob's bytes, a chunk at a time (the SDK reads one ETag throughout)."""
        from fsspec.asyn import sync

        try:
            download = self.call("download_blob")
        except FileNotFoundError:
            return None

        async def copy() -> None:
            async for chunk in download.chunks():
                _remote.write_all(fd, chunk)

        try:
            sync(self.fs.loop, copy)
        except Exception as exc:
            if (isinstance(exc, OSError) and exc.errno is not None) or not _is_store_error(exc):
                raise  # the local spool's own error (ENOSPC...), or a bug
            raise store_error(exc, self.url) from exc
        return str(download.properties.etag)

    def start(self, condition: str | None) -> str:
        self.prefix = uuid.uuid4().hex
        self.blocks = []
        return f"{self.url} (uncommitted blocks {self.prefix})"

    def part(self, data: bytes) -> None:
        # Every block id of a blob has one length: 32 hex digits and a 6-digit counter.
        block = base64.b64encode(f"{self.prefix}{len(self.blocks):06d}".encode()).decode()
        self.call("stage_block", block, _object.Body(data), length=len(data))
        self.blocks.append(block)

    def finish(self, data: bytes, condition: str | None) -> None:
        from azure.storage.blob import BlobBlock

        if data:
            self.part(data)
        blocks = [BlobBlock(block_id=b) for b in self.blocks]
        self.call("commit_block_list", blocks, condition=condition,
                  **self._precondition(condition))  # fmt: skip
        self.blocks = []

    def put(self, data: bytes, condition: str | None) -> None:
        if len(data) > SINGLE_PUT:
            self.start(condition)  # one block and its commit: see SINGLE_PUT
            self.finish(data, condition)
            return
        self.call("upload_blob", data, length=len(data), overwrite=True, condition=condition,
                  **self._precondition(condition))  # fmt: skip

    def abort(self) -> bool:
        """Nothing to send: staged blocks are never visible and expire by themselves."""
        self.blocks = []
        return False

    def forget(self) -> None:
        self.blocks = []
