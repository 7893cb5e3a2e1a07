"""Figures 4 and 5: one large file.

4: a file streamed in 1 MiB chunks against plain `open(path, "wb")` writes (throughput), and
   the peak memory of a child process doing it, at two file sizes.
5: 'a' and 'r+' on a large target (the temp starts as a kernel copy of it) against
   `shutil.copyfile` of the same file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Literal

from common import (
    Batch,
    Config,
    Row,
    at_least,
    at_most,
    fresh_dir,
    interleave,
    mib_per_s,
    now,
    paired_ratio,
    ratio_range,
    settle,
)

from atomicfile import AtomicFile

MIB = 1 << 20
CHUNK = os.urandom(MIB)


def stream_ours(path: str, mib: int, durable: bool) -> Batch:
    def batch() -> float:
        settle()
        start = now()
        with AtomicFile(path, "wb", durable=durable) as f:
            for _ in range(mib):
                f.write(CHUNK)
        return now() - start

    return batch


def stream_plain(path: str, mib: int, durable: bool) -> Batch:
    def batch() -> float:
        settle()
        start = now()
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(CHUNK)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        return now() - start

    return batch


def stream_hand(path: str, mib: int, durable: bool) -> Batch:
    """The hand-written temp + rename protocol, streamed the same way."""

    def batch() -> float:
        settle()
        start = now()
        directory = os.path.dirname(path)
        fd, temp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "wb") as f:
            for _ in range(mib):
                f.write(CHUNK)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, path)
        if durable:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dir_fd)
            os.close(dir_fd)
        return now() - start

    return batch


def run_stream(cfg: Config) -> list[Row]:
    directory = fresh_dir(cfg.root, "stream")
    mib = cfg.big_mib
    # Each variant rewrites its own file, so each also pays for freeing the old blocks.
    batches = {
        "ours_fast": stream_ours(os.path.join(directory, "ours_fast"), mib, False),
        "plain": stream_plain(os.path.join(directory, "plain"), mib, False),
        "ours_durable": stream_ours(os.path.join(directory, "ours_durable"), mib, True),
        "plain_fsync": stream_plain(os.path.join(directory, "plain_fsync"), mib, True),
        "hand_fast": stream_hand(os.path.join(directory, "hand_fast"), mib, False),
        "hand_durable": stream_hand(os.path.join(directory, "hand_durable"), mib, True),
    }
    times = interleave(batches, cfg.big_rounds)
    shutil.rmtree(directory)
    rows = []
    for ours, base, hand, what in (
        ("ours_fast", "plain", "hand_fast", "durable=False vs open('wb')"),
        ("ours_durable", "plain_fsync", "hand_durable", "durable vs open('wb') + fsync"),
    ):
        value = paired_ratio(times, base, ours)
        rows.append(Row(
            "stream", "4", f"{mib} MiB in 1 MiB chunks, {what}",
            mib_per_s(times[ours], mib), mib_per_s(times[base], mib),
            value, ">= 0.95", at_least(value, 0.95),
            f"median of {cfg.big_rounds}; a hand-written mkstemp + os.replace scores "
            f"{paired_ratio(times, base, hand):.2f} against the same baseline, "
            f"ours vs it {paired_ratio(times, hand, ours):.2f}",
            ratio_range(times, base, ours),
        ))  # fmt: skip
    return rows


_CHILD = """
import os, resource, sys
path, mib, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
chunk = os.urandom(1 << 20)
if kind == "ours":
    from atomicfile import AtomicFile
    f = AtomicFile(path, "wb")
else:
    f = open(path, "wb")
with f as out:
    for _ in range(mib):
        out.write(chunk)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(path: str, mib: int, kind: str) -> int:
    """Peak RSS (KiB, Linux's ru_maxrss unit) of a fresh process writing `mib` MiB."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, path, str(mib), kind],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    os.unlink(path)
    return int(out.stdout.strip())


def run_memory(cfg: Config) -> list[Row]:
    directory = fresh_dir(cfg.root, "memory")
    path = os.path.join(directory, "big")
    small, big = cfg.small_big_mib, cfg.big_mib
    rss: dict[tuple[str, int], list[int]] = {}
    for _ in range(3):  # interleaved; the smallest reading of each is the cleanest
        for kind in ("ours", "plain"):
            for mib in (small, big):
                rss.setdefault((kind, mib), []).append(peak_rss_kib(path, mib, kind))
    shutil.rmtree(directory)
    peak = {key: min(values) for key, values in rss.items()}
    growth = (peak["ours", big] - peak["ours", small]) / 1024
    plain_growth = (peak["plain", big] - peak["plain", small]) / 1024
    row = Row(
        "memory", "4", f"peak RSS growth, {small} -> {big} MiB file (MiB)",
        f"{peak['ours', small] / 1024:.1f} -> {peak['ours', big] / 1024:.1f} MiB",
        f"{peak['plain', small] / 1024:.1f} -> {peak['plain', big] / 1024:.1f} MiB",
        growth, "<= 1.0", at_most(growth, 1.0),
        f"child process ru_maxrss; open('wb') grows {plain_growth:+.1f} MiB",
    )  # fmt: skip
    return [row]


def run_copy(cfg: Config) -> list[Row]:
    directory = fresh_dir(cfg.root, "copy")
    mib = cfg.big_mib
    source = os.path.join(directory, "source")
    with open(source, "wb") as f:
        for _ in range(mib):
            f.write(CHUNK)
    targets = {}
    for name in ("append", "rplus", "copy", "hand"):
        targets[name] = os.path.join(directory, name)
        shutil.copyfile(source, targets[name])

    def ours(mode: Literal["ab", "r+b"], path: str) -> Batch:
        def batch() -> float:
            settle()
            start = now()
            # durable=False: the copy is what is measured; shutil.copyfile does not fsync.
            with AtomicFile(path, mode, durable=False) as f:
                f.write(b"x")
            return now() - start

        return batch

    def copy() -> float:
        settle()
        start = now()
        shutil.copyfile(source, targets["copy"])  # onto the old copy, as we replace ours
        return now() - start

    def hand() -> float:
        # The same protocol by hand, no fsync: temp beside the target, copy_file_range of
        # the old content into it, one byte appended, os.replace over the target.
        settle()
        start = now()
        path = targets["hand"]
        fd, temp = tempfile.mkstemp(dir=directory)
        src = os.open(path, os.O_RDONLY)
        while os.copy_file_range(src, fd, 1 << 30):
            pass
        os.close(src)
        os.write(fd, b"x")
        os.close(fd)
        os.replace(temp, path)
        return now() - start

    batches = {
        "hand": hand,
        "append": ours("ab", targets["append"]),
        "rplus": ours("r+b", targets["rplus"]),
        "copy": copy,
    }
    times = interleave(batches, cfg.big_rounds)
    shutil.rmtree(directory)
    rows = []
    for name, mode in (("append", "a"), ("rplus", "r+")):
        value = paired_ratio(times, "copy", name)
        rows.append(Row(
            "copy", "5", f"'{mode}' on a {mib} MiB target vs shutil.copyfile",
            mib_per_s(times[name], mib), mib_per_s(times["copy"], mib),
            value, ">= 0.95", at_least(value, 0.95),
            f"median of {cfg.big_rounds}; durable=False (copyfile has no fsync); a hand-written"
            f" temp + copy_file_range + os.replace scores {paired_ratio(times, 'copy', 'hand'):.2f}"
            f" against copyfile, ours vs it {paired_ratio(times, 'hand', name):.2f}",
            ratio_range(times, "copy", name),
        ))  # fmt: skip
    return rows
