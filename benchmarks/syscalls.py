"""Figure 7: system calls of one small durable write, ours against the hand-written one.

A child process (this file with --child) writes once to warm up (lazy imports, first-use
caches), then writes again between two marker `stat` calls; `strace -f -o` records it and
the calls between the markers are counted by name. The first (cold) write is counted too.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

from common import Config, Row, at_most, skipped

MARKS = ("/atomicfile-bench-mark-a", "/atomicfile-bench-mark-b", "/atomicfile-bench-mark-c")
_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?([a-z_0-9]+)\(")


def _mark(name: str) -> None:
    try:
        os.stat(name)
    except FileNotFoundError:
        pass


def child(kind: str, target: str) -> None:
    """Runs under strace: mark, cold write, mark, warm write, mark."""
    data = b"x" * 1024
    durable = not kind.endswith("_fast")
    if kind.startswith("ours"):
        from atomicfile import AtomicFile

        def write() -> None:
            with AtomicFile(target, "wb", durable=durable) as f:
                f.write(data)
    else:
        from small_files import hand_written

        def write() -> None:
            hand_written(target, data, durable)

    with open(target, "wb") as f:  # an existing target, as in a rewrite
        f.write(data)
    _mark(MARKS[0])
    write()
    _mark(MARKS[1])
    write()
    _mark(MARKS[2])


def count(kind: str, directory: str) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """(cold, warm) syscall counts of one write of `kind`."""
    trace = os.path.join(directory, f"{kind}.strace")
    target = os.path.join(directory, f"{kind}.bin")
    subprocess.run(
        ["strace", "-f", "-qq", "-o", trace, sys.executable, __file__, "--child", kind, target],
        check=True, capture_output=True,
    )  # fmt: skip
    with open(trace, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    at = [next(i for i, line in enumerate(lines) if mark in line) for mark in MARKS]
    parts = []
    for start, end in ((at[0], at[1]), (at[1], at[2])):
        calls: collections.Counter[str] = collections.Counter()
        for line in lines[start + 1 : end]:
            match = _CALL.match(line)
            if match:  # "<... x resumed>" lines continue a call already counted
                calls[match.group(1)] += 1
        parts.append(calls)
    return parts[0], parts[1]


def diff(ours: collections.Counter[str], hand: collections.Counter[str]) -> str:
    names = sorted(set(ours) | set(hand))
    parts = [f"{n} {ours[n] - hand[n]:+d}" for n in names if ours[n] != hand[n]]
    return ", ".join(parts) or "none"


def run(cfg: Config) -> list[Row]:
    what = "syscalls of one small durable write (warm)"
    if shutil.which("strace") is None:
        return [skipped("syscalls", "7", what, "<= hand + 3", "strace not found")]
    directory = tempfile.mkdtemp(dir=cfg.root)
    try:
        ours_cold, ours = count("ours", directory)
        hand_cold, hand = count("hand", directory)
        _, ours_fast = count("ours_fast", directory)
        _, hand_fast = count("hand_fast", directory)
    finally:
        shutil.rmtree(directory)
    n_ours, n_hand = sum(ours.values()), sum(hand.values())
    extra = n_ours - n_hand
    return [
        Row(
            "syscalls", "7", what, f"{n_ours} calls", f"{n_hand} calls",
            extra, f"<= {n_hand + 3} (hand + 3)", at_most(n_ours, n_hand + 3),
            f"value = ours - hand; differ: {diff(ours, hand)}",
        ),
        Row(
            "syscalls", "7", "syscalls of one small write, durable=False (warm)",
            f"{sum(ours_fast.values())} calls", f"{sum(hand_fast.values())} calls",
            sum(ours_fast.values()) - sum(hand_fast.values()), "report", "info",
            f"value = ours - hand; differ: {diff(ours_fast, hand_fast)}",
        ),
        Row(
            "syscalls", "7", "syscalls of the first (cold) write in a process",
            f"{sum(ours_cold.values())} calls", f"{sum(hand_cold.values())} calls",
            sum(ours_cold.values()) - sum(hand_cold.values()), "report", "info",
            "includes lazy imports on first use",
        ),
    ]  # fmt: skip


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child(sys.argv[2], sys.argv[3])
