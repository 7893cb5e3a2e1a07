"""Issue 9, "Secrets and privileges": each test performs the attack as a hostile local user
(a real second uid, real sticky directories, real ACLs) and asserts the safe outcome."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import atomicfile._naming
from atomicfile import AtomicFile, SessionFileError, atomic_write

from conftest import Form, listing

sys.path.insert(0, str(Path(__file__).parent))
from _attack import (
    NOBODY,
    as_user,
    attacker_loop,
    exchange,
    needs_root,
    shared_dir,
    sysctl,
)

__all__ = ["shared_dir"]  # a fixture, used by name

SECRET = b"root's secret: 42\n"


def _secret(where: Path) -> Path:
    """A root-only 0600 file outside the attacker's directory."""
    where.mkdir(mode=0o700, exist_ok=True)
    secret = where / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return secret


def _user_dir(shared: Path, name: str = "home") -> Path:
    home = shared / name
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    return home


# -- 1. follow_symlinks=False with 'a'/'r+' ---------------------------------------------


@needs_root
@pytest.mark.parametrize("mode", ["a", "r+", "ab", "r+b"])
def test_no_follow_append_to_a_planted_link_is_eloop(
    shared_dir: Path, form: Form, mode: str
) -> None:
    """A root daemon appends to ~user/app.log, which the user made a link to a 0600 secret:
    ELOOP, as open() with O_NOFOLLOW; the secret is never copied anywhere."""
    secret = _secret(shared_dir / "root")
    home = _user_dir(shared_dir)
    assert as_user(lambda: os.symlink(secret, home / "app.log")) == 0
    data = "line\n" if "b" not in mode else b"line\n"
    with pytest.raises(SessionFileError) as caught:
        form.write(home / "app.log", data, mode=mode, follow_symlinks=False)
    assert caught.value.errno == errno.ELOOP
    assert isinstance(caught.value, OSError)
    assert listing(home) == ["app.log"]
    assert os.readlink(home / "app.log") == str(secret)
    assert secret.read_bytes() == SECRET


@needs_root
def test_cli_append_no_follow_is_eloop(shared_dir: Path) -> None:
    secret = _secret(shared_dir / "root")
    home = _user_dir(shared_dir)
    assert as_user(lambda: os.symlink(secret, home / "app.log")) == 0
    done = subprocess.run(
        [sys.executable, "-m", "atomicfile", "write", "--append", "--no-follow", home / "app.log"],
        input=b"more\n",
        capture_output=True,
    )
    assert done.returncode == 1
    assert b"ELOOP" in done.stderr or b"symbolic links" in done.stderr
    assert listing(home) == ["app.log"]
    assert secret.read_bytes() == SECRET


# -- 2. 'a'/'r+' check-then-copy race ----------------------------------------------------


