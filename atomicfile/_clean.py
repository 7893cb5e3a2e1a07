"""Find and remove the temp files of writers that died: the stale-temp sweep.

A writer holds `flock(LOCK_EX)` on its temp file from right after creating it until after the
rename (or the unlink, on failure). A temp whose lock can be taken has no live writer, so the
sweep removes it while holding that lock: no writer can take the file back in between.
"""

from __future__ import annotations

import os
import stat

from . import _fs, _naming

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from _typeshed import StrOrBytesPath

    from ._log import AnyLogger, EventLog

REMOVED = "Stale temp file removed"
STALE = "Stale temp file found (dry run)"
KEPT = "Temp file in use: kept"
SKIPPED = "Temp file skipped"
SCAN_FAILED = "Could not scan directory"

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in must not block the open
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)


def clean_stale_temps(
    directory: StrOrBytesPath,
    *,
    recursive: bool = False,
    target: str | None = None,
    dry_run: bool = False,
    logger: AnyLogger | None = None,
) -> list[str]:
    """Remove the temp files that writers killed mid-write left in `directory`; never the
    temp of a writer that is still alive, in this process or another.

    Only files with the exact shape of this library's temp names are considered
    (`.<target basename>.<16 lowercase hex>.tmp`, regular files, not symlinks); anything
    else is never touched. `recursive=True` also sweeps subdirectories (symlinks to
    directories are not followed). `target="name.json"` considers only the temps of that
    file name (a basename, in every directory swept). `dry_run=True` removes nothing and
    returns what would be removed. Returns the paths removed, sorted.

    How it knows: every writer holds an exclusive `flock` on its temp for the whole write,
    so the sweep opens each candidate (O_NOFOLLOW, non-blocking), tries the lock without
    waiting (held: a live writer, skipped), checks the name still refers to the file it
    locked, and unlinks it while holding the lock. A writer whose temp is removed between
    its create and its lock sees a link count of 0 and retries with a new name.

    Where it cannot know: a file system whose locks are not shared between the machines
    (NFS without lockd, some FUSE and SMB mounts) lets the sweep remove the temp of a writer
    on another machine; a writer of another library (or an older atomicfile) that takes no
    lock has its temp treated as stale when its name has our shape. Sweep only directories
    whose writers use this library, on local file systems. A temp the caller may not open
    for reading is skipped (it cannot be checked). On Windows there is no flock: an open
    file cannot be deleted there, so a failed delete means a live writer; a dry run there
    cannot check and lists every candidate.

    Raises `FileNotFoundError`, `NotADirectoryError` or `PermissionError` (plain `OSError`s)
    if `directory` itself cannot be listed; unreadable subdirectories are logged and skipped.
    `ValueError` if `target` is not a plain file name.
    """
    from ._log import DEBUG, EventLog

    if target is not None:
        seps = {os.sep, os.altsep} - {None}
        if not target or target in (".", "..") or any(s in target for s in seps if s):
            raise ValueError(
                f"target must be a file name without a directory, not {target!r}; "
                "pass its directory as `directory`"
            )
    log = EventLog(logger)
    removed: list[str] = []
    root = os.fsdecode(os.fspath(directory))
    for path in _candidates(root, recursive, target, log):
        outcome = _sweep(path, dry_run)
        if outcome is None:
            removed.append(path)
            if log.debug:
                log.emit(DEBUG, STALE if dry_run else REMOVED, {
                    "temp_path": path,
                    "operation": "clean",
                })  # fmt: skip
        elif log.debug:
            log.emit(DEBUG, KEPT if outcome == "in use" else SKIPPED, {
                "temp_path": path,
                "reason": outcome,
                "operation": "clean",
            })  # fmt: skip
    removed.sort()
    return removed


def _candidates(root: str, recursive: bool, target: str | None, log: EventLog) -> Iterator[str]:
    """Paths under `root` whose names have our temp shape (and `target`'s prefix, if any)."""
    from ._log import WARNING, error_code

    pending = [root]
    first = True
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                names = [(e.name, recursive and e.is_dir(follow_symlinks=False)) for e in entries]
        except OSError as exc:
            if first:
                raise
            if log.enabled(WARNING):
                log.emit(WARNING, SCAN_FAILED, {
                    "directory": directory,
                    "error_code": error_code(exc),
                    "operation": "clean",
                })  # fmt: skip
            continue
        first = False
        prefixes: set[str] = set()
        if target is not None:
            # The prefix is shortened for a long basename; a file system with names shorter
            # than 255 bytes shortens it further (the writer asks pathconf, as we do here).
            prefixes = {
                _naming.temp_prefix(target),
                _naming.temp_prefix(target, _name_max(directory)),
            }
        for name, is_dir in sorted(names):
            path = os.path.join(directory, name)
            if is_dir:
                pending.append(path)
            elif _naming.is_temp_name(name) and (target is None or name[:-20] in prefixes):
                yield path


def _name_max(directory: str) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return _naming.NAME_MAX


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _sweep(path: str, dry_run: bool) -> str | None:
    """Remove `path` if it is a stale temp: None if removed (or removable, in a dry run),
    else why it was kept."""
    try:
        before = os.lstat(path)
    except OSError:
        return "gone"
    if not stat.S_ISREG(before.st_mode):
        return "not a regular file"  # a directory, a symlink, a FIFO: never ours
    if _fs.WINDOWS:
        return _sweep_windows(path, dry_run)
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_NOCTTY)
    except OSError as exc:
        return f"cannot open: {os.strerror(exc.errno) if exc.errno else exc}"
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or not _same_file(opened, before):
            return "replaced"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "in use"  # a live writer holds the lock
        except OSError as exc:
            # ENOLCK (NFS without lockd) and the like: we cannot know, so we keep it.
            return f"cannot lock: {os.strerror(exc.errno) if exc.errno else exc}"
        # The lock is ours; now make sure the name still is this file: a writer that
        # committed in between has renamed it away, and we must not remove the new name.
        try:
            now = os.lstat(path)
        except OSError:
            return "gone"
        if not _same_file(now, opened) or os.fstat(fd).st_nlink == 0:
            return "replaced"
        if dry_run:
            return None
        try:
            # While the lock is held: a writer that created this name but has not locked
            # it yet blocks in flock until we close, then sees st_nlink == 0 and retries.
            os.unlink(path)
        except OSError as exc:
            return f"cannot remove: {os.strerror(exc.errno) if exc.errno else exc}"
        return None
    finally:
        os.close(fd)


def _sweep_windows(path: str, dry_run: bool) -> str | None:
    # Windows has no flock, but a file another handle holds open (without FILE_SHARE_DELETE,
    # which os.open never grants) cannot be deleted: a refused delete means a live writer.
    if dry_run:
        return None
    try:
        os.unlink(path)
    except PermissionError:
        return "in use"
    except OSError as exc:
        return f"cannot remove: {exc.strerror}"
    return None
