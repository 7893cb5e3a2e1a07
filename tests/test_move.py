"""`atomic_move`: publish an existing file in one step, on one file system or across two."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _trace import trace

import atomicfile
from atomicfile import SessionFileError, atomic_move, atomic_move_async

from conftest import IS_ROOT, RUNTIMES, listing, mount_tmpfs, needs_root, run_async

MTIME_NS = 1_600_000_000_123_456_789


def make(path: Path, content: str, mode: int = 0o640) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- one file system ---------------------------------------------------------------------------


def test_replaces_an_existing_file(tmp_path: Path, as_path: Any) -> None:
    src = make(tmp_path / "new.part", "new", 0o640)
    inode = src.stat().st_ino
    make(tmp_path / "data", "old", 0o600)
    atomic_move(as_path(src), as_path(tmp_path / "data"))
    assert (tmp_path / "data").read_text() == "new"
    assert (tmp_path / "data").stat().st_ino == inode  # a rename: the very same file
    assert mode_of(tmp_path / "data") == 0o640
    assert listing(tmp_path) == ["data"]


def test_into_another_directory(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    make(tmp_path / "in" / "f", "new")
    atomic_move(tmp_path / "in" / "f", tmp_path / "out" / "g", overwrite=False, durable=False)
    assert (tmp_path / "out" / "g").read_text() == "new"
    assert listing(tmp_path / "in") == []
    assert listing(tmp_path / "out") == ["g"]


@pytest.mark.parametrize("where", ["same", "other"])
def test_no_overwrite_when_dst_exists(tmp_path: Path, where: str) -> None:
    (tmp_path / "other").mkdir()
    src = make(tmp_path / "src", "new")
    dst = make(tmp_path / ("dst" if where == "same" else "other/dst"), "old")
    before = listing(tmp_path), listing(tmp_path / "other")
    with pytest.raises(FileExistsError) as info:
        atomic_move(src, dst, overwrite=False)
    err = info.value
    assert isinstance(err, SessionFileError)
    assert (err.errno, err.step, err.operation) == (errno.EEXIST, "rename", "atomic move")
    assert err.path == str(dst) and err.filename == str(src) and err.filename2 == str(dst)
    assert src.read_text() == "new" and dst.read_text() == "old"
    assert (listing(tmp_path), listing(tmp_path / "other")) == before


def test_a_symlink_at_dst_is_replaced_itself(tmp_path: Path) -> None:
    make(tmp_path / "real", "old")
    os.symlink("real", tmp_path / "dst")
    make(tmp_path / "src", "new")
    atomic_move(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").is_symlink()
    assert (tmp_path / "dst").read_text() == "new"
    assert (tmp_path / "real").read_text() == "old"
    assert listing(tmp_path) == ["dst", "real"]


def test_src_missing(tmp_path: Path) -> None:
    make(tmp_path / "dst", "old")
    with pytest.raises(FileNotFoundError) as info:
        atomic_move(tmp_path / "src", tmp_path / "dst")
    err = info.value
    assert isinstance(err, SessionFileError)
    assert (err.errno, err.step, err.filename) == (errno.ENOENT, "open", str(tmp_path / "src"))
    assert (tmp_path / "dst").read_text() == "old"
    assert listing(tmp_path) == ["dst"]


def test_src_that_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    os.symlink("dir", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    cases = [
        ("dir", IsADirectoryError, "Is a directory: atomic_move moves a regular file"),
        ("link", OSError, "A symbolic link: atomic_move moves a regular file"),
        ("fifo", OSError, "Not a regular file: atomic_move moves one"),
    ]
    for name, error, text in cases:
        with pytest.raises(error) as info:
            atomic_move(tmp_path / name, tmp_path / "dst")
        assert text in str(info.value) and info.value.filename == str(tmp_path / name)
    assert listing(tmp_path) == ["dir", "fifo", "link"]


def test_dst_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dst").mkdir()
    make(tmp_path / "src", "new")
    with pytest.raises(IsADirectoryError) as info:
        atomic_move(tmp_path / "src", tmp_path / "dst")
    assert info.value.errno == errno.EISDIR
    assert (tmp_path / "src").read_text() == "new"
    assert listing(tmp_path) == ["dst", "src"] and listing(tmp_path / "dst") == []


@pytest.mark.parametrize("bad", ["", "d/", ".", ".."])
def test_a_path_naming_a_directory_is_refused_before_io(tmp_path: Path, bad: str) -> None:
    make(tmp_path / "f", "x")
    for src, dst in ((bad, tmp_path / "g"), (tmp_path / "f", bad)):
        with pytest.raises(ValueError, match="atomic_move moves a file"):
            atomic_move(src, dst)
    assert listing(tmp_path) == ["f"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_async_form(tmp_path: Path, runtime: str) -> None:
    make(tmp_path / "src", "new")

    async def main() -> None:
        await atomic_move_async(tmp_path / "src", tmp_path / "dst", overwrite=False)

    run_async(runtime, main)
    assert (tmp_path / "dst").read_text() == "new"
    assert listing(tmp_path) == ["dst"]


# -- across file systems (a real tmpfs mount) -----------------------------------------------------


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    with mount_tmpfs(tmp_path / "other", "size=1m,mode=0755") as where:
        yield where


def test_across_file_systems(tmp_path: Path, other_fs: Path) -> None:
    src = make(tmp_path / "src", "new" * 1000, 0o751)
    atomic_move(src, other_fs / "dst")
    dst = other_fs / "dst"
    assert dst.read_text() == "new" * 1000
    assert dst.stat().st_dev != tmp_path.stat().st_dev
    assert mode_of(dst) == 0o751  # what a rename would have kept
    assert dst.stat().st_mtime_ns == MTIME_NS
    assert listing(tmp_path) == ["other"]
    assert listing(other_fs) == ["dst"]


def test_across_file_systems_onto_an_existing_file(tmp_path: Path, other_fs: Path) -> None:
    make(other_fs / "dst", "old", 0o600)
    make(tmp_path / "src", "new", 0o644)
    atomic_move(tmp_path / "src", other_fs / "dst", durable=False)
    assert (other_fs / "dst").read_text() == "new"
    assert mode_of(other_fs / "dst") == 0o644
    assert listing(tmp_path) == ["other"]
    assert listing(other_fs) == ["dst"]


def test_across_file_systems_no_overwrite(tmp_path: Path, other_fs: Path) -> None:
    make(other_fs / "dst", "old")
    make(tmp_path / "src", "new")
    with pytest.raises(FileExistsError) as info:
        atomic_move(tmp_path / "src", other_fs / "dst", overwrite=False)
    assert info.value.errno == errno.EEXIST
    assert info.value.step == "rename"  # type: ignore[attr-defined]
    assert (other_fs / "dst").read_text() == "old"
    assert (tmp_path / "src").read_text() == "new"
    assert listing(other_fs) == ["dst"]  # the copy's temp removed
    assert listing(tmp_path) == ["other", "src"]


def test_across_file_systems_out_of_space(tmp_path: Path, tiny_fs: Path) -> None:
    """A real ENOSPC mid-copy (a 64 KiB tmpfs): source and destination as they were."""
    make(tiny_fs / "dst", "old")
    src = tmp_path / "src"
    src.write_bytes(os.urandom(256 * 1024))
    with pytest.raises(SessionFileError) as info:
        atomic_move(src, tiny_fs / "dst")
    assert (info.value.errno, info.value.step) == (errno.ENOSPC, "copy")
    assert (tiny_fs / "dst").read_text() == "old"
    assert src.stat().st_size == 256 * 1024
    assert listing(tiny_fs) == ["dst"]
    assert listing(tmp_path) == ["src", "tiny"]


@needs_root
def test_across_file_systems_keeps_the_owner(tmp_path: Path, other_fs: Path) -> None:
    src = make(tmp_path / "src", "new", 0o6750)
    os.chown(src, 1234, 4321)
    os.chmod(src, 0o6750)  # chown cleared the set-id bits
    atomic_move(src, other_fs / "dst")
    st = os.stat(other_fs / "dst")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o6750)
    assert listing(other_fs) == ["dst"]


def test_across_file_systems_without_chown(tmp_path: Path, other_fs: Path) -> None:
    """A writer that may not give the file away (root without CAP_CHOWN, through setpriv):
    the copy stays its own, the set-uid bit goes and the group it can't keep loses its
    bits and set-gid: never more access than the source gave."""
    if not IS_ROOT or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_CHOWN")
    src = make(tmp_path / "src", "new")
    os.chown(src, 1234, 4321)
    os.chmod(src, 0o6754)
    code = "import sys; from atomicfile import atomic_move; atomic_move(sys.argv[1], sys.argv[2])"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(
        ["setpriv", "--inh-caps=-chown", "--bounding-set=-chown",
         sys.executable, "-c", code, str(src), str(other_fs / "dst")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    st = os.stat(other_fs / "dst")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o704)
    assert (other_fs / "dst").read_text() == "new"
    assert listing(other_fs) == ["dst"]
    assert listing(tmp_path) == ["other"]


# -- durability, read from the system calls ------------------------------------------------------


def traced(
    tmp_path: Path, src: Path, dst: Path, durable: bool = True, overwrite: bool = True
) -> list[str]:
    """The calls of one move, as `name(args) = result` with descriptors shown by their
    paths only (`<dir>`), the temp's random name as `.dst.*.tmp`."""
    calls = trace(
        tmp_path,
        f"from atomicfile import atomic_move; atomic_move({str(src)!r}, {str(dst)!r}, "
        f"durable={durable}, overwrite={overwrite})",
    )
    lines = []
    for name, args, result in calls:
        args = re.sub(r"\d+<([^>]*)>", r"<\1>", args)
        args = re.sub(r"\.dst\.[0-9a-f]{16}\.tmp", ".dst.*.tmp", args)
        lines.append(f"{name}({args}) = {result}")
    return lines


