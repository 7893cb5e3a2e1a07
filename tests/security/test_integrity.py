"""Issue 9, "Availability" and "Data integrity": no writer hung by another user's lock,
writes where flock is missing, fork, /proc/self/fd targets, failing loggers, deep working
directories and a parent swapped mid-write, and misuse from two threads."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import atomicfile._fs
from atomicfile import AtomicFile, SessionFileError, atomic_write

from conftest import Form, listing

sys.path.insert(0, str(Path(__file__).parent))
from _attack import NOBODY, needs_root, shared_dir

__all__ = ["shared_dir"]  # a fixture, used by name


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- 7. a lock another user takes never hangs the writer ----------------------------------


@needs_root
def test_another_users_lock_on_the_fresh_temp_never_hangs(
    shared_dir: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker opens our fresh 0644 temp and takes a shared flock on it before we lock
    it (the race they win with inotify). Here a real process of another uid does exactly
    that at exactly that instant: the write must still finish, elsewhere."""
    home = shared_dir / "d"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    target = home / "t"
    target.write_text("old")
    real_try_lock = atomicfile._fs.try_lock
    attacked: list[str] = []
    holders: list[subprocess.Popen[bytes]] = []

    def try_lock(fd: int) -> bool | None:
        if not attacked:
            temp = os.readlink(f"/proc/self/fd/{fd}")
            attacked.append(temp)
            holder = subprocess.Popen(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 sys.executable, "-c",
                 "import fcntl, sys; f = open(sys.argv[1], 'rb'); "
                 "fcntl.flock(f, fcntl.LOCK_SH); print('locked', flush=True); sys.stdin.read()",
                 temp],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )  # fmt: skip
            holders.append(holder)
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"locked\n"
        return real_try_lock(fd)

    monkeypatch.setattr(atomicfile._fs, "try_lock", try_lock)
    try:
        form.write(target, "new")
    finally:
        for holder in holders:
            holder.communicate(b"")
    assert attacked
    assert target.read_text() == "new"
    assert listing(home) == ["t"]  # the poisoned name was left and removed


# -- 8. file systems without flock ---------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
def test_no_flock_here_the_write_proceeds(
    tmp_path: Path,
    form: Form,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
) -> None:
    """MOCKED: NFS without lockd can't be mounted here, so flock(2) is made to fail as it
    does there. The write proceeds; the missing lock is logged at DEBUG once per directory."""
    fired: list[int] = []

    def flock(fd: int, op: int) -> None:
        fired.append(op)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", flock)
    atomicfile._local._unlocked_dirs.clear()
    caplog.set_level(logging.DEBUG, logger="atomicfile")
    form.write(tmp_path / "a", "one")
    form.write(tmp_path / "b", "two")
    assert fired
    assert (tmp_path / "a").read_text() == "one" and (tmp_path / "b").read_text() == "two"
    unlocked = [r for r in caplog.records if r.getMessage().startswith("Temp files here are not")]
    assert len(unlocked) == 1 and unlocked[0].levelno == logging.DEBUG
    assert listing(tmp_path) == ["a", "b"]


# -- 10. fork() inside a with block --------------------------------------------------------

_FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from atomicfile import AtomicFile
    target, how = sys.argv[1], sys.argv[2]
    af = AtomicFile(target)
    with af as f:
        f.write("half")
        pid = os.fork()
        if pid == 0:
            if how == "exit":
                sys.exit(0)  # leaves the block with SystemExit
            if how == "commit":
                try:
                    af.commit()
                except RuntimeError as err:
                    print("child:", err, flush=True)
                    os._exit(3)
                os._exit(4)
            if how == "discard":
                af.discard()
            # how == "leave": falls out of the block normally
        else:
            _, status = os.waitpid(pid, 0)
            print("child status", os.waitstatus_to_exitcode(status), flush=True)
            print("target after child:", open(target).read(), flush=True)
            f.write("rest")
    if pid == 0:
        os._exit(0)
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("how", ["exit", "leave", "commit", "discard"])
def test_forked_child_never_publishes_or_removes(tmp_path: Path, how: str) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, str(target), how],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "target after child: old" in lines
    if how == "commit":
        assert any(
            line.startswith("child: AtomicFile was opened before a fork()") for line in lines
        )
        assert "child status 3" in lines
    else:
        assert "child status 0" in lines
    assert lines[-1] == "done"
    assert target.read_text() == "halfrest"  # the child flushed nothing into the parent's temp
    assert listing(tmp_path) == ["t"]


