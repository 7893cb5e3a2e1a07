"""Issue 21, item 5: mistakes that `open()` would let through silently are errors (or a
warning shown by default) that say what to do instead. Each: the text, and the directory
listing unchanged."""

from __future__ import annotations

import gc
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from atomicfile import AtomicDirectory, AtomicFile, atomic_write

from conftest import Form, listing

# -- permissions= read as decimal, a sticky bit on a file, bits above 0o7777 ----------------------

BAD_MODES = [
    (644, "permissions=644 is 0o1204: did you mean 0o644?"),
    (600, "permissions=600 is 0o1130: did you mean 0o600?"),
    (755, "permissions=755 is 0o1363: did you mean 0o755?"),
    (4755, "permissions=4755 is 0o11223: did you mean 0o4755?"),
    (1644, "permissions=1644 is 0o3154: did you mean 0o644?"),
    (0o1644, "permissions=0o1644 has the sticky bit (0o1000), which means nothing on a file: "
     "did you mean 0o644?"),
    (0o100644, "permissions=0o100644 holds a file type, as st_mode does: did you mean 0o644 "
     "(its stat.S_IMODE)?"),
    (0o20000, "permissions=0o20000 is above 0o7777: file mode bits are in 0..0o7777"),
    (-1, "permissions=-1: file mode bits are in 0..0o7777"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "message"), BAD_MODES)
def test_bad_permissions_say_what_was_meant(
    tmp_path: Path, form: Form, bad: int, message: str
) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    for attempt in (
        lambda: form.write(target, "new", permissions=bad),
        lambda: form.write_all(target, "new", permissions=bad),
    ):
        with pytest.raises(ValueError) as info:
            attempt()
        assert str(info.value) == message
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


def test_a_hook_result_is_checked_the_same_way(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    with pytest.raises(ValueError) as info:
        form.write(target, "new", permissions=lambda path, current: 644)
    assert str(info.value) == "the permissions hook's result 644 is 0o1204: did you mean 0o644?"
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("good", [0o644, 0o2755, 0o4755, 0o6777, 0o444, 0])
def test_modes_without_the_sticky_bit_are_applied_exactly(tmp_path: Path, good: int) -> None:
    atomic_write(tmp_path / "t", "new", permissions=good)
    assert stat.S_IMODE(os.stat(tmp_path / "t").st_mode) == good
    assert listing(tmp_path) == ["t"]


def test_a_directory_may_have_the_sticky_bit(tmp_path: Path) -> None:
    """On a directory the sticky bit means something (/tmp): AtomicDirectory keeps it."""
    with AtomicDirectory(tmp_path / "shared", permissions=0o1777) as d:
        (d / "f").write_text("x")
    assert stat.S_IMODE(os.stat(tmp_path / "shared").st_mode) == 0o1777
    with pytest.raises(ValueError, match=r"did you mean 0o1755 \(its stat.S_IMODE\)\?"):
        AtomicDirectory(tmp_path / "other", permissions=0o41755)
    assert listing(tmp_path) == ["shared"]


# -- atomic_write(p, 123) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name"), [(123, "int"), (None, "NoneType"), ([b"a"], "list"), (1.5, "float")]
)
def test_data_of_another_type_is_named(tmp_path: Path, form: Form, data: Any, name: str) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    with pytest.raises(TypeError) as info:
        form.write_all(target, data)
    assert str(info.value) == f"data must be str or a bytes-like object, not {name}"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


def test_bytes_like_data_still_works(tmp_path: Path, form: Form) -> None:
    for data in (b"a", bytearray(b"b"), memoryview(b"c"), b"d"[0:1]):
        form.write_all(tmp_path / "t", data)
        assert (tmp_path / "t").read_bytes() == bytes(data)
    assert listing(tmp_path) == ["t"]


# -- f = AtomicFile(p).open(): the explanation is shown by default ---------------------------------

CHAINED = """
import sys
from atomicfile import AtomicFile
f = AtomicFile(sys.argv[1], sys.argv[2]).open()
try:
    f.write("new")
except ValueError as exc:
    print("ValueError:", exc)
"""


@pytest.mark.parametrize("mode", ["w", "a", "r+"])
def test_chained_open_warns_by_default(tmp_path: Path, mode: str) -> None:
    """Run as a user would, with Python's default warning filters (no -W, no pytest): the
    RuntimeWarning is printed, points at the line, and names the pattern to use."""
    target = tmp_path / "t"
    target.write_text("old")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(Path(__file__).parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", CHAINED, str(target), mode],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ValueError: I/O operation on closed file.\n"
    assert "<string>:4: RuntimeWarning: <AtomicFile " in done.stderr
    assert "garbage-collected with its file open and nothing written" in done.stderr
    assert "f = af.open(); ...; af.commit()" in done.stderr
    assert "with AtomicFile(path) as f:" in done.stderr
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


def test_a_dropped_write_with_content_keeps_the_resource_warning(tmp_path: Path) -> None:
    """Written through, then dropped: an unfinished write, as an unclosed file; the
    RuntimeWarning is only for the file that was never written (the chained open)."""
    target = tmp_path / "t"
    target.write_text("old")
    af = AtomicFile(target, "a")
    f = af.open()
    f.write("more")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del af
        gc.collect()
    assert [w.category for w in seen] == [ResourceWarning]
    assert f.closed
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


def test_a_closed_file_keeps_the_resource_warning(tmp_path: Path) -> None:
    """`f.close()` without commit(): the atomicwrites habit, not the chained open."""
    af = AtomicFile(tmp_path / "t")
    af.open().close()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del af
        gc.collect()
    assert [w.category for w in seen] == [ResourceWarning]
    assert listing(tmp_path) == []
