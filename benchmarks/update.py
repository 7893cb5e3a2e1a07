"""Issue 20's figures: read-modify-write without lost updates.

1. Uncontended: `atomic_update` of a 1 KiB file against `atomic_write` of the same bytes
   (target: >= 0.9x; the lock costs an open, a flock, an fstat and a stat, plus the read).
   Durable, and `durable=False` for information (no fsync to hide the lock's cost); and
   `atomic_update_async` against `atomic_write_async` (asyncio), for information.
2. Contended: 8 processes incrementing one counter, updates per second, against a
   `filelock.FileLock` (a `.lock` file beside the target) around a read and an
   `atomic_write` (target: >= 1.0x), and whether a lock file is left behind.
3. The sync wait with a timeout polls (a blocking flock can't be given a deadline): the
   same 8 processes with `timeout=60`, against the blocking wait of `timeout=None`.

Each round runs every variant once, in a shuffled order, and ratios are taken round by
round (see common.py). filelock is not a dependency of atomicfile: install it into the
benchmark's environment. Run from the repository root:

    python benchmarks/update.py [--quick] [--rounds N] [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from common import Ops, Row, at_least, interleave, interleave_ops, med, paired_ratio, ratio_range

from atomicfile import atomic_update, atomic_write

DATA = os.urandom(1024)
PROCESSES = 8


def uncontended(root: str, n: int, rounds: int) -> list[Row]:
    rows = []
    for durable in (True, False):
        path = os.path.join(root, f"one-{durable}")
        atomic_write(path, DATA)

        def write(start: int, stop: int, path: str = path, durable: bool = durable) -> None:
            for _ in range(start, stop):
                atomic_write(path, DATA, durable=durable)

        def update(start: int, stop: int, path: str = path, durable: bool = durable) -> None:
            for _ in range(start, stop):
                atomic_update(path, lambda old: DATA, binary=True, durable=durable)

        benches = {"atomic_write": Ops(write), "atomic_update": Ops(update)}
        times = interleave_ops(benches, n, rounds)
        ratio = paired_ratio(times, "atomic_write", "atomic_update")
        what = "durable" if durable else "durable=False"
        rows.append(
            Row(
                "update",
                "20.1" if durable else "20.1b",
                f"{n} uncontended atomic_update of 1 KiB ({what}) vs atomic_write",
                f"{med(times['atomic_update']) / n * 1e6:.0f} us/op",
                f"{med(times['atomic_write']) / n * 1e6:.0f} us/op",
                ratio,
                ">= 0.9x" if durable else "-",
                at_least(ratio, 0.9) if durable else "info",
                spread=ratio_range(times, "atomic_write", "atomic_update"),
            )
        )
    rows.append(uncontended_async(root, n, rounds))
    return rows


def uncontended_async(root: str, n: int, rounds: int) -> Row:
    """The async forms on one asyncio loop (kept across blocks): two thread jobs for an
    update (lock + open + read, then write + commit) against one for a write."""
    import asyncio

    from atomicfile import atomic_update_async, atomic_write_async

    path = os.path.join(root, "one-async")
    atomic_write(path, DATA)
    loop = asyncio.new_event_loop()

    async def writes(count: int) -> None:
        for _ in range(count):
            await atomic_write_async(path, DATA)

    async def updates(count: int) -> None:
        for _ in range(count):
            await atomic_update_async(path, lambda old: DATA, binary=True)

    benches = {
        "write": Ops(lambda a, b: loop.run_until_complete(writes(b - a))),
        "update": Ops(lambda a, b: loop.run_until_complete(updates(b - a))),
    }
    try:
        times = interleave_ops(benches, n, rounds)
    finally:
        loop.close()
    ratio = paired_ratio(times, "write", "update")
    return Row(
        "update",
        "20.1c",
        f"{n} uncontended atomic_update_async of 1 KiB (durable) vs atomic_write_async",
        f"{med(times['update']) / n * 1e6:.0f} us/op",
        f"{med(times['write']) / n * 1e6:.0f} us/op",
        ratio,
        "-",
        "info",
        spread=ratio_range(times, "write", "update"),
    )


# -- contended: 8 worker processes, started together through a pipe ---------------------


def worker(kind: str, path: str, n: int) -> None:
    """One process's share of the contended run: n increments of the counter at `path`."""

    def bump(old: str | None) -> str:
        return str(int(old or "0") + 1)

    if kind == "filelock":
        from filelock import FileLock

        lock = FileLock(path + ".lock")
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(n):
        if kind == "filelock":
            with lock:
                try:
                    with open(path) as f:
                        old: str | None = f.read()
                except FileNotFoundError:
                    old = None
                atomic_write(path, bump(old))
        else:
            atomic_update(path, bump, timeout=None if kind == "blocking" else 60.0)


