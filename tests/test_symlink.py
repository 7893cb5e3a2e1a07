"""`atomic_symlink`: the link is switched in one step, never missing in between."""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _trace import trace

import atomicfile
from atomicfile import SessionFileError, atomic_symlink, atomic_symlink_async, clean_stale_temps

from conftest import RUNTIMES, listing, run_async


@pytest.fixture
def releases(tmp_path: Path) -> Path:
    for name in ("v1", "v2"):
        (tmp_path / "releases" / name).mkdir(parents=True)
        (tmp_path / "releases" / name / "version").write_text(name)
    return tmp_path


def test_creates_then_replaces_a_link(releases: Path, as_path: Any) -> None:
    link = releases / "current"
    atomic_symlink("releases/v1", as_path(link))
    assert os.readlink(link) == "releases/v1"
    assert (link / "version").read_text() == "v1"
    atomic_symlink(as_path(Path("releases/v2")), as_path(link))
    assert os.readlink(link) == "releases/v2"  # the link replaced, not followed into v1
    assert (link / "version").read_text() == "v2"
    assert listing(releases) == ["current", "releases"]
    assert listing(releases / "releases" / "v1") == ["version"]


def test_replaces_a_file_and_a_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("old")
    atomic_symlink("anywhere", tmp_path / "f")
    assert os.readlink(tmp_path / "f") == "anywhere"
    atomic_symlink("elsewhere", tmp_path / "f", durable=False)
    assert os.readlink(tmp_path / "f") == "elsewhere"
    assert listing(tmp_path) == ["f"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_async_form(releases: Path, runtime: str) -> None:
    async def main() -> None:
        await atomic_symlink_async("releases/v2", releases / "current")

    run_async(runtime, main)
    assert os.readlink(releases / "current") == "releases/v2"
    assert listing(releases) == ["current", "releases"]


def test_a_real_directory_at_link_is_refused(releases: Path) -> None:
    link = releases / "current"
    link.mkdir()
    (link / "keep").write_text("x")
    with pytest.raises(IsADirectoryError) as info:
        atomic_symlink("releases/v1", link)
    err = info.value
    assert isinstance(err, SessionFileError)
    assert err.errno == errno.EISDIR and err.step == "rename"
    assert err.operation == "atomic symlink" and err.path == str(link)
    assert str(err) == (
        f"atomic symlink of {str(link)!r} failed at rename: [Errno 21] Is a directory: "
        f"atomic_symlink replaces a symlink or a file, never a directory: {str(link)!r}"
    )
    assert listing(releases) == ["current", "releases"]
    assert listing(link) == ["keep"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        atomic_symlink("x", tmp_path / "no" / "link")
    assert info.value.errno == errno.ENOENT and info.value.step == "open directory"  # type: ignore[attr-defined]
    assert listing(tmp_path) == []


@pytest.mark.parametrize("bad", ["", "dir/", ".", ".."])
def test_a_link_naming_a_directory_is_refused_before_io(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="link must name a file"):
        atomic_symlink("x", bad)
    with pytest.raises(ValueError, match="target must not be empty"):
        atomic_symlink("", tmp_path / "l")
    assert listing(tmp_path) == []


# -- a reader never sees the link missing ------------------------------------------------------

READER = """
import os, select, sys
link = sys.argv[1]
reads = missing = 0
seen = set()
os.write(1, b"ready\\n")
while True:
    try:
        seen.add(os.readlink(link))
        os.stat(link)
    except FileNotFoundError:
        missing += 1
        os.write(1, b"missing\\n")
    reads += 1
    if reads % 32 == 0 and select.select([0], [], [], 0)[0]:
        break
import json
report = {"reads": reads, "missing": missing, "seen": sorted(seen)}
os.write(1, (json.dumps(report) + "\\n").encode())
"""


@pytest.fixture
def reader(releases: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts a process that reads `current` in a loop and reports each ENOENT at once;
    it stops when its stdin gets a line. Killed at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(releases / "current")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _saw_missing(proc: subprocess.Popen[bytes]) -> bool:
    assert proc.stdout is not None
    return bool(select.select([proc.stdout], [], [], 0)[0])


def _stop(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = proc.communicate(b"stop\n", timeout=60)
    lines = out.decode().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["missing"] == lines.count("missing")
    return result


def test_reader_never_sees_the_link_missing(
    releases: Path, reader: Callable[[], subprocess.Popen[bytes]]
) -> None:
    link = releases / "current"
    atomic_symlink("releases/v1", link)
    proc = reader()
    for i in range(400):
        atomic_symlink(f"releases/v{i % 2 + 1}", link, durable=i % 2 == 0)
    result = _stop(proc)
    assert result["missing"] == 0
    assert result["reads"] > 400
    assert result["seen"] == ["releases/v1", "releases/v2"]  # it read during the switches
    assert listing(releases) == ["current", "releases"]


def test_the_reader_does_see_ln_sfn_missing(
    releases: Path, reader: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """The control: the same reader catches the two-step switch `ln -sfn` makes (unlink,
    then symlink), so its silence above means something."""
    link = releases / "current"
    os.symlink("releases/v1", link)
    proc = reader()
    deadline = time.monotonic() + 30
    switches = 0
    while not _saw_missing(proc) and time.monotonic() < deadline:
        os.unlink(link)
        os.symlink(f"releases/v{switches % 2 + 1}", link)
        switches += 1
    result = _stop(proc)
    assert result["missing"] > 0, f"no gap seen in {switches} two-step switches"


# -- durability: the directory fsync, read from the system calls -------------------------------


@pytest.mark.parametrize("durable", [True, False])
def test_strace_shows_the_directory_fsync(tmp_path: Path, durable: bool) -> None:
    work = tmp_path / "work"
    work.mkdir()
    calls = trace(
        tmp_path,
        f"from atomicfile import atomic_symlink; "
        f"atomic_symlink('v2', {str(work / 'current')!r}, durable={durable})",
    )
    names = [name for name, _, _ in calls]
    assert names[:2] == ["symlinkat", "renameat"] or names[:2] == ["symlinkat", "renameat2"], calls
    temp = calls[0][1].split(",")[-1].strip()
    assert temp.startswith('".current.') and temp.endswith('.tmp"'), calls[0]
    assert f"{temp}, " in calls[1][1] and calls[1][1].endswith('"current"'), calls[1]
    if durable:
        assert names == [names[0], names[1], "fsync"], calls
        assert calls[2][1] == f"3<{work}>" or calls[2][1].endswith(f"<{work}>"), calls[2]
    else:
        assert names == [names[0], names[1]], calls
    assert listing(work) == ["current"]


# -- a temp link left by a crash: swept by age ------------------------------------------------


def test_a_stale_temp_link_is_swept_by_age_and_kept_while_young(tmp_path: Path) -> None:
    old = ".current.0123456789abcdef.tmp"
    young = ".current.fedcba9876543210.tmp"
    os.symlink("releases/v1", tmp_path / old)
    os.symlink("releases/v2", tmp_path / young)
    hour_ago = time.time() - 3600
    os.utime(tmp_path / old, (hour_ago, hour_ago), follow_symlinks=False)
    # Without older_than a symlink is never touched: it carries no lock to ask.
    assert clean_stale_temps(tmp_path) == []
    assert clean_stale_temps(tmp_path, older_than=60, dry_run=True) == [str(tmp_path / old)]
    assert listing(tmp_path) == sorted([old, young])
    assert clean_stale_temps(tmp_path, older_than=60) == [str(tmp_path / old)]
    assert listing(tmp_path) == [young]
    assert os.readlink(tmp_path / young) == "releases/v2"


def test_older_than_also_spares_young_temp_files(tmp_path: Path) -> None:
    """older_than on a local directory: nothing younger is removed, files included."""
    from datetime import timedelta

    stale = tmp_path / ".t.0123456789abcdef.tmp"
    fresh = tmp_path / ".t.fedcba9876543210.tmp"
    stale.write_text("x")
    fresh.write_text("x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert clean_stale_temps(tmp_path, older_than=timedelta(hours=1)) == [str(stale)]
    assert listing(tmp_path) == [fresh.name]
    with pytest.raises(ValueError, match="older_than must be >= 0"):
        clean_stale_temps(tmp_path, older_than=-1)
    assert listing(tmp_path) == [fresh.name]


def test_exported() -> None:
    for name in ("atomic_symlink", "atomic_symlink_async"):
        assert name in atomicfile.__all__
        assert getattr(atomicfile, name).__module__ == "atomicfile"
