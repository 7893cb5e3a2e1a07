"""The trio runtime (also trio's guest mode and anyio's trio backend): thread jobs on trio's
own thread cache, under its default thread limiter. Imported only when trio runs the
caller; never imports asyncio."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

_T = TypeVar("_T")

NAME = "trio"


async def run(func: Callable[..., _T], *args: Any) -> _T:
    """Run the blocking `func(*args)` in a worker thread, in the caller's context.

    A cancellation already pending raises before the job starts. Once it started, the job is
    never abandoned: it completes, then a cancellation that came meanwhile is raised,
    chained to the job's error if it failed.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        result = await _hop(func, args, False)
    except trio.Cancelled:
        raise
    except BaseException as err:
        await _cancel_from(err)
        raise
    await trio.lowlevel.checkpoint_if_cancelled()
    return result


async def run_shielded(func: Callable[..., _T], *args: Any) -> _T:
    """Run `func(*args)` in a worker thread even if a cancellation is pending; return its
    result or raise its error. The caller decides when to deliver the cancellation
    (`checkpoint`): after a commit or a cleanup, not instead of it."""
    return await _hop(func, args, True)


@trio.lowlevel.enable_ki_protection
async def _hop(func: Callable[..., _T], args: tuple[Any, ...], shield: bool) -> _T:
    """One job on trio's thread cache (`start_thread_soon`, what `to_thread.run_sync` is
    built on), waited for to its end whatever comes meanwhile. to_thread.run_sync's own
    layers (its limiter context manager's checkpoints, from_thread support, abandoning)
    cost about as much as the hop itself, and a write never needs them."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    limiter = trio.to_thread.current_default_thread_limiter()
    borrower = object()  # one token of the limiter per job, as to_thread.run_sync takes
    try:
        limiter.acquire_on_behalf_of_nowait(borrower)
    except trio.WouldBlock:
        # All threads busy: wait for one (a cancellation may end the wait unless shielded;
        # the job has not started then).
        with trio.CancelScope(shield=shield):
            await limiter.acquire_on_behalf_of(borrower)
    context = contextvars.copy_context()

    def job() -> _T:
        return context.run(func, *args)  # its outcome (value or error) goes to `deliver`

    def wake(result: outcome.Outcome[_T]) -> None:
        limiter.release_on_behalf_of(borrower)
        trio.lowlevel.reschedule(task, result)

    def deliver(result: outcome.Outcome[_T]) -> None:
        token.run_sync_soon(wake, result)  # the run can't end: this task waits for it

    def abort(_: Any) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.FAILED  # a thread can't be interrupted: wait for it

    trio.lowlevel.start_thread_soon(job, deliver)
    result: _T = await trio.lowlevel.wait_task_rescheduled(abort)  # the outcome, unwrapped
    return result


#: Pause the calling task; the loop runs others meanwhile.
sleep = trio.sleep


async def checkpoint(cause: BaseException | None = None) -> None:
    """Raise a pending cancellation now (chained to `cause`); otherwise return at once."""
    if cause is None:
        await trio.lowlevel.checkpoint_if_cancelled()
    else:
        await _cancel_from(cause)


def is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, trio.Cancelled)


async def _cancel_from(err: BaseException) -> None:
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except trio.Cancelled as cancel:
        raise cancel from err