def contended_batch(root: str, kind: str, each: int) -> Callable[[], float]:
    """A batch for `interleave`: 8 processes x `each` increments; returns the seconds from
    "go" until all are done (process start-up is not timed)."""

    def batch() -> float:
        where = os.path.join(root, kind)
        shutil.rmtree(where, ignore_errors=True)
        os.mkdir(where)
        path = os.path.join(where, "counter")
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", kind, path, str(each)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        start = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.close()
        for p in procs:
            assert p.wait() == 0
            assert p.stdout is not None
            p.stdout.close()
        took = time.perf_counter() - start
        with open(path) as f:
            assert f.read() == str(PROCESSES * each), "an update was lost"
        left[kind] = sorted(os.listdir(where))
        return took

    return batch


#: What each contended run left in its directory (the last round's).
left: dict[str, list[str]] = {}


def contended(root: str, each: int, rounds: int) -> list[Row]:
    kinds = ("blocking", "polled", "filelock")
    times = interleave({k: contended_batch(root, k, each) for k in kinds}, rounds)
    total = PROCESSES * each
    rate = {k: f"{total / med(times[k]):.0f} updates/s" for k in kinds}
    ratio = paired_ratio(times, "filelock", "blocking")
    polled = paired_ratio(times, "blocking", "polled")
    polled_vs_filelock = paired_ratio(times, "filelock", "polled")
    return [
        Row(
            "update",
            "20.2",
            f"{PROCESSES} processes x {each} atomic_update vs FileLock + read + atomic_write",
            rate["blocking"],
            rate["filelock"],
            ratio,
            ">= 1.0x",
            at_least(ratio, 1.0),
            note=f"left behind: ours {left['blocking']}, filelock {left['filelock']}",
            spread=ratio_range(times, "filelock", "blocking"),
        ),
        Row(
            "update",
            "20.3",
            "the same with timeout=60 (polled wait) vs timeout=None (blocking flock)",
            rate["polled"],
            rate["blocking"],
            polled,
            "-",
            "info",
            note=f"polled vs filelock: {polled_vs_filelock:.2f}x",
            spread=ratio_range(times, "blocking", "polled"),
        ),
    ]


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--root", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--only", choices=("uncontended", "contended"), default=None)
    args = parser.parse_args()
    try:
        import filelock  # noqa: F401
    except ImportError:
        sys.exit("install filelock into this environment: it is the contended baseline")
    rounds = args.rounds or (3 if args.quick else 7)
    root = tempfile.mkdtemp(prefix="atomicfile-update-", dir=args.root)
    try:
        rows = []
        if args.only != "contended":
            rows += uncontended(root, 200 if args.quick else 1000, rounds)
        if args.only != "uncontended":
            rows += contended(root, 25 if args.quick else 100, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"python {sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}, "
        f"{os.cpu_count()} CPUs, root {root}"
    )
    print("| figure | what | ours | baseline | ratio (spread) | target | verdict | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        value = "-" if r.value is None else f"{r.value:.2f}x ({r.spread})"
        cells = (r.figure, r.what, r.ours, r.baseline, value, r.target, r.verdict, r.note)
        print("| " + " | ".join(cells) + " |")
    sys.exit(1 if any(r.verdict == "MISSED" for r in rows) else 0)


if __name__ == "__main__":
    main()
