"""`SessionFileError`: an `OSError` from an atomic write, carrying the target and the step."""

from __future__ import annotations

import builtins

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeGuard


class SessionFileError(OSError):
    """An atomic write of `path` failed; the target was left as it was.

    It is an `OSError` with the `errno`, `strerror` and `filename` of its `cause`, and also
    the builtin subclass `open()` would have raised for that errno (`PermissionError` for
    EACCES, `FileNotFoundError` for ENOENT, ...), so `except PermissionError:` keeps working.
    `operation` names the writer (`"atomic write"`, `"atomic directory"`); `step` names
    the part of the protocol that failed (`"create temp"`, `"write"`, `"fsync"`, ...).
    """

    path: str
    operation: str
    step: str
    cause: OSError

    def __new__(
        cls, path: str, operation: str, cause: OSError, step: str = "write"
    ) -> SessionFileError:
        if cls is SessionFileError:
            cls = _class_for(cause.errno)
        return super().__new__(cls, *_os_args(cause))

    def __init__(self, path: str, operation: str, cause: OSError, step: str = "write") -> None:
        super().__init__(*_os_args(cause))
        self.path = path
        self.operation = operation
        self.step = step
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.operation} of {self.path!r} failed at {self.step}: {self.cause}"

    def __repr__(self) -> str:
        return (
            f"SessionFileError(path={self.path!r}, operation={self.operation!r}, "
            f"step={self.step!r}, errno={self.errno!r}, strerror={self.strerror!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (SessionFileError, (self.path, self.operation, self.cause, self.step))


def _os_args(cause: OSError) -> tuple[Any, ...]:
    if cause.errno is None:
        return cause.args
    if cause.filename2 is not None:
        return (cause.errno, cause.strerror, cause.filename, None, cause.filename2)
    if cause.filename is not None:
        return (cause.errno, cause.strerror, cause.filename)
    return (cause.errno, cause.strerror)


_classes: dict[type[OSError], type[SessionFileError]] = {}


def _class_for(errno: int | None) -> type[SessionFileError]:
    """The SessionFileError subclass that is also what `open()` raises for `errno`."""
    if errno is None:
        return SessionFileError
    return session_class(type(OSError(errno, "")))  # CPython's own errno -> subclass table


def session_class(builtin: type[OSError]) -> type[SessionFileError]:
    """The one SessionFileError subclass that is also `builtin` (SessionFileError itself
    for plain OSError). Reachable as `atomicfile.Session<builtin name>`, so it pickles."""
    if builtin is OSError:
        return SessionFileError
    cls = _classes.get(builtin)
    if cls is None:
        name = f"Session{builtin.__name__}"
        made = type(name, (SessionFileError, builtin), {"__module__": "atomicfile"})
        # setdefault: two threads racing here still end up with one class per errno class.
        cls = _classes.setdefault(builtin, made)
    return cls


_BUILTIN_OSERRORS = frozenset(
    cls for cls in vars(builtins).values() if isinstance(cls, type) and issubclass(cls, OSError)
)


def is_builtin_oserror(exc: BaseException) -> bool:
    """OSError itself or one of Python's builtin subclasses (PermissionError, ...), not
    ssl.SSLError, socket.gaierror or a user's own subclass."""
    return type(exc) in _BUILTIN_OSERRORS


def needs_wrapping(exc: BaseException) -> TypeGuard[OSError]:
    """An operating system error not yet wrapped in SessionFileError. OSErrors without an
    errno, such as io.UnsupportedOperation (also a ValueError), are Python's own and pass
    unchanged."""
    return (
        isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, SessionFileError)
    )
