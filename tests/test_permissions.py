"""Permission bits, owner and group, symlinks and hard links (README "Permissions and
ownership")."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicfile import AtomicFile, SessionFileError

from conftest import IS_ROOT, Form, listing, needs_root, temps


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask() -> Iterator[Any]:
    """Sets the process umask for the test (`umask(0o077)`) and restores it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value: int) -> None:
        os.umask(value)

    try:
        yield set_umask
    finally:
        os.umask(old)


# -- the default ------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o000])
def test_new_file_gets_0o644_less_umask(tmp_path: Path, form: Form, umask: Any, mask: int) -> None:
    umask(mask)
    target = tmp_path / "new"
    form.write(target, "data")
    assert mode_of(target) == 0o644 & ~mask
    assert target.read_text() == "data"
    assert listing(tmp_path) == ["new"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_new_file_via_atomic_write(tmp_path: Path, form: Form, umask: Any, mask: int) -> None:
    umask(mask)
    form.write_all(tmp_path / "new", b"data")
    assert mode_of(tmp_path / "new") == 0o644 & ~mask
    assert listing(tmp_path) == ["new"]


@pytest.mark.parametrize(
    "mode",
    [
        0o600,
        0o640,
        0o755,
        0o444,
        pytest.param(0o000, marks=needs_root),
        pytest.param(0o4755, marks=needs_root),
        pytest.param(0o2750, marks=needs_root),
    ],
)
def test_existing_target_keeps_its_mode(tmp_path: Path, form: Form, umask: Any, mode: int) -> None:
    umask(0o077)  # the umask never applies to an existing file's mode
    target = tmp_path / "t"
    target.write_bytes(b"old")
    os.chmod(target, mode)
    if mode & 0o200 == 0 and not IS_ROOT:
        pytest.skip("a read-only file can't be rewritten by its non-root owner")
    form.write(target, "new")
    assert mode_of(target) == mode
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("file_mode", ["a", "r+", "w+"])
def test_existing_mode_kept_in_every_mode(tmp_path: Path, form: Form, file_mode: str) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    os.chmod(target, 0o640)
    form.write(target, "!", mode=file_mode)
    assert mode_of(target) == 0o640
    assert target.read_text() == {"a": "old!", "r+": "!ld", "w+": "!"}[file_mode]
    assert listing(tmp_path) == ["t"]


# -- explicit permissions ------------------------------------------------------------------


@pytest.mark.parametrize("perm", [0o600, 0o666, 0o000, 0o755, 0o640])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_explicit_int_applied_exactly(
    tmp_path: Path, form: Form, umask: Any, perm: int, existing: bool
) -> None:
    umask(0o022)  # 0o666 must come out 0o666 all the same
    target = tmp_path / "t"
    if existing:
        target.write_bytes(b"old")
        os.chmod(target, 0o644)
    form.write(target, "new", permissions=perm)
    assert mode_of(target) == perm
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["t"]


def test_explicit_int_via_atomic_write(tmp_path: Path, form: Form, umask: Any) -> None:
    umask(0o077)
    form.write_all(tmp_path / "t", "new", permissions=0o664)
    assert mode_of(tmp_path / "t") == 0o664
    assert listing(tmp_path) == ["t"]


@needs_root
def test_explicit_setuid_applied(tmp_path: Path, form: Form) -> None:
    form.write(tmp_path / "t", "new", permissions=0o4750)
    assert mode_of(tmp_path / "t") == 0o4750


class Hook:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, target: Any, current: Any) -> Any:
        self.calls.append((target, current))
        return self.result


def test_hook_new_file(tmp_path: Path, form: Form, umask: Any) -> None:
    umask(0o077)
    hook = Hook(0o654)
    target = tmp_path / "t"
    form.write(str(target), "new", permissions=hook)
    assert hook.calls == [(target, None)]
    ((path, _),) = hook.calls
    assert type(path) is type(Path())  # a pathlib.Path, whatever path type came in
    assert mode_of(target) == 0o654
    assert listing(tmp_path) == ["t"]


