"""AtomicBatch: many AtomicFile writes published together after one durability point.

Every failure case asserts every target's content, the exact listings (no temp left) and the
error's class and errno.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import atomicfile
from atomicfile import AtomicBatch, SessionFileError

from conftest import listing, needs_root
from helpers import Staged


def setup_dirs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "config.json").write_text("old config")
    (b / "weights.bin").write_bytes(b"old weights")
    return a, b


def assert_old(a: Path, b: Path) -> None:
    assert listing(a) == ["config.json"]
    assert listing(b) == ["weights.bin"]
    assert (a / "config.json").read_text() == "old config"
    assert (b / "weights.bin").read_bytes() == b"old weights"


def test_publishes_all_at_exit(tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)
    with AtomicBatch() as batch:
        f = batch.open(a / "config.json")
        assert isinstance(f, io.TextIOWrapper)
        f.write("new config")
        g = batch.open(str(b / "weights.bin"), "wb")
        assert isinstance(g, io.BufferedWriter)
        g.write(b"new weights")
        batch.write(os.fsencode(a / "tokenizer.json"), "new tokenizer")
        batch.write(b / "extra.bin", b"new extra")
        assert len(batch) == 4
        # Nothing published yet: the old files and one temp per new file.
        assert (a / "config.json").read_text() == "old config"
        assert len(listing(a)) == 3 and len(listing(b)) == 3
    assert listing(a) == ["config.json", "tokenizer.json"]
    assert listing(b) == ["extra.bin", "weights.bin"]
    assert (a / "config.json").read_text() == "new config"
    assert (b / "weights.bin").read_bytes() == b"new weights"
    assert (a / "tokenizer.json").read_text() == "new tokenizer"
    assert (b / "extra.bin").read_bytes() == b"new extra"
    assert batch.paths == [
        str(a / "config.json"),
        str(b / "weights.bin"),
        os.fsdecode(os.fsencode(a / "tokenizer.json")),
        str(b / "extra.bin"),
    ]


def test_modes_as_atomicfile(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("line1\n")
    (tmp_path / "rw").write_bytes(b"0123456789")
    with AtomicBatch() as batch:
        batch.open(tmp_path / "log", "a").write("line2\n")
        rw = batch.open(tmp_path / "rw", "r+b")
        assert isinstance(rw, io.BufferedRandom)
        rw.seek(2)
        rw.write(b"xx")
        batch.write(tmp_path / "new", "x", mode="x")
    assert (tmp_path / "log").read_text() == "line1\nline2\n"
    assert (tmp_path / "rw").read_bytes() == b"01xx456789"
    assert listing(tmp_path) == ["log", "new", "rw"]


def test_exception_publishes_nothing(tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)
    boom = KeyError("boom")
    with pytest.raises(KeyError) as info, AtomicBatch() as batch:
        batch.write(a / "config.json", "new")
        batch.write(b / "weights.bin", b"new")
        batch.write(a / "fresh", "new")
        raise boom
    assert info.value is boom
    assert_old(a, b)


def test_discard(tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)
    with AtomicBatch() as batch:
        batch.write(a / "config.json", "new")
        batch.discard()
        batch.write(b / "weights.bin", b"new")  # still open until the block ends
    assert_old(a, b)
    with pytest.raises(RuntimeError, match="discarded"):
        batch.open(a / "config.json")
    outside = AtomicBatch()
    outside.write(a / "config.json", "new")
    outside.discard()
    assert_old(a, b)
    with pytest.raises(RuntimeError, match="discarded"):
        outside.commit()


def test_same_target_twice(tmp_path: Path) -> None:
    a, _ = setup_dirs(tmp_path)
    os.symlink("config.json", a / "alias")
    with AtomicBatch() as batch:
        batch.write(a / "config.json", "first")
        for again in (
            a / "config.json",
            str(a / "config.json"),
            a / "." / "config.json",
            a / "alias",
        ):
            with pytest.raises(SessionFileError) as info:
                batch.write(again, "second")
            assert isinstance(info.value, FileExistsError)
            assert info.value.errno == errno.EEXIST
        # The error touched nothing: one temp, and the batch goes on.
        assert len(listing(a)) == 3
    assert (a / "config.json").read_text() == "first"
    assert listing(a) == ["alias", "config.json"]


def test_follow_symlinks_false_is_another_target(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("old")
    os.symlink("real", tmp_path / "link")
    with AtomicBatch() as batch:
        batch.write(tmp_path / "real", "new real")
        batch.write(tmp_path / "link", "link replaced", follow_symlinks=False)
    assert (tmp_path / "real").read_text() == "new real"
    assert not (tmp_path / "link").is_symlink()
    assert listing(tmp_path) == ["link", "real"]


def test_target_is_a_directory(tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)
    with pytest.raises(SessionFileError) as info, AtomicBatch() as batch:
        batch.write(a / "config.json", "new")
        batch.write(b, b"a directory")
    assert isinstance(info.value, IsADirectoryError)
    assert info.value.errno == errno.EISDIR
    assert_old(a, b)


def test_x_target_appears_before_commit(tmp_path: Path) -> None:
    """The 'x' files are renamed first: the target that appeared refuses, and nothing
    else is published."""
    a, b = setup_dirs(tmp_path)
    with pytest.raises(SessionFileError) as info, AtomicBatch() as batch:
        batch.write(a / "config.json", "new")
        batch.write(b / "weights.bin", b"new")
        batch.write(a / "lock", "mine", mode="x")
        (a / "lock").write_text("theirs")
    assert isinstance(info.value, FileExistsError)
    assert info.value.errno == errno.EEXIST
    assert (a / "lock").read_text() == "theirs"
    (a / "lock").unlink()
    assert_old(a, b)


def test_write_error_publishes_nothing(tiny_fs: Path, tmp_path: Path) -> None:
    """ENOSPC while the batch prepares its temps (a real 64 KiB tmpfs): nothing published
    on either file system, no temp left."""
    (tiny_fs / "small").write_text("old small")
    (tmp_path / "other").write_text("old other")
    with pytest.raises(SessionFileError) as info, AtomicBatch() as batch:
        batch.write(tmp_path / "other", "new other")
        batch.write(tiny_fs / "small", "new small")
        f = batch.open(tiny_fs / "big", "wb", buffering=1 << 20)
        f.write(b"x" * (200 << 10))  # buffered: the error comes at the batch's flush
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert info.value.step == "flush"
    assert listing(tiny_fs) == ["small"]
    assert (tiny_fs / "small").read_text() == "old small"
    assert sorted(n for n in listing(tmp_path) if n != "tiny") == ["other"]
    assert (tmp_path / "other").read_text() == "old other"


def test_misuse(tmp_path: Path) -> None:
    batch = AtomicBatch()
    batch.write(tmp_path / "f", "x")
    batch.commit()
    assert (tmp_path / "f").read_text() == "x"
    with pytest.raises(RuntimeError, match="already committed"):
        batch.open(tmp_path / "g")
    with pytest.raises(RuntimeError, match="already committed"):
        batch.commit()
    batch.discard()  # a no-op once ended
    with pytest.raises(ValueError, match="'w', 'x' or 'a'"):
        AtomicBatch().write(tmp_path / "g", "x", mode="r+")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        AtomicBatch().open(tmp_path / "g", "r")
    assert listing(tmp_path) == ["f"]


def test_empty_batch(tmp_path: Path) -> None:
    with AtomicBatch():
        pass
    assert listing(tmp_path) == []


def test_async_form(tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)

    async def main() -> None:
        async with AtomicBatch() as batch:
            f = await batch.aopen(a / "config.json")
            await f.write("new config")
            await batch.awrite(b / "weights.bin", b"new weights")
            assert (a / "config.json").read_text() == "old config"

    asyncio.run(main())
    assert (a / "config.json").read_text() == "new config"
    assert (b / "weights.bin").read_bytes() == b"new weights"
    assert listing(a) == ["config.json"] and listing(b) == ["weights.bin"]


def test_async_exception(tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)

    async def main() -> None:
        async with AtomicBatch() as batch:
            f = await batch.aopen(a / "config.json")
            await f.write("new config")
            await batch.awrite(b / "weights.bin", b"new weights")
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert_old(a, b)


@needs_root
def test_permission_denied_on_parent(other_user: Staged) -> None:
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="atomicbatch-perm-"))
    try:
        os.chmod(top, 0o755)
        ok, locked = top / "ok", top / "locked"
        ok.mkdir()
        locked.mkdir()
        os.chmod(ok, 0o777)
        (locked / "f").write_text("old")
        os.chmod(locked, 0o555)
        code = (
            "import errno\n"
            "from atomicfile import AtomicBatch, SessionFileError\n"
            "try:\n"
            "    with AtomicBatch() as b:\n"
            f"        b.write({str(ok / 'g')!r}, 'new')\n"
            f"        b.write({str(locked / 'f')!r}, 'new')\n"
            "except SessionFileError as e:\n"
            "    print(isinstance(e, PermissionError), errno.errorcode[e.errno])\n"
        )
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        done = subprocess.run(  # the checkout may be where uid 65534 can't read
            [*command, other_user.python, "-c", code], capture_output=True, text=True,
            env=other_user.env, cwd=other_user.cwd,
        )  # fmt: skip
        assert done.stdout.split() == ["True", "EACCES"], done.stderr
        assert listing(ok) == [] and listing(locked) == ["f"]
        assert (locked / "f").read_text() == "old"
    finally:
        shutil.rmtree(top)


@pytest.mark.needs("strace")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux syscalls")
def test_one_durability_point(tmp_path: Path) -> None:
    """Six files in two directories: one syncfs (the file system is ext4/xfs/btrfs/tmpfs
    here), no fsync of any temp, and exactly one fsync per directory after the renames."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    code = (
        "import sys\n"
        "from atomicfile import AtomicBatch\n"
        "from atomicfile._batch import _syncfs_trusted\n"
        "import os\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "print('trusted', _syncfs_trusted(fd), flush=True)\n"
        "with AtomicBatch() as batch:\n"
        "    for d in sys.argv[1:]:\n"
        "        for i in range(3):\n"
        "            batch.write(f'{d}/f{i}', 'x')\n"
    )
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs,sync,rename,renameat,renameat2",
         sys.executable, "-c", code, str(a), str(b)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "trusted False" in done.stdout:
        pytest.skip("tmp_path's file system is not one where syncfs is trusted")
    calls = [line.split("(")[0].split()[-1] for line in done.stderr.splitlines() if "(" in line]
    assert calls.count("syncfs") == 1
    assert calls.count("renameat") + calls.count("renameat2") + calls.count("rename") == 6
    assert calls.count("fsync") == 2  # one per directory
    assert calls.index("syncfs") < min(i for i, c in enumerate(calls) if "rename" in c)
    assert calls[-2:] == ["fsync", "fsync"]
    assert listing(a) == ["f0", "f1", "f2"] and listing(b) == ["f0", "f1", "f2"]


