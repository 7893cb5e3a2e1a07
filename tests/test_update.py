"""Read-modify-write without lost updates (SPEC section 8): `atomic_update`,
`atomic_update_async` and `lock=True`.

Other writers are real processes (tests/_update_child.py) driven through pipes: a test
learns that a child holds the lock from the line it prints, never by sleeping. The many
process counts (8 x 100) are in tests/stress/test_stress_update.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import atomicfile
from atomicfile import AtomicFile, SessionFileError, atomic_update, atomic_update_async

from conftest import IS_ROOT, RUNTIMES, Form, listing

CHILD = Path(__file__).with_name("_update_child.py")
NOBODY = 65534


def bump(old: str | None) -> str:
    return str(int(old or "0") + 1)


class Holder:
    """A child process that holds a lock on `path` until `commit()` or `release()`."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "held\n", f"the child did not take the lock: {line!r}"

    def commit(self, text: str) -> None:
        self._say(f"commit {text}\n")

    def release(self) -> None:
        self._say("discard\n")

    def _say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.close()
        assert self.proc.wait() == 0
        self._close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for holder in made:
        if holder.proc.poll() is None:
            holder.kill()
        holder._close()


def hold(holders: list[Holder], path: Path, mode: str = "a") -> Holder:
    holder = Holder("hold", str(path), mode)
    holders.append(holder)
    return holder


@pytest.fixture(params=RUNTIMES)
def async_form(request: pytest.FixtureRequest) -> Form:
    """The async form alone, on each runtime (for what only an event loop has)."""
    return Form(request.param)


def uncalled(old: Any) -> Any:
    raise AssertionError("fn must not be called")


# -- the API -------------------------------------------------------------------------


def test_update_creates_then_updates(tmp_path: Path) -> None:
    target = tmp_path / "counter"
    seen: list[str | None] = []

    def fn(old: str | None) -> str:
        seen.append(old)
        return bump(old)

    assert atomic_update(target, fn) == "1"
    assert atomic_update(str(target), fn) == "2"
    assert atomic_update(os.fsencode(target), fn) == "3"
    assert seen == [None, "1", "2"]
    assert target.read_text() == "3"
    assert listing(tmp_path) == ["counter"]


def test_update_binary_and_text_options(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"\x00\x01")
    assert atomic_update(target, lambda old: old + b"\x02", binary=True) == b"\x00\x01\x02"
    assert target.read_bytes() == b"\x00\x01\x02"
    target.write_bytes("é\r\n".encode("utf-16"))
    # Decoded as open(..., "r", encoding, newline) would: universal newlines by default.
    new = atomic_update(target, lambda old: old + "x\n", encoding="utf-16")
    assert new == "é\nx\n"
    assert target.read_bytes() == "é\nx\n".encode("utf-16")
    atomic_update(target, lambda old: old, encoding="utf-16", newline="")
    assert target.read_bytes() == "é\nx\n".encode("utf-16")
    assert listing(tmp_path) == ["t"]


def test_undecodable_old_content_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(UnicodeDecodeError):
        atomic_update(target, uncalled, encoding="utf-8")
    assert target.read_bytes() == b"\xff\xfe\xfa"
    assert listing(tmp_path) == ["t"]
    new = atomic_update(target, lambda old: "ok" if old == "\ufffd" * 3 else "?",
                        encoding="utf-8", errors="replace", timeout=0)  # fmt: skip
    assert new == "ok" and target.read_text() == "ok"


def test_update_keeps_permissions_and_takes_options(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("1")
    target.chmod(0o600)
    atomic_update(target, bump, durable=False)
    assert (target.read_text(), target.stat().st_mode & 0o777) == ("2", 0o600)
    atomic_update(target, bump, permissions=0o640)
    assert (target.read_text(), target.stat().st_mode & 0o777) == ("3", 0o640)


@pytest.mark.parametrize(
    ("binary", "result", "message"),
    [(False, b"bytes", "must return str"), (True, "text", "must return bytes")],
)
def test_update_wrong_type_changes_nothing(
    tmp_path: Path, binary: bool, result: Any, message: str
) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    with pytest.raises(TypeError, match=message):
        atomic_update(target, lambda old: result, binary=binary)  # type: ignore[call-overload]
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]
    assert atomic_update(target, lambda old: "new", timeout=0) == "new"  # not left locked


