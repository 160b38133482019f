"""dtp.serve.batcher: the gathering queue behind `dtp serve --max-batch` (no model, no sockets)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtp.serve.batcher import Batcher


class Recorder:
    """run_batch that records each batch, optionally sleeps (the model's time), and fails on 'bad' items."""

    def __init__(self, sleep_s: float = 0.0):
        self.batches: list[list] = []
        self.sleep_s = sleep_s
        self.threads: set[str] = set()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.sleep_s:
            time.sleep(self.sleep_s)  # blocking, as a model step is
        if any(item[1] == "bad" for item in items):
            raise ValueError("bad observation")
        return [("done", item) for item in items]


def run(coro):
    return asyncio.run(coro)


def test_requests_within_the_window_share_one_batch():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch=4, window_s=0.5)
        replies = await asyncio.gather(*(b.submit(k, (k, "ok")) for k in range(6)))
        await b.close()
        return replies, b.sizes

    replies, sizes = run(main())
    assert replies == [("done", (k, "ok")) for k in range(6)]  # each reply is its own request's
    assert [len(x) for x in rec.batches] == [4, 2] and sizes == {4: 1, 2: 1}


def test_a_full_batch_does_not_wait_for_the_window():
    async def main():
        b = Batcher(Recorder(), max_batch=3, window_s=30.0)
        t0 = time.perf_counter()
        await asyncio.gather(*(b.submit(k, (k, "ok")) for k in range(3)))
        await b.close()
        return time.perf_counter() - t0

    assert run(main()) < 5.0


def test_no_wait_once_every_open_session_has_a_request_queued():
    rec = Recorder()

    async def main():
        open_sessions = [2]
        b = Batcher(rec, max_batch=8, window_s=30.0, sessions=lambda: open_sessions[0])
        t0 = time.perf_counter()
        await asyncio.gather(b.submit("a", ("a", "ok")), b.submit("b", ("b", "ok")))
        open_sessions[0] = 0  # e.g. all clients left: a request still goes, alone
        await b.submit("c", ("c", "ok"))
        await b.close()
        return time.perf_counter() - t0

    assert run(main()) < 5.0
    assert [len(x) for x in rec.batches] == [2, 1]


def test_a_lone_request_waits_at_most_the_window():
    async def main():
        b = Batcher(Recorder(), max_batch=8, window_s=0.05)
        t0 = time.perf_counter()
        await b.submit(0, (0, "ok"))
        await b.close()
        return time.perf_counter() - t0

    assert 0.04 <= run(main()) < 5.0


def test_requests_arriving_during_a_batch_join_the_next_one():
    rec = Recorder(sleep_s=0.3)

    async def main():
        b = Batcher(rec, max_batch=8, window_s=0.0, executor=ThreadPoolExecutor(1, thread_name_prefix="worker"))
        first = asyncio.ensure_future(b.submit(0, (0, "ok")))
        await asyncio.sleep(0.1)  # the first batch (one request) is running now
        later = [asyncio.ensure_future(b.submit(k, (k, "ok"))) for k in range(1, 5)]
        await asyncio.gather(first, *later)
        await b.close()

    run(main())
    assert [[k for k, _ in batch] for batch in rec.batches] == [[0], [1, 2, 3, 4]]
    assert all(name.startswith("worker") for name in rec.threads)  # never on the event loop's thread


def test_one_episode_never_appears_twice_in_a_batch():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch=8, window_s=0.05)
        keys = ["a", "a", "b", "a", "b", "c"]
        replies = await asyncio.gather(*(b.submit(key, (i, key)) for i, key in enumerate(keys)))
        await b.close()
        return replies

    replies = run(main())
    assert [r[1][0] for r in replies] == list(range(6))
    for batch in rec.batches:
        keys = [key for _, key in batch]
        assert len(keys) == len(set(keys))
    # oldest first: the first "a" goes before the second
    order = [i for batch in rec.batches for i, _ in batch]
    assert [i for i in order if i in (0, 1, 3)] == [0, 1, 3]


def test_a_bad_request_fails_alone():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch=4, window_s=0.5)
        results = await asyncio.gather(*(b.submit(k, (k, "bad" if k == 2 else "ok")) for k in range(4)),
                                       return_exceptions=True)
        await b.close()
        return results

    results = run(main())
    assert isinstance(results[2], ValueError)
    assert [results[k] for k in (0, 1, 3)] == [("done", (k, "ok")) for k in (0, 1, 3)]
    assert len(rec.batches[0]) == 4 and [len(x) for x in rec.batches[1:]] == [1, 1, 1, 1]  # rerun one at a time


def test_a_cancelled_request_is_not_run():
    rec = Recorder(sleep_s=0.2)

    async def main():
        b = Batcher(rec, max_batch=4, window_s=0.0)
        first = asyncio.ensure_future(b.submit(0, (0, "ok")))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(b.submit(1, (1, "ok")))
        stays = asyncio.ensure_future(b.submit(2, (2, "ok")))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client disconnected while it waited
        await asyncio.gather(first, stays)
        await b.close()

    run(main())
    assert [[k for k, _ in batch] for batch in rec.batches] == [[0], [2]]


def test_the_event_loop_keeps_running_during_inference():
    """While a batch blocks its worker thread for 0.5 s, other coroutines still run every few ms."""
    rec = Recorder(sleep_s=0.5)

    async def main():
        b = Batcher(rec, max_batch=2, window_s=0.0)
        ticks = 0
        step = asyncio.ensure_future(b.submit(0, (0, "ok")))
        while not step.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await b.close()
        return ticks

    assert run(main()) >= 10


def test_close_cancels_what_is_queued_and_a_later_submit_restarts():
    rec = Recorder(sleep_s=0.2)

    async def main():
        b = Batcher(rec, max_batch=1, window_s=0.0)
        first = asyncio.ensure_future(b.submit(0, (0, "ok")))
        queued = asyncio.ensure_future(b.submit(1, (1, "ok")))
        await asyncio.sleep(0.05)
        await b.close()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert first.cancelled()
        return await b.submit(2, (2, "ok"))

    assert run(main()) == ("done", (2, "ok"))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Recorder(), max_batch=0, window_s=0.0)
    with pytest.raises(ValueError, match="window"):
        Batcher(Recorder(), max_batch=2, window_s=-1.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=20))
def test_every_request_gets_its_own_reply(max_batch, requests):
    """Property: any arrival pattern (episode, delay in ms) -> each reply is its request's, every request
    runs once, and batches hold at most max_batch requests and one per episode."""
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch=max_batch, window_s=0.002)

        async def client(i: int, key: int, delay_ms: int):
            await asyncio.sleep(delay_ms / 1000)
            return await b.submit(key, (i, key))

        replies = await asyncio.gather(*(client(i, k, d) for i, (k, d) in enumerate(requests)))
        await b.close()
        return replies

    replies = run(main())
    assert replies == [("done", (i, k)) for i, (k, _) in enumerate(requests)]
    assert sum(len(x) for x in rec.batches) == len(requests)
    for batch in rec.batches:
        assert len(batch) <= max_batch and len({k for _, k in batch}) == len(batch)
