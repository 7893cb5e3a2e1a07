"""The log events of an atomic write (README "Logging"), their levels, messages and fields,
on the default `atomicfile` logger and on whatever `logger=` the caller passes."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicfile import AtomicFile, SessionFileError

from conftest import Form, listing, temps

# -- helpers --------------------------------------------------------------------------------

#: What every LogRecord has before `extra=` adds anything (plus what formatting adds).
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

STARTED = "Starting atomic write"
WRITTEN = "Temp file written"
RENAMED = "Temp file renamed to target"
COMPLETED = "Atomic write completed successfully"
FAILED = "Atomic write failed"
DISCARDED = "Atomic write discarded"
CLEANED = "Temp file cleaned up"
CLEANUP_FAILED = "Failed to clean up temp file"

# The exact field sets of the README's table of events.
KEYS = {
    STARTED: {"target_path", "temp_path", "operation"},
    WRITTEN: {"temp_path", "size", "duration", "operation"},
    RENAMED: {"temp_path", "target_path", "duration", "operation"},
    COMPLETED: {"target_path", "size", "total_duration"},
    FAILED: {"target_path", "temp_path", "error_code", "error_message", "operation"},
    CLEANED: {"temp_path", "operation"},
    CLEANUP_FAILED: {"temp_path", "cleanup_error_code"},
    DISCARDED: {"target_path", "temp_path", "operation"},
}


def the_temp(directory: Path) -> str:
    """The full path of the one temp file in `directory` (the file's `name` is the target's,
    as open() gives it; the temp is found by listing the directory)."""
    (name,) = temps(directory)
    return str(directory / name)


def remove_the_temp(directory: Path) -> Any:
    """A block body that removes the write's own temp (found in the listing)."""
    return lambda f: os.unlink(the_temp(directory))


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The attributes `extra=` put on a record."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def sequence(records: list[logging.LogRecord]) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in records]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    """The records of the default `atomicfile` logger, with its level at DEBUG for the test;
    also checks the library left that level (and the handlers) as the test set them."""
    logger = logging.getLogger("atomicfile")
    level, handlers = logger.level, list(logger.handlers)
    handler = Collect()
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler.records
        assert logger.level == logging.DEBUG, "the library changed its logger's level"
        # At most the library's one NullHandler was added (on the first write ever).
        added = [h for h in logger.handlers if h is not handler and h not in handlers]
        assert [type(h) for h in added] in ([], [logging.NullHandler])
        assert len(_null_handlers(logger)) == 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _null_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if type(h) is logging.NullHandler]


def check_ms(value: object) -> None:
    assert isinstance(value, float)
    assert value >= 0.0


D, W, E = logging.DEBUG, logging.WARNING, logging.ERROR
A = "atomicfile"

# -- the default logger ---------------------------------------------------------------------


def test_success_events(tmp_path: Path, form: Form, captured: list[logging.LogRecord]) -> None:
    target = tmp_path / "t"
    names: list[str] = []
    text = "héllo wörld\n" * 3
    form.write(str(target), text, encoding="utf-8",
               inside=lambda f: names.append(the_temp(tmp_path)))  # fmt: skip
    assert target.read_bytes() == text.encode("utf-8")
    assert listing(tmp_path) == ["t"]

    assert sequence(captured) == [(A, D, STARTED), (A, D, WRITTEN), (A, D, RENAMED),
                                  (A, D, COMPLETED)]  # fmt: skip
    started, written, renamed, completed = (fields(r) for r in captured)
    for record in captured:
        assert set(fields(record)) == KEYS[record.getMessage()], record.getMessage()
    (temp,) = names
    size = len(text.encode("utf-8"))  # bytes, not characters
    assert started == {"target_path": str(target), "temp_path": temp, "operation": "atomic_write"}
    assert {k: written[k] for k in ("temp_path", "size", "operation")} == {
        "temp_path": temp, "size": size, "operation": "write_file"}  # fmt: skip
    assert {k: renamed[k] for k in ("temp_path", "target_path", "operation")} == {
        "temp_path": temp, "target_path": str(target), "operation": "rename"}  # fmt: skip
    assert {k: completed[k] for k in ("target_path", "size")} == {
        "target_path": str(target), "size": size}  # fmt: skip
    for value in (written["duration"], renamed["duration"], completed["total_duration"]):
        check_ms(value)
    # Both measured from the write's start; the total ends later.
    assert completed["total_duration"] >= written["duration"]


def test_size_known_up_front_for_bytes(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord]
) -> None:
    target = tmp_path / "t"
    data = bytes(range(256)) * 10
    form.write_all(str(target), data)
    assert target.read_bytes() == data
    assert listing(tmp_path) == ["t"]
    assert [r.getMessage() for r in captured] == [STARTED, WRITTEN, RENAMED, COMPLETED]
    started = fields(captured[0])
    assert set(started) == KEYS[STARTED] | {"size"}
    assert started["size"] == len(data)
    assert fields(captured[1])["size"] == len(data)
    assert fields(captured[3])["size"] == len(data)


def test_user_exception_events(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord]
) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    names: list[str] = []
    with pytest.raises(ValueError, match=r"^boom$"):
        form.write(str(target), "new", inside=lambda f: names.append(the_temp(tmp_path)),
                   raise_=ValueError("boom"))  # fmt: skip
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]

    assert sequence(captured) == [(A, D, STARTED), (A, E, FAILED), (A, D, CLEANED)]
    for record in captured:
        assert set(fields(record)) == KEYS[record.getMessage()]
    (temp,) = names
    assert fields(captured[1]) == {
        "target_path": str(target),
        "temp_path": temp,
        "error_code": "ValueError",
        "error_message": "boom",
        "operation": "atomic_write",
    }
    assert fields(captured[2]) == {"temp_path": temp, "operation": "cleanup"}


def test_oserror_events(tmp_path: Path, form: Form, captured: list[logging.LogRecord]) -> None:
    target = tmp_path / "missing" / "t"
    with pytest.raises(FileNotFoundError) as info:
        form.write(str(target), "new")
    assert isinstance(info.value, SessionFileError)
    assert info.value.errno == errno.ENOENT
    assert listing(tmp_path) == []

    # Nothing was created, so nothing is cleaned up.
    assert sequence(captured) == [(A, D, STARTED), (A, E, FAILED)]
    failed = fields(captured[1])
    assert set(failed) == KEYS[FAILED]
    assert failed["target_path"] == str(target)
    assert failed["temp_path"] == fields(captured[0])["temp_path"]
    assert failed["error_code"] == "ENOENT"
    assert failed["operation"] == "atomic_write"
    assert failed["error_message"] == str(info.value.cause)
    assert os.strerror(errno.ENOENT) in failed["error_message"]


def test_oserror_in_block_events(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord]
) -> None:
    """An OSError raised inside the block: the errno name, not the class name."""
    target = tmp_path / "t"
    target.write_bytes(b"old")
    err = PermissionError(errno.EACCES, "no")
    with pytest.raises(PermissionError):
        form.write(str(target), "new", raise_=err)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]
    assert sequence(captured) == [(A, D, STARTED), (A, E, FAILED), (A, D, CLEANED)]
    assert fields(captured[1])["error_code"] == "EACCES"


def _discarding_write(form: Form, target: Path, names: list[str]) -> None:
    af = AtomicFile(str(target))
    if not form.is_async:
        with af as f:
            f.write("new")
            names.append(str(af.temp_path))
            af.discard()
        return

    async def main() -> None:
        async with af as f:
            await f.write("new")
            names.append(str(af.temp_path))
            af.discard()

    form.run(main)


def test_discard_logs_debug_never_error(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord]
) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    names: list[str] = []
    _discarding_write(form, target, names)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]

    assert sequence(captured) == [(A, D, STARTED), (A, D, DISCARDED), (A, D, CLEANED)]
    assert all(r.levelno == logging.DEBUG for r in captured)
    (temp,) = names
    assert fields(captured[1]) == {
        "target_path": str(target), "temp_path": temp, "operation": "discard"}  # fmt: skip
    assert fields(captured[2]) == {"temp_path": temp, "operation": "cleanup"}


def test_discard_without_with(tmp_path: Path, captured: list[logging.LogRecord]) -> None:
    target = tmp_path / "t"
    af = AtomicFile(str(target))
    af.open().write("new")
    af.discard()
    assert listing(tmp_path) == []
    assert sequence(captured) == [(A, D, STARTED), (A, D, DISCARDED), (A, D, CLEANED)]


def test_failed_cleanup_is_a_warning(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord]
) -> None:
    """A real cleanup failure: the block removes its own temp, then raises. The unlink of
    the cleanup then fails with ENOENT; the block's error still comes out."""
    target = tmp_path / "t"
    target.write_bytes(b"old")
    names: list[str] = []

    def remove_temp(f: Any) -> None:
        names.append(the_temp(tmp_path))
        os.unlink(names[-1])

    with pytest.raises(ValueError, match=r"^boom$"):
        form.write(str(target), "new", inside=remove_temp, raise_=ValueError("boom"))
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]

    assert sequence(captured) == [(A, D, STARTED), (A, E, FAILED), (A, W, CLEANUP_FAILED)]
    (temp,) = names
    assert fields(captured[2]) == {"temp_path": temp, "cleanup_error_code": "ENOENT"}


