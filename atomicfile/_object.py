"""What every object store's write has in common (see `_store.Temp`), over a short client
interface that each store implements in its own module (`_gcs`, `_azure`).

An object store publishes an object in one step: one request, or the last request of an
upload made of parts (a GCS resumable session, Azure blocks), which nobody sees until it
is finalized. So the temp of a write is an upload that is not finalized yet, and discarding
it is dropping that upload.

Two shapes of temp, as for S3 (`_remote`):
- 'w' and 'x' without '+' stream: the user's writes fill a buffer of one part; each full
  part is uploaded while the block runs, so memory does not grow with the object. A write
  that never fills a part is one request at the commit.
- 'a', 'r+' and every '+' mode need to read and seek: the temp is an anonymous local file
  (in `$TMPDIR`) that starts as a copy of the object and is uploaded at the commit.

The final request carries a condition (`Client` below): "*" (only if there is no object:
'x', or an 'a' of an object that was absent) or the version the copy was read from
('a'/'r+'), so that a concurrent update is reported (`ESTALE`) instead of lost. A 'w'
write carries the one `Store.expect()` was given (`atomic_update`'s cycle: `Store.read()`
gives the content and its version, the write publishes only over that version).

A client (one per write) does the requests:
- `part_size`: the bytes of one part (the store's rules on sizes applied).
- `version()`: the object's version, None if there is none.
- `read_into(fd)`: copy the object into `fd`; its version, None if there is none.
- `start(condition)`: begin an upload that is finalized later; its name, for logs.
- `part(data)`: upload the next part; `finish(data, condition)`: the last one, publishing.
- `put(data, condition)`: publish a small object in one request.
- `abort()`: drop the upload (True: dropped; False: nothing to drop).
- `forget()`: drop the upload's state without a request (a forked child).
"""

from __future__ import annotations

import errno
import io
import os

from . import _fs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta
    from typing import IO, Any, Protocol

    from ._log import AnyLogger, EventLog
    from ._modes import Mode
    from ._permissions import Permissions

    class Client(Protocol):
        part_size: int

        def version(self) -> str | None: ...
        def read_into(self, fd: int) -> str | None: ...
        def start(self, condition: str | None) -> str: ...
        def part(self, data: bytes) -> None: ...
        def finish(self, data: bytes, condition: str | None) -> None: ...
        def put(self, data: bytes, condition: str | None) -> None: ...
        def abort(self) -> bool: ...
        def forget(self) -> None: ...


#: The condition "only if no object has the name" (If-None-Match: *, ifGenerationMatch=0).
ABSENT = "*"


# Choosing the store (the file system, key and URL; the options refused) is `_remote`'s,
# shared with S3: `_gcs.resolve` and `_azure.resolve` call it.


# -- errors ----------------------------------------------------------------------------------


def error(number: int, url: str, cause: BaseException | None, message: str = "") -> OSError:
    """A builtin `OSError` for `number` (`FileNotFoundError`...), `cause` chained."""
    err = OSError(number, message or os.strerror(number), url)
    err.__cause__ = cause
    return err


def condition_failed(url: str, condition: str | None, cause: BaseException) -> OSError:
    """The store refused the final request's condition: the object appeared (EEXIST) or
    changed since it was read (ESTALE)."""
    if condition is None or condition == ABSENT:
        return error(errno.EEXIST, url, cause, "the object exists")
    return error(errno.ESTALE, url, cause, "the object changed since it was read")


class Body(io.BytesIO):
    """A request body: aiohttp streams it (it warns that raw bytes over 1 MiB may block its
    loop), and a retry can send it again (`close()` leaves it readable)."""

    def close(self) -> None:
        pass


# -- the temp --------------------------------------------------------------------------------


class Store:
    """One target in an object store; `new_client()` makes the client of one write.
    `unsweepable`: why what a killed writer left can't be swept there (for `sweep()`)."""

    __slots__ = ("condition", "new_client", "unsweepable", "url")
    #: An upload commits alone: no shared durability point with local temps.
    batchable = False
    #: No locks on an object: its writes are conditional instead (`atomic_update`).
    lockable = False
    #: `atomic_update` reads a version (`read()`) and writes on condition (`expect()`).
    conditional = True
    #: No sweep at all (`sweep()`), so no age to ask for either.
    sweeps_by_age = False

    def __init__(self, new_client: Callable[[], Client], url: str, unsweepable: str) -> None:
        self.new_client = new_client
        self.url = url
        self.unsweepable = unsweepable
        #: The condition of the next 'w' write through this store (`expect()`); None: none.
        self.condition: str | None = None

    def temp(
        self, path: str, mode: Mode, follow: bool, log: EventLog, dirs: Any = None
    ) -> ObjectTemp:
        return ObjectTemp(self.new_client(), self.url, mode, self.condition)

    def read(self) -> tuple[bytes | None, str | None]:
        """The object's bytes and the version they are (GCS generation, Azure ETag);
        (None, None) when there is no object. Read through the write path's own
        `read_into()` (one version throughout), into an anonymous local file."""
        import tempfile

        with tempfile.TemporaryFile(prefix=".atomicfile-") as spool:
            version = self.new_client().read_into(spool.fileno())
            if version is None:
                return None, None
            spool.seek(0)
            return spool.read(), version

    def expect(self, version: str | None) -> None:
        """Make the next 'w' write through this store publish only over `version` (as
        `read()` returned it; None: only if there is no object), else fail at the commit
        with ESTALE (EEXIST: an object appeared)."""
        self.condition = ABSENT if version is None else version

    def sweep(
        self, where: Any, *, recursive: bool, target: str | None, dry_run: bool,
        logger: AnyLogger | None, older_than: float | timedelta | None,
    ) -> list[str]:  # fmt: skip
        """A ValueError: nothing a killed writer left can be listed here, so a sweep that
        returned [] would claim a look it can't take (`unsweepable` says what happens
        to the leftovers instead)."""
        raise ValueError(
            f"{self.url!r} can't be swept: {self.unsweepable}; clean_stale_temps sweeps "
            "local directories and s3:// prefixes"
        )


