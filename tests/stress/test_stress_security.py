"""Security: the temp file can't be hijacked, links behave as documented, private data is
never exposed under a wider mode, and writing through a symlink touches nothing else."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import atomicfile._naming

from conftest import Form, listing, temps

pytestmark = pytest.mark.stress

FIRST, SECOND = 0x0123456789ABCDEF, 0xFEDCBA9876543210


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the temp names predictable: `_naming.token()` returns FIRST, then SECOND, then
    more."""
    given: list[int] = []
    queue = iter([FIRST, SECOND, *range(1, 100)])

    def token() -> int:
        given.append(next(queue))
        return given[-1]

    monkeypatch.setattr(atomicfile._naming, "token", token)
    return given


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    mask = int(getattr(request, "param", 0o022))
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)


@pytest.mark.parametrize("victim_exists", [True, False], ids=["victim", "dangling"])
@pytest.mark.parametrize("how", ["block", "atomic_write", "x"])
def test_symlink_at_next_temp_name_never_redirects(
    tmp_path: Path, form: Form, tokens: list[int], victim_exists: bool, how: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    if victim_exists:
        victim.write_bytes(b"victim data")
        victim.chmod(0o644)
        before = victim.stat()
    target = work / "target"
    if how != "x":
        target.write_bytes(b"old")
    planted = work / f".target.{FIRST:016x}.tmp"
    os.symlink(victim, planted)

    if how == "block":
        form.write(target, "new")
    elif how == "atomic_write":
        form.write_all(target, "new")
    else:
        form.write(target, "new", mode="x")

    assert target.read_bytes() == b"new"
    assert not target.is_symlink()
    assert tokens[:2] == [FIRST, SECOND], "the clash must be retried under a new name"
    # The planted link is someone else's: left exactly as it was, and never followed.
    assert os.readlink(planted) == str(victim)
    assert listing(work) == sorted(["target", planted.name])
    if victim_exists:
        after = victim.stat()
        assert victim.read_bytes() == b"victim data"
        assert (after.st_ino, after.st_mode, after.st_mtime_ns, after.st_nlink) == (
            before.st_ino, before.st_mode, before.st_mtime_ns, before.st_nlink,
        )  # fmt: skip
    else:
        assert not victim.exists(), "O_CREAT through the dangling link created the victim"
    assert listing(tmp_path) == sorted(["work", *(["victim"] if victim_exists else [])])


def test_hard_link_to_target_keeps_old_content(tmp_path: Path, form: Form) -> None:
    """Documented behaviour: a replace gives the target a new inode, so other hard links to
    the old one keep the old content (open(path, "w") would have changed both)."""
    target = tmp_path / "target"
    target.write_bytes(b"old")
    other = tmp_path / "other"
    os.link(target, other)
    old_ino = target.stat().st_ino
    form.write(target, "new")
    assert target.read_bytes() == b"new"
    assert other.read_bytes() == b"old"
    assert other.stat().st_ino == old_ino != target.stat().st_ino
    assert other.stat().st_nlink == target.stat().st_nlink == 1
    assert listing(tmp_path) == ["other", "target"]


def _private_inside(seen: list[int], directory: Path) -> Any:
    def inside(f: IO[Any]) -> None:
        f.flush()  # the secret is in the temp file on disk now, not just in a buffer
        (temp,) = temps(directory)  # f.name is the target's name; the temp is beside it
        temp_path = directory / temp
        assert os.path.samestat(os.stat(temp_path), os.fstat(f.fileno()))
        assert os.path.getsize(temp_path) > 0
        seen.append(stat.S_IMODE(os.stat(temp_path).st_mode))
        seen.append(stat.S_IMODE(os.fstat(f.fileno()).st_mode))

    return inside


@pytest.mark.parametrize("umask", [0o022, 0o000], indirect=True, ids=["umask022", "umask0"])
def test_private_target_never_in_a_file_others_can_read(
    tmp_path: Path, form: Form, umask: int
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old secret")
    target.chmod(0o600)
    seen: list[int] = []
    form.write(target, "new secret", inside=_private_inside(seen, tmp_path))
    assert seen and all(mode & 0o077 == 0 for mode in seen), [oct(m) for m in seen]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"new secret"
    assert listing(tmp_path) == ["target"]


@pytest.mark.parametrize("umask", [0o022, 0o000], indirect=True, ids=["umask022", "umask0"])
def test_new_file_with_private_permissions_never_readable(
    tmp_path: Path, form: Form, umask: int
) -> None:
    target = tmp_path / "target"
    seen: list[int] = []
    form.write(target, "secret", inside=_private_inside(seen, tmp_path), permissions=0o600)
    assert seen and all(mode & 0o077 == 0 for mode in seen), [oct(m) for m in seen]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def _snapshot(directory: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry: kind, mode, link destination or bytes."""
    out: dict[str, tuple[Any, ...]] = {}
    for name in listing(directory):
        path = directory / name
        st = path.lstat()
        body = os.readlink(path) if path.is_symlink() else path.read_bytes()
        out[name] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), body)
    return out


def _link_setup(root: Path) -> tuple[Path, Path, Path]:
    inner, outer = root / "inner", root / "outer"
    inner.mkdir(parents=True)
    outer.mkdir()
    real = outer / "real"
    real.write_bytes(b"old content")
    real.chmod(0o640)
    (outer / "bystander").write_bytes(b"bystander")
    (inner / "neighbour").write_bytes(b"neighbour")
    os.symlink("../outer/real", inner / "target")
    return inner, outer, inner / "target"


def test_follow_symlinks_writes_through_like_open(tmp_path: Path, form: Form) -> None:
    """With follow_symlinks=True a link to a file in another directory is written through:
    the same result as open(link, "w") (content and mode of the file it points to, the link
    kept), and nothing else in either directory changes."""
    inner, outer, link = _link_setup(tmp_path / "atomic")
    inner2, outer2, link2 = _link_setup(tmp_path / "plain")
    with open(link2, "w") as f:
        f.write("new content")

    form.write(link, "new content", follow_symlinks=True)

    assert _snapshot(inner) == _snapshot(inner2)
    assert _snapshot(outer) == _snapshot(outer2)
    assert os.readlink(link) == "../outer/real"
    assert (outer / "real").read_bytes() == b"new content"
    assert stat.S_IMODE((outer / "real").stat().st_mode) == 0o640
