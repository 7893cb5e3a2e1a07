"""What the protocol in `_core` asks of a store: the work of one write that differs between
a local file (`_local.LocalTemp`) and other stores. Typing only; nothing imports it at run
time.

The state machine (open, commit, discard, `with`, `async with`), the log events and the
error wrapping stay in `_core`, written once; a store implements these steps:

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

from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._permissions import Permissions


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
