"""Durability order, read from the system calls a real write makes (strace).

A child process (`_stress_child.py trace`) does one warm-up write (first-use imports, the
PRNG's seeding), then `stat()`s a path that does not exist, does the write under test, and
`stat()`s a second such path. Those two marker calls bound the region of the trace that
belongs to the write, whatever Python or the dynamic loader do around it, and on any thread
(the async forms write from a worker thread). The trace is parsed into calls in entry order;
`<unfinished ...>` / `<... resumed>` pairs are joined per thread.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _stress_util import CHILD

import atomicfile

pytestmark = pytest.mark.stress

STRACE = shutil.which("strace")
needs_strace = pytest.mark.needs("strace")  # skipped naming the package (tests/helpers.py)
TRACED = (
    "trace=%file,%desc,fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,unlinkat,"
    "fchmod,fchown,flock,openat,close"
)
SYNCS = {"fsync", "fdatasync", "sync_file_range", "syncfs", "sync", "msync"}
RENAMES = {"rename", "renameat", "renameat2"}
LINKS = {"link", "linkat"}
UNLINKS = {"unlink", "unlinkat"}
OPENS = {"open", "openat", "openat2", "creat"}
# The system calls of one small durable `atomic_write`, measured on CPython 3.11 / Linux
# x86_64 (test_syscalls_of_one_small_durable_write, test_syscalls_of_one_small_durable_rewrite).
# A new file (13):
#   openat dir (bound once, first), fstatat(dirfd, target, AT_SYMLINK_NOFOLLOW),
#   openat(dirfd, temp), flock (the sweep lock), fstat (library: a sweep that removed the
#   name between create and lock shows as st_nlink 0), fstat + lseek (open() wrapping the fd;
#   the library passes open()'s default buffer size itself, so open() skips its isatty
#   ioctl), write, fsync, renameat(dirfd, temp, dirfd, target), fsync dir, close temp, close
#   dir.
# A rewrite of an existing file adds llistxattr (the old file's ACL, SELinux label and user.*
# attributes, kept on the new one) = 14. The permission check open() would make costs no call
# for the writer's own owner-writable file: the temp's owner (from the fstat above) is who
# the file system takes the writer for; other files ask geteuid (and access()). (Hand-written
# mkstemp + fdopen + os.replace + directory fsync: 12 by the same count, 8 of them the
# protocol's own.)
# Memory management calls (mmap, brk...) are not counted: they come from Python's allocator.
NEW_FILE_SYSCALLS = [
    "openat", "newfstatat", "openat", "flock", "newfstatat", "newfstatat", "lseek", "write",
    "fsync", "renameat", "fsync", "close", "close",
]  # fmt: skip
REWRITE_SYSCALLS = [
    "openat", "newfstatat", "llistxattr", "openat", "flock", "newfstatat",
    "newfstatat", "lseek", "write", "fsync", "renameat", "fsync", "close", "close",
]  # fmt: skip


@dataclass
class Call:
    pid: int
    name: str
    args: list[str]
    ret: int | None
    err: str | None
    line: str
    #: The path arguments, names given relative to a directory fd resolved against the
    #: path that fd was opened with (see `resolve_paths`).
    paths: list[str] | None = None


_LINE = re.compile(r"^(?:(\d+)\s+)?(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?|0x[0-9a-f]+)(?:\s+(E[A-Z0-9]+))?")


def _split_args(text: str) -> list[str]:
    """Split strace's argument list at top-level commas (not inside "...", {}, [] or ())."""
    args, depth, quoted, escaped, start = [], 0, False, False, 0
    for i, ch in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail:
        args.append(tail)
    return args


def parse_trace(text: str) -> list[Call]:
    """Calls in the order they were entered; a call split by another thread's call
    (`<unfinished ...>` ... `<... name resumed>`) is joined and keeps its entry position."""
    slots: list[Call | None] = []
    pending: dict[int, tuple[int, str]] = {}
    for raw in text.splitlines():
        m = _LINE.match(raw)
        assert m is not None
        pid, body = int(m.group(1) or 0), m.group(2)
        if body.startswith(("+++", "---")):
            continue
        if body.endswith("<unfinished ...>"):
            pending[pid] = (len(slots), body[: -len("<unfinished ...>")].rstrip())
            slots.append(None)
            continue
        resumed = re.match(r"^<\.\.\. (\w+) resumed>\s?(.*)$", body)
        if resumed:
            if pid not in pending:
                continue  # began before the trace did
            index, head = pending.pop(pid)
            slots[index] = _call(pid, head + resumed.group(2), raw)
            continue
        slots.append(_call(pid, body, raw))
    return [c for c in slots if c is not None]


