"""Find and remove what writers that died left behind: the stale-temp sweep.

A writer holds `flock(LOCK_EX)` on its temp file from right after creating it until after the
rename (or the unlink, on failure); an `AtomicDirectory` writer holds one on its staging
directory the same way. A temp whose lock can be taken has no live writer, so the sweep
removes it while holding that lock: no writer can take the file back in between.

Every step works relative to directory descriptors opened with O_NOFOLLOW|O_DIRECTORY (as
systemd-tmpfiles does): a name is checked and acted on through the same descriptor, so a
directory swapped for a symlink mid-sweep can never redirect a removal out of the tree.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _fs, _naming

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import timedelta
    from typing import Any

    from _typeshed import StrOrBytesPath

    from ._log import AnyLogger, EventLog

REMOVED = "Stale temp file removed"
STALE = "Stale temp file found (dry run)"
KEPT = "Temp file in use: kept"
SKIPPED = "Temp file skipped"
DIR_REMOVED = "Stale staging directory removed"
DIR_STALE = "Stale staging directory found (dry run)"
DIR_KEPT = "Staging directory in use: kept"
SCAN_FAILED = "Could not scan directory"

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in must not block the open
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_NOCTTY
# fcntl(2), Linux: F_SETLEASE / F_SETSIG (Python names them only from 3.9/3.12 on some builds).
_F_SETLEASE = 1024
_F_SETSIG = 10
#: The one entry of an `AtomicDirectory` staging directory: the tree being written (and,
#: after the exchange, the old tree being removed).
STAGING_TREE = "tree"


def clean_stale_temps(
    directory: StrOrBytesPath,
    *,
    recursive: bool = False,
    target: str | None = None,
    dry_run: bool = False,
    logger: AnyLogger | None = None,
    older_than: float | timedelta | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Remove the temp files (and `AtomicDirectory` staging directories) that writers killed
    mid-write left in `directory`; never those of a writer that is still alive, in this
    process or another.

    Only entries with the exact shape of this library's temp names are considered (`.<target
    basename>.<16 lowercase hex>.tmp`): regular files; directories with the exact layout of
    an `AtomicDirectory` or `atomic_path` staging directory (mode 0700, and in it nothing,
    or `tree` alone, or only regular files: the target's name and names that extend it, as
    sqlite's `-journal`; removed whole); and symlinks only by age (`older_than`, below);
    never a FIFO or a device, nor a user's directory that merely has the name's shape, and
    nothing else is ever touched. `recursive=True` also sweeps subdirectories (symlinks to
    directories are not followed, and a staging directory is not searched: it is removed
    whole or kept whole). `target="name.json"` considers only the temps of that file name (a
    basename, in every directory swept). `dry_run=True` removes nothing and returns what
    would be removed. Returns the paths removed (each one the sweep itself unlinked),
    sorted.

    How it knows: every writer holds an exclusive `flock` on its temp for the whole write,
    so the sweep opens each candidate (O_NOFOLLOW, non-blocking) relative to its directory's
    descriptor, tries the lock without waiting (held: a live writer, kept), checks that the
    name still refers to the file it locked, and unlinks it relative to the same directory
    descriptor while holding the lock. A writer caught between its create and its lock still
    has the file open for writing: where Linux lets the sweep ask that (a read lease is
    refused while anyone has the file open for writing; granted to the file's owner and to
    root), the temp is kept; elsewhere the sweep removes it, reports it, and the writer sees
    a link count of 0 and retries with a new name.

    Where it cannot know: a file system whose locks are not shared between the machines
    (NFS without lockd, some FUSE and SMB mounts) lets the sweep remove the temp of a writer
    on another machine; on overlayfs, a lock taken through the merged mount is not seen
    through the upper directory; a writer of another library (or an older atomicfile) that
    takes no lock has its temp treated as stale when its name has our shape. Sweep only
    directories whose writers use this library, on local file systems. A temp the caller
    may not open for reading is skipped (it cannot be checked). On Windows there is no
    flock: an open file cannot be deleted there, so a failed delete means a live writer; a
    dry run there cannot check and lists every candidate.

    Raises `FileNotFoundError`, `NotADirectoryError` or `PermissionError` (plain `OSError`s)
    if `directory` itself cannot be listed; unreadable subdirectories are logged and skipped.
    `ValueError` if `target` is not a plain file name or `older_than` is negative.

    `older_than` (seconds or a timedelta): nothing modified more recently than that is
    removed; and temp-shaped symlinks older than that are (`atomic_symlink`'s temp links,
    left by a crash: a symlink can't be locked, so its age is all there is to go by; a
    sweep without `older_than` never touches a symlink).

    An `s3://bucket/prefix` URL (or a UPath of one) sweeps the incomplete multipart uploads
    under it instead, aborting those started more than `older_than` (seconds or a
    timedelta; required there) ago; `storage_options` configure s3fs. The store that holds
    `directory` (`_store.resolve`) says how it is swept: see `sweep` here, and `_s3`.
    """
    from ._store import resolve

    store, where = resolve(directory, storage_options=storage_options)
    return store.sweep(
        where, recursive=recursive, target=target, dry_run=dry_run, logger=logger,
        older_than=older_than,
    )  # fmt: skip


