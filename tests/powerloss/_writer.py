"""One write, in a child process of its own, so that the power-loss harness can strace it and
kill it just before any of its system calls.

    python -B _writer.py WRITER DURABLE TARGET NEWFILE

WRITER is a name from `WRITERS` (the library's public API, or one of the three known-bad
writers the harness must catch); DURABLE is 1 or 0; NEWFILE holds the new content (read
before the write starts, from another file system). The file-object writers write the
content in `CHUNKS` pieces, flushing each, so a cut can land between two `write` calls.
Exit status 0 once the write returned.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

CHUNKS = 3


def _chunks(data: bytes) -> list[bytes]:
    step = -(-len(data) // CHUNKS)
    return [data[i : i + step] for i in range(0, len(data), step)]


def _atomicfile(mode: str) -> Callable[[str, bytes, bool], None]:
    def write(target: str, data: bytes, durable: bool) -> None:
        from atomicfile import AtomicFile

        with AtomicFile(target, mode, durable=durable) as f:
            for chunk in _chunks(data):
                f.write(chunk)
                f.flush()

    return write


def _atomic_write(target: str, data: bytes, durable: bool) -> None:
    from atomicfile import atomic_write

    atomic_write(target, data, durable=durable)


def _run_async(main: Callable[[], Awaitable[object]]) -> None:
    async def runner() -> None:
        # One worker thread: every blocking step of a write runs on the same thread, so the
        # per-thread count of each system call that strace's `when=N` uses is the same in
        # the dry run and in the run that is cut.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        await main()

    asyncio.run(runner())


def _async_with(target: str, data: bytes, durable: bool) -> None:
    from atomicfile import AtomicFile

    async def main() -> None:
        async with AtomicFile(target, "wb", durable=durable) as f:
            for chunk in _chunks(data):
                await f.write(chunk)
                await f.flush()

    _run_async(main)


def _atomic_write_async(target: str, data: bytes, durable: bool) -> None:
    from atomicfile import atomic_write_async

    async def main() -> None:
        await atomic_write_async(target, data, durable=durable)

    _run_async(main)


def _batch(target: str, data: bytes, durable: bool) -> None:
    """AtomicBatch's commit order: no fsync per temp, one syncfs of the file system (ext4
    here), the rename, one directory fsync."""
    from atomicfile import AtomicBatch

    with AtomicBatch(durable=durable) as batch:
        f = batch.open(target, "wb")
        for chunk in _chunks(data):
            f.write(chunk)
            f.flush()


#: The directory target's files (relative paths); each version's content is the file's name,
#: then the version's data: a file of one version never equals one of the other.
TREE = ("a", "b", "sub/c")


def tree_content(data: bytes) -> dict[str, bytes]:
    return {name: name.encode() + b":" + data for name in TREE}


def _directory(target: str, data: bytes, durable: bool) -> None:
    """The whole tree replaced through AtomicDirectory, its files written with plain open()."""
    from pathlib import Path

    from atomicfile import AtomicDirectory

    with AtomicDirectory(target, durable=durable) as d:
        for name, content in tree_content(data).items():
            path: Path = d / name
            path.parent.mkdir(exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)


def _cli(target: str, data: bytes, durable: bool) -> None:
    command = [sys.executable, "-B", "-m", "atomicfile", "write", target]
    if not durable:
        command.insert(-1, "--no-fsync")
    # exec, not a child: the command is then the process that strace counts and kills.
    del data
    os.execv(command[0], command)


def _plain_open(target: str, data: bytes, durable: bool) -> None:
    """Known bad: truncates the target in place."""
    with open(target, "wb") as f:
        for chunk in _chunks(data):
            f.write(chunk)
            f.flush()


def _temp_rename(target: str, data: bytes, durable: bool, *, fsync_file: bool = False) -> None:
    """Known bad: temp file then rename, with no fsync at all (or without the directory's)."""
    temp = target + ".bad-tmp"
    with open(temp, "wb") as f:
        for chunk in _chunks(data):
            f.write(chunk)
            f.flush()
        if fsync_file:
            os.fsync(f.fileno())
    os.replace(temp, target)


def _temp_fsync_rename(target: str, data: bytes, durable: bool) -> None:
    _temp_rename(target, data, durable, fsync_file=True)


# name -> (function, the mode that decides the expected content: w, x or a; d: a tree)
WRITERS: dict[str, tuple[Callable[[str, bytes, bool], None], str]] = {
    "AtomicFile-w": (_atomicfile("wb"), "w"),
    "AtomicFile-x": (_atomicfile("xb"), "x"),
    "AtomicFile-a": (_atomicfile("ab"), "a"),
    "AtomicFile-r+": (_atomicfile("r+b"), "w"),
    "atomic_write": (_atomic_write, "w"),
    "async-with": (_async_with, "w"),
    "atomic_write_async": (_atomic_write_async, "w"),
    "cli-write": (_cli, "w"),
    "AtomicBatch": (_batch, "w"),
    "AtomicDirectory": (_directory, "d"),
    "bad-open-write": (_plain_open, "w"),
    "bad-rename-no-fsync": (_temp_rename, "w"),
    "bad-no-dir-fsync": (_temp_fsync_rename, "w"),
}


def main(argv: list[str]) -> int:
    name, durable, target, newfile = argv
    with open(newfile, "rb") as f:
        data = f.read()
    if name == "cli-write":
        # The CLI reads the new content from its standard input.
        fd = os.open(newfile, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
    WRITERS[name][0](target, data, durable == "1")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
