"""Issue 18, items 1-4 and 11: AtomicDirectory under attack and faults, for real.

Another user is a child dropped to uid 65534; faults are injected at one system call with
`strace --inject` (a signal, or an errno where a kernel would answer it). Every case
asserts the target's tree, the exact listing of its parent and, on failure, the error.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from _attack import NOBODY, as_user, needs_root, shared_dir

from atomicfile import AtomicDirectory, clean_stale_temps
from atomicfile._naming import is_temp_name

from conftest import listing

__all__ = ["shared_dir"]  # a fixture, used by name

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc, renameat2 and strace are Linux's"
)
needs_strace = pytest.mark.needs("strace")  # skipped naming the package (tests/helpers.py)
pytestmark = [linux_only]

# How long a writer child may take before it counts as hung (it then is killed). Not a
# synchronisation: a writer that works finishes in well under a second.
HANG = 60


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root` (relative path -> content; directories '<dir>', FIFOs
    '<fifo>'), never following a symlink."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = "<dir>"
        for f in filenames:
            path = Path(dirpath, f)
            mode = path.lstat().st_mode
            text = path.read_text() if stat.S_ISREG(mode) else "<fifo>"
            out[os.path.normpath(os.path.join(rel, f))] = text
    return out


def make_old(parent: Path, owner: int = 0) -> Path:
    site = parent / "site"
    site.mkdir()
    (site / "old.html").write_text("old")
    os.chmod(site, 0o755)
    os.chown(site, owner, owner)
    return site


OLD = {"old.html": "old"}


def run_writer(
    script: str, args: list[str], inject: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `script` under `strace -f` with the given `-e` options; a child that hangs is
    killed (its whole process group) and reported as returncode None."""
    command = ["strace", "-f", "-qq", "-o", "/dev/null", *inject]
    command += [sys.executable, "-B", "-c", textwrap.dedent(script), *args]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = proc.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(command, None, out, err)  # type: ignore[arg-type]
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


# -- item 1: the staging directory renamed away and replaced -----------------------------


@needs_root
@pytest.mark.parametrize("plant", ["symlink", "own directory"])
def test_staging_hijack_redirects_nothing(shared_dir: Path, plant: str) -> None:
    """The parent is the attacker's (their home, not sticky). Inside the block they rename
    root's staging directory away and put at its name a symlink to a root-only directory,
    or a directory of their own shaped like ours. Root's writes through `d` and the
    exchange must still reach only the tree root staged."""
    home = shared_dir / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    secret = shared_dir / "root-only"
    secret.mkdir(mode=0o700)
    site = make_old(home)

    with AtomicDirectory(site) as d:
        (name,) = [n for n in listing(home) if is_temp_name(n)]

        def hijack() -> None:
            os.umask(0)
            os.rename(home / name, home / "moved")
            if plant == "symlink":
                os.symlink(secret, home / name)
            else:
                os.mkdir(home / name, 0o777)
                os.mkdir(home / name / "tree", 0o777)

        assert as_user(hijack) == 0
        (d / "index.html").write_text("new index")
        (d / "config.json").write_text('{"password": "s3cret"}')

    assert not site.is_symlink()
    assert tree(site) == {"index.html": "new index", "config.json": '{"password": "s3cret"}'}
    assert os.lstat(site).st_uid == 0
    assert listing(secret) == []
    if plant == "own directory":
        assert tree(home / name) == {"tree": "<dir>"}  # nothing of root's went there
    else:
        assert os.readlink(home / name) == str(secret)
    # Root's staging directory, where the attacker moved it, is left empty (the old tree
    # was removed through its descriptor).
    assert listing(home) == sorted(["moved", name, "site"])
    assert listing(home / "moved") == []


# -- item 2: a sticky shared parent --------------------------------------------------------


