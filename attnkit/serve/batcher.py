"""Dynamic micro-batching: requests that arrive together are answered by one call of the model.

Each request waits in a queue with its inputs and options. One worker takes the oldest request; when
others are already waiting it gathers, for up to `max_wait_ms`, more with the same options until
`max_batch` inputs are reached (a request that finds the queue empty runs at once, so a lone
request pays no wait, and requests that arrive while the model runs form the next batch);
it runs them as one `run.records(...)` call on the model's own thread (the event loop keeps
accepting requests meanwhile; always the same thread, see `MicroBatcher`) and hands each request
exactly its own slice of the answers, in order. With `max_batch` 1 every request runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pending:
    """One request: its inputs and options, and the future its records are delivered to."""

    inputs: list[Any]
    options: dict[str, Any]
    future: asyncio.Future = field(repr=False)

    @property
    def key(self) -> tuple[tuple[str, Any], ...]:
        """Requests batch together only when they ask for the same options."""
        return tuple(sorted(self.options.items()))


class MicroBatcher:
    """Gathers concurrent requests into batches for `predict(inputs, **options) -> records`.

    Args:
        predict: one record per input, in order (e.g. `Run.records`); runs in a worker thread.
        max_batch: most inputs in one call (a single request larger than this still runs whole).
        max_wait_ms: how long the first request of a batch waits for others.
    """

    def __init__(
        self,
        predict: Callable[..., list[Any]],
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        executor: Executor | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_ms at least 0")
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue[Pending] | None = None
        self.worker: asyncio.Task | None = None
        # Every model call on one thread: each thread that runs PyTorch's CPU kernels gets an OpenMP
        # pool of its own, and two pools on few cores slow each other down (asyncio's default executor
        # would hand successive batches to different threads). `attnkit serve` passes a
        # `CallerThreadExecutor`, so that the thread that opened the run also runs it.
        self.own_executor = executor is None  # shut down with the batcher; a given one is its owner's
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnkit-model")
        self.batches = 0  # model calls made, for /v1/info and tests

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        if self.own_executor:
            self.executor.shutdown(wait=False)

    async def submit(self, inputs: list[Any], options: dict[str, Any]) -> list[Any]:
        """The records of `inputs`, computed in a batch with whatever else arrives meanwhile."""
        if self.queue is None:
            await self.start()
        pending = Pending(inputs, options, asyncio.get_running_loop().create_future())
        await self.queue.put(pending)
        return await pending.future

    async def _work(self) -> None:
        held: list[Pending] = []  # taken from the queue while a batch of other options was open
        while True:
            first = held.pop(0) if held else await self.queue.get()
            batch, size = [first], len(first.inputs)
            for pending in list(held):  # held requests that fit this batch join it first
                if pending.key == first.key and size + len(pending.inputs) <= self.max_batch:
                    held.remove(pending)
                    batch.append(pending)
                    size += len(pending.inputs)
            # A request that finds nothing else waiting runs at once: waiting only pays when requests
            # arrive together, and those that arrive while the model runs queue up for the next batch.
            alone = self.queue.empty()
            deadline = time.monotonic() + (0.0 if alone else self.max_wait)
            while size < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    candidate = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
                if candidate.key == first.key and size + len(candidate.inputs) <= self.max_batch:
                    batch.append(candidate)
                    size += len(candidate.inputs)
                else:
                    held.append(candidate)
                    if candidate.key == first.key:
                        break  # this batch is full
            await self._run(batch)

    async def _run(self, batch: list[Pending]) -> None:
        inputs = [x for pending in batch for x in pending.inputs]
        try:
            call = functools.partial(self.predict, inputs, **batch[0].options)
            records = await asyncio.get_running_loop().run_in_executor(self.executor, call)
        except Exception as error:
            if len(batch) > 1:  # one request's bad input must not fail the others: each alone
                for pending in batch:
                    await self._run([pending])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(error)
            return
        self.batches += 1
        start = 0
        for pending in batch:
            end = start + len(pending.inputs)
            if not pending.future.done():
                pending.future.set_result(records[start:end])
            start = end


class CallerThreadExecutor(Executor):
    """Runs submitted calls on whichever thread calls `work_until` (the main thread, for `attnkit serve`,
    while uvicorn's event loop runs in another thread)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def work_until(self, stopped: threading.Event, poll_s: float = 0.1) -> None:
        """Run submitted calls, in order, until `stopped` is set."""
        while not stopped.is_set():
            try:
                future, fn, args, kwargs = self._jobs.get(timeout=poll_s)
            except queue.Empty:
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except KeyboardInterrupt:  # Ctrl-C during a call: that request fails, the server stops
                future.set_exception(RuntimeError("the server was interrupted while answering"))
                raise
            except Exception as error:  # delivered to the awaiting request
                future.set_exception(error)
