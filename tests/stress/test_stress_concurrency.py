"""Concurrency: processes and threads writing at once while others read.

Writers (child processes with two threads each, plus threads in this process) rewrite the
same target with self-checking versions through `AtomicFile` and `atomic_write`, durable and
not; reader threads here and a reader process read it in a loop. No reader may ever see a
missing, empty or partial file; at the end the target is the last version of one writer, no
temp is left and no writer failed. Then many distinct targets in one directory at once.
Everyone starts on a go-ahead once all are ready (a pipe byte, an Event): no sleeps.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
from _stress_child import make_version, parse_version
from _stress_util import spawn, temps, trials

from atomicfile import AtomicFile, atomic_write

pytestmark = pytest.mark.stress

SIZES = [0, 1, 100, 4096, 8193, 65543, 200_003]


class Reader(threading.Thread):
    """Reads each target in a loop until stopped; records every read that fails its check."""

    def __init__(self, targets: list[Path]) -> None:
        super().__init__()
        self.targets = targets
        self.stop = threading.Event()
        self.started_reading = threading.Event()
        self.reads = 0
        self.bad: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for target in self.targets:
                self.reads += 1
                try:
                    parse_version(target.read_bytes())
                except (OSError, ValueError) as exc:
                    self.bad.append(repr(exc))
            self.started_reading.set()


def _local_writer(
    name: str, targets: list[Path], count: int, go: threading.Event, errors: list[BaseException]
) -> threading.Thread:
    def work() -> None:
        go.wait()
        try:
            for seq in range(1, count + 1):
                for target in targets:
                    data = make_version(name, seq, SIZES[seq % len(SIZES)])
                    if seq % 2:
                        atomic_write(target, data, durable=seq % 3 == 0)
                    else:
                        with AtomicFile(target, "wb", durable=seq % 3 == 0) as f:
                            f.write(data[:7])
                            f.write(data[7:])
        except BaseException as exc:
            errors.append(exc)

    return threading.Thread(target=work)


def _run(
    targets: list[Path], proc_targets: list[list[list[str]]], local: list[list[Path]], count: int
) -> tuple[list[subprocess.Popen[bytes]], list[BaseException], list[Reader], list[str]]:
    """Start readers, then writers; release the writers together; wait; stop the readers."""
    readers = [Reader(targets) for _ in range(2)]
    for r in readers:
        r.start()
    reader_proc = spawn("read", {"targets": [str(t) for t in targets]})
    assert reader_proc.stdout is not None and reader_proc.stdin is not None
    assert reader_proc.stdout.readline() == b"reading\n"
    for r in readers:
        r.started_reading.wait()

    procs = [
        spawn("write-many", {"writer": f"p{i}", "count": count, "targets": t, "sizes": SIZES})
        for i, t in enumerate(proc_targets)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline() == b"waiting\n"
    go = threading.Event()
    errors: list[BaseException] = []
    threads = [_local_writer(f"l{i}", t, count, go, errors) for i, t in enumerate(local)]
    for t in threads:
        t.start()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"g")
    go.set()
    outputs = []
    for p in procs:
        assert p.stdout is not None and p.stdin is not None
        outputs.append(p.stdout.read().decode())
        p.wait()
        p.stdin.close()
        p.stdout.close()
    for t in threads:
        t.join()
    for r in readers:
        r.stop.set()
    for r in readers:
        r.join()
    reader_proc.stdin.close()  # EOF: the reader process reports and exits
    report = reader_proc.stdout.read().decode()
    assert reader_proc.wait() == 0
    reader_proc.stdout.close()
    return procs, errors, readers, [report, *outputs]


def test_many_writers_one_target_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(make_version("initial", 0, 500))
    count = trials(40)
    # 3 processes x 2 threads, and 2 threads here, all on the same target.
    proc_targets = [[[str(target)], [str(target)]] for _ in range(3)]
    procs, errors, readers, reports = _run([target], proc_targets, [[target], [target]], count)

    assert errors == []
    assert [p.returncode for p in procs] == [0, 0, 0], reports
    assert all(out == "ok\n" for out in reports[1:]), reports
    reads, bad = reports[0].split()[1], reports[0].split()[3]
    assert bad == "0", f"reader process saw a partial/missing file: {reports[0]}"
    for r in readers:
        assert r.bad == [], f"reader thread saw a partial/missing file: {r.bad[:3]}"
    writer, seq = parse_version(target.read_bytes())
    assert seq == count, "the final file must be the last write of the writer that won"
    assert os.listdir(tmp_path) == ["target"]
    print(
        f"\n8 writers x {count} writes on one target; reads checked: "
        f"{sum(r.reads for r in readers)} in threads + {reads} in a process; winner {writer}"
    )


def test_many_targets_in_one_directory_at_once(tmp_path: Path) -> None:
    count = trials(40) // 4 or 1
    # 4 processes x 2 threads x 3 targets each, plus 2 local threads x 3 targets: 30 targets.
    names = [[f"p{i}.{j}.{k}" for k in range(3)] for i in range(4) for j in range(2)]
    proc_targets = [
        [[str(tmp_path / n) for n in names[2 * i + j]] for j in range(2)] for i in range(4)
    ]
    local = [[tmp_path / f"l{j}.{k}" for k in range(3)] for j in range(2)]
    for group in [*names]:
        for n in group:
            (tmp_path / n).write_bytes(make_version("initial", 0, 10))
    for group_paths in local:
        for path in group_paths:
            path.write_bytes(make_version("initial", 0, 10))
    all_targets = sorted(tmp_path.iterdir())
    procs, errors, readers, reports = _run(all_targets, proc_targets, local, count)

    assert errors == []
    assert [p.returncode for p in procs] == [0] * 4, reports
    assert reports[0].split()[3] == "0", reports[0]
    for r in readers:
        assert r.bad == [], r.bad[:3]
    assert temps(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in all_targets)
    for i, group in enumerate(names):
        for n in group:
            assert parse_version((tmp_path / n).read_bytes()) == (f"p{i // 2}.{i % 2}", count)
    for j, group_paths in enumerate(local):
        for path in group_paths:
            assert parse_version(path.read_bytes()) == (f"l{j}", count)