def _call(pid: int, body: str, raw: str) -> Call | None:
    m = _CALL.match(body)
    if m is None:
        return None  # e.g. "exit_group(0) = ?" variants, or a line strace cut short
    ret = m.group(3)
    # umask(2) returns a mode, which strace prints in octal ("022").
    base = 8 if ret.startswith("0") and ret[1:2].isdigit() else 0
    value = None if ret == "?" else int(ret, base)
    return Call(pid, m.group(1), _split_args(m.group(2)), value, m.group(4), raw)


def _path(arg: str) -> str:
    assert arg.startswith('"') and arg.endswith('"'), arg
    return arg[1:-1]


def _path_args(call: Call) -> list[str]:
    if call.paths is not None:
        return call.paths
    return [_path(a) for a in call.args if a.startswith('"')]


def resolve_paths(calls: list[Call]) -> None:
    """Set each call's `paths`: a name after a directory fd argument (the *at() calls:
    `openat(3, ".t.x.tmp", ...)`, `renameat(3, a, 3, b)`) becomes the full path of that
    directory, as opened earlier in the trace, joined with the name. One process: the
    fd table is shared by its threads."""
    opened: dict[str, str] = {}
    for call in calls:
        if call.name == "close" and call.args:
            opened.pop(call.args[0], None)
        if call.name not in _PATH_CALLS:
            continue  # read/write buffers are quoted too: not paths
        paths = []
        for i, arg in enumerate(call.args):
            if not (arg.startswith('"') and arg.endswith('"')):
                continue
            name = _path(arg)
            before = call.args[i - 1] if i else ""
            if name and not name.startswith("/") and before in opened:
                name = os.path.join(opened[before], name)
            paths.append(name)
        call.paths = paths
        if call.name in OPENS and call.ret is not None and call.ret >= 0 and paths:
            opened[str(call.ret)] = paths[0]


_PATH_CALLS = OPENS | RENAMES | LINKS | UNLINKS | {
    "stat", "lstat", "newfstatat", "fstatat64", "statx", "readlink", "readlinkat",
    "access", "faccessat", "faccessat2", "mkdir", "mkdirat", "rmdir", "fchmodat", "fchownat",
    "utimensat", "getxattr", "lgetxattr", "listxattr", "llistxattr",
}  # fmt: skip


def run_traced(
    tmp_path: Path, *, full: bool = False, **options: Any
) -> tuple[list[Call], dict[str, Any]]:
    """Trace one write in a child; return the calls between the two markers."""
    assert STRACE is not None  # the tests that call this are marked needs_strace
    work = tmp_path / "dir"
    work.mkdir(exist_ok=True)
    args: dict[str, Any] = {
        "umask": 0o022,
        "durable": True,
        "permissions": None,
        "api": "atomic_write",
        "mode": "w",
        "target": str(work / "target"),
        "warmup": str(tmp_path / "warmup"),
        "begin": str(tmp_path / "marker-begin-does-not-exist"),
        "end": str(tmp_path / "marker-end-does-not-exist"),
        **options,
    }
    out = tmp_path / "strace.out"
    filters = [] if full else ["-e", TRACED]
    cmd = [STRACE, "-f", "-qq", "-s", "4096", *filters, "-o", str(out), sys.executable]
    import json

    done = subprocess.run(
        [*cmd, str(CHILD), "trace", json.dumps(args)], capture_output=True, timeout=120
    )
    if done.returncode and b"ptrace" in done.stderr.lower():
        pytest.skip(f"ptrace is not permitted here: {done.stderr.decode().strip()}")
    assert done.returncode == 0, done.stderr.decode()
    ready = done.stdout.decode().split()
    assert ready[:2] == ["ready", atomicfile.__file__], ready
    calls = parse_trace(out.read_text(errors="replace"))
    resolve_paths(calls)
    marks = [
        i
        for i, c in enumerate(calls)
        if c.name in ("stat", "newfstatat", "statx", "lstat")
        and any(p in (args["begin"], args["end"]) for p in _path_args(c))
    ]
    assert len(marks) == 2, f"markers not found in the trace: {marks}"
    return calls[marks[0] + 1 : marks[1]], args


def _index(calls: list[Call], pred: Any, start: int = 0, what: str = "") -> int:
    for i in range(start, len(calls)):
        if pred(calls[i]):
            return i
    raise AssertionError(f"no {what} in the trace after call {start}:\n" + _dump(calls))


def _dump(calls: list[Call]) -> str:
    return "\n".join(c.line for c in calls if c.name not in ("epoll_wait",))


def _temp_open(calls: list[Call], target: str) -> tuple[int, Call]:
    temp = re.compile(
        re.escape(os.path.dirname(target)) + r"/\." + re.escape(os.path.basename(target))
        + r"\.[0-9a-f]{16}\.tmp$"
    )  # fmt: skip
    i = _index(
        calls,
        lambda c: c.name in OPENS and any(temp.match(p) for p in _path_args(c)),
        what="create of the temp file",
    )
    return i, calls[i]


