"""AtomicDirectory: a whole tree replaced in one step, or left as it was.

Every failure case asserts the target's content, the exact listing of its parent (no staging
directory left) and the error's class and errno.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import os
import re
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import atomicfile
from atomicfile import AtomicDirectory, SessionFileError
from atomicfile._naming import is_temp_name

from conftest import Form, listing, mount_tmpfs, needs_root
from helpers import Staged

STAGING_RE = r"\.{base}\.[0-9a-f]{{16}}\.tmp"


def staging_of(d: Path) -> Path:
    """The staging directory that holds the new tree `d` (`/proc/<pid>/fd/<n>`)."""
    real = Path(os.readlink(d))
    assert real.name == "tree"
    return real.parent


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> content); directories as '<dir>'."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = "<dir>"
        for f in filenames:
            out[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_text()
    return out


def make_old(parent: Path) -> Path:
    site = parent / "site"
    site.mkdir()
    (site / "index.html").write_text("old index")
    (site / "sub").mkdir()
    (site / "sub" / "page.html").write_text("old page")
    os.chmod(site, 0o750)
    return site


OLD = {"index.html": "old index", "sub": "<dir>", os.path.join("sub", "page.html"): "old page"}


def fill(d: Path) -> None:
    (d / "index.html").write_text("new index")
    (d / "assets").mkdir()
    (d / "assets" / "app.js").write_text("new js")


NEW = {"index.html": "new index", "assets": "<dir>", os.path.join("assets", "app.js"): "new js"}


def run_form(
    form: Form, target: Any, body: Any, ad: AtomicDirectory | None = None, **options: Any
) -> AtomicDirectory:
    """Run `body(d)` inside `with AtomicDirectory(...) as d`, or inside `async with` on
    the form's runtime (`ad`: an AtomicDirectory made by the caller)."""
    if ad is None:
        ad = AtomicDirectory(target, **options)
    if not form.is_async:
        with ad as d:
            body(d)
        return ad

    async def main() -> None:
        assert ad is not None
        async with ad as d:
            body(d)

    form.run(main)
    return ad


def test_replaces_tree_keeps_mode(tmp_path: Path, form: Form) -> None:
    site = make_old(tmp_path)
    seen: list[str] = []

    def body(d: Path) -> None:
        assert isinstance(d, Path)
        # `d` leads to the new tree through the writer's descriptor; the tree is `tree` in
        # a staging directory beside the target.
        assert re.fullmatch(r"/proc/\d+/fd/\d+", str(d))
        staging = staging_of(d)
        assert staging.parent == tmp_path
        assert re.fullmatch(STAGING_RE.format(base="site"), staging.name)
        assert is_temp_name(staging.name)  # the sweep's shape: a dead writer's leftover is found
        assert listing(staging) == ["tree"]
        seen.extend(listing(tmp_path))
        fill(d)
        assert tree(site) == OLD  # nothing published yet

    run_form(form, site, body)
    assert len(seen) == 2 and "site" in seen
    assert listing(tmp_path) == ["site"]
    assert tree(site) == NEW
    assert stat.S_IMODE(os.stat(site).st_mode) == 0o750


def test_new_target_gets_mkdir_mode(tmp_path: Path, form: Form) -> None:
    old = os.umask(0o027)
    try:
        run_form(form, str(tmp_path / "out"), fill)
    finally:
        os.umask(old)
    assert listing(tmp_path) == ["out"]
    assert tree(tmp_path / "out") == NEW
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o750


def test_path_forms_and_trailing_slash(tmp_path: Path) -> None:
    make_old(tmp_path)
    with AtomicDirectory(os.fsencode(tmp_path / "site") + b"/") as d:
        fill(d)
    assert tree(tmp_path / "site") == NEW
    assert listing(tmp_path) == ["site"]


