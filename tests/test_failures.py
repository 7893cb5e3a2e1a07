"""Every failure path, through both front doors: bad input gets a clear error and loses
nothing. Each case asserts the error type (SessionFileError and the builtin class open()
raises), the errno, the target's exact bytes (or its absence)
and the exact directory listing: no temp file is ever left behind.

Real conditions where they can be made (tmpfs full or out of inodes, read-only remount, a
bind mount for EBUSY, a child process without privileges); mocks only for errors no test
can provoke on demand (EIO from fsync), each placed where the library really looks it up.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atomicfile._fs
from atomicfile import AtomicFile, SessionFileError, atomic_write

from conftest import IS_ROOT, Form, listing, needs_root, temps

TEMP_RE = re.compile(r"\.[^/]*\.[0-9a-f]{16}\.tmp")
NOBODY = 65534


def is_dir_fd_of(fd: int | None, directory: Path) -> bool:
    """True if `fd` is an open descriptor of `directory` (the store binds the target's
    directory once and names everything relative to it)."""
    if fd is None:
        return False
    st, want = os.fstat(fd), os.stat(directory)
    return (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)


def check_error(
    err: BaseException,
    code: int,
    *,
    builtin: type[OSError] | None = None,
    step: str | None = None,
    path: Path | str | None = None,
) -> SessionFileError:
    """The common shape of every failure: a SessionFileError that is also the builtin class
    open() raises for `code`, chained to the original error, with its errno and filename."""
    assert isinstance(err, SessionFileError), repr(err)
    assert isinstance(err, OSError)
    expected = builtin if builtin is not None else type(OSError(code, "x"))
    assert isinstance(err, expected), (type(err).__mro__, expected)
    assert type(err) is SessionFileError or expected is not OSError
    assert err.errno == code, (err.errno, errno.errorcode.get(err.errno or 0))
    assert err.cause is err.__cause__
    assert isinstance(err.cause, OSError) and err.cause.errno == code
    assert err.strerror == err.cause.strerror
    assert err.filename == err.cause.filename
    assert err.operation == "atomic write"
    if step is not None:
        assert err.step == step
    if path is not None:
        assert err.path == os.fsdecode(path)
    return err


def raises(form: Form, path: Any, *chunks: Any, **kwargs: Any) -> SessionFileError:
    with pytest.raises(SessionFileError) as caught:
        form.write(path, *chunks, **kwargs)
    return caught.value


def open_error(path: Any, mode: str = "w") -> OSError:
    """What open() itself raises in the same situation (the oracle)."""
    with pytest.raises(OSError) as caught:
        open(path, mode).close()
    return caught.value


# -- the target and its directory ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["w", "wb", "a", "r+", "x"])
def test_target_is_a_directory(tmp_path: Path, form: Form, mode: str) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "inside").write_bytes(b"keep")
    theirs = open_error(target, mode)
    code = errno.EEXIST if mode == "x" else errno.EISDIR
    assert theirs.errno == code
    err = raises(form, target, mode=mode)
    check_error(err, code, builtin=type(theirs), step="open", path=target)
    assert listing(tmp_path) == ["d"]
    assert listing(target) == ["inside"]
    assert (target / "inside").read_bytes() == b"keep"


def test_target_is_a_directory_atomic_write(tmp_path: Path, form: Form) -> None:
    with pytest.raises(IsADirectoryError) as caught:
        form.write_all(tmp_path, b"x")
    check_error(caught.value, errno.EISDIR, path=tmp_path)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("mode", ["w", "a", "x"])
def test_parent_directory_missing(tmp_path: Path, form: Form, mode: str) -> None:
    target = tmp_path / "missing" / "t"
    assert isinstance(open_error(target, mode), FileNotFoundError)
    err = raises(form, target, "x", mode=mode)
    check_error(err, errno.ENOENT, builtin=FileNotFoundError, path=target)
    assert listing(tmp_path) == []


def test_parent_directory_missing_atomic_write(tmp_path: Path, form: Form) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        form.write_all(tmp_path / "missing" / "t", "x")
    check_error(caught.value, errno.ENOENT)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("mode", ["w", "x", "r+"])
def test_parent_is_a_file(tmp_path: Path, form: Form, mode: str) -> None:
    parent = tmp_path / "file"
    parent.write_bytes(b"old")
    assert isinstance(open_error(parent / "t", mode), NotADirectoryError)
    err = raises(form, parent / "t", mode=mode)
    check_error(err, errno.ENOTDIR, builtin=NotADirectoryError, path=parent / "t")
    assert parent.read_bytes() == b"old"
    assert listing(tmp_path) == ["file"]


@pytest.mark.parametrize("base", ["n" * 256, "\u00e9" * 128, "z" * 1000])
def test_basename_longer_than_the_file_system_allows(tmp_path: Path, form: Form, base: str) -> None:
    target = tmp_path / base
    theirs = open_error(target)
    assert theirs.errno == errno.ENAMETOOLONG
    err = raises(form, target, "x")
    check_error(err, errno.ENAMETOOLONG, builtin=type(theirs), path=target)
    assert type(err) is SessionFileError  # ENAMETOOLONG has no builtin subclass
    assert listing(tmp_path) == []


# -- file systems that say no ----------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize(("name", "mode"), [("target", "w"), ("target", "a"), ("new", "w")])
def test_read_only_file_system(readonly_fs: Path, form: Form, name: str, mode: str) -> None:
    target = readonly_fs / name
    theirs = open_error(target, mode)
    assert theirs.errno == errno.EROFS
    err = raises(form, target, "new", mode=mode)
    check_error(err, errno.EROFS, builtin=type(theirs), step="create temp", path=target)
    assert (readonly_fs / "target").read_bytes() == b"old"
    assert listing(readonly_fs) == ["target"]


def fill(directory: Path) -> None:
    """Fill the file system under `directory` up to its last byte: a real ENOSPC next."""
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


@needs_root
@pytest.mark.parametrize("mode", ["wb", "ab", "r+b"])
def test_no_space_big_write_inside_the_block(tiny_fs: Path, form: Form, mode: str) -> None:
    target = tiny_fs / "target"
    target.write_bytes(b"old")
    err = raises(form, target, b"x" * (128 * 1024), mode=mode)
    check_error(err, errno.ENOSPC, builtin=OSError, step="write", path=target)
    assert target.read_bytes() == b"old"
    assert listing(tiny_fs) == ["target"]


@needs_root
@pytest.mark.parametrize("mode", ["w", "wb", "x"])
def test_no_space_small_write_fails_at_the_commit_flush(
    tiny_fs: Path, form: Form, mode: str
) -> None:
    """100 bytes sit in the buffer until the commit flushes them: that is where ENOSPC comes."""
    target = tiny_fs / ("target" if mode != "x" else "new")
    (tiny_fs / "target").write_bytes(b"old")
    fill(tiny_fs)
    data = "y" * 100
    err = raises(form, target, data.encode() if "b" in mode else data, mode=mode)
    check_error(err, errno.ENOSPC, builtin=OSError, step="flush", path=target)
    assert (tiny_fs / "target").read_bytes() == b"old"
    assert listing(tiny_fs) == ["filler", "target"]


@needs_root
def test_no_space_copying_the_target_for_append(tiny_fs: Path, form: Form) -> None:
    """'a' starts the temp as a copy: a target bigger than the free space fails at the copy."""
    target = tiny_fs / "target"
    old = os.urandom(40 * 1024)
    target.write_bytes(old)
    err = raises(form, target, b"more", mode="ab")
    check_error(err, errno.ENOSPC, builtin=OSError, step="copy", path=target)
    assert target.read_bytes() == old
    assert listing(tiny_fs) == ["target"]


@needs_root
@pytest.mark.parametrize("mode", ["w", "a"])
def test_no_space_at_create(tiny_fs: Path, form: Form, mode: str) -> None:
    """No inode left (remount with nr_inodes = what is in use): creating the temp fails."""
    target = tiny_fs / "target"
    target.write_bytes(b"old")
    vfs = os.statvfs(tiny_fs)
    used = vfs.f_files - vfs.f_ffree
    done = subprocess.run(
        ["mount", "-o", f"remount,nr_inodes={used}", str(tiny_fs)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot limit tmpfs inodes: {done.stderr.decode().strip()}")
    assert open_error(tiny_fs / "other").errno == errno.ENOSPC
    err = raises(form, target, "new", mode=mode)
    check_error(err, errno.ENOSPC, builtin=OSError, step="create temp", path=target)
    # The create's own filename, as a full path (not the name relative to the dir fd).
    assert os.path.dirname(err.filename) == str(tiny_fs)
    assert TEMP_RE.fullmatch(os.path.basename(err.filename))
    assert target.read_bytes() == b"old"
    assert listing(tiny_fs) == ["target"]


@needs_root
def test_no_space_atomic_write(tiny_fs: Path, form: Form) -> None:
    target = tiny_fs / "target"
    target.write_bytes(b"old")
    with pytest.raises(SessionFileError) as caught:
        form.write_all(target, b"z" * (128 * 1024))
    check_error(caught.value, errno.ENOSPC, builtin=OSError, path=target)
    assert target.read_bytes() == b"old"
    assert listing(tiny_fs) == ["target"]


# -- permission denied, for a user without privileges ----------------------------------------------

# Runs in a child process as root, then drops to nobody. The interpreter and the library's
# lazy imports (logging, asyncio, random) live where nobody may not read, so one write of
# each form runs before the privileges go.
_CHILD = r"""
import asyncio, json, os, sys
import atomicfile
from atomicfile import AtomicFile, SessionFileError, atomic_write, atomic_write_async