@pytest.mark.parametrize("durable", [True, False])
def test_strace_same_file_system(tmp_path: Path, durable: bool) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make(a / "src", "new")
    lines = traced(tmp_path, a / "src", b / "dst", durable)
    rename = f'renameat(<{a}>, "src", <{b}>, "dst") = 0'
    if durable:
        assert lines == [
            f"fsync(<{a}/src>) = 0",  # the file, before it is published
            rename,
            f"fsync(<{b}>) = 0",  # its new name
            f"fsync(<{a}>) = 0",  # its old name gone
        ]
    else:
        assert lines == [rename]
    assert listing(b) == ["dst"] and listing(a) == []


def test_strace_no_overwrite_is_one_renameat2(tmp_path: Path) -> None:
    make(tmp_path / "src", "new")
    lines = traced(tmp_path, tmp_path / "src", tmp_path / "dst", durable=False, overwrite=False)
    # The kernel checks "dst is absent" and renames in one call (no stat first).
    assert lines == [
        f'renameat2(<{tmp_path}>, "src", <{tmp_path}>, "dst", RENAME_NOREPLACE) = 0'
    ]


def test_strace_across_file_systems(tmp_path: Path, other_fs: Path) -> None:
    src = make(tmp_path / "src", "new")
    lines = traced(tmp_path, src, other_fs / "dst")
    temp = f"{other_fs}/.dst.*.tmp"
    assert lines == [
        f"fsync(<{src}>) = 0",
        f'renameat(<{tmp_path}>, "src", <{other_fs}>, "dst") = -1',  # EXDEV
        f"fsync(<{temp}>) = 0",  # the copy, complete, before it is published
        f'renameat(<{other_fs}>, ".dst.*.tmp", <{other_fs}>, "dst") = 0',
        f"fsync(<{other_fs}>) = 0",  # the new file's name durable ...
        f'unlinkat(<{tmp_path}>, "src", 0) = 0',  # ... before the source goes
        f"fsync(<{tmp_path}>) = 0",
    ]
    assert listing(other_fs) == ["dst"]


def test_exported() -> None:
    for name in ("atomic_move", "atomic_move_async"):
        assert name in atomicfile.__all__
        assert getattr(atomicfile, name).__module__ == "atomicfile"
