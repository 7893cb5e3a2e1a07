"""Simulated power cuts (LazyFS under ext4 on a loop device) at every point of a write.

For each writer: a dry run under strace lists its system calls on the file system under test;
then, for each call that can change the file system, a run is killed just before that call
(`strace -e inject=CALL:error=EIO:signal=SIGKILL:when=N`) and the power is cut (LazyFS
killed: its unsynced cache is lost); one more run is cut after the write returned. Each cut
is repeated in every `_rig.VARIANTS` (plain ext4; another process fsyncing another file just
before the cut; the same with ext4's `noauto_da_alloc`). Two cuts with the same calls before
them leave the same disk, so each distinct prefix runs once and is shared between writers.

Required of the library: every outcome old or new; after a durable write returned, new and
no temp file left. Three known-bad writers prove that the harness sees what it must: each
must show a torn (empty, partial, missing) target or a write lost after it returned.

Set ATOMICFILE_POWERLOSS_TABLE=FILE to write the table (markdown) to FILE: the docs include
docs/_generated/powerloss.md (docs/guarantees.md, "Power-loss tests").
Needs root, /dev/fuse, strace, e2fsprogs and LazyFS, built on first use from the copy in
lazyfs/ into a cache outside the checkout (lazyfs/README.md); skips with one line naming
what is missing and the Debian packages to install, unless ATOMICFILE_REQUIRE_ALL=1 or
ATOMICFILE_POWERLOSS_REQUIRED=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _rig import OUTCOMES, VARIANTS, Observed, Rig, classify, classify_tree
from _writer import WRITERS, tree_content

from atomicfile._naming import is_temp_name

from helpers import missing, unavailable

pytestmark = [pytest.mark.powerloss, pytest.mark.timeout(900)]

#: LazyFS's source, vendored (lazyfs/README.md).
BUILD_SCRIPT = Path(__file__).resolve().parent / "lazyfs" / "build.sh"
#: Always there on Debian (util-linux, mount, coreutils), checked all the same.
TOOLS = ("losetup", "mount", "umount", "dd")

OLD = b"old content, line after line.\n" * 400  # 12,000 bytes: three 4 KiB blocks
NEW = bytes(range(ord("a"), ord("z") + 1)) * 1000  # 26,000 bytes, written in 3 pieces

# (writer, label in the table); durable and durable=False each
GOOD = (
    ("AtomicFile-w", "`AtomicFile(p, 'wb')`"),
    ("AtomicFile-x", "`AtomicFile(p, 'xb')` (new file)"),
    ("AtomicFile-a", "`AtomicFile(p, 'ab')`"),
    ("AtomicFile-r+", "`AtomicFile(p, 'r+b')`"),
    ("atomic_write", "`atomic_write`"),
    ("async-with", "`async with AtomicFile(p, 'wb')`"),
    ("atomic_write_async", "`atomic_write_async`"),
    ("cli-write", "`atomicfile write`"),
    ("AtomicBatch", "`AtomicBatch().open(p, 'wb')`"),
    ("AtomicDirectory", "`AtomicDirectory(d)` (3 files, 2 levels)"),
)
BAD = (
    ("bad-open-write", "known bad: `open(p, 'wb').write`"),
    ("bad-rename-no-fsync", "known bad: temp + rename, no fsync"),
    ("bad-no-dir-fsync", "known bad: temp + fsync + rename, no directory fsync"),
)
LABELS = dict(GOOD + BAD)


def _as_read(files: dict[str, bytes]) -> dict[str, bytes]:
    """A tree's files as `_rig.read_tree` finds them: with their directories ("sub/")."""
    found = dict(files)
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(len(parts)):
            found["/".join(parts[: i + 1]) + "/"] = b""
    return found


OLD_TREE = _as_read(tree_content(OLD))
NEW_TREE = _as_read(tree_content(NEW))


def _missing() -> str | None:
    """What the power-loss tests can't run without, in one line; None when all is there."""
    if not sys.platform.startswith("linux"):
        return "Linux only"
    if os.geteuid() != 0:
        return "needs root (FUSE, losetup, mount)"
    for name in ("fuse", "strace", "mkfs.ext4"):
        why = missing(name)  # naming the Debian package
        if why:
            return why
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        return f"missing {', '.join(tools)}: apt-get install util-linux mount coreutils"
    return None


