"""Remote writes against a local moto_server, in one run:

- a 256 MiB object streamed in 1 MiB writes: atomicfile's throughput / plain s3fs
  `fs.open("wb")` (not atomic), rounds interleaved; and each side's peak memory (maxrss of
  a fresh child) for 64 MiB and 256 MiB, to show it does not grow with the size;
- 1 KiB objects: atomicfile's `atomic_write` / s3fs `pipe`, interleaved.

Run: `python benchmarks/remote.py` (needs the test extra: moto[server], s3fs).
`--store gcs` (fake-gcs-server, gcsfs) and `--store azure` (Azurite, adlfs) measure the
same against those emulators, each side with the file system's own block size (gcsfs
5 MiB, adlfs 50 MiB), which is also atomicfile's part there.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from remote_server import SCHEME, MiB, azurite, cloud_options, fake_gcs, moto, options

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
from remote_server import options
import s3fs
from atomicfile import AtomicFile
endpoint, which, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
chunk = b"x" * 2**20
fs = s3fs.S3FileSystem(**options(endpoint))
start = time.perf_counter()
if which == "atomicfile":
    f = AtomicFile("s3://bench/big", "wb", storage_options=options(endpoint))
    with f as out:
        for _ in range(size // 2**20):
            out.write(chunk)
else:
    with fs.open("bench/big", "wb") as out:
        for _ in range(size // 2**20):
            out.write(chunk)
took = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": took, "maxrss_kib": rss}))
"""


def child(endpoint: str, which: str, size: int) -> dict[str, float]:
    here = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, endpoint, which, str(size), here],
        capture_output=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]


CLOUD_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
from remote_server import SCHEME, cloud_options
import fsspec
from atomicfile import AtomicFile
store, endpoint, which, size = sys.argv[5], sys.argv[1], sys.argv[2], int(sys.argv[3])
so = cloud_options(store, endpoint)
fs = fsspec.filesystem(SCHEME[store], **so)
chunk = b"x" * 2**20
start = time.perf_counter()
out = (AtomicFile(f"{SCHEME[store]}://bench/big", "wb", storage_options=so)
       if which == "atomicfile" else fs.open("bench/big", "wb"))
