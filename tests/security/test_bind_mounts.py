"""Issue 18, item 5: a mount point inside a tree that is removed is never entered.

A bind mount of a directory of the same file system has the same `st_dev` as the tree it
sits in; only its mount id tells it apart. Removing the tree around it (AtomicDirectory
dropping the old tree after a replace, the sweep removing a dead writer's staging tree) must
leave the mounted directory's content as it was, and fail where it can't go on. Every mount
here is real (`mount --bind`, `mount -t tmpfs`), made as root, and unmounted at the end of
each test whatever happens (they move with the trees they are in, so they are found in
/proc/self/mountinfo, not by the path they were made at).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from atomicfile import AtomicDirectory, _fs, clean_stale_temps
from atomicfile._clean import remove_tree

from conftest import IS_ROOT, listing

sys.path.insert(0, str(Path(__file__).parent))
from _attack import NOBODY, as_user, shared_dir

__all__ = ["shared_dir"]  # a fixture, used by name

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="mount --bind and mount -t tmpfs need root"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bind mounts are Linux's"),
]

STAGING = re.compile(r"\.site\.[0-9a-f]{16}\.tmp")
#: What the mounted directory holds, byte for byte.
CONTENT = {
    "notes.txt": b"keep me\n",
    "deep": None,
    "deep/blob.bin": bytes(range(256)),
    "deep/empty": b"",
}

Mount = Callable[[Path], None]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root`: relative path -> bytes (None for a directory)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for f in filenames:
            out[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_bytes()
    return out


def fill(root: Path, content: dict[str, bytes | None]) -> None:
    for rel, data in content.items():
        if data is None:
            (root / rel).mkdir()
        else:
            (root / rel).write_bytes(data)


def _mounts_under(top: Path) -> list[str]:
    """Mount points under `top` (deepest first), from the fifth field of mountinfo, where
    the kernel escapes space, tab, newline and backslash as octal (proc(5))."""
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = line.split()[4].decode()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw)
            if point.startswith(str(top) + os.sep):
                found.append(point)
    return sorted(found, key=len, reverse=True)


@pytest.fixture
def unmount_all(tmp_path: Path) -> Iterator[None]:
    yield
    for point in _mounts_under(tmp_path):
        subprocess.run(["umount", "-l", point], check=False)
    assert _mounts_under(tmp_path) == []


@pytest.fixture(params=["bind", "tmpfs"])
def mount(request: pytest.FixtureRequest, tmp_path: Path, unmount_all: None) -> Mount:
    """`mount(where)` puts CONTENT at the directory `where`: "bind" from the directory
    tmp_path/outside, the same file system as the trees (the case of the issue); "tmpfs", a
    file system of its own (the control: its st_dev already differs)."""

    def bind(where: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        fill(outside, CONTENT)
        where.mkdir()
        done = subprocess.run(["mount", "--bind", outside, where], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot bind-mount: {done.stderr.decode().strip()}")

    def tmpfs(where: Path) -> None:
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", where], capture_output=True
        )
        if done.returncode:
            pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
        fill(where, CONTENT)

    return bind if request.param == "bind" else tmpfs


def outside_listing(tmp_path: Path) -> list[str]:
    return ["outside"] if (tmp_path / "outside").exists() else []


def check_untouched(tmp_path: Path, mount_point: Path) -> None:
    assert snapshot(mount_point) == CONTENT
    if (tmp_path / "outside").exists():  # the bind mount's source, seen from outside
        assert snapshot(tmp_path / "outside") == CONTENT


def test_replace_keeps_a_mount_inside_the_old_tree(
    tmp_path: Path, mount: Mount, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_bytes(b"old index")
    (site / "sub" / "page.html").write_bytes(b"old page")
    mount(site / "sub" / "data")
    caplog.set_level(logging.WARNING, logger="atomicfile")

    with AtomicDirectory(site) as d:
        (d / "index.html").write_bytes(b"new index")

    # The replace itself succeeded; removing the old tree stopped at the mount point, with
    # a warning, and removed everything else.
    assert snapshot(site) == {"index.html": b"new index"}
    old = [n for n in listing(tmp_path) if STAGING.fullmatch(n)]
    assert len(old) == 1
    # The old tree is `tree` in the writer's staging directory.
    check_untouched(tmp_path, tmp_path / old[0] / "tree" / "sub" / "data")
    assert listing(tmp_path) == sorted([*old, *outside_listing(tmp_path), "site"])
    assert listing(tmp_path / old[0]) == ["tree"]
    assert listing(tmp_path / old[0] / "tree") == ["sub"]
    assert listing(tmp_path / old[0] / "tree" / "sub") == ["data"]
    # One warning, naming what was left (the staging directory) and why (EXDEV: a mount).
    warnings = [
        (r.getMessage(), r.__dict__.get("temp_path"), r.__dict__.get("cleanup_error_code"))
        for r in caplog.records
    ]
    assert warnings == [("Failed to clean up temp file", str(tmp_path / old[0]), "EXDEV")]


# A writer killed mid-block: it fills its staging tree, makes `data` in it, has the mount
# made there, prints data's real path (the path it was handed may go through /proc/self/fd),
# and waits to be killed.
DEAD_WRITER = r"""
import os, subprocess, sys
from pathlib import Path
from atomicfile import AtomicDirectory

