"""Tools for performing attacks for real: an unprivileged user in a forked child, shared
sticky directories, kernel protections switched on for one test."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

NOBODY = 65534
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="the attacker is a real second user: needs root"
)


def _drop(uid: int, gid: int, groups: list[int]) -> None:
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)


def as_user(
    fn: Callable[[], object], uid: int = NOBODY, gid: int = NOBODY, groups: list[int] | None = None
) -> int:
    """Run `fn` in a forked child as `uid`; its exit status (0 when `fn` returned)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _drop(uid, gid, groups or [])
            fn()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@contextlib.contextmanager
def attacker_loop(
    step: Callable[[], object], uid: int = NOBODY, gid: int = NOBODY
) -> Iterator[int]:
    """A child, dropped to `uid`, calling `step()` in a loop until the block ends; it signals
    readiness through a pipe before its first step, so the block starts under attack."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            _drop(uid, gid, [])
            os.write(ready_w, b"1")
            os.close(ready_w)
            while True:
                try:
                    step()
                except OSError:
                    pass
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory reachable by every user, outside pytest's private 0700 tmp tree."""
    path = Path(tempfile.mkdtemp(prefix="afsec-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def sysctl(name: str, value: str) -> Iterator[None]:
    """Set /proc/sys/<name> for the block (skips the test where it can't be set)."""
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        old = path.read_text().strip()
        path.write_text(value)
    except OSError as err:
        pytest.skip(f"cannot set {name}: {err}")
    try:
        yield
    finally:
        path.write_text(old)


_libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2


def exchange(directory: Path, a: str, b: str) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names in one step, as the attacker does."""
    da = os.fsencode(directory / a)
    db = os.fsencode(directory / b)
    if _libc.renameat2(-100, da, -100, db, RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