@pytest.mark.parametrize("exists", [True, False])
@pytest.mark.parametrize(
    "error", [KeyError("k"), FileNotFoundError(errno.ENOENT, "user's own"), KeyboardInterrupt()]
)
def test_fn_raising_changes_nothing(tmp_path: Path, exists: bool, error: BaseException) -> None:
    target = tmp_path / "t"
    if exists:
        target.write_text("old")

    def fn(old: str | None) -> str:
        raise error

    with pytest.raises(type(error)) as caught:
        atomic_update(target, fn)
    assert caught.value is error  # the very object: an OSError is not wrapped either
    assert listing(tmp_path) == (["t"] if exists else [])
    if exists:
        assert target.read_text() == "old"
    assert atomic_update(target, lambda old: "next", timeout=0) == "next"  # not left locked


def test_bad_arguments_before_any_io(tmp_path: Path) -> None:
    target = tmp_path / "t"
    with pytest.raises(ValueError, match="pass lock=True too"):
        AtomicFile(target, timeout=1)
    with pytest.raises(TypeError, match="lock must be True or False, not int"):
        AtomicFile(target, lock=1)  # type: ignore[call-overload]
    for bad in (-1, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="timeout must be None or seconds"):
            AtomicFile(target, lock=True, timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be None or seconds"):
            atomic_update(target, uncalled, timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="binary mode doesn't take an encoding"):
        atomic_update(target, uncalled, binary=True, encoding="utf-8")  # type: ignore[call-overload]
    assert listing(tmp_path) == []


def test_lock_on_an_object_store_names_atomic_update() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(ValueError, match=r"use atomic_update\(\)"):
        AtomicFile("memory://bucket/key", lock=True)


def test_public_names() -> None:
    assert atomic_update.__module__ == "atomicfile"
    assert atomic_update_async.__module__ == "atomicfile"
    assert {"atomic_update", "atomic_update_async"} <= set(atomicfile.__all__)


# -- lock=True: every mode, sync and async -------------------------------------------


@pytest.mark.parametrize("mode", ["w", "x", "a", "r+", "wb", "a+b"])
def test_lock_every_mode(form: Form, tmp_path: Path, mode: str) -> None:
    target = tmp_path / "t"
    if mode != "x":
        target.write_bytes(b"old")
    chunk: Any = b"new" if "b" in mode else "new"
    form.write(target, chunk, mode=mode, lock=True, timeout=5)
    expected = {"w": b"new", "x": b"new", "a": b"oldnew", "r+": b"new", "wb": b"new"}
    assert target.read_bytes() == expected.get(mode, b"oldnew")
    assert listing(tmp_path) == ["t"]
    assert atomic_update(target, lambda old: "free", timeout=0) == "free"  # released


@pytest.mark.parametrize("exists", [True, False])
def test_timeout_while_another_process_holds_it(
    form: Form, tmp_path: Path, holders: list[Holder], exists: bool
) -> None:
    target = tmp_path / "t"
    if exists:
        target.write_text("old")
    holder = hold(holders, target, "a")
    for timeout in (0, 0.05):
        with pytest.raises(TimeoutError) as caught:
            form.write(target, "new", lock=True, timeout=timeout)
        assert str(target) in str(caught.value)
        assert isinstance(caught.value, SessionFileError)
        assert caught.value.errno == errno.ETIMEDOUT and caught.value.step == "lock"
        with pytest.raises(TimeoutError, match=str(target)):
            update(form, target, uncalled, timeout=timeout)
    # Writers without the lock are not held back (and their change is lost to the holder's
    # copy, taken before: what the lock can't cover).
    form.write_all(target, "unlocked")
    assert target.read_text() == "unlocked"
    holder.commit("+held")
    assert target.read_text() == ("old+held" if exists else "+held")
    assert listing(tmp_path) == ["t"]


def update(form: Form, target: Any, fn: Callable[[Any], Any], **options: Any) -> Any:
    """atomic_update through the form: sync, or atomic_update_async on its runtime."""
    if not form.is_async:
        return atomic_update(target, fn, **options)
    result: list[Any] = []

    async def main() -> None:
        result.append(await atomic_update_async(target, fn, **options))

    form.run(main)
    return result[0]


@pytest.mark.parametrize("exists", [True, False])
def test_waiter_sees_the_holders_content(
    form: Form, tmp_path: Path, holders: list[Holder], exists: bool
) -> None:
    """Two writers, the first holding the lock (on a missing target: the directory): the
    second, started while it holds, reads what the first published."""
    target = tmp_path / "t"
    if exists:
        target.write_text("old")
    holder = hold(holders, target, "w")
    seen: list[Any] = []
    done = threading.Event()

    def fn(old: str | None) -> str:
        seen.append(old)
        return f"{old}+2"

    def second() -> None:
        update(form, target, fn)
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    # Whether the second writer is already waiting or not yet started, it can't run before
    # the first ends; it then sees the first's content (and no FileExistsError).
    holder.commit("first")
    thread.join()
    assert seen == ["first"]
    assert target.read_text() == "first+2"
    assert listing(tmp_path) == ["t"]


def test_errors_are_the_writes_errors(form: Form, tmp_path: Path) -> None:
    """An OSError met while taking the lock is the write's SessionFileError, as open()'s
    would be, in the sync and the async form."""
    missing = tmp_path / "no-such-dir" / "t"
    with pytest.raises(FileNotFoundError) as caught:
        form.write(missing, "x", lock=True, timeout=0)
    assert isinstance(caught.value, SessionFileError) and caught.value.filename == str(missing)
    with pytest.raises(FileNotFoundError) as caught:
        update(form, missing, uncalled)
    assert isinstance(caught.value, SessionFileError) and caught.value.filename == str(missing)
    assert listing(tmp_path) == []


def test_not_reentrant(tmp_path: Path) -> None:
    """Taking the lock again inside one's own lock=True block waits for oneself: a
    timeout turns that into a TimeoutError (the README says so)."""
    target = tmp_path / "t"
    target.write_text("1")
    with AtomicFile(target, "r+", lock=True) as f:
        with pytest.raises(TimeoutError):
            atomic_update(target, uncalled, timeout=0)
        f.write("2")
    assert target.read_text() == "2"
    assert listing(tmp_path) == ["t"]


def test_timeout_is_logged_as_a_failed_write(
    tmp_path: Path, holders: list[Holder], caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    holder = hold(holders, target)
    with caplog.at_level("DEBUG", logger="atomicfile"), pytest.raises(TimeoutError):
        atomic_update(target, uncalled, timeout=0)
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.name == "atomicfile" and record.getMessage() == "Atomic write failed"
    assert record.target_path == str(target)  # type: ignore[attr-defined]
    assert record.error_code == "ETIMEDOUT"  # type: ignore[attr-defined]
    assert record.operation == "atomic_write"  # type: ignore[attr-defined]
    holder.release()


def test_sigkilled_holder_releases(tmp_path: Path, holders: list[Holder]) -> None:
    target = tmp_path / "t"
    target.write_text("5")
    holder = hold(holders, target)
    with pytest.raises(TimeoutError):
        atomic_update(target, uncalled, timeout=0)
    holder.kill()
    assert atomic_update(target, bump, timeout=0) == "6"
    # The killed holder's temp stays for the stale-temp sweep; no lock file anywhere.
    names = listing(tmp_path)
    assert "t" in names and all(n == "t" or n.endswith(".tmp") for n in names)
    atomicfile.clean_stale_temps(tmp_path)
    assert listing(tmp_path) == ["t"]


def test_garbage_collected_write_releases(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("1")
    af = AtomicFile(target, "r+", lock=True)
    af.open().write("9")  # written: the warning is the ResourceWarning of an abandoned write
    with pytest.warns(ResourceWarning):
        del af
    assert atomic_update(target, bump, timeout=0) == "2"
    assert listing(tmp_path) == ["t"]


def test_failed_open_releases(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_update(tmp_path / "d", uncalled, timeout=0)
    with pytest.raises(IsADirectoryError):
        AtomicFile(tmp_path / "d", lock=True, timeout=0).open()
    # Its lock (the directory's own, as a target) was released: had again at once.
    with pytest.raises(IsADirectoryError):
        AtomicFile(tmp_path / "d", lock=True, timeout=0).open()
    assert atomic_update(tmp_path / "d" / "f", bump, timeout=0) == "1"
    assert listing(tmp_path / "d") == ["f"]


@pytest.mark.parametrize("durable", [True, False])
def test_forked_child_does_not_keep_the_lock(tmp_path: Path, durable: bool) -> None:
    """Neither the lock nor the temp's own flock (which the new target carries after the
    rename) stays held by a forked child's copies of the descriptors."""
    target = tmp_path / "t"
    target.write_text("1")
    read_end, write_end = os.pipe()
    with AtomicFile(target, "r+", lock=True, durable=durable) as f:
        pid = os.fork()
        if pid == 0:  # the child: outlive the parent's write, then leave
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
        f.write("2")
    os.close(read_end)
    try:
        # The child still runs, with copies of the parent's descriptors: the lock is free.
        result = subprocess.run(
            [sys.executable, "-c", UPDATE_ONCE, str(target)], capture_output=True, text=True
        )
        assert result.stdout == "3\n", result.stderr
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)
    assert listing(tmp_path) == ["t"]


UPDATE_ONCE = f"""
import sys; sys.path.insert(0, {os.fspath(Path(__file__).parent.parent)!r})
from atomicfile import atomic_update
print(atomic_update(sys.argv[1], lambda old: str(int(old) + 1), timeout=0))
"""


# -- threads and async tasks ---------------------------------------------------------


def test_threads_lose_nothing(tmp_path: Path) -> None:
    target = tmp_path / "counter"
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for i in range(100):
            if i % 2:
                atomic_update(target, bump)
            else:
                with AtomicFile(target, "a+", lock=True) as f:
                    f.seek(0)
                    value = f.read()
                    f.truncate(0)
                    f.write(bump(value))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() == "800"
    assert listing(tmp_path) == ["counter"]


@pytest.mark.parametrize("exists", [True, False])
def test_tasks_lose_nothing_and_the_loop_runs(
    async_form: Form, tmp_path: Path, holders: list[Holder], exists: bool
) -> None:
    """10 tasks x 10 updates (sync and async fn mixed), started while another process
    holds the lock: a heartbeat task keeps ticking while they all wait."""
    import anyio

    target = tmp_path / "counter"
    if exists:
        target.write_text("0")
    holder = hold(holders, target, "a" if exists else "w")

    async def async_bump(old: str | None) -> str:
        await anyio.sleep(0)
        return bump(old)

    async def main() -> None:
        beats = 0
        done = anyio.Event()

        async def heartbeat() -> None:
            nonlocal beats
            while not done.is_set():
                beats += 1
                if beats == 20:  # the loop ran 20 times with every task waiting
                    holder.commit("100")
                await anyio.sleep(0.001)

        async def worker(n: int) -> None:
            for i in range(10):
                await atomic_update_async(target, async_bump if (n + i) % 2 else bump)

        async with anyio.create_task_group() as outer:
            outer.start_soon(heartbeat)
            async with anyio.create_task_group() as tasks:
                for n in range(10):
                    tasks.start_soon(worker, n)
            done.set()
        assert beats >= 20

    async_form.run(main)
    assert target.read_text() == "200"
    assert listing(tmp_path) == ["counter"]


@pytest.mark.parametrize("how", ["lock=True", "atomic_update_async"])
@pytest.mark.parametrize("exists", [True, False])
def test_cancelled_while_waiting_holds_nothing(
    async_form: Form, tmp_path: Path, holders: list[Holder], exists: bool, how: str
) -> None:
    import anyio

    target = tmp_path / "t"
    if exists:
        target.write_text("old")
    holder = hold(holders, target, "a" if exists else "w")

    async def main() -> None:
        beats = 0
        with anyio.CancelScope() as scope:

            async def waiter() -> None:
                if how == "lock=True":
                    async with AtomicFile(target, "w", lock=True) as f:
                        await f.write("never")
                else:
                    await atomic_update_async(target, uncalled)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                while beats < 10:  # the waiter polls meanwhile; then cancel it
                    beats += 1
                    await anyio.sleep(0.001)
                scope.cancel()
        assert scope.cancelled_caught

    async_form.run(main)
    holder.release()
    # Nothing held by the cancelled waiter: another writer gets the lock at once.
    assert atomic_update(target, lambda old: "after", timeout=0) == "after"
    assert listing(tmp_path) == ["t"]


def test_async_fn_raising_changes_nothing(async_form: Form, tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    error = FileNotFoundError(errno.ENOENT, "user's own")

    async def fn(old: str | None) -> str:
        raise error

    with pytest.raises(FileNotFoundError) as caught:
        update(async_form, target, fn)
    assert caught.value is error
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]
    assert update(async_form, target, lambda old: old + "!", timeout=0) == "old!"


def test_async_wait_never_parks_a_thread(tmp_path: Path, holders: list[Holder]) -> None:
    """A waiter for the whole length of asyncio.run(): the default executor is never
    blocked in a flock, so a cancelled waiter lets asyncio.run() end (no deadlock at its
    executor shutdown), and the executor keeps serving other jobs while it waits."""
    import asyncio

    target = tmp_path / "t"
    target.write_text("old")
    holder = hold(holders, target)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(atomic_update_async(target, uncalled))
        for _ in range(20):  # a single-worker executor would starve if the waiter sat in it
            assert await loop.run_in_executor(None, os.getpid) == os.getpid()
            await asyncio.sleep(0.001)
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    async def run() -> None:
        from concurrent.futures import ThreadPoolExecutor

        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        await main()

    asyncio.run(run())
    holder.release()
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


# -- links, permissions, hostile readers (SPEC 8, issue item 7) ------------------------


def test_symlink_followed_locks_the_file_it_leads_to(tmp_path: Path, holders: list[Holder]) -> None:
    real = tmp_path / "real"
    real.write_text("1")
    link = tmp_path / "link"
    link.symlink_to("real")
    holder = hold(holders, real)  # the file itself, by its own name
    with pytest.raises(TimeoutError):
        atomic_update(link, uncalled, timeout=0)
    holder.release()
    assert atomic_update(link, bump, timeout=0) == "2"
    assert link.is_symlink() and real.read_text() == "2"
    assert listing(tmp_path) == ["link", "real"]


def test_symlink_not_followed(tmp_path: Path, holders: list[Holder]) -> None:
    """follow_symlinks=False: the link is replaced by a new file, so it is locked as a
    missing target (the directory); atomic_update refuses to read through it (ELOOP, as
    open() with O_NOFOLLOW)."""
    (tmp_path / "real").write_text("1")
    link = tmp_path / "link"
    link.symlink_to("real")
    with pytest.raises(SessionFileError) as caught:
        atomic_update(link, uncalled, follow_symlinks=False)
    assert caught.value.errno == errno.ELOOP
    assert link.is_symlink()
    holder = hold(holders, tmp_path / "absent", "w")  # holds the directory
    with pytest.raises(TimeoutError):
        AtomicFile(link, "w", lock=True, timeout=0, follow_symlinks=False).open()
    holder.release()
    with AtomicFile(link, "w", lock=True, timeout=0, follow_symlinks=False) as f:
        f.write("own")
    assert not link.is_symlink() and link.read_text() == "own"
    assert (tmp_path / "real").read_text() == "1"
    assert listing(tmp_path) == ["link", "real"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is private to root)."""
    if not IS_ROOT:
        pytest.skip("needs root, to run children as another user")
    where = Path(tempfile.mkdtemp(prefix="atomicfile-update-", dir="/tmp"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where)


@pytest.mark.parametrize("exists", [True, False])
def test_hostile_reader_delays_only_until_timeout(
    shared_dir: Path, holders: list[Holder], exists: bool
) -> None:
    """Another user who may read the target (or the directory, while there is none) can
    hold its lock with a plain flock: a locking writer waits for them only until
    `timeout`; writers without the lock go on."""
    target = shared_dir / "t"
    if exists:
        target.write_text("old")
        target.chmod(0o644)
    hostile = Holder("flock", str(target if exists else shared_dir), str(NOBODY))
    holders.append(hostile)
    with pytest.raises(TimeoutError, match=str(target)):
        atomic_update(target, uncalled, timeout=0.05)
    with pytest.raises(TimeoutError):
        AtomicFile(target, "w", lock=True, timeout=0).open()
    atomicfile.atomic_write(target, "unlocked")
    assert target.read_text() == "unlocked"
    assert listing(shared_dir) == ["t"]
    hostile.release()
    assert atomic_update(target, lambda old: old + "!", timeout=0) == "unlocked!"


AS_NOBODY = f"""
import json, os, sys; sys.path.insert(0, {os.fspath(Path(__file__).parent.parent)!r})
from atomicfile import AtomicFile, atomic_update
# Warm up before the drop (Python's own files are in root's home): every module a write,
# its failure and its log load on first use.
import shutil, tempfile
warm = tempfile.mkdtemp()
atomic_update(os.path.join(warm, "w"), lambda old: "x")
try:
    atomic_update(os.path.join(warm, "w"), lambda old: 1)
except TypeError:
    pass
shutil.rmtree(warm)
target, what = sys.argv[1], sys.argv[2]
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
try:
    if what == "update":
        atomic_update(target, lambda old: "called", timeout=0)
    else:
        with AtomicFile(target, "w", lock=True, timeout=0) as f:
            f.write("locked write")
    print(json.dumps(["ok"]))
except OSError as err:
    print(json.dumps([type(err).__name__, err.errno, str(err)]))
"""


def as_nobody(target: Path, what: str) -> list[Any]:
    import json

    done = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, str(target), what],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_write_only_target(shared_dir: Path) -> None:
    """A target the writer may write but not read (0o200): `lock=True` locks it through a
    write-only descriptor; atomic_update can't read the old content: PermissionError,
    `fn` not called, nothing changed."""
    os.chown(shared_dir, NOBODY, NOBODY)
    target = shared_dir / "t"
    target.write_text("secret")
    os.chown(target, NOBODY, NOBODY)
    target.chmod(0o200)
    kind, code, message = as_nobody(target, "update")
    assert (kind, code) == ("SessionPermissionError", errno.EACCES)
    assert str(target) in message
    assert target.read_text() == "secret" and listing(shared_dir) == ["t"]
    assert as_nobody(target, "write") == ["ok"]
    assert target.read_text() == "locked write"
    assert target.stat().st_mode & 0o777 == 0o200
    assert listing(shared_dir) == ["t"]


def test_unreadable_directory(shared_dir: Path) -> None:
    """A directory the writer may write but not read (0o300): with a target there, its
    lock is the target's and all works; with none, the directory can't be locked, and the
    write is refused (PermissionError) rather than done without the lock."""
    os.chown(shared_dir, NOBODY, NOBODY)
    target = shared_dir / "t"
    target.write_text("1")
    os.chown(target, NOBODY, NOBODY)
    shared_dir.chmod(0o300)
    try:
        assert as_nobody(target, "update") == ["ok"]
        assert target.read_text() == "called"
        kind, code, message = as_nobody(shared_dir / "new", "update")
        assert (kind, code) == ("SessionPermissionError", errno.EACCES)
        assert str(shared_dir / "new") in message
    finally:
        shared_dir.chmod(0o755)
    assert listing(shared_dir) == ["t"]
