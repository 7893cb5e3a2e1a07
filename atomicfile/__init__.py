"""Write files atomically: after a write, a file holds the old content or the new, never a
torn or empty one, even if the process is killed or the power fails.

    with AtomicFile("config.json") as f:      # as open("config.json", "w")
        json.dump(config, f)
"""

from __future__ import annotations

from ._core import AtomicFile, atomic_write
from ._errors import SessionFileError
from ._move import atomic_move, atomic_move_async
from ._symlink import atomic_symlink, atomic_symlink_async
from ._update import atomic_update

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._async import AsyncFile, atomic_write_async
    from ._batch import AtomicBatch
    from ._clean import clean_stale_temps
    from ._directory import AtomicDirectory
    from ._path import AtomicPath, atomic_path
    from ._update import atomic_update_async

__version__ = "0.2.0"
__all__ = [
    "AsyncFile",
    "AtomicBatch",
    "AtomicDirectory",
    "AtomicFile",
    "AtomicPath",
    "SessionFileError",
    "__version__",
    "atomic_move",
    "atomic_move_async",
    "atomic_path",
    "atomic_symlink",
    "atomic_symlink_async",
    "atomic_update",
    "atomic_update_async",
    "atomic_write",
    "atomic_write_async",
    "clean_stale_temps",
]

for _obj in (
    AtomicFile, SessionFileError, atomic_update, atomic_write, atomic_move, atomic_move_async,
    atomic_symlink, atomic_symlink_async,
):  # fmt: skip
    _obj.__module__ = __name__
del _obj

# Loaded on first use: the async names import asyncio (tens of milliseconds), few programs
# sweep stale temps, and the many-file forms bring typing and ctypes.
_LAZY = {
    "AsyncFile": "_async",
    "atomic_write_async": "_async",
    "atomic_update_async": "_update",
    "clean_stale_temps": "_clean",
    "AtomicBatch": "_batch",
    "AtomicDirectory": "_directory",
    "AtomicPath": "_path",
    "atomic_path": "_path",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        value.__module__ = __name__
        globals()[name] = value
        return value
    if name.startswith("Session") and name != "SessionFileError":
        # The per-errno classes, e.g. SessionPermissionError: made on first use.
        import builtins

        from ._errors import session_class

        builtin = getattr(builtins, name[len("Session") :], None)
        if isinstance(builtin, type) and issubclass(builtin, OSError) and builtin is not OSError:
            return session_class(builtin)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
