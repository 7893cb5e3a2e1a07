"""The API through both front doors: its shape, every mode, the file object `with` yields,
use without `with`, `atomic_write`, and the temp file's name and place.

Every case that has an async form takes the `form` fixture and runs twice.
"""

from __future__ import annotations

import asyncio
import csv
import errno
import gc
import gzip
import io
import itertools
import json
import logging
import os
import pickle
import re
import shutil
import socket
import ssl
import stat
import sys
import warnings
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

import atomicfile._naming
from atomicfile import AtomicFile, SessionFileError, atomic_write, atomic_write_async

from conftest import Form, listing, temps

OLD = "old-content\n"
NEW = "NEW"
TEMP_RE = r"\.{base}\.[0-9a-f]{{16}}\.tmp"


def _spellings(letters: str) -> list[str]:
    return sorted({"".join(p) for p in itertools.permutations(letters)})


# Every spelling of every mode SPEC lists: w, x, a, r+ with optional t/b and +, any order.
MODES = [
    spelling
    for kind in ("w", "x", "a", "r+")
    for extra in ("", "t", "b", "+", "t+", "b+")
    if not (kind == "r+" and "+" in extra)
    for spelling in _spellings(kind + extra)
]
INVALID_MODES = ["", "wr", "ww", "q", "wbt", "U", "rw", "w+x", "b", "t", "+", "bt+", "wU", "r++"]
READ_ONLY_MODES = ["r", "rb", "rt", "br", "tr"]


def enter(form: Form, af: AtomicFile[Any], body: Callable[[Any], object] = lambda f: None) -> None:
    """Run `body(file)` inside `with af` (sync form) or `async with af` (async form); the
    body always gets the synchronous file object (`AsyncFile.wrapped`)."""
    if not form.is_async:
        with af as f:
            body(f)
        return

    async def main() -> None:
        async with af as f:
            body(f.wrapped)

    form.run(main)


def kind_of(mode: str) -> str:
    return next(c for c in mode if c in "wxar")


# -- modes -----------------------------------------------------------------------------------------


def test_the_mode_list_is_complete() -> None:
    assert len(MODES) == 71
    assert {"w", "tw", "b+w", "+xt", "ab", "r+", "+r", "br+", "t+r"} <= set(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_mode_does_what_open_does(tmp_path: Path, form: Form, mode: str) -> None:
    """Content, position and readability for each mode, checked against open() itself."""
    kind = kind_of(mode)
    enc: Callable[[str], Any] = (lambda s: s.encode()) if "b" in mode else (lambda s: s)
    target, control = tmp_path / "target", tmp_path / "control"
    if kind != "x":
        target.write_text(OLD)
        control.write_text(OLD)

    def probe(seen: dict[str, Any]) -> Callable[[Any], None]:
        def inside(f: Any) -> None:
            seen["tell"] = f.tell()  # after writing NEW: shows where the file started
            seen["readable"], seen["writable"] = f.readable(), f.writable()
            if f.readable():
                f.seek(0)
                seen["read"] = f.read()
            else:
                with pytest.raises(io.UnsupportedOperation):
                    f.read()

        return inside

    ours: dict[str, Any] = {}
    form.write(target, enc(NEW), mode=mode, inside=probe(ours))
    theirs: dict[str, Any] = {}
    with open(control, mode) as f:
        f.write(enc(NEW))
        probe(theirs)(f)

    expected = {"w": NEW, "x": NEW, "a": OLD + NEW, "r": NEW + OLD[len(NEW) :]}[kind]
    assert target.read_text() == control.read_text() == expected
    assert ours == theirs
    assert ours["tell"] == {"a": len(OLD) + len(NEW)}.get(kind, len(NEW))
    assert ours["readable"] == ("+" in mode)
    assert listing(tmp_path) == ["control", "target"]


@pytest.mark.parametrize("mode", ["a", "ab", "a+", "r+", "rb+", "w+", "x+b"])
def test_start_position(tmp_path: Path, form: Form, mode: str) -> None:
    """'a' starts at the end of a copy of the target, 'r+' at 0 of that copy, 'w'/'x' empty."""
    target = tmp_path / "t"
    if kind_of(mode) != "x":
        target.write_text(OLD)
    seen: list[int] = []
    form.write(target, mode=mode, inside=lambda f: seen.append(f.tell()))
    assert seen == [len(OLD) if kind_of(mode) == "a" else 0]
    assert target.read_text() == {"a": OLD, "r": OLD}.get(kind_of(mode), "")


def test_append_writes_land_at_the_end_even_after_seek(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"0123")

    def inside(f: Any) -> None:
        f.seek(0)
        f.write(b"X")

    form.write(target, b"ab", mode="a+b", inside=inside)
    assert target.read_bytes() == b"0123abX"


@pytest.mark.parametrize("mode", ["x", "xb", "x+", "bx+"])
def test_x_fails_on_an_existing_target(tmp_path: Path, form: Form, mode: str) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"theirs")
    with pytest.raises(FileExistsError) as caught:
        form.write(target, b"ours" if "b" in mode else "ours", mode=mode)
    assert isinstance(caught.value, SessionFileError)
    assert caught.value.errno == errno.EEXIST
    assert target.read_bytes() == b"theirs"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("mode", ["x", "xb", "x+"])
