"""SessionFileError itself: the builtin class for its errno, the attributes
copied from its cause, pickling, str/repr, and the dynamic classes' identity."""

from __future__ import annotations

import copy
import errno
import os
import pickle

import pytest

import atomicfile
from atomicfile import SessionFileError


def make(code: int | None, filename: str | None = "/d/.t.0123456789abcdef.tmp",
         step: str = "fsync") -> SessionFileError:  # fmt: skip
    cause = OSError("no errno") if code is None else OSError(code, os.strerror(code), filename)
    return SessionFileError("/d/t", "atomic write", cause, step)


@pytest.mark.parametrize(
    ("code", "builtin"),
    [
        (errno.EACCES, PermissionError),
        (errno.EPERM, PermissionError),
        (errno.ENOENT, FileNotFoundError),
        (errno.EEXIST, FileExistsError),
        (errno.EISDIR, IsADirectoryError),
        (errno.ENOTDIR, NotADirectoryError),
        (errno.EINTR, InterruptedError),
        (errno.EAGAIN, BlockingIOError),
        (errno.ETIMEDOUT, TimeoutError),
    ],
)
def test_subclass_for_errno(code: int, builtin: type[OSError]) -> None:
    err = make(code)
    assert isinstance(err, SessionFileError)
    assert isinstance(err, builtin)
    assert isinstance(err, OSError)
    assert type(err) is not SessionFileError
    assert type(err).__name__ == f"Session{builtin.__name__}"
    assert type(err).__module__ == "atomicfile"
    assert type(err).__mro__[1:3] == (SessionFileError, builtin)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS, errno.ENAMETOOLONG,
                                  errno.EXDEV, errno.EBUSY, 99999])  # fmt: skip
def test_plain_os_error_for_errnos_without_a_subclass(code: int) -> None:
    err = make(code)
    assert type(err) is SessionFileError
    assert not isinstance(err, (PermissionError, FileNotFoundError, FileExistsError))
    assert err.errno == code


def test_errno_none() -> None:
    err = make(None)
    assert type(err) is SessionFileError
    assert err.errno is None and err.strerror is None and err.filename is None
    assert "no errno" in str(err)


def test_except_clauses_written_for_open_keep_working() -> None:
    with pytest.raises(PermissionError):
        raise make(errno.EACCES)
    try:
        raise make(errno.ENOENT)
    except FileNotFoundError as caught:
        assert isinstance(caught, SessionFileError)
    with pytest.raises(OSError):
        raise make(errno.ENOSPC)


def test_attributes() -> None:
    cause = PermissionError(errno.EACCES, "Permission denied", "/d/.t.0123456789abcdef.tmp")
    err = SessionFileError("/d/t", "atomic write", cause, "create temp")
    assert err.path == "/d/t"
    assert err.operation == "atomic write"
    assert err.step == "create temp"
    assert err.cause is cause
    assert err.errno == errno.EACCES
    assert err.strerror == "Permission denied"
    assert err.filename == cause.filename
    assert err.filename2 is None


def test_filename2_is_copied() -> None:
    cause = OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/d/.t.x.tmp", None, "/d/t")
    err = SessionFileError("/d/t", "atomic write", cause, "rename")
    assert (err.filename, err.filename2) == ("/d/.t.x.tmp", "/d/t")


def test_default_step() -> None:
    err = SessionFileError("/d/t", "atomic write", OSError(errno.EIO, "x"))
    assert err.step == "write"


def test_one_class_per_errno_class() -> None:
    """Two errors of the same errno class share one class object (not a class per call)."""
    a, b = make(errno.EACCES), make(errno.EPERM)
    assert type(a) is type(b)
    assert type(make(errno.ENOENT)) is type(make(errno.ENOENT))
    assert type(a) is not type(make(errno.ENOENT))


def test_module_is_atomicfile() -> None:
    assert SessionFileError.__module__ == "atomicfile"
    assert type(make(errno.EEXIST)).__module__ == "atomicfile"
    assert atomicfile.SessionFileError is SessionFileError


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOENT, errno.ENOSPC, errno.EXDEV, None])
@pytest.mark.parametrize("copier", ["pickle", "copy"])
def test_pickle_round_trip(code: int | None, copier: str) -> None:
    err = make(code, step="rename")
    if copier == "pickle":
        back = pickle.loads(pickle.dumps(err, protocol=pickle.HIGHEST_PROTOCOL))
    else:
        back = copy.copy(err)
    assert type(back) is type(err)
    for name in ("path", "operation", "step", "errno", "strerror", "filename", "filename2"):
        assert getattr(back, name) == getattr(err, name), name
    assert type(back.cause) is type(err.cause) and back.cause.args == err.cause.args
    assert str(back) == str(err)
    assert repr(back) == repr(err)


def test_str_and_repr_are_readable() -> None:
    err = make(errno.EIO, step="fsync")
    text = str(err)
    assert "/d/t" in text
    assert "fsync" in text
    assert os.strerror(errno.EIO) in text
    assert "atomic write" in text
    assert "\n" not in text
    rep = repr(err)
    assert rep.startswith("SessionFileError(")
    for part in ("'/d/t'", "'fsync'", f"errno={errno.EIO}", repr(os.strerror(errno.EIO))):
        assert part in rep, part


def test_str_names_the_errno() -> None:
    assert "[Errno 13]" in str(make(errno.EACCES, step="create temp"))


def test_raised_from_a_cause_chains() -> None:
    cause = OSError(errno.EIO, "boom")
    with pytest.raises(SessionFileError) as caught:
        raise SessionFileError("/d/t", "atomic write", cause, "fsync") from cause
    assert caught.value.__cause__ is cause is caught.value.cause


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOENT, errno.EEXIST, errno.EISDIR])
def test_dynamic_classes_are_reachable_where_they_say_they_live(code: int) -> None:
    """`type(e).__module__` is "atomicfile": the class must be found there, as tracebacks
    name it (`atomicfile.SessionPermissionError`) and pickle looks it up by that name."""
    cls = type(make(code))
    assert getattr(atomicfile, cls.__qualname__) is cls
    assert pickle.loads(pickle.dumps(cls)) is cls