def test_exported_lazily() -> None:
    assert "AtomicBatch" in atomicfile.__all__
    assert AtomicBatch.__module__ == "atomicfile"
    code = "import sys, atomicfile; print('atomicfile._batch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_files_in_one_directory_share_its_descriptor(tmp_path: Path) -> None:
    """One descriptor per file (its locked temp) plus one per directory, not two per file."""
    a, b = setup_dirs(tmp_path)
    before = _open_fds()
    with AtomicBatch(durable=False) as batch:
        for i in range(50):
            batch.write(a / f"f{i:02d}", b"new")
        batch.write(b / "weights.bin", b"new weights")
        assert _open_fds() - before == 51 + 2
    assert _open_fds() == before
    assert listing(a) == ["config.json"] + [f"f{i:02d}" for i in range(50)]
    assert listing(b) == ["weights.bin"]
    assert (b / "weights.bin").read_bytes() == b"new weights"


_RLIMIT_CHILD = """
import os, resource, sys
from atomicfile import AtomicBatch, SessionFileError
soft, hard = (int(x) for x in sys.argv[2:4])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
try:
    with AtomicBatch() as batch:
        for i in range(int(sys.argv[4])):
            batch.write(os.path.join(sys.argv[1], f"f{i:04d}"), f"new {i}")
except SessionFileError as exc:
    print("error", type(exc).__name__, exc.errno)
print("limit", *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def _rlimit_child(where: Path, soft: int, hard: int, n: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _RLIMIT_CHILD, str(where), str(soft), str(hard), str(n)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX RLIMIT_NOFILE")
def test_batch_larger_than_the_soft_descriptor_limit(tmp_path: Path) -> None:
    """1,500 files under the common soft limit of 1024: the batch raises the soft limit
    toward the hard one while it holds its temps, and gives it back after."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < 2048: a 1,500-file batch can't fit")
    (tmp_path / "f0000").write_text("old 0")
    out = _rlimit_child(tmp_path, 1024, hard, 1500)
    assert out == [f"limit 1024 {hard}"]
    names = [f"f{i:04d}" for i in range(1500)]
    assert listing(tmp_path) == names
    assert [(tmp_path / n).read_text() for n in names] == [f"new {i}" for i in range(1500)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX RLIMIT_NOFILE")
def test_batch_beyond_the_hard_descriptor_limit(tmp_path: Path) -> None:
    """Where the limit can't grow: EMFILE, nothing published, no temp left."""
    (tmp_path / "f0000").write_text("old 0")
    out = _rlimit_child(tmp_path, 64, 64, 100)
    assert out == [f"error SessionFileError {errno.EMFILE}", "limit 64 64"]
    assert listing(tmp_path) == ["f0000"]
    assert (tmp_path / "f0000").read_text() == "old 0"