def test_x_fails_when_the_target_appears_during_the_block(
    tmp_path: Path, form: Form, mode: str
) -> None:
    """No check-then-rename race: the no-clobber commit sees the file created meanwhile,
    and that file keeps its content."""
    target = tmp_path / "t"
    with pytest.raises(FileExistsError) as caught:
        form.write(
            target,
            b"ours" if "b" in mode else "ours",
            mode=mode,
            inside=lambda f: target.write_bytes(b"theirs"),
        )
    assert isinstance(caught.value, SessionFileError)
    assert caught.value.errno == errno.EEXIST
    assert caught.value.step == "rename"
    assert target.read_bytes() == b"theirs"
    assert listing(tmp_path) == ["t"]


def test_x_creates_an_absent_target(tmp_path: Path, form: Form) -> None:
    form.write(tmp_path / "t", "new", mode="x")
    assert (tmp_path / "t").read_text() == "new"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("mode", ["r+", "r+b", "+rt"])
def test_r_plus_on_a_missing_target(tmp_path: Path, form: Form, mode: str) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        form.write(tmp_path / "t", mode=mode)
    assert isinstance(caught.value, SessionFileError)
    assert caught.value.errno == errno.ENOENT
    assert listing(tmp_path) == []


@pytest.mark.parametrize("mode", INVALID_MODES + READ_ONLY_MODES)
def test_bad_mode_is_a_value_error_naming_it_before_any_io(
    tmp_path: Path, form: Form, mode: str
) -> None:
    # A missing parent would give FileNotFoundError if anything touched the disk first.
    for target in (tmp_path / "t", tmp_path / "missing" / "t"):
        with pytest.raises(ValueError, match=re.escape(repr(mode))):
            form.write(target, mode=mode)
    with pytest.raises(ValueError, match=re.escape(repr(mode))):
        AtomicFile(tmp_path / "t", cast(Any, mode))  # at construction, not at open
    assert listing(tmp_path) == []


def test_read_only_mode_message_says_what_to_do_instead(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"r\+"):
        AtomicFile(tmp_path / "t", "r")  # type: ignore[call-overload]


def test_mode_must_be_a_str(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        AtomicFile(tmp_path / "t", b"w")  # type: ignore[call-overload]
    assert listing(tmp_path) == []


@pytest.mark.parametrize("option", ["encoding", "errors", "newline"])
@pytest.mark.parametrize("mode", ["wb", "ab+", "r+b", "xb"])
def test_text_options_in_binary_mode(tmp_path: Path, form: Form, option: str, mode: str) -> None:
    values = {"encoding": "utf-8", "errors": "strict", "newline": "\n"}
    options: dict[str, Any] = {option: values[option]}
    (tmp_path / "t").write_bytes(b"old")
    with pytest.raises(ValueError, match=option):
        form.write(tmp_path / "t", mode=mode, **options)
    with pytest.raises(ValueError, match=option):
        open(tmp_path / "t", "rb", **options).close()  # open() agrees
    assert (tmp_path / "t").read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_unknown_encoding_is_a_lookup_error_before_any_io(tmp_path: Path, form: Form) -> None:
    with pytest.raises(LookupError):
        form.write(tmp_path / "missing" / "t", "x", encoding="no-such-codec")
    with pytest.raises(LookupError):
        AtomicFile(tmp_path / "t", "w", encoding="no-such-codec")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("mode", ["w", "a+", "r+t"])
def test_unbuffered_text_is_a_value_error(tmp_path: Path, form: Form, mode: str) -> None:
    with pytest.raises(ValueError, match="unbuffered"):
        form.write(tmp_path / "missing" / "t", mode=mode, buffering=0)
    assert listing(tmp_path) == []


def test_illegal_newline_is_a_value_error(tmp_path: Path, form: Form) -> None:
    with pytest.raises(ValueError, match="newline"):
        form.write(tmp_path / "missing" / "t", "x", newline="\n\n")
    assert listing(tmp_path) == []


def test_text_options_have_open_meaning(tmp_path: Path, form: Form) -> None:
    """encoding, errors, newline are open()'s, positional as in open()."""
    target = tmp_path / "t"
    text = "caf\u00e9 \u20ac\nline2\n"
    form.write(target, text, mode="w", buffering=-1, encoding="latin-1", errors="replace",
               newline="\r\n")  # fmt: skip
    assert target.read_bytes() == b"caf\xe9 ?\r\nline2\r\n"
    with AtomicFile(target, "w", -1, "utf-16", "strict", "") as f:  # positional
        f.write("a\nb")
    assert target.read_bytes() == "a\nb".encode("utf-16")


# -- the file object `with` yields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "buffering", "cls"),
    [
        ("w", -1, io.TextIOWrapper),
        ("x", -1, io.TextIOWrapper),
        ("a", 1, io.TextIOWrapper),
        ("w+", 8192, io.TextIOWrapper),
        ("r+", -1, io.TextIOWrapper),
        ("wb", -1, io.BufferedWriter),
        ("xb", 4096, io.BufferedWriter),
        ("ab", -1, io.BufferedWriter),
        ("w+b", -1, io.BufferedRandom),
        ("ab+", -1, io.BufferedRandom),
        ("r+b", 65536, io.BufferedRandom),
        ("wb", 0, io.FileIO),
        ("a+b", 0, io.FileIO),
        ("r+b", 0, io.FileIO),
    ],
)
def test_the_file_object_is_what_open_gives(
    tmp_path: Path, form: Form, mode: str, buffering: int, cls: type
) -> None:
    target, control = tmp_path / "t", tmp_path / "control"
    target.write_bytes(b"")
    control.write_bytes(b"")
    if "x" in mode:
        target.unlink()
        control.unlink()
    seen: list[Any] = []

    def inside(f: Any) -> None:
        seen.extend([type(f), type(getattr(f, "buffer", None)), f.mode])

    form.write(target, mode=mode, buffering=buffering, inside=inside)
    with open(control, mode, buffering) as g:
        assert seen == [type(g), type(getattr(g, "buffer", None)), g.mode]
    assert seen[0] is cls