@needs_root
@pytest.mark.parametrize("sticky", [True, False])
def test_new_tree_never_gets_a_foreign_owner_in_a_sticky_dir(
    shared_dir: Path, sticky: bool
) -> None:
    """In a sticky world-writable directory (/tmp) another user creates `site` first: the
    new tree stays root's, as AtomicFile does for a file, and they can't change it. In a
    directory that isn't shared that way the old owner is kept, as before."""
    parent = shared_dir / "tmp"
    parent.mkdir()
    os.chmod(parent, 0o1777 if sticky else 0o755)
    if not sticky:
        os.chown(parent, 0, 0)

    def squat() -> None:
        os.umask(0)
        os.mkdir(parent / "site", 0o755)

    if sticky:
        assert as_user(squat) == 0
    else:
        make_old(parent, owner=NOBODY)
    site = parent / "site"
    with AtomicDirectory(site) as d:
        (d / "index.html").write_text("new index")

    st = os.lstat(site)
    assert (st.st_uid, st.st_gid) == ((0, 0) if sticky else (NOBODY, NOBODY))
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert tree(site) == {"index.html": "new index"}
    assert listing(parent) == ["site"]

    def tamper() -> None:
        os.rename(site / "index.html", site / "gone.html")

    assert (as_user(tamper) != 0) == sticky
    if sticky:
        assert tree(site) == {"index.html": "new index"}


# -- item 3: fallback=True, a kill or an interrupt between the two renames ---------------

FALLBACK_WRITER = """
    import os, sys
    from atomicfile import AtomicDirectory

    site = sys.argv[1]
    try:
        with AtomicDirectory(site, fallback=True) as d:
            (d / "index.html").write_text("new index")
    except KeyboardInterrupt:
        print("interrupted", flush=True)  # and the program goes on
    print("done", flush=True)
"""
# No renameat2 (as on an old kernel or libc): the library must take the fallback, whose
# two renames are plain renameat(2) calls.
NO_RENAMEAT2 = ["-e", "inject=renameat2:error=ENOSYS"]


@needs_strace
def test_fallback_killed_between_the_renames_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL on entering the second rename: the old tree is aside, the new one still
    staged. The sweep must leave the old tree, under a name that says what it is."""
    make_old(tmp_path)
    done = run_writer(
        FALLBACK_WRITER,
        [str(tmp_path / "site")],
        [*NO_RENAMEAT2, "-e", "inject=renameat:signal=SIGKILL:when=2"],
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    clean_stale_temps(tmp_path)
    (aside,) = listing(tmp_path)  # `site` is missing: the instant fallback=True allows
    assert re.fullmatch(r"\.site\.[0-9a-f]{16}\.old", aside)
    assert not is_temp_name(aside)
    assert tree(tmp_path / aside) == OLD
    # The documented recovery: rename it back.
    os.rename(tmp_path / aside, tmp_path / "site")
    assert tree(tmp_path / "site") == OLD


@needs_strace
def test_fallback_interrupted_between_the_renames_puts_the_old_tree_back(tmp_path: Path) -> None:
    """SIGINT delivered at the first rename (which completes): KeyboardInterrupt comes
    after the old tree went aside. The program goes on, and `site` must be there."""
    make_old(tmp_path)
    done = run_writer(
        FALLBACK_WRITER,
        [str(tmp_path / "site")],
        [*NO_RENAMEAT2, "-e", "inject=renameat:signal=SIGINT:when=1"],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interrupted", "done"]
    assert listing(tmp_path) == ["site"]
    assert tree(tmp_path / "site") == OLD


# -- item 4: a FIFO swapped in during the fsync walk ----------------------------------------

FIFO_WRITER = """
    import errno, os, signal, sys
    from atomicfile import AtomicDirectory

    site = sys.argv[1]
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the old tree's owner
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        victim = os.path.join(os.read(go_r, 4096).decode(), "victim.html")
        try:
            os.unlink(victim)
            os.mkfifo(victim)
            os.write(done_w, b"swapped")
        except OSError as exc:
            os.write(done_w, errno.errorcode[exc.errno].encode())
        os._exit(0)

    state = {}

    def at_walk(signum, frame):
        # strace delivers SIGUSR1 on the walk's first call naming victim.html; the
        # attacker acts now, while the writer waits.
        os.write(go_w, os.path.realpath(state["d"]).encode())
        state["attacker"] = os.read(done_r, 100).decode()

    signal.signal(signal.SIGUSR1, at_walk)
    with AtomicDirectory(site) as d:
        state["d"] = d
        (d / "victim.html").write_text("new")
    os.waitpid(pid, 0)
    print(state.get("attacker"), flush=True)
