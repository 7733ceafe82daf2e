"""The predictor's micro-batcher: no wait when idle, everything that arrives during a pass in the
next one, oldest group first, one pass at a time."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.batching import MicroBatcher


class Recorder:
    """A `run` function that records its batches and blocks in the first one until released."""

    def __init__(self):
        self.batches: list[list] = []
        self.release = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, items):
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.release.wait(10)  # the first pass runs until the others have arrived
        with self._lock:
            self.running -= 1
        if "bad" in items:
            raise ValueError("bad item")
        return [f"{x}!" for x in items]


def run_with_first_pass_blocked(recorder: Recorder, max_batch: int, first, later):
    """Submit `first`, then every (key, item) of `later` while the first pass runs."""

    async def main():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(4), max_batch=max_batch)
        futures = [asyncio.ensure_future(batcher.submit(*first))]
        await asyncio.sleep(0.1)
        assert recorder.batches == [[first[1]]]  # an idle batcher sends an item at once
        for key, item in later:
            futures.append(asyncio.ensure_future(batcher.submit(key, item)))
            await asyncio.sleep(0.01)  # each in its own turn of the event loop, as requests arrive
        recorder.release.set()
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=10)

    return asyncio.run(main())


def test_items_that_arrive_during_a_pass_all_go_into_the_next_one():
    recorder = Recorder()
    results = run_with_first_pass_blocked(recorder, 8, ("k", 0), [("k", x) for x in range(1, 7)])
    assert [len(b) for b in recorder.batches] == [1, 6]
    assert recorder.batches[1] == [1, 2, 3, 4, 5, 6]
    assert results == [f"{x}!" for x in range(7)]


def test_a_long_queue_goes_in_batches_of_max_batch_oldest_group_first_one_at_a_time():
    recorder = Recorder()
    later = [("a", 1), ("b", "b1"), ("a", 2), ("a", 3), ("b", "b2"), ("a", 4), ("a", 5)]
    run_with_first_pass_blocked(recorder, 3, ("a", 0), later)
    # group a started waiting before group b: its first 3 go, then the rest of a, then b
    assert recorder.batches == [[0], [1, 2, 3], [4, 5], ["b1", "b2"]]
    assert recorder.most_running == 1  # even with 4 executor threads


def test_a_failed_pass_fails_its_items_only():
    recorder = Recorder()
    results = run_with_first_pass_blocked(recorder, 8, ("k", "bad"), [("k", 1), ("k", 2)])
    assert isinstance(results[0], ValueError)
    assert results[1:] == ["1!", "2!"]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda items: items, ThreadPoolExecutor(1), max_batch=0)