def test_standard_library_writers_work(tmp_path: Path) -> None:
    with AtomicFile(tmp_path / "j.json") as f:
        json.dump({"a": [1, 2]}, f)
    with AtomicFile(tmp_path / "c.csv", newline="") as f:
        csv.writer(f).writerows([["a", "b"], ["1", "2"]])
    with AtomicFile(tmp_path / "p.pickle", "wb") as f:
        pickle.dump({"k": (1, 2)}, f)
    with AtomicFile(tmp_path / "s.bin", "wb") as f:
        shutil.copyfileobj(io.BytesIO(b"x" * 100_000), f)
    with AtomicFile(tmp_path / "print.txt") as f:
        print("hello", 42, file=f)
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2]}
    assert (tmp_path / "c.csv").read_bytes() == b"a,b\r\n1,2\r\n"
    assert pickle.loads((tmp_path / "p.pickle").read_bytes()) == {"k": (1, 2)}
    assert (tmp_path / "s.bin").read_bytes() == b"x" * 100_000
    assert (tmp_path / "print.txt").read_text() == "hello 42\n"
    assert listing(tmp_path) == ["c.csv", "j.json", "p.pickle", "print.txt", "s.bin"]


@pytest.mark.parametrize("mode", ["r+", "rb+", "a+", "w+b"])
async def test_async_file_methods(tmp_path: Path, mode: str) -> None:
    """The async form: coroutine methods and the name/mode/encoding attributes."""
    binary = "b" in mode
    enc: Callable[[str], Any] = (lambda s: s.encode()) if binary else (lambda s: s)
    target = tmp_path / "t"
    target.write_text("one\ntwo\n")
    start = {"r": 0, "a": 8, "w": 0}[kind_of(mode)]
    async with AtomicFile(target, cast(Any, mode)) as f:
        assert f.mode == f.wrapped.mode
        assert f.encoding == (None if binary else getattr(f.wrapped, "encoding", None))
        assert f.name == f.wrapped.name == str(target)  # what open() would give
        (temp,) = temps(tmp_path)
        assert re.fullmatch(TEMP_RE.format(base="t"), temp)
        assert await f.tell() == start
        assert await f.seek(0) == 0
        if kind_of(mode) != "w":
            assert await f.readline() == enc("one\n")
            assert await f.readlines() == [enc("two\n")]
            await f.seek(0)
            assert await f.read() == enc("one\ntwo\n")
        if kind_of(mode) != "a":
            await f.seek(0)
            assert await f.truncate() == 0
        await f.write(enc("x\n"))
        await f.writelines([enc("y\n"), enc("z\n")])
        await f.flush()
        assert f.fileno() == f.wrapped.fileno()
        assert not f.closed
        with pytest.raises(TypeError, match="async with"), f:
            pass  # pragma: no cover
    expected = "one\ntwo\nx\ny\nz\n" if kind_of(mode) == "a" else "x\ny\nz\n"
    assert target.read_text() == expected
    assert listing(tmp_path) == ["t"]


async def test_async_file_types_follow_the_mode(tmp_path: Path) -> None:
    async with AtomicFile(tmp_path / "b", "wb") as fb:
        assert isinstance(fb.wrapped, io.BufferedWriter)
        await fb.write(b"bytes")
    async with AtomicFile(tmp_path / "t") as ft:
        assert isinstance(ft.wrapped, io.TextIOWrapper)
        await ft.write("text")
    assert (tmp_path / "b").read_bytes() == b"bytes"
    assert (tmp_path / "t").read_text() == "text"


# -- paths -----------------------------------------------------------------------------------------


def test_path_types(tmp_path: Path, form: Form, as_path: Callable[[Path], Any]) -> None:
    target = tmp_path / "t\u00e9"
    form.write(as_path(target), "via path")
    assert target.read_text() == "via path"
    af = AtomicFile(as_path(target))
    assert af.path == str(target)
    form.write_all(as_path(target), b"via atomic_write")
    assert target.read_bytes() == b"via atomic_write"
    assert listing(tmp_path) == ["t\u00e9"]