def sweep(
    directory: StrOrBytesPath,
    *,
    recursive: bool,
    target: str | None,
    dry_run: bool,
    logger: AnyLogger | None,
    older_than: float | timedelta | None,
) -> list[str]:
    """The local store's sweep of `directory` (see `clean_stale_temps`)."""
    max_age = None if older_than is None else _seconds(older_than)
    from ._log import EventLog

    if target is not None:
        seps = {os.sep, os.altsep} - {None}
        if not target or target in (".", "..") or any(s in target for s in seps if s):
            raise ValueError(
                f"target must be a file name without a directory, not {target!r}; "
                "pass its directory as `directory`"
            )
    log = EventLog(logger)
    root = os.fsdecode(os.fspath(directory))
    if _fs.WINDOWS:
        if max_age is not None:
            raise ValueError("older_than is not supported for a local directory on Windows")
        removed = _clean_by_path(root, recursive, target, dry_run, log)
    else:
        removed = _clean_by_fd(root, recursive, target, dry_run, log, max_age)
    removed.sort()
    return removed


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove the directory `name` in the directory open as `dir_fd`, and everything in it;
    never follows a symlink (a link in the tree is removed, not what it points to) and never
    enters or removes a mount point: another file system, or a bind mount of the same one.

    Every name is resolved relative to the descriptor of the directory that holds it, opened
    with O_NOFOLLOW|O_DIRECTORY, so a directory swapped for a symlink while the tree is
    removed cannot redirect a removal outside it. A directory of the tree that is ours but
    lacks the owner's rwx (what `copytree` of read-only sources makes) is given them first.

    Raises `OSError`: `NotADirectoryError` if `name` is not a directory (a symlink to one
    included); `errno.EXDEV` if `name` is a mount point (nothing is touched), or if the tree
    holds mount points: everything else is removed, the mount points (directories or files)
    and the directories that lead to them stay, with what they show untouched; `errno.EBUSY`
    if `name` was replaced by another directory while its content was removed; whatever
    `unlinkat`/`rmdir` raise (`PermissionError`, ...).
    """
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        opened = os.fstat(fd)
        if opened.st_dev != os.fstat(dir_fd).st_dev or _fs.is_mount_root(fd):
            raise OSError(errno.EXDEV, "a mount point: not removed", name)
        _remove_contents(fd, opened.st_dev)
        if not _same_file(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), opened):
            raise OSError(errno.EBUSY, "replaced while it was removed", name)
        os.rmdir(name, dir_fd=dir_fd)
    finally:
        os.close(fd)


# -- the walk, relative to directory descriptors (POSIX) -------------------------------------


def _clean_by_fd(
    root: str,
    recursive: bool,
    target: str | None,
    dry_run: bool,
    log: EventLog,
    max_age: float | None = None,
) -> list[str]:
    # The top directory is the caller's own path: symlinks in it are followed, as `find -H`.
    top = os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    removed: list[str] = []
    try:
        subdirs = _sweep_directory(
            top, root, target, dry_run, log, removed, first=True, max_age=max_age
        )
    except BaseException:
        os.close(top)
        raise
    # Depth first; each frame holds its directory's descriptor, the path (for reports and
    # logs only: it is never opened), and the subdirectories still to visit.
    frames: list[tuple[int, str, list[str]]] = [(top, root, subdirs if recursive else [])]
    try:
        while frames:
            fd, path, pending = frames[-1]
            if not pending:
                frames.pop()
                os.close(fd)
                continue
            name = pending.pop()
            sub_path = os.path.join(path, name)
            try:
                # O_NOFOLLOW|O_DIRECTORY: a subdirectory swapped for a symlink fails here
                # (ENOTDIR/ELOOP) instead of taking the sweep out of the tree.
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                _scan_failed(log, sub_path, exc)
                continue
            try:
                found = _sweep_directory(
                    sub, sub_path, target, dry_run, log, removed, max_age=max_age
                )
            except BaseException:
                os.close(sub)
                raise
            frames.append((sub, sub_path, found))
    finally:
        for fd, _, _ in frames:
            os.close(fd)
    return removed


def _sweep_directory(
    fd: int,
    path: str,
    target: str | None,
    dry_run: bool,
    log: EventLog,
    removed: list[str],
    first: bool = False,
    max_age: float | None = None,
) -> list[str]:
    """Sweep the candidates in the directory open as `fd`; return its other subdirectories
    (names, in reverse order so that popping visits them sorted)."""
    from ._log import DEBUG

    try:
        with os.scandir(fd) as entries:
            names = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
    except OSError as exc:
        if first:
            raise
        _scan_failed(log, path, exc)
        return []
    prefixes: set[str] = set()
    if target is not None:
        # The prefix is shortened for a long basename; a file system with names shorter
        # than 255 bytes shortens it further (the writer asks pathconf, as we do here).
        prefixes = {_naming.temp_prefix(target), _naming.temp_prefix(target, _name_max(fd))}
    subdirs: list[str] = []
    for name, is_dir in names:
        if not (_naming.is_temp_name(name) and (target is None or name[:-20] in prefixes)):
            if is_dir:
                subdirs.append(name)
            continue
        outcome, kind = _sweep_entry(fd, name, dry_run, max_age)
        entry_path = os.path.join(path, name)
        if outcome is None:
            removed.append(entry_path)
            if log.debug:
                if kind == "directory":
                    msg = DIR_STALE if dry_run else DIR_REMOVED
                else:
                    msg = STALE if dry_run else REMOVED
                log.emit(DEBUG, msg, {"temp_path": entry_path, "operation": "clean"})
        elif log.debug:
            kept = DIR_KEPT if kind == "directory" else KEPT
            msg = kept if outcome == "in use" else SKIPPED
            log.emit(DEBUG, msg, {
                "temp_path": entry_path,
                "reason": outcome,
                "operation": "clean",
            })  # fmt: skip
    subdirs.reverse()
    return subdirs


def _scan_failed(log: EventLog, directory: str, exc: OSError) -> None:
    from ._log import WARNING, error_code

    if log.enabled(WARNING):
        log.emit(WARNING, SCAN_FAILED, {
            "directory": directory,
            "error_code": error_code(exc),
            "operation": "clean",
        })  # fmt: skip


def _name_max(fd: int) -> int:
    try:
        return int(os.fpathconf(fd, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return _naming.NAME_MAX


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _why(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _sweep_entry(
    dir_fd: int, name: str, dry_run: bool, max_age: float | None = None
) -> tuple[str | None, str]:
    """Remove the temp-shaped entry `name` of `dir_fd` if it is stale: (None, kind) if
    removed (or removable, in a dry run), else (why it was kept, kind). `max_age`
    (`older_than`, in seconds): nothing modified more recently is removed, and temp
    symlinks older than that are (they can't be locked: age is all there is to go by)."""
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "gone", "file"
    if max_age is not None:
        if _age(before) < max_age:
            return "younger than older_than", "directory" if stat.S_ISDIR(
                before.st_mode
            ) else "file"
        if stat.S_ISLNK(before.st_mode):
            return _sweep_link(dir_fd, name, before, dry_run), "file"
    if stat.S_ISREG(before.st_mode):
        return _sweep_file(dir_fd, name, before, dry_run), "file"
    if stat.S_ISDIR(before.st_mode):
        return _sweep_staging_dir(dir_fd, name, before, dry_run), "directory"
    return "not a regular file or directory", "file"  # a symlink, a FIFO: never ours


def _seconds(older_than: float | timedelta) -> float:
    seconds = (
        older_than.total_seconds() if hasattr(older_than, "total_seconds") else float(older_than)
    )
    if not seconds >= 0:
        raise ValueError(f"older_than must be >= 0, not {older_than!r}")
    return seconds


def _age(st: os.stat_result) -> float:
    """Seconds since the entry was last modified (a symlink: since it was created)."""
    import time

    return time.time() - st.st_mtime


def _sweep_link(dir_fd: int, name: str, before: os.stat_result, dry_run: bool) -> str | None:
    """Remove a temp-shaped symlink already found old enough: `atomic_symlink`'s temp link,
    left by a crash between its create and its rename (a live one is renamed at once; one
    removed under it is made again). No lock to take: the name must still be that link."""
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "gone"
    if not _same_file(now, before):
        return "replaced"
    if dry_run:
        return None
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        return f"cannot remove: {_why(exc)}"
    return None


def _sweep_file(dir_fd: int, name: str, before: os.stat_result, dry_run: bool) -> str | None:
    import fcntl

    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        return f"cannot open: {_why(exc)}"
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
            return f"cannot lock: {_why(exc)}"
        if _open_for_writing(fd):
            # Not locked, but open for writing somewhere: a writer between its create and
            # its lock (or one that could not lock). It is alive; leave it be.
            return "open for writing"
        # The lock is ours; now make sure the name still is this file: a writer that
        # committed in between has renamed it away, and we must not remove the new name.
        try:
            now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return "gone"
        if not _same_file(now, opened) or os.fstat(fd).st_nlink == 0:
            return "replaced"
        if dry_run:
            return None
        try:
            # While the lock is held: a writer that created this name but has not locked
            # it yet blocks in flock until we close, then sees st_nlink == 0 and retries.
            os.unlink(name, dir_fd=dir_fd)
        except OSError as exc:
            return f"cannot remove: {_why(exc)}"
        return None
    finally:
        os.close(fd)


def _open_for_writing(fd: int) -> bool:
    """True if the kernel says some open file description other than `fd` (read-only) has
    this file open for writing; False if not, or if it cannot be asked.

    Linux grants a read lease (F_SETLEASE, F_RDLCK) only while no one has the file open for
    writing, and only to the file's owner or a holder of CAP_LEASE (fcntl(2)). It is dropped
    at once; while held, an open for writing elsewhere would block on it for microseconds
    and signal us: the break signal is set to SIGURG, ignored by default, and the probe is
    skipped when the program handles SIGURG itself.
    """
    import fcntl
    import signal

    sigurg = getattr(signal, "SIGURG", None)
    if sigurg is None or signal.getsignal(sigurg) not in (signal.SIG_DFL, signal.SIG_IGN):
        return False
    try:
        fcntl.fcntl(fd, _F_SETSIG, sigurg)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except BlockingIOError:
        return True  # EAGAIN: open for writing somewhere
    except OSError:
        return False  # EACCES (not the owner), EINVAL (leases off, file system): unknown
    fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
    return False


def _sweep_staging_dir(dir_fd: int, name: str, before: os.stat_result, dry_run: bool) -> str | None:
    import fcntl

    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        return f"cannot open: {_why(exc)}"
    try:
        opened = os.fstat(fd)
        if not _same_file(opened, before):
            return "replaced"
        if opened.st_dev != os.fstat(dir_fd).st_dev or _fs.is_mount_root(fd):
            return "a mount point"  # another file system, or a bind mount of this one
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "in use"  # a live AtomicDirectory writer holds the lock
        except OSError as exc:
            return f"cannot lock: {_why(exc)}"
        try:
            now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return "gone"
        if not _same_file(now, opened):
            return "replaced"
        if not _staging_layout(fd, opened, name):
            return "not a staging directory"
        try:
            # A dry run walks the tree as the removal would, removing nothing: it lists
            # only what a real run removes (not a tree that holds a mount point).
            _remove_contents(fd, opened.st_dev, dry_run)
            if dry_run:
                return None
            if not _same_file(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), opened):
                return "replaced"
            os.rmdir(name, dir_fd=dir_fd)
        except OSError as exc:
            return f"cannot remove: {_why(exc)}"
        return None
    finally:
        os.close(fd)