args = json.loads(sys.argv[1])
warm = args["warm"]

def run_async(fn):
    kind = args["form"]
    if kind == "asyncio":
        asyncio.run(fn())
    elif kind == "trio":
        import trio
        trio.run(fn)
    else:
        import anyio
        anyio.run(fn, backend=kind.partition("-")[2])

atomic_write(os.path.join(warm, "w"), "x")
if args["form"] != "sync":
    run_async(lambda: atomic_write_async(os.path.join(warm, "w"), "x"))
try:
    atomic_write(os.path.join(warm, "missing", "w"), "x")
except OSError:
    pass

async def write_async(target, mode):
    async with AtomicFile(target, mode) as f:
        await f.write("new")

def write(target, mode):
    if args["form"] != "sync":
        run_async(lambda: write_async(target, mode))
    else:
        with AtomicFile(target, mode) as f:
            f.write("new")

def attempt(fn):
    try:
        fn()
    except OSError as e:
        return {
            "mro": [c.__name__ for c in type(e).__mro__],
            "errno": e.errno,
            "step": getattr(e, "step", None),
            "chained": getattr(e, "cause", None) is e.__cause__ is not None,
        }
    return None

os.setgroups([])
os.setgid(args["uid"])
os.setuid(args["uid"])
assert os.geteuid() == args["uid"]
print(json.dumps({
    "open": attempt(lambda: open(args["target"], args["mode"]).close()),
    "ours": attempt(lambda: write(args["target"], args["mode"])),
}))
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A root-owned 0o755 directory that other users can reach (pytest's tmp_path lives
    under a 0o700 directory)."""
    where = Path(tempfile.mkdtemp(prefix="atomicfile-test-"))
    try:
        where.chmod(0o755)
        yield where
    finally:
        shutil.rmtree(where)


def as_nobody(form: Form, target: Path, mode: str, warm: Path) -> dict[str, Any]:
    args = {"form": form.kind, "target": str(target), "mode": mode, "uid": NOBODY,
            "warm": str(warm)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_denied(result: dict[str, Any]) -> None:
    assert result["open"] is not None and result["open"]["errno"] == errno.EACCES
    ours = result["ours"]
    assert ours is not None, "the write succeeded"
    assert ours["errno"] == errno.EACCES
    assert ours["mro"][:2] == ["SessionPermissionError", "SessionFileError"]
    assert "PermissionError" in ours["mro"]
    assert ours["chained"]


@pytest.mark.skipif(not IS_ROOT, reason="dropping to another user needs root")
@pytest.mark.parametrize("mode", ["w", "a", "x"])
def test_permission_denied_in_a_root_owned_directory(
    tmp_path: Path, public_dir: Path, form: Form, mode: str
) -> None:
    result = as_nobody(form, public_dir / "new", mode, tmp_path)
    assert_denied(result)
    assert result["ours"]["step"] == "create temp"
    assert listing(public_dir) == []


@pytest.mark.skipif(not IS_ROOT, reason="dropping to another user needs root")
@pytest.mark.parametrize("mode", ["w", "a", "r+"])
def test_permission_denied_for_a_root_owned_target(
    tmp_path: Path, public_dir: Path, form: Form, mode: str
) -> None:
    target = public_dir / "owned"
    target.write_bytes(b"old")
    target.chmod(0o644)
    assert_denied(as_nobody(form, target, mode, tmp_path))
    assert target.read_bytes() == b"old"
    assert listing(public_dir) == ["owned"]


@pytest.mark.skipif(not IS_ROOT, reason="dropping to another user needs root")
@pytest.mark.parametrize("mode", ["w", "a", "r+"])
def test_permission_denied_for_a_read_only_file_of_ones_own(
    tmp_path: Path, public_dir: Path, form: Form, mode: str
) -> None:
    """The directory is writable, so a rename could replace the file; but open() refuses a
    0o444 file, and so does the atomic write: read-only stays protected."""
    mine = public_dir / "mine"
    mine.mkdir()
    os.chown(mine, NOBODY, NOBODY)
    target = mine / "ro"
    target.write_bytes(b"old")
    os.chown(target, NOBODY, NOBODY)
    target.chmod(0o444)
    assert_denied(as_nobody(form, target, mode, tmp_path))
    assert target.read_bytes() == b"old"
    assert listing(mine) == ["ro"]


# -- exceptions from the user's block --------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [ValueError("user"), TypeError("not JSON serializable"), KeyboardInterrupt(), SystemExit(3),
     RuntimeError("user")],
    ids=lambda e: type(e).__name__,
)  # fmt: skip
@pytest.mark.parametrize("existing", [True, False])
def test_user_exception_propagates_unchanged(
    tmp_path: Path, form: Form, exc: BaseException, existing: bool
) -> None:
    target = tmp_path / "t"
    if existing:
        target.write_bytes(b"old")
    with pytest.raises(type(exc)) as caught:
        form.write(target, "new", raise_=exc)
    assert caught.value is exc
    assert exc.__cause__ is None
    assert not isinstance(exc, SessionFileError)
    assert listing(tmp_path) == (["t"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old"


def test_json_dump_type_error_propagates_unchanged(tmp_path: Path) -> None:
    target = tmp_path / "cfg.json"
    target.write_text('{"ok": true}')
    with pytest.raises(TypeError, match="not JSON serializable"), AtomicFile(target) as f:
        json.dump({"bad": object()}, f)
    assert target.read_text() == '{"ok": true}'
    assert listing(tmp_path) == ["cfg.json"]


def test_writing_the_wrong_type_propagates_unchanged(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        form.write(target, b"bytes into text")
    with pytest.raises(TypeError):
        form.write(target, "text into bytes", mode="wb")
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize(
    "cause",
    [OSError(errno.EIO, "boom"), PermissionError(errno.EACCES, "no", "/some/where")],
    ids=["EIO", "EACCES"],
)  # fmt: skip
def test_os_error_inside_the_block_is_a_session_file_error(
    tmp_path: Path, form: Form, cause: OSError
) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    err = raises(form, target, "new", raise_=cause)
    assert err.__cause__ is cause and err.cause is cause
    assert err.errno == cause.errno and err.filename == cause.filename
    assert err.step == "write" and err.path == str(target)
    assert isinstance(err, type(cause))
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize(
    "cause", [OSError("no errno"), io.UnsupportedOperation("not readable")], ids=repr
)
def test_os_error_without_errno_inside_the_block_propagates_unchanged(
    tmp_path: Path, form: Form, cause: OSError
) -> None:
    """An OSError with no errno is Python's own (io.UnsupportedOperation is also a
    ValueError), not a file system error: it passes through as the same object."""
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with pytest.raises(type(cause)) as info:
        form.write(target, "new", raise_=cause)
    assert info.value is cause
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_reading_a_write_only_file_is_the_same_error_as_open_gives(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with pytest.raises(io.UnsupportedOperation), AtomicFile(target, "w") as f:
        f.read()
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_session_file_error_inside_the_block_is_not_rewrapped(tmp_path: Path, form: Form) -> None:
    """A failed atomic write nested in another block keeps its own path and step."""
    inner_target = tmp_path / "missing" / "inner"

    def inner(f: Any) -> None:
        atomic_write(inner_target, "x")

    (tmp_path / "t").write_bytes(b"old")
    err = raises(form, tmp_path / "t", "new", inside=inner)
    assert err.path == str(inner_target)
    assert isinstance(err, FileNotFoundError)
    assert (tmp_path / "t").read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


# -- the protocol's own steps failing --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["w", "x", "a"])
def test_fsync_fails(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # A mock: a real EIO from fsync needs failing hardware (or a device-mapper error target
    # this test can't rely on). Patched on atomicfile._fs, where the commit looks it up.
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomicfile._fs, "fsync_file", failing_fsync)
    target = tmp_path / "t"
    if mode != "x":
        target.write_bytes(b"old")
    err = raises(form, target, "new", mode=mode)
    assert len(calls) == 1  # fired, and never retried (SPEC 2)
    check_error(err, errno.EIO, builtin=OSError, step="fsync", path=target)
    assert type(err) is SessionFileError
    if mode == "x":
        assert listing(tmp_path) == []
    else:
        assert target.read_bytes() == b"old"
        assert listing(tmp_path) == ["t"]


def test_fsync_fails_atomic_write(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mock, as above: EIO from fsync can't be provoked for real.
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomicfile._fs, "fsync_file", failing_fsync)
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with pytest.raises(SessionFileError) as caught:
        form.write_all(target, b"new")
    assert calls
    check_error(caught.value, errno.EIO, step="fsync")
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


@needs_root
def test_rename_fails_for_real_busy_target(tmp_path: Path, form: Form) -> None:
    """A target that is a mount point can't be renamed over: a real EBUSY at the rename."""
    d, other = tmp_path / "d", tmp_path / "other"
    d.mkdir()
    other.mkdir()
    target = d / "target"
    target.write_bytes(b"old")
    (other / "src").write_bytes(b"mounted")
    done = subprocess.run(["mount", "--bind", str(other / "src"), str(target)],
                          capture_output=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot bind-mount: {done.stderr.decode().strip()}")
    try:
        err = raises(form, target, "new")
        check_error(err, errno.EBUSY, builtin=OSError, step="rename", path=target)
        assert target.read_bytes() == b"mounted"
        assert listing(d) == ["target"]
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert target.read_bytes() == b"old"
    assert (other / "src").read_bytes() == b"mounted"
    assert listing(d) == ["target"]


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EBUSY, errno.EACCES])
def test_rename_fails(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # A mock of os.replace that fails only for our temp -> target (EXDEV can't happen for
    # real with the temp beside the target; the real EBUSY case is the test above).
    target = tmp_path / "t"
    target.write_bytes(b"old")
    real_replace = os.replace
    fired: list[tuple[str, str]] = []

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        # The store renames names relative to the directory's fd (renameat).
        s, t = os.fsdecode(src), os.fsdecode(dst)
        dir_fd = kwargs.get("src_dir_fd")
        if (
            t == "t"
            and TEMP_RE.fullmatch(s)
            and kwargs.get("dst_dir_fd") == dir_fd
            and is_dir_fd_of(dir_fd, tmp_path)
        ):
            fired.append((s, t))
            raise OSError(code, os.strerror(code), s, None, t)  # as renameat reports it
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    err = raises(form, target, "new")
    assert len(fired) == 1
    check_error(err, code, step="rename", path=target)
    # The error names the full paths, not the bare names given to renameat.
    assert err.filename == str(tmp_path / fired[0][0])
    assert err.filename2 == str(target)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_no_clobber_link_fails(tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch) -> None:
    # A mock of the x-mode publish step (renameat2(RENAME_NOREPLACE), or its link(2)
    # fallback, refusing: e.g. EPERM on a file system without hard links), patched where
    # the store looks it up.
    fired: list[str] = []

    def rename_noreplace(src: str, dst: str, dir_fd: int | None) -> bool:
        assert is_dir_fd_of(dir_fd, tmp_path)
        fired.append(dst)
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), src, None, dst)

    monkeypatch.setattr(atomicfile._fs, "rename_noreplace", rename_noreplace)
    err = raises(form, tmp_path / "t", "new", mode="x")
    assert fired == ["t"]
    check_error(err, errno.EPERM, builtin=PermissionError, step="rename")
    assert err.filename2 == str(tmp_path / "t")
    assert listing(tmp_path) == []


