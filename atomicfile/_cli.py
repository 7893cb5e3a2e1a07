"""The `atomicfile` command: `write` (a safe `sponge`), `update` (read-modify-write through a
command, with no update lost) and `clean` (the stale-temp sweep).

Loaded only when the command runs, so it may import argparse and logging freely.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, Literal, NoReturn

from . import __version__
from ._clean import clean_stale_temps
from ._core import AtomicFile
from ._errors import SessionFileError
from ._store import resolve

PROG = "atomicfile"
# Read standard input in 1 MiB pieces: memory stays constant whatever the input's size.
_CHUNK = 1 << 20
# Signals that abandon a write while standard input is read (exit status 128 + number).
_INTERRUPTS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE")
    if hasattr(signal, name)
)

_EPILOG = """\
examples:
  sort data.txt | atomicfile write data.txt       sort a file in place, safely
  jq '.debug = true' cfg.json | atomicfile write cfg.json
  make-secret | atomicfile write --mode 0600 --no-clobber secret.key
  atomicfile update app.json -- jq '.runs += 1'   an update no concurrent one can lose
  atomicfile clean --recursive --dry-run /srv/data   list stale temp files
  atomicfile clean /srv/data                       remove them

exit status: 0 on success; 1 if the write or the sweep failed (the target is then untouched);
2 for a usage error; 128+N if signal N (Ctrl-C: 130) interrupted the input; for update, the
COMMAND's own status if it failed.
"""

_WRITE_EPILOG = """\
TARGET is replaced only once standard input has reached its end and the new content is on
disk (fsync, rename, directory fsync). Until then, and if anything fails or the input is
interrupted (Ctrl-C, SIGTERM, SIGHUP, SIGPIPE, a read error), TARGET keeps its old content and
no temp file is left. atomicfile cannot tell a producer that died from one that finished:
both just end the input: with --no-empty, an empty input (a producer that failed before
writing anything) leaves TARGET as it is, and the exit status is 1.

TARGET may be an object, s3://bucket/key (needs the s3 extra): it is replaced when the
multipart upload completes, and an interrupted write aborts its upload. --mode, --no-fsync
and --no-follow mean nothing for an object: with one, they are a usage error (exit 2).

examples:
  sort -u words.txt | atomicfile write words.txt
  curl -fsS https://example.org/cfg | atomicfile write -v --mode 0644 /etc/app/cfg
  printf 'token\\n' | atomicfile write --no-clobber --mode 0600 token.txt
  make-report | atomicfile write --no-empty --parents out/2026/report.txt
"""

_UPDATE_EPILOG = """\
COMMAND runs with FILE's current content on its standard input; what it prints on its
standard output replaces FILE atomically and durably, as with write. A FILE that does not
exist yet gives COMMAND an empty standard input (and is created). If COMMAND fails (a
non-zero exit status, or killed by a signal), FILE is left unchanged and update exits with
COMMAND's status (128+N for signal N). COMMAND's standard error is passed through.

No update is lost: for a local FILE, update holds a lock on it (flock, no lock file) from
before the read until the new content is published, so concurrent `atomicfile update`s of
one FILE (and atomic_update() in Python, and lock=True writers) run one after the other,
each reading what the previous one wrote. --timeout SECONDS bounds the wait for the lock
(then exit 1, COMMAND not run). Writers that take no lock are not held back.

FILE may be an object, s3://bucket/key (needs the s3 extra): there are no locks, so the
final write is conditional on the ETag that was read; if another writer changed the object
meanwhile, COMMAND runs again on the new content, until --timeout (then exit 1).

examples:
  atomicfile update app.json -- jq '.runs += 1'
  atomicfile update --timeout 10 hosts -- sort -u
  atomicfile update counter -- sh -c 'echo $(( $(cat) + 1 ))'
