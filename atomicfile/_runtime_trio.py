"""The trio runtime (also trio's guest mode and anyio's trio backend): thread jobs through
`trio.to_thread.run_sync`. Imported only when trio runs the caller; never imports asyncio."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

_T = TypeVar("_T")

NAME = "trio"


async def run(func: Callable[..., _T], *args: Any) -> _T:
    """Run the blocking `func(*args)` in a worker thread (trio copies the caller's context).

    A cancellation already pending raises before the job starts. Once it started, the job is
    never abandoned (`abandon_on_cancel=False`): it completes, then a cancellation that came
    meanwhile is raised, chained to the job's error if it failed.
    """
    try:
        result = await trio.to_thread.run_sync(func, *args)
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
    with trio.CancelScope(shield=True):
        result = await trio.to_thread.run_sync(func, *args)
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
