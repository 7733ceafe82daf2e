"""A micro-batcher: concurrent small requests that share a key run as one forward pass."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable, Generic, Hashable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """Collect items per key for up to `wait_s` (or `max_batch` items), then `run` them together.

    `run(items) -> results` (same order) runs on `executor`; a single-thread executor keeps
    forward passes one at a time, so requests that arrive during a pass form the next batch.
    When no pass is running, an item goes at once (with whatever arrived in the same turn of
    the event loop): waiting would only add latency, since nothing is queued to join it.
    """

    def __init__(self, run: Callable[[Sequence[Item]], Sequence[Result]], executor: Executor,
                 *, max_batch: int = 8, wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}")
        self._run = run
        self._executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._pending: dict[Hashable, list[tuple[Item, asyncio.Future]]] = {}
        self._running = 0  # batches handed to the executor and not finished

    async def submit(self, key: Hashable, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        group = self._pending.setdefault(key, [])
        group.append((item, future))
        if len(group) >= self.max_batch:
            self._flush(key)
        elif len(group) == 1:
            if self._running:
                loop.call_later(self.wait_s, self._flush, key)
            else:
                loop.call_soon(self._flush, key)
        return await future

    def _flush(self, key: Hashable) -> None:
        group = self._pending.pop(key, None)
        if not group:
            return
        items = [item for item, _ in group]
        futures = [future for _, future in group]
        task = asyncio.get_running_loop().run_in_executor(self._executor, self._run, items)
        self._running += 1

        def deliver(done: asyncio.Future) -> None:
            self._running -= 1
            error = done.exception()
            for k, future in enumerate(futures):
                if future.done():  # the caller went away (cancelled)
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(done.result()[k])

        task.add_done_callback(deliver)
