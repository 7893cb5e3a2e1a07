"""Write a binary file readable only by its owner (0o600), e.g. a key or a cache blob.

    python examples/binary_write.py [PATH]

The data is never in a file that others can read, not even the temp file.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path

from atomicfile import AtomicFile


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "secret.key"
    key = os.urandom(32)
    with AtomicFile(path, "wb", permissions=0o600) as f:  # f: io.BufferedWriter
        f.write(b"KEY1")
        f.write(key)
    data = path.read_bytes()
    mode = stat.S_IMODE(path.stat().st_mode)
    digest = hashlib.sha256(data).hexdigest()[:16]
    print(f"{path}: {len(data)} bytes, mode {mode:#o}, sha256 {digest}")


if __name__ == "__main__":
    main()
