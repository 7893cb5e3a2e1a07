"""Figure 8: the cost of `import atomicfile`, and what it drags in.

`python -X importtime -c "import atomicfile"` in fresh processes; the figure is the
cumulative time of the `atomicfile` row (the package and everything it imported that was
not already loaded at startup), median of several runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

from common import Config, Row, at_most

HEAVY = ("asyncio", "typing", "logging")


def child_env(cfg: Config) -> dict[str, str]:
    """Import from compiled bytecode, as an installed package does, even where the
    environment says PYTHONDONTWRITEBYTECODE; the .pyc files go to the scratch dir."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(cfg.root, "pycache")
    return env


def rows(code: str, env: dict[str, str]) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, module) for each import row of `python -X importtime -c`."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    found = []
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            self_us, cumulative_us, name = line[len("import time:") :].split("|")
            found.append((int(self_us), int(cumulative_us), name.strip()))
    return found


def one_run(env: dict[str, str]) -> tuple[float, float, set[str]]:
    """(cumulative ms of the atomicfile row, sum of the atomicfile.* self ms, modules seen)."""
    total, own, names = 0.0, 0.0, set()
    for self_us, cumulative_us, name in rows("import atomicfile", env):
        names.add(name)
        if name.startswith("atomicfile"):
            own += self_us / 1000
            if name == "atomicfile":
                total = cumulative_us / 1000
    return total, own, names


def run(cfg: Config) -> list[Row]:
    env = child_env(cfg)
    one_run(env)  # compile the .pyc files, warm the disk cache
    at_startup = {name for _, _, name in rows("pass", env)}
    totals, owns, names = [], [], set()
    for _ in range(cfg.import_runs):
        total, own, seen = one_run(env)
        totals.append(total)
        owns.append(own)
        names |= seen
    value = statistics.median(totals)
    names -= at_startup  # what `import atomicfile` itself loaded
    heavy = [m for m in HEAVY if m in names]
    others = sorted(n for n in names if not n.startswith("atomicfile"))
    return [
        Row(
            "import", "8", "python -X importtime -c 'import atomicfile' (ms)",
            f"{value:.2f} ms", "-", value, "<= 5 ms", at_most(value, 5.0),
            f"median of {cfg.import_runs}; atomicfile.* self {statistics.median(owns):.2f} ms;"
            f" also imported: {', '.join(others) or 'nothing'}",
        ),
        Row(
            "import", "8", "modules asyncio / typing / logging imported", "-", "-", None,
            "none", "MISSED" if heavy else "met", ", ".join(heavy) or "none of them",
        ),
    ]  # fmt: skip
