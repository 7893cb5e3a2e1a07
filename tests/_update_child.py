"""A child process for tests/test_update.py and the update stress tests (not a test module).

    python _update_child.py count PATH N MIXED   increments PATH N times, after a "go" line
    python _update_child.py hold PATH MODE       holds lock=True on PATH until told to end
    python _update_child.py flock PATH UID       a plain reader's flock on PATH (or a dir),
                                                 taken as UID (dropped to, from root)

Every command prints one line when it is ready (or holds the lock) and waits on stdin, so
the test drives it through pipes, never by sleeping.
"""

from __future__ import annotations

import fcntl
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atomicfile import AtomicFile, atomic_update


def bump(old: str | None) -> str:
    return str(int(old or "0") + 1)


def locked_block(path: str) -> None:
    """The same increment as a `lock=True` block: 'a+' copies the target (or starts empty)."""
    with AtomicFile(path, "a+", lock=True) as f:
        f.seek(0)
        value = f.read()
        f.truncate(0)
        f.write(bump(value))


def main() -> None:
    command, path = sys.argv[1], sys.argv[2]
    if command == "count":
        n, mixed = int(sys.argv[3]), sys.argv[4] == "1"
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(n):
            if mixed and i % 2:
                locked_block(path)
            else:
                atomic_update(path, bump)
        print("done", flush=True)
    elif command == "hold":
        with AtomicFile(path, sys.argv[3], lock=True) as f:
            print("held", flush=True)
            line = sys.stdin.readline().split(" ", 1)
            if line[0] == "commit":
                f.write(line[1].rstrip("\n"))
            else:
                raise SystemExit(0)  # leaves the block by an exception: the write is discarded
    elif command == "flock":
        uid = int(sys.argv[3])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.readline()
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