def test_relative_path_is_fixed_at_open(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chdir while the block runs does not move the write."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    form.write("t", "here", inside=lambda f: os.chdir(tmp_path / "b"))
    assert (tmp_path / "a" / "t").read_text() == "here"
    assert listing(tmp_path / "a") == ["t"]
    assert listing(tmp_path / "b") == []


# -- without `with` --------------------------------------------------------------------------------


def test_open_commit(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    af = AtomicFile(target)
    f = af.open()
    assert isinstance(f, io.TextIOWrapper)
    assert f.name == str(target)  # what open() would give
    temp_path = af.temp_path
    assert temp_path is not None
    assert listing(tmp_path) == sorted(["t", os.path.basename(temp_path)])
    f.write("new")
    assert target.read_text() == "old"  # nothing visible before commit
    af.commit()
    assert target.read_text() == "new"
    assert af.temp_path is None
    assert listing(tmp_path) == ["t"]
    af.discard()  # after the write ended: a no-op
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]


def test_open_discard(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    af = AtomicFile(target)
    af.open().write("new")
    af.discard()
    af.discard()  # twice: still a no-op
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


def test_discard_in_with_leaves_the_target_alone(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    af = AtomicFile(target)

    def body(f: Any) -> None:
        f.write("new")
        af.discard()

    enter(form, af, body)
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]
    with pytest.raises(RuntimeError, match="discarded"):
        af.commit()


def test_discard_in_with_on_a_new_target(tmp_path: Path, form: Form) -> None:
    af = AtomicFile(tmp_path / "t", "xb")

    def body(f: Any) -> None:
        f.write(b"new")
        af.discard()

    enter(form, af, body)
    assert listing(tmp_path) == []


async def test_async_file_refuses_writes_after_discard(tmp_path: Path) -> None:
    af = AtomicFile(tmp_path / "t")
    async with af as f:
        await f.write("a")
        af.discard()
        with pytest.raises(RuntimeError, match="discarded"):
            await f.write("b")
    assert listing(tmp_path) == []


def test_open_twice(tmp_path: Path) -> None:
    af = AtomicFile(tmp_path / "t")
    af.open()
    with pytest.raises(RuntimeError, match="already open"):
        af.open()
    af.discard()
    assert listing(tmp_path) == []


def test_reenter_is_a_runtime_error(tmp_path: Path, form: Form) -> None:
    af = AtomicFile(tmp_path / "t")
    enter(form, af, lambda f: f.write("one"))
    with pytest.raises(RuntimeError, match="already committed"):
        enter(form, af, lambda f: f.write("two"))
    assert (tmp_path / "t").read_text() == "one"
    assert listing(tmp_path) == ["t"]


def test_nested_enter_is_a_runtime_error(tmp_path: Path, form: Form) -> None:
    """Entering an open AtomicFile again fails, and the outer write fails with it."""
    af = AtomicFile(tmp_path / "t")

    def body(f: Any) -> None:
        f.write("x")
        af.open()

    with pytest.raises(RuntimeError, match="already open"):
        enter(form, af, body)
    assert listing(tmp_path) == []


def test_commit_twice(tmp_path: Path) -> None:
    af = AtomicFile(tmp_path / "t")
    af.open().write("x")
    af.commit()
    with pytest.raises(RuntimeError, match="already committed"):
        af.commit()
    with pytest.raises(RuntimeError, match="already committed"):
        af.open()
    assert (tmp_path / "t").read_text() == "x"
    assert listing(tmp_path) == ["t"]


def test_commit_before_open(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        AtomicFile(tmp_path / "t").commit()
    assert listing(tmp_path) == []


@pytest.mark.parametrize("opened", [False, True])
def test_commit_after_discard(tmp_path: Path, opened: bool) -> None:
    af = AtomicFile(tmp_path / "t")
    if opened:
        af.open().write("x")
    af.discard()
    with pytest.raises(RuntimeError, match="discarded"):
        af.commit()
    with pytest.raises(RuntimeError, match="discarded"):
        af.open()
    assert listing(tmp_path) == []


def test_commit_after_failure(tmp_path: Path) -> None:
    af = AtomicFile(tmp_path / "missing" / "t")
    with pytest.raises(FileNotFoundError):
        af.open()
    with pytest.raises(RuntimeError, match="failed"):
        af.commit()
    assert listing(tmp_path) == []


def test_abandoned_open_write_is_discarded_with_a_resource_warning(tmp_path: Path) -> None:
    """As an unclosed file: garbage collection removes the temp and warns."""
    target = tmp_path / "t"
    target.write_text("old")
    af = AtomicFile(target)
    af.open().write("new")
    with pytest.warns(ResourceWarning, match="unfinished"):
        del af
        gc.collect()
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


# -- odd cases a careful open() user tries ---------------------------------------------------------


def test_close_inside_the_block_then_clean_exit_commits(tmp_path: Path, form: Form) -> None:
    """As with open(): closing early is allowed, and what was written is the content."""
    for mode, data in (("w", "text"), ("wb", b"bytes")):
        target = tmp_path / mode
        form.write(target, data, mode=mode, inside=lambda f: f.close())
        assert target.read_bytes() == (data if isinstance(data, bytes) else data.encode())
    form.write(tmp_path / "raw", b"raw", mode="wb", buffering=0, inside=lambda f: f.close())
    assert (tmp_path / "raw").read_bytes() == b"raw"
    assert listing(tmp_path) == ["raw", "w", "wb"]


def test_close_inside_the_block_then_exception_leaves_target(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError):
        form.write(target, "new", inside=lambda f: (f.close(), 1 / 0))
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


def test_write_after_commit_sync_is_a_closed_file(tmp_path: Path) -> None:
    """The sync file is the real file object: after commit it is closed, as open()'s is
    after `with`: ValueError, and nothing reaches the target."""
    for mode, buffering, data in (("w", -1, "x"), ("wb", -1, b"x"), ("wb", 0, b"x")):
        target = tmp_path / f"{mode}{buffering}"
        with AtomicFile(target, cast(Any, mode), buffering) as f:
            f.write(data)
        with pytest.raises(ValueError, match="closed file"):
            f.write(data)
        assert f.closed
        assert target.read_bytes() == b"x"
    assert len(listing(tmp_path)) == 3


async def test_write_after_commit_async_is_a_runtime_error(tmp_path: Path) -> None:
    async with AtomicFile(tmp_path / "t") as f:
        await f.write("x")
    with pytest.raises(RuntimeError, match="committed"):
        await f.write("y")
    assert (tmp_path / "t").read_text() == "x"
    assert listing(tmp_path) == ["t"]


def test_fifo_target_is_refused_not_replaced(tmp_path: Path, form: Form) -> None:
    """open(fifo, 'w') would write into the pipe; a rename would silently swap the pipe for
    a regular file. Neither is an atomic replace: EINVAL, and the FIFO stays."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SessionFileError) as caught:
        form.write(fifo, "x")
    assert caught.value.errno == errno.EINVAL
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert listing(tmp_path) == ["fifo"]


def test_device_target_through_a_symlink_is_refused(tmp_path: Path, form: Form) -> None:
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    with pytest.raises(SessionFileError) as caught:
        form.write(link, "x")
    assert caught.value.errno == errno.EINVAL
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert os.readlink(link) == "/dev/null"
    assert listing(tmp_path) == ["null"]


@pytest.mark.parametrize("name", [".", "..", "sub/", "sub/.", ""])
def test_directory_like_and_empty_paths(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub" if name == ".." else tmp_path)
    with pytest.raises(OSError) as theirs:
        open(name, "w").close()
    with pytest.raises(SessionFileError) as caught:
        form.write(name, "x")
    assert caught.value.errno == theirs.value.errno
    assert isinstance(caught.value, type(theirs.value))
    assert listing(tmp_path) == ["sub"]
    assert listing(tmp_path / "sub") == []


def test_nul_in_path_is_a_value_error_as_in_open(tmp_path: Path, form: Form) -> None:
    with pytest.raises(ValueError, match="null"):
        form.write(str(tmp_path / "a\0b"), "x")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("mode", ["w", "x", "a", "r+"])
@pytest.mark.parametrize(
    "name", ["file/", "file/x", "missing/", "missing/x", "dir", "dir/", "dangling", "loop"]
)
def test_odd_paths_fail_as_open_does(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch, name: str, mode: str
) -> None:
    """Same builtin class and errno as open(path, mode) for the same odd path."""
    monkeypatch.chdir(tmp_path)
    Path("file").write_bytes(b"old")
    Path("dir").mkdir()
    Path("dangling").symlink_to("missing/x")
    Path("loop").symlink_to("loop")
    before = listing(tmp_path)
    with pytest.raises(OSError) as theirs:
        open(name, mode).close()
    with pytest.raises(SessionFileError) as caught:
        form.write(name, mode=mode)
    assert (caught.value.errno, errno.errorcode[caught.value.errno or 0]) == (
        theirs.value.errno,
        errno.errorcode[theirs.value.errno or 0],
    )
    assert isinstance(caught.value, type(theirs.value))
    assert listing(tmp_path) == before
    assert Path("file").read_bytes() == b"old"


# -- atomic_write ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"bytes\x00\xff", bytearray(b"bytearray"), memoryview(b"memoryview"), "str \u00e9\n", ""],
    ids=["bytes", "bytearray", "memoryview", "str", "empty"],
)
def test_atomic_write_data_types(tmp_path: Path, form: Form, data: Any) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    form.write_all(target, data)
    expected = data.encode() if isinstance(data, str) else bytes(data)
    assert target.read_bytes() == expected
    assert listing(tmp_path) == ["t"]


def test_atomic_write_typed_memoryview_writes_its_bytes(tmp_path: Path, form: Form) -> None:
    data = array("H", [1, 2, 0xFFFF])
    form.write_all(tmp_path / "t", memoryview(data))
    assert (tmp_path / "t").read_bytes() == data.tobytes()


@pytest.mark.parametrize("data", [42, ["a"], None, 1.5, {"a": 1}])
def test_atomic_write_bad_data_type(tmp_path: Path, form: Form, data: Any) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        form.write_all(target, data)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_atomic_write_x_and_a(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    form.write_all(target, "one", mode="x")
    with pytest.raises(FileExistsError) as caught:
        form.write_all(target, "two", mode="x")
    assert isinstance(caught.value, SessionFileError)
    assert caught.value.errno == errno.EEXIST
    form.write_all(target, "+a", mode="a")
    form.write_all(target, b"+b", mode="a")
    assert target.read_text() == "one+a+b"
    form.write_all(tmp_path / "new", b"appended", mode="a")
    assert (tmp_path / "new").read_bytes() == b"appended"
    assert listing(tmp_path) == ["new", "t"]


@pytest.mark.parametrize("mode", ["r+", "wb", "w+", "r", ""])
def test_atomic_write_bad_mode(tmp_path: Path, form: Form, mode: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(mode))):
        form.write_all(tmp_path / "t", "x", mode=mode)
    assert listing(tmp_path) == []


def test_atomic_write_text_options(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    form.write_all(target, "\u00e9\n", encoding="latin-1", newline="\r\n")
    assert target.read_bytes() == b"\xe9\r\n"
    with pytest.raises(ValueError, match="encoding"):
        form.write_all(target, b"x", encoding="utf-8")
    assert target.read_bytes() == b"\xe9\r\n"
    assert listing(tmp_path) == ["t"]


def test_atomic_write_async_is_a_coroutine_function() -> None:
    assert asyncio.iscoroutinefunction(atomic_write_async)
    assert not asyncio.iscoroutinefunction(atomic_write)


# -- the temp file ---------------------------------------------------------------------------------


def test_temp_file_name_and_place(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "config.json"
    target.write_text("old")
    seen: dict[str, Any] = {}

    af = AtomicFile(target)

    def inside(f: Any) -> None:
        f.write("new")
        seen["name"] = af.temp_path
        seen["listing"] = listing(tmp_path)

    enter(form, af, inside)
    name = seen["name"]
    assert os.path.dirname(name) == str(tmp_path)
    base = os.path.basename(name)
    assert re.fullmatch(TEMP_RE.format(base=re.escape("config.json")), base)
    assert seen["listing"] == sorted(["config.json", base])
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["config.json"]


def test_temp_path_attribute(tmp_path: Path, form: Form) -> None:
    af = AtomicFile(tmp_path / "t")
    assert af.temp_path is None
    seen: list[Any] = []
    enter(form, af, lambda f: seen.extend([f.name, af.temp_path, temps(tmp_path)]))
    assert seen[0] == str(tmp_path / "t")  # f.name is what open() would give
    assert seen[1] is not None and seen[2] == [os.path.basename(seen[1])]
    assert os.path.dirname(seen[1]) == str(tmp_path)
    assert af.temp_path is None
    assert not os.path.exists(seen[1])
    assert listing(tmp_path) == ["t"]


def test_temp_names_are_random(tmp_path: Path) -> None:
    names = set()
    for _ in range(20):
        af = AtomicFile(tmp_path / "t")
        with af:
            names.add(af.temp_path)
    assert len(names) == 20


@pytest.mark.parametrize("base", ["a" * 250, "\u00e9" * 125, "x" * 255, "\u20ac" * 85])
def test_long_basename(tmp_path: Path, form: Form, base: str) -> None:
    """The temp name is shortened (whole characters) to fit; the target keeps its name."""
    assert len(os.fsencode(base)) in (250, 255)
    target = tmp_path / base
    seen: list[list[str]] = []
    form.write(target, "long", inside=lambda f: seen.append(temps(tmp_path)))
    (temp,) = seen[0]
    raw = os.fsencode(temp)
    assert len(raw) <= 255
    raw.decode("utf-8")  # a valid name: no character cut in half
    match = re.fullmatch(r"\.(.*)\.[0-9a-f]{16}\.tmp", temp)
    assert match and match.group(1) and base.startswith(match.group(1))
    assert target.read_text() == "long"
    assert listing(tmp_path) == [base]


def test_temp_name_clash_is_retried(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file already at the first temp name is never opened or touched: O_EXCL, retry."""
    target = tmp_path / "t"
    target.write_text("old")
    taken = tmp_path / f".t.{0xDEADBEEF:016x}.tmp"
    taken.write_bytes(b"someone else's")
    taken.chmod(0o600)
    before = os.stat(taken)
    real_token = atomicfile._naming.token
    calls: list[int] = []

    def token() -> int:
        value = 0xDEADBEEF if not calls else real_token()
        calls.append(value)
        return value

    monkeypatch.setattr(atomicfile._naming, "token", token)
    seen: list[list[str]] = []
    form.write(target, "new", inside=lambda f: seen.append(listing(tmp_path)))
    assert len(calls) >= 2 and calls[0] == 0xDEADBEEF
    (ours,) = set(seen[0]) - {"t", taken.name}
    assert re.fullmatch(TEMP_RE.format(base="t"), ours)
    assert target.read_text() == "new"
    assert taken.read_bytes() == b"someone else's"
    after = os.stat(taken)
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mode,
        before.st_mtime_ns,
    )
    assert listing(tmp_path) == sorted(["t", taken.name])


def test_temp_name_clash_with_a_symlink_is_not_followed(
    tmp_path: Path, form: Form, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symlink planted at the temp name is not followed (O_NOFOLLOW|O_EXCL)."""
    target = tmp_path / "t"
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    trap = tmp_path / f".t.{7:016x}.tmp"
    trap.symlink_to(victim)
    tokens = iter([7])
    real_token = atomicfile._naming.token
    monkeypatch.setattr(atomicfile._naming, "token", lambda: next(tokens, None) or real_token())
    form.write(target, "new")
    assert target.read_text() == "new"
    assert victim.read_bytes() == b"victim"
    assert os.readlink(trap) == str(victim)
    assert listing(tmp_path) == sorted(["t", "victim", trap.name])


def test_line_buffering_in_binary_mode_warns_as_open_does(tmp_path: Path, form: Form) -> None:
    with pytest.warns(RuntimeWarning, match="line buffering") as theirs:
        open(tmp_path / "control", "wb", 1).close()
    with pytest.warns(RuntimeWarning, match="line buffering") as ours:
        form.write(tmp_path / "t", b"x", mode="wb", buffering=1)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert (tmp_path / "t").read_bytes() == b"x"
    assert listing(tmp_path) == ["control", "t"]


def test_a_file_descriptor_is_not_a_target(tmp_path: Path) -> None:
    """open() takes an fd; an atomic replace needs a name: TypeError before any I/O."""
    with pytest.raises(TypeError):
        AtomicFile(0)  # type: ignore[call-overload]
    assert listing(tmp_path) == []


def test_commit_inside_the_block_then_exception(tmp_path: Path, form: Form) -> None:
    """An explicit commit() inside `with` is final: a later exception propagates and the
    target keeps the committed content."""
    target = tmp_path / "t"
    target.write_text("old")
    af = AtomicFile(target)

    def body(f: Any) -> None:
        f.write("new")
        af.commit()
        raise LookupError("after commit")

    with pytest.raises(LookupError, match="after commit"):
        enter(form, af, body)
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["t"]


def test_commit_after_discard_inside_the_block(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "t"
    target.write_text("old")
    af = AtomicFile(target)

    def body(f: Any) -> None:
        f.write("new")
        af.discard()
        af.commit()

    with pytest.raises(RuntimeError, match="discarded"):
        enter(form, af, body)
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
def test_append_plus_writes_at_the_end_after_a_seek(
    tmp_path: Path, form: Form, existing: bool
) -> None:
    """'a+' keeps open()'s O_APPEND semantics whether or not there was content to copy."""
    target = tmp_path / "t"
    control = tmp_path / "control"
    for path in (target, control) if existing else ():
        path.write_bytes(b"old")

    def seek_then_write(f: Any) -> None:
        f.seek(0)
        f.write(b"!")

    form.write(target, b"new", mode="ab+", inside=seek_then_write)
    with open(control, "ab+") as c:
        c.write(b"new")
        seek_then_write(c)
    assert target.read_bytes() == control.read_bytes()
    assert listing(tmp_path) == ["control", "t"]


# -- the file is named as open() names it; foreign errors pass through -------------------------


def _names(f: Any) -> list[Any]:
    """The `name` of a file object and of every layer below it (buffer, raw)."""
    names = [f.name]
    buffer = getattr(f, "buffer", None)
    if buffer is not None:
        names.append(buffer.name)
        f = buffer
    raw = getattr(f, "raw", None)
    if raw is not None:
        names.append(raw.name)
    return names


@pytest.mark.parametrize(
    ("mode", "buffering", "layers"),
    [("w", -1, 3), ("wb", -1, 2), ("wb", 0, 1), ("r+b", -1, 2), ("a+", -1, 3)],
)
def test_file_name_is_what_open_gives(
    tmp_path: Path, as_path: Callable[[Path], Any], mode: str, buffering: int, layers: int
) -> None:
    """Issue 10.2: `f.name` (and its buffer's and raw file's) is `os.fspath(file)` as
    passed, bytes staying bytes, exactly what open() gives; the temp is `af.temp_path`."""
    target = tmp_path / "t"
    target.write_bytes(b"old")
    control = tmp_path / "control"
    control.write_bytes(b"old")
    with open(as_path(control), mode, buffering) as plain:
        expected_type = type(plain.name)
        assert _names(plain) == [os.fspath(as_path(control))] * layers
    af = AtomicFile(as_path(target), cast(Any, mode), buffering)
    with af as f:
        assert _names(f) == [os.fspath(as_path(target))] * layers
        assert all(type(name) is expected_type for name in _names(f))
        assert af.name == os.fspath(as_path(target))
        assert af.temp_path is not None and af.temp_path != f.name
        assert listing(tmp_path) == sorted(["control", "t", os.path.basename(af.temp_path)])
        f.write("new" if "b" not in mode else b"new")
    assert listing(tmp_path) == ["control", "t"]


async def test_async_file_name_is_what_open_gives(
    tmp_path: Path, as_path: Callable[[Path], Any]
) -> None:
    """Issue 10.2 for `async with`: AsyncFile.name is the target as passed (bytes stay
    bytes), as is its wrapped file's name and the layers below it."""
    target = tmp_path / "t"
    for mode, layers in (("w", 3), ("wb", 2)):
        af = AtomicFile(as_path(target), cast(Any, mode))
        async with af as f:
            assert f.name == os.fspath(as_path(target))
            assert type(f.name) is type(os.fspath(as_path(target)))
            assert _names(f.wrapped) == [os.fspath(as_path(target))] * layers
            assert af.temp_path is not None
            await f.write("x" if mode == "w" else b"x")
    assert target.read_bytes() == b"x"
    assert listing(tmp_path) == ["t"]


def _gzip_header_name(data: bytes) -> bytes:
    """The FNAME field of a gzip member (RFC 1952 section 2.3)."""
    assert data[:3] == b"\x1f\x8b\x08", data[:3]
    flags = data[3]
    assert flags & 0x08, "no FNAME in the header"
    assert not flags & 0x04  # no FEXTRA before the name (GzipFile never writes one)
    end = data.index(b"\0", 10)
    return data[10:end]


@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_gzip_records_the_target_name(tmp_path: Path, form: Form, kind: str) -> None:
    """Issue 10.2: GzipFile(fileobj=f) takes its header's file name from `f.name`: the
    target's name without ".gz", never the temp's."""
    target = tmp_path / "out.txt.gz"
    path: Any = str(target) if kind == "str" else os.fsencode(target)
    payload = b"compressed payload\n" * 50

    def compress(f: Any) -> None:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
            g.write(payload)

    form.write(path, mode="wb", inside=compress)
    data = target.read_bytes()
    assert _gzip_header_name(data) == b"out.txt"
    assert gzip.decompress(data) == payload
    # The same bytes as gzip writes through open() on a file of that name.
    control = tmp_path / "control" / "out.txt.gz"
    control.parent.mkdir()
    with open(control, "wb") as plain:
        compress(plain)
    assert control.read_bytes() == data
    assert listing(tmp_path) == ["control", "out.txt.gz"]


def test_pillow_saves_by_the_target_extension(tmp_path: Path, form: Form) -> None:
    """Issue 10.2: `im.save(f)` without a format picks it from `f.name`'s extension."""
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    target = tmp_path / "x.png"
    image = image_module.new("RGB", (3, 2), (200, 10, 30))
    form.write(target, mode="wb", inside=lambda f: image.save(f))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with image_module.open(target) as loaded:
        assert loaded.format == "PNG"
        assert loaded.size == (3, 2)
        assert loaded.getpixel((2, 1)) == (200, 10, 30)
    assert listing(tmp_path) == ["x.png"]


class _UserOSError(OSError):
    """A library's own OSError subclass (as requests' and paramiko's errors are)."""


def _foreign_errors() -> list[OSError]:
    return [
        ssl.SSLCertVerificationError(
            1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
        ),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        _UserOSError(errno.EIO, "the user's own I/O error"),
        _UserOSError("no errno at all"),
    ]


@pytest.mark.parametrize("index", range(4), ids=["ssl", "gaierror", "user", "user-no-errno"])
def test_foreign_oserror_in_the_block_is_the_same_object(
    tmp_path: Path, form: Form, index: int
) -> None:
    """Issue 10.1: an OSError class that is not a builtin one, raised inside the block,
    comes out as the very same object (not wrapped), and the write is rolled back."""
    err = _foreign_errors()[index]
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as caught:
        form.write(target, "new", raise_=err)
    assert caught.value is err
    assert not isinstance(caught.value, SessionFileError)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def test_builtin_oserror_in_the_block_is_wrapped(tmp_path: Path, form: Form) -> None:
    """A builtin OSError class raised in the block is the write's error: SessionFileError,
    still a PermissionError, chained to the original."""
    err = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "somewhere")
    target = tmp_path / "t"
    target.write_bytes(b"old")
    with pytest.raises(PermissionError) as caught:
        form.write(target, "new", raise_=err)
    wrapped = caught.value
    assert isinstance(wrapped, SessionFileError)
    assert wrapped.cause is err and wrapped.__cause__ is err
    assert (wrapped.errno, wrapped.filename, wrapped.step) == (errno.EACCES, "somewhere", "write")
    assert wrapped.path == str(target)
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]


def _discard_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, Any]]:
    return [
        (r.levelno, r.getMessage(), r.__dict__.get("reason"))
        for r in caplog.records
        if r.name == "atomicfile"
    ]