def _readable_content(path: Path) -> bytes:
    """What the file at `path` shows to others, read without following a link (the attacker
    keeps swapping the names: root reading by path would follow one to the secret)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""  # a symlink or gone: no content of its own
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        return f.read() if stat.S_ISREG(st.st_mode) and st.st_mode & 0o044 else b""


@needs_root
@pytest.mark.parametrize("follow", [False, True])
def test_append_races_a_file_link_exchange_never_leaks(shared_dir: Path, follow: bool) -> None:
    """The user swaps app.log (their file) and a link to root's secret with
    renameat2(RENAME_EXCHANGE) in a loop while root appends: whatever each append does, no
    file the user can read ever holds the secret."""
    secret = _secret(shared_dir / "root")
    home = _user_dir(shared_dir)

    def plant() -> None:
        (home / "app.log").write_bytes(b"user log\n")
        (home / "app.log").chmod(0o644)
        os.symlink(secret, home / "decoy")

    assert as_user(plant) == 0
    outcomes: dict[str, int] = {}
    with attacker_loop(lambda: exchange(home, "app.log", "decoy")):
        for _ in range(1500):
            try:
                atomic_write(home / "app.log", "root line\n", mode="a", follow_symlinks=follow)
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except SessionFileError as err:
                name = errno.errorcode.get(err.errno or 0, "?")
                outcomes[name] = outcomes.get(name, 0) + 1
            for name in os.listdir(home):
                assert SECRET not in _readable_content(home / name), (name, outcomes)
    assert outcomes.get("ok", 0) > 0, outcomes  # the attack did not just block every write
    if follow:
        # Following is allowed: the secret may have been appended to in place, under 0600.
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert secret.read_bytes().startswith(SECRET)
    else:
        assert secret.read_bytes() == SECRET
    assert [n for n in listing(home) if n.endswith(".tmp")] == []


# -- 3. the kernel's protections for sticky world-writable directories -------------------


@pytest.fixture
def sticky(shared_dir: Path) -> Path:
    """A sticky world-writable directory like /tmp (owned by root)."""
    where = shared_dir / "tmp"
    where.mkdir()
    where.chmod(0o1777)
    return where


@needs_root
def test_protected_symlinks_refuses_as_open_does(sticky: Path, form: Form) -> None:
    victim = _secret(sticky.parent / "root")
    assert as_user(lambda: os.symlink(victim, sticky / "report.txt")) == 0
    with sysctl("fs.protected_symlinks", "1"):
        with pytest.raises(PermissionError) as theirs:
            open(sticky / "report.txt", "w").close()
        with pytest.raises(SessionFileError) as ours:
            form.write(sticky / "report.txt", "root's report")
    assert ours.value.errno == theirs.value.errno == errno.EACCES
    assert isinstance(ours.value, PermissionError)
    assert victim.read_bytes() == SECRET
    assert listing(sticky) == ["report.txt"]
    assert os.readlink(sticky / "report.txt") == str(victim)


@needs_root
def test_protected_regular_refuses_as_open_does(sticky: Path, form: Form) -> None:
    assert as_user(lambda: (sticky / "report.txt").write_bytes(b"planted")) == 0
    with sysctl("fs.protected_regular", "1"):
        with pytest.raises(PermissionError):
            open(sticky / "report.txt", "w").close()
        with pytest.raises(SessionFileError) as ours:
            form.write(sticky / "report.txt", "root's report")
    assert ours.value.errno == errno.EACCES
    assert (sticky / "report.txt").read_bytes() == b"planted"
    assert listing(sticky) == ["report.txt"]


@needs_root
def test_a_refused_write_calls_no_permissions_hook(sticky: Path) -> None:
    """The refusal comes before anything the write would do: a permissions hook is never
    asked about a file open() refuses, and no temp is left."""
    assert as_user(lambda: (sticky / "report.txt").write_bytes(b"planted")) == 0
    asked: list[object] = []

    def hook(path: Path, current: os.stat_result | None) -> int:
        asked.append(path)
        return 0o600

    with sysctl("fs.protected_regular", "1"), pytest.raises(SessionFileError) as ours:
        atomic_write(sticky / "report.txt", "root's report", permissions=hook)
    assert ours.value.errno == errno.EACCES
    assert asked == []
    assert (sticky / "report.txt").read_bytes() == b"planted"
    assert listing(sticky) == ["report.txt"]


@needs_root
def test_sticky_dir_never_hands_content_to_another_user(sticky: Path, form: Form) -> None:
    """Without fs.protected_regular the write goes ahead, but the new file is root's: the
    user who planted the old one does not get root's content under their uid."""

    def plant() -> None:
        (sticky / "report.txt").write_bytes(b"planted")
        (sticky / "report.txt").chmod(0o600)

    assert as_user(plant) == 0
    with sysctl("fs.protected_regular", "0"):
        form.write(sticky / "report.txt", "root's report")
    st = os.stat(sticky / "report.txt")
    assert (sticky / "report.txt").read_text() == "root's report"
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert listing(sticky) == ["report.txt"]


# -- 4. the group and the ACL ------------------------------------------------------------

OTHER_GID = 4321  # a group the writer is not in


@needs_root
def test_group_that_cant_be_kept_gets_no_access(shared_dir: Path, form: Form) -> None:
    """A 0640 file of group G rewritten by its owner, who is not in G: the new file's group
    is the owner's, and it gets none of G's bits."""
    home = _user_dir(shared_dir)
    target = home / "conf"
    target.write_text("old")
    os.chown(target, NOBODY, OTHER_GID)
    target.chmod(0o640)
    assert as_user(lambda: form.write(target, "new")) == 0
    st = os.stat(target)
    assert target.read_text() == "new"
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert listing(home) == ["conf"]


needs_acl = pytest.mark.needs("setfacl")


