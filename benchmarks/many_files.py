"""Issue 14's figures: many files at once.

1. 2,000 new 1 KiB files written durably through one `AtomicBatch`, against 2,000
   hand-written `tempfile.mkstemp` + write + rename writes without any fsync (target:
   >= 0.85x their speed, issue 23, whose baseline that loop is; issue 14 asked 0.7x).
   Beside it, for information: a stricter baseline (raw `os.open` of fixed temp names, no
   mkstemp), our batch against it too, and the ways to make N temps durable together,
   each a whole write-then-publish of the same 2,000 files by hand: an fsync per temp,
   fsyncs from 8 threads, one Linux syncfs.
2. A 2,000-file tree (20 directories of 100 files) written through `AtomicDirectory`
   (durable), against plain `open()` writes of the same tree followed by one `os.sync()`
   (target: >= 0.9x).

Every figure is a ratio against a baseline run in the same process, interleaved round by
round (see common.py). Run from the repository root:

    python benchmarks/many_files.py [--quick] [--rounds N] [--root DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from common import Config, Row, at_least, interleave, med, paired_ratio, ratio_range, settle

from atomicfile import AtomicBatch, AtomicDirectory

DATA = os.urandom(1024)
_libc = ctypes.CDLL(None, use_errno=True)


def timed(setup: Callable[[], str], body: Callable[[str], None]) -> Callable[[], float]:
    """A batch for `interleave`: untimed setup (a fresh directory, no dirty pages), then
    the timed body."""

    def batch() -> float:
        where = setup()
        settle()
        start = time.perf_counter()
        body(where)
        return time.perf_counter() - start

    return batch


def fresh(root: str, name: str) -> Callable[[], str]:
    """A new empty directory per batch, the earlier ones kept until the run ends (the whole
    scratch root goes then). Never a removal before a timed batch: ext4 without a journal
    (the project's machine) gives a new file no inode freed in the last minutes (up to
    five), and finds one by reading past each of them (`recently_deleted()` in its inode
    allocator), so 2,000 files removed just before made every create of the next batch pay
    that scan, whatever the variant (a third of the mkstemp loop's time there; `perf` put
    over half of its samples in that scan). The same holds between runs: the next run
    started within five minutes pays for this one's removal."""
    rounds = itertools.count()

    def setup() -> str:
        path = os.path.join(root, f"{name}.{next(rounds)}")
        os.mkdir(path)
        return path

    return setup


# -- figure 1: N new files, one durability point --------------------------------------


def hand_mkstemp(directory: str, n: int) -> None:
    """The baseline (issue 23's): mkstemp + write + close + rename, n times, no fsync."""
    for i in range(n):
        fd, temp = tempfile.mkstemp(dir=directory)
        os.write(fd, DATA)
        os.close(fd)
        os.replace(temp, os.path.join(directory, f"f{i:05d}"))


def hand_no_fsync(directory: str, n: int) -> None:
    """The stricter loop: temp + write + close + rename, n times, no fsync at all, with
    fixed temp names made relative to one directory descriptor (no mkstemp)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            final = f"f{i:05d}"
            temp = f".{final}.tmp"
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dfd
            )
            os.write(fd, DATA)
            os.close(fd)
            os.rename(temp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def hand_together(directory: str, n: int, how: str) -> None:
    """Write n temps, make them durable together (`how`), rename all, one dir fsync."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        temps = []
        for i in range(n):
            final = f"f{i:05d}"
            temp = f".{final}.tmp"
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dfd
            )
            os.write(fd, DATA)
            temps.append((fd, temp, final))
        if how == "fsync each":
            for fd, _, _ in temps:
                os.fsync(fd)
        elif how == "fsync, 8 threads":
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(os.fsync, [fd for fd, _, _ in temps]))
        elif how == "syncfs once" and _libc.syncfs(temps[0][0]) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
        for fd, temp, final in temps:
            os.close(fd)
            os.rename(temp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)


def batch_durable(directory: str, n: int) -> None:
    with AtomicBatch() as batch:
        for i in range(n):
            batch.write(os.path.join(directory, f"f{i:05d}"), DATA)


def per_file(directory: str, n: int, durable: bool) -> None:
    """For context: one AtomicFile per file (durable: today's way; not: the per-file cost
    of AtomicFile itself, which the batch also pays)."""
    from atomicfile import atomic_write

    for i in range(n):
        atomic_write(os.path.join(directory, f"f{i:05d}"), DATA, durable=durable)


# -- figure 2: a whole tree ------------------------------------------------------------