def _flags(call: Call) -> set[str]:
    flag_arg = next(a for a in call.args if re.match(r"^O_[A-Z_|]+", a))
    return set(flag_arg.split("|"))


def _check_durable_order(calls: list[Call], args: dict[str, Any], final: int) -> dict[str, int]:
    target = args["target"]
    directory = os.path.dirname(target)
    # The target's directory is opened once, first; every later name is relative to it.
    i_dir = _index(
        calls,
        lambda c: c.name in OPENS and _path_args(c) == [directory] and c.ret is not None
        and c.ret >= 0,
        what="open of the directory",
    )  # fmt: skip
    dfd = calls[i_dir].ret
    assert "O_DIRECTORY" in _flags(calls[i_dir])
    i_open, opened = _temp_open(calls, target)
    assert i_dir < i_open, "the directory is bound before the temp is created"
    assert opened.args[0] == str(dfd), "the temp is created relative to the directory fd"
    temp = next(p for p in _path_args(opened) if p.endswith(".tmp"))
    flags = _flags(opened)
    assert {"O_CREAT", "O_EXCL", "O_NOFOLLOW"} <= flags, opened.line
    create_mode = int(opened.args[-1], 8)
    assert create_mode & ~final == 0, f"temp created wider ({create_mode:o}) than {final:o}"
    fd = opened.ret
    assert fd is not None and fd >= 0, opened.line
    tid = opened.pid

    def on_fd(names: set[str]) -> Any:
        return lambda c: c.name in names and c.args[:1] == [str(fd)]

    i_close = _index(calls, on_fd({"close"}), i_open + 1, what="close of the temp")
    i_sync = _index(calls, on_fd(SYNCS), i_open + 1, what="fsync of the temp")
    assert i_sync < i_close, "the temp's fd must be fsynced before it is closed"
    assert calls[i_sync].pid == tid and calls[i_sync].ret == 0
    chmods = [i for i in range(i_open, i_close) if on_fd({"fchmod"})(calls[i])]
    for i in chmods:
        assert i < i_sync, "the mode must be set before the data is synced:\n" + _dump(calls)

    if args["mode"] == "x":
        # renameat2(RENAME_NOREPLACE): no window between a check and the rename.
        publish = _index(
            calls,
            lambda c: c.name == "renameat2" and _path_args(c) == [temp, target]
            and "RENAME_NOREPLACE" in c.args[-1],
            what="renameat2(RENAME_NOREPLACE)",
        )  # fmt: skip
        assert not [c for c in calls if c.name in LINKS], "x mode links only without renameat2"
        assert not [c for c in calls if c.name in RENAMES and "NOREPLACE" not in c.line], (
            "x mode must never rename over the target"
        )
    else:
        publish = _index(
            calls, lambda c: c.name in RENAMES and _path_args(c) == [temp, target], what="rename"
        )
    assert not [c for c in calls if c.name in UNLINKS and temp in _path_args(c)], (
        "the temp name must never be unlinked once renamed"
    )
    assert calls[publish].ret == 0
    assert calls[publish].args[0] == calls[publish].args[2] == str(dfd), calls[publish].line
    assert i_sync < publish, "the temp must be fsynced before it is renamed:\n" + _dump(calls)

    i_dsync = _index(
        calls, lambda c: c.name in SYNCS and c.args[:1] == [str(dfd)], publish + 1,
        what="fsync of the directory after the rename",
    )  # fmt: skip
    assert calls[i_dsync].ret == 0
    _index(calls, lambda c: c.name == "close" and c.args == [str(dfd)], i_dsync + 1,
           what="close of the directory")  # fmt: skip
    reopened = [
        c.line for c in calls[i_dir + 1 :] if c.name in OPENS and _path_args(c) == [directory]
    ]
    assert reopened == [], "the directory is opened once, not again at the end"
    return {"open": i_open, "fsync": i_sync, "publish": publish, "dir fsync": i_dsync}


@needs_strace
@pytest.mark.parametrize("api", ["atomic_write", "AtomicFile", "async_with"])
def test_durable_write_syncs_in_order(tmp_path: Path, api: str) -> None:
    # permissions=0o660 under umask 0o022: created 0o640 (never wider than final), so the
    # fchmod to 0o660 must happen, and before the fsync.
    calls, args = run_traced(tmp_path, api=api, permissions=0o660, umask=0o022)
    order = _check_durable_order(calls, args, 0o660)
    chmods = [c for c in calls if c.name == "fchmod"]
    assert [c.args[1] for c in chmods] == ["0660"], _dump(calls)
    assert calls.index(chmods[0]) < order["fsync"]
    assert stat.S_IMODE(os.stat(args["target"]).st_mode) == 0o660


