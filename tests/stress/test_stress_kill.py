"""Crash test: SIGKILL a process that rewrites a file, at every step of the protocol and at
random instants; the file must always hold one complete version.

A child process (`_stress_child.py loop`) rewrites one target with self-checking versions
(header: writer, seq, length, sha256; bodies from 0 bytes to 1 MiB) through each front door.
It reports each event of each write on a pipe. Three kinds of kill:

- stage (half the trials, each stage in turn): the child waits for a go-ahead after each
  event, so the kill lands exactly there (after `begin`, inside the block after
  `open`/`chunk`, just before the temp's fsync, just before the rename, just after it, after
  `done`);
- count: kill as soon as the child has reported k completed writes (k random, 0..3);
- random: the same, then a random extra delay of up to 30 ms before the kill. The delay only
  spreads the kill instants over the write (mid-copy of a 1 MiB body, mid-fsync...): nothing
  waits on it and every assertion holds wherever the kill lands.

After every kill the target parses as one whole version that is no older than the last write
the child reported done and no newer than the one it had begun (or the previous trial's file
when none began). A killed writer leaves at most one temp (exactly one when killed between
creating it and renaming it): the stale-temp sweep's job; the test counts and removes them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from _stress_child import make_version, parse_version
from _stress_util import spawn, temps, trials

pytestmark = pytest.mark.stress

APIS = ["AtomicFile", "atomic_write", "async_with", "atomic_write_async"]
# Stages at which a stepped kill lands, and what the target and the directory must then hold.
IN_BLOCK = ["open", "chunk"]
BEFORE_PUBLISH = ["fsync", "rename"]

totals: Counter[str] = Counter()


def _stages(api: str, durable: bool) -> list[str]:
    stages = ["begin"]
    if api in ("AtomicFile", "async_with"):
        stages += IN_BLOCK
    if durable:
        stages.append("fsync")
    return [*stages, "rename", "renamed", "done"]


def _kill(proc: subprocess.Popen[bytes]) -> list[tuple[str, int]]:
    """SIGKILL the child, reap it, and return every event it reported before dying."""
    proc.send_signal(signal.SIGKILL)
    assert proc.stdout is not None
    rest = proc.stdout.read()
    assert proc.wait() == -signal.SIGKILL
    if proc.stdin is not None:
        proc.stdin.close()
    proc.stdout.close()
    events = []
    for line in rest.decode().splitlines():
        name, seq = line.split()
        events.append((name, int(seq)))
    return events


def _drive(
    proc: subprocess.Popen[bytes], kind: str, stage: str, kill_seq: int, rng: random.Random
) -> list[tuple[str, int]]:
    """Follow the child's events up to the chosen kill instant; return the events seen."""
    assert proc.stdout is not None and proc.stdin is not None
    seen: list[tuple[str, int]] = []
    want_done = rng.randint(0, 3)
    while True:
        if kind != "stage" and sum(e == "done" for e, _ in seen) >= want_done:
            break
        line = proc.stdout.readline().decode()
        assert line, f"child died on its own: rc={proc.wait()}"
        name, seq = line.split()
        seen.append((name, int(seq)))
        if kind == "stage":
            if (name, int(seq)) == (stage, kill_seq):
                break
            assert int(seq) <= kill_seq, f"stage {stage!r} never happened in write {kill_seq}"
            proc.stdin.write(b"g")
    if kind == "random":
        time.sleep(rng.uniform(0, 0.03))  # spreads the kill instant; not a synchronisation
    return seen


def _one_trial(
    target: Path, api: str, durable: bool, trial: int, rng: random.Random
) -> tuple[str, int]:
    """Run one child, kill it, check the target; returns (kind of kill, temps left)."""
    before = target.read_bytes()
    writer = f"t{trial}"
    kind = ("stage", "count", "stage", "random")[trial % 4]
    stages = _stages(api, durable)
    stage = stages[(trial // 2) % len(stages)]  # every stage in turn
    kill_seq = rng.randint(1, 3)
    proc = spawn(
        "loop",
        {
            "target": str(target),
            "api": api,
            "durable": durable,
            "seed": rng.randrange(1 << 30),
            "writer": writer,
            "stepped": kind == "stage",
        },
    )
    try:
        seen = _drive(proc, kind, stage, kill_seq, rng)
    finally:  # also when an assertion failed: never leave the child behind
        seen_at_kill = _kill(proc) if proc.returncode is None else []
    seen += seen_at_kill

    data = target.read_bytes()
    done = max((s for e, s in seen if e == "done"), default=0)
    begun = max((s for e, s in seen if e == "begin"), default=0)
    try:
        got_writer, got_seq = parse_version(data)
    except ValueError as exc:
        pytest.fail(f"torn target after a kill ({kind} {stage} {kill_seq}, {seen[-3:]}): {exc}")
    if got_writer != writer:
        assert done == 0 and data == before, "an older version came back after a kill"
        got_seq = 0
    assert done <= got_seq <= begun, (done, got_seq, begun, seen[-3:])

    left = temps(target.parent)
    assert sorted(os.listdir(target.parent)) == sorted([target.name, *left])
    assert len(left) <= 1, left
    if kind == "stage":
        # The kill landed exactly at `stage` of write `kill_seq`: the outcome is exact.
        published = stage in ("renamed", "done")
        assert got_seq == (kill_seq if published else kill_seq - 1), (stage, got_seq)
        has_temp = stage in (*IN_BLOCK, *BEFORE_PUBLISH)
        assert len(left) == (1 if has_temp else 0), (stage, left)
        totals[f"stage:{stage}"] += 1
    for name in left:  # what clean_stale_temps is for; removed here to keep trials apart
        os.unlink(target.parent / name)
    return kind, len(left)


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "nondurable"])
@pytest.mark.parametrize("api", APIS)
def test_sigkill_leaves_one_whole_version(tmp_path: Path, api: str, durable: bool) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    target = tmp_path / "target"
    target.write_bytes(make_version("initial", 0, 1000))
    count = trials(14)
    kinds: Counter[str] = Counter()
    left_total = 0
    for trial in range(count):
        kind, left = _one_trial(target, api, durable, trial, rng)
        kinds[kind] += 1
        left_total += left
    totals["kills"] += count
    totals["temps left by killed writers"] += left_total
    print(
        f"\n{api} durable={durable}: {count} kills {dict(kinds)}, {left_total} temps left "
        f"by killed writers (seed {seed}); all kills so far: {dict(totals)}"
    )
    parse_version(target.read_bytes())
    assert temps(tmp_path) == []
