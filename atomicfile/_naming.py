"""Temp file names: `.<target basename>.<16 lowercase hex>.tmp`, beside the target."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

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
    if len(basename) * 4 <= name_max - _OVERHEAD:
        # Fits whatever its encoding (temp_prefix's first test), inline: one call less on
        # every write.
        return f".{basename}.{token:016x}.tmp"
    return f"{temp_prefix(basename, name_max)}{token:016x}.tmp"


def is_temp_name(name: str) -> bool:
    """True if `name` has the exact shape of a temp name this library creates."""
    if len(name) < _OVERHEAD + 1 or name[0] != "." or not name.endswith(".tmp"):
        return False
    token = name[-20:-4]
    return name[-21] == "." and all(c in "0123456789abcdef" for c in token)


_key: bytes | None = None
_counter = 0
_hash: Callable[..., Any] | None = None
#: Tokens drawn and not yet used: one 64-byte digest gives eight.
_pending: list[int] = []


def token() -> int:
    """64 bits for a temp name that nobody can predict from the names already seen.

    A 128-bit key is drawn from the OS once per process (and again in a forked child);
    names come from a keyed BLAKE2b of a counter, eight per digest. O_EXCL makes a guessed
    name harmless, but a predictable sequence would let another user pre-create the next
    names and starve writers; this costs no system call per write (a Mersenne Twister, as
    `random` has, is rebuilt from 624 outputs).
    """
    try:
        return _pending.pop()
    except IndexError:
        pass
    global _key, _counter, _hash
    if _key is None:
        _key = os.urandom(16)
    if _hash is None:
        try:
            from _blake2 import blake2b  # what hashlib wraps, without importing OpenSSL
        except ImportError:  # pragma: no cover - builds without it
            from hashlib import blake2b
        _hash = blake2b
    _counter += 1
    digest = _hash(_counter.to_bytes(8, "little"), digest_size=64, key=_key).digest()
    tokens = [int.from_bytes(digest[i : i + 8], "little") for i in range(0, 64, 8)]
    _pending.extend(tokens[1:])
    return tokens[0]


def _rekey() -> None:
    global _key
    _key = None  # a forked child must not draw its parent's names
    _pending.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rekey)