def test_no_clobber_falls_back_to_link_without_renameat2(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where libc has no renameat2, 'x' links the temp to the target (EEXIST if it
    appeared) and unlinks the temp name: same outcome, no temp left."""
    monkeypatch.setattr(atomicfile._fs, "_renameat2", None)
    monkeypatch.setattr(atomicfile._fs, "_load_renameat2", lambda: False)
    form.write(tmp_path / "t", "new", mode="x")
    assert (tmp_path / "t").read_text() == "new"
    assert os.stat(tmp_path / "t").st_nlink == 1
    assert listing(tmp_path) == ["t"]
    other = tmp_path / "o"
    err = raises(form, other, "late", mode="x", inside=lambda f: other.write_text("first"))
    check_error(err, errno.EEXIST, builtin=FileExistsError, step="rename")
    assert other.read_text() == "first"
    assert listing(tmp_path) == ["o", "t"]


# -- cleanup failing -------------------------------------------------------------------------------


@pytest.mark.parametrize("original", ["user", "fsync"])
def test_cleanup_failure_is_logged_and_the_original_error_surfaces(
    tmp_path: Path,
    form: Form,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    original: str,
) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    real_unlink = os.unlink
    refused: list[str] = []

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        # A mock: unlink of a file we own in our own directory doesn't fail on demand.
        # The store unlinks the bare temp name relative to the directory's fd.
        p = os.fsdecode(path)
        if is_dir_fd_of(kwargs.get("dir_fd"), tmp_path) and TEMP_RE.fullmatch(p):
            refused.append(str(tmp_path / p))
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), p)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    user_error = ValueError("the user's own error")
    if original == "fsync":
        # A mock, as in test_fsync_fails: EIO from fsync can't be provoked for real.
        def failing_fsync(fd: int) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(atomicfile._fs, "fsync_file", failing_fsync)
    caplog.set_level(logging.DEBUG, logger="atomicfile")
    try:
        if original == "user":
            with pytest.raises(ValueError) as caught:
                form.write(target, "new", raise_=user_error)
            assert caught.value is user_error
        else:
            err = raises(form, target, "new")
            check_error(err, errno.EIO, step="fsync")
        assert len(refused) == 1
        warnings = [r for r in caplog.records if r.getMessage() == "Failed to clean up temp file"]
        assert len(warnings) == 1
        record: Any = warnings[0]
        assert record.levelno == logging.WARNING
        assert record.name == "atomicfile"
        assert record.temp_path == refused[0]
        assert record.cleanup_error_code == "EPERM"
        assert target.read_bytes() == b"old"
        # The one thing a failed cleanup leaves: the temp it could not remove.
        assert listing(tmp_path) == sorted(["t", os.path.basename(refused[0])])
    finally:
        for leftover in temps(tmp_path):
            real_unlink(tmp_path / leftover)
    assert listing(tmp_path) == ["t"]


# -- after the rename ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["w", "x"])
def test_directory_fsync_fails_after_the_rename(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Policy: once the rename is done the new content is in place and can't be taken
    back (the temp name is gone; restoring the old bytes would be a second, non-atomic
    write). But the rename may not survive a power loss, so the write is reported as
    failed: SessionFileError at step "fsync directory", with the target holding the NEW
    content and no temp left."""

    # A mock: a directory fsync returning EIO needs failing hardware.
    calls: list[bool] = []

    def failing_fsync_dir(fd: int) -> bool:
        calls.append(is_dir_fd_of(fd, tmp_path))  # the directory's fd, bound at open
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomicfile._fs, "fsync_dir", failing_fsync_dir)
    target = tmp_path / "t"
    if mode == "w":
        target.write_bytes(b"old")
    err = raises(form, target, "new", mode=mode)
    assert calls == [True]
    check_error(err, errno.EIO, builtin=OSError, step="fsync directory", path=target)
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["t"]


