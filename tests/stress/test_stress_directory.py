"""Stress: AtomicDirectory swaps under readers in other processes, and SIGKILLed writers
(AtomicDirectory and AtomicBatch).

Readers: during 1,000 swaps of a tree whose files all carry the version's number, reader
processes loop (a) opening the directory once and reading every file relative to that
descriptor: the files they get always belong to one version; (b) opening each file by its
path: the lookup never finds a file missing.

Kills: a writer commits versions in a loop and reports each on a pipe; it is SIGKILLed after
a random number of them (plus a random extra delay that only spreads the kill instants;
nothing waits on it). Afterwards the target holds one whole version, no older than the last
reported, and what else is beside it has a temp file's name, is locked by nobody, and can be
removed by the sweep.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _stress_util import trials

import atomicfile
from atomicfile import clean_stale_temps
from atomicfile._naming import is_temp_name

pytestmark = pytest.mark.stress

NAMES = ["a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]

WRITER = r"""
import os, sys
from atomicfile import AtomicDirectory
target, start, count, durable = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
names = sys.argv[5].split(",")
print("ready", flush=True)
for v in range(start, start + count):
    with AtomicDirectory(target, durable=durable) as d:
        for name in names:
            path = d / name
            path.parent.mkdir(parents=True, exist_ok=True)
            # Each file carries the version, padded so that a torn read would show.
            path.write_text(f"{v}:{name}:" + "x" * (v % 97) + ":end")
    print(v, flush=True)
"""

READER = r"""
import os, sys
target, names = sys.argv[1], sys.argv[2].split(",")
reads = mixes = gone = missing = torn = 0
print("ready", flush=True)

def version(text, name):
    parts = text.split(":")
    if len(parts) != 4 or parts[1] != name or parts[3] != "end":
        return None
    if len(parts[2]) != int(parts[0]) % 97:
        return None
    return int(parts[0])

while not os.path.exists(target + ".stop"):
    # (a) one directory descriptor, every file relative to it.
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    seen = set()
    try:
        for name in names:
            try:
                f = os.open(name, os.O_RDONLY, dir_fd=fd)
            except FileNotFoundError:
                gone += 1  # the writer is removing this (old) tree: start again
                seen = None
                break
            try:
                text = os.read(f, 4096).decode()
            finally:
                os.close(f)
            v = version(text, name)
            if v is None:
                torn += 1
            seen.add(v)
    finally:
        os.close(fd)
    if seen is not None:
        reads += 1
        if len(seen) != 1:
            mixes += 1
    # (b) separate path lookups: each must find its file.
    for name in names:
        try:
            with open(os.path.join(target, name)) as f:
                if version(f.read(), name) is None:
                    torn += 1
        except FileNotFoundError:
            missing += 1
