"""What each tool leaves in S3 when the writing block raises, measured against a local
moto_server: prints the README's side-by-side table.

For each way of writing: the key holds "old"; a block writes 12 MiB in 1 MiB writes (5 MiB
parts) and raises after 7 MiB; then the object and the pending multipart uploads are read
back. Also: a writer dropped without close() (garbage collected), and an empty "xb" write
on an existing key. smart_open is measured only if it is installed.

Run: `python benchmarks/remote_table.py`; `--store gcs` (gcsfs on fake-gcs-server) and
`--store azure` (adlfs on Azurite) print the same rows for those stores.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from remote_server import SCHEME, MiB, azurite, cloud_options, fake_gcs, moto, options

OLD = b"old"
PART = 5 * MiB


class Boom(Exception):
    pass


def cloud(store: str) -> None:
    """The store's own file system used directly vs atomicfile: on an exception after 7 of
    12 MiB, and on a file dropped without close() after 1 MiB."""
    import warnings

    import fsspec

    from atomicfile import AtomicFile

    own = {"gcs": "gcsfs", "azure": "adlfs"}[store]
    server = fake_gcs if store == "gcs" else azurite
    with server() as endpoint:
        so = cloud_options(store, endpoint)
        fs = fsspec.filesystem(SCHEME[store], **so)
        fs.mkdir("tbl")

        def state(key: str) -> str:
            fs.invalidate_cache()
            try:
                body = fs.cat_file(f"tbl/{key}")
            except FileNotFoundError:
                return "object gone"
            if body == OLD:
                return "old object kept"
            return f"replaced: {len(body) / MiB:.0f} MiB" if body else "replaced: empty object"

        openers: dict[str, Callable[[str], Any]] = {
            f"{own} `fs.open(p, 'wb')`": lambda k: fs.open(f"tbl/{k}", "wb"),
            "atomicfile `AtomicFile(url, 'wb')`": lambda k: AtomicFile(
                f"{SCHEME[store]}://tbl/{k}", "wb", storage_options=so
            ),
        }
        rows = []
        for i, (name, opener) in enumerate(openers.items()):
            key = f"k{i}"
            fs.pipe(f"tbl/{key}", OLD)
            try:
                with opener(key) as f:
                    for n in range(12):
                        if n == 7:
                            raise Boom
                        f.write(b"n" * MiB)
            except Boom:
                pass
            on_raise = state(key)
            fs.pipe(f"tbl/{key}", OLD)
            held = opener(key)  # an AtomicFile must outlive its file until the drop
            f = held.open() if isinstance(held, AtomicFile) else held
            f.write(b"g" * MiB)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del held, f
                gc.collect()
            rows.append((name, on_raise, state(key)))
    print("| writer | exception after 7 of 12 MiB | file dropped without close() |")
    print("| --- | --- | --- |")
    for name, on_raise, on_gc in rows:
        print(f"| {name} | {on_raise} | {on_gc} |")


def main() -> None:
    if "--store" in sys.argv and sys.argv[sys.argv.index("--store") + 1] != "s3":
        cloud(sys.argv[sys.argv.index("--store") + 1])
        return
    import fsspec
    import s3fs
    from upath import UPath

    from atomicfile import AtomicFile

    with moto() as endpoint:
        so = options(endpoint, default_block_size=PART)
        fs = s3fs.S3FileSystem(**so)
        fs.call_s3("create_bucket", Bucket="tbl")

        def state(key: str) -> str:
            try:
                body = fs.cat_file(f"tbl/{key}")
                what = "old object kept" if body == OLD else f"replaced: {len(body) / MiB:.0f} MiB"
                if len(body) == 0:
                    what = "replaced: empty object"
            except FileNotFoundError:
                what = "object gone"
            pending = fs.call_s3("list_multipart_uploads", Bucket="tbl").get("Uploads", [])
            pending = [u for u in pending if u["Key"] == key]
            for u in pending:
                fs.call_s3("abort_multipart_upload", Bucket="tbl", Key=key, UploadId=u["UploadId"])
            return what + (f", {len(pending)} upload(s) left pending" if pending else "")

        openers: dict[str, Callable[[str], Any]] = {
            "s3fs `fs.open(p, 'wb')`": lambda k: fs.open(f"tbl/{k}", "wb"),
            "fsspec `fsspec.open(url, 'wb')`": lambda k: fsspec.open(f"s3://tbl/{k}", "wb", **so),
            "UPath `UPath(url).open('wb')`": lambda k: UPath(f"s3://tbl/{k}", **so).open("wb"),
            "atomicfile `AtomicFile(url, 'wb')`": lambda k: AtomicFile(
                f"s3://tbl/{k}", "wb", storage_options=so
            ),
        }
        try:
            import smart_open

            openers["smart_open `open(url, 'wb')`"] = lambda k: smart_open.open(
                f"s3://tbl/{k}", "wb", transport_params={"client_kwargs": so["client_kwargs"]}
            )
        except ImportError:
            pass

        rows = []
        for i, (name, opener) in enumerate(openers.items()):
            key = f"k{i}"
            fs.pipe(f"tbl/{key}", OLD)
            try:
                with opener(key) as f:
                    for n in range(12):
                        if n == 7:
                            raise Boom
                        f.write(b"n" * MiB)
            except Boom:
                pass
            on_raise = state(key)
            fs.pipe(f"tbl/{key}", OLD)
            if "atomicfile" in name:
                af = opener(key)
                f = af.open()
                f.write(b"g" * MiB)
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ResourceWarning)
                    del af, f
                    gc.collect()
            else:
                f = opener(key)
                if hasattr(f, "__enter__") and not hasattr(f, "write"):
                    f = f.__enter__()  # fsspec.open's OpenFile
                f.write(b"g" * MiB)
                del f
                gc.collect()
            on_gc = state(key)
            rows.append((name, on_raise, on_gc))

        fs.pipe("tbl/x", OLD)
        try:
            with fs.open("tbl/x", "xb"):
                pass
            x_s3fs = state("x")
        except FileExistsError:
            x_s3fs = "FileExistsError, " + state("x")
        fs.pipe("tbl/x", OLD)
        try:
            with AtomicFile("s3://tbl/x", "xb", storage_options=so):
                pass
            x_ours = state("x")
        except FileExistsError:
            x_ours = "FileExistsError, " + state("x")

    print("| writer | exception after 7 of 12 MiB | file dropped without close() |")
    print("| --- | --- | --- |")
    for name, on_raise, on_gc in rows:
        print(f"| {name} | {on_raise} | {on_gc} |")
    print()
    print(f"empty 'xb' on an existing key: s3fs: {x_s3fs}; atomicfile: {x_ours}")


if __name__ == "__main__":
    main()
