"""What some tests need from the machine, checked in one place. Not a test module.

A test that needs a system program or library says so with a marker,
`@pytest.mark.needs("strace")` (conftest.py applies it), or, inside a fixture, with
`need("fuse")`. Where the piece is missing or unusable the test is skipped with a reason
that names the Debian package to install (`needs strace: apt-get install strace`); with
`ATOMICFILE_REQUIRE_ALL=1` (CI) it fails instead, so that nothing CI should run is skipped
in silence.

"Usable", not "exists": each program is run once (a bare machine may have a file at the
usual path that can't be executed, such as /dev/null bind-mounted over it), and libfuse is
loaded the way the tests' FUSE helper loads it (mfusepy, which honours FUSE_LIBRARY_PATH).

`stage_for_other_user()` prepares what a child running as another uid needs (a copy of the
package and an interpreter that uid can run) for the tests that drop privileges.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Set by .ci/run: a missing piece fails the tests that need it instead of skipping them.
#: ATOMICFILE_POWERLOSS_REQUIRED=1, the older name, still does the same for the power-loss
#: tests.
REQUIRE_ALL = "ATOMICFILE_REQUIRE_ALL"

#: What LazyFS's build needs (tests/powerloss/lazyfs/build.sh), as Debian packages.
LAZYFS_BUILD_PACKAGES = ("fuse3", "libfuse3-dev", "cmake", "g++", "make", "libspdlog-dev",
                         "libtoml11-dev")  # fmt: skip


def required() -> bool:
    return os.environ.get(REQUIRE_ALL) == "1"


def unavailable(reason: str, *, required_too: bool = False) -> None:
    """Skip the running test with `reason`, or fail it under ATOMICFILE_REQUIRE_ALL=1 (or
    when `required_too`)."""
    if required() or required_too:
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: here every test must run)", pytrace=False)
    pytest.skip(reason)


def _runs(*command: str) -> str | None:
    """None when `command` can be executed (whatever its exit status), else why not."""
    path = shutil.which(command[0])
    if path is None:
        return "not found"
    if not os.path.isfile(path):
        return f"{path} is not a regular file"
    try:
        subprocess.run([path, *command[1:]], capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        return f"{path}: {err}"
    return None


def _program(name: str, *probe_args: str, package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        why = _runs(name, *probe_args)
        return None if why is None else f"needs {name} ({why}): apt-get install {package}"

    return check


def _libfuse() -> str | None:
    """libfuse 3 loaded through mfusepy (the FUSE helper's loader), in a child process."""
    done = subprocess.run([sys.executable, "-c", "import mfusepy"], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    if "No module named" in last:
        return "needs mfusepy: pip install -e '.[test]'"
    return f"needs libfuse3 ({last}): apt-get install fuse3"


def _fuse() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse: modprobe fuse (in a container: --device /dev/fuse)"
    return _libfuse() or _program("fusermount3", "-V", package="fuse3")()


def _headers(*found: tuple[str, str]) -> str | None:
    absent = [package for header, package in found if not Path(header).is_file()]
    return f"needs headers from {' '.join(absent)}" if absent else None


def _lazyfs_build() -> str | None:
    headers = (("/usr/include/fuse3/fuse.h", "libfuse3-dev"),
               ("/usr/include/spdlog/spdlog.h", "libspdlog-dev"),
               ("/usr/include/toml.hpp", "libtoml11-dev"))  # fmt: skip
    tools = [tool for tool in ("cmake", "g++", "make") if _runs(tool, "--version")]
    why = [_fuse(), f"no usable {' '.join(tools)}" if tools else None, _headers(*headers)]
    missing = [w for w in why if w]
    if not missing:
        return None
    return (f"LazyFS can't be built here ({'; '.join(missing)}): "
            f"apt-get install {' '.join(LAZYFS_BUILD_PACKAGES)}")  # fmt: skip


#: Every name `needs(...)` takes, and how it is checked.
CHECKS: dict[str, Callable[[], str | None]] = {
    "strace": _program("strace", "-V", package="strace"),
    "setfacl": _program("setfacl", "--version", package="acl"),
    "mkfs.ext4": _program("mkfs.ext4", "-V", package="e2fsprogs"),
    "mkfs.vfat": _program("mkfs.vfat", "--help", package="dosfstools"),
    "chromium": _program("chromium", "--version", package="chromium"),
    "fuse": _fuse,
    "lazyfs-build": _lazyfs_build,
}


@functools.cache
def missing(name: str) -> str | None:
    """Why `name` (a key of CHECKS) is not usable here, naming the package; None if it is."""
    return CHECKS[name]()


def need(*names: str) -> None:
    """Skip (or, under ATOMICFILE_REQUIRE_ALL=1, fail) the running test unless every one of
    `names` is usable."""
    for name in names:
        why = missing(name)
        if why:
            unavailable(why)


# -- another uid ------------------------------------------------------------------------


@dataclass(frozen=True)
class Staged:
    """What a child running as another uid runs: `python` (an interpreter that uid can
    execute, with a standard library it can read), with `env` (PYTHONPATH naming a
    world-readable copy of the package) and in `cwd`, that copy's directory: a `-c` child
    puts its working directory first on sys.path, and from the checkout it would import
    the checkout's package."""

    python: str
    env: dict[str, str]
    cwd: str


def _candidates() -> list[str]:
    found = [sys.executable, getattr(sys, "_base_executable", ""),
             os.path.join(sys.base_prefix, "bin", "python3"), shutil.which("python3") or "",
             "/usr/bin/python3", "/usr/local/bin/python3"]  # fmt: skip
    return [p for p in dict.fromkeys(found) if p and os.path.isfile(p)]


# Run as the uid from the start (what `setpriv --reuid` children do), and as root that
# changes its uid before importing anything (what scripts that call os.setuid do): both must
# import the staged package, every module it loads lazily, and the standard library's.
_PROBE = """\
import os, sys
if len(sys.argv) > 2:
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[2]))
assert sys.version_info >= (3, 10), sys.version
import importlib, pkgutil, atomicfile
assert atomicfile.__file__.startswith(sys.argv[1]), atomicfile.__file__
for m in pkgutil.iter_modules(atomicfile.__path__):
    try:
        importlib.import_module("atomicfile." + m.name)
    except ModuleNotFoundError as err:  # an optional package (trio, fsspec): not ours
        top = (err.name or "").partition(".")[0]
        if top == "atomicfile" or top in sys.stdlib_module_names:
            raise
import asyncio, ctypes, hashlib, json, logging, random, tempfile
print("ok")
"""


def stage_for_other_user(where: Path, uid: int) -> Staged | str:
    """Copy the package under `where` (made world-readable) and find an interpreter that
    `uid` can run with it; the Staged, or why there is none (a skip reason)."""
    import atomicfile

    if shutil.which("setpriv") is None:
        return "needs setpriv to run a child as another uid: apt-get install util-linux"
    package = Path(atomicfile.__file__).parent
    where.chmod(0o755)
    shutil.copytree(package, where / "atomicfile", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [where, *where.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    blocked = [p for p in where.parents if os.stat(p).st_mode & 0o001 == 0]
    if blocked:
        return f"uid {uid} can't enter {blocked[0]}, where the staged copy is"
    env = dict(os.environ, PYTHONPATH=str(where), PYTHONDONTWRITEBYTECODE="1")
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    tried = []
    for python in _candidates():
        for command in ([*setpriv, python, "-s", "-c", _PROBE, str(where)],
                        [python, "-s", "-c", _PROBE, str(where), str(uid)]):  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=where)
            if done.stdout.strip() != "ok":
                tried.append(f"{python}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
                break
        else:
            return Staged(python, env, str(where))
    return (f"uid {uid} can run no Python interpreter with the staged package (the checkout "
            f"or the interpreter lives where it can't read: {'; '.join(tried)})")  # fmt: skip


def staged_tmp() -> Path:
    """A fresh directory in the system's temporary directory (outside pytest's private
    0700 tree), for `stage_for_other_user`."""
    return Path(tempfile.mkdtemp(prefix="atomicfile-stage-"))
