"""`make_parents=True`: create a target's missing directories, relative to descriptors.

Only a write whose directory is missing comes here (its first open gave ENOENT): the usual
write never does. The path is walked one component at a time from a descriptor of `/` or
of the working directory, each next directory opened relative to the one before it; a
missing component is made with mkdirat(2) in its parent's descriptor (mode 0o777 less the
umask, as `os.makedirs`), then opened there. So a component swapped for a symlink after we
passed it redirects nothing: later names are never resolved from the path string again.

Durability: a new directory's name lives in its parent. When the write is durable the
writer fsyncs, after the rename, the target's directory (the file's entry) and then the
parent of each new directory, bottom-up (deepest first), each once. Bottom-up means a name
is made durable only after what it leads to: after a crash, a new directory that is there
leads to the new file (or the whole new branch is gone, and the target with it: a write
not yet durable is allowed to be lost; a directory that survives without the file it was
made for is what this order avoids).
"""

from __future__ import annotations

import errno
import os

from . import _fs

_O_PATH = getattr(os, "O_PATH", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC


def _open_dir(name: str, at: int | None) -> int:
    """`name` in the directory `at`, open for reading (fsync needs it), or with O_PATH
    where we may search but not read it (such a directory can't be fsynced: reported by
    the caller's fsync as skipped)."""
    try:
        return os.open(name, _READ, dir_fd=at)
    except PermissionError:
        if not _O_PATH:
            raise
        return os.open(name, _O_PATH | _O_DIRECTORY | _O_CLOEXEC, dir_fd=at)


def make_dirs(directory: str) -> tuple[int, list[int]]:
    """Open `directory`, creating each missing component as `os.makedirs` would.

    Returns its descriptor and the descriptors of the directories a new directory was made
    in, deepest first (what `sync_parents` fsyncs after the publication). Something other
    than a directory in the way is `NotADirectoryError` (what `open()` of the target would
    say); a dangling symlink in the way is `FileExistsError`, as `os.makedirs` gives.
    """
    anchor = os.sep if directory.startswith(os.sep) else os.curdir
    names = [name for name in directory.split(os.sep) if name]
    parents: list[int] = []
    current = _open_dir(anchor, None)
    try:
        for index, name in enumerate(names):
            try:
                after = _open_dir(name, current)
            except FileNotFoundError:
                try:
                    os.mkdir(name, 0o777, dir_fd=current)
                    made = True
                except FileExistsError:
                    made = False  # another writer made it meanwhile: use theirs
                try:
                    after = _open_dir(name, current)
                except FileNotFoundError:
                    # mkdir said it exists, open says it leads nowhere: a dangling link.
                    where = os.path.join(anchor, *names[: index + 1])
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), where) from None
                if made:
                    parents.append(current)
                    current = after
                    continue
            except OSError as exc:
                if exc.filename is None:
                    exc.filename = os.path.join(anchor, *names[: index + 1])
                raise
            os.close(current)
            current = after
    except BaseException:
        _fs.close_quietly(current, *parents)
        raise
    parents.reverse()
    return current, parents


def sync_parents(parents: list[int]) -> bool:
    """fsync each directory a new directory was made in, deepest first. False when one of
    them can't be fsynced (the file system refuses, or it is open with O_PATH)."""
    synced = True
    for fd in parents:
        if not _fs.fsync_dir(fd):
            synced = False
    return synced
