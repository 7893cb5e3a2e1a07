"""The lock of `lock=True` and `atomic_update`: writers of one target, one after the other,
in any thread, task or process, with no lock file.

What is locked (flock(2), exclusive, advisory):

- When the target exists: the target's own inode, through an `O_RDONLY` descriptor (a
  write-only target: `O_WRONLY`; flock ignores the access mode). After the flock, the name
  must still lead to the inode locked: a writer that held it may have renamed a new file
  over the name meanwhile, and the lock on a replaced inode protects nothing, so the waiter
  drops it and locks the new one.
- While there is no target: the directory, through a fresh descriptor of the write's
  bound directory (`"."` relative to it: the name is never resolved twice). After that
  flock the name is looked up again: a target made meanwhile is locked instead, and the
  directory released. A holder of the directory lock whose write creates the target leaves
  the next writers to lock the new file.
- `follow_symlinks=False` and a symlink at the name: the link will be replaced by a new file,
  so the link is "no target yet" and the directory is locked. With `follow_symlinks=True`
  the file the link leads to is opened (and its identity checked through the link).

Orderings (why there is no deadlock and no lost update):

1. The directory is always taken before a target, never after: a writer that holds a
   target lock waits for nothing, and one that must fall back to the directory drops its
   target lock first. So a holder of the directory may wait for a target (the one that
   appeared while it waited), and that target's holder will finish.
2. Every writer reads the target only while it holds the lock on the inode it reads (or on
   the directory, when there is none), and publishes by renaming a new inode over the name.
   The next writer either waited on the old inode (it then sees the name moved on and
   locks the new one, whose content includes the previous update) or opened the name after
   the rename (it reads the new content). Either way it reads what the last locker wrote.
3. Two first writers: both find no target and queue on the directory. The second gets it
   after the first's rename, finds the target, and locks it: it reads the first's content
   and replaces it (no FileExistsError). First writers of different new files in one
   directory take turns too: they share the directory's lock.
4. The lock comes first, then the write looks at the target (`_local.LocalTemp.inspect`,
   relative to the same directory descriptor) and must find the very file it locked (or
   none, under the directory's lock); only a writer without the lock can make them differ,
   and the write then fails with EAGAIN rather than replace a file it doesn't hold.

Waiting: `timeout=None` blocks in flock (the kernel wakes the waiter at the release); a
finite timeout polls with LOCK_NB, sleeping FIRST_PAUSE, doubling up to MAX_PAUSE, as a
blocking flock can't be given a deadline; the async form polls on its loop (`_async`).

What it does not cover: writers without the lock (advisory, as every flock), including a
file created by one under a first locking writer; file systems without flock (NFS without
lockd answers ENOLCK: raised, never ignored). The lock is not re-entrant: a writer that
takes it again for the same target, in the same thread, waits for itself (use a timeout).

Security: anyone who may open the target for reading (or the directory, while there is no
target) may flock it too, and hold it. Taking this lock is opting into waiting for them;
`timeout` bounds the wait.

Release: `LOCK_UN` then close. A commit releases the old inode right after its rename:
the name then leads to the writer's temp, whose own flock (the stale-temp sweep's liveness
lock, `_local`) the writer holds until its directory fsync is done, so the next writer
moves on to the new inode and waits there until the write has fully ended. (Closing the
old, now unlinked, inode early also lets the file system free it in the journal commit the
directory fsync waits for anyway: see benchmarks/update.py.) On every failure path and at
a garbage-collected discard, the lock is released with the temp. The explicit unlock frees
it from a forked child's copy of the descriptor too (and the commit unlocks the temp
before closing it, for the same reason); the child also closes its copies at fork, so a
child that outlives its parent never keeps the lock. A holder killed by SIGKILL releases
it: the kernel drops a flock with the last descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

if os.name != "nt":
    import fcntl

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO at the name must not hang the open
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

#: The sync wait with a finite timeout polls: first pause, growth, longest pause (seconds).
#: A blocking flock can't be given a deadline; see benchmarks/update.py for the cost.
FIRST_PAUSE: Final = 0.0005
MAX_PAUSE: Final = 0.02

#: Locks held in this process: a forked child closes its copies (see `_after_fork`).
_held: set[TargetLock] = set()


def _after_fork() -> None:
    for lock in list(_held):
        lock.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class TargetLock:
    """The lock of one target, named by `name` relative to the directory descriptor `dfd`."""

    __slots__ = (
        "_dfd",
        "_follow",
        "_held_stat",
        "_ident",
        "_name",
        "fd",
        "link",
        "on_target",
        "path",
    )

    def __init__(self, dfd: int, name: str, path: str, follow: bool) -> None:
        self._dfd = dfd
        self._name = name
        self._follow = follow
        #: The target as given, for errors.
        self.path = path
        #: The locked descriptor (-1: none): the target's, or the directory's.
        self.fd = -1
        #: Whether `fd` is the target's (False: the directory's, there was no target).
        self.on_target = False
        #: Not following links, the name was a symlink (locked as "no target yet").
        self.link = False
        #: (st_dev, st_ino) of the target locked.
        self._ident: tuple[int, int] | None = None
        #: Its fstat when locked (its type can't change; its size is a hint for `read`).
        self._held_stat: os.stat_result | None = None

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def acquire(self, timeout: float | None) -> bool:
        """Take the lock: `None` waits as long as it takes (a blocking flock, woken by the
        kernel at once), `0` tries once, else polls until `timeout` seconds have passed.
        False when not had in time; nothing is then held."""
        if self.fd >= 0:
            return True
        if timeout is None:
            return self._attempt(block=True)
        if self._attempt(block=False) or timeout <= 0:
            return self.fd >= 0
        deadline = time.monotonic() + timeout
        pause = FIRST_PAUSE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            if self._attempt(block=False):
                return True
            pause = min(pause * 2, MAX_PAUSE)

    def _attempt(self, block: bool) -> bool:
        """One pass of the protocol in the module docstring. True: held; False (only when
        not blocking): someone else has it, and nothing is held."""
        dir_fd = -1
        fd = -1
        try:
            while True:
                fd = self._open_target()
                if fd < 0:
                    if dir_fd >= 0:  # still no target, and the directory is ours
                        self._hold(dir_fd, on_target=False)
                        return True
                    dir_fd = self._open_dir()
                    if not _flock(dir_fd, block):
                        return False
                    continue  # look again: a target made before we had the directory
                if not _flock(fd, block):
                    return False
                ident = self._still_named(fd)
                if ident is not None:
                    self._ident = ident
                    self._hold(fd, on_target=True)
                    fd = -1
                    return True
                os.close(fd)  # replaced while we waited: lock the file there now
                fd = -1
        finally:
            if fd >= 0:
                os.close(fd)
            if dir_fd >= 0 and dir_fd != self.fd:
                os.close(dir_fd)

    def _hold(self, fd: int, on_target: bool) -> None:
        self.fd, self.on_target = fd, on_target
        _held.add(self)

    def _open_target(self) -> int:
        """A descriptor of the target, or -1 when there is none (or, not following links,
        a symlink that the write will replace)."""
        self.link = False
        flags = _O_NONBLOCK | _O_CLOEXEC | (0 if self._follow else _O_NOFOLLOW)
        try:
            try:
                return os.open(self._name, os.O_RDONLY | flags, dir_fd=self._dfd)
            except PermissionError:
                # A write-only target (0o200): flock works on any descriptor. What the
                # kernel refuses here (fs.protected_symlinks too) it refuses again below.
                return os.open(self._name, os.O_WRONLY | flags, dir_fd=self._dfd)
        except FileNotFoundError:
            return -1
        except OSError as err:
            if err.errno == errno.ELOOP and not self._follow:
                self.link = True
                return -1
            if err.errno == errno.ENXIO:  # a FIFO with no reader: not a file we replace
                return -1
            raise OSError(err.errno, err.strerror, self.path) from None

    def _open_dir(self) -> int:
        try:
            return os.open(".", os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC, dir_fd=self._dfd)
        except OSError as err:
            # An unreadable directory (0o300): its lock can't be had, and going on unlocked
            # would break the promise silently. open() names the file, not its directory.
            raise OSError(err.errno, err.strerror, self.path) from None

    def _still_named(self, fd: int) -> tuple[int, int] | None:
        """The inode `fd` holds, if the name still leads to it (nobody renamed over it)."""
        try:
            now = os.stat(self._name, dir_fd=self._dfd, follow_symlinks=self._follow)
        except FileNotFoundError:
            return None
        self._held_stat = held = os.fstat(fd)
        ident = (held.st_dev, held.st_ino)
        return ident if (now.st_dev, now.st_ino) == ident else None

    def check(self, target: os.stat_result | None) -> OSError | None:
        """The error if the file the write found (`target`, None: none) is not the one
        locked. Only a writer without the lock can make them differ (replacing or creating
        the file between our lock and our look, or swapping a symlink): going on would
        replace a file that other locking writers may be using meanwhile."""
        found = None if target is None else (target.st_dev, target.st_ino)
        if found == (self._ident if self.on_target else None):
            return None
        return OSError(errno.EAGAIN, "The target changed while being locked", self.path)

    def read(self) -> bytes | None:
        """The locked target's content (None: there is no target). The descriptor is the
        inode the lock holds, so this is the content no other locking writer can change."""
        if not self.on_target:
            if self.link:
                # Reading would follow the link: what O_NOFOLLOW gives open() for 'r+'.
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), self.path)
            return None
        fd = self.fd
        st = self._held_stat
        assert st is not None  # set with the lock on a target
        if not stat.S_ISREG(st.st_mode):
            return None  # the write's own checks say what open() would (EISDIR, EINVAL)
        chunks = []
        offset = 0
        size = st.st_size + 1  # one more byte: a file that grew is read to its end
        while True:
            try:
                chunk = os.pread(fd, size, offset)
            except OSError as err:
                if err.errno != errno.EBADF:
                    raise
                # Locked through a write-only descriptor: the target can't be read, as
                # open(..., "r") could not read it.
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), self.path) from None
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            size = max(size, 1 << 16)
        return b"".join(chunks)

    def release(self) -> None:
        """Unlock and close. Safe to call again, and when nothing is held."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        _held.discard(self)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)  # a forked child's copy no longer holds it either
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    def forget(self) -> None:
        """In a forked child: close our copy, never unlock (the parent still holds it)."""
        fd, self.fd = self.fd, -1
        _held.discard(self)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _flock(fd: int, block: bool) -> bool:
    """flock(LOCK_EX): True when had, False when another holder has it (not blocking).
    A file system without locks raises (ENOLCK...): a lock that locks nothing would lose
    the very updates it is asked to keep."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN) and not block:
            return False
        raise
    return True