def test_hook_existing_file(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    os.chmod(target, 0o604)
    before = os.stat(target)
    hook = Hook(0o620)
    form.write(os.fsencode(target), b"new", mode="wb", permissions=hook)
    assert len(hook.calls) == 1
    path, current = hook.calls[0]
    assert isinstance(path, Path) and path == target
    assert isinstance(current, os.stat_result)
    assert (current.st_ino, current.st_dev, current.st_mode, current.st_size) == (
        before.st_ino, before.st_dev, before.st_mode, before.st_size)  # fmt: skip
    assert mode_of(target) == 0o620
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["t"]


def test_hook_called_once_per_write(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    hook = Hook(0o600)
    for i in range(3):
        form.write(target, str(i), permissions=hook)
    form.write_all(target, "last", permissions=hook)
    assert len(hook.calls) == 4
    assert [c is None for _, c in hook.calls] == [True, False, False, False]
    assert target.read_text() == "last"
    assert listing(tmp_path) == ["t"]


def test_hook_sees_the_real_file_behind_a_symlink(tmp_path: Path, form: Form) -> None:
    (tmp_path / "real").write_bytes(b"old")
    os.chmod(tmp_path / "real", 0o640)
    (tmp_path / "link").symlink_to("real")
    hook = Hook(0o600)
    form.write(tmp_path / "link", "new", permissions=hook)
    ((path, current),) = hook.calls
    assert path == tmp_path / "real"
    assert stat.S_ISREG(current.st_mode) and stat.S_IMODE(current.st_mode) == 0o640
    assert mode_of(tmp_path / "real") == 0o600


class HookFailed(Exception):
    pass


def test_hook_raising_propagates(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)

    def hook(target: Path, current: os.stat_result | None) -> int:
        raise HookFailed("no mode for you")

    with pytest.raises(HookFailed, match="no mode for you"):
        form.write(target, "new", permissions=hook)
    with pytest.raises(HookFailed):
        form.write_all(target, b"new", permissions=hook)
    assert target.read_bytes() == b"old"
    assert mode_of(target) == 0o640
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize(
    ("bad", "error"),
    [(-1, ValueError), (0o10000, ValueError), ("644", TypeError), (True, TypeError),
     (6.44, TypeError), (b"\x01", TypeError)],
)  # fmt: skip
def test_bad_permissions_before_any_io(tmp_path: Path, form: Form, bad: Any, error: Any) -> None:
    # A missing directory: an I/O attempt would give FileNotFoundError, not the error expected.
    with pytest.raises(error):
        form.write(tmp_path / "missing" / "t", "new", permissions=bad)
    with pytest.raises(error):
        form.write_all(tmp_path / "missing" / "t", "new", permissions=bad)
    with pytest.raises(error):
        AtomicFile(tmp_path / "t", permissions=bad)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("result", "error"),
    [("644", TypeError), (None, TypeError), (True, TypeError), (-1, ValueError),
     (0o10000, ValueError), (420.0, TypeError)],
)  # fmt: skip
def test_bad_hook_result_creates_nothing(
    tmp_path: Path, form: Form, result: Any, error: Any
) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    hook = Hook(result)
    with pytest.raises(error):
        form.write(target, "new", permissions=hook)
    assert len(hook.calls) == 1
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


# -- owner and group ------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("file_mode", ["w", "a", "r+"])
def test_existing_owner_and_group_kept(tmp_path: Path, form: Form, file_mode: str) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    os.chown(target, 1234, 1234)
    os.chmod(target, 0o640)
    form.write(target, "new", mode=file_mode)
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 1234, 0o640)
    assert target.read_text() == {"w": "new", "a": "oldnew", "r+": "new"}[file_mode]
    assert listing(tmp_path) == ["t"]


@needs_root
def test_owner_kept_with_setuid_bits(tmp_path: Path, form: Form) -> None:
    """chown clears set-id bits: the mode must be set after it."""
    target = tmp_path / "t"
    target.write_text("old")
    os.chown(target, 1234, 1234)
    os.chmod(target, 0o6755)
    form.write(target, "new")
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 1234, 0o6755)