# -- 11. /proc/self/fd/N and other targets with no replaceable path -----------------------


def test_deleted_file_behind_proc_fd_is_refused(tmp_path: Path, form: Form) -> None:
    victim = tmp_path / "out.txt"
    with open(victim, "w") as held:
        victim.unlink()
        with pytest.raises(SessionFileError) as caught:
            form.write(f"/proc/self/fd/{held.fileno()}", "data")
    assert caught.value.errno == errno.EINVAL
    assert "atomically" in str(caught.value)
    assert listing(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux's")
def test_memfd_behind_proc_fd_is_refused(tmp_path: Path, form: Form) -> None:
    name = f"atomicfile-test-{os.getpid()}"
    fd = os.memfd_create(name)
    try:
        with pytest.raises(SessionFileError) as caught:
            form.write(f"/proc/self/fd/{fd}", "data")
    finally:
        os.close(fd)
    assert caught.value.errno == errno.EINVAL
    assert not os.path.exists(f"/memfd:{name} (deleted)")


def test_pipe_behind_proc_fd_says_not_a_regular_file(form: Form) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(SessionFileError) as caught:
            form.write(f"/proc/self/fd/{w}", "data")
    finally:
        os.close(r)
        os.close(w)
    assert caught.value.errno == errno.EINVAL
    assert "regular file" in str(caught.value)


def test_proc_fd_of_a_live_file_replaces_that_file(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "live"
    target.write_text("old")
    with open(target) as held:
        form.write(f"/proc/self/fd/{held.fileno()}", "new")
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["live"]


# -- 12. a logger that raises --------------------------------------------------------------


class Boom(Exception):
    pass


class RaisingHandler(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)

    def emit(self, record: logging.LogRecord) -> None:
        raise Boom(record.getMessage())

    def handleError(self, record: logging.LogRecord) -> None:
        raise


@pytest.mark.parametrize("level", [logging.DEBUG, logging.ERROR])
def test_failing_logger_never_hides_the_error_nor_leaves_a_temp(
    tmp_path: Path, form: Form, level: int
) -> None:
    logger = logging.getLogger(f"atomicfile.test.raising.{level}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = RaisingHandler(level)
    logger.addHandler(handler)
    target = tmp_path / "t"
    target.write_text("old")
    before = _open_fds()
    try:
        with pytest.raises((ValueError, Boom)) as caught:
            form.write(target, "new", raise_=ValueError("the user's error"), logger=logger)
    finally:
        logger.removeHandler(handler)
    if level == logging.ERROR:
        # Only the failure events raise: the user's error is what comes out.
        assert isinstance(caught.value, ValueError)
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]
    assert _open_fds() == before


def test_failing_logger_after_a_protocol_error(tmp_path: Path, form: Form) -> None:
    logger = logging.getLogger("atomicfile.test.raising.protocol")
    logger.propagate = False
    handler = RaisingHandler(logging.ERROR)
    logger.addHandler(handler)
    try:
        with pytest.raises(SessionFileError) as caught:
            form.write(tmp_path / "missing" / "t", "x", logger=logger)
    finally:
        logger.removeHandler(handler)
    assert caught.value.errno == errno.ENOENT
    assert listing(tmp_path) == []


# -- 13. deep working directories, and a parent swapped mid-write -------------------------


def test_relative_path_in_a_working_directory_deeper_than_path_max(
    tmp_path: Path, form: Form
) -> None:
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        for _ in range(25):  # 25 x 201 bytes > PATH_MAX (4096)
            os.mkdir("d" * 200)
            os.chdir("d" * 200)
        assert len(os.getcwd()) > 4096
        with open("control", "w") as f:
            f.write("open() works here")
        form.write("f", "deep")
        with open("f") as f:
            assert f.read() == "deep"
        assert sorted(os.listdir(".")) == ["control", "f"]
    finally:
        os.chdir(here)


def test_parent_swapped_for_a_symlink_mid_write_redirects_nothing(
    tmp_path: Path, form: Form
) -> None:
    """The write is bound to the directory it started in: renaming that directory away and
    planting a symlink in its place (to a directory the attacker wants written) moves
    neither the temp nor the rename."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "t").write_text("old")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def swap(_: Any) -> None:
        os.rename(tmp_path / "d", tmp_path / "moved")
        os.symlink(elsewhere, tmp_path / "d")

    form.write(tmp_path / "d" / "t", "new", inside=swap)
    assert (tmp_path / "moved" / "t").read_text() == "new"
    assert listing(elsewhere) == []
    assert listing(tmp_path / "moved") == ["t"]


# -- 14. small things ------------------------------------------------------------------------


_AT_THE_LIMIT = textwrap.dedent(
    """
    import os, resource, sys
    from atomicfile import AtomicFile, SessionFileError
    target = sys.argv[1]
    af = AtomicFile(target, durable=False)
    f = af.open()
    f.write("x")
    highest = max(int(n) for n in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, highest + 1))
    fillers = []
    while True:  # every free slot below the limit taken: the next dup gets EMFILE
        try:
            fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            break
    try:
        af.commit()
    except SessionFileError as err:
        print(err.errno, err.step)
    else:
        print("committed")
    """
)


def _commit_at_the_descriptor_limit(target: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _AT_THE_LIMIT, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not done.stderr, done.stderr
    return done.stdout.split()


def test_emfile_at_the_dup_before_the_rename_is_step_close(tiny_fs: Path) -> None:
    """A real EMFILE: the descriptor limit is lowered to what is open, in a child process.
    On tmpfs (major 0, like NFS, SMB and FUSE) a durable=False write closes the temp before
    the rename and keeps its sweep lock on a duplicate: that dup is what fails."""
    target = tiny_fs / "t"
    target.write_text("old")
    assert _commit_at_the_descriptor_limit(target) == [str(errno.EMFILE), "close"]
    assert target.read_text() == "old"
    assert listing(tiny_fs) == ["t"]


def test_no_dup_before_the_rename_on_a_block_device(tmp_path: Path) -> None:
    """On a file system on a block device (ext4, xfs: one host, no close-to-open step) the
    durable=False commit needs no new descriptor: it succeeds with none left."""
    if os.major(os.stat(tmp_path).st_dev) == 0:
        pytest.skip(f"{tmp_path} is not on a block device")
    target = tmp_path / "t"
    target.write_text("old")
    assert _commit_at_the_descriptor_limit(target) == ["committed"]
    assert target.read_text() == "x"
    assert listing(tmp_path) == ["t"]


def test_two_threads_committing_one_atomicfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One AtomicFile is one write: a second commit while the first runs is a RuntimeError
    that says so, never a double close."""
    target = tmp_path / "t"
    af = AtomicFile(target)
    af.open().write("new")
    inside, release = threading.Event(), threading.Event()
    real = atomicfile._fs.fsync_file

    def fsync_file(fd: int) -> None:
        inside.set()
        assert release.wait(30)
        real(fd)

    monkeypatch.setattr(atomicfile._fs, "fsync_file", fsync_file)
    first = threading.Thread(target=af.commit)
    first.start()
    assert inside.wait(30)
    try:
        with pytest.raises(RuntimeError, match="already being committed"):
            af.commit()
    finally:
        release.set()
        first.join()
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]


def test_x_mode_needs_no_hard_links(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'x' publishes with renameat2(RENAME_NOREPLACE): nothing to unlink after, and it works
    where link(2) is refused (vfat, exFAT, some FUSE). MOCKED here: link() fails with EPERM
    as it does there (tests/test_batch.py has the real vfat mount)."""
    fired: list[object] = []

    def link(*args: object, **kw: object) -> None:
        fired.append(args)
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", link)
    form.write(tmp_path / "t", "new", mode="x")
    assert os.stat(tmp_path / "t").st_nlink == 1
    assert listing(tmp_path) == ["t"]
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "t", "again", mode="x")
    assert fired == []
    assert (tmp_path / "t").read_text() == "new"
    assert listing(tmp_path) == ["t"]
