"""The `atomicfile` command, run for real in a subprocess: `python -m atomicfile` and the
installed console script."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import atomicfile

from conftest import IS_ROOT, listing, temps

MODULE = [sys.executable, "-m", "atomicfile"]
SCRIPT_PATH = Path(sysconfig.get_path("scripts")) / "atomicfile"
SCRIPT = [str(SCRIPT_PATH)]
HEX = "0123456789abcdef"
CAPS = "-dac_override,-dac_read_search"
# Root without the capabilities that bypass file permissions: real EACCES for root.
UNPRIVILEGED = ["setpriv", f"--inh-caps={CAPS}", f"--bounding-set={CAPS}"]
needs_setpriv = pytest.mark.skipif(
    not IS_ROOT or shutil.which("setpriv") is None,
    reason="needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE",
)


@pytest.fixture(params=["module", "script"])
def command(request: pytest.FixtureRequest) -> list[str]:
    """The command line prefix: `python -m atomicfile`, or the installed `atomicfile`."""
    if request.param == "script":
        assert SCRIPT_PATH.exists(), (
            f"console script not installed: pip install -e . ({SCRIPT_PATH})"
        )
        return SCRIPT
    return MODULE


def run(
    *args: str | Path, stdin: bytes = b"", cmd: list[str] = MODULE, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*cmd, *map(str, args)], input=stdin, capture_output=True, cwd=cwd, timeout=60
    )


def one_line(stderr: bytes) -> str:
    """Errors are one line on stderr, never a traceback."""
    text = stderr.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert "Traceback" not in text
    assert text.startswith("atomicfile")
    return text


# -- write: success --------------------------------------------------------------------------


def test_sort_pipeline_in_place(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(b"pear\napple\nfig\n")
    sort = subprocess.Popen(["sort", str(data)], stdout=subprocess.PIPE)
    done = subprocess.run([*command, "write", str(data)], stdin=sort.stdout, capture_output=True)
    assert sort.stdout is not None
    sort.stdout.close()
    assert sort.wait() == 0
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert data.read_bytes() == b"apple\nfig\npear\n"
    assert listing(tmp_path) == ["data.txt"]


def test_bytes_exactly(tmp_path: Path, command: list[str]) -> None:
    payload = bytes(range(256)) * 3 + b"\r\n\x00no newline at the end"
    done = run("write", "out.bin", stdin=payload, cmd=command, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, b"")
    assert (tmp_path / "out.bin").read_bytes() == payload
    assert listing(tmp_path) == ["out.bin"]


def test_empty_input_empties_the_target(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"old")
    assert run("write", tmp_path / "t").returncode == 0
    assert (tmp_path / "t").read_bytes() == b""
    assert listing(tmp_path) == ["t"]


PRODUCER = r"""
import sys
block = bytes(range(256)) * 4096  # 1 MiB
for _ in range(int(sys.argv[1])):
    sys.stdout.buffer.write(block)
