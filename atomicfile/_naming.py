"""Temp file names: `.<target basename>.<16 lowercase hex>.tmp`, beside the target."""

from __future__ import annotations

import os

# Linux's NAME_MAX on ext4, xfs, btrfs and tmpfs. A filesystem with a smaller limit makes the
# create fail with ENAMETOOLONG, and the caller retries with os.pathconf's figure.
NAME_MAX = 255
_OVERHEAD = len("..0123456789abcdef.tmp")


def temp_prefix(basename: str, name_max: int = NAME_MAX) -> str:
    """The part of a temp name before the random hex: `.<basename>.`, shortened to fit."""
    budget = name_max - _OVERHEAD
    # A character is at most 4 bytes in UTF-8 (1 for a surrogate-escaped byte): short
    # names fit without encoding them.
    if len(basename) * 4 > budget and len(os.fsencode(basename)) > budget:
        # Cut whole characters, not bytes, so the name stays valid in the file system encoding.
        while basename and len(os.fsencode(basename)) > budget:
            basename = basename[:-1]
    return f".{basename}."


def temp_name(basename: str, token: int, name_max: int = NAME_MAX) -> str:
    """The temp file name for `basename` with the 64-bit random `token`."""
    return f"{temp_prefix(basename, name_max)}{token:016x}.tmp"


def is_temp_name(name: str) -> bool:
    """True if `name` has the exact shape of a temp name this library creates."""
    if len(name) < _OVERHEAD + 1 or name[0] != "." or not name.endswith(".tmp"):
        return False
    token = name[-20:-4]
    return name[-21] == "." and all(c in "0123456789abcdef" for c in token)