def fill_tree(root: str, n: int) -> None:
    per_dir = 100
    for d in range(max(1, n // per_dir)):
        sub = os.path.join(root, f"d{d:02d}")
        os.mkdir(sub)
        for i in range(per_dir):
            with open(os.path.join(sub, f"f{i:03d}"), "wb") as f:
                f.write(DATA)


def tree_plain_sync(parent: str, n: int) -> None:
    target = os.path.join(parent, "site")
    os.mkdir(target)
    fill_tree(target, n)
    os.sync()


def tree_atomic(parent: str, n: int) -> None:
    with AtomicDirectory(os.path.join(parent, "site")) as d:
        fill_tree(str(d), n)


def tree_setup(root: str, name: str, n: int, old: bool) -> Callable[[], str]:
    """A fresh parent; with `old`, holding an old 'site' tree of the same shape to replace."""

    new_parent = fresh(root, name)

    def setup() -> str:
        parent = new_parent()
        if old:
            site = os.path.join(parent, "site")
            os.mkdir(site)
            fill_tree(site, n)
        return parent

    return setup


def run(cfg: Config) -> list[Row]:
    n = cfg.small_n
    root = cfg.root
    rows: list[Row] = []
    benches = {
        "hand mkstemp, no fsync": timed(fresh(root, "b0"), lambda d: hand_mkstemp(d, n)),
        "raw os.open loop, no fsync": timed(fresh(root, "b7"), lambda d: hand_no_fsync(d, n)),
        "AtomicBatch, durable": timed(fresh(root, "b1"), lambda d: batch_durable(d, n)),
        "fsync each": timed(fresh(root, "b2"), lambda d: hand_together(d, n, "fsync each")),
        "fsync, 8 threads": timed(
            fresh(root, "b3"), lambda d: hand_together(d, n, "fsync, 8 threads")
        ),
        "syncfs once": timed(fresh(root, "b4"), lambda d: hand_together(d, n, "syncfs once")),
        "AtomicFile each, durable": timed(fresh(root, "b5"), lambda d: per_file(d, n, True)),
        "AtomicFile each, durable=False": timed(fresh(root, "b6"), lambda d: per_file(d, n, False)),
    }
    times = interleave(benches, cfg.rounds)
    base = "hand mkstemp, no fsync"
    raw = "raw os.open loop, no fsync"
    batch = "AtomicBatch, durable"
    # Every variant against the target's baseline; then, so that nothing is hidden, our
    # batch against the stricter raw loop too.
    others = [(name, base) for name in benches if name not in (base, batch)]
    pairs = [(batch, base), *others, (batch, raw)]
    for name, against in pairs:
        ratio = paired_ratio(times, against, name)
        target = name == batch and against == base
        what = "hand mkstemp+rename" if against == base else "the raw os.open+rename loop"
        rows.append(
            Row(
                "many",
                "14.1" if target else "14.1x",
                f"{n} new 1 KiB files: {name} vs {what} without fsync",
                f"{med(times[name]) * 1e3:.0f} ms",
                f"{med(times[against]) * 1e3:.0f} ms",
                ratio,
                ">= 0.85x" if target else "-",
                at_least(ratio, 0.85) if target else "info",
                spread=ratio_range(times, against, name),
            )
        )
    plain = "open() + os.sync()"
    trees = {
        plain: timed(tree_setup(root, "plain", n, False), lambda d: tree_plain_sync(d, n)),
        "new": timed(tree_setup(root, "atomic", n, False), lambda d: tree_atomic(d, n)),
        "replacing": timed(tree_setup(root, "replace", n, True), lambda d: tree_atomic(d, n)),
    }
    times = interleave(trees, cfg.rounds)
    for name, figure, what in (
        ("new", "14.2", "new target"),
        ("replacing", "14.2x", "replacing a tree of the same shape (its removal included)"),
    ):
        ratio = paired_ratio(times, plain, name)
        rows.append(
            Row(
                "many",
                figure,
                f"{n}-file tree: AtomicDirectory (durable), {what}, vs open() + os.sync()",
                f"{med(times[name]) * 1e3:.0f} ms",
                f"{med(times[plain]) * 1e3:.0f} ms",
                ratio,
                ">= 0.9x" if figure == "14.2" else "-",
                at_least(ratio, 0.9) if figure == "14.2" else "info",
                spread=ratio_range(times, plain, name),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 files, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--root", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="atomicfile-many-", dir=args.root)
    try:
        cfg = Config.make(root, args.quick, args.rounds)
        rows = run(cfg)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"python {sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}, root {root}"
    )
    print("| figure | what | ours | baseline | ratio (spread) | target | verdict |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        value = "-" if r.value is None else f"{r.value:.2f}x ({r.spread})"
        cells = (r.figure, r.what, r.ours, r.baseline, value, r.target, r.verdict)
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
