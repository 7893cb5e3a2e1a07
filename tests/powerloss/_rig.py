"""The power-loss rig: ext4 on a loop device over an image file on a LazyFS mount.

LazyFS keeps every write it gets in its own cache until the file is fsynced; ext4's journal
commits and fsyncs reach it as an fsync of the image file (the loop driver turns the block
layer's flush into one). Killing LazyFS with SIGKILL therefore loses exactly what a disk with
a volatile write cache loses in a power cut: everything since the last flush. After the cut
the image file in LazyFS's backing directory holds what was durable; LazyFS is started again
over it, the image attached and mounted, ext4 replays its journal, and the target is read.

Not a test module: the tests are in test_powerloss.py. Everything this module mounts,
attaches or starts is recorded in `Rig` and undone by `Rig.close()`, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

WRITER = Path(__file__).with_name("_writer.py")
IMAGE_SIZE = 16 << 20
# ext4 with its periodic journal commit pushed out of reach (600 s): a cut then sees only
# what the writer's own system calls made durable, the harshest case and a reproducible one.
# The variants with `other_fsync` show the opposite case, a commit right before the cut.
BASE_OPTIONS = "commit=600"
LAZYFS_CONFIG = """\
[faults]
fifo_path="{fifo}"
[cache]
apply_eviction=false
[cache.simple]
custom_size="48mb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
"""
# The system calls that can change what the file system holds (close too: on ext4 it can
# start the write-out of a file replaced by truncation, `auto_da_alloc`). Each one on the
# file system under test is a crash point (close only marks the state).
TRACED = (
    "open,openat,openat2,creat,write,pwrite64,writev,pwritev,pwritev2,ftruncate,truncate,"
    "fallocate,copy_file_range,sendfile,splice,fchmod,fchmodat,chmod,fchown,fchownat,chown,"
    "fsync,fdatasync,sync_file_range,syncfs,sync,rename,renameat,renameat2,link,linkat,"
    "unlink,unlinkat,mkdir,mkdirat,close"
)
OUTCOMES = ("old", "new", "mixed", "empty", "partial", "missing")


@dataclass(frozen=True)
class Variant:
    """How the file system is mounted, and whether something else fsyncs before the cut."""

    name: str
    options: str
    other_fsync: bool


VARIANTS = (
    Variant("ext4", BASE_OPTIONS, other_fsync=False),
    Variant("ext4 + other fsync", BASE_OPTIONS, other_fsync=True),
    Variant("ext4 noauto_da_alloc + other fsync", BASE_OPTIONS + ",noauto_da_alloc", True),
)


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")


def _mounted(where: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(where) for line in f)


# -- strace logs -------------------------------------------------------------------------

_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
_RETURN = re.compile(r"\)\s+=\s+(\?|-?\w+).*$")
_FD = re.compile(r"\b\d+</")
_TEMP = re.compile(r"\.[0-9a-f]{16}\.tmp\b")


@dataclass(frozen=True)
class Call:
    """One system call entry from an `strace -f -y` log."""

    tid: int
    name: str
    text: str  # normalized: no descriptor numbers, temp names or return value
    ordinal: int  # this call's number among the calls of `name` by `tid` (strace's when=)
    on_fs: bool
    mutating: bool


def parse_strace(log: str, fs: Path) -> list[Call]:
    """The traced calls in entry order; a call split by another thread's is kept once."""
    calls: list[Call] = []
    counts: dict[tuple[int, str], int] = {}
    mark = str(fs) + "/"
    for raw in log.splitlines():
        m = _LINE.match(raw)
        if m is None or "resumed>" in raw[: raw.find("(") + 1]:
            continue
        tid, name, rest = int(m.group(1)), m.group(2), m.group(3)
        rest = rest.replace("<unfinished ...>", "")
        rest = _RETURN.sub("", rest).rstrip()
        counts[tid, name] = counts.get((tid, name), 0) + 1
        # A descriptor of the mount's root shows as "<fs>" (no slash after it).
        on_fs = mark in rest or f"<{fs}>" in rest
        if name in ("open", "openat", "openat2", "creat"):
            mutating = name == "creat" or "O_CREAT" in rest or "O_TRUNC" in rest
        else:
            mutating = name != "close"
        text = _TEMP.sub(".*.tmp", _FD.sub("</", rest))
        calls.append(Call(tid, name, f"{name}({text})", counts[tid, name], on_fs, mutating))
    return [c for c in calls if c.on_fs]


# -- the rig ------------------------------------------------------------------------------


@dataclass
class Observed:
    outcome: str
    listing: list[str]
    content: bytes | None
    #: The directory target `site` (file path relative to it -> content), None if absent.
    tree: dict[str, bytes] | None = None
    #: The file system's top directory, less lost+found and the other fsync's file.
    top: list[str] = field(default_factory=list)


