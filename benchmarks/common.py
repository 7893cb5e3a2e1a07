"""Shared pieces of the benchmarks: interleaved timing, the result rows, the run's setting.

Every timed figure is a ratio against a baseline run in the same process, interleaved with
it round by round, so that a noisy neighbour slows both sides alike.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: One timed batch: does its own (untimed) setup, returns the seconds the batch took.
Batch = Callable[[], float]


def _nothing() -> None:
    pass


@dataclass
class Ops:
    """A benchmark made of many small operations: `run(start, stop)` does ops start..stop-1.

    `setup` and `teardown` run untimed before and after each round (e.g. a fresh directory).
    """

    run: Callable[[int, int], None]
    setup: Callable[[], None] = _nothing
    teardown: Callable[[], None] = _nothing


now = time.perf_counter


@dataclass
class Config:
    """Counts and sizes for one run (`--quick` shrinks them)."""

    root: str  # scratch directory on the file system being measured
    quick: bool
    rounds: int  # interleaved rounds for the timed comparisons of many small writes
    big_rounds: int  # rounds for the single large writes (figures 4, 5, 6)
    small_n: int  # small writes per batch (figures 1-3, 6)
    big_mib: int  # the large file (figures 4-6)
    small_big_mib: int  # the smaller size for the memory comparison (figure 4)
    import_runs: int  # python -X importtime runs (figure 8)

    @classmethod
    def make(cls, root: str, quick: bool, rounds: int | None) -> Config:
        if quick:
            return cls(root, True, rounds or 3, rounds or 3, 200, 32, 8, 5)
        return cls(root, False, rounds or 5, rounds or 9, 2000, 256, 64, 11)


@dataclass
class Row:
    """One line of the result table."""

    group: str  # the --only name that produces it
    figure: str  # issue 6's figure number, with a letter for variants
    what: str
    ours: str  # our median, for context (never the verdict)
    baseline: str  # the baseline's median, for context
    value: float | None  # the ratio (or the figure the target is about)
    target: str
    verdict: str  # "met", "MISSED", "info" or "skipped"
    note: str = ""
    spread: str = ""  # lowest-highest per-round ratio, for ratio rows


def orders(names: list[str], seed: int) -> Iterator[list[str]]:
    """Endless shuffled orders of `names` (seeded: runs are repeatable), so no bench always
    runs right after the same other one (a previous bench's fsync or writeback can slow
    the next) nor always first."""
    shuffle = random.Random(seed).shuffle
    while True:
        order = list(names)
        shuffle(order)
        yield order


def interleave(batches: dict[str, Batch], rounds: int) -> dict[str, list[float]]:
    """Run every batch once per round, in a shuffled order each round; one warm-up first.

    Returns each batch's list of round times (seconds). Pair them round by round with
    `paired_ratio`: within a round both ran under the same machine load.
    """
    names = list(batches)
    for name in names:  # warm-up: imports, caches, the first file creation
        batches[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _, order in zip(range(rounds), orders(names, 6), strict=False):
        for name in order:
            gc.collect()
            times[name].append(batches[name]())
    return times


def interleave_ops(
    benches: dict[str, Ops],
    n: int,
    rounds: int,
    block: int = 50,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Each round, every bench does its `n` ops in blocks of `block`, the benches taking
    turns block by block in a shuffled order, so that all of them see the same moments of
    machine load; a round's time for a bench is the sum of its blocks. One short warm-up
    round first. `cpu`, if given, receives each bench's [user, system] CPU seconds per op
    (this process, all threads), which tells interpreter overhead from kernel work."""
    names = list(benches)
    times: dict[str, list[float]] = {}
    used = {name: [0.0, 0.0] for name in names}
    order = orders(names, 6)
    for warm_n, timed in ((min(n, block), False), *((n, True) for _ in range(rounds))):
        for name in names:
            benches[name].setup()
        settle()
        gc.collect()
        spent = dict.fromkeys(names, 0.0)
        for start in range(0, warm_n, block):
            stop = min(start + block, warm_n)
            for name in next(order):
                before = resource.getrusage(resource.RUSAGE_SELF)
                t = now()
                benches[name].run(start, stop)
                spent[name] += now() - t
                after = resource.getrusage(resource.RUSAGE_SELF)
                if timed:
                    used[name][0] += after.ru_utime - before.ru_utime
                    used[name][1] += after.ru_stime - before.ru_stime
        for name in names:
            benches[name].teardown()
        if timed:
            for name in names:
                times.setdefault(name, []).append(spent[name])
    if cpu is not None:
        for name, (user, system) in used.items():
            cpu[name] = [user / (n * rounds), system / (n * rounds)]
    return times


def cpu_note(cpu: dict[str, list[float]], ours: str, base: str) -> str:
    """Where the time went, per op: user (interpreter) and system (kernel) CPU."""
    (ou, os_), (bu, bs) = cpu[ours], cpu[base]
    return (
        f"CPU per op, ours vs baseline: user {ou * 1e6:.0f} vs {bu * 1e6:.0f} us, "
        f"system {os_ * 1e6:.0f} vs {bs * 1e6:.0f} us"
    )


def paired_ratio(times: dict[str, list[float]], baseline: str, ours: str) -> float:
    """Median over rounds of baseline_time / our_time: > 1 means we are faster."""
    return statistics.median(b / o for b, o in zip(times[baseline], times[ours], strict=True))


def ratio_range(times: dict[str, list[float]], baseline: str, ours: str) -> str:
    """The lowest and highest per-round ratio: how much the rounds disagreed."""
    ratios = [b / o for b, o in zip(times[baseline], times[ours], strict=True)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def med(values: list[float]) -> float:
    return statistics.median(values)


def at_least(value: float, target: float) -> str:
    return "met" if value >= target else "MISSED"


def at_most(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def per_op_us(seconds: list[float], n: int) -> str:
    return f"{med(seconds) / n * 1e6:.0f} us/op"


def mib_per_s(seconds: list[float], mib: int) -> str:
    return f"{mib / med(seconds):.0f} MiB/s"


def skipped(group: str, figure: str, what: str, target: str, why: str) -> Row:
    return Row(group, figure, what, "-", "-", None, target, "skipped", why)


def fresh_dir(parent: str, name: str) -> str:
    """An empty directory `parent/name` (removed first if it exists)."""
    path = os.path.join(parent, name)
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path)
    return path


def settle() -> None:
    """Start a batch with no dirty pages of the previous one still being written back."""
    os.sync()


# -- where the run happened ------------------------------------------------------------


def mount_of(path: str) -> tuple[str, str, str, str]:
    """(mount point, device, fs type, options) of the file system holding `path`."""
    real = os.path.realpath(path)
    best = ("?", "?", "?", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point, fstype, options = line.split()[:4]
                point = point.replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[0].replace("?", "")):
                    best = (point, device, fstype, options)
    except OSError:
        pass
    if best[2] == "?":  # no /proc/mounts (macOS): ask stat(1)
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", real], capture_output=True, text=True, check=False
        )
        best = ("?", "?", out.stdout.strip() or "?", "?")
    return best


def machine() -> list[str]:
    """A few lines naming the machine and interpreter."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            mem = f"{int(info.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return [
        f"machine:    {platform.system()} {platform.release()}, {cpu}, "
        f"{os.cpu_count()} CPUs, {mem}",
        f"python:     {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
    ]


def load() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "?"
