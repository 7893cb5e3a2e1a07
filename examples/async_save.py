"""Write files from asyncio code without blocking the event loop.

    python examples/async_save.py [DIR]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from atomicfile import AtomicFile, atomic_write_async


async def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    report = directory / "report.csv"
    async with AtomicFile(report, "w", encoding="utf-8", newline="") as f:
        await f.write("name,value\n")
        for i in range(3):
            await f.write(f"item{i},{i * i}\n")
    # Many files at once: each write runs in a worker thread.
    await asyncio.gather(
        *(atomic_write_async(directory / f"part{i}.bin", bytes([i]) * 1024) for i in range(4))
    )
    print(sorted(p.name for p in directory.iterdir()))
    print(report.read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    asyncio.run(main())