@pytest.mark.parametrize(
    "exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError]
)
def test_base_exception_in_the_block_is_a_discard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, exc_type: type[BaseException]
) -> None:
    """Issue 9.12/10.4: an exception that is not an Exception ends the write as a discard:
    DEBUG "Atomic write discarded" with the class name as `reason`, never an ERROR."""
    caplog.set_level(logging.DEBUG, logger="atomicfile")
    target = tmp_path / "t"
    target.write_bytes(b"old")
    af = AtomicFile(target)
    raised = exc_type()
    with pytest.raises(exc_type) as caught, af as f:
        f.write("new")
        temp = af.temp_path
        raise raised
    assert caught.value is raised
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]
    assert _discard_records(caplog) == [
        (logging.DEBUG, "Starting atomic write", None),
        (logging.DEBUG, "Atomic write discarded", exc_type.__name__),
        (logging.DEBUG, "Temp file cleaned up", None),
    ]
    discarded = next(r for r in caplog.records if r.getMessage() == "Atomic write discarded")
    assert discarded.__dict__["temp_path"] == temp
    assert discarded.__dict__["target_path"] == str(target)
    assert discarded.__dict__["operation"] == "discard"
    with pytest.raises(RuntimeError, match="discarded"):
        af.commit()


@pytest.mark.parametrize("exc_type", [GeneratorExit, asyncio.CancelledError])
async def test_base_exception_in_the_async_block_is_a_discard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, exc_type: type[BaseException]
) -> None:
    caplog.set_level(logging.DEBUG, logger="atomicfile")
    target = tmp_path / "t"
    target.write_bytes(b"old")
    raised = exc_type()
    with pytest.raises(exc_type) as caught:
        async with AtomicFile(target) as f:
            await f.write("new")
            raise raised
    assert caught.value is raised
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["t"]
    assert _discard_records(caplog) == [
        (logging.DEBUG, "Starting atomic write", None),
        (logging.DEBUG, "Atomic write discarded", exc_type.__name__),
        (logging.DEBUG, "Temp file cleaned up", None),
    ]