def _lazyfs_binary() -> Path | str:
    """The LazyFS binary, built from lazyfs/ into the cache on first use (build.sh reuses a
    build of the same tarball), or a one-line reason why there is none."""
    given = os.environ.get("ATOMICFILE_LAZYFS")
    if given:
        return Path(given) if os.access(given, os.X_OK) else f"ATOMICFILE_LAZYFS={given}: no binary"
    cache = Path(
        os.environ.get("ATOMICFILE_LAZYFS_BUILD")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atomicfile/lazyfs"
    )
    done = subprocess.run(["bash", str(BUILD_SCRIPT), str(cache)], capture_output=True, text=True)
    binary = Path((done.stdout.strip().splitlines() or [""])[-1])
    if done.returncode == 0 and os.access(binary, os.X_OK):
        return binary
    tools = missing("lazyfs-build")
    if tools:
        return f"no LazyFS build in {cache}; {tools}"
    tail = " ".join(done.stderr.strip().splitlines()[-3:])
    return f"LazyFS build failed ({BUILD_SCRIPT} {cache}): {tail or done.returncode}"


def _unavailable(reason: str) -> None:
    """Skip, or fail in CI (ATOMICFILE_REQUIRE_ALL=1; ATOMICFILE_POWERLOSS_REQUIRED=1)."""
    required = os.environ.get("ATOMICFILE_POWERLOSS_REQUIRED") == "1"
    unavailable(f"power-loss tests: {reason}", required_too=required)


def _leftovers(work: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if str(work) in line]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return mounts + [line for line in loops.splitlines() if str(work) in line]


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    reason = _missing()
    if reason:
        _unavailable(reason)
    binary = _lazyfs_binary()
    if isinstance(binary, str):
        _unavailable(binary)
        raise AssertionError  # not reached
    work = tmp_path_factory.mktemp("powerloss")
    strace = shutil.which("strace")
    assert strace is not None
    the_rig = Rig(binary, work, strace)
    try:
        yield the_rig
    finally:
        the_rig.close()
    # The cleanup is part of the contract: nothing mounted, attached or running is left.
    assert _leftovers(work) == []


@dataclass
class Case:
    variant: str
    point: str  # the call the writer was killed before, or "returned"
    outcome: str
    listing: list[str]


