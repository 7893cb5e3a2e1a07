"""Helpers shared by the stress test modules (not a test module: nothing collected here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import atomicfile

CHILD = Path(__file__).with_name("_stress_child.py")


def trials(default: int) -> int:
    """The trial count: ATOMICFILE_STRESS_TRIALS when set (to run thousands locally), else
    the small default that keeps the whole stress suite within CI's budget."""
    return int(os.environ.get("ATOMICFILE_STRESS_TRIALS", "0")) or default


def spawn(command: str, args: dict[str, Any], *, stdin: bool = True) -> subprocess.Popen[bytes]:
    """Start the child script; check that it imported the same atomicfile as this process
    (the broken-protocol runs put a modified copy first on PYTHONPATH)."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), command, json.dumps(args)],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().decode().split()
    assert ready[:1] == ["ready"], f"child did not start: {ready!r}"
    assert ready[1] == atomicfile.__file__, (ready[1], atomicfile.__file__)
    return proc


def temps(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))