def test_mypy_accepts_a_mode_known_only_at_run_time() -> None:
    """Issue 10 (f): `AtomicFile(p, mode)` with `mode: str` type-checks (IO[Any], as
    typeshed's open() fallback); tests/typecheck/check_types.py pins it under --strict."""
    source = Path(__file__).parent / "typecheck" / "check_types.py"
    assert "def runtime_mode(p: str, mode: str)" in source.read_text()
    api = pytest.importorskip("mypy.api", reason="mypy is not installed")
    root = Path(__file__).parent.parent
    stdout, stderr, status = api.run(
        ["--config-file", str(root / "pyproject.toml"), "--no-incremental", str(source)]
    )
    assert status == 0, stdout + stderr


def test_chained_open_discards_with_a_warning_naming_commit(tmp_path: Path) -> None:
    """Issue 10 (g), issue 21: `f = AtomicFile(p).open()` keeps no AtomicFile: it is
    collected at once, which discards the write (temp removed) with a RuntimeWarning (shown
    by default) that names the pattern to use; the file is closed, so writing fails at
    once, as after close()."""
    target = tmp_path / "t"
    target.write_text("old")
    with pytest.warns(RuntimeWarning, match=r"nothing written.*af\.commit\(\)"):
        f = AtomicFile(target).open()
        gc.collect()  # only for interpreters without reference counting
    assert f.closed
    with pytest.raises(ValueError, match="closed file"):
        f.write("new")
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]


def test_abandoned_write_is_cleaned_even_when_warnings_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `-W error` the ResourceWarning raised in __del__ must not skip the cleanup."""
    target = tmp_path / "t"
    target.write_text("old")
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        af = AtomicFile(target)
        af.open().write("new")
        del af
        gc.collect()
    assert [type(u.exc_value) for u in unraisable] == [ResourceWarning]
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["t"]
