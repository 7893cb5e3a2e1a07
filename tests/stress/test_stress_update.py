"""No lost updates across processes (SPEC section 8; issue 20's proof): 8 processes x 100
increments of one counter end at exactly 800, with `atomic_update` alone or mixed with
`lock=True` blocks, on an existing and on a missing target, and leave only the target.

The children (tests/_update_child.py) start together: each says "ready", then waits for a
"go" line that the test sends to all of them at once (a pipe, never a sleep).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stress

CHILD = Path(__file__).parent.parent / "_update_child.py"
PROCESSES, EACH = 8, 100


@pytest.mark.parametrize("mixed", [False, True], ids=["atomic_update", "with-lock-blocks"])
@pytest.mark.parametrize("exists", [True, False], ids=["existing", "missing"])
def test_processes_lose_no_update(tmp_path: Path, exists: bool, mixed: bool) -> None:
    target = tmp_path / "counter"
    if exists:
        target.write_text("0")
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "count", str(target), str(EACH), "1" if mixed else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.close()
        for child in children:
            assert child.stdout is not None
            assert child.stdout.read() == "done\n"
            assert child.wait() == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
    assert target.read_text() == str(PROCESSES * EACH)
    assert sorted(os.listdir(tmp_path)) == ["counter"]  # no lock file, no temp