@needs_root
def test_owner_kept_with_explicit_mode(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    os.chown(target, 1234, 4321)
    form.write(target, "new", permissions=0o600)
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o600)
    assert listing(tmp_path) == ["t"]


def test_new_file_owned_by_the_writer(tmp_path: Path, form: Form) -> None:
    form.write(tmp_path / "t", "new")
    st = os.stat(tmp_path / "t")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


# -- the temp is never more readable than the final mode -----------------------------------


def _temp_modes(form: Form, target: Path, **options: Any) -> list[int]:
    seen: list[int] = []

    def look(f: Any) -> None:
        (temp,) = temps(target.parent)  # beside the target (f.name is the target's name)
        st = os.stat(target.parent / temp)
        seen.append(stat.S_IMODE(st.st_mode))

    form.write(target, "secret", inside=look, **options)
    return seen


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_temp_no_wider_than_explicit_final(
    tmp_path: Path, form: Form, umask: Any, mask: int
) -> None:
    umask(mask)
    target = tmp_path / "t"
    (temp,) = _temp_modes(form, target, permissions=0o600)
    assert temp & ~0o600 == 0, oct(temp)
    assert mode_of(target) == 0o600
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_temp_no_wider_than_existing_target(
    tmp_path: Path, form: Form, umask: Any, mask: int
) -> None:
    umask(mask)
    target = tmp_path / "t"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    for file_mode in ("w", "a", "r+"):
        (temp,) = _temp_modes(form, target, mode=file_mode)
        assert temp & ~0o600 == 0, (file_mode, oct(temp))
        assert mode_of(target) == 0o600
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027])
def test_temp_no_wider_than_new_file_default(
    tmp_path: Path, form: Form, umask: Any, mask: int
) -> None:
    umask(mask)
    target = tmp_path / "t"
    (temp,) = _temp_modes(form, target)
    final = 0o644 & ~mask
    assert temp & ~final == 0, oct(temp)
    assert mode_of(target) == final


def test_temp_no_wider_than_hook_result(tmp_path: Path, form: Form, umask: Any) -> None:
    umask(0o000)
    target = tmp_path / "t"
    target.write_bytes(b"old")
    os.chmod(target, 0o666)
    (temp,) = _temp_modes(form, target, permissions=lambda path, current: 0o400)
    assert temp & ~0o400 == 0, oct(temp)
    assert mode_of(target) == 0o400


# -- symlinks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_write_through_symlink(tmp_path: Path, form: Form, how: str) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"old")
    os.chmod(real, 0o640)
    link = tmp_path / "link"
    pointer = "real" if how == "relative" else str(real)
    link.symlink_to(pointer)
    seen: list[list[str]] = []
    form.write(link, "new", inside=lambda f: seen.append(temps(tmp_path)))
    ((temp,),) = seen  # one temp, beside the real file
    assert temp.startswith(".real.")
    assert link.is_symlink() and os.readlink(link) == pointer
    assert real.read_bytes() == b"new"
    assert mode_of(real) == 0o640
    assert listing(tmp_path) == ["link", "real"]


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_write_through_symlink_into_another_directory(tmp_path: Path, form: Form, how: str) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    (here / "neighbour").write_bytes(b"n")
    (there / "other").write_bytes(b"o")
    real = there / "real"
    real.write_bytes(b"old")
    pointer = "../there/real" if how == "relative" else str(real)
    (here / "link").symlink_to(pointer)
    seen: list[tuple[list[str], list[str]]] = []
    form.write(here / "link", "new", inside=lambda f: seen.append((temps(here), temps(there))))
    ((in_here, (temp,)),) = seen
    assert in_here == []  # beside the real file: same file system
    assert temp.startswith(".real.")
    assert real.read_bytes() == b"new"
    assert os.readlink(here / "link") == pointer
    assert listing(here) == ["link", "neighbour"]
    assert listing(there) == ["other", "real"]
    assert (here / "neighbour").read_bytes() == b"n"
    assert (there / "other").read_bytes() == b"o"


