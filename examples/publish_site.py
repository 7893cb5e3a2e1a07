"""Publish a generated site and a model checkpoint, each in one step.

    python examples/publish_site.py [DIR]

`AtomicDirectory` builds the new site beside the old one and swaps the two directories
at once: a web server reading `DIR/site` sees the old pages or the new ones, never a
mix. `AtomicBatch` writes three files that belong together and makes them durable with
one sync: an error anywhere publishes none of them.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from atomicfile import AtomicBatch, AtomicDirectory


def build_site(root: Path, version: int) -> None:
    with AtomicDirectory(root / "site") as staging:  # a Path to a fresh, private directory
        (staging / "index.html").write_text(f"<h1>Version {version}</h1>\n", encoding="utf-8")
        (staging / "about").mkdir()
        (staging / "about" / "index.html").write_text("<p>Built atomically.</p>\n")


def save_checkpoint(root: Path, step: int, weights: bytes) -> None:
    with AtomicBatch() as batch:
        batch.write(root / "weights.bin", weights)
        batch.write(root / "config.json", json.dumps({"step": step}) + "\n")
        with batch.open(root / "log.txt", "a") as log:  # the same file objects as AtomicFile
            print(f"checkpoint {step}: {len(weights)} bytes", file=log)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    for version in (1, 2):
        build_site(root, version)
        save_checkpoint(root, version, bytes([version]) * 1024)
    print((root / "site" / "index.html").read_text(encoding="utf-8").strip())
    print((root / "config.json").read_text(encoding="utf-8").strip())
    print((root / "log.txt").read_text(encoding="utf-8").strip())


if __name__ == "__main__":
    main()
