"""Save application state as JSON after every change, durably.

    python examples/json_state.py [PATH]

A crash or power loss at any moment leaves the previous state or the new one on disk,
never a half-written file that fails to parse on the next start.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from atomicfile import atomic_write


def load(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        state = {"runs": 0, "history": []}
    return state


def save(path: Path, state: dict[str, Any]) -> None:
    # durable=True (the default): fsync the file before the rename and the directory after.
    atomic_write(path, json.dumps(state, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "state.json"
    state = load(path)
    for _ in range(3):
        state["runs"] += 1
        state["history"].append(f"run {state['runs']}")
        save(path, state)
    print(f"{path}: {load(path)}")


if __name__ == "__main__":
    main()