"""

# Runs `producer | atomicfile write` and prints the writer's peak RSS in KiB. The pipeline
# starts from this small launcher, not from pytest: a child's ru_maxrss counts the memory of
# the process it was forked from, and pytest's is large.
LAUNCHER = r"""
import os, subprocess, sys
producer_code, mib, target = sys.argv[1:4]
command = sys.argv[4:]
producer = subprocess.Popen([sys.executable, "-c", producer_code, mib], stdout=subprocess.PIPE)
writer = subprocess.Popen([*command, "write", "--no-fsync", target], stdin=producer.stdout)
producer.stdout.close()
assert producer.wait() == 0
# wait4: this one child's resource usage (RUSAGE_CHILDREN would mix in the producer's).
_, status, usage = os.wait4(writer.pid, 0)
writer.returncode = os.waitstatus_to_exitcode(status)
assert writer.returncode == 0, writer.returncode
print(usage.ru_maxrss)
"""


def peak_rss_of_write(target: Path, mib: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, PRODUCER, str(mib), str(target), *MODULE],
        capture_output=True,
        check=True,
    )
    return int(done.stdout) * 1024  # ru_maxrss is in KiB on Linux


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units: Linux")
def test_large_input_is_streamed(tmp_path: Path) -> None:
    mib = 64
    target = tmp_path / "big"
    baseline = peak_rss_of_write(target, 0)
    peak = peak_rss_of_write(target, mib)
    block = bytes(range(256)) * 4096
    expected = hashlib.sha256()
    for _ in range(mib):
        expected.update(block)
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert target.stat().st_size == mib << 20
    assert digest.hexdigest() == expected.hexdigest()
    assert listing(tmp_path) == ["big"]
    # Constant memory: the peak is the interpreter's own plus a chunk or two, far below
    # the 64 MiB that went through.
    message = f"peak RSS {peak >> 20} MiB (empty input: {baseline >> 20} MiB) for {mib} MiB"
    assert peak < (mib << 20) // 4, message
    assert peak - baseline < 8 << 20, message


def test_mode_option(tmp_path: Path) -> None:
    assert run("write", "--mode", "0600", tmp_path / "new", stdin=b"s").returncode == 0
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o600
    (tmp_path / "old").write_bytes(b"x")
    os.chmod(tmp_path / "old", 0o664)
    assert run("write", "-m", "640", tmp_path / "old", stdin=b"y").returncode == 0
    assert stat.S_IMODE((tmp_path / "old").stat().st_mode) == 0o640
    # Without --mode an existing file keeps its bits.
    assert run("write", tmp_path / "old", stdin=b"z").returncode == 0
    assert stat.S_IMODE((tmp_path / "old").stat().st_mode) == 0o640
    assert (tmp_path / "old").read_bytes() == b"z"
    assert listing(tmp_path) == ["new", "old"]


def test_no_clobber(tmp_path: Path, command: list[str]) -> None:
    target = tmp_path / "t"
    assert run("write", "--no-clobber", target, stdin=b"first", cmd=command).returncode == 0
    done = run("write", "--no-clobber", target, stdin=b"second", cmd=command)
    assert done.returncode == 1
    assert "File exists [EEXIST]" in one_line(done.stderr)
    assert target.read_bytes() == b"first"
    assert listing(tmp_path) == ["t"]


def test_append(tmp_path: Path) -> None:
    target = tmp_path / "log"
    target.write_bytes(b"one\n")
    assert run("write", "--append", target, stdin=b"two\n").returncode == 0
    assert target.read_bytes() == b"one\ntwo\n"
    done = run("write", "--append", "--no-clobber", target, stdin=b"x")
    assert done.returncode == 2
    assert "not allowed with" in one_line(done.stderr)
    assert target.read_bytes() == b"one\ntwo\n"
    assert listing(tmp_path) == ["log"]


def test_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"old")
    (tmp_path / "link").symlink_to("real")
    assert run("write", tmp_path / "link", stdin=b"through").returncode == 0
    assert os.readlink(tmp_path / "link") == "real"
    assert (tmp_path / "real").read_bytes() == b"through"
    assert run("write", "--no-follow", tmp_path / "link", stdin=b"own").returncode == 0
    assert not (tmp_path / "link").is_symlink()
    assert (tmp_path / "link").read_bytes() == b"own"
    assert (tmp_path / "real").read_bytes() == b"through"
    assert listing(tmp_path) == ["link", "real"]


@pytest.mark.needs("strace")
@pytest.mark.parametrize(("options", "expected"), [([], 2), (["--no-fsync"], 0)])
def test_no_fsync(tmp_path: Path, options: list[str], expected: int) -> None:
    trace = tmp_path.parent / f"{tmp_path.name}.strace"
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range", "-o", str(trace),
         *MODULE, "write", *options, str(tmp_path / "t")],
        input=b"data", capture_output=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = [line for line in trace.read_text().splitlines() if "sync" in line]
    trace.unlink()
    assert len(calls) == expected, calls  # the temp file, then the directory
    assert (tmp_path / "t").read_bytes() == b"data"
    assert listing(tmp_path) == ["t"]


def test_verbose_shows_the_events(tmp_path: Path) -> None:
    done = run("write", "-v", "t", stdin=b"12345", cwd=tmp_path)
    assert done.returncode == 0
    lines = done.stderr.decode().splitlines()
    messages = [re.sub(r" \w+=.*", "", line) for line in lines]
    assert messages == [
        "atomicfile: DEBUG Starting atomic write",
        "atomicfile: DEBUG Temp file written",
        "atomicfile: DEBUG Temp file renamed to target",
        "atomicfile: DEBUG Atomic write completed successfully",
    ]
    # The temp path is the target's directory as given (here none: the target is "t",
    # relative) joined with the temp name, as the target_path is the target as given.
    assert re.fullmatch(
        r".* target_path=t temp_path=\.t\.[0-9a-f]{16}\.tmp operation=atomic_write", lines[0]
    )
    assert re.fullmatch(r".* size=5 duration=\d+\.\d{3} operation=write_file", lines[1])
    assert re.fullmatch(r".* target_path=t size=5 total_duration=\d+\.\d{3}", lines[3])
    assert listing(tmp_path) == ["t"]


def test_verbose_shows_a_failure(tmp_path: Path) -> None:
    done = run("write", "-v", tmp_path / "missing" / "t")
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert "Atomic write failed" in lines[-2] and "error_code=ENOENT" in lines[-2]
    assert lines[-1].startswith("atomicfile: cannot write")
    assert listing(tmp_path) == []


# -- write: bad input ------------------------------------------------------------------------


def test_missing_directory(tmp_path: Path, command: list[str]) -> None:
    done = run("write", tmp_path / "nodir" / "t", stdin=b"x", cmd=command)
    assert done.returncode == 1
    assert "No such file or directory [ENOENT]" in one_line(done.stderr)
    assert listing(tmp_path) == []


def test_target_is_a_directory(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "d").mkdir()
    done = run("write", tmp_path / "d", stdin=b"x", cmd=command)
    assert done.returncode == 1
    assert "Is a directory [EISDIR]" in one_line(done.stderr)
    assert listing(tmp_path) == ["d"]
    assert listing(tmp_path / "d") == []


def test_read_only_file_system(readonly_fs: Path) -> None:
    done = run("write", readonly_fs / "target", stdin=b"new")
    assert done.returncode == 1
    assert "Read-only file system [EROFS]" in one_line(done.stderr)
    assert (readonly_fs / "target").read_bytes() == b"old"
    assert listing(readonly_fs) == ["target"]


@needs_setpriv
def test_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    (locked / "t").write_bytes(b"old")
    done = run("write", locked / "t", stdin=b"new", cmd=[*UNPRIVILEGED, *MODULE])
    assert done.returncode == 1
    # Issue 21: the temp's directory and the target are named, not the bare temp name.
    line = one_line(done.stderr)
    assert f"Permission denied: can't create a temp file in the directory {str(locked)!r}" in line
    assert line.endswith("the directory must be writable) [EACCES]\n")
    assert (locked / "t").read_bytes() == b"old"
    assert listing(locked) == ["t"]


@pytest.mark.parametrize("mode", ["999", "rw-r--r--", "", "-1", "0o10000"])
def test_bad_mode(tmp_path: Path, mode: str) -> None:
    done = run("write", "--mode", mode, tmp_path / "t", stdin=b"x")
    assert done.returncode == 2
    assert "invalid mode" in one_line(done.stderr)
    assert listing(tmp_path) == []


def test_sticky_mode_says_what_was_meant(tmp_path: Path) -> None:
    done = run("write", "--mode", "1644", tmp_path / "t", stdin=b"x")
    assert done.returncode == 2
    assert "the sticky bit (1000) means nothing on a file; did you mean 644?" in one_line(
        done.stderr
    )
    assert listing(tmp_path) == []


def test_usage_errors_are_one_line() -> None:
    for args in ([], ["write"], ["frobnicate"], ["clean"], ["write", "--bogus", "t"]):
        done = run(*args)
        assert done.returncode == 2, args
        assert "error:" in one_line(done.stderr)


def test_closed_stdin(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *MODULE, "write", str(target)], capture_output=True
    )
    assert done.returncode == 1
    assert "cannot read standard input: Bad file descriptor [EBADF]" in one_line(done.stderr)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


# -- write: interrupted input -----------------------------------------------------------------


def wait_for_temp(directory: Path, proc: subprocess.Popen[bytes]) -> str:
    """Poll until the writer has created its temp (bounded: 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = temps(directory)
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    raise AssertionError("the writer never created its temp file")


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture
def writer_proc(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`atomicfile write tmp_path/t` with old content, fed some input, waiting on stdin."""
    (tmp_path / "t").write_bytes(b"old")
    proc = subprocess.Popen(
        [*MODULE, "write", str(tmp_path / "t")],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As a terminal's foreground job has them: a run launched in the background (some CI
        # runners) starts children with SIGINT ignored, one under nohup with SIGHUP ignored,
        # and Python keeps an ignored signal ignored (as the CLI does, rightly, under nohup).
        preexec_fn=_default_signals,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"part of the new content\n")
    proc.stdin.flush()
    wait_for_temp(tmp_path, proc)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGPIPE, 141)],
)
def test_signal_while_reading_input(
    tmp_path: Path, writer_proc: subprocess.Popen[bytes], signum: int, status: int
) -> None:
    writer_proc.send_signal(signum)
    _, stderr = writer_proc.communicate(timeout=60)
    assert writer_proc.returncode == status
    name = signal.Signals(signum).name
    assert (
        one_line(stderr)
        == f"atomicfile: interrupted by {name}; {str(tmp_path / 't')!r} left unchanged\n"
    )
    assert (tmp_path / "t").read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_connection_reset_on_input(tmp_path: Path) -> None:
    # Standard input is a TCP connection that the peer resets (SO_LINGER 0 sends RST).
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
    with conn:
        proc = subprocess.Popen(
            [*MODULE, "write", str(target)], stdin=conn.fileno(), stderr=subprocess.PIPE
        )
    peer.sendall(b"some input")
    wait_for_temp(tmp_path, proc)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot read standard input: Connection reset by peer [ECONNRESET]" in one_line(stderr)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_input_finished_then_commit(tmp_path: Path, writer_proc: subprocess.Popen[bytes]) -> None:
    # The same child, left alone: end of input commits.
    _, stderr = writer_proc.communicate(b"the rest\n", timeout=60)
    assert (writer_proc.returncode, stderr) == (0, b"")
    assert (tmp_path / "t").read_bytes() == b"part of the new content\nthe rest\n"
    assert listing(tmp_path) == ["t"]


# -- clean -----------------------------------------------------------------------------------


def stale_temp(directory: Path, base: str, token: str = HEX) -> Path:
    """A temp-shaped file no writer holds: what a killed writer leaves."""
    path = directory / f".{base}.{token}.tmp"
    path.write_bytes(b"partial")
    return path


def test_clean(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "sub").mkdir()
    a = stale_temp(tmp_path, "a")
    b = stale_temp(tmp_path, "b", HEX[::-1])
    deep = stale_temp(tmp_path / "sub", "c")
    (tmp_path / ".notes.bak.tmp").write_bytes(b"mine")
    before = listing(tmp_path)

    done = run("clean", "--dry-run", tmp_path, cmd=command)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode().splitlines() == [str(a), str(b)]
    assert listing(tmp_path) == before

    done = run("clean", "--target", "b", tmp_path, cmd=command)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{b}\n".encode(), b"")

    done = run("clean", "-r", tmp_path, cmd=command)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode().splitlines() == [str(a), str(deep)]
    assert listing(tmp_path) == [".notes.bak.tmp", "sub"]
    assert listing(tmp_path / "sub") == []

    done = run("clean", tmp_path, cmd=command)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_clean_keeps_a_live_writer(tmp_path: Path, writer_proc: subprocess.Popen[bytes]) -> None:
    live = temps(tmp_path)
    stale = stale_temp(tmp_path, "t", HEX[::-1])
    done = run("clean", "-v", tmp_path)
    assert done.returncode == 0
    assert done.stdout.decode().splitlines() == [str(stale)]
    log = done.stderr.decode()
    assert f"Temp file in use: kept temp_path={tmp_path / live[0]} reason='in use'" in log
    assert f"Stale temp file removed temp_path={stale}" in log
    assert temps(tmp_path) == live
    writer_proc.communicate(b"the rest\n", timeout=60)
    assert writer_proc.returncode == 0
    assert (tmp_path / "t").read_bytes() == b"part of the new content\nthe rest\n"
    assert listing(tmp_path) == ["t"]


def test_clean_missing_directory(tmp_path: Path, command: list[str]) -> None:
    done = run("clean", tmp_path / "nodir", cmd=command)
    assert done.returncode == 1
    assert "No such file or directory [ENOENT]" in one_line(done.stderr)
    (tmp_path / "f").write_bytes(b"")
    done = run("clean", tmp_path / "f", cmd=command)
    assert done.returncode == 1
    assert "Not a directory [ENOTDIR]" in one_line(done.stderr)
    assert listing(tmp_path) == ["f"]


def test_clean_bad_target(tmp_path: Path) -> None:
    done = run("clean", "--target", "a/b", tmp_path)
    assert done.returncode == 2
    assert "file name" in one_line(done.stderr)


@needs_setpriv
def test_clean_permission_denied(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o000)
    done = run("clean", closed, cmd=[*UNPRIVILEGED, *MODULE])
    assert done.returncode == 1
    assert "Permission denied [EACCES]" in one_line(done.stderr)


def test_clean_output_to_a_closed_pipe(tmp_path: Path) -> None:
    for i in range(3):
        stale_temp(tmp_path, f"f{i}")
    # `| head -0`-like: the reader is gone before anything is printed.
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as out:
        done = subprocess.run([*MODULE, "clean", str(tmp_path)], stdout=out, stderr=subprocess.PIPE)
    assert (done.returncode, done.stderr) == (141, b"")
    assert listing(tmp_path) == []


def test_clean_print0_with_a_newline_in_a_name(tmp_path: Path, command: list[str]) -> None:
    # With newline-separated output, `.a` and `b.<hex>.tmp` look like two paths; a
    # `clean --dry-run | xargs -d '\\n' rm` would delete the wrong files.
    tricky = stale_temp(tmp_path, "a\nb")
    plain = stale_temp(tmp_path, "c", HEX[::-1])
    (tmp_path / ".a").write_bytes(b"mine")  # what the newline split would name
    before = listing(tmp_path)

    done = run("clean", "--dry-run", "--print0", tmp_path, cmd=command)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == os.fsencode(tricky) + b"\0" + os.fsencode(plain) + b"\0"
    assert listing(tmp_path) == before

    done = run("clean", "-0", tmp_path, cmd=command)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.split(b"\0") == [os.fsencode(tricky), os.fsencode(plain), b""]
    assert listing(tmp_path) == [".a"]
    assert (tmp_path / ".a").read_bytes() == b"mine"


def test_clean_removes_a_dead_staging_directory(tmp_path: Path) -> None:
    stage = tmp_path / f".site.{HEX}.tmp"  # the staging layout: 0700, only `tree` in it
    (stage / "tree" / "sub").mkdir(parents=True)
    (stage / "tree" / "sub" / "index.html").write_bytes(b"<html>")
    stage.chmod(0o700)
    done = run("clean", "-r", tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{stage}\n".encode(), b"")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("args", [["--dry-run"], [], ["--print0"]])
def test_clean_with_stdout_closed(tmp_path: Path, args: list[str]) -> None:
    # `atomicfile clean DIR >&-`: no standard output at all. The sweep runs, nothing is
    # printed, no traceback, and the status is the sweep's own.
    stale = [stale_temp(tmp_path, f"f{i}") for i in range(3)]
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *MODULE, "clean", *args, str(tmp_path)],
        capture_output=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    expected = [p.name for p in stale] if args == ["--dry-run"] else []
    assert listing(tmp_path) == sorted(expected)


def test_clean_dry_run_into_a_closed_pipe(tmp_path: Path) -> None:
    # `atomicfile clean --dry-run . | head -0`: the reader left before the first byte.
    stale = [stale_temp(tmp_path, f"f{i}") for i in range(3)]
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as out:
        done = subprocess.run(
            [*MODULE, "clean", "--dry-run", str(tmp_path)], stdout=out, stderr=subprocess.PIPE
        )
    assert (done.returncode, done.stderr) == (141, b"")
    assert listing(tmp_path) == sorted(p.name for p in stale)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_clean_output_write_error(tmp_path: Path) -> None:
    # A real write error on stdout (ENOSPC) is reported in one line, status 1.
    stale_temp(tmp_path, "f")
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [*MODULE, "clean", str(tmp_path)], stdout=full, stderr=subprocess.PIPE
        )
    assert done.returncode == 1
    assert "No space left on device [ENOSPC]" in one_line(done.stderr)
    assert listing(tmp_path) == []


# -- the rest --------------------------------------------------------------------------------


def test_version(command: list[str]) -> None:
    done = run("--version", cmd=command)
    assert (done.returncode, done.stdout) == (0, f"atomicfile {atomicfile.__version__}\n".encode())


@pytest.mark.parametrize(
    "args", [["--help"], ["write", "--help"], ["update", "--help"], ["clean", "--help"]]
)
def test_help_has_examples(args: list[str]) -> None:
    done = run(*args)
    assert done.returncode == 0
    assert "examples:" in done.stdout.decode()
    assert any(f"atomicfile {c}" in done.stdout.decode() for c in ("write", "update", "clean"))


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atomicfile._cli import main

    stale = stale_temp(tmp_path, "x")
    assert main(["clean", "--dry-run", str(tmp_path)]) == 0
    assert listing(tmp_path) == [stale.name]
    assert main(["clean", str(tmp_path / "missing")]) == 1
    assert "cannot clean" in capsys.readouterr().err


# -- write --no-empty, --parents (issue 21, item 6) -------------------------------------------


def test_no_empty_refuses_empty_input(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "t").write_bytes(b"old")
    false = subprocess.Popen(["false"], stdout=subprocess.PIPE)
    done = subprocess.run(
        [*command, "write", "--no-empty", str(tmp_path / "t")],
        stdin=false.stdout,
        capture_output=True,
    )
    assert false.stdout is not None
    false.stdout.close()
    assert false.wait() == 1
    assert (done.returncode, done.stdout) == (1, b"")
    line = one_line(done.stderr)
    assert line.endswith(f"empty input: {str(tmp_path / 't')!r} left unchanged (--no-empty)\n")
    assert (tmp_path / "t").read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_no_empty_with_no_target_creates_nothing(tmp_path: Path) -> None:
    # The input is read before anything is created: no temp, no directory (--parents).
    done = run("write", "--no-empty", "--parents", tmp_path / "d" / "t")
    assert done.returncode == 1
    assert "empty input" in one_line(done.stderr)
    assert listing(tmp_path) == []


def test_no_empty_writes_any_input(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"old")
    done = run("write", "--no-empty", tmp_path / "t", stdin=b"\n")
    assert (done.returncode, done.stderr) == (0, b"")
    assert (tmp_path / "t").read_bytes() == b"\n"
    assert listing(tmp_path) == ["t"]


def test_no_empty_append(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"old")
    done = run("write", "--no-empty", "-a", tmp_path / "t")
    assert done.returncode == 1
    assert "empty input" in one_line(done.stderr)
    assert (tmp_path / "t").read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_no_empty_verbose_says_one_line(tmp_path: Path) -> None:
    done = run("write", "-v", "--no-empty", tmp_path / "t")
    assert done.returncode == 1
    assert "empty input" in one_line(done.stderr)  # no write began: no log event
    assert listing(tmp_path) == []


def test_no_empty_large_input(tmp_path: Path) -> None:
    (tmp_path / "t").write_bytes(b"old")
    payload = os.urandom(3 << 20)  # more than one chunk: the first is not lost
    done = run("write", "--no-empty", "--parents", tmp_path / "t", stdin=payload)
    assert (done.returncode, done.stderr) == (0, b"")
    assert (tmp_path / "t").read_bytes() == payload
    assert listing(tmp_path) == ["t"]


def test_parents(tmp_path: Path, command: list[str]) -> None:
    done = run("write", "--parents", "a/b/t", stdin=b"v", cmd=command, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, b"")
    assert (tmp_path / "a" / "b" / "t").read_bytes() == b"v"
    assert listing(tmp_path) == ["a"]
    done = run("write", "-p", "c/t", stdin=b"v", cwd=tmp_path)
    assert done.returncode == 0
    assert listing(tmp_path) == ["a", "c"]


def test_without_parents_a_missing_directory_fails(tmp_path: Path) -> None:
    done = run("write", tmp_path / "a" / "t", stdin=b"v")
    assert done.returncode == 1
    assert "No such file or directory" in one_line(done.stderr)
    assert listing(tmp_path) == []


def test_parents_with_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"file")
    done = run("write", "--parents", tmp_path / "a" / "b" / "t", stdin=b"v")
    assert done.returncode == 1
    assert "Not a directory" in one_line(done.stderr)
    assert listing(tmp_path) == ["a"]
    assert (tmp_path / "a").read_bytes() == b"file"


# -- update -----------------------------------------------------------------------------------

#: A COMMAND for `update`: the number on stdin (none: 0), plus one.
INCREMENT = [sys.executable, "-c", "import sys; print(int(sys.stdin.read() or 0) + 1)"]
#: A COMMAND that says "ready" on stderr, then waits until the FIFO given is opened for
#: writing (and closed) by the test, then increments.
HOLD = [
    sys.executable,
    "-c",
    "import sys; d = sys.stdin.read(); sys.stderr.write('ready\\n'); sys.stderr.flush(); "
    "open(sys.argv[1]).read(); print(int(d or 0) + 1)",
]


def test_update_runs_the_command_on_the_content(tmp_path: Path, command: list[str]) -> None:
    target = tmp_path / "app.json"
    target.write_text('{"runs": 1}')
    bump = "import json, sys; d = json.load(sys.stdin); d['runs'] += 1; print(json.dumps(d))"
    done = run("update", target, "--", sys.executable, "-c", bump, cmd=command)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"" and done.stderr == b""
    assert target.read_text() == '{"runs": 2}\n'
    assert listing(tmp_path) == ["app.json"]


@pytest.mark.skipif(shutil.which("jq") is None, reason="the README's example uses jq")
def test_update_with_jq(tmp_path: Path) -> None:
    target = tmp_path / "app.json"
    target.write_text('{"runs": 1}')
    done = run("update", target, "--", "jq", "-c", ".runs += 1")
    assert done.returncode == 0, done.stderr
    assert target.read_text() == '{"runs":2}\n'
    assert listing(tmp_path) == ["app.json"]


def test_update_of_a_missing_file_gives_empty_stdin(tmp_path: Path) -> None:
    target = tmp_path / "new"
    show = "import sys; sys.stdout.write(repr(sys.stdin.buffer.read()))"
    done = run("update", target, "--", sys.executable, "-c", show)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "b''"
    assert listing(tmp_path) == ["new"]


@pytest.mark.parametrize("exists", [True, False])
def test_update_with_a_failing_command_changes_nothing(tmp_path: Path, exists: bool) -> None:
    target = tmp_path / "f"
    if exists:
        target.write_bytes(b"old")
    fail = "import sys; sys.stdin.read(); sys.stdout.write('partial'); sys.exit(3)"
    done = run("update", target, "--", sys.executable, "-c", fail)
    assert done.returncode == 3
    assert "exited with status 3" in one_line(done.stderr)
    assert done.stdout == b""
    assert listing(tmp_path) == (["f"] if exists else [])
    if exists:
        assert target.read_bytes() == b"old"
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    done = run("update", target, "--", sys.executable, "-c", killed)
    assert done.returncode == 128 + signal.SIGKILL
    assert f"exited with status {128 + signal.SIGKILL}" in one_line(done.stderr)
    assert listing(tmp_path) == (["f"] if exists else [])


def test_update_command_not_found_and_usage(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    done = run("update", target, "--", str(tmp_path / "no-such-command"))
    assert done.returncode == 127
    assert "cannot run" in one_line(done.stderr)
    for args in (["update", target], ["update", target, "--"], ["update", "--timeout", "-1",
                 target, "--", "true"]):  # fmt: skip
        done = run(*args)
        assert done.returncode == 2
        one_line(done.stderr)
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["f"]


def test_concurrent_updates_lose_no_increment(tmp_path: Path) -> None:
    """8 `atomicfile update` processes at once, 5 updates each, on a counter that doesn't
    exist yet: exactly 40, and nothing else in the directory."""
    target = tmp_path / "counter"
    loop = 'for i in 1 2 3 4 5; do "$@" || exit 1; done'
    argv = ["sh", "-c", loop, "sh", *MODULE, "update", str(target), "--", *INCREMENT]
    procs = [subprocess.Popen(argv, stderr=subprocess.PIPE) for _ in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert target.read_text() == "40\n"
    assert listing(tmp_path) == ["counter"]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """An `atomicfile update` whose COMMAND runs (the lock held) until `release(fifo)`."""
    target = tmp_path / "d" / "counter"
    target.parent.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*MODULE, "update", str(target), "--", *HOLD, str(fifo)], stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    assert proc.stderr.readline() == b"ready\n"
    yield proc, target, fifo
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stderr.close()


def release(fifo: Path) -> None:
    with open(fifo, "w"):
        pass


def test_update_timeout_while_another_holds_the_lock(
    holder: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, target, fifo = holder
    marker = target.parent / "ran"
    touch = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    done = run("update", "--timeout", "0", target, "--", *touch)
    assert done.returncode == 1
    assert "cannot update" in one_line(done.stderr) and "ETIMEDOUT" in done.stderr.decode()
    # COMMAND never ran, nothing was published: only the holder's temp is there.
    assert len(temps(target.parent)) == 1 and listing(target.parent) == temps(target.parent)
    release(fifo)
    assert proc.wait(timeout=60) == 0
    assert target.read_text() == "1\n"
    assert listing(target.parent) == ["counter"]


def test_update_terminated_while_the_command_runs(
    holder: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, target, _ = holder
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert proc.stderr is not None
    assert "interrupted by SIGTERM" in one_line(proc.stderr.read())
    assert listing(target.parent) == []  # its temp removed, nothing published
