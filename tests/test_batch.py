"""AtomicBatch: many AtomicFile writes published together after one durability point.

Every failure case asserts every target's content, the exact listings (no temp left) and the
error's class and errno.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import atomicfile
from atomicfile import AtomicBatch, SessionFileError

from conftest import Form, listing, needs_root
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


class SyncFile:
    """The sync form's file behind `AsyncFile`'s coroutine names (those the cases use)."""

    def __init__(self, file: Any) -> None:
        self.wrapped = file

    async def write(self, data: Any) -> int:
        return int(self.wrapped.write(data))

    async def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.wrapped.seek(offset, whence))


class SyncBatch:
    """The sync form of a batch behind the async names: `aopen`/`awrite` are `open`/`write`,
    as coroutines that finish without suspending."""

    def __init__(self, batch: AtomicBatch) -> None:
        self.batch = batch

    async def aopen(self, *args: Any, **options: Any) -> SyncFile:
        return SyncFile(self.batch.open(*args, **options))

    async def awrite(self, *args: Any, **options: Any) -> None:
        self.batch.write(*args, **options)

    def discard(self) -> None:
        self.batch.discard()

    def __len__(self) -> int:
        return len(self.batch)


def in_batch(
    form: Form, batch: AtomicBatch, body: Callable[[Any], Coroutine[Any, Any, None]]
) -> None:
    """Run the case `body(batch)` inside `with batch` (sync form: `open`, `write`) or
    `async with batch` on the form's runtime (`aopen`, `awrite`, `AsyncFile`s).

    `body` is written once, with the async names: in the sync form they are the sync
    calls, and the body runs to its end without an event loop (it never suspends)."""
    if form.is_async:

        async def main() -> None:
            async with batch:
                await body(batch)

        form.run(main)
        return
    with batch:
        run_now(body(SyncBatch(batch)))


def run_now(steps: Coroutine[Any, Any, None]) -> None:
    """Run a sync form's case body, which never suspends, to its end without a loop."""
    try:
        steps.send(None)
    except StopIteration:
        return
    steps.close()
    raise AssertionError("a case's body must not suspend in the sync form")


def test_publishes_all_at_exit(form: Form, tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)

    async def body(batch: Any) -> None:
        f = await batch.aopen(a / "config.json")
        assert isinstance(f.wrapped, io.TextIOWrapper)
        await f.write("new config")
        g = await batch.aopen(str(b / "weights.bin"), "wb")
        assert isinstance(g.wrapped, io.BufferedWriter)
        await g.write(b"new weights")
        await batch.awrite(os.fsencode(a / "tokenizer.json"), "new tokenizer")
        await batch.awrite(b / "extra.bin", b"new extra")
        assert len(batch) == 4
        # Nothing published yet: the old files and one temp per new file.
        assert (a / "config.json").read_text() == "old config"
        assert len(listing(a)) == 3 and len(listing(b)) == 3

    batch = AtomicBatch()
    in_batch(form, batch, body)
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


def test_modes_as_atomicfile(form: Form, tmp_path: Path) -> None:
    (tmp_path / "log").write_text("line1\n")
    (tmp_path / "rw").write_bytes(b"0123456789")

    async def body(batch: Any) -> None:
        log = await batch.aopen(tmp_path / "log", "a")
        await log.write("line2\n")
        rw = await batch.aopen(tmp_path / "rw", "r+b")
        assert isinstance(rw.wrapped, io.BufferedRandom)
        await rw.seek(2)
        await rw.write(b"xx")
        await batch.awrite(tmp_path / "new", "x", mode="x")

    in_batch(form, AtomicBatch(), body)
    assert (tmp_path / "log").read_text() == "line1\nline2\n"
    assert (tmp_path / "rw").read_bytes() == b"01xx456789"
    assert listing(tmp_path) == ["log", "new", "rw"]