with AtomicDirectory(sys.argv[1]) as d:
    (d / "index.html").write_bytes(b"<html>")
    (d / "css").mkdir()
    (d / "css" / "a.css").write_bytes(b"a{}")
    (d / "data").mkdir()
    print(os.path.realpath(d / "data"), flush=True)
    sys.stdin.readline()
"""


def test_sweep_keeps_a_mount_inside_a_dead_staging_tree(
    tmp_path: Path, mount: Mount, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(b"live")
    writer = subprocess.Popen(
        [sys.executable, "-c", DEAD_WRITER, site], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None
        data = Path(writer.stdout.readline().decode().rstrip("\n"))
        assert data.name == "data", f"writer died: {writer.poll()}"
        data.rmdir()
        mount(data)
    finally:
        writer.kill()  # SIGKILL: no cleanup runs, the staging tree stays, its lock goes
        assert writer.wait() == -signal.SIGKILL
        writer.stdin.close()  # type: ignore[union-attr]
        writer.stdout.close()  # type: ignore[union-attr]
    # The writer's tree is `tree` in its staging directory.
    stage = data.parent.parent
    assert data.parent.name == "tree"
    assert STAGING.fullmatch(stage.name) and stage.parent == tmp_path
    caplog.set_level(logging.DEBUG, logger="atomicfile")

    # Not listed by a dry run, not reported by the sweep: it can't be removed.
    assert clean_stale_temps(tmp_path, dry_run=True) == []
    assert listing(stage / "tree") == ["css", "data", "index.html"]  # the dry run removed nothing
    assert clean_stale_temps(tmp_path) == []

    check_untouched(tmp_path, data)
    assert listing(tmp_path) == sorted([stage.name, *outside_listing(tmp_path), "site"])
    assert listing(stage) == ["tree"]
    assert listing(stage / "tree") == ["data"]  # the rest of the dead tree went
    assert snapshot(site) == {"index.html": b"live"}
    events = [(r.getMessage(), r.__dict__.get("reason")) for r in caplog.records]
    assert events == [("Temp file skipped", "cannot remove: Invalid cross-device link")] * 2

    subprocess.run(["umount", data], check=True)  # once unmounted, it goes
    assert clean_stale_temps(tmp_path) == [str(stage)]
    assert listing(tmp_path) == sorted([*outside_listing(tmp_path), "site"])
    if outside_listing(tmp_path):
        assert snapshot(tmp_path / "outside") == CONTENT


def test_sweep_keeps_a_mount_named_like_a_staging_tree(
    tmp_path: Path, mount: Mount, caplog: pytest.LogCaptureFixture
) -> None:
    """The mount point itself has a staging directory's name: nothing in it is touched."""
    stage = tmp_path / ".site.0123456789abcdef.tmp"
    mount(stage)
    caplog.set_level(logging.DEBUG, logger="atomicfile")

    assert clean_stale_temps(tmp_path, dry_run=True) == []
    assert clean_stale_temps(tmp_path) == []

    check_untouched(tmp_path, stage)
    assert listing(tmp_path) == sorted([stage.name, *outside_listing(tmp_path)])
    reasons = {r.__dict__.get("reason") for r in caplog.records}
    assert reasons == {"a mount point"}


