"""Run a snippet under strace and return the calls that make a helper durable, in order:
symlink, rename, link, unlink and fsync, with paths in place of descriptors (`strace -y`).
Python's start-up makes none of them, so all that is traced comes from the snippet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import need

CALLS = "symlinkat,symlink,renameat,renameat2,rename,linkat,link,unlinkat,unlink,fsync,fdatasync"
_LINE = re.compile(r"^(?:\d+ +)?(\w+)\((.*)\) += (-?\d+)")


def trace(tmp_path: Path, code: str) -> list[tuple[str, str, int]]:
    """(call name, its arguments as strace prints them, result) for each traced call."""
    need("strace")  # skips naming the package (fails under ATOMICFILE_REQUIRE_ALL=1)
    strace = shutil.which("strace")
    assert strace is not None
    out = tmp_path / "strace.out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(
        [strace, "-f", "-qq", "-y", "-e", f"trace={CALLS}", "-o", str(out),
         sys.executable, "-c", code],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    if done.returncode and "ptrace" in done.stderr.lower():
        pytest.skip(f"ptrace is not permitted here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    calls = []
    for line in out.read_text().splitlines():
        m = _LINE.match(line)
        if m:
            calls.append((m[1], m[2], int(m[3])))
    return calls