@dataclass
class Rig:
    """LazyFS, loop devices and mounts under `work`; `close()` undoes whatever is left."""

    lazyfs: Path
    work: Path
    strace: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    runs: int = 0

    def __post_init__(self) -> None:
        self.back = self.work / "back"
        self.lazy = self.work / "lazy"
        self.ext = self.work / "ext"
        self.dir = self.ext / "d"
        self.target = self.dir / "target"
        # A directory target can't be the mount's root (it can't be exchanged): one level down.
        self.site = self.ext / "site"
        for d in (self.back, self.lazy, self.ext):
            d.mkdir(parents=True, exist_ok=True)
        self.config = self.work / "lazyfs.toml"
        self.config.write_text(LAZYFS_CONFIG.format(fifo=self.work / "faults.fifo"))
        self.log = self.work / "lazyfs.log"

    # LazyFS

    def start_lazyfs(self) -> None:
        with open("/proc/self/mounts") as table:
            watch = select.poll()
            watch.register(table, select.POLLPRI | select.POLLERR)
            with open(self.log, "ab") as log:
                # The config is named relative to `work`: LazyFS ignores a --config-path
                # value that contains "-o" anywhere (as "/tmp/pytest-of-root/..." does).
                proc = subprocess.Popen(
                    [str(self.lazyfs), str(self.lazy), "--config-path", self.config.name,
                     "-o", "allow_other", "-o", "modules=subdir", "-o", f"subdir={self.back}",
                     "-f"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.work,
                )  # fmt: skip
            self.procs.append(proc)
            deadline = time.monotonic() + 30
            # Wait for the mount table to change (poll on /proc/self/mounts), not for a time.
            while not _mounted(self.lazy):
                if proc.poll() is not None:
                    raise RuntimeError(f"lazyfs exited with {proc.returncode}; see {self.log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lazyfs did not mount {self.lazy}; see {self.log}")
                watch.poll(1000)
                table.seek(0)
                table.read()

    def cut_power(self) -> None:
        """SIGKILL LazyFS: whatever it holds that no fsync reached is gone."""
        proc = self.procs.pop()
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_lazyfs(self) -> None:
        """Unmount LazyFS cleanly (it then exits with SIGABRT, harmless)."""
        self.umount(self.lazy)
        proc = self.procs.pop()
        proc.wait(timeout=30)

    # block layer

    def attach(self, image: Path) -> str:
        done = subprocess.run(
            ["losetup", "-f", "--show", str(image)], capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"losetup {image}: {done.stderr.strip()}")
        device = done.stdout.strip()
        self.loops.append(device)
        return device

    def detach(self, device: str) -> None:
        _run("losetup", "-d", device)
        self.loops.remove(device)

    def mount(self, device: str, options: str) -> None:
        _run("mount", "-t", "ext4", "-o", options, device, str(self.ext))
        self.mounts.append(self.ext)

    def umount(self, where: Path) -> None:
        done = subprocess.run(["umount", str(where)], capture_output=True, text=True)
        if done.returncode and _mounted(where):
            _run("umount", "-l", str(where))
        with contextlib.suppress(ValueError):
            self.mounts.remove(where)

    @contextlib.contextmanager
    def mounted_image(self, image: Path, options: str) -> Iterator[None]:
        device = self.attach(image)
        try:
            self.mount(device, options)
            try:
                yield
            finally:
                self.umount(self.ext)
        finally:
            self.detach(device)

    def make_image(
        self, path: Path, old: bytes | None, tree: dict[str, bytes] | None = None
    ) -> None:
        """A fresh ext4 image with directory `d`, holding `d/target` = `old` (or no target),
        and with `tree`, a directory `site` holding those files (relative paths)."""
        with open(path, "wb") as f:
            f.truncate(IMAGE_SIZE)
        # No lazy init: ext4lazyinit would otherwise write in the background after a mount.
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(path))
        with self.mounted_image(path, BASE_OPTIONS):
            self.dir.mkdir()
            if old is not None:
                self.target.write_bytes(old)
            for name, content in (tree or {}).items():
                (self.site / name).parent.mkdir(parents=True, exist_ok=True)
                (self.site / name).write_bytes(content)
            os.sync()

    def close(self) -> None:
        """Undo everything still in place, in order; never raises."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.procs.clear()
        for where in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        self.mounts.clear()
        for device in reversed(self.loops):
            subprocess.run(["losetup", "-d", device], capture_output=True)
        self.loops.clear()
        if _mounted(self.lazy):
            subprocess.run(["umount", "-l", str(self.lazy)], capture_output=True)

    # writers

    def writer_command(
        self, writer: str, durable: bool, newfile: Path, target: Path | None = None
    ) -> list[str]:
        return [sys.executable, "-B", str(WRITER), writer, "1" if durable else "0",
                str(target or self.target), str(newfile)]  # fmt: skip

    def traced(
        self, command: list[str], log: Path, inject: Call | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        strace = [self.strace, "-f", "-y", "-qq", "-o", str(log), "-e", f"trace={TRACED}",
                  "-e", "signal=none"]  # fmt: skip
        if inject is not None:
            strace += ["-e", f"inject={inject.name}:error=EIO:signal=SIGKILL:when={inject.ordinal}"]
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
        return subprocess.run(
            strace + command, env=env, cwd=self.work, capture_output=True, timeout=120
        )

    def dry_run(self, pristine: Path, command: list[str]) -> list[Call]:
        """The writer's calls on the file system, from one full run (no LazyFS needed)."""
        image = self.back / "dry.img"
        shutil.copyfile(pristine, image)
        log = self.work / "dry.strace"
        with self.mounted_image(image, BASE_OPTIONS):
            done = self.traced(command, log)
        image.unlink()
        if done.returncode:
            raise RuntimeError(f"dry run failed ({done.returncode}): {done.stderr.decode()}")
        return parse_strace(log.read_text(errors="replace"), self.ext)

    def cut(
        self,
        pristine: Path,
        variant: Variant,
        command: list[str],
        inject: Call | None,
        expect: list[str],
    ) -> Observed:
        """Run `command` on a copy of `pristine` over LazyFS, killed before `inject` (or to
        the end), cut the power, bring the file system back and read the target.

        `expect` is the normalized list of the writer's calls on the file system that must
        have run (ending with the injected call): proof that the kill landed where meant.
        """
        self.runs += 1
        image = self.back / "disk.img"
        shutil.copyfile(pristine, image)
        log = self.work / "cut.strace"
        self.start_lazyfs()
        device = self.attach(self.lazy / image.name)
        self.mount(device, variant.options)
        try:
            done = self.traced(command, log, inject)
            calls = [c.text for c in parse_strace(log.read_text(errors="replace"), self.ext)]
            if inject is None:
                assert done.returncode == 0, done.stderr.decode()
            else:
                assert done.returncode in (-9, 137), (done.returncode, done.stderr.decode())
            assert calls == expect, f"the kill landed elsewhere:\n{calls}\n!=\n{expect}"
            if variant.other_fsync:
                _run("dd", "if=/dev/zero", f"of={self.ext}/other", "bs=4096", "count=1",
                     "conv=fsync", "status=none")  # fmt: skip
        finally:
            self.cut_power()
            self.umount(self.ext)
            self.detach(device)
            self.umount(self.lazy)
        self.start_lazyfs()
        try:
            with self.mounted_image(self.lazy / image.name, variant.options):
                listing = sorted(os.listdir(self.dir))
                content = self.target.read_bytes() if self.target.exists() else None
                tree = read_tree(self.site) if self.site.is_dir() else None
                top = sorted(set(os.listdir(self.ext)) - {"lost+found", "other"})
        finally:
            self.stop_lazyfs()
        image.unlink()
        return Observed("", listing, content, tree, top)


