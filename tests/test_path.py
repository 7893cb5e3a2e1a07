"""atomic_path (issue 21, item 2; SPEC section 9): a path for tools that write a file
themselves, published over the target in one step; every failure leaves the target as it
was and nothing behind."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _trace import trace

import atomicfile
from atomicfile import AtomicPath, SessionFileError, atomic_path

from conftest import Form, listing


def use(form: Form, target: Any, body: Callable[[Path], object], **options: Any) -> None:
    """`with atomic_path(target, **options) as tmp: body(tmp)`, or its `async with` form."""
    if not form.is_async:
        with atomic_path(target, **options) as tmp:
            body(tmp)
        return

    async def main() -> None:
        async with atomic_path(target, **options) as tmp:
            body(tmp)

    form.run(main)


def sqlite_source() -> sqlite3.Connection:
    src = sqlite3.connect(":memory:")
    src.execute("create table t (x)")
    src.executemany("insert into t values (?)", [(i,) for i in range(100)])
    src.commit()
    return src


def backup_into(src: sqlite3.Connection) -> Callable[[Path], None]:
    def body(tmp: Path) -> None:
        dst = sqlite3.connect(str(tmp))
        src.backup(dst)
        dst.close()

    return body


def staging_entries(directory: Path) -> list[str]:
    return [n for n in listing(directory) if n.endswith(".tmp")]


# -- publishing ------------------------------------------------------------------------------


def test_sqlite_backup(form: Form, tmp_path: Path) -> None:
    target = tmp_path / "app.db"
    target.write_bytes(b"old")
    use(form, target, backup_into(sqlite_source()))
    rows = sqlite3.connect(str(target)).execute("select count(*), sum(x) from t").fetchall()
    assert rows == [(100, 4950)]
    assert listing(tmp_path) == ["app.db"]


def test_sqlite_in_wal_mode_leaves_nothing(tmp_path: Path) -> None:
    # While the connection is open its -wal/-shm files are beside the file, in the staging
    # directory; the database file itself is what is published, and nothing else is left.
    target = tmp_path / "wal.db"
    with atomic_path(target) as tmp:
        db = sqlite3.connect(str(tmp))
        db.execute("pragma journal_mode=wal")
        db.execute("create table t (x)")
        db.execute("insert into t values (1)")
        db.commit()
        assert sorted(os.listdir(tmp.parent)) == ["wal.db", "wal.db-shm", "wal.db-wal"]
        db.close()  # checkpoints the WAL into the file (the tool is done with the path)
    assert listing(tmp_path) == ["wal.db"]
    assert sqlite3.connect(str(target)).execute("select x from t").fetchall() == [(1,)]


def test_a_subprocess_writes_to_the_path(form: Form, tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    code = "import sys; open(sys.argv[2], 'w').write('from a child')"

    def body(tmp: Path) -> None:
        subprocess.run([sys.executable, "-c", code, "-o", str(tmp)], check=True)

    use(form, target, body)
    assert target.read_text() == "from a child"
    assert listing(tmp_path) == ["out.txt"]


def test_cp_to_the_path(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"payload")
    with atomic_path(tmp_path / "copy") as tmp:
        subprocess.run(["cp", str(tmp_path / "src"), str(tmp)], check=True)
    assert (tmp_path / "copy").read_bytes() == b"payload"
    assert listing(tmp_path) == ["copy", "src"]


def test_the_path_is_named_like_the_target(tmp_path: Path, as_path: Callable[[Path], Any]) -> None:
    target = tmp_path / "model.weights.h5"
    with atomic_path(as_path(target)) as tmp:
        assert isinstance(tmp, Path)
        assert (tmp.name, tmp.suffix, tmp.suffixes) == (target.name, ".h5", [".weights", ".h5"])
        assert not tmp.exists()
        # Beside the target: one private staging directory, the writer's, 0700.
        (staging,) = staging_entries(tmp_path)
        assert staging.startswith(".model.weights.h5.")
        st = os.stat(tmp_path / staging)
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert os.path.samefile(tmp.parent, tmp_path / staging)
        tmp.write_bytes(b"h5")
    assert listing(tmp_path) == ["model.weights.h5"]


def test_async_with_on_every_runtime(form: Form, tmp_path: Path) -> None:
    use(form, tmp_path / "a.bin", lambda tmp: tmp.write_bytes(b"x"))
    assert (tmp_path / "a.bin").read_bytes() == b"x"
    assert listing(tmp_path) == ["a.bin"]


def test_follows_a_symlink_target(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("old")
    (tmp_path / "link").symlink_to("real")
    with atomic_path(tmp_path / "link") as tmp:
        tmp.write_text("new")
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "real").read_text() == "new"
    assert listing(tmp_path) == ["link", "real"]


def test_no_follow_replaces_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("old")
    (tmp_path / "link").symlink_to("real")
    with atomic_path(tmp_path / "link", follow_symlinks=False) as tmp:
        tmp.write_text("new")
    assert not (tmp_path / "link").is_symlink()
    assert ((tmp_path / "link").read_text(), (tmp_path / "real").read_text()) == ("new", "old")


def test_make_parents(form: Form, tmp_path: Path) -> None:
    use(form, tmp_path / "a" / "b" / "t", lambda tmp: tmp.write_text("v"), make_parents=True)
    assert listing(tmp_path / "a" / "b") == ["t"]


def test_durable_order(tmp_path: Path) -> None:
    target = tmp_path / "t"
    code = (
        "import atomicfile\n"
        f"with atomicfile.atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_text('v')\n"
    )
    calls = [(c, a) for c, a, _ in trace(tmp_path, code)]
    names = [c for c, _ in calls]
    renamed = names.index("renameat") if "renameat" in names else names.index("renameat2")
    # The file fsynced before the rename (in the staging directory), the directory after.
    assert "fsync" in names[:renamed]
    assert calls[renamed + 1][0] == "fsync" and f"<{tmp_path}>" in calls[renamed + 1][1]
    assert listing(tmp_path) == ["strace.out", "t"]


def test_not_durable(tmp_path: Path) -> None:
    target = tmp_path / "t"
    code = (
        "import atomicfile\n"
        f"with atomicfile.atomic_path({str(target)!r}, durable=False) as tmp:\n"
        "    tmp.write_text('v')\n"
    )
    assert [c for c, _, _ in trace(tmp_path, code) if c == "fsync"] == []


# -- the permission policy (SPEC section 5), whatever mode the tool gave the file ----------


def _tool_writes(mode: int) -> Callable[[Path], None]:
    def body(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.write(fd, b"data")
        os.fchmod(fd, mode)
        os.close(fd)

    return body


def test_new_target_gets_0644_less_the_umask(form: Form, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        use(form, tmp_path / "t", _tool_writes(0o777))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o640


def test_existing_target_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("old")
    os.chmod(tmp_path / "t", 0o600)
    with atomic_path(tmp_path / "t") as tmp:
        _tool_writes(0o666)(tmp)
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o600
    assert (tmp_path / "t").read_bytes() == b"data"


@pytest.mark.parametrize("given", [0o600, 0o2750])
def test_explicit_permissions(tmp_path: Path, given: int) -> None:
    with atomic_path(tmp_path / "t", permissions=given) as tmp:
        _tool_writes(0o644)(tmp)
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == given


def test_permission_hook(tmp_path: Path) -> None:
    seen: list[Any] = []

    def hook(target: Path, current: os.stat_result | None) -> int:
        seen.append((target, current))
        return 0o604

    with atomic_path(tmp_path / "t", permissions=hook) as tmp:
        _tool_writes(0o600)(tmp)
    assert seen == [(tmp_path / "t", None)]
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o604


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a file away: needs root")
def test_existing_owner_kept(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("old")
    os.chown(tmp_path / "t", 4321, 4322)
    with atomic_path(tmp_path / "t") as tmp:
        _tool_writes(0o644)(tmp)
    st = (tmp_path / "t").stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_permissions_as_decimal_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean 0o644"):
        atomic_path(tmp_path / "t", permissions=644)
    assert listing(tmp_path) == []


# -- failures: the target untouched, nothing left ------------------------------------------


@pytest.fixture
def old(tmp_path: Path) -> Path:
    target = tmp_path / "t.db"
    target.write_text("old")
    return target


def _fails(form: Form, target: Path, body: Callable[[Path], object]) -> pytest.ExceptionInfo[Any]:
    with pytest.raises(OSError) as info:
        use(form, target, body)
    assert target.read_text() == "old"
    assert listing(target.parent) == [target.name]
    return info


def test_nothing_written(form: Form, old: Path) -> None:
    info = _fails(form, old, lambda tmp: None)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, SessionFileError)
    assert info.value.errno == errno.ENOENT
    assert "Nothing was written at the path atomic_path gave" in str(info.value)
    assert info.value.path == str(old)


def test_a_directory_at_the_path(form: Form, old: Path) -> None:
    info = _fails(form, old, lambda tmp: (tmp.mkdir(), (tmp / "x").write_text("x")))
    assert isinstance(info.value, IsADirectoryError)
    assert isinstance(info.value, SessionFileError)
    assert "A directory was left at the path" in str(info.value)


def test_a_symlink_at_the_path(form: Form, old: Path, tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_text("secret")
    try:
        info = _fails(form, old, lambda tmp: tmp.symlink_to(secret))
    finally:
        secret.unlink()
    assert info.value.errno == errno.ELOOP
    assert "A symbolic link was left at the path" in str(info.value)


def test_a_fifo_at_the_path(form: Form, old: Path) -> None:
    info = _fails(form, old, lambda tmp: os.mkfifo(tmp))
    assert info.value.errno == errno.EINVAL
    assert "Not a regular file at the path" in str(info.value)


def test_a_hard_link_at_the_path(old: Path, tmp_path: Path) -> None:
    other = tmp_path.parent / f"{tmp_path.name}-other"
    other.write_text("other")
    os.chmod(other, 0o600)
    try:
        info = _fails(Form("sync"), old, lambda tmp: os.link(other, tmp))
        assert info.value.errno == errno.EMLINK
        assert "has other hard links" in str(info.value)
        assert stat.S_IMODE(other.stat().st_mode) == 0o600
        assert other.stat().st_nlink == 1
    finally:
        other.unlink()


def test_an_exception_in_the_block_propagates_unchanged(form: Form, old: Path) -> None:
    error = sqlite3.OperationalError("disk I/O error")

    def body(tmp: Path) -> None:
        tmp.write_text("half")
        raise error

    with pytest.raises(sqlite3.OperationalError) as info:
        use(form, old, body)
    assert info.value is error
    assert old.read_text() == "old"
    assert listing(old.parent) == [old.name]


def test_an_oserror_in_the_block_is_the_block_s(form: Form, old: Path) -> None:
    # The block runs other code: its OSError is its own, not wrapped as the write's.
    error = FileNotFoundError(errno.ENOENT, "input missing", "in.csv")

    def body(tmp: Path) -> None:
        raise error

    with pytest.raises(FileNotFoundError) as info:
        use(form, old, body)
    assert info.value is error
    assert listing(old.parent) == [old.name]


def test_discard(old: Path) -> None:
    with atomic_path(old) as tmp:
        tmp.write_text("new")
        ap_staging = tmp.parent
        assert ap_staging.exists()
    assert old.read_text() == "new"
    ap = atomic_path(old)
    with ap as tmp:
        tmp.write_text("newer")
        ap.discard()
    assert old.read_text() == "new"
    assert listing(old.parent) == [old.name]


def test_target_is_a_directory(form: Form, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        use(form, tmp_path / "d", lambda tmp: pytest.fail("the block must not run"))
    assert isinstance(info.value, SessionFileError)
    assert listing(tmp_path) == ["d"]
    assert listing(tmp_path / "d") == []


def test_missing_directory(form: Form, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        use(form, tmp_path / "no" / "t", lambda tmp: pytest.fail("the block must not run"))
    assert isinstance(info.value, SessionFileError)
    assert listing(tmp_path) == []


def test_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="atomic_path works on local files"):
        atomic_path("s3://bucket/key")


def test_misuse(tmp_path: Path) -> None:
    ap = atomic_path(tmp_path / "t")
    with ap as tmp:
        tmp.write_text("v")
    with pytest.raises(RuntimeError, match="atomic_path was already committed"):
        ap.open()
    with pytest.raises(RuntimeError, match="atomic_path was already committed"):
        ap.commit()
    assert isinstance(ap, AtomicPath)
    assert ap.staging_path is None
    assert listing(tmp_path) == ["t"]


def test_abandoned_write_is_removed(tmp_path: Path) -> None:
    ap = atomic_path(tmp_path / "t")
    tmp = ap.open()
    tmp.write_text("v")
    assert len(staging_entries(tmp_path)) == 1
    with pytest.warns(ResourceWarning, match="unfinished"):
        del ap
        import gc

        gc.collect()
    assert listing(tmp_path) == []


# -- the sweep ----------------------------------------------------------------------------


def test_sweep_keeps_a_live_writer(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "t") as tmp:
        tmp.write_text("v")
        assert atomicfile.clean_stale_temps(tmp_path) == []
        assert len(staging_entries(tmp_path)) == 1
    assert listing(tmp_path) == ["t"]


KILLED = """
import os, signal, sqlite3, sys
import atomicfile
ap = atomicfile.atomic_path(sys.argv[1])
tmp = ap.open()
db = sqlite3.connect(str(tmp))
db.execute("create table t (x)")
db.execute("begin")
db.execute("insert into t values (1)")  # a -journal beside the file, then killed
print(tmp.parent.resolve(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sweep_removes_a_killed_writer_s_staging(tmp_path: Path) -> None:
    (tmp_path / "t.db").write_text("old")
    done = subprocess.run(
        [sys.executable, "-c", KILLED, str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    (staging,) = staging_entries(tmp_path)
    assert sorted(os.listdir(tmp_path / staging)) == ["t.db", "t.db-journal"]
    removed = atomicfile.clean_stale_temps(tmp_path)
    assert removed == [str(tmp_path / staging)]
    assert listing(tmp_path) == ["t.db"]
    assert (tmp_path / "t.db").read_text() == "old"


@pytest.mark.parametrize(
    "inside",
    [
        ["notes.txt"],  # not the target's name
        ["t.db", "other"],  # something besides what the tool writes
        ["t.db", "t.db-dir/"],  # a directory
        ["t.db", "t.db-link@"],  # a symlink
    ],
)
def test_sweep_never_removes_a_look_alike(tmp_path: Path, inside: list[str]) -> None:
    look_alike = tmp_path / ".t.db.0123456789abcdef.tmp"
    look_alike.mkdir(mode=0o700)
    os.chmod(look_alike, 0o700)
    for name in inside:
        if name.endswith("/"):
            (look_alike / name[:-1]).mkdir()
        elif name.endswith("@"):
            (look_alike / name[:-1]).symlink_to("t.db")
        else:
            (look_alike / name).write_text("mine")
    before = sorted(os.listdir(look_alike))
    assert atomicfile.clean_stale_temps(tmp_path) == []
    assert sorted(os.listdir(look_alike)) == before


def test_sweep_look_alike_with_another_mode(tmp_path: Path) -> None:
    look_alike = tmp_path / ".t.db.0123456789abcdef.tmp"
    look_alike.mkdir()
    os.chmod(look_alike, 0o755)
    (look_alike / "t.db").write_text("mine")
    assert atomicfile.clean_stale_temps(tmp_path) == []
    assert listing(look_alike) == ["t.db"]


# -- overwrite=False: as open mode 'x' ---------------------------------------------------


def test_no_overwrite_new_target(form: Form, tmp_path: Path) -> None:
    use(form, tmp_path / "t", lambda tmp: tmp.write_text("v"), overwrite=False)
    assert (tmp_path / "t").read_text() == "v"
    assert listing(tmp_path) == ["t"]


def test_no_overwrite_existing_target_fails_at_the_start(form: Form, old: Path) -> None:
    with pytest.raises(FileExistsError) as info:
        use(form, old, lambda tmp: pytest.fail("the block must not run"), overwrite=False)
    assert isinstance(info.value, SessionFileError)
    assert old.read_text() == "old"
    assert listing(old.parent) == [old.name]


def test_no_overwrite_target_that_appears_meanwhile(form: Form, tmp_path: Path) -> None:
    target = tmp_path / "t"

    def body(tmp: Path) -> None:
        tmp.write_text("mine")
        target.write_text("theirs")  # another writer, while the tool runs

    with pytest.raises(FileExistsError) as info:
        use(form, target, body, overwrite=False)
    assert isinstance(info.value, SessionFileError)
    assert info.value.step == "rename"
    assert target.read_text() == "theirs"
    assert listing(tmp_path) == ["t"]


def test_steps_name_where_it_failed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing, atomic_path(tmp_path / "t"):
        pass
    assert missing.value.step == "commit"  # type: ignore[attr-defined]
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError) as directory:
        atomic_path(tmp_path / "d").open()
    assert directory.value.step == "open"  # type: ignore[attr-defined]

    def hook(target: Path, current: os.stat_result | None) -> int:
        raise PermissionError(errno.EPERM, "no", str(target))

    with pytest.raises(PermissionError) as refused:
        atomic_path(tmp_path / "t", permissions=hook).open()
    assert refused.value.step == "permissions"  # type: ignore[attr-defined]
    assert listing(tmp_path) == ["d"]


# -- the lifecycle it shares with every writer (_txn.Writer) --------------------------------


def test_log_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="atomicfile")
    with atomic_path(tmp_path / "t") as tmp:
        tmp.write_text("v")
    events = [(r.levelno, r.getMessage(), getattr(r, "operation", None)) for r in caplog.records]
    assert events == [
        (logging.DEBUG, "Starting atomic write", "atomic_path"),
        (logging.DEBUG, "Temp file renamed to target", "rename"),
        (logging.DEBUG, "Temp file cleaned up", "cleanup"),
        (logging.DEBUG, "Atomic write completed successfully", None),
    ]
    caplog.clear()
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "t"):
        pass
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(r.getMessage(), r.error_code, r.operation) for r in failed] == [  # type: ignore[attr-defined]
        ("Atomic write failed", "ENOENT", "atomic_path")
    ]
    assert listing(tmp_path) == ["t"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_publishes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    ap = atomic_path(target)
    with ap as tmp:
        tmp.write_text("new")
        pid = os.fork()
        if pid == 0:  # the child leaves the block too: the write is the parent's
            code = 1
            try:
                ap.__exit__(None, None, None)  # a clean exit, in the child
                code = 0 if target.read_text() == "old" and tmp.exists() else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert tmp.read_text() == "new"
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]


def test_commit_in_a_forked_child_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "t"
    ap = atomic_path(target)
    tmp = ap.open()
    tmp.write_text("new")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ap.commit()
        except RuntimeError as exc:
            code = 0 if "before a fork()" in str(exc) else 2
        finally:
            ap.discard()  # only closes the child's descriptors
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tmp.read_text() == "new"  # the staging directory is still the parent's
    ap.commit()
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]