def _staging_layout(fd: int, opened: os.stat_result, name: str) -> bool:
    """True only for what `AtomicDirectory` and `atomic_path` make (the temp-shaped name
    `.<base>.<hex>.tmp` is checked by the caller): mode exactly 0700, and in it either
    nothing (the writer died before using it), `tree` alone (`AtomicDirectory`), or only
    regular files, one of them the target's own name `<base>` and any others named
    `<base>` followed by more (what the tool wrote beside it: sqlite's `-journal`, `-wal`).
    A user's own directory that merely has the name's shape is never removed."""
    if stat.S_IMODE(opened.st_mode) != 0o700:
        return False
    try:
        names = _names(fd)
    except OSError:
        return False
    if names in ([], [STAGING_TREE]):
        return True
    prefix = name[:-20]  # ".<base>." (a long base shortened, as the writer shortened it)
    bases = [n for n in names if _naming.temp_prefix(n) == prefix]
    if len(bases) != 1 or not all(n.startswith(bases[0]) for n in names):
        return False
    try:
        return all(
            stat.S_ISREG(os.stat(n, dir_fd=fd, follow_symlinks=False).st_mode) for n in names
        )
    except OSError:
        return False


def _remove_contents(top: int, dev: int, dry_run: bool = False) -> None:
    """Empty the directory open as `top` (on device `dev`), depth first, relative to
    descriptors. A mount point in it is never entered nor removed; everything else is, then
    OSError(EXDEV) names the first mount point kept. EXDEV at once if `top` itself is the
    root of a mount (a staging directory never is one). `dry_run`: the same walk, changing
    nothing, and the same EXDEV if the tree holds a mount point."""
    if _fs.is_mount_root(top):
        raise OSError(errno.EXDEV, "a mount point: not removed")
    if not dry_run:
        _open_up(top)
    kept: list[str] = []  # mount points left in place, relative to `top`
    # Frames: (descriptor, names still to remove, its path relative to `top`, len(kept) when
    # it was entered: more when it is done means a mount point below, so it stays).
    frames: list[tuple[int, list[str], str, int]] = [(top, _names(top), "", 0)]
    try:
        while frames:
            fd, names, path, kept_before = frames[-1]
            if not names:
                frames.pop()
                if frames:  # a subdirectory, now empty unless it leads to a mount point
                    os.close(fd)
                    if len(kept) == kept_before and not dry_run:
                        os.rmdir(os.path.basename(path), dir_fd=frames[-1][0])
                continue
            name = names.pop()
            sub_path = os.path.join(path, name)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                if dry_run:
                    if _file_is_mount(fd, name, dev):
                        kept.append(sub_path)
                    continue
                try:
                    os.unlink(name, dir_fd=fd)  # a symlink is removed, never followed
                except OSError as exc:
                    # A file with a file bind-mounted on it: "EBUSY ... it is a mount
                    # point" (unlink(2)). Kept, as a directory mount point is.
                    if exc.errno != errno.EBUSY:
                        raise
                    kept.append(sub_path)
                continue
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                # Another file system has another st_dev; a bind mount of this one doesn't,
                # but is the root of its own mount.
                mounted = os.fstat(sub).st_dev != dev or st.st_dev != dev or _fs.is_mount_root(sub)
                if not mounted:
                    sub_names = _names_to_remove(sub, dry_run)
            except BaseException:
                os.close(sub)
                raise
            if mounted:
                os.close(sub)
                kept.append(sub_path)
                continue
            frames.append((sub, sub_names, sub_path, len(kept)))
    finally:
        for fd, _, _, _ in frames[1:]:
            os.close(fd)
    if kept:
        raise OSError(errno.EXDEV, "a mount point: not crossed", kept[0])