def test_write_takes_any_bytes_like(form: Form, tmp_path: Path) -> None:
    """write() of binary data goes to the temp without a buffer: every bytes-like object
    is written whole, by its bytes (an array of ints too), in every mode."""
    import array

    ints = array.array("i", range(1000))
    (tmp_path / "log").write_bytes(b"old|")

    async def body(batch: Any) -> None:
        await batch.awrite(tmp_path / "b", b"bytes")
        await batch.awrite(tmp_path / "ba", bytearray(b"bytearray"))
        await batch.awrite(tmp_path / "mv", memoryview(b"xmemoryviewx")[1:-1])
        await batch.awrite(tmp_path / "ints", ints)
        await batch.awrite(tmp_path / "empty", b"")
        await batch.awrite(tmp_path / "log", b"new", mode="a")
        await batch.awrite(tmp_path / "x", b"x", mode="x")

    in_batch(form, AtomicBatch(), body)
    assert (tmp_path / "b").read_bytes() == b"bytes"
    assert (tmp_path / "ba").read_bytes() == b"bytearray"
    assert (tmp_path / "mv").read_bytes() == b"memoryview"
    assert (tmp_path / "ints").read_bytes() == ints.tobytes()
    assert (tmp_path / "empty").read_bytes() == b""
    assert (tmp_path / "log").read_bytes() == b"old|new"
    assert (tmp_path / "x").read_bytes() == b"x"


def test_exception_publishes_nothing(form: Form, tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)
    boom = KeyError("boom")

    async def body(batch: Any) -> None:
        await batch.awrite(a / "config.json", "new")
        await batch.awrite(b / "weights.bin", b"new")
        await batch.awrite(a / "fresh", "new")
        raise boom

    with pytest.raises(KeyError) as info:
        in_batch(form, AtomicBatch(), body)
    assert info.value is boom
    assert_old(a, b)


def test_cancellation_publishes_nothing(form: Form, tmp_path: Path) -> None:
    """A block that ends by a cancellation (a real one, from a cancel scope, on every async
    runtime) or a KeyboardInterrupt (sync) publishes nothing and leaves no temp."""
    import anyio

    a, b = setup_dirs(tmp_path)

    async def body(batch: Any) -> None:
        f = await batch.aopen(a / "config.json")
        await f.write("new config")
        await batch.awrite(b / "weights.bin", b"new weights")
        assert len(listing(a)) == 2 and len(listing(b)) == 2
        if not form.is_async:
            raise KeyboardInterrupt

    if form.is_async:
        cancelled = []

        async def main() -> None:
            with anyio.CancelScope() as scope:
                async with AtomicBatch() as batch:
                    await body(batch)
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
            cancelled.append(scope.cancelled_caught)

        form.run(main)
        assert cancelled == [True]
    else:
        with pytest.raises(KeyboardInterrupt):
            in_batch(form, AtomicBatch(), body)
    assert_old(a, b)


def test_discard(form: Form, tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)

    async def body(batch: Any) -> None:
        await batch.awrite(a / "config.json", "new")
        batch.discard()
        await batch.awrite(b / "weights.bin", b"new")  # still open until the block ends

    batch = AtomicBatch()
    in_batch(form, batch, body)
    assert_old(a, b)
    with pytest.raises(RuntimeError, match="discarded"):
        batch.open(a / "config.json")


def test_discard_without_with(tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)
    outside = AtomicBatch()
    outside.write(a / "config.json", "new")
    outside.discard()
    assert_old(a, b)
    with pytest.raises(RuntimeError, match="discarded"):
        outside.commit()


def test_same_target_twice(form: Form, tmp_path: Path) -> None:
    a, _ = setup_dirs(tmp_path)
    os.symlink("config.json", a / "alias")

    async def body(batch: Any) -> None:
        await batch.awrite(a / "config.json", "first")
        for again in (
            a / "config.json",
            str(a / "config.json"),
            a / "." / "config.json",
            a / "alias",
        ):
            with pytest.raises(SessionFileError) as info:
                await batch.awrite(again, "second")
            assert isinstance(info.value, FileExistsError)
            assert info.value.errno == errno.EEXIST
        # The error touched nothing: one temp, and the batch goes on.
        assert len(listing(a)) == 3

    in_batch(form, AtomicBatch(), body)
    assert (a / "config.json").read_text() == "first"
    assert listing(a) == ["alias", "config.json"]


def test_follow_symlinks_false_is_another_target(form: Form, tmp_path: Path) -> None:
    (tmp_path / "real").write_text("old")
    os.symlink("real", tmp_path / "link")

    async def body(batch: Any) -> None:
        await batch.awrite(tmp_path / "real", "new real")
        await batch.awrite(tmp_path / "link", "link replaced", follow_symlinks=False)

    in_batch(form, AtomicBatch(), body)
    assert (tmp_path / "real").read_text() == "new real"
    assert not (tmp_path / "link").is_symlink()
    assert listing(tmp_path) == ["link", "real"]