def test_directory_fsync_unsupported_is_not_a_failure(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A file system that can't fsync a directory (fsync_dir returns False): the write
    succeeds, with a warning."""
    monkeypatch.setattr(atomicfile._fs, "fsync_dir", lambda fd: False)
    form.write(tmp_path / "t", "new")
    assert (tmp_path / "t").read_text() == "new"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "Directory fsync not possible"
    ]
    assert listing(tmp_path) == ["t"]


def test_durable_false_never_fsyncs(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any) -> None:
        raise AssertionError("fsync with durable=False")

    monkeypatch.setattr(atomicfile._fs, "fsync_file", forbidden)
    monkeypatch.setattr(atomicfile._fs, "fsync_dir", forbidden)
    form.write(tmp_path / "t", "new", durable=False)
    assert (tmp_path / "t").read_text() == "new"
    assert listing(tmp_path) == ["t"]


def test_parent_directory_removed_during_the_block(tmp_path: Path, form: Form) -> None:
    d = tmp_path / "d"
    d.mkdir()
    target = d / "t"
    target.write_bytes(b"old")
    err = raises(form, target, "new", inside=lambda f: shutil.rmtree(d))
    check_error(err, errno.ENOENT, builtin=FileNotFoundError, step="rename", path=target)
    assert listing(tmp_path) == []