def _names_to_remove(fd: int, dry_run: bool) -> list[str]:
    """The entries of a directory of the tree, opened up first (`_open_up`). A dry run
    changes nothing: a directory it can't list without opening it up counts as empty."""
    if not dry_run:
        _open_up(fd)
        return _names(fd)
    try:
        return _names(fd)
    except PermissionError:
        return []


def _file_is_mount(dir_fd: int, name: str, dev: int) -> bool:
    """Whether the non-directory `name` is a mount point (a file bind-mounted on it),
    which the removal finds by unlink's EBUSY: by its device, else its mount id through an
    O_PATH descriptor (Linux: opens nothing, follows no link)."""
    o_path = getattr(os, "O_PATH", 0)
    if not o_path:
        return False
    try:
        fd = os.open(name, o_path | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_dev != dev or bool(_fs.is_mount_root(fd))
    finally:
        os.close(fd)


def _open_up(fd: int) -> None:
    """Give the owner rwx on the directory open as `fd` if it lacks them and is ours: else
    its entries can't be listed or removed. (Root needs none: CAP_DAC_OVERRIDE,
    capabilities(7).)"""
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IRWXU != stat.S_IRWXU and st.st_uid == os.geteuid() != 0:
        os.fchmod(fd, mode | stat.S_IRWXU)


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as entries:
        return [e.name for e in entries]


# -- Windows: no dir_fd; an open file cannot be deleted -------------------------------------


def _clean_by_path(
    root: str, recursive: bool, target: str | None, dry_run: bool, log: EventLog
) -> list[str]:
    from ._log import DEBUG

    removed: list[str] = []
    for path in _candidates(root, recursive, target, log):
        outcome = _sweep_windows(path, dry_run)
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
    return removed


def _candidates(root: str, recursive: bool, target: str | None, log: EventLog) -> Iterator[str]:
    """Paths under `root` whose names have our temp shape (and `target`'s prefix, if any)."""
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
            _scan_failed(log, directory, exc)
            continue
        first = False
        prefixes: set[str] = set()
        if target is not None:
            # The prefix is shortened for a long basename; a file system with names shorter
            # than 255 bytes shortens it further (the writer asks pathconf, as we do here).
            prefixes = {
                _naming.temp_prefix(target),
                _naming.temp_prefix(target, _path_name_max(directory)),
            }
        for name, is_dir in sorted(names):
            path = os.path.join(directory, name)
            if is_dir:
                pending.append(path)
            elif _naming.is_temp_name(name) and (target is None or name[:-20] in prefixes):
                yield path


def _path_name_max(directory: str) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return _naming.NAME_MAX


def _sweep_windows(path: str, dry_run: bool) -> str | None:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return "not a regular file"
    except OSError:
        return "gone"
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
