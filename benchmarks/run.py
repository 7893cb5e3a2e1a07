"""Measure atomicfile against issue 6's targets and print one table.

    python benchmarks/run.py                 # everything (about 5-10 minutes)
    python benchmarks/run.py --quick         # smaller counts, fewer rounds (about a minute)
    python benchmarks/run.py --only rewrite --only syscalls
    python benchmarks/run.py --dir /mnt/disk # where the files go (a real disk, not tmpfs)

Progress goes to stderr; the table to stdout. See benchmarks/README.md for the method.
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

import async_io
import big_files
import import_time
import many_files
import small_files
import syscalls
import update
from common import Config, Row, load, machine, mount_of

import atomicfile

GROUPS: dict[str, tuple[str, Callable[[Config], list[Row]]]] = {
    "rewrite": ("1, 2: small rewrites", lambda cfg: small_files.run(cfg, "rewrite")),
    "distinct": ("3: small new files", lambda cfg: small_files.run(cfg, "distinct")),
    "stream": ("4: large file throughput", big_files.run_stream),
    "memory": ("4: large file peak memory", big_files.run_memory),
    "copy": ("5: 'a' and 'r+' copy", big_files.run_copy),
    "async": ("6: async small writes", async_io.run_calls),
    "heartbeat": ("6: event loop stalls", async_io.run_heartbeat),
    "syscalls": ("7: syscall count", syscalls.run),
    "import": ("8: import time", import_time.run),
    "many": ("14: many files (AtomicBatch, AtomicDirectory)", many_files.run),
    "update": (
        "20.1: atomic_update uncontended",
        lambda cfg: update.uncontended(cfg.root, cfg.small_n // 2, cfg.rounds),
    ),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts and 3 rounds")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these groups (repeat or comma-separate): {', '.join(GROUPS)}",
    )
    parser.add_argument(
        "--dir",
        default="/var/tmp",
        help="parent of the scratch directory; durable figures need a real disk (default /var/tmp)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds (default 5 for small writes, 9 for large ones; quick 3)",
    )
    args = parser.parse_args(argv)
    chosen = [n for item in args.only or [] for n in item.split(",") if n]
    unknown = [n for n in chosen if n not in GROUPS]
    if unknown:
        parser.error(f"unknown group {', '.join(unknown)}: choose from {', '.join(GROUPS)}")
    args.groups = [name for name in GROUPS if name in chosen] if chosen else list(GROUPS)
    return args


def source() -> str:
    """Which atomicfile was measured: its path, and the git commit when it is a checkout."""
    package = os.path.dirname(atomicfile.__file__ or ".")
    text = f"atomicfile {atomicfile.__version__} from {package}"
    try:
        head = subprocess.run(
            ["git", "-C", package, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", package, "status", "--porcelain", "--", "."],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return text
    return f"{text}, git {head}" + (" + uncommitted changes" if dirty else "")


def table(rows: list[Row]) -> list[str]:
    head = ("fig", "what", "ours", "baseline", "value", "rounds", "target", "verdict")
    cells = []
    notes: list[str] = []
    for row in rows:
        value = "-" if row.value is None else f"{row.value:.2f}"
        verdict = row.verdict
        if row.note:
            notes.append(row.note)
            verdict += f" [{len(notes)}]"
        cells.append((
            row.figure, row.what, row.ours, row.baseline, value, row.spread or "-", row.target,
            verdict,
        ))  # fmt: skip
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(s.ljust(w) for s, w in zip(c, widths, strict=True)).rstrip()

    out = [line(head), line(tuple("-" * w for w in widths))]
    out += [line(c) for c in cells]
    out += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="atomicfile-bench-", dir=args.dir)
    cfg = Config.make(root, args.quick, args.rounds)
    point, device, fstype, options = mount_of(root)
    started, load_before = time.monotonic(), load()
    rows: list[Row] = []
    try:
        for name in args.groups:
            title, run = GROUPS[name]
            print(f"[{time.monotonic() - started:6.0f}s] {name}: figure {title}", file=sys.stderr)
            rows += run(cfg)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    header = [
        f"atomicfile benchmarks (issue 6){' --quick' if cfg.quick else ''}",
        f"measured:   {source()}",
        *machine(),
        f"file system: {fstype} on {device} at {point} ({options}); scratch dir under "
        f"{os.path.realpath(args.dir)}",
        f"run: {elapsed:.0f} s, {cfg.rounds} interleaved rounds, load average "
        f"{load_before} before, {load()} after",
        "value: a ratio = baseline time / our time (our throughput / the baseline's): higher",
        "  is better, 1.00 = as fast, 0.50 = we take twice as long; median over rounds of",
        "  the per-round ratio ('rounds': the lowest-highest per-round ratio). Rows whose",
        "  target has a unit show that quantity instead.",
        "ours/baseline: medians, for context only (absolute times vary with the machine).",
    ]
    if fstype in ("tmpfs", "ramfs"):
        header.append("WARNING: tmpfs: fsync costs nothing here; durable figures mean little")
    print("\n".join([*header, "", *table(rows)]))
    missed = [r for r in rows if r.verdict == "MISSED"]
    print(
        f"\n{sum(r.verdict == 'met' for r in rows)} met, {len(missed)} missed, "
        f"{sum(r.verdict == 'skipped' for r in rows)} skipped, "
        f"{sum(r.verdict == 'info' for r in rows)} info"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
