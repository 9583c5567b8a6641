"""The micro-batcher on its own: slices go back to their requests, a lone request does not wait, and
one request's failure is not another's."""

from __future__ import annotations

import asyncio
import time

import pytest

from attnkit.errors import UserError
from attnkit.serve.batcher import MicroBatcher


def _echo(calls: list[list[str]]):
    def predict(inputs: list[str], suffix: str = "") -> list[str]:
        calls.append(list(inputs))
        time.sleep(0.05)  # the model is busy: requests arriving meanwhile queue up
        if "bad" in inputs:
            raise UserError("a bad input")
        return [x + suffix for x in inputs]

    return predict


def test_requests_that_arrive_together_share_calls_and_get_their_own_answers():
    calls: list[list[str]] = []

    async def scenario() -> list:
        batcher = MicroBatcher(_echo(calls), max_batch=8, max_wait_ms=20)
        await batcher.start()
        requests = [batcher.submit([f"{i}a", f"{i}b"], {"suffix": "!" if i % 3 else "?"}) for i in range(10)]
        answers = await asyncio.gather(*requests)
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    for i, answer in enumerate(answers):
        mark = "!" if i % 3 else "?"
        assert answer == [f"{i}a{mark}", f"{i}b{mark}"]
    assert len(calls) < 10 and all(len(call) <= 8 for call in calls)


def test_a_lone_request_does_not_wait_for_company():
    async def scenario() -> float:
        batcher = MicroBatcher(lambda inputs: inputs, max_batch=32, max_wait_ms=2000)
        await batcher.start()
        started = time.perf_counter()
        await batcher.submit(["x"], {})
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    assert asyncio.run(scenario()) < 1.0


def test_a_failing_request_fails_alone():
    calls: list[list[str]] = []

    async def scenario() -> list:
        batcher = MicroBatcher(_echo(calls), max_batch=8, max_wait_ms=50)
        await batcher.start()
        requests = [batcher.submit([x], {}) for x in ("warm", "ok1", "bad", "ok2")]
        answers = await asyncio.gather(*requests, return_exceptions=True)
        await batcher.stop()
        return answers

    warm, ok1, bad, ok2 = asyncio.run(scenario())
    assert (warm, ok1, ok2) == (["warm"], ["ok1"], ["ok2"])
    assert isinstance(bad, UserError)
    assert calls[0] == ["warm", "ok1", "bad", "ok2"]  # batched, the batch failed ...
    assert calls[1:] == [["warm"], ["ok1"], ["bad"], ["ok2"]]  # ... and each was retried alone


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda inputs: inputs, max_batch=0)


def test_caller_thread_executor_runs_calls_on_the_working_thread():
    import threading

    from attnkit.serve.batcher import CallerThreadExecutor

    executor = CallerThreadExecutor()
    stopped = threading.Event()
    threads = []

    def work(x):
        threads.append(threading.current_thread())
        if x < 0:
            raise ValueError("negative")
        return x * 2

    async def main():
        batcher = MicroBatcher(lambda xs: [work(x) for x in xs], max_batch=4, max_wait_ms=1, executor=executor)
        try:
            answers = await asyncio.gather(*(batcher.submit([i], {}) for i in range(6)))
            with pytest.raises(ValueError, match="negative"):
                await batcher.submit([-1], {})
            return answers
        finally:
            await batcher.stop()
            stopped.set()

    result = {}
    loop_thread = threading.Thread(target=lambda: result.setdefault("answers", asyncio.run(main())))
    loop_thread.start()
    executor.work_until(stopped, poll_s=0.01)  # this (main) thread runs every call
    loop_thread.join()
    assert result["answers"] == [[0], [2], [4], [6], [8], [10]]
    assert threads and set(threads) == {threading.main_thread()}


def test_an_interrupted_call_fails_its_request_and_stops_the_worker():
    import threading

    from attnkit.serve.batcher import CallerThreadExecutor

    executor = CallerThreadExecutor()

    def interrupted():
        raise KeyboardInterrupt

    future = executor.submit(interrupted)
    later = executor.submit(lambda: 1)
    with pytest.raises(KeyboardInterrupt):
        executor.work_until(threading.Event(), poll_s=0.01)
    with pytest.raises(RuntimeError, match="interrupted while answering"):
        future.result(timeout=1)
    stopped = threading.Event()
    threading.Timer(0.2, stopped.set).start()
    executor.work_until(stopped, poll_s=0.01)  # the server's shutdown still answers what is queued
    assert later.result(timeout=1) == 1
