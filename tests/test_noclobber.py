"""Issue 14, item 3: 'x' modes on a file system without hard links (vfat, exFAT, many FUSE
file systems), where the old no-clobber commit, link(2), fails with EPERM.

A real FUSE file system (`_nolinkfs.py`, a passthrough whose link() is EPERM) is mounted
for each case. With RENAME_NOREPLACE the 'x' write works without any link; where the file
system refuses renameat2's flags too, no atomic no-clobber exists: the write fails cleanly
(never replacing a file that appeared).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicfile import AtomicFile, SessionFileError, atomic_write

from conftest import listing, needs_root
from helpers import unavailable

# /dev/fuse, libfuse 3 (loaded by mfusepy in the helper) and fusermount3: else skipped,
# naming the package (tests/helpers.py). This module never imports mfusepy itself.
pytestmark = pytest.mark.needs("fuse")

HELPER = Path(__file__).with_name("_nolinkfs.py")


def mount(tmp_path: Path, *flags: str) -> Iterator[Path]:
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(backing), str(mnt), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed from FUSE's init: the mount is live
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        unavailable(f"cannot mount the FUSE file system: {err.strip()[-300:]}")
    try:
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False, capture_output=True)
        proc.terminate()
        proc.communicate()


@pytest.fixture
def nolink_fs(tmp_path: Path) -> Iterator[Path]:
    yield from mount(tmp_path)


@pytest.fixture
def nolink_noflags_fs(tmp_path: Path) -> Iterator[Path]:
    yield from mount(tmp_path, "--no-rename-flags")


@needs_root
def test_x_mode_without_hard_links(nolink_fs: Path) -> None:
    (nolink_fs / "probe").write_text("p")
    with pytest.raises(PermissionError):
        os.link(nolink_fs / "probe", nolink_fs / "probe2")  # really no hard links here
    os.unlink(nolink_fs / "probe")

    with AtomicFile(nolink_fs / "new", "x") as f:
        f.write("created")
    assert (nolink_fs / "new").read_text() == "created"
    assert listing(nolink_fs) == ["new"]

    atomic_write(nolink_fs / "other", b"bytes", mode="x")
    assert (nolink_fs / "other").read_bytes() == b"bytes"
    assert listing(nolink_fs) == ["new", "other"]


@needs_root
def test_x_mode_target_appears_without_hard_links(nolink_fs: Path) -> None:
    """The check is the rename itself: a target created after open() is not replaced."""
    with pytest.raises(SessionFileError) as info, AtomicFile(nolink_fs / "t", "x") as f:
        f.write("mine")
        (nolink_fs / "t").write_text("theirs")
    assert isinstance(info.value, FileExistsError)
    assert info.value.errno == errno.EEXIST
    assert info.value.step == "rename"
    assert (nolink_fs / "t").read_text() == "theirs"
    assert listing(nolink_fs) == ["t"]


@needs_root
def test_x_mode_no_noreplace_no_links_fails_cleanly(nolink_noflags_fs: Path) -> None:
    """Neither RENAME_NOREPLACE nor link(): no atomic no-clobber exists, so the write fails
    (the link's EPERM) instead of risking a replace; nothing is left behind."""
    fs = nolink_noflags_fs
    with pytest.raises(SessionFileError) as info, AtomicFile(fs / "t", "x") as f:
        f.write("mine")
    assert isinstance(info.value, PermissionError)
    assert info.value.errno == errno.EPERM
    assert listing(fs) == []
    # 'w' mode is unaffected: a plain rename.
    atomic_write(fs / "t", "w works")
    assert (fs / "t").read_text() == "w works"
    assert listing(fs) == ["t"]
