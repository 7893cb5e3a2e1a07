"""The asyncio runtime (also uvloop, and anyio's asyncio backend): thread jobs on the
library's own worker threads, or in the loop's default executor when one was set with
`loop.set_default_executor()`. Imported only when an asyncio loop runs the caller."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import threading
from collections import deque
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

_T = TypeVar("_T")

NAME = "asyncio"

#: A loop that doesn't show whether it has a default executor (uvloop) keeps using it.
_HIDDEN = object()

#: At most this many worker threads at once (what asyncio's default executor allows); more
#: jobs wait for one of them, in order.
MAX_THREADS = min(32, (os.cpu_count() or 1) + 4)

#: Seconds an idle worker waits for its next job before its thread ends.
IDLE_SECONDS = 10.0


async def run(func: Callable[..., _T], *args: Any) -> _T:
    """Run the blocking `func(*args)` in a worker thread, in the caller's context.

    A thread can't be interrupted, and a job, once submitted, runs: a cancellation lets the
    job finish (nothing else, such as a cleanup, ever runs beside it), then is raised,
    chained to the job's error if it failed.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    if _submit is None or _chosen_executor(loop):
        return await _in_executor(loop, context, func, args)
    job = _Job(loop, context, func, args)
    _submit(job)
    try:
        # Awaited directly, not through shield(): one loop iteration less per hop. A
        # cancellation then cancels this future, and the job's end is awaited below.
        return await job.future  # type: ignore[no-any-return]
    except asyncio.CancelledError as cancel:
        if not job.ended:
            job.after = after = loop.create_future()
            while not after.done():
                try:
                    await asyncio.wait((after,))
                except asyncio.CancelledError:
                    pass
        if job.error is not None:
            raise cancel from job.error
        raise


def _chosen_executor(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the application chose the loop's default executor (set_default_executor), or
    the loop hides whether it did (uvloop): then the jobs go there. The one asyncio makes
    itself at the first `run_in_executor(None, ...)` (named "asyncio") is not a choice."""
    executor = getattr(loop, "_default_executor", _HIDDEN)
    return executor is not None and getattr(executor, "_thread_name_prefix", None) != "asyncio"


async def _in_executor(
    loop: asyncio.AbstractEventLoop, context: contextvars.Context, func: Callable[..., _T],
    args: tuple[Any, ...],
) -> _T:  # fmt: skip
    future = loop.run_in_executor(None, context.run, func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError as cancel:
        while not future.done():
            try:
                await asyncio.wait((future,))
            except asyncio.CancelledError:
                pass
        if not future.cancelled() and future.exception() is not None:
            raise cancel from future.exception()
        raise


# Under asyncio a submitted job always starts and completes: the shielded form is the same.
run_shielded = run


#: Pause the calling task; the loop runs others meanwhile.
sleep = asyncio.sleep


async def checkpoint(cause: BaseException | None = None) -> None:
    """Nothing to do: asyncio raised a pending cancellation at the await in `run`."""


def is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


# -- the worker threads ----------------------------------------------------------------
# Why not `run_in_executor(None, ...)`: its hop (concurrent.futures' work item, a future
# chained to an asyncio future by callbacks, the executor's own bookkeeping) costs about
# twice a plain hand-off to a waiting thread, and a small write is two hops. These workers
# are a thread cache like trio's: a job goes to an idle worker, or to a new thread when all
# are busy (so concurrent writes still overlap their fsyncs); a worker idle for
# IDLE_SECONDS ends. They are daemon threads, so asyncio.run() never waits for them at
# shutdown (every job is awaited by its caller anyway); at interpreter exit, a job still
# running is waited for (see `_drain`), so a write is never cut off half way.


class _Job:
    """One thread job and its outcome, delivered on the loop's thread (`_deliver`)."""

    __slots__ = ("after", "args", "context", "ended", "error", "func", "future", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, context: contextvars.Context,
        func: Callable[..., Any], args: tuple[Any, ...],
    ) -> None:  # fmt: skip
        self.loop, self.context, self.func, self.args = loop, context, func, args
        self.future: asyncio.Future[Any] = loop.create_future()
        self.ended = False
        self.error: BaseException | None = None
        #: Set by a cancelled caller that waits for the job's end.
        self.after: asyncio.Future[None] | None = None


def _deliver(job: _Job, result: Any, error: BaseException | None) -> None:
    job.ended, job.error = True, error
    future = job.future
    if not future.cancelled():
        if isinstance(error, StopIteration):
            # A future refuses StopIteration (PEP 479): the task would wait forever.
            wrapped = RuntimeError("a thread job raised StopIteration")
            wrapped.__cause__ = error
            error = wrapped
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    if job.after is not None:
        job.after.set_result(None)


class _Workers:
    """The idle workers (each waits on its own queue), every thread started, and the jobs
    waiting for a thread when MAX_THREADS are busy."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[SimpleQueue[_Job | None]] = []
        self.threads: set[threading.Thread] = set()
        self.backlog: deque[_Job] = deque()
        self.closing = False

    def submit(self, job: _Job) -> None:
        thread = None
        with self.lock:
            if self.idle:
                queue = self.idle.pop()
            elif len(self.threads) >= MAX_THREADS:
                self.backlog.append(job)  # the next worker to finish takes it
                return
            else:
                queue = SimpleQueue()
                thread = threading.Thread(
                    target=self._serve, args=(queue,), name="atomicfile-worker", daemon=True
                )
                self.threads.add(thread)
        queue.put(job)
        if thread is not None:
            try:
                thread.start()
            except BaseException:
                with self.lock:
                    self.threads.discard(thread)
                raise

    def _serve(self, queue: SimpleQueue[_Job | None]) -> None:
        job: _Job | None = None
        try:
            while True:
                if job is None:
                    try:
                        job = queue.get(timeout=IDLE_SECONDS)
                    except Empty:
                        with self.lock:
                            if queue in self.idle:
                                self.idle.remove(queue)
                                return
                        continue  # a job was handed to us as we timed out: it is coming
                    if job is None:
                        return
                result, error = None, None
                try:
                    result = job.context.run(job.func, *job.args)
                except BaseException as err:  # the awaiting task gets it, as from an executor
                    error = err
                with self.lock:
                    # Idle before the result is delivered: the task it wakes may submit
                    # its next job at once, and should find this thread waiting.
                    closing = self.closing
                    following = self.backlog.popleft() if self.backlog else None
                    if following is None and not closing:
                        self.idle.append(queue)
                try:
                    job.loop.call_soon_threadsafe(_deliver, job, result, error)
                except RuntimeError:
                    pass  # the loop was closed meanwhile: nobody is waiting any more
                # Nothing of the last job is kept alive while idle.
                job, result, error = following, None, None
                if job is None and closing:
                    return
        finally:
            with self.lock:
                self.threads.discard(threading.current_thread())

    def drain(self) -> None:
        """At interpreter exit: let the idle workers go, and wait for running jobs."""
        with self.lock:
            self.closing = True
            idle, self.idle = self.idle, []
            threads = list(self.threads)
        for queue in idle:
            queue.put(None)
        for thread in threads:
            if thread.ident is not None:  # else not started yet: nothing of it runs
                thread.join()


_workers = _Workers()
_submit: Callable[[_Job], None] | None = _workers.submit


def _after_fork() -> None:
    # The child has none of the parent's threads, and the lock may have been held by one
    # of them at the fork: start over.
    global _workers, _submit
    _workers = _Workers()
    _submit = _workers.submit


def _drain() -> None:
    global _submit
    _submit = None  # from now on, a job goes to the loop's executor
    _workers.drain()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
atexit.register(_drain)