def read_tree(top: Path) -> dict[str, bytes]:
    """Every regular file under `top` by its relative path; a directory as "name/" -> b""."""
    found: dict[str, bytes] = {}
    for path in sorted(top.rglob("*")):
        name = path.relative_to(top).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            found[name] = b"?"  # nothing the writers make: never equal to a version
        elif path.is_dir():
            found[name + "/"] = b""
        else:
            found[name] = path.read_bytes()
    return found


def classify_tree(
    tree: dict[str, bytes] | None, before: dict[str, bytes], after: dict[str, bytes]
) -> str:
    """old (every file as before), new (every file as after), mixed (each file whole, of
    either version), empty (no files, or an empty file), partial (a file missing, extra or
    torn), missing (no directory at all)."""
    if tree is None:
        return "missing"
    if tree == before:
        return "old"
    if tree == after:
        return "new"
    if tree.keys() == before.keys() == after.keys() and all(
        tree[k] in (before[k], after[k]) for k in tree
    ):
        return "mixed"
    files = [v for k, v in tree.items() if not k.endswith("/")]
    if not files or any(not v for v in files):
        return "empty"
    return "partial"


def classify(content: bytes | None, before: bytes | None, after: bytes) -> str:
    """old (as before the write, also 'still absent'), new, empty, partial or missing."""
    if content == before:
        return "old"
    if content == after:
        return "new"
    if content is None:
        return "missing"
    return "empty" if not content else "partial"
