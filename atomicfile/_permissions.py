"""The final mode bits (and owner) of the file an atomic write leaves."""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Union

    PermissionHook = Callable[[Path, Union[os.stat_result, None]], int]
    Permissions = Union[int, PermissionHook, None]

#: What a new file gets by default, before the umask (what open() gives a new file is 0o666:
#: a file others may not write is the safer default for replaced content).
NEW_FILE_MODE = 0o644


def check(permissions: Permissions) -> None:
    """Validate the `permissions=` option before any I/O."""
    if permissions is None or callable(permissions):
        return
    if isinstance(permissions, bool) or not isinstance(permissions, int):
        raise TypeError(
            "permissions must be None, an int mode such as 0o600, or a callable "
            f"(target, current_stat) -> int, not {type(permissions).__name__}"
        )
    _check_bits(permissions)


def _check_bits(mode: int) -> int:
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"permissions must be file mode bits in 0..0o7777, not {mode:#o}")
    return mode


def final_mode(permissions: Permissions, target: str, current: os.stat_result | None) -> int | None:
    """The exact mode to give the file, or None for "a new file's default, less the umask".

    A hook is called here, once per write, before the temp file exists.
    """
    if permissions is None:
        return None if current is None else stat.S_IMODE(current.st_mode)
    if isinstance(permissions, int):
        return permissions
    from pathlib import Path

    mode = permissions(Path(target), current)
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"permissions hook must return an int mode, not {type(mode).__name__}")
    return _check_bits(mode)


def create_mode(final: int | None) -> int:
    """The mode for creating the temp: never more open than `final`, so no content written
    before the final chmod is readable by anyone the final mode would refuse (the umask can
    only take bits away)."""
    return NEW_FILE_MODE if final is None else final & 0o777


def _no_euid() -> int:
    return -1


#: The writer's effective uid now (-1 off POSIX): called per write, as it may change. The
#: C function itself where there is one: no Python frame on the write path.
euid: Callable[[], int] = getattr(os, "geteuid", _no_euid)


def may_write(current: os.stat_result, name: str, dir_fd: int | None, euid: int) -> bool:
    """Would open(path, "w") be allowed? The replace only needs the directory, but a read-only
    file should stay as protected as open() keeps it. `name` is relative to `dir_fd`."""
    if os.name == "nt":
        return os.access(name, os.W_OK)
    if euid == 0:
        return True  # CAP_DAC_OVERRIDE: open() would succeed for root too
    if current.st_uid == euid:
        # The kernel checks only the owner bits for the owner (ACLs do not change this).
        return bool(current.st_mode & stat.S_IWUSR)
    return os.access(
        name,
        os.W_OK,
        dir_fd=dir_fd,
        effective_ids=os.access in os.supports_effective_ids,
        follow_symlinks=False,
    )


def protected_regular() -> int:
    """Linux's fs.protected_regular now (0, 1 or 2; 0 where there is none). Read only for
    someone else's file in a sticky directory, so it costs the usual write nothing."""
    try:
        with open("/proc/sys/fs/protected_regular", "rb") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
