"""The asyncio runtime (also uvloop, and anyio's asyncio backend): thread jobs in the
loop's default executor. Imported only when an asyncio loop runs the caller."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

NAME = "asyncio"


async def run(func: Callable[..., _T], *args: Any) -> _T:
    """Run the blocking `func(*args)` in the loop's default executor, in the caller's context.

    A thread can't be interrupted, and an executor job, once submitted, runs: a cancellation
    lets the job finish (nothing else, such as a cleanup, ever runs beside it), then is
    raised, chained to the job's error if it failed.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, contextvars.copy_context().run, func, *args)
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
