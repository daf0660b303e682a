"""Coroutines around the native module's asyncio futures: `engine.ask_async(q)` returns
`run(start)`, a real coroutine (so `asyncio.run`, `asyncio.create_task` and `await` all
accept it) that starts the work on first await, inside the running event loop."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Callable, TypeVar

T = TypeVar("T")


async def run(start: Callable[[], Awaitable[T]]) -> T:
    """Starts the work (`start()` returns an asyncio future of the running loop) and awaits
    it; cancelling the awaiting task cancels the future, which cancels the work."""
    return await start()