"""


@needs_root
@needs_strace
def test_fifo_swapped_in_during_the_walk_never_hangs(shared_dir: Path) -> None:
    """Where syncfs isn't trusted the tree is made durable by a walk that opens every
    file. The old tree's owner (uid 65534) tries to swap a staged file for a FIFO right
    when the walk reaches it: they must not be able to (the tree is not theirs before the
    exchange) and the writer must not block."""
    site = make_old(shared_dir, owner=NOBODY)
    done = run_writer(
        FIFO_WRITER,
        [str(site)],
        ["-P", "victim.html", "-e", "inject=newfstatat,openat:signal=SIGUSR1:when=1"],
        env={"ATOMICFILE_NO_SYNCFS": "1"},
    )
    assert done.returncode == 0, f"writer hung or failed: {done.returncode} {done.stderr}"
    assert done.stdout.split() == ["EACCES"]  # the tree was still private
    assert tree(site) == {"victim.html": "new"}
    assert (os.lstat(site).st_uid, os.lstat(site).st_gid) == (NOBODY, NOBODY)  # kept, after
    assert listing(shared_dir) == ["site"]


def test_fsync_walk_skips_fifos_and_symlinks(tmp_path: Path) -> None:
    """The walk itself, on a tree holding a FIFO, a symlink to a FIFO and a dangling
    link: nothing is opened that could block, nothing outside is reached."""
    from atomicfile._fs import fsync_walk

    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "fifo")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("x")
    os.mkfifo(root / "fifo")
    os.symlink(outside / "fifo", root / "link")
    os.symlink(tmp_path / "nowhere", root / "sub" / "dangling")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_walk(fd)
    finally:
        os.close(fd)
    assert listing(root) == ["fifo", "link", "sub"]


# -- item 11: a sweep between the writer's mkdir and its flock ----------------------------

RACE_WRITER = """
    import fcntl, os, signal, sys
    from atomicfile import AtomicDirectory, clean_stale_temps
    from atomicfile._naming import is_temp_name

    parent, how = sys.argv[1], sys.argv[2]
    state = {"swept": []}

    def after_mkdir(signum, frame):
        # strace delivers SIGUSR1 as the writer's first mkdir returns: its staging
        # directory exists and is not locked yet.
        if how == "sweep removes it":
            state["swept"] += clean_stale_temps(parent)
        else:  # a sweep that has just taken the lock (flock is per open file description)
            (name,) = [n for n in os.listdir(parent) if is_temp_name(n)]
            fd = os.open(os.path.join(parent, name), os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            state["held"] = fd

    signal.signal(signal.SIGUSR1, after_mkdir)
    with AtomicDirectory(os.path.join(parent, "site")) as d:
        if "held" in state:  # the sweep goes on: it releases, and sweeps again
            os.close(state.pop("held"))
            state["swept"] += clean_stale_temps(parent)
        (d / "index.html").write_text("new index")
    print(len(state["swept"]), flush=True)
"""


@needs_strace
@pytest.mark.parametrize("how", ["sweep removes it", "sweep holds its lock"])
def test_sweep_between_mkdir_and_flock(tmp_path: Path, how: str) -> None:
    """The writer must never go on in a staging directory a sweep locked or removed: it
    takes a new name. (The sweep runs in the writer's process, in the signal handler that
    strace triggers at exactly that point; flock makes no difference between processes
    and open file descriptions of one process.)"""
    make_old(tmp_path)
    done = run_writer(
        RACE_WRITER,
        [str(tmp_path), how],
        ["-e", "trace=mkdirat", "-e", "inject=mkdirat:signal=SIGUSR1:when=1"],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]  # the sweep removed the one it found, not ours
    assert listing(tmp_path) == ["site"]
    assert tree(tmp_path / "site") == {"index.html": "new index"}


# -- a writer that is not root: the exchange moves directories between parents -------------
#
# rename(2) moves a directory to another parent only with write access to it (its `..`
# changes): EACCES otherwise, even for its owner. The new tree leaves the staging directory
# and the old one enters it, so a non-root writer needs write on both tops at that instant,
# whatever their final modes.


def as_nobody(fn: Callable[[], object]) -> int:
    """`as_user(fn)` with the library imported first (the venv is root's)."""
    import atomicfile._async
    import atomicfile._clean
    import atomicfile._directory
    import atomicfile._log  # noqa: F401

    return as_user(fn)


def owned_by_nobody(shared_dir: Path) -> Path:
    parent = shared_dir / "home"
    parent.mkdir()
    os.chown(parent, NOBODY, NOBODY)
    return parent


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@needs_root
@pytest.mark.parametrize("old", [False, True], ids=["new target", "over an old tree"])
def test_a_user_publishes_a_read_only_top_directory(shared_dir: Path, old: bool) -> None:
    """`permissions=0o555`: the new top has no write for anyone once published, and
    nobody else ever sees it with less than 0o555."""
    parent = owned_by_nobody(shared_dir)
    if old:
        make_old(parent, owner=NOBODY)

    def user() -> None:
        with AtomicDirectory(parent / "site", permissions=0o555) as d:
            (d / "index.html").write_text("new index")

    assert as_nobody(user) == 0
    assert listing(parent) == ["site"]
    assert tree(parent / "site") == {"index.html": "new index"}
    assert mode_of(parent / "site") == 0o555
    assert os.lstat(parent / "site").st_uid == NOBODY


@needs_root
@pytest.mark.parametrize("keep_old", [False, True], ids=["removed", "kept"])
def test_a_user_replaces_their_read_only_tree(shared_dir: Path, keep_old: bool) -> None:
    """The old top is the writer's and 0o555: it is lent the owner's write for the move,
    removed, or kept with its own mode back."""
    parent = owned_by_nobody(shared_dir)
    site = make_old(parent, owner=NOBODY)
    site.chmod(0o555)
    r, w = os.pipe()

    def user() -> None:
        ad = AtomicDirectory(site, permissions=0o755, keep_old=keep_old)
        with ad as d:
            (d / "index.html").write_text("new index")
        if ad.old_path is not None:
            os.write(w, ad.old_path.name.encode())

    code = as_nobody(user)
    os.close(w)
    with os.fdopen(r) as out:
        kept = out.read().split()
    assert code == 0
    assert tree(site) == {"index.html": "new index"}
    assert mode_of(site) == 0o755
    if keep_old:
        (name,) = kept
        assert re.fullmatch(r"\.site\.[0-9a-f]{16}\.old", name)
        assert listing(parent) == sorted(["site", name])
        assert tree(parent / name) == OLD
        assert mode_of(parent / name) == 0o555
    else:
        assert kept == []
        assert listing(parent) == ["site"]


@needs_root
def test_a_users_read_only_tree_stays_read_only_when_the_replace_fails(shared_dir: Path) -> None:
    """The exchange refused after the old top was lent write (no renameat2 here, as on an
    old libc, and no fallback): the target keeps its mode, as all else."""
    parent = owned_by_nobody(shared_dir)
    site = make_old(parent, owner=NOBODY)
    site.chmod(0o555)

    def user() -> None:
        from atomicfile import SessionFileError, _fs

        _fs._renameat2 = False
        _fs._load_renameat2 = lambda: False  # type: ignore[assignment]
        try:
            with AtomicDirectory(site) as d:
                (d / "index.html").write_text("new index")
        except SessionFileError as exc:
            assert exc.errno == errno.ENOSYS and exc.step == "rename", exc
        else:
            raise AssertionError("the replace succeeded")

    assert as_nobody(user) == 0
    assert listing(parent) == ["site"]
    assert tree(site) == OLD
    assert mode_of(site) == 0o555


@needs_root
def test_a_user_cannot_replace_another_users_tree(shared_dir: Path) -> None:
    """Root's 0o755 tree in a directory of theirs: they may rename it, but not move it
    into another directory. A plain error, the target untouched, nothing left."""
    parent = owned_by_nobody(shared_dir)
    site = make_old(parent, owner=0)

    def user() -> None:
        from atomicfile import SessionFileError

        try:
            with AtomicDirectory(site) as d:
                (d / "index.html").write_text("new index")
        except SessionFileError as exc:
            assert isinstance(exc, PermissionError), exc
            assert exc.errno == errno.EACCES and exc.step == "rename", exc
            assert "another user's" in str(exc) and "as its owner or as root" in str(exc), exc
        else:
            raise AssertionError("the replace succeeded")

    assert as_nobody(user) == 0
    assert listing(parent) == ["site"]
    assert tree(site) == OLD
    assert (os.lstat(site).st_uid, mode_of(site)) == (0, 0o755)