"""

_CLEAN_EPILOG = """\
A writer killed mid-write (SIGKILL, power loss) leaves its temp file `.<name>.<16 hex>.tmp`.
Every atomicfile writer holds a lock on its temp while it writes: `clean` removes only temps
whose lock is free, so it never removes the temp of a running writer. It cannot know on file
systems whose locks are not shared between machines (NFS without lockd), nor for writers of
other libraries that take no lock. Prints the paths removed (or, with --dry-run, that would
be), one per line; with --print0, each ends with a NUL byte instead (file names may hold
newlines). Also removes the staging directories of killed AtomicDirectory and atomic_path
writers, whole.

DIR may be s3://bucket/dir: then the incomplete multipart uploads of the keys under dir/
(never dir2/... nor dir.csv) that started more than --older-than AGE ago are aborted (an
upload has no lock, only its age). End it with * (quoted) for a raw key prefix:
's3://bucket/dir*' also takes dir2/... and dir.csv.

examples:
  atomicfile clean .
  atomicfile clean -r --dry-run /srv/data
  atomicfile clean --target cfg.json /etc/app
  atomicfile clean -r -n -0 /srv/data | xargs -0 ls -ld
  atomicfile clean --older-than 24h s3://bucket/team/alice
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _permissions(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise argparse.ArgumentTypeError(
            f"invalid mode {text!r}: expected octal permission bits such as 0600 or 644"
        )
    if mode & 0o1000:
        raise argparse.ArgumentTypeError(
            f"invalid mode {text!r}: the sticky bit (1000) means nothing on a file; "
            f"did you mean {mode & ~0o1000:o}?"
        )
    return mode


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Atomic, durable file writes from the shell.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    write = commands.add_parser(
        "write",
        help="copy standard input into TARGET atomically (a safe sponge)",
        description="Copy standard input into TARGET atomically: TARGET holds its old content\n"
        "or all of the new, never a part, even if the process or the machine dies.",
        epilog=_WRITE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    write.add_argument("target", metavar="TARGET", help="the file to replace, or s3://bucket/key")
    write.add_argument(
        "-m",
        "--mode",
        type=_permissions,
        metavar="MODE",
        help="permission bits of TARGET, in octal (default: keep an existing file's, "
        "else 0644 less the umask)",
    )
    kind = write.add_mutually_exclusive_group()
    kind.add_argument(
        "-n",
        "--no-clobber",
        action="store_true",
        help="fail (exit 1) if TARGET exists, checked atomically at the rename",
    )
    kind.add_argument(
        "-a", "--append", action="store_true", help="add the input after TARGET's content"
    )
    write.add_argument(
        "--no-fsync",
        action="store_true",
        help="skip fsync: atomic for readers and crashes, but a power loss may leave "
        "the old content or an empty file",
    )
    write.add_argument(
        "--no-follow",
        action="store_true",
        help="if TARGET is a symlink, replace the link itself (default: the file it points to)",
    )
    write.add_argument(
        "-p",
        "--parents",
        action="store_true",
        help="create TARGET's missing directories (as mkdir -p; durable with the write)",
    )
    write.add_argument(
        "--no-empty",
        action="store_true",
        help="refuse (exit 1) to write empty input: TARGET is left as it is and nothing "
        "is created (guards `false | atomicfile write f`)",
    )
    write.add_argument(
        "-v", "--verbose", action="store_true", help="show the write's log events on stderr"
    )

    update = commands.add_parser(
        "update",
        help="replace FILE with what COMMAND makes of its content, losing no concurrent update",
        description="Run COMMAND with FILE's content on standard input and replace FILE with "
        "its output,\natomically, under a lock: a read-modify-write that no concurrent one "
        "can undo.",
        epilog=_UPDATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    update.add_argument("target", metavar="FILE", help="the file to update, or s3://bucket/key")
    update.add_argument(
        "argv", metavar="-- COMMAND ...", nargs=argparse.REMAINDER,
        help="the command (after --) that turns the old content into the new",
    )  # fmt: skip
    update.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", default=None,
        help="give up (exit 1) if FILE's lock is not had, or an object keeps changing, "
        "within SECONDS (default: wait)",
    )  # fmt: skip
    update.add_argument(
        "-v", "--verbose", action="store_true", help="show the write's log events on stderr"
    )

    clean = commands.add_parser(
        "clean",
        help="remove the temp files of killed writers from DIR",
        description="Remove stale atomicfile temp files (left by killed writers) from DIR.",
        epilog=_CLEAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    clean.add_argument(
        "directory", metavar="DIR", help="the directory to sweep, or s3://bucket/dir (see below)"
    )
    clean.add_argument("-r", "--recursive", action="store_true", help="sweep subdirectories too")
    clean.add_argument(
        "-n", "--dry-run", action="store_true", help="list what would be removed; remove nothing"
    )
    clean.add_argument(
        "-t", "--target", metavar="NAME", help="only the temp files of the file named NAME"
    )
    clean.add_argument(
        "-0",
        "--print0",
        action="store_true",
        help="end each path printed with a NUL byte instead of a newline (for xargs -0)",
    )
    clean.add_argument(
        "-v", "--verbose", action="store_true", help="also report temps kept, on stderr"
    )
    clean.add_argument(
        "--older-than", metavar="AGE", type=_remote_age, default=None,
        help="required for s3://bucket/dir: abort the incomplete uploads under dir/ started "
        "more than AGE ago (90s, 30m, 24h, 7d); in a local DIR, keep what changed more "
        "recently than AGE",
    )  # fmt: skip
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _remote_age(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (e.g. 90s, 30m, 24h, 7d)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not an age: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `atomicfile` command with `argv` (default: `sys.argv[1:]`); return its exit
    status. Errors are reported as one line on stderr."""
    try:
        args = _parser().parse_args(argv)
        if args.verbose:
            _log_to_stderr()
        if args.command == "write":
            return _write(args)
        if args.command == "update":
            return _update(args)
        return _clean(args)
    except KeyboardInterrupt:
        # Outside a write's input (a write handles its own): nothing was changed.
        _say("interrupted")
        return 130


# -- write ----------------------------------------------------------------------------------


class _InputError(Exception):
    """Reading standard input failed (not an OSError, so the write reports it as itself)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause)
        self.cause = cause


class _Interrupted(BaseException):
    """A signal arrived while the input was read: abandon the write."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _write(args: argparse.Namespace) -> int:
    target: str = args.target
    mode: Literal["wb", "xb", "ab"] = "xb" if args.no_clobber else "ab" if args.append else "wb"
    try:
        # A closed fd 0 would be taken by the write's first descriptor (its directory's)
        # and "read" from there: say it is closed, before anything is created.
        os.fstat(0)
    except OSError as exc:
        _say(f"cannot read standard input: {_reason(exc)}; {target!r} left unchanged")
        return 1
    try:
        # No I/O yet: an option that doesn't fit the target (--mode, --no-fsync or
        # --no-follow with an object) or a store that isn't supported is a usage error.
        af = AtomicFile(
            target,
            mode,
            permissions=args.mode,
            durable=not args.no_fsync,
            follow_symlinks=not args.no_follow,
            make_parents=args.parents,
        )
    except (ValueError, TypeError) as exc:
        _say(f"error: {exc}")
        return 2
    except ImportError as exc:  # an object store, without the s3 extra
        _say(f"cannot write {target!r}: {exc}")
        return 1
    first = None
    try:
        with _InterruptingSignals() as signals:
            if args.no_empty:
                # The first chunk before anything is created: empty input leaves no temp,
                # no directory (--parents), no log event.
                first = _read_input()
            if first != b"":
                with af as file:
                    if first:
                        file.write(first)
                    _copy_input(file)
                    # From here the commit (or the cleanup) runs to its end: a signal waits.
                    signals.hold()
    except _Interrupted as exc:
        name = signal.Signals(exc.signum).name
        _say(f"interrupted by {name}; {target!r} left unchanged")
        return 128 + exc.signum
    except _InputError as exc:
        _say(f"cannot read standard input: {_reason(exc.cause)}; {target!r} left unchanged")
        return 1
    except SessionFileError as exc:
        _say(f"cannot write {target!r}: {_reason(exc)}")
        return 1
    if first == b"":
        _say(f"empty input: {target!r} left unchanged (--no-empty)")
        return 1
    return 0


def _read_input() -> bytes:
    """One chunk of standard input (fd 0, unbuffered); b"" at its end."""
    try:
        return os.read(0, _CHUNK)
    except OSError as exc:
        raise _InputError(exc) from exc


def _copy_input(file: BinaryIO) -> None:
    """Copy standard input to `file`, one chunk at a time."""
    while True:
        chunk = _read_input()
        if not chunk:
            return
        file.write(chunk)


class _InterruptingSignals:
    """While the `with` block runs, SIGINT, SIGTERM, SIGHUP and SIGPIPE raise `_Interrupted`
    (once: the handler holds them first, so a second Ctrl-C cannot break the cleanup).
    `hold()` defers them for the rest of the block (the kernel keeps them pending).
    Signals still pending at the end are dropped: they came after the write was decided.
    Only in the main thread, where Python runs signal handlers; elsewhere it does nothing.
    """

    def __init__(self) -> None:
        self._active = (
            hasattr(signal, "pthread_sigmask")
            and threading.current_thread() is threading.main_thread()
        )
        self._caught = [
            s
            for s in _INTERRUPTS
            # A signal ignored on entry (nohup, `cmd &` in a script) stays ignored; Python
            # itself ignores SIGPIPE, so that one is always ours to catch.
            if s == getattr(signal, "SIGPIPE", None) or signal.getsignal(s) is not signal.SIG_IGN
        ]
        self._mask: set[int | signal.Signals] = set()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _InterruptingSignals:
        if self._active:
            self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            for s in self._caught:
                self._previous[s] = signal.signal(s, self._interrupt)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._active:
            return
        for s in self._caught:
            signal.signal(s, signal.SIG_IGN)  # discards a pending one (POSIX sigaction)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        for s, handler in self._previous.items():
            if handler is not None:  # None: set outside Python; leave it ignored
                signal.signal(s, handler)

    def hold(self) -> None:
        if self._active:
            signal.pthread_sigmask(signal.SIG_BLOCK, self._caught)

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Lets the signals through while the block runs a child (one raises
        `_Interrupted` there), then holds them again. SIGPIPE is ignored meanwhile, as
        Python has it: a child that doesn't read its input is not an interruption."""
        if not self._active:
            yield
            return
        pipe = getattr(signal, "SIGPIPE", None)
        previous: Any = None
        if pipe is not None and pipe in self._caught:
            previous = signal.signal(pipe, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self._caught)
        try:
            yield
        finally:
            self.hold()
            if pipe is not None and previous is not None:
                signal.signal(pipe, previous)

    def _interrupt(self, signum: int, frame: object) -> None:
        self.hold()
        raise _Interrupted(signum)


# -- update ---------------------------------------------------------------------------------


class _CommandFailed(Exception):
    """COMMAND exited with a non-zero status: nothing is published."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _update(args: argparse.Namespace) -> int:
    target: str = args.target
    argv: list[str] = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        _say(f"error: no COMMAND: {PROG} update FILE -- COMMAND ... (see '{PROG} update -h')")
        return 2
    import subprocess

    from ._update import atomic_update

    def run(old: bytes | None) -> bytes:
        # A signal interrupts the wait for the lock, the read and COMMAND (which gets it
        # too, and is killed); none stays blocked for COMMAND (exec keeps the mask). Once
        # COMMAND has succeeded, signals wait until the commit (or a retry's COMMAND).
        with signals.released():
            done = subprocess.run(argv, input=old or b"", stdout=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise _CommandFailed(done.returncode)
        return done.stdout

    try:
        with _InterruptingSignals() as signals:
            atomic_update(target, run, binary=True, timeout=args.timeout)
    except _CommandFailed as exc:
        status = exc.status if exc.status > 0 else 128 - exc.status  # -N: killed by signal N
        _say(f"{argv[0]} exited with status {status}; {target!r} left unchanged")
        return status
    except _Interrupted as exc:
        name = signal.Signals(exc.signum).name
        _say(f"interrupted by {name}; {target!r} left unchanged")
        return 128 + exc.signum
    except (ValueError, TypeError) as exc:  # no I/O yet: options or a store that don't fit
        _say(f"error: {exc}")
        return 2
    except ImportError as exc:  # an object store, without its extra
        _say(f"cannot update {target!r}: {exc}")
        return 1
    except OSError as exc:  # COMMAND not found, the lock's timeout, the write failing
        what = f"run {argv[0]!r}" if exc.filename == argv[0] else f"update {target!r}"
        _say(f"cannot {what}: {_reason(exc)}")
        return 127 if isinstance(exc, FileNotFoundError) and exc.filename == argv[0] else 1
    return 0


# -- clean ----------------------------------------------------------------------------------


def _clean(args: argparse.Namespace) -> int:
    directory: str = args.directory
    try:
        # The store that holds DIR says how it is swept (no I/O yet).
        store, _ = resolve(directory)
        usage = _age_usage(args) if store.sweeps_by_age else None
        if usage is not None:
            _say(f"error: {usage}")
            return 2
        removed = clean_stale_temps(
            directory, recursive=args.recursive, target=args.target, dry_run=args.dry_run,
            older_than=args.older_than,
        )  # fmt: skip
    except (ValueError, TypeError) as exc:
        _say(f"error: {exc}")
        return 2
    except ImportError as exc:  # an s3:// prefix, without the s3 extra
        _say(f"cannot clean {directory!r}: {exc}")
        return 1
    except OSError as exc:
        _say(f"cannot clean {directory!r}: {_reason(exc)}")
        return 1
    end = b"\0" if args.print0 else b"\n"
    # No sys.stdout: the command was started with its standard output closed (`>&-`); the
    # caller asked for no list. The sweep is done; that is the result.
    stdout = sys.stdout
    if stdout is None:
        return 0
    try:
        out = stdout.buffer
        for path in removed:
            out.write(os.fsencode(path) + end)
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): the sweep is done; stop printing quietly.
        _silence_stdout()
        return 141
    except OSError as exc:
        _silence_stdout()
        if exc.errno == errno.EBADF:  # fd 1 closed after start-up: as with `>&-`
            return 0
        _say(f"cannot print the paths removed: {_reason(exc)}")
        return 1
    return 0


def _age_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with `clean`'s options for a store swept by age (an s3:// prefix)."""
    if args.recursive or args.target is not None:
        return ("--recursive and --target apply to a local directory; an s3:// prefix is "
                "swept with every key under it")  # fmt: skip
    if args.older_than is None:
        return ("an s3:// prefix needs --older-than AGE (e.g. 24h): an upload has no lock "
                "that tells a live writer from a dead one, only its age")  # fmt: skip
    return None


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's final flush of stdout fails no more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


# -- output ---------------------------------------------------------------------------------


def _reason(exc: OSError) -> str:
    if exc.errno is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{exc.strerror or os.strerror(exc.errno)} [{name}]"


def _say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


# Attributes every LogRecord has: whatever else a record carries came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class _FieldsFormatter(logging.Formatter):
    """`atomicfile: DEBUG Starting atomic write target_path=cfg.json temp_path=...`"""

    def format(self, record: logging.LogRecord) -> str:
        import shlex

        fields = []
        for key, value in vars(record).items():
            if key in _RECORD_ATTRS:
                continue
            text = f"{value:.3f}" if isinstance(value, float) else shlex.quote(str(value))
            fields.append(f"{key}={text}")
        return " ".join([f"{PROG}: {record.levelname} {record.getMessage()}", *fields])


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FieldsFormatter())
    logger = logging.getLogger(PROG)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
