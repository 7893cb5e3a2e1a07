"""Child process for the stress tests, and the self-checking file format they share.

Run as `python _stress_child.py COMMAND JSON-ARGS`. Every command first prints
`ready <atomicfile.__file__>` so the parent can check which copy of the library the child
runs (the broken-protocol experiments put a modified copy first on PYTHONPATH). Progress goes
to stdout, one line per event, unbuffered, so the parent can follow (and kill at) any event
without sleeping.

Commands:
- `loop`: rewrite one target forever (until killed) with versions 1, 2, 3...; events
  `begin N`, `open N`, `chunk N`, `fsync N`, `rename N`, `renamed N`, `done N`. With
  `"stepped": true` the child waits for one byte on stdin after every event, so the parent
  can kill it exactly there.
- `write-many`: threads each write their own versions (to one shared target or to targets of
  their own); prints `ok` or `fail <repr>`, exit code 0 or 1.
- `read`: read the target in a loop, checking every read, until stdin reaches EOF; prints
  `reads N bad M [first bad sample]`.
- `trace`: one warm-up write, then one write between two marker syscalls (`stat` of paths
  that don't exist), for strace.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import sys
import threading
from typing import Any, Literal

MAGIC = b"AFSTRESS1"
# Body sizes: empty up to ~1 MiB (odd sizes too, so no write lines up with a page or buffer).
SIZES = (0, 1, 100, 4096, 8193, 65536 + 7, 300_001, 1 << 20)


def make_version(writer: str, seq: int, size: int, seed: int = 0) -> bytes:
    """A self-checking file: one header line (magic, writer, seq, body length, sha256 of the
    body), then the body. Any torn, truncated, empty or mixed file fails `parse_version`."""
    rng = random.Random(f"{writer}/{seq}/{seed}")
    body = rng.randbytes(size)
    digest = hashlib.sha256(body).hexdigest().encode()
    header = b"%s %s %d %d %s\n" % (MAGIC, writer.encode(), seq, size, digest)
    return header + body


def parse_version(data: bytes) -> tuple[str, int]:
    """(writer, seq) of a complete version; ValueError for anything else."""
    end = data.find(b"\n")
    if end < 0:
        raise ValueError(f"no header line in {len(data)} bytes: {data[:60]!r}")
    parts = data[:end].split(b" ")
    if len(parts) != 5 or parts[0] != MAGIC:
        raise ValueError(f"bad header {data[:end][:100]!r}")
    _, writer, seq, size, digest = parts
    body = data[end + 1 :]
    if len(body) != int(size):
        raise ValueError(f"body is {len(body)} bytes, header says {int(size)}")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch: the body is a mix of versions or torn")
    return writer.decode(), int(seq)


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


class _Stepper:
    """Reports each event of the write under way; in stepped mode, waits for the parent."""

    def __init__(self, stepped: bool) -> None:
        self.stepped = stepped
        self.seq = 0

    def event(self, name: str) -> None:
        _say(f"{name} {self.seq}")
        if self.stepped and os.read(0, 1) != b"g":
            os._exit(3)  # the parent went away


def _install_hooks(step: _Stepper) -> None:
    """Report the protocol's own steps: the fsync of the temp and the rename (x: link)."""
    import atomicfile._fs as fs

    real_fsync, real_replace, real_link = fs.fsync_file, os.replace, fs.rename_noreplace

    def fsync_file(fd: int) -> None:
        step.event("fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        step.event("rename")
        real_replace(src, dst, **kw)
        step.event("renamed")

    def rename_noreplace(src: str, dst: str, dir_fd: int | None) -> bool:
        step.event("rename")
        leftover = real_link(src, dst, dir_fd)
        step.event("renamed")
        return leftover

    fs.fsync_file = fsync_file
    os.replace = replace
    fs.rename_noreplace = rename_noreplace


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    """Split into 1-4 chunks at random points (written one by one: kills land between)."""
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(4)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def loop(args: dict[str, Any]) -> None:
    from atomicfile import AtomicFile, atomic_write

    target, api, durable = args["target"], args["api"], args["durable"]
    rng = random.Random(args["seed"])
    step = _Stepper(args.get("stepped", False))
    _install_hooks(step)

    def version(seq: int) -> bytes:
        return make_version(args["writer"], seq, rng.choice(SIZES), args["seed"])

    if api in ("AtomicFile", "atomic_write"):
        seq = 0
        while True:
            seq += 1
            data = version(seq)
            step.seq = seq
            step.event("begin")
            if api == "atomic_write":
                atomic_write(target, data, durable=durable)
            else:
                with AtomicFile(target, "wb", durable=durable) as f:
                    step.event("open")
                    for chunk in _chunks(data, rng):
                        f.write(chunk)
                        step.event("chunk")
            step.event("done")

    import asyncio

    from atomicfile import atomic_write_async

    async def main() -> None:
        seq = 0
        while True:
            seq += 1
            data = version(seq)
            step.seq = seq
            step.event("begin")
            if api == "atomic_write_async":
                await atomic_write_async(target, data, durable=durable)
            else:
                async with AtomicFile(target, "wb", durable=durable) as f:
                    step.event("open")
                    for chunk in _chunks(data, rng):
                        await f.write(chunk)
                        step.event("chunk")
            step.event("done")

    asyncio.run(main())


def write_many(args: dict[str, Any]) -> None:
    """Threads writing versions: `targets[i]` is thread i's list of targets (shared or own)."""
    from atomicfile import AtomicFile, atomic_write

    writer, count = args["writer"], args["count"]
    errors: list[BaseException] = []
    go = threading.Event()

    def work(index: int, targets: list[str]) -> None:
        name = f"{writer}.{index}"
        rng = random.Random(name)
        go.wait()
        try:
            for seq in range(1, count + 1):
                for target in targets:
                    data = make_version(name, seq, rng.choice(args["sizes"]))
                    durable = seq % 3 == 0
                    if (seq + index) % 2:
                        atomic_write(target, data, durable=durable)
                    else:
                        with AtomicFile(target, "wb", durable=durable) as f:
                            for chunk in _chunks(data, rng):
                                f.write(chunk)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(args["targets"])]
    for t in threads:
        t.start()
    _say("waiting")
    if os.read(0, 1) != b"g":
        sys.exit(3)
    go.set()
    for t in threads:
        t.join()
    _say("ok" if not errors else f"fail {errors!r}")
    sys.exit(1 if errors else 0)