print(reads, mixes, gone, missing, torn, flush=True)
"""


def start(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["ready"]
    return proc


def read_tree(target: Path) -> set[int]:
    out = set()
    for name in NAMES:
        text = (target / name).read_text()
        v, n, pad, end = text.split(":")
        assert (n, end, len(pad)) == (name, "end", int(v) % 97), text
        out.add(int(v))
    return out


def make_version(target: Path, v: int) -> None:
    with atomicfile.AtomicDirectory(target, durable=False) as d:
        for name in NAMES:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(f"{v}:{name}:" + "x" * (v % 97) + ":end")


def test_readers_never_see_a_mix_during_1000_swaps(tmp_path: Path) -> None:
    target = tmp_path / "site"
    make_version(target, 0)
    readers = [start(READER, str(target), ",".join(NAMES)) for _ in range(2)]
    try:
        writer = start(WRITER, str(target), "1", str(trials(1000)), "0", ",".join(NAMES))
        out, _ = writer.communicate()
        assert writer.returncode == 0
        assert out.split()[-1] == str(trials(1000))
    finally:
        (tmp_path / "site.stop").write_text("")
    totals = [0, 0, 0, 0, 0]
    for proc in readers:
        out, _ = proc.communicate()
        assert proc.returncode == 0
        for i, n in enumerate(out.split()):
            totals[i] += int(n)
    reads, mixes, gone, missing, torn = totals
    print("reader totals (reads, mixes, gone, missing, torn):", totals)
    assert reads > 0 and gone >= 0
    assert (mixes, missing, torn) == (0, 0, 0), totals
    assert read_tree(target) == {trials(1000)}
    assert sorted(os.listdir(tmp_path)) == ["site", "site.stop"]


def leftovers_are_sweepable(parent: Path, keep: set[str]) -> int:
    """Everything beside the targets has a temp's name and the stale sweep removes it (its
    writer is dead, so nobody holds its lock); returns how many there were."""
    extra = sorted(n for n in os.listdir(parent) if n not in keep)
    assert all(is_temp_name(n) for n in extra), extra
    removed = clean_stale_temps(parent)
    assert sorted(os.path.basename(p) for p in removed) == extra
    assert sorted(os.listdir(parent)) == sorted(keep)
    return len(extra)


def kill_after(proc: subprocess.Popen[str], rng: random.Random) -> int:
    """SIGKILL after a random number (0-3) of reported commits; return the last one."""
    assert proc.stdout is not None
    last = -1
    for _ in range(rng.randrange(4)):
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line)
    deadline = time.perf_counter() + rng.random() * 0.03
    while time.perf_counter() < deadline:  # spreads the kill instant; nothing waits on it
        pass
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate()
    for line in rest.split():
        last = int(line)
    return last


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
def test_sigkill_leaves_old_or_new_tree(tmp_path: Path, durable: bool) -> None:
    rng = random.Random(14)
    target = tmp_path / "site"
    make_version(target, 0)
    current = 0
    leftovers = 0
    for trial in range(trials(20)):
        first = current + 1
        proc = start(
            WRITER, str(target), str(first), "1000", "1" if durable else "0", ",".join(NAMES)
        )
        last = kill_after(proc, rng)
        versions = read_tree(target)
        assert len(versions) == 1, (trial, versions)
        (v,) = versions
        assert v == current or first <= v, (trial, v, current)
        assert v >= max(last, current)
        assert v <= max(last, current) + 1
        current = v
        leftovers += leftovers_are_sweepable(tmp_path, {"site"})
    assert current > 0  # the writers got somewhere


BATCH_WRITER = r"""
import sys
from atomicfile import AtomicBatch
parent, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
for v in range(start, start + count):
    with AtomicBatch() as batch:
        for i in range(20):
            batch.write(f"{parent}/f{i:02d}", f"{v}:" + "y" * (v % 89))
    print(v, flush=True)
"""


def test_sigkill_batch_each_file_old_or_new(tmp_path: Path) -> None:
    rng = random.Random(41)
    names = sorted(f"f{i:02d}" for i in range(20))
    for name in names:
        (tmp_path / name).write_text("0:")
    before = dict.fromkeys(names, 0)
    current = 0
    for _ in range(trials(20)):
        first = current + 1
        proc = start(BATCH_WRITER, str(tmp_path), str(first), "1000")
        last = kill_after(proc, rng)
        now = {}
        for name in names:
            v, pad = (tmp_path / name).read_text().split(":")
            assert len(pad) == int(v) % 89  # whole
            now[name] = int(v)
        # Per file old or new: each file holds what it held before this writer, or one of
        # this writer's versions; every batch reported done is everywhere (or superseded);
        # beyond it, at most the one batch being renamed when the kill landed.
        for name in names:
            assert now[name] == before[name] or now[name] >= first, (name, before, now)
            assert now[name] >= last, (name, last, now)
        assert len({v for v in now.values() if v > max(last, first - 1)}) <= 1, (last, now)
        before, current = now, max(current, *now.values())
        leftovers_are_sweepable(tmp_path, set(names))
    assert current > 0


SWEEPER = r"""
import os, sys
from atomicfile import clean_stale_temps
parent, stop = sys.argv[1], sys.argv[2]
sweeps = 0
print("ready", flush=True)
while not os.path.exists(stop):
    clean_stale_temps(parent)
    sweeps += 1
print(sweeps, flush=True)
"""


def test_writes_never_fail_under_a_sweep_in_a_loop(tmp_path: Path) -> None:
    """Issue 18, item 11, with a real racing sweep: another process sweeps the parent as
    fast as it can while 1,000 AtomicDirectory writes run. A sweep that catches a staging
    directory between the writer's mkdir and its flock takes it; the writer must start
    over with a new name, never fail (ENOENT) and never publish a partial tree."""
    parent = tmp_path / "p"
    parent.mkdir()
    target = parent / "site"
    make_version(target, 0)
    stop = tmp_path / "stop"
    sweeper = start(SWEEPER, str(parent), str(stop))
    try:
        writer = start(WRITER, str(target), "1", str(trials(1000)), "0", ",".join(NAMES))
        out, _ = writer.communicate()
    finally:
        stop.write_text("")
        swept, _ = sweeper.communicate()
    assert sweeper.returncode == 0
    print("sweeps:", swept.split())
    assert writer.returncode == 0
    assert out.split()[-1] == str(trials(1000))
    assert read_tree(target) == {trials(1000)}
    leftovers_are_sweepable(parent, {"site"})