class _PartWriter(io.RawIOBase):
    """The raw file under a streaming write: fills one part in memory and uploads each full
    part while the block runs. `close()` publishes nothing."""

    def __init__(self, temp: ObjectTemp, name: str | bytes) -> None:
        super().__init__()
        self._temp = temp
        self.name = name
        self.mode = "wb"

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to closed file")
        view = memoryview(data).cast("B")
        self._temp.take(view)
        return len(view)


class ObjectTemp:
    """One write to an object store: an upload not finalized yet, or a local spool file."""

    __slots__ = (
        "_buffer", "_client", "_expected", "_fd", "_mode", "_started", "_url", "_version",
        "step", "temp_path", "written",
    )  # fmt: skip

    def __init__(self, client: Client, url: str, mode: Mode, expected: str | None) -> None:
        self._client = client
        self._expected = expected  # a 'w' write's condition (`Store.expect`); None: none
        self._url = url
        self._mode = mode
        self.step = "open"
        self.temp_path: str | None = None
        self._fd = -1
        self._version: str | None = None  # what 'a'/'r+' read; None: no object
        self._buffer = bytearray()
        self._started = False
        self.written = 0

    @property
    def _streams(self) -> bool:
        return self._mode.kind in "wx" and not self._mode.plus

    def _condition(self) -> str | None:
        """No object ('x'), the version copied ('a'/'r+'), else what `expect()` gave."""
        if self._mode.kind == "x":
            return ABSENT
        if self._mode.needs_copy:
            return self._version or ABSENT
        return self._expected

    def inspect(self) -> OSError | None:
        """'x' finds no object, 'r+' finds one (as `open()` would say); one request each.
        'w' asks nothing: a missing bucket is reported by the first upload."""
        kind = self._mode.kind
        if kind not in "xr":
            return None
        try:
            exists = self._client.version() is not None
        except OSError as exc:
            return exc
        if kind == "x" and exists:
            return error(errno.EEXIST, self._url, None)
        if kind == "r" and not exists:
            return error(errno.ENOENT, self._url, None)
        return None

    def create(self, permissions: Permissions) -> None:
        self.step = "create temp"
        # What the write holds until an upload begins (`start()` names the upload then);
        # a batch groups its writes by it.
        self.temp_path = f"{self._url} (not uploaded yet)"
        if self._streams:
            return
        import tempfile

        fd, name = tempfile.mkstemp(prefix=".atomicfile-", suffix=".tmp")
        os.unlink(name)  # anonymous: nothing to sweep if this process dies
        self._fd = fd
        if self._mode.needs_copy:
            self.step = "copy"
            self._version = self._client.read_into(fd)
            if self._version is None and self._mode.kind == "r":
                raise error(errno.ENOENT, self._url, None)
            os.lseek(fd, 0, os.SEEK_SET)
            if self._mode.kind == "a":
                _fs.set_append(fd)

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

    def take(self, data: memoryview) -> None:
        """The user's bytes: buffered, and each full part uploaded."""
        self._buffer += data
        self.written += len(data)
        size = self._client.part_size
        while len(self._buffer) > size:  # a full part and more: never the last one
            if not self._started:
                # GCS takes the condition here, and checks it here and at the last chunk.
                self.temp_path = self._client.start(self._condition())
                self._started = True
            part = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._client.part(part)

    def finish(self, durable: bool) -> None:
        self.step = "upload"

    def publish(self, durable: bool, exclusive: bool) -> bool:
        """Finalize the upload (or send the object in one request), with the mode's
        condition; on failure the caller's cleanup drops the upload."""
        self.step = "commit"
        if not self._streams:
            self._take_spool()
        data = bytes(self._buffer)
        self._buffer = bytearray()
        if not self._started:
            self._client.put(data, self._condition())
        else:
            self._client.finish(data, self._condition())
            self._started = False  # finalized: nothing to drop
        return False

    def _take_spool(self) -> None:
        """A spooled temp: its content goes through `take()`, as if streamed."""
        fd = self._fd
        total = os.fstat(fd).st_size
        step = max(self._client.part_size, 2**20)
        for offset in range(0, total, step):
            self.take(memoryview(os.pread(fd, step, offset)))

    def sync_dir(self) -> bool:
        return True  # a finalized upload is durable when the store acknowledges it

    def remove(self) -> bool | OSError:
        """Drop the upload, if one was started and not finalized."""
        started, self._started = self._started, False
        self._buffer = bytearray()
        if not started:
            return False
        try:
            return self._client.abort()
        except OSError as exc:
            return exc

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        _fs.close_quietly(fd)

    def forget(self) -> None:
        """In a forked child: the upload is the parent's; drop it without a request."""
        self._started = False
        self._client.forget()
        self.release()

    def size(self) -> int:
        if self._fd >= 0:
            return os.fstat(self._fd).st_size
        return self.written
