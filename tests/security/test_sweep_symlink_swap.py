"""Issue 9, item 9: a user who owns a subdirectory swaps it for a symlink while root sweeps
the tree; root must never remove another user's live temp through that link.

The attacker keeps a decoy (an unlocked file with the same temp-shaped name as the victim's
live temp) in its real directory, and exchanges that directory with a symlink to the
victim's directory (renameat2 RENAME_EXCHANGE, so the name always exists) as fast as it can.
A sweep that checks one object and unlinks by path string can lock the decoy and then
unlink the victim's temp through the link; a sweep relative to directory descriptors opened
with O_NOFOLLOW never reaches the victim's directory at all.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicfile import clean_stale_temps

from conftest import IS_ROOT, listing
from helpers import Staged

ATTACKER = 65534
VICTIM = 65533
ROUNDS = 20_000

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="needs root to sweep as root and run two other users"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only"),
]

# The victim: a live atomic write (temp created and locked) by another user, held open until
# a line arrives on stdin. Modules the library loads lazily are imported before the uid
# change (the test's virtualenv need not be readable by that user).
VICTIM_WRITER = r"""
import hashlib, logging, os, random, sys
from atomicfile import AtomicFile
os.chdir(sys.argv[1])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[2]))
af = AtomicFile("data", "wb")
with af as f:
    f.write(b"victim's ")
    f.flush()
    print(os.path.basename(af.temp_path), flush=True)
    sys.stdin.readline()
    f.write(b"data")
"""

# The attacker, in directory `a` that it owns: `sub` is its real directory, with the decoy in
# it, and `swap` a symlink to the victim's directory. It watches the decoy's lock (a shared
# flock attempt that fails while the sweep holds its exclusive one): the moment the sweep
# holds it, between the sweep's checks and its unlink, it exchanges the two names
# (renameat2 RENAME_EXCHANGE, so `sub` always exists), and exchanges them back once the
# sweep let go. It recreates the decoy when the sweep removed it. Prints "ready" first.
ATTACKER_LOOP = r"""
import ctypes, fcntl, os, sys
a, victim_dir, decoy, uid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
os.setgid(uid)
os.setuid(uid)
a_fd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
os.mkdir("sub", dir_fd=a_fd)
os.symlink(victim_dir, "swap", dir_fd=a_fd)
real = os.open("sub", os.O_RDONLY | os.O_DIRECTORY, dir_fd=a_fd)

def exchange():
    if libc.renameat2(a_fd, b"sub", a_fd, b"swap", 2) != 0:  # RENAME_EXCHANGE
        raise OSError(ctypes.get_errno(), "renameat2")

def new_decoy():
    return os.open(decoy, os.O_CREAT | os.O_RDONLY, 0o644, dir_fd=real)

fd = new_decoy()
print("ready", flush=True)
swapped = False
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:  # the sweep holds the decoy: send its next step elsewhere
        if not swapped:
            exchange()
            swapped = True
        continue
    fcntl.flock(fd, fcntl.LOCK_UN)
    if swapped:
        exchange()
        swapped = False
    if os.fstat(fd).st_nlink == 0:
        os.close(fd)
        fd = new_decoy()
"""


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory under /tmp that the other users can reach (tmp_path's parent is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="atomicfile-sweep-swap-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_sweep_never_follows_a_directory_swapped_for_a_symlink(
    base: Path, other_user: Staged
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("the C library has no renameat2")
    tree = base / "tree"
    (tree / "a").mkdir(parents=True)
    os.chown(tree / "a", ATTACKER, ATTACKER)  # the attacker owns a directory in the tree
    victim_dir = base / "victim"
    victim_dir.mkdir(mode=0o755)
    os.chown(victim_dir, VICTIM, VICTIM)  # the attacker cannot write here

    victim = subprocess.Popen(  # the checkout may be where the victim's uid can't read
        [other_user.python, "-c", VICTIM_WRITER, str(victim_dir), str(VICTIM)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=other_user.env,
        cwd=other_user.cwd,
    )
    attacker: subprocess.Popen[bytes] | None = None
    try:
        assert victim.stdout is not None and victim.stdin is not None
        temp = victim.stdout.readline().decode().strip()  # created and locked
        assert temp, f"victim writer died: {victim.wait()}"
        assert listing(victim_dir) == [temp]

        attacker = subprocess.Popen(
            [sys.executable, "-c", ATTACKER_LOOP, str(tree / "a"), str(victim_dir), temp,
             str(ATTACKER)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert attacker.stdout is not None
        assert attacker.stdout.readline() == b"ready\n"

        # The real directory is named `sub`, or `swap` while exchanged.
        decoy_paths = {str(tree / "a" / name / temp) for name in ("sub", "swap")}
        decoys_removed = 0
        for _ in range(ROUNDS):
            removed = clean_stale_temps(tree, recursive=True)
            # Only the attacker's decoy, reached through its real directory, may go.
            assert set(removed) <= decoy_paths, removed
            decoys_removed += len(removed)
            assert listing(victim_dir) == [temp], "the victim's live temp was removed"
        # The race was run: the sweep did reach the real directory and sweep the decoy.
        assert decoys_removed > 0
    finally:
        if attacker is not None:
            attacker.kill()
            attacker.wait()
            assert attacker.stdout is not None
            attacker.stdout.close()
        victim.communicate(b"go\n", timeout=60)
    # The victim's write then commits as if nothing happened.
    assert victim.returncode == 0
    assert (victim_dir / "data").read_bytes() == b"victim's data"
    assert listing(victim_dir) == ["data"]
