"""AtomicBatch with objects in S3 (a real moto_server on 127.0.0.1): each file's
`storage_options` reach its file system, and an object commits on its own in the batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomicfile import AtomicBatch
from remote.s3server import Bucket

OLD = b"old content"


class Boom(Exception):
    pass


def test_batch_of_objects_and_files(bucket: Bucket, tmp_path: Path) -> None:
    """Two objects (one through `storage_options`, one through `open`) and a local file in
    one batch: an exception publishes none of them and leaves no upload; a clean exit
    publishes all three."""
    bucket.put("key", OLD)
    (tmp_path / "local").write_bytes(OLD)
    with pytest.raises(Boom), AtomicBatch() as batch:
        batch.write(bucket.url("key"), b"new key", storage_options=bucket.options)
        f = batch.open(bucket.url("more"), "wb", storage_options=bucket.options)
        f.write(b"new more")
        batch.write(tmp_path / "local", b"new local")
        raise Boom
    assert bucket.get("key") == OLD
    assert bucket.keys() == ["key"]
    assert bucket.uploads() == []
    assert (tmp_path / "local").read_bytes() == OLD
    with AtomicBatch() as batch:
        batch.write(bucket.url("key"), b"new key", storage_options=bucket.options)
        f = batch.open(bucket.url("more"), "wb", storage_options=bucket.options)
        f.write(b"new more")
        batch.write(tmp_path / "local", b"new local")
    assert bucket.get("key") == b"new key"
    assert bucket.get("more") == b"new more"
    assert bucket.keys() == ["key", "more"]
    assert bucket.uploads() == []
    assert (tmp_path / "local").read_bytes() == b"new local"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local"]


def test_x_object_that_exists_fails_the_batch(bucket: Bucket, tmp_path: Path) -> None:
    """An 'x' object whose key exists is refused by its conditional write; the local
    file, renamed after the 'x' files, is not published."""
    bucket.put("key", OLD)
    (tmp_path / "local").write_bytes(OLD)
    with pytest.raises(FileExistsError), AtomicBatch() as batch:
        batch.write(tmp_path / "local", b"new local")
        batch.write(bucket.url("key"), b"mine", mode="x", storage_options=bucket.options)
    assert bucket.get("key") == OLD
    assert bucket.keys() == ["key"]
    assert bucket.uploads() == []
    assert (tmp_path / "local").read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local"]