def test_target_is_a_directory(form: Form, tmp_path: Path) -> None:
    a, b = setup_dirs(tmp_path)

    async def body(batch: Any) -> None:
        await batch.awrite(a / "config.json", "new")
        await batch.awrite(b, b"a directory")

    with pytest.raises(SessionFileError) as info:
        in_batch(form, AtomicBatch(), body)
    assert isinstance(info.value, IsADirectoryError)
    assert info.value.errno == errno.EISDIR
    assert_old(a, b)


def test_x_target_appears_before_commit(form: Form, tmp_path: Path) -> None:
    """The 'x' files are renamed first: the target that appeared refuses, and nothing
    else is published."""
    a, b = setup_dirs(tmp_path)

    async def body(batch: Any) -> None:
        await batch.awrite(a / "config.json", "new")
        await batch.awrite(b / "weights.bin", b"new")
        await batch.awrite(a / "lock", "mine", mode="x")
        (a / "lock").write_text("theirs")

    with pytest.raises(SessionFileError) as info:
        in_batch(form, AtomicBatch(), body)
    assert isinstance(info.value, FileExistsError)
    assert info.value.errno == errno.EEXIST
    assert (a / "lock").read_text() == "theirs"
    (a / "lock").unlink()
    assert_old(a, b)


def test_write_error_publishes_nothing(form: Form, tiny_fs: Path, tmp_path: Path) -> None:
    """ENOSPC while the batch prepares its temps (a real 64 KiB tmpfs): nothing published
    on either file system, no temp left."""
    (tiny_fs / "small").write_text("old small")
    (tmp_path / "other").write_text("old other")

    async def body(batch: Any) -> None:
        await batch.awrite(tmp_path / "other", "new other")
        await batch.awrite(tiny_fs / "small", "new small")
        f = await batch.aopen(tiny_fs / "big", "wb", buffering=1 << 20)
        await f.write(b"x" * (200 << 10))  # buffered: the error comes at the batch's flush

    with pytest.raises(SessionFileError) as info:
        in_batch(form, AtomicBatch(), body)
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
    with pytest.raises(RuntimeError, match="already committed"):
        batch.__enter__()
    batch.discard()  # a no-op once ended
    with pytest.raises(ValueError, match="'w', 'x' or 'a'"):
        AtomicBatch().write(tmp_path / "g", "x", mode="r+")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        AtomicBatch().open(tmp_path / "g", "r")
    with pytest.raises(TypeError, match="durable= and logger= are the batch's"):
        AtomicBatch().write(tmp_path / "g", "x", durable=False)  # type: ignore[call-arg]
    assert listing(tmp_path) == ["f"]


def test_empty_batch(form: Form, tmp_path: Path) -> None:
    async def body(batch: Any) -> None:
        pass

    in_batch(form, AtomicBatch(), body)
    assert listing(tmp_path) == []


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
        "from atomicfile._fs import syncfs_trusted as _syncfs_trusted\n"
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