def test_failed_cleanup_injected(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unlink refused with EBUSY (injected: no real file system refuses this unlink on
    demand). The temp then stays, and is named in the warning."""
    target = tmp_path / "t"
    target.write_bytes(b"old")
    real_unlink = os.unlink
    refused: list[str] = []

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        # The store unlinks the bare temp name relative to the directory's fd.
        name = os.fsdecode(path)
        dir_fd = kwargs.get("dir_fd")
        if name.startswith(".t.") and dir_fd is not None:
            assert os.path.samestat(os.fstat(dir_fd), os.stat(tmp_path))
            refused.append(str(tmp_path / name))
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(KeyError):
        form.write(str(target), "new", raise_=KeyError("k"))
    monkeypatch.undo()
    assert len(refused) == 1, "the fault did not fire"
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == sorted(["t", os.path.basename(refused[0])])
    os.unlink(refused[0])

    assert sequence(captured) == [(A, D, STARTED), (A, E, FAILED), (A, W, CLEANUP_FAILED)]
    assert fields(captured[1])["error_code"] == "KeyError"
    assert fields(captured[2]) == {"temp_path": refused[0], "cleanup_error_code": "EBUSY"}


def test_default_logger_setup_in_fresh_interpreter(tmp_path: Path) -> None:
    """The library adds one NullHandler to `atomicfile` and configures nothing else: level,
    propagation and the root logger stay as they were, however many writes happen."""
    code = f"""
import logging, atomicfile
atomicfile.atomic_write({str(tmp_path / "a")!r}, "x")
atomicfile.atomic_write({str(tmp_path / "b")!r}, b"y")
with atomicfile.AtomicFile({str(tmp_path / "c")!r}) as f:
    f.write("z")
lg = logging.getLogger("atomicfile")
root = logging.getLogger()
print(lg.level, [type(h).__name__ for h in lg.handlers], lg.propagate, lg.disabled,
      root.level, root.handlers)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # nothing printed by a last-resort handler either
    assert done.stdout.split("\n")[0] == "0 ['NullHandler'] True False 30 []"


def test_library_never_changes_the_level(tmp_path: Path, form: Form) -> None:
    logger = logging.getLogger("atomicfile")
    old = logger.level
    try:
        for level in (logging.WARNING, logging.NOTSET, logging.DEBUG, logging.CRITICAL):
            logger.setLevel(level)
            form.write(tmp_path / "t", "x")
            with pytest.raises(ValueError):
                form.write(tmp_path / "t", "x", raise_=ValueError())
            assert logger.level == level
    finally:
        logger.setLevel(old)
    assert listing(tmp_path) == ["t"]
    assert any(type(h) is logging.NullHandler for h in logger.handlers)


# -- logger= ------------------------------------------------------------------------------


def _custom_logger(name: str) -> tuple[logging.Logger, Collect]:
    logger = logging.Logger(name, logging.DEBUG)  # outside the manager: nothing propagates
    handler = Collect()
    logger.addHandler(handler)
    return logger, handler


def test_custom_logger(tmp_path: Path, form: Form, captured: list[logging.LogRecord]) -> None:
    logger, handler = _custom_logger("app.files")
    form.write(str(tmp_path / "t"), "new", logger=logger)
    with pytest.raises(ValueError):
        form.write(str(tmp_path / "t"), "newer", logger=logger, raise_=ValueError("x"))
    assert (tmp_path / "t").read_text() == "new"
    assert listing(tmp_path) == ["t"]
    n = "app.files"
    assert sequence(handler.records) == [
        (n, D, STARTED), (n, D, WRITTEN), (n, D, RENAMED), (n, D, COMPLETED),
        (n, D, STARTED), (n, E, FAILED), (n, D, CLEANED),
    ]  # fmt: skip
    for record in handler.records:
        assert set(fields(record)) == KEYS[record.getMessage()]
    assert captured == []  # the default logger heard nothing


def test_logger_adapter_extra_merges(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord]
) -> None:
    """A plain LoggerAdapter replaces the call's `extra` with its own before Python 3.13:
    both the adapter's fields and ours must reach the record."""
    logger, handler = _custom_logger("app.adapted")
    adapter = logging.LoggerAdapter(logger, {"request_id": "r-42"})
    target = tmp_path / "t"
    form.write(str(target), "new", logger=adapter)
    with pytest.raises(ValueError):
        form.write(str(target), "newer", logger=adapter, raise_=ValueError("x"))
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]
    n = "app.adapted"
    assert sequence(handler.records) == [
        (n, D, STARTED), (n, D, WRITTEN), (n, D, RENAMED), (n, D, COMPLETED),
        (n, D, STARTED), (n, E, FAILED), (n, D, CLEANED),
    ]  # fmt: skip
    for record in handler.records:
        got = fields(record)
        assert set(got) == KEYS[record.getMessage()] | {"request_id"}
        assert got["request_id"] == "r-42"
    assert fields(handler.records[0])["target_path"] == str(target)
    assert fields(handler.records[5])["error_code"] == "ValueError"
    assert captured == []