def test_sweep_keeps_a_bind_mount_with_the_staging_layout(
    tmp_path: Path, unmount_all: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory with the exact staging layout (0700, only `tree`) bind-mounted at a
    staging name: its device is the parent's, its mount id is not. Neither the dry run nor
    the sweep counts it, and what it shows stays."""
    outside = tmp_path / "outside"
    (outside / "tree").mkdir(parents=True)
    (outside / "tree" / "page.html").write_bytes(b"keep me\n")
    outside.chmod(0o700)
    stage = tmp_path / ".site.0123456789abcdef.tmp"
    stage.mkdir()
    done = subprocess.run(["mount", "--bind", outside, stage], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot bind-mount: {done.stderr.decode().strip()}")
    caplog.set_level(logging.DEBUG, logger="atomicfile")

    assert clean_stale_temps(tmp_path, dry_run=True) == []
    assert clean_stale_temps(tmp_path) == []

    expected = {"tree": None, "tree/page.html": b"keep me\n"}
    assert snapshot(stage) == expected
    assert snapshot(outside) == expected
    assert listing(tmp_path) == [stage.name, "outside"]
    reasons = [r.__dict__.get("reason") for r in caplog.records]
    assert reasons == ["a mount point", "a mount point"]


def test_fsync_walk_never_enters_a_mount_point(tmp_path: Path, unmount_all: None) -> None:
    """The walk that makes a tree durable (where syncfs isn't trusted) stops at mount points
    as the removal does: what is mounted there is not the tree's. Every file it fsyncs is
    recorded (the one thing replaced: `fsync_file`, wrapped to note the path, then called)."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a").write_bytes(b"a")
    (root / "sub" / "b").write_bytes(b"b")
    outside = tmp_path / "outside"
    outside.mkdir()
    fill(outside, CONTENT)
    (root / "bound").mkdir()
    (root / "sub" / "tmpfs").mkdir()
    for command in (
        ["mount", "--bind", outside, root / "bound"],
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", root / "sub" / "tmpfs"],
    ):
        done = subprocess.run(command, capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount: {done.stderr.decode().strip()}")
    fill(root / "sub" / "tmpfs", CONTENT)
    synced: list[str] = []
    real = _fs.fsync_file

    def fsync_file(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_fs, "fsync_file", fsync_file)
            _fs.fsync_walk(fd)
    finally:
        os.close(fd)
    assert sorted(synced) == [str(root / "a"), str(root / "sub" / "b")]
    assert snapshot(outside) == CONTENT


def test_remove_tree_skips_mount_points_and_removes_the_rest(
    tmp_path: Path, unmount_all: None
) -> None:
    """A directory and a file bind-mounted in a tree: both stay with what they show, every
    other entry goes, and the removal fails (EXDEV at the directory, as for a tmpfs)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    fill(outside, CONTENT)
    tree = tmp_path / "tree"
    for rel in ("a/b", "z"):
        (tree / rel).mkdir(parents=True)
    (tree / "a" / "b" / "mnt").mkdir()
    (tree / "a" / "file").write_bytes(b"")
    for name in ("first", "last.txt"):
        (tree / "a" / name).write_bytes(b"goes")
        (tree / "z" / name).write_bytes(b"goes")
    for src, dst in (
        (outside, tree / "a" / "b" / "mnt"),
        (outside / "notes.txt", tree / "a" / "file"),
    ):
        done = subprocess.run(["mount", "--bind", src, dst], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot bind-mount: {done.stderr.decode().strip()}")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            remove_tree(fd, "tree")
    finally:
        os.close(fd)
    assert snapshot(outside) == CONTENT
    assert snapshot(tree / "a" / "b" / "mnt") == CONTENT
    assert (tree / "a" / "file").read_bytes() == b"keep me\n"
    assert caught.value.errno == errno.EXDEV
    assert listing(tree) == ["a"]
    assert listing(tree / "a") == ["b", "file"]
    assert listing(tree / "a" / "b") == ["mnt"]


def test_a_user_replaces_a_tree_with_read_only_directories(shared_dir: Path) -> None:
    """Not a mount: the removal walk that checks for mount points also opens up the
    directories of ours that lack the owner's rwx (copytree of read-only sources), which a
    user other than root needs to empty them: the old tree goes whole."""
    import atomicfile._batch
    import atomicfile._clean
    import atomicfile._log  # noqa: F401  (imported before the uid change: the venv is root's)

    os.chown(shared_dir, NOBODY, NOBODY)

    def user() -> None:
        for i, mode in enumerate((0o755, 0o555, 0o700)):
            with AtomicDirectory(shared_dir / "site", permissions=mode) as d:
                (d / "ro").mkdir()
                (d / "ro" / f"{i}.txt").write_bytes(b"%d" % i)
                os.chmod(d / "ro", 0o500)

    assert as_user(user) == 0
    assert listing(shared_dir) == ["site"]
    assert snapshot(shared_dir / "site") == {"ro": None, "ro/2.txt": b"2"}


@pytest.mark.parametrize("statx", [True, False], ids=["statx", "fdinfo"])
def test_is_mount_root(
    tmp_path: Path, unmount_all: None, statx: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primitive, on real mounts. "fdinfo" is the answer of a libc without statx or a
    kernel before 5.8: this machine has both, so the missing statx is the one thing mocked."""
    if not statx:
        monkeypatch.setattr(_fs, "_statx", False)
    for name in ("src", "plain", "bound", "tmpfs"):
        (tmp_path / name).mkdir()
    subprocess.run(["mount", "--bind", tmp_path / "src", tmp_path / "bound"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", tmp_path / "tmpfs"], check=True)
    answers = {}
    for name in ("plain", "bound", "tmpfs"):
        fd = os.open(tmp_path / name, os.O_RDONLY | os.O_DIRECTORY)
        try:
            answers[name] = _fs.is_mount_root(fd)
        finally:
            os.close(fd)
    assert answers == {"plain": False, "bound": True, "tmpfs": True}
