"""Gathering concurrent requests into one batched step (`dtp serve --max-batch N --batch-window-ms W`).

Clients' requests wait in one queue. A dispatcher task takes up to `max_batch` of them, waiting at
most `window_s` after the oldest arrived for more to join (no wait once every open session has a
request queued: `sessions()` says how many are open), and runs the batch in a worker thread,
one batch at a time, so the event loop keeps reading and answering sockets while the model works.
Requests that arrive during a batch join the next one. Two requests with the same key (one
episode) never share a batch: the later waits for the next. A failing batch is rerun one request
at a time, so one client's bad observation fails only that client's reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

log = logging.getLogger(__name__)

__all__ = ["Batcher"]


@dataclass
class _Pending:
    key: Hashable
    item: Any
    future: asyncio.Future


class Batcher:
    """`await batcher.submit(key, item)` -> run_batch([..., item, ...])'s entry for `item`.

    run_batch(items) -> one result per item, in order; it runs in `executor` (a worker thread).
    """

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch: int, window_s: float,
                 executor: Executor | None = None, sessions: Callable[[], int] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"the batch window must be >= 0 s, got {window_s}")
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.window_s = float(window_s)
        self.executor = executor
        self.sessions = sessions  # how many sessions (keys) could send now; None: unknown
        self.sizes: Counter[int] = Counter()  # batch size -> batches run (what the window achieved)
        self._pending: deque[_Pending] = deque()
        self._running: list[_Pending] = []  # the batch in the worker now
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue `item` (of episode `key`) and wait for its result; run_batch's exception for it is raised here."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._dispatch(), name="dtp-serve-batcher")
        future = loop.create_future()
        self._pending.append(_Pending(key, item, future))
        self._arrived.set()
        return await future

    @property
    def queued(self) -> int:
        return sum(not p.future.done() for p in self._pending)

    async def close(self) -> None:
        """Stop the dispatcher; requests still queued or running fail with CancelledError."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for p in [*self._running, *self._pending]:
            if not p.future.done():
                p.future.cancel()
        self._running, self._pending = [], deque()

    def _ready(self) -> int:
        """How many queued requests could go into the next batch (distinct live keys)."""
        return len({p.key for p in self._pending if not p.future.done()})

    def _take(self) -> list[_Pending]:
        """Up to max_batch live requests, oldest first, one per key; the others stay queued in order."""
        batch: list[_Pending] = []
        keys: set = set()
        rest: deque[_Pending] = deque()
        for p in self._pending:
            if p.future.done():  # its client went away (cancelled): nothing to run
                continue
            if len(batch) < self.max_batch and p.key not in keys:
                batch.append(p)
                keys.add(p.key)
            else:
                rest.append(p)
        self._pending = rest
        return batch

    def _target(self) -> int:
        """The batch worth waiting for: max_batch, or fewer when fewer sessions are open."""
        return self.max_batch if self.sessions is None else max(1, min(self.max_batch, self.sessions()))

    async def _gather(self) -> None:
        """Wait for a first request, then until the target batch is ready or window_s has passed."""
        loop = asyncio.get_running_loop()
        while not self._ready():
            self._arrived.clear()
            await self._arrived.wait()
        deadline = loop.time() + self.window_s
        while self._ready() < self._target():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._gather()
            batch = self._take()
            if not batch:
                continue
            self.sizes[len(batch)] += 1
            self._running = batch
            outcomes = await loop.run_in_executor(self.executor, self._run, [p.item for p in batch])
            self._running = []
            for p, (ok, value) in zip(batch, outcomes):
                if p.future.done():
                    continue
                if ok:
                    p.future.set_result(value)
                else:
                    p.future.set_exception(value)

    def _run(self, items: list[Any]) -> list[tuple[bool, Any]]:
        """(ok, result or exception) per item; a failed batch of several is rerun one item at a time."""
        try:
            results = list(self.run_batch(items))
            if len(results) != len(items):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
            return [(True, r) for r in results]
        except Exception as e:  # noqa: BLE001 - handed to the waiting clients
            if len(items) == 1:
                return [(False, e)]
            log.info("a batch of %d failed (%s); rerunning it one request at a time", len(items), e)
        return [self._run([item])[0] for item in items]
