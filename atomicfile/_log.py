"""The log events of an atomic write (constant messages, fields in `extra=`).

Importing this module imports no `logging` (which costs more than this whole package): the
library's logger is made by the first write that logs to it.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol, Union

    class LoggerLike(Protocol):
        """Anything with the `logging.Logger` methods the library calls."""

        def debug(self, msg: str, *, extra: dict[str, Any]) -> object: ...
        def warning(self, msg: str, *, extra: dict[str, Any]) -> object: ...
        def error(self, msg: str, *, extra: dict[str, Any]) -> object: ...

    import logging

    AnyLogger = Union[logging.Logger, "logging.LoggerAdapter[Any]", LoggerLike]

LOGGER_NAME = "atomicfile"
#: `logging.getLogger("atomicfile")`, made (with the library's one handler, a NullHandler)
#: when a write first needs it.
_default: Any = None


def default_logger() -> Any:
    """The library's logger, `logging.getLogger("atomicfile")`."""
    global _default
    if _default is None:
        import logging

        logger = logging.getLogger(LOGGER_NAME)
        logger.addHandler(logging.NullHandler())
        _default = logger
    return _default


STARTED = "Starting atomic write"
WRITTEN = "Temp file written"
RENAMED = "Temp file renamed to target"
COMPLETED = "Atomic write completed successfully"
FAILED = "Atomic write failed"
DISCARDED = "Atomic write discarded"
CLEANED = "Temp file cleaned up"
CLEANUP_FAILED = "Failed to clean up temp file"
DIR_SYNC_SKIPPED = "Directory fsync not possible"
OWNER_KEPT_FAILED = "Could not keep the target's owner"
ACL_KEPT_FAILED = "Could not keep the target's access ACL: mode narrowed"
UNLOCKED = "Temp files here are not locked: the file system has no flock"

# logging's own values, without importing it.
DEBUG = 10
WARNING = 30
ERROR = 40

now = time.perf_counter


def ms(start: float) -> float:
    """Milliseconds since the `now()` reading `start`."""
    return (time.perf_counter() - start) * 1000.0


def error_code(exc: BaseException) -> str:
    """The errno name of an OSError (`"EACCES"`), else the exception's class name."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        import errno

        return errno.errorcode.get(code, str(code))
    return type(exc).__name__


class EventLog:
    """Sends one write's events to a logger, building fields only for enabled levels."""

    __slots__ = ("debug", "logger")

    def __init__(self, logger: AnyLogger | None) -> None:
        self.logger: AnyLogger = (_default or default_logger()) if logger is None else logger
        #: Read once per write: field dicts and timings are skipped when DEBUG is off.
        self.debug = self.enabled(DEBUG)

    def enabled(self, level: int) -> bool:
        check = getattr(self.logger, "isEnabledFor", None)
        return True if check is None else bool(check(level))

    def emit(self, level: int, msg: str, fields: dict[str, Any]) -> None:
        """Log `msg` with `fields` as LogRecord attributes, also through a LoggerAdapter."""
        logger = self.logger
        logging = sys.modules.get("logging")  # a LoggerAdapter means logging is imported
        if logging is not None and isinstance(logger, logging.LoggerAdapter):
            # LoggerAdapter.process() replaces the call's `extra` with the adapter's own
            # (unless merge_extra=True, 3.13+), which would drop our fields: merge them
            # back in, and keep whatever the adapter adds.
            while isinstance(logger, logging.LoggerAdapter):
                msg, kwargs = logger.process(msg, {"extra": fields})
                fields = {**(kwargs.get("extra") or {}), **fields}
                logger = logger.logger
            logger.log(level, msg, extra=fields)
            return
        if level == DEBUG:
            logger.debug(msg, extra=fields)
        elif level == WARNING:
            logger.warning(msg, extra=fields)
        else:
            logger.error(msg, extra=fields)
