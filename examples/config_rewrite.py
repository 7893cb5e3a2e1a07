"""Rewrite a config file in place, safely: readers see the old file or the new one.

    python examples/config_rewrite.py [PATH]

With no PATH it works on a file in a fresh temporary directory.
"""

from __future__ import annotations

import configparser
import sys
import tempfile
from pathlib import Path

from atomicfile import AtomicFile


def set_option(path: Path, section: str, key: str, value: str) -> None:
    """Change one option; the file keeps its permissions and owner."""
    config = configparser.ConfigParser()
    config.read(path, encoding="utf-8")
    if not config.has_section(section):
        config.add_section(section)
    config.set(section, key, value)
    with AtomicFile(path, "w", encoding="utf-8") as f:  # in place of open(path, "w")
        config.write(f)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "app.ini"
    set_option(path, "server", "port", "8080")
    set_option(path, "server", "host", "127.0.0.1")
    print(f"{path}:")
    print(path.read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
