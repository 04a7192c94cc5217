"""The sync-task thread pool: results, exceptions, the caller's context, cancellation, many at once."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from taskqueue.worker.threads import ThreadRunner

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_results_exceptions_and_context_reach_the_awaiting_coroutine() -> None:
    def work(x: int) -> tuple[int, str, str]:
        return x * 2, who.get(), threading.current_thread().name

    def fail() -> None:
        raise ValueError("boom")

    async def scenario() -> None:
        runner = ThreadRunner(4, "t")
        who.set("caller")
        value, seen, thread = await runner.run(work, 21)
        assert (value, seen) == (42, "caller")
        assert thread.startswith("t-") and thread != threading.current_thread().name
        with pytest.raises(ValueError, match="boom"):
            await runner.run(fail)
        runner.stop()

    asyncio.run(scenario())


def test_a_thousand_calls_from_fifty_coroutines_all_complete_on_at_most_size_threads() -> None:
    seen: set[str] = set()
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            seen.add(threading.current_thread().name)
        return i

    async def scenario() -> list[int]:
        runner = ThreadRunner(8)

        async def worker(start: int) -> list[int]:
            return [await runner.run(work, start + k) for k in range(20)]

        chunks = await asyncio.wait_for(asyncio.gather(*(worker(20 * w) for w in range(50))), timeout=30)
        runner.stop()
        return [value for chunk in chunks for value in chunk]

    assert sorted(asyncio.run(scenario())) == list(range(1000))
    assert 1 <= len(seen) <= 8


def test_a_cancelled_wait_leaves_the_thread_to_finish_and_the_pool_usable() -> None:
    release = threading.Event()

    def blocked() -> str:
        release.wait(10)
        return "late"

    async def scenario() -> str:
        runner = ThreadRunner(2)
        waiting = asyncio.ensure_future(runner.run(blocked))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()  # the late result is dropped (nobody waits), and the next call still works
        result: str = await asyncio.wait_for(runner.run(str.upper, "ok"), timeout=10)
        runner.stop()
        return result

    assert asyncio.run(scenario()) == "OK"


def test_two_jobs_given_to_one_idle_thread_at_once_do_not_wait_behind_each_other() -> None:
    """Found with concurrency limits: two sync tasks admitted together, one idle thread; the second waited in the
    inbox until the first (a long task) finished, though the pool had room."""
    release = threading.Event()

    def long_task() -> str:
        release.wait(10)
        return "long"

    async def scenario() -> None:
        runner = ThreadRunner(4, "t")
        assert await runner.run(lambda: "warm") == "warm"
        for _ in range(1000):  # until that one thread waits for work again (bounded: at most ~1 s)
            if runner._idle == 1:
                break
            await asyncio.sleep(0.001)
        assert runner._idle == 1
        first = runner.run(long_task)
        second = runner.run(lambda: "short")
        assert await asyncio.wait_for(second, 5) == "short"
        release.set()
        assert await first == "long"
        runner.stop()

    asyncio.run(scenario())
