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


def check(permissions: Permissions, file: bool = False) -> None:
    """Validate the `permissions=` option before any I/O. `file=True`: the mode is a
    regular file's, where the sticky bit means nothing (see `_check_bits`)."""
    if permissions is None or callable(permissions):
        return
    if isinstance(permissions, bool) or not isinstance(permissions, int):
        raise TypeError(
            "permissions must be None, an int mode such as 0o600, or a callable "
            f"(target, current_stat) -> int, not {type(permissions).__name__}"
        )
    _check_bits(permissions, file, "permissions=")


def _valid(mode: int, file: bool) -> bool:
    return 0 <= mode <= 0o7777 and not (file and mode & stat.S_ISVTX)


def _check_bits(mode: int, file: bool, label: str) -> int:
    """`mode` if it is mode bits (for a file: without the sticky bit, within 0o6777), else
    a ValueError that says what it is and, where it can tell, what was meant.

    The usual slip is a mode written in decimal: `permissions=644` is 0o1204, a sticky bit
    on a file (Linux accepts and ignores it, so nothing else would ever say so).
    """
    if _valid(mode, file):
        return mode
    if mode < 0:
        raise ValueError(f"{label}{mode}: file mode bits are in 0..0o7777")
    digits = str(mode)
    if len(digits) <= 4 and set(digits) <= set("01234567"):
        # Its decimal digits read as a mode (what `chmod 644` means), less a sticky bit.
        meant = int(digits, 8) & ~(stat.S_ISVTX if file else 0)
        if meant and _valid(meant, file):
            raise ValueError(f"{label}{mode} is {mode:#o}: did you mean {meant:#o}?")
    sticky = stat.S_ISVTX if file else 0
    if mode > 0o7777 and stat.S_IFMT(mode) and stat.S_IMODE(mode) & ~sticky:
        raise ValueError(
            f"{label}{mode:#o} holds a file type, as st_mode does: did you mean "
            f"{stat.S_IMODE(mode) & ~sticky:#o} (its stat.S_IMODE)?"
        )
    if mode > 0o7777:
        raise ValueError(f"{label}{mode:#o} is above 0o7777: file mode bits are in 0..0o7777")
    raise ValueError(
        f"{label}{mode:#o} has the sticky bit (0o1000), which means nothing on a file: "
        f"did you mean {mode & ~stat.S_ISVTX:#o}?"
    )


def final_mode(
    permissions: Permissions, target: str, current: os.stat_result | None, file: bool = False
) -> int | None:
    """The exact mode to give the file, or None for "a new file's default, less the umask".

    A hook is called here, once per write, before the temp file exists; its result is
    checked as `check` checks an int (`file=True`: a regular file's mode).
    """
    if permissions is None:
        return None if current is None else stat.S_IMODE(current.st_mode)
    if isinstance(permissions, int):
        return permissions
    from pathlib import Path

    mode = permissions(Path(target), current)
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"permissions hook must return an int mode, not {type(mode).__name__}")
    return _check_bits(mode, file, "the permissions hook's result ")


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