@needs_strace
def test_durable_replace_of_existing_private_file(tmp_path: Path) -> None:
    """An existing 0o600 target, umask 0: the temp is created 0o600, never wider."""
    (tmp_path / "dir").mkdir()
    target = tmp_path / "dir" / "target"
    target.write_bytes(b"old secret")
    target.chmod(0o600)
    calls, args = run_traced(tmp_path, api="AtomicFile", umask=0)
    _check_durable_order(calls, args, 0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@needs_strace
def test_x_mode_renames_without_replacing(tmp_path: Path) -> None:
    calls, args = run_traced(tmp_path, api="atomic_write", mode="x")
    _check_durable_order(calls, args, 0o644)


@needs_strace
@pytest.mark.parametrize("api", ["atomic_write", "AtomicFile", "async_with"])
def test_durable_false_never_syncs(tmp_path: Path, api: str) -> None:
    calls, args = run_traced(tmp_path, api=api, durable=False)
    assert [c.line for c in calls if c.name in SYNCS] == []
    i_open, opened = _temp_open(calls, args["target"])
    assert {"O_CREAT", "O_EXCL", "O_NOFOLLOW"} <= _flags(opened)
    temp = next(p for p in _path_args(opened) if p.endswith(".tmp"))
    _index(calls, lambda c: c.name in RENAMES and _path_args(c) == [temp, args["target"]],
           i_open + 1, what="rename")  # fmt: skip


def _counted(calls: list[Call]) -> list[str]:
    noise = {"mmap", "munmap", "brk", "madvise", "mprotect", "mremap"}
    return [c.name for c in calls if c.name not in noise]


@needs_strace
def test_syscalls_of_one_small_durable_write(tmp_path: Path) -> None:
    """The cost of `atomic_write(new_path, b"...")` (durable) in system calls, exactly.

    Method: a full trace (every syscall), cut at the two marker stats; the warm-up write
    before them has already done every first-use import, so the region holds the write's own
    calls only (lstat of the target ... close of the directory fd). Calls from Python's
    memory allocator (mmap/munmap/brk/madvise/mprotect) are left out of the count: they depend
    on the heap's state, not on the protocol.
    """
    calls, _ = run_traced(tmp_path, full=True, api="atomic_write")
    names = _counted(calls)
    print(f"\none small durable atomic_write: {len(names)} syscalls: {' '.join(names)}")
    assert names == NEW_FILE_SYSCALLS, "\n".join(c.line for c in calls)


@needs_strace
def test_syscalls_of_one_small_durable_rewrite(tmp_path: Path) -> None:
    """The same for a rewrite of an existing file (the common case of a config or state
    file): the permission check and the xattrs to keep come on top."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "target").write_bytes(b"old\n")
    calls, _ = run_traced(tmp_path, full=True, api="atomic_write")
    names = _counted(calls)
    print(f"\none small durable rewrite: {len(names)} syscalls: {' '.join(names)}")
    assert names == REWRITE_SYSCALLS, "\n".join(c.line for c in calls)


def test_parser_joins_unfinished_calls() -> None:
    text = (
        '7 openat(AT_FDCWD, "/d/.t.0123456789abcdef.tmp", O_WRONLY|O_CREAT <unfinished ...>\n'
        "8 epoll_wait(3, [], 1, 0)           = 0\n"
        "7 <... openat resumed>, 0600)    = 6\n"
        '7 rename("/a, b", "/c") = -1 ENOENT (No such file or directory)\n'
        "7 +++ exited with 0 +++\n"
    )
    calls = parse_trace(text)
    resolve_paths(calls)
    assert [c.name for c in calls] == ["openat", "epoll_wait", "rename"]
    assert calls[0].args == ["AT_FDCWD", '"/d/.t.0123456789abcdef.tmp"', "O_WRONLY|O_CREAT",
                             "0600"]  # fmt: skip
    assert calls[0].ret == 6
    assert calls[2].args == ['"/a, b"', '"/c"'] and calls[2].err == "ENOENT"


def test_resolver_joins_names_to_their_directory_fd() -> None:
    text = (
        '7 openat(AT_FDCWD, "/d", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 3\n'
        '7 openat(3, ".t.0123456789abcdef.tmp", O_WRONLY|O_CREAT, 0644) = 4\n'
        '7 renameat(3, ".t.0123456789abcdef.tmp", 3, "t") = 0\n'
        "7 close(3) = 0\n"
        '7 openat(3, "x", O_RDONLY) = -1 EBADF (Bad file descriptor)\n'
    )
    calls = parse_trace(text)
    resolve_paths(calls)
    assert [_path_args(c) for c in calls] == [
        ["/d"],
        ["/d/.t.0123456789abcdef.tmp"],
        ["/d/.t.0123456789abcdef.tmp", "/d/t"],
        [],
        ["x"],
    ]