def test_write_through_chain_of_symlinks(tmp_path: Path, form: Form) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "real").write_bytes(b"old")
    (tmp_path / "hop").symlink_to("sub/real")
    (tmp_path / "link").symlink_to("hop")
    form.write(tmp_path / "link", "new", mode="a")
    assert (tmp_path / "sub" / "real").read_bytes() == b"oldnew"
    assert os.readlink(tmp_path / "link") == "hop"
    assert os.readlink(tmp_path / "hop") == "sub/real"
    assert listing(tmp_path) == ["hop", "link", "sub"]
    assert listing(tmp_path / "sub") == ["real"]


@pytest.mark.parametrize("where", ["same", "other"])
def test_dangling_symlink_creates_its_target(
    tmp_path: Path, form: Form, umask: Any, where: str
) -> None:
    umask(0o022)
    (tmp_path / "d").mkdir()
    pointer = "real" if where == "same" else "d/real"
    (tmp_path / "link").symlink_to(pointer)
    form.write(tmp_path / "link", "new")
    real = tmp_path / pointer
    assert real.read_text() == "new"
    assert mode_of(real) == 0o644
    assert os.readlink(tmp_path / "link") == pointer
    # open() does the same: it creates the file the link points to.
    assert sorted(os.listdir(real.parent)) == (["d", "link", "real"] if where == "same"
                                                 else ["real"])  # fmt: skip


def test_no_follow_replaces_the_link(tmp_path: Path, form: Form) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"old")
    os.chmod(real, 0o600)
    link = tmp_path / "link"
    link.symlink_to("real")
    form.write(link, "new", follow_symlinks=False)
    assert not link.is_symlink() and link.is_file()
    assert link.read_bytes() == b"new"
    assert real.read_bytes() == b"old"
    assert mode_of(real) == 0o600
    assert listing(tmp_path) == ["link", "real"]


def test_no_follow_replaces_a_dangling_link(tmp_path: Path, form: Form) -> None:
    link = tmp_path / "link"
    link.symlink_to("nowhere")
    form.write_all(link, b"new", follow_symlinks=False)
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert listing(tmp_path) == ["link"]


@pytest.mark.parametrize("dangling", [False, True], ids=["live", "dangling"])
@pytest.mark.parametrize("follow", [True, False], ids=["follow", "nofollow"])
def test_x_mode_on_symlink_is_file_exists(
    tmp_path: Path, form: Form, dangling: bool, follow: bool
) -> None:
    if not dangling:
        (tmp_path / "real").write_bytes(b"old")
    (tmp_path / "link").symlink_to("real")
    before = listing(tmp_path)
    with pytest.raises(FileExistsError) as info:
        form.write(tmp_path / "link", "new", mode="x", follow_symlinks=follow)
    assert isinstance(info.value, SessionFileError)
    assert info.value.errno == errno.EEXIST
    assert listing(tmp_path) == before
    assert os.readlink(tmp_path / "link") == "real"
    if not dangling:
        assert (tmp_path / "real").read_bytes() == b"old"


def test_hard_link_keeps_old_content(tmp_path: Path, form: Form) -> None:
    """Documented behaviour: the rename gives the name a new inode, so other hard links to
    the old inode keep the old content (as with any atomic replace)."""
    target = tmp_path / "t"
    target.write_bytes(b"old")
    os.link(target, tmp_path / "hard")
    assert os.stat(target).st_nlink == 2
    form.write(target, "new")
    assert target.read_bytes() == b"new"
    assert (tmp_path / "hard").read_bytes() == b"old"
    assert os.stat(target).st_nlink == 1
    assert os.stat(tmp_path / "hard").st_nlink == 1
    assert listing(tmp_path) == ["hard", "t"]


