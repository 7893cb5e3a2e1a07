"""`atomic_symlink`: point a symlink somewhere else in one step (the release switch).

`ln -sfn v42 current` removes `current`, then creates it: a reader in between finds nothing.
Here a temp symlink (`.<name>.<16 hex>.tmp`) is created beside the link and renamed over
it: rename(2) replaces the name in one step, so `current` always leads to the old target
or the new one. The link's directory is opened once and every step names files relative
to that descriptor.

A symlink can't be opened, so it can't carry the lock that keeps a live writer's temp
safe from the sweep: a temp link left by a crash is swept by age (`clean_stale_temps(...,
older_than=...)`), and a temp link that vanishes before its rename is made again.
"""

from __future__ import annotations

import errno
import os

from . import _fs, _local, _naming
from ._errors import SessionFileError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
#: Attempts at a free temp name (a clash is a 1 in 2**64 chance, or someone's guesses).
_ATTEMPTS = 100
_OPERATION = "atomic symlink"
_NOT_A_DIRECTORY = "Is a directory: atomic_symlink replaces a symlink or a file, never a directory"


def atomic_symlink(
    target: StrOrBytesPath,
    link: StrOrBytesPath,
    *,
    durable: bool = True,
    make_parents: bool = False,
) -> None:
    """Make `link` a symlink to `target` in one step: a reader sees the old link (or file)
    or the new link, never no `link` at all.

    `link` may be missing, a symlink (replaced itself, never followed) or a file.
    `target` is stored as given (relative to the link's directory when relative), and need
    not exist. `durable=True` (default) fsyncs the directory after the rename, so the new
    link survives a power loss (a symlink can't be fsynced itself). `make_parents=True`
    creates the link's missing directories (as `os.makedirs`; durable with the link).

    Raises `SessionFileError` (an `OSError`, also the builtin subclass such as
    `IsADirectoryError` when `link` is a real directory, `FileNotFoundError` when its
    directory is missing); nothing is left behind then. `ValueError` before any I/O if
    `link` names a directory (ends with a separator) or is empty.
    """
    link_path = os.fsdecode(os.fspath(link))
    dest = os.fsdecode(os.fspath(target))
    directory, base = _local.split(link_path)
    if not base or base in (".", ".."):
        raise ValueError(f"link must name a file, not a directory: {link_path!r}")
    if not dest:
        raise ValueError("target must not be empty")
    step = "open directory"
    parents: list[int] = []
    try:
        try:
            dfd = os.open(directory or ".", _DIR_FLAGS)
        except FileNotFoundError:
            if not make_parents:
                raise
            from ._parents import make_dirs

            dfd, parents = make_dirs(directory)
    except OSError as err:
        raise SessionFileError(link_path, _OPERATION, err, step) from err
    try:
        step = "rename"
        _switch(dfd, directory, base, dest)
        if durable:
            step = "fsync directory"
            _fs.fsync_dir(dfd)  # False where the file system has no directory fsync
            if parents:
                from ._parents import sync_parents

                sync_parents(parents)
    except OSError as err:
        raise SessionFileError(link_path, _OPERATION, err, step) from err
    finally:
        _fs.close_quietly(dfd, *parents)


def _switch(dfd: int, directory: str, base: str, dest: str) -> None:
    """Create a temp link to `dest` in the directory `dfd` and rename it over `base`."""
    name_max = _naming.NAME_MAX
    shortened = False
    for _ in range(_ATTEMPTS):
        temp = _naming.temp_name(base, _naming.token(), name_max)
        try:
            os.symlink(dest, temp, dir_fd=dfd)
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno == errno.ENAMETOOLONG and not shortened:
                # A file system whose names are shorter than Linux's usual 255 bytes.
                name_max, shortened = os.fpathconf(dfd, "PC_NAME_MAX"), True
                continue
            err.filename = _local.join(directory, temp)
            raise
        try:
            os.replace(temp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
            return
        except OSError as err:
            if err.errno == errno.ENOENT and _gone(dfd, temp):
                continue  # the sweep took our temp link (a tiny older_than): make another
            _unlink_quietly(dfd, temp)
            if err.errno == errno.EISDIR:
                raise OSError(
                    errno.EISDIR, _NOT_A_DIRECTORY, _local.join(directory, base)
                ) from None
            err.filename, err.filename2 = _local.join(directory, temp), _local.join(directory, base)
            raise
    raise OSError(errno.EEXIST, "No free temp name", _local.join(directory, base))


def _gone(dfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    except OSError:
        pass
    return False


def _unlink_quietly(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass  # the rename's error is the one to report


async def atomic_symlink_async(
    target: StrOrBytesPath,
    link: StrOrBytesPath,
    *,
    durable: bool = True,
    make_parents: bool = False,
) -> None:
    """`atomic_symlink` as a coroutine: the whole switch runs as one worker-thread job,
    which a cancellation lets finish before it is raised (asyncio or trio)."""
    from ._async import current_runtime

    await current_runtime().run(
        lambda: atomic_symlink(target, link, durable=durable, make_parents=make_parents)
    )
