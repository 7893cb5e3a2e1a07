"""make_parents=True (issue 21, item 1; SPEC section 9): missing directories created as
os.makedirs would, relative to descriptors, and durable with the write (strace)."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest
from _trace import trace

import atomicfile
from atomicfile import AtomicBatch, AtomicDirectory, AtomicFile, SessionFileError, atomic_update

from conftest import RUNTIMES, Form, listing
from helpers import need


@pytest.fixture
def umask_027() -> object:
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_missing_directories_are_created(form: Form, tmp_path: Path, umask_027: object) -> None:
    target = tmp_path / "a" / "b" / "c" / "t.txt"
    form.write(target, "new", make_parents=True)
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["a"]
    assert listing(tmp_path / "a" / "b" / "c") == ["t.txt"]
    for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o750  # 0o777 less the umask, as makedirs


def test_relative_path_and_dotdot(
    form: Form, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path / "w")
    form.write_all("x/../y/z/t", "v", make_parents=True)
    assert listing(tmp_path) == ["w"]
    assert listing(tmp_path / "w") == ["x", "y"]  # "x" made as makedirs makes it
    assert (tmp_path / "w" / "y" / "z" / "t").read_text() == "v"


def test_default_is_open_s(form: Form, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        form.write(tmp_path / "a" / "t", "v")
    assert isinstance(info.value, SessionFileError)
    assert info.value.errno == errno.ENOENT
    assert listing(tmp_path) == []


def test_existing_directories_are_used(form: Form, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "t").write_text("old")
    form.write(tmp_path / "a" / "t", "new", make_parents=True)
    assert (tmp_path / "a" / "t").read_text() == "new"
    assert listing(tmp_path / "a") == ["t"]


def test_a_file_in_the_way(form: Form, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("file")
    with pytest.raises(NotADirectoryError) as info:
        form.write(tmp_path / "a" / "b" / "t", "v", make_parents=True)
    assert isinstance(info.value, SessionFileError)
    assert info.value.errno == errno.ENOTDIR
    assert listing(tmp_path) == ["a"]
    assert (tmp_path / "a").read_text() == "file"


def test_a_file_in_the_way_deeper(form: Form, tmp_path: Path) -> None:
    # The first missing component is made; the file below stops the walk.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("file")
    with pytest.raises(NotADirectoryError):
        form.write(tmp_path / "a" / "f" / "g" / "t", "v", make_parents=True)
    assert listing(tmp_path / "a") == ["f"]


def test_a_dangling_symlink_in_the_way(form: Form, tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError) as info:
        form.write(tmp_path / "a" / "b" / "t", "v", make_parents=True)
    assert isinstance(info.value, SessionFileError)
    assert info.value.filename == str(tmp_path / "a")
    assert listing(tmp_path) == ["a"]


def test_a_symlink_to_a_directory_is_followed(form: Form, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    form.write(tmp_path / "link" / "n" / "t", "v", make_parents=True)
    assert listing(tmp_path / "real" / "n") == ["t"]


def test_failure_after_the_directories_keeps_them(form: Form, tmp_path: Path) -> None:
    # As os.makedirs then open(): the directories stay, the target is never written.
    with pytest.raises(ZeroDivisionError):
        form.write(tmp_path / "a" / "t", "v", make_parents=True, raise_=ZeroDivisionError())
    assert listing(tmp_path) == ["a"]
    assert listing(tmp_path / "a") == []


def test_lock_and_update(tmp_path: Path) -> None:
    assert (
        atomic_update(tmp_path / "u" / "v" / "n", lambda old: f"{old}", make_parents=True) == "None"
    )
    with AtomicFile(tmp_path / "l" / "n", lock=True, make_parents=True) as f:
        f.write("x")
    assert sorted(listing(tmp_path)) == ["l", "u"]
    assert (tmp_path / "l" / "n").read_text() == "x"


def test_directory(tmp_path: Path) -> None:
    with AtomicDirectory(tmp_path / "a" / "b" / "site", make_parents=True) as d:
        (d / "index.html").write_text("x")
    assert listing(tmp_path / "a" / "b") == ["site"]
    assert listing(tmp_path / "a" / "b" / "site") == ["index.html"]
    with pytest.raises(FileNotFoundError):
        AtomicDirectory(tmp_path / "c" / "site").open()
    assert listing(tmp_path) == ["a"]


def test_batch(tmp_path: Path) -> None:
    with AtomicBatch() as batch:
        batch.write(tmp_path / "a" / "1", "1", make_parents=True)
        batch.write(tmp_path / "a" / "2", "2", make_parents=True)
        batch.open(tmp_path / "b" / "c" / "3", make_parents=True).write("3")
    assert listing(tmp_path) == ["a", "b"]
    assert listing(tmp_path / "a") == ["1", "2"]
    assert (tmp_path / "b" / "c" / "3").read_text() == "3"


def _fsyncs_after_rename(calls: list[tuple[str, str, int]]) -> list[str]:
    names = [c for c, _, _ in calls]
    renamed = max(i for i, n in enumerate(names) if n.startswith("rename"))
    return [
        args.split("<", 1)[1].split(">", 1)[0]
        for c, args, _ in calls[renamed + 1 :]
        if c == "fsync"
    ]


def test_new_directories_are_durable_bottom_up(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "t"
    calls = trace(
        tmp_path,
        f"import atomicfile; atomicfile.atomic_write({str(target)!r}, 'v', make_parents=True)",
    )
    # The target's directory (the file's entry), then each new directory's parent, deepest
    # first, each once; all after the rename.
    assert _fsyncs_after_rename(calls) == [
        str(tmp_path / "a" / "b"),
        str(tmp_path / "a"),
        str(tmp_path),
    ]


def test_only_the_new_directories_parents(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    target = tmp_path / "a" / "b" / "t"
    calls = trace(
        tmp_path,
        f"import atomicfile; atomicfile.atomic_write({str(target)!r}, 'v', make_parents=True)",
    )
    assert _fsyncs_after_rename(calls) == [str(tmp_path / "a" / "b"), str(tmp_path / "a")]


def test_not_durable_syncs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "t"
    calls = trace(
        tmp_path,
        "import atomicfile\n"
        f"atomicfile.atomic_write({str(target)!r}, 'v', make_parents=True, durable=False)",
    )
    assert [c for c, _, _ in calls if c == "fsync"] == []


def test_batch_syncs_the_new_directories(tmp_path: Path) -> None:
    code = (
        "import atomicfile\n"
        "with atomicfile.AtomicBatch() as b:\n"
        f"    b.write({str(tmp_path / 'x' / '1')!r}, '1')\n"
        f"    b.write({str(tmp_path / 'n' / 'm' / '2')!r}, '2', make_parents=True)\n"
    )
    (tmp_path / "x").mkdir()
    calls = trace(tmp_path, code)
    synced = _fsyncs_after_rename(calls)
    assert (
        synced.index(str(tmp_path / "n" / "m"))
        < synced.index(str(tmp_path / "n"))
        < synced.index(str(tmp_path))
    )


def test_directory_syncs_the_new_directories(tmp_path: Path) -> None:
    code = (
        "import atomicfile\n"
        f"with atomicfile.AtomicDirectory({str(tmp_path / 'n' / 'site')!r},"
        " make_parents=True) as d:\n"
        "    (d / 'f').write_text('x')\n"
    )
    calls = trace(tmp_path, code)
    assert _fsyncs_after_rename(calls)[-2:] == [str(tmp_path / "n"), str(tmp_path)]


def test_option_is_in_the_typed_options() -> None:
    from atomicfile._options import TargetOptions

    assert "make_parents" in TargetOptions.__annotations__
    assert atomicfile.atomic_write.__doc__


def test_symlink(tmp_path: Path) -> None:
    atomicfile.atomic_symlink(
        "../../releases/v1", tmp_path / "a" / "b" / "current", make_parents=True
    )
    assert os.readlink(tmp_path / "a" / "b" / "current") == "../../releases/v1"
    assert listing(tmp_path / "a" / "b") == ["current"]
    with pytest.raises(FileNotFoundError):
        atomicfile.atomic_symlink("x", tmp_path / "c" / "link")
    assert listing(tmp_path) == ["a"]


def test_move(tmp_path: Path) -> None:
    (tmp_path / "src").write_text("moved")
    atomicfile.atomic_move(tmp_path / "src", tmp_path / "a" / "b" / "dst", make_parents=True)
    assert (tmp_path / "a" / "b" / "dst").read_text() == "moved"
    assert listing(tmp_path) == ["a"]
    (tmp_path / "src2").write_text("v")
    with pytest.raises(FileNotFoundError):
        atomicfile.atomic_move(tmp_path / "src2", tmp_path / "c" / "dst")
    assert listing(tmp_path) == ["a", "src2"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_symlink_and_move_async(runtime: str, tmp_path: Path) -> None:
    (tmp_path / "src").write_text("v")

    async def main() -> None:
        await atomicfile.atomic_symlink_async("t", tmp_path / "l" / "link", make_parents=True)
        await atomicfile.atomic_move_async(
            tmp_path / "src", tmp_path / "m" / "dst", make_parents=True
        )

    Form(runtime).run(main)
    assert os.readlink(tmp_path / "l" / "link") == "t"
    assert (tmp_path / "m" / "dst").read_text() == "v"
    assert listing(tmp_path) == ["l", "m"]


def test_symlink_and_move_sync_the_new_directories(tmp_path: Path) -> None:
    (tmp_path / "src").write_text("v")
    code = (
        "import atomicfile\n"
        f"atomicfile.atomic_symlink('t', {str(tmp_path / 'l' / 'k' / 'link')!r},"
        " make_parents=True)\n"
        f"atomicfile.atomic_move({str(tmp_path / 'src')!r}, {str(tmp_path / 'm' / 'dst')!r},"
        " make_parents=True)\n"
    )
    calls = trace(tmp_path, code)
    synced = [a.split("<", 1)[1].split(">", 1)[0] for c, a, _ in calls if c == "fsync"]
    link_part = synced.index(str(tmp_path / "l" / "k"))
    assert synced[link_part : link_part + 3] == [
        str(tmp_path / "l" / "k"),
        str(tmp_path / "l"),
        str(tmp_path),
    ]
    move_part = synced.index(str(tmp_path / "m"))
    # dst's directory, its parent (new), then the source's directory (the name gone).
    assert synced[move_part : move_part + 3] == [str(tmp_path / "m"), str(tmp_path), str(tmp_path)]


def test_object_store_accepts_and_ignores_it() -> None:
    # Object stores have no directories: a key's prefix needs no creating.
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    url = "memory://atomicfile-tests/make-parents/a/b/obj"
    try:
        atomicfile.atomic_write(url, b"v", make_parents=True)
        assert fs.cat(url) == b"v"
    finally:
        fs.rm(url)


def test_each_directory_is_made_relative_to_its_parent_s_descriptor(tmp_path: Path) -> None:
    """mkdirat(parent_fd, one component): never a path string resolved again (strace)."""
    import shutil
    import subprocess
    import sys

    need("strace")  # skips naming the package (fails under ATOMICFILE_REQUIRE_ALL=1)
    strace = shutil.which("strace")
    assert strace is not None
    target = tmp_path / "a" / "b" / "c" / "t"
    out = tmp_path / "strace.out"
    code = f"import atomicfile; atomicfile.atomic_write({str(target)!r}, 'v', make_parents=True)"
    subprocess.run(
        [strace, "-f", "-qq", "-y", "-e", "trace=mkdir,mkdirat", "-o", str(out),
         sys.executable, "-c", code],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    made = [line for line in out.read_text().splitlines() if "mkdir" in line]
    assert len(made) == 3, made
    expected = [(tmp_path, "a"), (tmp_path / "a", "b"), (tmp_path / "a" / "b", "c")]
    for line, (parent, name) in zip(made, expected, strict=True):
        # strace -y prints a descriptor as N<path>: the parent's descriptor, one name.
        assert re.search(rf'mkdirat\(\d+<{re.escape(str(parent))}>, "{name}", 0777\) = 0', line)
    assert (tmp_path / "a" / "b" / "c" / "t").read_text() == "v"
