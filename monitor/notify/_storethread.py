"""The thread the dispatcher runs its store calls on (one call per delivery)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

STORE_CLOSE_WAIT = 10.0
"""Longest wait in ``close`` for a store call still running (a cancelled attempt's mark)."""

_StoreCall = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class StoreThread:
    """Runs the store's blocking calls, one at a time, on a thread of its own.

    One call per delivery goes through here: a plain queue and ``call_soon_threadsafe`` cost
    about half the CPU of ``asyncio.to_thread`` (executor bookkeeping, context copy, chained
    futures). One thread loses no concurrency: both stores serialise their calls on a lock.
    The thread starts on first use and ends at ``close``."""

    def __init__(self) -> None:
        self._calls: SimpleQueue[_StoreCall | None] = SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="notify-store", daemon=True)
            self._thread.start()
        self._calls.put((loop, future, functools.partial(function, *args, **kwargs)))
        return await future

    async def close(self) -> None:
        """End the thread once the calls already queued have run."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._calls.put(None)
            join = functools.partial(thread.join, timeout=STORE_CLOSE_WAIT)
            await asyncio.get_running_loop().run_in_executor(None, join)

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, function = call
            try:
                result = function()
            except BaseException as exc:  # handed to the awaiting task, like to_thread
                _settle(loop, future, future.set_exception, exc)
            else:
                _settle(loop, future, future.set_result, result)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    setter: Callable[[Any], None],
    value: object,
) -> None:
    def settle() -> None:
        if not future.done():  # the awaiting task may have been cancelled meanwhile
            setter(value)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits for the answer any more
        pass