with out as f:
    for _ in range(size // 2**20):
        f.write(chunk)
took = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": took, "maxrss_kib": rss}))
"""


def cloud(store: str) -> None:
    """The same measures against fake-gcs-server ('gcs') or Azurite ('azure')."""
    import fsspec

    from atomicfile import atomic_write

    here = str(Path(__file__).parent)
    own = {"gcs": "gcsfs", "azure": "adlfs"}[store]

    def run(endpoint: str, which: str, size: int) -> dict[str, float]:
        done = subprocess.run(
            [sys.executable, "-c", CLOUD_CHILD, endpoint, which, str(size), here, store],
            capture_output=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    server = fake_gcs if store == "gcs" else azurite
    with server() as endpoint:
        so = cloud_options(store, endpoint)
        fs = fsspec.filesystem(SCHEME[store], **so)
        fs.mkdir("bench")
        big, rounds = 256 * MiB, 3
        times: dict[str, list[float]] = {own: [], "atomicfile": []}
        rss: dict[tuple[str, int], float] = {}
        for _ in range(rounds):
            for which in (own, "atomicfile"):
                result = run(endpoint, which, big)
                times[which].append(result["seconds"])
                rss[(which, big)] = max(rss.get((which, big), 0), result["maxrss_kib"])
        for which in (own, "atomicfile"):
            rss[(which, 64 * MiB)] = run(endpoint, which, 64 * MiB)["maxrss_kib"]
        best = {k: min(v) for k, v in times.items()}
        print(f"{store}: 256 MiB streamed: {own} fs.open {big / MiB / best[own]:.0f} MiB/s, "
              f"atomicfile {big / MiB / best['atomicfile']:.0f} MiB/s, "
              f"ratio {best[own] / best['atomicfile']:.2f}x")  # fmt: skip
        for which in (own, "atomicfile"):
            print(f"peak RSS {which}: 64 MiB {rss[(which, 64 * MiB)] / 1024:.0f} MiB, "
                  f"256 MiB {rss[(which, big)] / 1024:.0f} MiB")  # fmt: skip

        so = dict(so, skip_instance_cache=False)  # one client for every small write
        fs = fsspec.filesystem(SCHEME[store], **so)
        data, n = b"k" * 1024, 100
        small: dict[str, list[float]] = {"atomicfile": [], "pipe": []}
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(n):
                fs.pipe(f"bench/small/{i}", data)
            small["pipe"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(n):
                atomic_write(f"{SCHEME[store]}://bench/small/{i}", data, storage_options=so)
            small["atomicfile"].append(time.perf_counter() - start)
        per = {k: statistics.median(v) / n * 1e3 for k, v in small.items()}
        ratio = per["pipe"] / per["atomicfile"]
        print(f"1 KiB objects: {own} pipe {per['pipe']:.2f} ms, "
              f"atomic_write {per['atomicfile']:.2f} ms, ratio {ratio:.2f}x")  # fmt: skip


def main() -> None:
    if "--store" in sys.argv and sys.argv[sys.argv.index("--store") + 1] != "s3":
        cloud(sys.argv[sys.argv.index("--store") + 1])
        return
    import s3fs

    from atomicfile import atomic_write

    rounds = 3
    only_small = "--small" in sys.argv
    with moto() as endpoint:
        fs = s3fs.S3FileSystem(**options(endpoint))
        fs.call_s3("create_bucket", Bucket="bench")
        big = 256 * MiB
        if only_small:
            big = 0
        times: dict[str, list[float]] = {"atomicfile": [], "s3fs": []}
        rss: dict[tuple[str, int], float] = {}
        for _ in range(rounds if big else 0):
            for which in ("s3fs", "atomicfile"):
                result = child(endpoint, which, big)
                times[which].append(result["seconds"])
                rss[(which, big)] = max(rss.get((which, big), 0), result["maxrss_kib"])
        for which in ("s3fs", "atomicfile") if big else ():
            rss[(which, 64 * MiB)] = child(endpoint, which, 64 * MiB)["maxrss_kib"]
        best = {k: min(v) for k, v in times.items() if v}
        if big:
            print(f"256 MiB streamed: s3fs fs.open {big / MiB / best['s3fs']:.0f} MiB/s, "
              f"atomicfile {big / MiB / best['atomicfile']:.0f} MiB/s, "
              f"ratio {best['s3fs'] / best['atomicfile']:.2f}x (>= 0.9 wanted)")  # fmt: skip
        for which in ("s3fs", "atomicfile") if big else ():
            print(f"peak RSS {which}: 64 MiB {rss[(which, 64 * MiB)] / 1024:.0f} MiB, "
                  f"256 MiB {rss[(which, big)] / 1024:.0f} MiB")  # fmt: skip

        # fsspec's usual instance cache: every write finds the same client (a fresh
        # S3FileSystem per write would time the client's creation, not the write).
        so = options(endpoint, skip_instance_cache=False)
        fs = s3fs.S3FileSystem(**so)
        data = b"k" * 1024
        n = 200
        small: dict[str, list[float]] = {"atomicfile": [], "pipe": []}
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(n):
                fs.pipe(f"bench/small/{i}", data)
            small["pipe"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(n):
                atomic_write(f"s3://bench/small/{i}", data, storage_options=so)
            small["atomicfile"].append(time.perf_counter() - start)
        per = {k: statistics.median(v) / n * 1e3 for k, v in small.items()}
        print(f"1 KiB objects: s3fs pipe {per['pipe']:.2f} ms, atomic_write "
              f"{per['atomicfile']:.2f} ms, ratio {per['pipe'] / per['atomicfile']:.2f}x "
              "(>= 0.9 wanted)")  # fmt: skip


if __name__ == "__main__":
    main()
