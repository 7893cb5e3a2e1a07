"""Several processes update one JSON file, and no update is lost.

    python examples/shared_counter.py [DIR]

Four processes each add 25 visits to `stats.json`; without the lock, the later rename
of two processes that read the same old content would erase the other's change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from atomicfile import atomic_update


def add_visit(old: str | None) -> str:
    stats = json.loads(old) if old is not None else {"visits": 0}
    stats["visits"] += 1
    return json.dumps(stats)


def worker(path: str) -> None:
    for _ in range(25):
        atomic_update(path, add_visit, timeout=30)  # a timeout: see the README's security note


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
        return
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    path = str(directory / "stats.json")
    processes = [subprocess.Popen([sys.executable, __file__, "--worker", path]) for _ in range(4)]
    for p in processes:
        assert p.wait() == 0
    visits = json.loads(Path(path).read_text())["visits"]
    print(f"{path}: {visits} visits")
    assert visits == 100, visits


if __name__ == "__main__":
    main()
