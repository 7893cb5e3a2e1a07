"""Parse and validate the mode strings `AtomicFile` accepts."""

from __future__ import annotations

_LETTERS = frozenset("wxar+tb")


class Mode:
    """A validated mode: what kind of write it is and how to open the temp file."""

    __slots__ = ("binary", "kind", "plus", "raw", "text")

    def __init__(self, mode: str) -> None:
        if not isinstance(mode, str):
            raise TypeError(f"mode must be str, not {type(mode).__name__}")
        if not mode or len(set(mode)) != len(mode) or not _LETTERS.issuperset(mode):
            raise ValueError(f"invalid mode: {mode!r}")
        kinds = [c for c in mode if c in "wxar"]
        if len(kinds) != 1:
            raise ValueError(
                f"invalid mode: {mode!r}: must have exactly one of 'w', 'x', 'a' or 'r+'"
            )
        if "t" in mode and "b" in mode:
            raise ValueError(f"invalid mode: {mode!r}: can't have text and binary mode at once")
        self.kind = kinds[0]
        self.plus = "+" in mode
        if self.kind == "r" and not self.plus:
            raise ValueError(
                f"AtomicFile cannot open mode {mode!r}: it only reads. "
                "Use open() to read a file, or 'r+' to rewrite it in place."
            )
        self.binary = "b" in mode
        self.text = not self.binary
        # FileIO's own mode letters: no 't'/'b', '+' kept ('r' only ever comes as 'r+').
        self.raw = self.kind + ("+" if self.plus else "")

    @property
    def needs_copy(self) -> bool:
        """True when the temp file starts as a copy of the target ('a' and 'r+')."""
        return self.kind in "ar"


_parsed: dict[str, Mode] = {}


def parse_mode(mode: str) -> Mode:
    """The validated `Mode` for `mode`, parsed once per distinct string."""
    parsed = _parsed.get(mode) if isinstance(mode, str) else None
    if parsed is None:
        parsed = _parsed.setdefault(mode, Mode(mode)) if isinstance(mode, str) else Mode(mode)
    return parsed