@needs_root
def test_owner_refused_never_fails_the_write() -> None:
    """A writer that may not give the file back to its owner (not root: chown refused with
    EPERM) still writes it; it keeps the group it is a member of, and the refusal is logged
    as a warning. Real: a forked child drops to uid/gid 4321 (member of group 1234)."""
    import json
    import shutil
    import tempfile
    import warnings

    top = tempfile.mkdtemp(prefix="atomicfile-owner-")  # tmp_path is 0o700: not for uid 4321
    try:
        os.chmod(top, 0o777)
        target = os.path.join(top, "t")
        with open(target, "w") as f:
            f.write("old")
        os.chown(target, 1234, 1234)
        os.chmod(target, 0o666)
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                import logging

                os.close(read)
                os.setgroups([1234])
                os.setgid(4321)
                os.setuid(4321)
                seen: list[Any] = []

                class Keep(logging.Handler):
                    def emit(self, record: logging.LogRecord) -> None:
                        seen.append([record.levelname, record.getMessage(),
                                     getattr(record, "error_code", None)])  # fmt: skip

                logger = logging.Logger("child", logging.DEBUG)
                logger.addHandler(Keep())
                with AtomicFile(target, logger=logger) as f:
                    f.write("new")
                st = os.stat(target)
                result = [st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), seen]
                os.write(write, json.dumps(result).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            out = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, out
        uid, gid, mode, seen = json.loads(out)
        assert (uid, gid, mode) == (4321, 1234, 0o666)
        assert ["WARNING", "Could not keep the target's owner", "EPERM"] in seen
        assert not any(level == "ERROR" for level, _, _ in seen)
        with open(target) as f:
            assert f.read() == "new"
        assert listing(top) == ["t"]
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize(
    ("links", "entry", "error", "code"),
    [
        ({"loop1": "loop2", "loop2": "loop1"}, "loop1", OSError, errno.ELOOP),
        ({"todir": "dir"}, "todir", IsADirectoryError, errno.EISDIR),
        ({"into": "missing/x"}, "into", FileNotFoundError, errno.ENOENT),
    ],
    ids=["loop", "to-directory", "into-missing-directory"],
)
def test_symlink_errors_as_open_gives_them(
    tmp_path: Path, form: Form, links: dict[str, str], entry: str, error: Any, code: int
) -> None:
    (tmp_path / "dir").mkdir()
    for name, pointer in links.items():
        (tmp_path / name).symlink_to(pointer)
    before = listing(tmp_path)
    with pytest.raises(OSError) as plain:
        open(tmp_path / entry, "w")  # noqa: SIM115 - what open() itself raises
    assert plain.value.errno == code
    with pytest.raises(error) as info:
        form.write(tmp_path / entry, "new")
    assert isinstance(info.value, SessionFileError)
    assert info.value.errno == code
    assert listing(tmp_path) == before
    assert listing(tmp_path / "dir") == []
    for name, pointer in links.items():
        assert os.readlink(tmp_path / name) == pointer


def test_no_follow_gives_the_new_file_the_default_mode(
    tmp_path: Path, form: Form, umask: Any
) -> None:
    """The link itself is replaced: the mode of the file it pointed to is not the link's."""
    umask(0o027)
    real = tmp_path / "real"
    real.write_bytes(b"old")
    os.chmod(real, 0o600)
    (tmp_path / "link").symlink_to("real")
    hook = Hook(0o640)
    form.write(tmp_path / "link", "new", follow_symlinks=False)
    assert mode_of(tmp_path / "link") == 0o644 & ~0o027
    form.write(tmp_path / "link2", "new")  # control: a plain new file, same mode
    assert mode_of(tmp_path / "link2") == 0o644 & ~0o027
    (tmp_path / "link3").symlink_to("real")
    form.write(tmp_path / "link3", "new", follow_symlinks=False, permissions=hook)
    assert hook.calls == [(tmp_path / "link3", None)]
    assert mode_of(tmp_path / "link3") == 0o640
    assert real.read_bytes() == b"old" and mode_of(real) == 0o600
    assert listing(tmp_path) == ["link", "link2", "link3", "real"]
