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


class Options(TargetOptions, total=False):
    """Every keyword option of `AtomicFile`, `atomic_write` and their async forms."""

    #: Where the write's events go (default: `logging.getLogger("atomicfile")`).
    logger: AnyLogger | None
    #: fsync the file and its directory (default True).
    durable: bool
