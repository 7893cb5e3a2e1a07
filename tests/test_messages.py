"""Errors that say what to do (issue 21, item 5): a directory where the temp can't be made,
follow_symlinks=False with a mode that reads the target, a target that is a mount point.
Each: the text asserted, the errno and class, the listing unchanged."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicfile import AtomicFile, SessionFileError, atomic_path

from conftest import IS_ROOT, Form, listing

NOBODY = 65534

_CHILD = r"""
import json, os, sys
import atomicfile  # imported as root (the venv may be root's only), then root is dropped
atomicfile.atomic_write(sys.argv[3], "warm")  # the write path's lazy imports, as root
try:
    atomicfile.atomic_write("/nonexistent/dir/t", "x")  # and the error path's
except OSError:
    pass
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[2]))
try:
    atomicfile.atomic_write(sys.argv[1], "new")
    print(json.dumps(None))
except OSError as e:
    print(json.dumps({"errno": e.errno, "str": str(e), "filename": e.filename,
                      "classes": [c.__name__ for c in type(e).__mro__]}))
"""


@pytest.mark.skipif(not IS_ROOT, reason="runs a writer as another user: needs root")
def test_read_only_directory_names_the_directory_and_the_target() -> None:
    # Under a root-owned 0o755 directory nobody can reach (pytest's tmp_path is 0o700).
    top = Path(tempfile.mkdtemp(prefix="atomicfile-test-"))
    try:
        top.chmod(0o755)
        _read_only_directory(top)
    finally:
        shutil.rmtree(top)


def _read_only_directory(top: Path) -> None:
    d = top / "conf"
    d.mkdir()
    target = d / "app.json"
    target.write_text("old")
    os.chmod(target, 0o666)  # nobody may write the file, not the directory
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(target), str(NOBODY), str(top / "warm")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["errno"] == errno.EACCES
    assert "PermissionError" in got["classes"] and "SessionFileError" in got["classes"]
    assert got["filename"] == str(d)
    assert got["str"] == (
        f"atomic write of {str(target)!r} failed at create temp: [Errno 13] Permission "
        f"denied: can't create a temp file in the directory {str(d)!r} to replace "
        f"{str(target)!r} (the new content is written beside the target, then renamed over "
        f"it: the directory must be writable): {str(d)!r}"
    )
    assert target.read_text() == "old"
    assert listing(d) == ["app.json"]
    assert listing(top) == ["conf", "warm"]


@pytest.mark.parametrize("mode", ["a", "r+", "ab", "r+b"])
def test_no_follow_with_a_reading_mode(form: Form, tmp_path: Path, mode: str) -> None:
    (tmp_path / "real").write_text("old")
    (tmp_path / "link").symlink_to("real")
    with pytest.raises(OSError) as info:
        form.write(tmp_path / "link", mode=mode, follow_symlinks=False)
    err = info.value
    assert isinstance(err, SessionFileError)
    assert err.errno == errno.ELOOP
    assert err.strerror == (
        f"The target is a symbolic link and follow_symlinks=False: mode {mode.rstrip('b')!r} "
        "starts from "
        "the target's content, which would be read through the link (what O_NOFOLLOW "
        "refuses); pass follow_symlinks=True to write the file it points to, or use mode 'w' "
        "to replace the link itself"
    )
    assert listing(tmp_path) == ["link", "real"]
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real").read_text() == "old"


MOUNTED = (
    "The target is a mount point (a single file mounted on its own, as Docker's -v file:file "
    "or a Kubernetes subPath does): a rename can't replace it, so no atomic replace exists "
    "there; mount the directory that holds the file instead and write in it"
)


@pytest.fixture
def bind_mounted(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path/app/cfg.json`, a file with a single file bind-mounted on it (as Docker's
    `-v cfg.json:/app/cfg.json`)."""
    if not IS_ROOT:
        pytest.skip("bind mounts need root")
    app, host = tmp_path / "app", tmp_path / "host"
    app.mkdir()
    host.mkdir()
    target = app / "cfg.json"
    target.write_text("under the mount")
    (host / "cfg.json").write_text("old")
    done = subprocess.run(
        ["mount", "--bind", str(host / "cfg.json"), str(target)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot bind-mount: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert target.read_text() == "under the mount"
    assert listing(app) == ["cfg.json"]
    assert listing(host) == ["cfg.json"]


def test_a_bind_mounted_file_says_mount_the_directory(form: Form, bind_mounted: Path) -> None:
    with pytest.raises(OSError) as info:
        form.write_all(bind_mounted, "new")
    err = info.value
    assert isinstance(err, SessionFileError)
    assert (err.errno, err.step, err.strerror) == (errno.EBUSY, "rename", MOUNTED)
    assert err.filename2 == str(bind_mounted)
    assert bind_mounted.read_text() == "old"
    assert listing(bind_mounted.parent) == ["cfg.json"]


def test_a_bind_mounted_file_through_atomic_path(bind_mounted: Path) -> None:
    with pytest.raises(OSError) as info, atomic_path(bind_mounted) as tmp:
        tmp.write_text("new")
    err = info.value
    assert isinstance(err, SessionFileError)
    assert (err.errno, err.strerror) == (errno.EBUSY, MOUNTED)
    assert bind_mounted.read_text() == "old"
    assert listing(bind_mounted.parent) == ["cfg.json"]


def test_ebusy_elsewhere_keeps_the_system_s_words(tmp_path: Path) -> None:
    # Not a mount point: the rename's own EBUSY is not explained as one (the mocked case
    # is tests/test_failures.py::test_rename_fails[16]); here the target is a plain file and
    # the write succeeds: the explanation costs nothing on the usual path.
    with AtomicFile(tmp_path / "t") as f:
        f.write("v")
    assert listing(tmp_path) == ["t"]
