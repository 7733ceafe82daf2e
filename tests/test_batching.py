"""The predictor's micro-batcher: no wait when idle, concurrent requests merged while a pass runs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from serving.batching import MicroBatcher


def test_an_item_on_an_idle_batcher_goes_at_once_and_items_arriving_during_a_pass_share_the_next():
    release = threading.Event()
    batches: list[list[int]] = []

    def run(items):
        batches.append(list(items))
        if items == [0]:
            release.wait(10)  # the first pass runs until the others have queued
        return [x * 10 for x in items]

    async def main():
        batcher = MicroBatcher(run, ThreadPoolExecutor(1), max_batch=8, wait_s=60.0)
        first = asyncio.ensure_future(batcher.submit("k", 0))
        await asyncio.sleep(0.2)  # idle: dispatched without waiting the 60 s
        assert batches == [[0]]
        batcher.wait_s = 0.05
        rest = [asyncio.ensure_future(batcher.submit("k", x)) for x in (1, 2, 3)]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.wait_for(asyncio.gather(first, *rest), timeout=10)

    assert asyncio.run(main()) == [0, 10, 20, 30]
    assert batches == [[0], [1, 2, 3]]