def test_permissions_int_and_hook(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    with AtomicDirectory(site, permissions=0o700) as d:
        fill(d)
    assert stat.S_IMODE(os.stat(site).st_mode) == 0o700
    calls: list[tuple[Path, int | None]] = []

    def hook(target: Path, current: os.stat_result | None) -> int:
        calls.append((target, None if current is None else stat.S_IMODE(current.st_mode)))
        return 0o711

    with AtomicDirectory(site, permissions=hook) as d:
        fill(d)
    assert calls == [(site, 0o700)]
    assert stat.S_IMODE(os.stat(site).st_mode) == 0o711


def test_staging_is_private_and_locked_while_open(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    with AtomicDirectory(site) as d:
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(staging_of(d)).st_mode) == 0o700
        fd = os.open(staging_of(d), os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the sweep tries first
        finally:
            os.close(fd)
        fill(d)
    assert tree(site) == NEW


def test_exception_removes_staging_target_untouched(tmp_path: Path, form: Form) -> None:
    site = make_old(tmp_path)
    boom = ValueError("boom")

    def body(d: Path) -> None:
        fill(d)
        os.chmod(d / "assets", 0o500)  # a read-only directory inside: still removed
        raise boom

    with pytest.raises(ValueError) as info:
        run_form(form, site, body)
    assert info.value is boom
    assert listing(tmp_path) == ["site"]
    assert tree(site) == OLD


def test_removal_never_follows_symlinks(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    with pytest.raises(RuntimeError), AtomicDirectory(site) as d:
        os.symlink(outside, d / "link")
        os.symlink(outside / "keep", d / "filelink")
        raise RuntimeError
    assert listing(tmp_path) == ["outside", "site"]
    assert listing(outside) == ["keep"]
    assert tree(site) == OLD
    # And on a commit, the old tree's removal doesn't follow its links either.
    os.symlink(outside, site / "link")
    with AtomicDirectory(site) as d:
        fill(d)
    assert listing(outside) == ["keep"]
    assert tree(site) == NEW


def test_discard_inside_block(tmp_path: Path, form: Form) -> None:
    site = make_old(tmp_path)
    ad = AtomicDirectory(site)

    def body(d: Path) -> None:
        fill(d)
        ad.discard()

    run_form(form, site, body, ad=ad)
    assert listing(tmp_path) == ["site"]
    assert tree(site) == OLD
    with pytest.raises(RuntimeError, match="discarded"):
        ad.commit()


def test_open_commit_without_with(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    ad = AtomicDirectory(site)
    d = ad.open()
    assert ad.staging_path == d
    fill(d)
    ad.commit()
    assert ad.staging_path is None
    assert tree(site) == NEW
    with pytest.raises(RuntimeError, match="already committed"):
        ad.commit()
    with pytest.raises(RuntimeError, match="already committed"):
        ad.open()
    ad2 = AtomicDirectory(site)
    fill(ad2.open())
    ad2.discard()
    assert listing(tmp_path) == ["site"]
    assert tree(site) == NEW


def test_keep_old(tmp_path: Path, form: Form) -> None:
    site = make_old(tmp_path)
    ad = run_form(form, site, fill, keep_old=True)
    assert tree(site) == NEW
    assert ad.old_path is not None and ad.old_path.parent == tmp_path
    assert not is_temp_name(ad.old_path.name)  # the sweep leaves a kept tree alone
    assert listing(tmp_path) == sorted(["site", ad.old_path.name])
    assert tree(ad.old_path) == OLD
    # No old tree when there was no target.
    ad2 = run_form(form, tmp_path / "fresh", fill, keep_old=True)
    assert ad2.old_path is None


def expect_error(
    tmp_path: Path,
    target: Any,
    cls: type[OSError],
    code: int,
    before: list[str],
    form: Form | None = None,
    **kw: Any,
) -> SessionFileError:
    with pytest.raises(SessionFileError) as info:
        run_form(form or Form("sync"), target, fill, **kw)
    err = info.value
    assert isinstance(err, cls)
    assert err.errno == code
    assert err.path == os.fsdecode(os.fspath(target))
    assert listing(tmp_path) == before
    return err


def test_target_is_a_file(tmp_path: Path, form: Form) -> None:
    (tmp_path / "site").write_text("a file")
    expect_error(tmp_path, tmp_path / "site", NotADirectoryError, errno.ENOTDIR, ["site"], form)
    assert (tmp_path / "site").read_text() == "a file"


def test_target_is_a_symlink(tmp_path: Path, form: Form) -> None:
    make_old(tmp_path)
    os.symlink("site", tmp_path / "link")
    expect_error(tmp_path, tmp_path / "link", OSError, errno.ELOOP, ["link", "site"], form)
    assert os.readlink(tmp_path / "link") == "site"
    assert tree(tmp_path / "site") == OLD


def test_missing_parent(tmp_path: Path, form: Form) -> None:
    expect_error(tmp_path, tmp_path / "no" / "site", FileNotFoundError, errno.ENOENT, [], form)


def test_bad_arguments_before_io(tmp_path: Path) -> None:
    for bad in (".", "..", "/", "a/.."):
        with pytest.raises(ValueError, match="names a directory"):
            AtomicDirectory(bad)
    with pytest.raises(TypeError):
        AtomicDirectory(tmp_path / "x", permissions="0o755")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AtomicDirectory(tmp_path / "x", permissions=0o10000)
    assert listing(tmp_path) == []


@needs_root
def test_mount_point_target(tmp_path: Path) -> None:
    with mount_tmpfs(tmp_path / "site", "size=1m") as site:
        (site / "index.html").write_text("old index")
        expect_error(tmp_path, site, OSError, errno.EBUSY, ["site"])
        assert listing(site) == ["index.html"]


@needs_root
def test_bind_mount_target_same_fs(tmp_path: Path) -> None:
    """A bind mount of the same file system has the parent's st_dev: the exchange itself
    refuses it (EBUSY), after which the staging tree is gone and the target untouched."""
    src = make_old(tmp_path)
    target = tmp_path / "bound"
    target.mkdir()
    done = subprocess.run(["mount", "--bind", str(src), str(target)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot bind-mount: {done.stderr.decode().strip()}")
    try:
        with pytest.raises(SessionFileError) as info, AtomicDirectory(target) as d:
            fill(d)
        assert info.value.errno == errno.EBUSY
        assert info.value.step == "rename"
        assert listing(tmp_path) == ["bound", "site"]
        assert tree(target) == OLD
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@needs_root
def test_permission_denied_on_parent(other_user: Staged) -> None:
    # Outside tmp_path: pytest's base directory is 0o700, which another user can't enter.
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="atomicdir-perm-"))
    try:
        os.chmod(top, 0o755)
        parent = top / "locked"
        parent.mkdir()
        make_old(parent)
        os.chmod(parent, 0o555)
        code = (
            "import errno, sys\n"
            "from atomicfile import AtomicDirectory, SessionFileError\n"
            "try:\n"
            f"    with AtomicDirectory({str(parent / 'site')!r}) as d: pass\n"
            "except SessionFileError as e:\n"
            "    print(isinstance(e, PermissionError), errno.errorcode[e.errno], e.step)\n"
        )
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        done = subprocess.run(  # the checkout may be where uid 65534 can't read
            [*command, other_user.python, "-c", code], capture_output=True, text=True,
            env=other_user.env, cwd=other_user.cwd,
        )  # fmt: skip
        assert done.stdout.split() == ["True", "EACCES", "create", "temp"], done.stderr
        assert listing(parent) == ["site"]
        assert tree(parent / "site") == OLD
    finally:
        shutil.rmtree(top)


def test_fallback_needed_where_no_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the system has no atomic exchange (here: renameat2 made absent, as on a libc
    without it), the default is a clear error; fallback=True replaces in two renames."""
    from atomicfile import _fs

    monkeypatch.setattr(_fs, "_renameat2", False)
    monkeypatch.setattr(_fs, "_load_renameat2", lambda: False)
    site = make_old(tmp_path)
    err = expect_error(tmp_path, site, OSError, errno.ENOSYS, ["site"])
    assert "fallback=True" in str(err)
    assert tree(site) == OLD
    with AtomicDirectory(site, fallback=True) as d:
        fill(d)
    assert tree(site) == NEW
    assert listing(tmp_path) == ["site"]


def test_concurrent_writers_last_wins(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    a, b = AtomicDirectory(site), AtomicDirectory(site)
    da, db = a.open(), b.open()
    (da / "who").write_text("a")
    (db / "who").write_text("b")
    a.commit()
    b.commit()
    assert tree(site) == {"who": "b"}
    assert listing(tmp_path) == ["site"]


def test_not_durable(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    with AtomicDirectory(site, durable=False) as d:
        fill(d)
    assert tree(site) == NEW


def test_exported_lazily() -> None:
    assert "AtomicDirectory" in atomicfile.__all__
    assert AtomicDirectory.__module__ == "atomicfile"
    code = (
        "import sys, atomicfile; "
        "print('ctypes' in sys.modules, 'atomicfile._directory' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_cancelled_async_enter_leaves_nothing(tmp_path: Path) -> None:
    site = make_old(tmp_path)

    async def main() -> None:
        task = asyncio.ensure_future(AtomicDirectory(site).__aenter__())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert listing(tmp_path) == ["site"]
    assert tree(site) == OLD


def test_abandoned_open_is_discarded_with_warning(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    ad = AtomicDirectory(site)
    fill(ad.open())
    with pytest.warns(ResourceWarning, match="unfinished"):
        del ad
        import gc

        gc.collect()
    assert listing(tmp_path) == ["site"]
    assert tree(site) == OLD


def test_abandoned_open_leaves_nothing_when_the_warning_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ResourceWarning turned into an error (as this suite and many others configure
    it), the warning is raised inside `__del__`, where Python can only report it
    ("Exception ignored in ..."): the staging directory must be gone already."""
    site = make_old(tmp_path)
    ignored: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(u.exc_type))
    ad = AtomicDirectory(site)
    fill(ad.open())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del ad
        gc.collect()
    assert listing(tmp_path) == ["site"]
    assert tree(site) == OLD
    assert ignored == [ResourceWarning]  # it was raised, and reported, after the cleanup


def test_a_forked_child_leaves_the_write_to_its_parent(tmp_path: Path) -> None:
    """The child's copy of an open write: its discard, its `with` exit and its garbage
    collection close its descriptors and remove nothing; the parent commits."""
    site = make_old(tmp_path)
    ad = AtomicDirectory(site)
    with ad as d:
        fill(d)
        with warnings.catch_warnings():
            # Threads a runtime left idle (trio's cache) make 3.12+ warn about fork(); the
            # child only closes descriptors and lists a directory.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ad.discard()
                ad.__exit__(None, None, None)
                code = 0 if listing(tmp_path) == sorted(["site", staging_of(d).name]) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert tree(d) == NEW  # the parent's staging tree, untouched by the child
    assert listing(tmp_path) == ["site"]
    assert tree(site) == NEW


def test_sweep_keeps_a_live_staging_directory(tmp_path: Path) -> None:
    site = make_old(tmp_path)
    with AtomicDirectory(site) as d:
        fill(d)
        assert atomicfile.clean_stale_temps(tmp_path) == []  # locked: a live writer's
        assert sorted(listing(tmp_path)) == sorted(["site", staging_of(d).name])
    assert tree(site) == NEW
    assert listing(tmp_path) == ["site"]


def test_d_is_usable_by_child_processes_and_copytree(tmp_path: Path) -> None:
    """`d` resolves through the writer's descriptor; a child process of the same user and
    `shutil.copytree` reach the new tree through it."""
    import shutil

    site = make_old(tmp_path)
    src = tmp_path / "src"
    (src / "css").mkdir(parents=True)
    (src / "css" / "a.css").write_text("a{}")
    with AtomicDirectory(site) as d:
        code = "import sys; open(sys.argv[1] + '/child.txt', 'w').write('from a child')"
        subprocess.run([sys.executable, "-c", code, str(d)], check=True)
        shutil.copytree(src, d / "assets")
    assert tree(site) == {
        "child.txt": "from a child",
        "assets": "<dir>",
        os.path.join("assets", "css"): "<dir>",
        os.path.join("assets", "css", "a.css"): "a{}",
    }
    assert listing(tmp_path) == ["site", "src"]