def read(args: dict[str, Any]) -> None:
    import select

    targets: list[str] = args["targets"]
    reads = bad = 0
    first_bad = ""
    while True:
        for target in targets:
            reads += 1
            try:
                with open(target, "rb") as f:
                    parse_version(f.read())
            except (OSError, ValueError) as exc:
                bad += 1
                first_bad = first_bad or repr(exc)
        if reads == len(targets):
            _say("reading")
        if select.select([0], [], [], 0)[0] and not os.read(0, 1):
            break
    _say(f"reads {reads} bad {bad} {first_bad}")


def trace(args: dict[str, Any]) -> None:
    """Warm up (first-use imports, the PRNG), then one write between two marker stats."""
    from atomicfile import AtomicFile, atomic_write

    os.umask(args["umask"])
    durable: bool = args["durable"]
    permissions: int | None = args.get("permissions")
    api, mode, target = args["api"], args["mode"], args["target"]
    bmode: Literal["wb", "xb"] = "wb" if mode == "w" else "xb"
    data = b"small durable write\n"

    def write(path: str) -> None:
        if api == "atomic_write":
            atomic_write(path, data, mode=mode, durable=durable, permissions=permissions)
        elif api == "AtomicFile":
            with AtomicFile(path, bmode, durable=durable, permissions=permissions) as f:
                f.write(data)
        else:
            import asyncio

            async def main() -> None:
                async with AtomicFile(path, bmode, durable=durable, permissions=permissions) as f:
                    await f.write(data)

            asyncio.run(main())

    write(args["warmup"])
    if api == "async_with":
        import asyncio

        # Keep the event loop's own setup (and its executor's thread start) out of the
        # measured region: the trace region then holds this write's calls only.
        loop_ = asyncio.new_event_loop()
        loop_.run_until_complete(loop_.run_in_executor(None, int))

        async def main() -> None:
            async with AtomicFile(target, bmode, durable=durable, permissions=permissions) as f:
                await f.write(data)

        try:
            os.stat(args["begin"])
        except FileNotFoundError:
            pass
        loop_.run_until_complete(main())
    else:
        try:
            os.stat(args["begin"])
        except FileNotFoundError:
            pass
        write(target)
    try:
        os.stat(args["end"])
    except FileNotFoundError:
        pass


def main() -> None:
    import atomicfile

    _say(f"ready {atomicfile.__file__}")
    command, args = sys.argv[1], json.loads(sys.argv[2])
    {"loop": loop, "write-many": write_many, "read": read, "trace": trace}[command](args)


if __name__ == "__main__":
    main()
