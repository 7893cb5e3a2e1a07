"""The keyword options of the writers, defined once: every entry point's signature takes
them as `**options: Unpack[...]`, so adding an option is one line here and one where it is
used. Typing only; nothing imports this module at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from ._log import AnyLogger
    from ._permissions import Permissions


class TargetOptions(TypedDict, total=False):
    """What can differ between the files of one batch: how each target is written."""

    #: None keeps an existing file's bits (0o644 less the umask for a new one), an int
    #: mode, or a hook `(target, current_stat) -> int`.
    permissions: Permissions
    #: Replace what a symlink target points to (True), or the link itself (False).
    follow_symlinks: bool
    #: An fsspec file system for the target (an object store).
    fs: Any
    #: Options for the file system of an URL target, as `fsspec.open` takes them.
    storage_options: dict[str, Any] | None
    #: Create the target's missing directories as `os.makedirs` would (default False, as
    #: `open()`); durable with the write. Object stores have none: it does nothing there.
    make_parents: bool


class WriteOptions(TargetOptions, total=False):
    """The options of one write: `atomic_update` takes these (it always locks, and has
    its own `timeout`)."""

    #: Where the write's events go (default: `logging.getLogger("atomicfile")`).
    logger: AnyLogger | None
    #: fsync the file and its directory (default True).
    durable: bool


class Options(WriteOptions, total=False):
    """Every keyword option of `AtomicFile`, `atomic_write` and their async forms."""

    #: Take the target's lock at open and hold it until the write ends: writers with the
    #: lock (and `atomic_update`) run one after the other. Local files only.
    lock: bool
    #: Seconds `lock=True` waits (None: as long as it takes; 0: one try), then TimeoutError.
    timeout: float | None