@pytest.mark.needs("strace")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux syscalls")
def test_one_directory_fsync_per_directory_after_chdir(tmp_path: Path) -> None:
    """Item 10: the same relative directory name in two working directories is two
    directories, each fsynced once after the renames (a batch that knew directories by
    their path string fsynced only the first)."""
    for top in ("one", "two"):
        (tmp_path / top / "out").mkdir(parents=True)
    code = (
        "import os\n"
        "from atomicfile import AtomicBatch\n"
        "with AtomicBatch() as batch:\n"
        "    for top in ('one', 'two'):\n"
        "        os.chdir(top)\n"
        "        for i in range(3):\n"
        "            batch.write(f'out/{top}{i}', top)\n"
        "        os.chdir('..')\n"
    )
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync", sys.executable, "-c", code],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    calls = [line for line in done.stderr.splitlines() if "fsync(" in line]
    assert len(calls) == 2, done.stderr
    assert listing(tmp_path / "one" / "out") == ["one0", "one1", "one2"]
    assert listing(tmp_path / "two" / "out") == ["two0", "two1", "two2"]


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
seen = set()
try:
    with AtomicBatch() as batch:
        for i in range(int(sys.argv[4])):
            batch.write(os.path.join(sys.argv[1], f"f{i:04d}"), f"new {i}")
            seen.add(resource.getrlimit(resource.RLIMIT_NOFILE))
except SessionFileError as exc:
    print("error", type(exc).__name__, exc.errno)
    print("message", exc.strerror)
print("seen", *sorted(seen))
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


def _hard_nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX RLIMIT_NOFILE")
def test_batch_larger_than_the_soft_descriptor_limit(tmp_path: Path) -> None:
    """Item 9: 1,500 files under the common soft limit of 1024. The batch never changes
    the process's RLIMIT_NOFILE (not even for a moment): it fails with EMFILE, saying how
    many files it holds and what to do, publishes nothing and leaves no temp."""
    hard = _hard_nofile()
    if hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < 2048: the test's second half can't fit")
    (tmp_path / "f0000").write_text("old 0")
    out = _rlimit_child(tmp_path, 1024, hard, 1500)
    assert out[0] == f"error SessionFileError {errno.EMFILE}"
    assert out[1].startswith("message Too many open files: ")
    assert "one descriptor per file until it commits" in out[1]
    assert "soft RLIMIT_NOFILE is 1024" in out[1] and "ulimit -n" in out[1]
    assert out[2:] == [f"seen (1024, {hard})", f"limit 1024 {hard}"]
    assert listing(tmp_path) == ["f0000"]
    assert (tmp_path / "f0000").read_text() == "old 0"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX RLIMIT_NOFILE")
def test_batch_within_a_limit_the_program_raised(tmp_path: Path) -> None:
    """The same 1,500 files once the program itself allows 2,048 descriptors: all
    published, the limit left as the program set it."""
    hard = _hard_nofile()
    if hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < 2048: a 1,500-file batch can't fit")
    (tmp_path / "f0000").write_text("old 0")
    out = _rlimit_child(tmp_path, 2048, hard, 1500)
    assert out == [f"seen (2048, {hard})", f"limit 2048 {hard}"]
    names = [f"f{i:04d}" for i in range(1500)]
    assert listing(tmp_path) == names
    assert [(tmp_path / n).read_text() for n in names] == [f"new {i}" for i in range(1500)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX RLIMIT_NOFILE")
def test_batch_beyond_the_hard_descriptor_limit(tmp_path: Path) -> None:
    """Where the limit can't grow either: EMFILE, nothing published, no temp left."""
    (tmp_path / "f0000").write_text("old 0")
    out = _rlimit_child(tmp_path, 64, 64, 100)
    assert out[0] == f"error SessionFileError {errno.EMFILE}"
    assert "soft RLIMIT_NOFILE is 64" in out[1]
    assert out[2:] == ["seen (64, 64)", "limit 64 64"]
    assert listing(tmp_path) == ["f0000"]
    assert (tmp_path / "f0000").read_text() == "old 0"


# -- issue 18, items 6 to 10 ---------------------------------------------------------------


def test_failed_write_drops_only_itself(form: Form, tiny_fs: Path, tmp_path: Path) -> None:
    """Item 6: a write that fails (a real ENOSPC on a 64 KiB tmpfs) while another file joined
    the batch after it (another task on every async runtime, as under `asyncio.gather`, or
    another thread) must drop its own file, not the other one. The order is forced, without
    sleeps, by an encoding error handler that runs inside the failing file's data write and
    waits there until the good file is in the batch."""
    import codecs
    import threading

    import anyio

    in_write, good_added = threading.Event(), threading.Event()

    def hold(err: UnicodeError) -> tuple[str, int]:
        assert isinstance(err, UnicodeEncodeError)
        in_write.set()
        assert good_added.wait(60)  # a safety net against a hang, not a synchronisation
        return "?", err.end

    codecs.register_error("atomicbatch-test-hold", hold)
    (tmp_path / "good").write_text("old good")
    big = "\xe9" + "x" * (200 << 10)  # more than the tmpfs holds: ENOSPC inside write()
    errors: list[Exception] = []

    async def bad(batch: Any) -> None:
        try:
            await batch.awrite(
                tiny_fs / "big", big, encoding="ascii", errors="atomicbatch-test-hold"
            )
        except Exception as exc:  # checked below; a task group would cancel the other
            errors.append(exc)

    async def good(batch: Any) -> None:
        try:
            await batch.awrite(tmp_path / "good", "new good")
        finally:
            good_added.set()

    if form.is_async:

        async def main() -> None:
            async with AtomicBatch() as batch, anyio.create_task_group() as group:
                group.start_soon(bad, batch)
                assert await anyio.to_thread.run_sync(in_write.wait, 60)
                await good(batch)

        form.run(main)
    else:
        with AtomicBatch() as batch:
            thread = threading.Thread(target=run_now, args=(bad(SyncBatch(batch)),))
            thread.start()
            assert in_write.wait(60)
            run_now(good(SyncBatch(batch)))
            thread.join()
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, SessionFileError) and error.errno == errno.ENOSPC
    assert error.step == "write" and error.path == str(tiny_fs / "big")
    assert listing(tiny_fs) == []
    assert (tmp_path / "good").read_text() == "new good"
    assert listing(tmp_path) == ["good", "tiny"]


def _gather_writes(form: Any, jobs: list[tuple[Path, str]], durable: bool = True) -> None:
    """Write every (path, text) of `jobs` into one batch at once: real threads for the sync
    form (a barrier per round, so that each round's first writes to a directory meet), a
    task group of `awrite`s on the async runtimes."""
    import threading

    if form.is_async:
        import anyio

        async def main() -> None:
            # The task group ends (every write done) before the batch commits.
            async with AtomicBatch(durable=durable) as batch, anyio.create_task_group() as group:
                for path, text in jobs:
                    group.start_soon(batch.awrite, path, text)

        form.run(main)
        return
    workers = 6
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    with AtomicBatch(durable=durable) as batch:

        def work(mine: list[tuple[Path, str]]) -> None:
            try:
                for path, text in mine:
                    barrier.wait()
                    batch.write(path, text)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=work, args=(jobs[i::workers],)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_concurrent_writes_leak_no_descriptor(form: Any, tmp_path: Path) -> None:
    """Item 7: many writes at once (threads, or a task group of `awrite`s on every runtime),
    six into each of 100 new directories: every file published, and no descriptor left open
    (the shared directory descriptors and the syncfs handle are opened once each)."""
    dirs = [tmp_path / f"d{i:02d}" for i in range(100)]
    for d in dirs:
        d.mkdir()
    jobs = [(d / f"f{j}", f"{d.name} {j}") for j in range(6) for d in dirs]
    before = sorted(os.listdir("/proc/self/fd"))
    _gather_writes(form, jobs)
    assert sorted(os.listdir("/proc/self/fd")) == before
    for d in dirs:
        assert listing(d) == [f"f{j}" for j in range(6)]
        assert [(d / f"f{j}").read_text() for j in range(6)] == [f"{d.name} {j}" for j in range(6)]


def test_x_files_all_checked_before_any_rename(form: Form, tmp_path: Path) -> None:
    """Item 8: the second of two 'x' targets appears before the commit: nothing is
    published, not even the first 'x' file."""
    a, b = setup_dirs(tmp_path)

    async def body(batch: Any) -> None:
        await batch.awrite(a / "first", "mine 1", mode="x")
        await batch.awrite(a / "second", "mine 2", mode="x")
        await batch.awrite(a / "config.json", "new")
        await batch.awrite(b / "weights.bin", b"new")
        (a / "second").write_text("theirs")

    with pytest.raises(SessionFileError) as info:
        in_batch(form, AtomicBatch(), body)
    assert isinstance(info.value, FileExistsError) and info.value.errno == errno.EEXIST
    assert info.value.path == str(a / "second")
    assert (a / "second").read_text() == "theirs"
    (a / "second").unlink()
    assert_old(a, b)


def test_x_target_appearing_during_the_renames(
    form: Form, tmp_path: Path, monkeypatch: Any
) -> None:
    """Item 8, the promise that remains: a target that appears after the check, while the
    'x' files are being renamed, stops the batch there: the 'x' files renamed before it are
    published, no other file is. Mocked: only the instant the other process creates the
    file (right after the first rename), which no real race can hit on demand; the create
    itself and every rename are real."""
    from atomicfile import _fs

    a, b = setup_dirs(tmp_path)
    real = _fs.rename_noreplace
    calls: list[str] = []

    def rename_then_theirs_appears(src: str, dst: str, dir_fd: int | None) -> bool:
        calls.append(dst)
        leftover = real(src, dst, dir_fd)
        if len(calls) == 1:
            (a / "second").write_text("theirs")
        return leftover

    monkeypatch.setattr(_fs, "rename_noreplace", rename_then_theirs_appears)

    async def body(batch: Any) -> None:
        await batch.awrite(a / "config.json", "new")
        await batch.awrite(a / "first", "mine 1", mode="x")
        await batch.awrite(a / "second", "mine 2", mode="x")
        await batch.awrite(b / "weights.bin", b"new")

    with pytest.raises(SessionFileError) as info:
        in_batch(form, AtomicBatch(), body)
    assert calls == ["first", "second"]
    assert isinstance(info.value, FileExistsError) and info.value.errno == errno.EEXIST
    assert info.value.path == str(a / "second")
    assert (a / "first").read_text() == "mine 1"
    assert (a / "second").read_text() == "theirs"
    (a / "first").unlink()
    (a / "second").unlink()
    assert_old(a, b)


def test_relative_paths_after_chdir(form: Form, tmp_path: Path, monkeypatch: Any) -> None:
    """Item 10: the same relative path opened in two working directories names two files."""
    one, two = tmp_path / "one", tmp_path / "two"
    for top in (one, two):
        (top / "out").mkdir(parents=True)
        (top / "out" / "report.json").write_text(f"old {top.name}")

    async def body(batch: Any) -> None:
        monkeypatch.chdir(one)
        await batch.awrite("out/report.json", "new one")
        monkeypatch.chdir(two)
        await batch.awrite("out/report.json", "new two")
        await batch.awrite(one / "out" / "extra", "extra")  # absolute, into the first directory

    in_batch(form, AtomicBatch(), body)
    assert (one / "out" / "report.json").read_text() == "new one"
    assert (two / "out" / "report.json").read_text() == "new two"
    assert listing(one / "out") == ["extra", "report.json"]
    assert listing(two / "out") == ["report.json"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_write_still_running_at_commit_is_not_part_of_it(tmp_path: Path) -> None:
    """Item 7: a write in another thread that is still writing its data when the batch
    commits is left out: it raises RuntimeError, its temp is removed, its target never
    appears, and the batch's descriptors are all closed once it is done. The order is
    forced by an encoding error handler that runs inside that write and waits there."""
    import codecs
    import threading

    in_write, go_on = threading.Event(), threading.Event()

    def hold(err: UnicodeError) -> tuple[str, int]:
        assert isinstance(err, UnicodeEncodeError)
        in_write.set()
        assert go_on.wait(60)  # a safety net against a hang, not a synchronisation
        return "?", err.end

    codecs.register_error("atomicbatch-test-late", hold)
    before = sorted(os.listdir("/proc/self/fd"))
    batch = AtomicBatch()
    errors: list[BaseException] = []

    def late() -> None:
        try:
            batch.write(
                tmp_path / "late", "\xe9 late", encoding="ascii", errors="atomicbatch-test-late"
            )
        except BaseException as exc:  # checked by the main thread
            errors.append(exc)

    thread = threading.Thread(target=late)
    thread.start()
    assert in_write.wait(60)
    batch.write(tmp_path / "early", "early")
    batch.commit()
    now = listing(tmp_path)  # "early" published, and the late write's temp
    assert len(now) == 2 and now[1] == "early" and now[0].startswith(".late.")
    go_on.set()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "already committed" in str(errors[0])
    assert listing(tmp_path) == ["early"]
    assert (tmp_path / "early").read_text() == "early"
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert batch.paths == [str(tmp_path / "early")]


# -- issue 19: one lifecycle, options defined once -----------------------------------------


_FORK_SCRIPT = r"""
import os, sys
from atomicfile import AtomicBatch

directory, how = sys.argv[1], sys.argv[2]
with AtomicBatch() as batch:
    batch.write(os.path.join(directory, "t"), "new t")
    f = batch.open(os.path.join(directory, "u"))
    f.write("half")  # buffered: a child that flushed it would write it twice
    pid = os.fork()
    if pid == 0:
        if how == "exit":
            sys.exit(0)  # leaves the block with SystemExit
        if how in ("commit", "write"):
            try:
                if how == "commit":
                    batch.commit()
                else:
                    batch.write(os.path.join(directory, "v"), "child")
            except RuntimeError as err:
                print("child:", err, flush=True)
                os._exit(3)
            os._exit(4)
        if how == "discard":
            batch.discard()
        # how == "leave": falls out of the block normally
    else:
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status), flush=True)
        names = sorted(os.listdir(directory))
        print("after child:", len(names), names[-1], flush=True)
        f.write("rest")
if pid == 0:
    os._exit(0)
print("done", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
@pytest.mark.parametrize("how", ["exit", "leave", "commit", "write", "discard"])
def test_forked_child_never_publishes_or_removes(tmp_path: Path, how: str) -> None:
    """A child forked inside a batch's block (a real os.fork()) that leaves the block, by
    an exception or normally, discards, commits or adds a file: it publishes nothing and
    removes none of the parent's temps, which the parent then commits."""
    (tmp_path / "t").write_text("old t")
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, str(tmp_path), how],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # The parent's two temps and the old "t", untouched by the child.
    assert "after child: 3 t" in lines
    if how == "commit":
        assert (
            "child: AtomicBatch was opened before a fork(): only the parent process can "
            "commit it" in lines
        )
    if how == "write":
        assert (
            "child: AtomicBatch was opened before a fork(): only the parent process can add "
            "files to it" in lines
        )
    assert f"child status {3 if how in ('commit', 'write') else 0}" in lines
    assert lines[-1] == "done"
    assert (tmp_path / "t").read_text() == "new t"
    assert (tmp_path / "u").read_text() == "halfrest"  # the child flushed nothing
    assert listing(tmp_path) == ["t", "u"]


def test_abandoned_batch_is_discarded_with_a_resource_warning(tmp_path: Path) -> None:
    """As an unclosed file: garbage collection removes every temp, then warns. A batch
    that never got a file is like an AtomicFile never opened: nothing to warn about."""
    import gc

    a, b = setup_dirs(tmp_path)
    batch = AtomicBatch()
    batch.write(a / "config.json", "new")
    batch.open(b / "weights.bin", "wb").write(b"new")
    with pytest.warns(ResourceWarning, match=r"unfinished <AtomicBatch 2 files open>"):
        del batch
        gc.collect()
    assert_old(a, b)
    empty = AtomicBatch()
    with pytest.raises(SessionFileError):
        empty.write(tmp_path / "missing" / "f", "x")  # its directory's descriptor: closed
    del empty
    gc.collect()  # pytest's filterwarnings = error: a warning here would fail the test


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_abandoned_batch_is_cleaned_even_when_warnings_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `-W error` the ResourceWarning raised in __del__ must not skip the cleanup:
    every temp removed, every descriptor (temps, directories, syncfs handle) closed."""
    import gc
    import warnings

    a, b = setup_dirs(tmp_path)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    before = sorted(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        batch = AtomicBatch()
        batch.write(a / "config.json", "new")
        batch.open(b / "weights.bin", "wb").write(b"new")
        batch.write(a / "fresh", "new")
        del batch
        gc.collect()
    assert [type(u.exc_value) for u in unraisable] == [ResourceWarning]
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert_old(a, b)


def test_storage_options_per_file(form: Form, tmp_path: Path) -> None:
    """`storage_options` (and `fs`) are each file's, as for AtomicFile: an object in
    fsspec's memory store and a local file in one batch; an exception publishes neither."""
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    url = "memory://atomicbatch-tests/obj"
    memory.pipe(url, b"old object")
    (tmp_path / "local").write_text("old local")
    options = {"skip_instance_cache": True}

    async def body(batch: Any) -> None:
        await batch.awrite(url, b"new object", storage_options=options)
        f = await batch.aopen("memory://atomicbatch-tests/more", "wb", fs=memory)
        await f.write(b"more")
        await batch.awrite(tmp_path / "local", "new local")

    async def failing(batch: Any) -> None:
        await body(batch)
        raise KeyError("boom")

    try:
        with pytest.raises(KeyError):
            in_batch(form, AtomicBatch(), failing)
        assert memory.cat(url) == b"old object"
        assert memory.ls("atomicbatch-tests", detail=False) == ["/atomicbatch-tests/obj"]
        assert (tmp_path / "local").read_text() == "old local"
        in_batch(form, AtomicBatch(), body)
        assert memory.cat(url) == b"new object"
        assert memory.cat("memory://atomicbatch-tests/more") == b"more"
        assert (tmp_path / "local").read_text() == "new local"
        assert listing(tmp_path) == ["local"]
    finally:
        memory.rm("atomicbatch-tests", recursive=True)