def _getfacl(path: Path) -> list[str]:
    out = subprocess.run(
        ["getfacl", "-cpnE", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return sorted(line for line in out.splitlines() if line and not line.startswith("#"))


def _setfacl(*args: str) -> None:
    done = subprocess.run(["setfacl", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"setfacl failed here: {done.stderr.strip()}")


@needs_acl
def test_access_acl_is_kept(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    target.chmod(0o640)
    _setfacl("-m", "u:1234:r--,g::---,m::r--", str(target))
    before = _getfacl(target)
    assert "user:1234:r--" in before
    form.write(target, "new")
    assert target.read_text() == "new"
    assert _getfacl(target) == before
    assert listing(tmp_path) == ["t"]


@needs_acl
def test_directory_default_acl_does_not_regrant(tmp_path: Path, form: Form) -> None:
    """The directory's default ACL grants user 1234; the file's own ACL was narrowed to drop
    them: the rewrite keeps the file's ACL, not the inherited one."""
    d = tmp_path / "d"
    d.mkdir()
    _setfacl("-d", "-m", "u:1234:rw-", str(d))
    target = d / "t"
    target.write_text("old")
    _setfacl("-x", "u:1234", str(target))
    before = _getfacl(target)
    assert not any("1234" in line for line in before)
    form.write(target, "new")
    assert not any("1234" in line for line in _getfacl(target))
    # A new file in that directory inherits the default ACL, as with open().
    form.write(d / "fresh", "x")
    assert "user:1234:rw-" in _getfacl(d / "fresh")
    assert listing(d) == ["fresh", "t"]


@needs_acl
def test_acl_that_cant_be_kept_narrows_the_mode(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """MOCKED: a file system that refuses the ACL on the new file can't be made here with
    ACLs on the old one in the same directory, so setxattr of the ACL is made to fail
    (EOPNOTSUPP). The mode must then narrow to what the owning group really had."""
    target = tmp_path / "t"
    target.write_text("old")
    target.chmod(0o640)
    _setfacl("-m", "u:1234:r--,g::---,m::r--", str(target))
    real = os.setxattr
    fired: list[str] = []

    def setxattr(path: object, name: str, *args: object, **kw: object) -> None:
        if name == "system.posix_acl_access":
            fired.append(name)
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        real(path, name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "setxattr", setxattr)
    form.write(target, "new")
    assert fired == ["system.posix_acl_access"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # group::--- masked: no group bits
    assert "Could not keep the target's access ACL: mode narrowed" in caplog.messages
    assert listing(tmp_path) == ["t"]


# -- 5. set-id bits ------------------------------------------------------------------------

STAFF = 50


@needs_root
def test_setuid_dropped_when_the_owner_changes(shared_dir: Path, form: Form) -> None:
    """A 04775 root:staff file rewritten by a staff member: the new file is theirs, so it
    must not be set-uid to them (open() plus a write leaves 0775 too)."""
    home = shared_dir / "bin"
    home.mkdir()
    os.chown(home, 0, STAFF)
    home.chmod(0o775)
    target = home / "tool"
    target.write_bytes(b"#!/bin/sh\n")
    os.chown(target, 0, STAFF)
    target.chmod(0o4775)
    code = as_user(lambda: form.write(target, b"#!/bin/sh\necho\n", mode="wb"), groups=[STAFF])
    assert code == 0
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (NOBODY, STAFF)
    assert stat.S_IMODE(st.st_mode) == 0o775
    assert listing(home) == ["tool"]


@needs_root
def test_setgid_dropped_when_the_group_changes(shared_dir: Path, form: Form) -> None:
    home = _user_dir(shared_dir)
    target = home / "tool"
    target.write_bytes(b"x")
    os.chown(target, NOBODY, OTHER_GID)
    target.chmod(0o2755)
    assert as_user(lambda: form.write(target, b"y", mode="wb")) == 0
    st = os.stat(target)
    assert st.st_gid == NOBODY
    assert stat.S_IMODE(st.st_mode) == 0o705


# -- 6. temp names nobody can predict -----------------------------------------------------


def _unshift_right(y: int, shift: int) -> int:
    result = y
    for _ in range(32 // shift + 1):
        result = y ^ (result >> shift)
    return result


def _unshift_left(y: int, shift: int, mask: int) -> int:
    result = y
    for _ in range(32 // shift + 1):
        result = y ^ ((result << shift) & mask)
    return result & 0xFFFFFFFF


def _untemper(y: int) -> int:
    """The Mersenne Twister's state word behind one 32-bit output."""
    y = _unshift_right(y, 18)
    y = _unshift_left(y, 15, 0xEFC60000)
    y = _unshift_left(y, 7, 0x9D2C5680)
    return _unshift_right(y, 11)


def test_names_cannot_be_rebuilt_from_observed_names(tmp_path: Path) -> None:
    """The attack that worked against a Mersenne Twister: 312 observed 64-bit tokens give its
    624-word state, which predicts the next names. It must predict nothing now."""
    import random

    seen: list[int] = []
    for _ in range(312):
        af = AtomicFile(tmp_path / "t")
        af.open()
        assert af.temp_path is not None
        seen.append(int(os.path.basename(af.temp_path)[-20:-4], 16))
        af.discard()
    # getrandbits(64) is two 32-bit words, low word first.
    words = [w for t in seen for w in (t & 0xFFFFFFFF, t >> 32)]
    clone = random.Random()
    clone.setstate((3, (*(_untemper(w) for w in words[-624:]), 624), None))
    predicted = {clone.getrandbits(64) for _ in range(50)}
    upcoming = {atomicfile._naming.token() for _ in range(50)}
    assert not predicted & upcoming
    # The same attack does work on the generator the library used before: the test can fail.
    victim = random.Random(7)
    old = [victim.getrandbits(64) for _ in range(312)]
    words = [w for t in old for w in (t & 0xFFFFFFFF, t >> 32)]
    clone.setstate((3, (*(_untemper(w) for w in words), 624), None))
    assert clone.getrandbits(64) == victim.getrandbits(64)
    assert listing(tmp_path) == []


def test_many_taken_names_do_not_stop_a_writer(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker who pre-created 150 of the next names (the old budget was 100) only delays
    the write: the retry budget is tempfile's 10,000."""
    target = tmp_path / "t"
    taken = list(range(1, 151))
    for token in taken:
        (tmp_path / atomicfile._naming.temp_name("t", token)).write_bytes(b"trap")
    queue = iter(taken)
    real = atomicfile._naming.token
    monkeypatch.setattr(atomicfile._naming, "token", lambda: next(queue, None) or real())
    form.write(target, "new")
    assert target.read_text() == "new"
    assert len(listing(tmp_path)) == 151
