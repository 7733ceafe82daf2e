"""A micro-batcher: requests that share a key and arrive while a forward pass runs go
together into the next one."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable, Generic, Hashable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """Run items in batches of one key, one batch at a time, oldest group first.

    `run(items) -> results` (same order) runs on `executor`. While a batch runs, new items
    wait in their key's group; when it ends, the group that started waiting first goes next
    (up to `max_batch` of its items; the rest stay first in line). When nothing runs, an item
    goes at once with whatever arrived in the same turn of the event loop: waiting would
    only add latency, and a timer could send a group off before its batch mates arrive.
    """

    def __init__(self, run: Callable[[Sequence[Item]], Sequence[Result]], executor: Executor, *, max_batch: int = 8):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}")
        self._run = run
        self._executor = executor
        self.max_batch = max_batch
        self._waiting: dict[Hashable, list[tuple[Item, asyncio.Future]]] = {}  # oldest group first
        self._busy = False  # a batch is running, or the next one is about to be taken

    async def submit(self, key: Hashable, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.setdefault(key, []).append((item, future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._next)
        return await future

    def _next(self) -> None:
        """Send the oldest waiting group (up to `max_batch` items) to `run`; idle if none waits."""
        if not self._waiting:
            self._busy = False
            return
        key, group = next(iter(self._waiting.items()))
        taken = group[:self.max_batch]
        del group[:self.max_batch]
        if not group:
            del self._waiting[key]
        task = asyncio.get_running_loop().run_in_executor(self._executor, self._run, [item for item, _ in taken])

        def deliver(done: asyncio.Future) -> None:
            error = done.exception()
            for k, (_, future) in enumerate(taken):
                if future.done():  # the caller went away (cancelled)
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(done.result()[k])
            self._next()

        task.add_done_callback(deliver)