def test_logger_adapter_process_applied(tmp_path: Path, form: Form) -> None:
    """An adapter that rewrites messages (its whole point) still does, and ours still merge."""

    class Prefixed(logging.LoggerAdapter):  # type: ignore[type-arg]
        def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
            return f"[job 7] {msg}", kwargs

    logger, handler = _custom_logger("app.prefixed")
    form.write(str(tmp_path / "t"), "new", logger=Prefixed(logger, {"job": 7}))
    assert [r.getMessage() for r in handler.records] == [
        f"[job 7] {m}" for m in (STARTED, WRITTEN, RENAMED, COMPLETED)
    ]
    assert set(fields(handler.records[0])) == KEYS[STARTED]
    assert listing(tmp_path) == ["t"]


class DuckLogger:
    """Only the three methods the library calls, keyword-only `extra`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def debug(self, msg: str, *, extra: dict[str, Any]) -> None:
        self.calls.append(("debug", msg, dict(extra)))

    def warning(self, msg: str, *, extra: dict[str, Any]) -> None:
        self.calls.append(("warning", msg, dict(extra)))

    def error(self, msg: str, *, extra: dict[str, Any]) -> None:
        self.calls.append(("error", msg, dict(extra)))


def test_duck_typed_logger(tmp_path: Path, form: Form, captured: list[logging.LogRecord]) -> None:
    duck = DuckLogger()
    target = tmp_path / "t"
    form.write(str(target), "new", logger=duck)
    with pytest.raises(ValueError):
        form.write(str(target), "x", logger=duck, inside=remove_the_temp(tmp_path),
                   raise_=ValueError("x"))  # fmt: skip
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]
    assert [(level, msg) for level, msg, _ in duck.calls] == [
        ("debug", STARTED), ("debug", WRITTEN), ("debug", RENAMED), ("debug", COMPLETED),
        ("debug", STARTED), ("error", FAILED), ("warning", CLEANUP_FAILED),
    ]  # fmt: skip
    for _, msg, extra in duck.calls:
        assert set(extra) == KEYS[msg]
    assert captured == []


class NoDebugLogger(logging.Logger):
    """DEBUG is off; any DEBUG call at all fails the test."""

    def __init__(self) -> None:
        super().__init__("app.quiet", logging.DEBUG)
        self.asked: list[int] = []
        self.debug_calls: list[object] = []
        self.handler = Collect()
        self.addHandler(self.handler)

    def isEnabledFor(self, level: int) -> bool:
        self.asked.append(level)
        return level > logging.DEBUG

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug_calls.append(msg)
        raise AssertionError(f"debug() called while DEBUG is disabled: {msg!r}")

    def _log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level <= logging.DEBUG:
            self.debug_calls.append(msg)
            raise AssertionError(f"DEBUG record built while DEBUG is disabled: {msg!r}")
        super()._log(level, msg, *args, **kwargs)


@pytest.mark.parametrize("wrap", ["logger", "adapter"])
def test_debug_disabled_builds_nothing(
    tmp_path: Path, form: Form, captured: list[logging.LogRecord], wrap: str
) -> None:
    quiet = NoDebugLogger()
    logger: Any = quiet if wrap == "logger" else logging.LoggerAdapter(quiet, {"k": 1})
    target = tmp_path / "t"
    form.write(str(target), "new", logger=logger)
    form.write_all(str(target), b"bytes", logger=logger)
    _discarding_write_with(form, target, logger)
    with pytest.raises(ValueError):
        form.write(str(target), "x", logger=logger, inside=remove_the_temp(tmp_path),
                   raise_=ValueError("x"))  # fmt: skip
    assert target.read_bytes() == b"bytes"
    assert listing(tmp_path) == ["t"]
    assert quiet.debug_calls == []
    assert logging.DEBUG in quiet.asked, "the logger's level was never consulted"
    assert [(r.levelno, r.getMessage()) for r in quiet.handler.records] == [
        (E, FAILED), (W, CLEANUP_FAILED)]  # fmt: skip
    assert set(fields(quiet.handler.records[0])) - {"k"} == KEYS[FAILED]
    assert captured == []


def _discarding_write_with(form: Form, target: Path, logger: Any) -> None:
    af = AtomicFile(str(target), logger=logger)
    if not form.is_async:
        with af as f:
            f.write("discarded")
            af.discard()
        return

    async def main() -> None:
        async with af as f:
            await f.write("discarded")
            af.discard()

    form.run(main)


def test_level_above_debug_on_default_logger(tmp_path: Path, form: Form) -> None:
    """With the `atomicfile` logger at WARNING, a failed write logs only its ERROR."""
    logger = logging.getLogger("atomicfile")
    old = logger.level
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        form.write(tmp_path / "t", "new")
        _discarding_write_with(form, tmp_path / "t", None)
        with pytest.raises(ValueError):
            form.write(tmp_path / "t", "x", raise_=ValueError("x"))
        assert logger.level == logging.WARNING
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert (tmp_path / "t").read_text() == "new"
    assert listing(tmp_path) == ["t"]
    assert sequence(handler.records) == [(A, E, FAILED)]


def test_nested_logger_adapters(tmp_path: Path, form: Form) -> None:
    """Adapters stacked on adapters: every level's own extra and our fields all arrive."""
    logger, handler = _custom_logger("app.nested")
    inner = logging.LoggerAdapter(logger, {"tenant": "t1"})
    outer = logging.LoggerAdapter(inner, {"request_id": "r-1"})
    form.write(str(tmp_path / "t"), "new", logger=outer)
    assert [r.getMessage() for r in handler.records] == [STARTED, WRITTEN, RENAMED, COMPLETED]
    for record in handler.records:
        got = fields(record)
        assert set(got) == KEYS[record.getMessage()] | {"tenant", "request_id"}
        assert (got["tenant"], got["request_id"]) == ("t1", "r-1")
    assert listing(tmp_path) == ["t"]
