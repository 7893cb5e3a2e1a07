"""Faults made real: ENOSPC at each stage from a tiny tmpfs, EROFS from a read-only remount;
and, where no real file system can produce them on demand, EIO from fsync and a directory
fsync that the file system refuses, injected where the library looks them up.

Every failure asserts the error class and errno, the step, the target's exact bytes and the
exact directory listing (no temp left).

Directory fsync policy (atomicfile._fs.fsync_dir): EINVAL, ENOTSUP/EOPNOTSUPP and EBADF mean
"this file system can't sync a directory": the write succeeds and a WARNING "Directory fsync
not possible" is logged. Any other error (EIO, ENOSPC...) is fatal: SessionFileError at step
"fsync directory", raised after the rename, so the new content is already in place.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import atomicfile._fs
from atomicfile import SessionFileError

from conftest import Form, listing, mount_tmpfs

pytestmark = pytest.mark.stress


def _write(form: Form, how: str, target: Path, data: str) -> None:
    if how == "block":
        form.write(target, data)
    else:
        form.write_all(target, data)


def _check_failed(
    info: pytest.ExceptionInfo[SessionFileError], code: int, step: str, target: Path,
    old: bytes, names: list[str],
) -> None:  # fmt: skip
    err = info.value
    assert isinstance(err, SessionFileError) and isinstance(err, OSError)
    assert isinstance(err, type(OSError(code, "")))  # also the builtin class open() raises
    assert err.errno == code, err
    assert err.step == step, err
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == code
    assert target.read_bytes() == old
    assert listing(target.parent) == names


@pytest.fixture(params=["block", "atomic_write"])
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_enospc_at_create(tmp_path: Path, form: Form, how: str) -> None:
    # Two inodes: the root directory and the target. The temp can't be created at all.
    with mount_tmpfs(tmp_path / "fs", "size=64k,nr_inodes=2") as fs:
        target = fs / "target"
        target.write_bytes(b"old")
        with pytest.raises(SessionFileError) as info:
            _write(form, how, target, "new")
        _check_failed(info, errno.ENOSPC, "create temp", target, b"old", ["target"])


def test_enospc_mid_write(tiny_fs: Path, form: Form, how: str) -> None:
    # 200 KB in one write on a 64 KiB file system: larger than the buffer, so it goes
    # straight to write(2), which runs out of space part way.
    target = tiny_fs / "target"
    target.write_bytes(b"old")
    with pytest.raises(SessionFileError) as info:
        _write(form, how, target, "x" * 200_000)
    _check_failed(info, errno.ENOSPC, "write", target, b"old", ["target"])


def test_enospc_at_flush(tiny_fs: Path, form: Form, how: str) -> None:
    # Fill the file system to the last block first; 100 bytes then fit in the write buffer
    # but not on the disk, so the error comes when the commit flushes.
    target = tiny_fs / "target"
    target.write_bytes(b"old")
    with open(tiny_fs / "filler", "wb", buffering=0) as filler, pytest.raises(OSError) as full:
        while True:
            filler.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    with pytest.raises(SessionFileError) as info:
        _write(form, how, target, "y" * 100)
    _check_failed(info, errno.ENOSPC, "flush", target, b"old", ["filler", "target"])


def test_erofs(readonly_fs: Path, form: Form, how: str) -> None:
    target = readonly_fs / "target"
    with pytest.raises(SessionFileError) as info:
        _write(form, how, target, "new")
    _check_failed(info, errno.EROFS, "create temp", target, b"old", ["target"])


def test_eio_from_fsync(
    tmp_path: Path, form: Form, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MOCK: no real device fails fsync on demand here. The fault goes where the commit looks
    # the function up (atomicfile._fs.fsync_file, at call time) and must fire exactly once.
    fired: list[int] = []

    def failing_fsync(fd: int) -> None:
        fired.append(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomicfile._fs, "fsync_file", failing_fsync)
    target = tmp_path / "target"
    target.write_bytes(b"old")
    with pytest.raises(SessionFileError) as info:
        _write(form, how, target, "new")
    assert len(fired) == 1, "the fsync must be tried once, never retried"
    _check_failed(info, errno.EIO, "fsync", target, b"old", ["target"])


def _fail_directory_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> list[int]:
    """MOCK: make os.fsync fail with `code` for directory fds only (file fsyncs stay real)."""
    real_fsync = os.fsync
    fired: list[int] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            fired.append(fd)
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return fired


# ENOTSUP and EOPNOTSUPP are one value on Linux, two on some other systems.
UNSUPPORTED = sorted({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


@pytest.mark.parametrize("code", UNSUPPORTED, ids=errno.errorcode.get)
def test_directory_fsync_unsupported_is_a_warning(
    tmp_path: Path, form: Form, how: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, code: int,
) -> None:  # fmt: skip
    fired = _fail_directory_fsync(monkeypatch, code)
    caplog.set_level(logging.WARNING, logger="atomicfile")
    target = tmp_path / "target"
    target.write_bytes(b"old")
    _write(form, how, target, "new")
    assert len(fired) == 1
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["target"]
    warnings = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert warnings == [("atomicfile", logging.WARNING, "Directory fsync not possible")]


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC], ids=errno.errorcode.get)
def test_directory_fsync_error_is_fatal(
    tmp_path: Path, form: Form, how: str, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    fired = _fail_directory_fsync(monkeypatch, code)
    target = tmp_path / "target"
    target.write_bytes(b"old")
    with pytest.raises(SessionFileError) as info:
        _write(form, how, target, "new")
    assert len(fired) == 1
    # After the rename: the new content is in place (it may not survive a power loss, which
    # is what the error says); the temp name is gone with the rename.
    _check_failed(info, code, "fsync directory", target, b"new", ["target"])


def test_fsync_file_is_where_the_commit_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync mock above is only meaningful if a durable write really calls
    atomicfile._fs.fsync_file: count the real calls (one file sync per write)."""
    real = atomicfile._fs.fsync_file
    calls: list[Any] = []

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(atomicfile._fs, "fsync_file", counting)
    atomicfile.atomic_write(tmp_path / "t", b"x")
    atomicfile.atomic_write(tmp_path / "u", b"x", durable=False)
    assert len(calls) == 1