@dataclass
class Campaign:
    """Runs writers through every cut and remembers what each distinct cut showed."""

    rig: Rig
    newfile: Path
    images: dict[str, Path]
    seen: dict[tuple[str, str, tuple[str, ...]], Observed] = field(default_factory=dict)
    rows: dict[tuple[str, bool], list[Case]] = field(default_factory=dict)
    cuts: int = 0
    started: float = field(default_factory=time.monotonic)

    def run(self, writer: str, durable: bool) -> list[Case]:
        fresh = writer == "AtomicFile-x"
        tree = WRITERS[writer][1] == "d"
        image = self.images["tree" if tree else "absent" if fresh else "old"]
        before = None if fresh else OLD
        after = OLD + NEW if writer == "AtomicFile-a" else NEW
        target = self.rig.site if tree else None
        command = self.rig.writer_command(writer, durable, self.newfile, target)
        calls = self.rig.dry_run(image, command)
        assert calls, f"the dry run of {writer} made no call on the file system"
        points: list[int | None] = [i for i, c in enumerate(calls) if c.mutating]
        points.append(None)
        cases = []
        for variant in VARIANTS:
            for i in points:
                done = calls if i is None else calls[:i]
                key = (image.name, variant.name, tuple(c.text for c in done))
                if key not in self.seen:
                    expect = [c.text for c in (calls if i is None else calls[: i + 1])]
                    inject = None if i is None else calls[i]
                    self.seen[key] = self.rig.cut(image, variant, command, inject, expect)
                seen = self.seen[key]
                point = "returned" if i is None else calls[i].text
                if tree:
                    outcome = classify_tree(seen.tree, OLD_TREE, NEW_TREE)
                    listing = seen.top  # the tree's parent: staging and old trees show here
                else:
                    outcome = classify(seen.content, before, after)
                    listing = seen.listing
                cases.append(Case(variant.name, point, outcome, listing))
        self.cuts += len(cases)
        self.rows[writer, durable] = cases
        return cases

    def table(self) -> str:
        lines = [
            "| writer | durable | cuts | old | new | mixed | empty | partial | missing | atomic | "
            "new after return |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        notes = []
        order = [(w, d) for w, _ in GOOD for d in (True, False)] + [(w, True) for w, _ in BAD]
        for writer, durable in order:
            cases = self.rows.get((writer, durable))
            if cases is None:
                continue
            counts = [sum(c.outcome == o for c in cases) for o in OUTCOMES]
            atomic = all(c.outcome in ("old", "new") for c in cases)
            returned = [c for c in cases if c.point == "returned"]
            kept = all(c.outcome == "new" for c in returned)
            bad = writer.startswith("bad-")
            flag = "-" if bad else ("yes" if durable else "`durable=False`")
            lines.append(
                f"| {LABELS[writer]} | {flag} | {len(cases)} | "
                + " | ".join(str(n) for n in counts)
                + f" | {'yes' if atomic else '**no**'} | {'yes' if kept else '**no**'} |"
            )
            for variant in dict.fromkeys(c.variant for c in cases):
                mine = [c for c in cases if c.variant == variant]
                odd = [c for c in mine if c.point != "returned" and c.outcome not in ("old", "new")]
                end = [c.outcome for c in mine if c.point == "returned" and c.outcome != "new"]
                if not bad:  # a durable=False write lost after it returned is in the table
                    end = [o for o in end if o != "old"]
                if odd or end:
                    what = [f"{c.outcome} if cut before `{_short(c.point)}`" for c in odd]
                    what += [f"{o} if cut after it returned" for o in end]
                    name = LABELS[writer] + ("" if bad or durable else " `durable=False`")
                    notes.append(f"- {name}, {variant}: {'; '.join(dict.fromkeys(what))}")
        took = time.monotonic() - self.started
        lines += ["", *notes, ""]
        lines.append(
            f"{self.cuts} cuts, {self.rig.runs} distinct ones run (the others share their "
            f"system calls with one already run), in {took:.0f} s."
        )
        return "\n".join(lines) + "\n"


def _short(call: str) -> str:
    name, _, args = call.partition("(")
    parts = args.split(",")
    path = parts[0]
    if name.endswith(("at", "at2")) and len(parts) > 1 and path.startswith(("<", "AT_FDCWD")):
        path = parts[1]  # the name relative to the directory descriptor
    path = path.strip().split("/")[-1].strip('<>")')
    return f"{name} {path}"


@pytest.fixture(scope="session")
def campaign(rig: Rig) -> Iterator[Campaign]:
    newfile = rig.work / "new.bin"
    newfile.write_bytes(NEW)
    images = {name: rig.work / f"{name}.img" for name in ("old", "absent", "tree")}
    rig.make_image(images["old"], OLD)
    rig.make_image(images["absent"], None)
    rig.make_image(images["tree"], None, tree_content(OLD))
    the_campaign = Campaign(rig, newfile, images)
    yield the_campaign
    table = os.environ.get("ATOMICFILE_POWERLOSS_TABLE")
    if table:
        Path(table).write_text(the_campaign.table())


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "not-durable"])
@pytest.mark.parametrize("writer", [w for w, _ in GOOD])
def test_power_cut_leaves_old_or_new(campaign: Campaign, writer: str, durable: bool) -> None:
    cases = campaign.run(writer, durable)
    torn = [c for c in cases if c.outcome not in ("old", "new")]
    if durable:
        assert torn == []
        tree = WRITERS[writer][1] == "d"
        for case in (c for c in cases if c.point == "returned"):
            if tree:
                # The old tree's removal comes after the durability point (nothing fsyncs
                # it): a cut can leave it whole under its staging name, for the sweep.
                assert case.outcome == "new", case
                kept = [n for n in case.listing if not is_temp_name(n)]
                assert kept == ["d", "site"], case
            else:
                assert (case.outcome, case.listing) == ("new", ["target"]), case
    else:
        # Measured (README, "Power-loss tests"): without the fsyncs, a journal commit that
        # some other fsync starts after the rename can carry the new name before the data:
        # an empty target (a new file; a replaced one too with noauto_da_alloc). Never a
        # partial or a missing one, and never an empty one without such a commit.
        assert {c.outcome for c in torn} <= {"empty"}, torn
        plain = [c for c in cases if c.variant == VARIANTS[0].name]
        assert all(c.outcome in ("old", "new") for c in plain), plain


@pytest.mark.parametrize("writer", [w for w, _ in BAD])
def test_harness_catches_a_known_bad_writer(campaign: Campaign, writer: str) -> None:
    cases = campaign.run(writer, durable=True)
    torn = [c for c in cases if c.outcome not in ("old", "new")]
    lost = [c for c in cases if c.point == "returned" and c.outcome != "new"]
    assert torn or lost, f"the power cuts did not catch {writer}: the harness is blind"
