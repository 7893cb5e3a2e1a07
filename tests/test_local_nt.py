"""The Windows temp (`_local_nt.LocalTemp`), run here on Linux: CI has no Windows, and its
steps are plain path calls that behave the same on both. The store is pointed at it for
each test (the one substitution here, said so): what these prove is the protocol by full
paths (create beside the target, close before rename, replace, remove on failure), not
Windows itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicfile import AtomicFile, SessionFileError, _local_nt, _store, atomic_write

from conftest import listing


@pytest.fixture(autouse=True)
def windows_temp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_store, "LocalTemp", _local_nt.LocalTemp)
    yield


def test_new_file_and_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write(target, "one")
    atomic_write(target, b"two", permissions=0o600)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o600
    assert listing(tmp_path) == ["a.txt"]


@pytest.mark.parametrize(("mode", "expected"), [("a", "old+new"), ("r+", "new")])
def test_append_and_update_start_from_a_copy(tmp_path: Path, mode: str, expected: str) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with AtomicFile(target, mode) as f:
        f.write("+new" if mode == "a" else "new")
    assert target.read_text() == expected
    assert listing(tmp_path) == ["a.txt"]


def test_x_refuses_an_existing_target_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(FileExistsError) as info, AtomicFile(target, "x") as f:
        f.write("new")
    assert isinstance(info.value, SessionFileError)
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["a.txt"]


def test_exception_in_the_block_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError), AtomicFile(target) as f:
        f.write("new")
        1 / 0  # noqa: B018
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["a.txt"]


def test_symlink_target_replaces_what_it_points_to(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old")
    (tmp_path / "link.txt").symlink_to("real.txt")
    atomic_write(tmp_path / "link.txt", "new")
    assert os.readlink(tmp_path / "link.txt") == "real.txt"
    assert real.read_text() == "new"
    assert listing(tmp_path) == ["link.txt", "real.txt"]


def test_missing_directory_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no" / "a.txt", "x")
    assert listing(tmp_path) == []
