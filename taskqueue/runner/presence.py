"""How a runner is found and asked to reload, through Redis only: its registration is a lease renewed every
heartbeat, like a worker's (a runner killed with SIGKILL is gone within a lease), and `taskqueue reload`
publishes a request naming the runners it found on the reload channel; each answers at once with a receipt,
then with its verdict. No pid is ever signalled, so a registration left behind, or a pid the system gave to
another process since, reaches nobody."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
from redis.exceptions import RedisClusterException, RedisError

from taskqueue._loop import outage, raise_if_cancelled
from taskqueue.config import Config
from taskqueue.runner.reload import Verdict
from taskqueue.store.broker import Broker
from taskqueue.worker.worker import lease_s

log = logging.getLogger("taskqueue.runner")

RECEIPT_WAIT_S = 10.0  # a live runner takes a request within this; one that does not is not listening
SUBSCRIBE_WAIT_S = 5.0  # a runner registers once it listens (or after this, if Redis is slow to subscribe)


class Host(Protocol):
    """What presence needs of its runner: the configuration and broker of the moment, its id, whether it is
    stopping, and its reload."""

    config: Config
    broker: Broker
    runner_id: str
    stopping: bool

    async def reload(self) -> Verdict: ...


Start = Callable[[Coroutine[Any, Any, None]], None]


async def register(host: Host, info: Mapping[str, Any], start: Start) -> None:
    """Listen for reload requests first, then register (so no request finds a runner not yet listening),
    then keep the registration alive. `start` runs a job for the runner's whole life."""
    subscribed = asyncio.Event()
    start(_listen(host, subscribed, start))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(subscribed.wait(), SUBSCRIBE_WAIT_S)
    await host.broker.register_runner(host.runner_id, info, lease_s(host.config))
    start(_renew(host, info))


async def _renew(host: Host, info: Mapping[str, Any]) -> None:
    while True:
        raise_if_cancelled()
        await asyncio.sleep(host.config.workers.heartbeat_interval_s)
        if host.stopping:  # it unregisters as it leaves
            return
        try:
            await host.broker.register_runner(host.runner_id, info, lease_s(host.config))
        except (RedisError, OSError) as exc:
            outage.failed("renewing the runner's registration", exc)
            continue
        outage.answered()


async def _listen(host: Host, subscribed: asyncio.Event, start: Start) -> None:
    """Follow the reload channel (resubscribing after an outage); a request naming this runner starts its
    answer as a job of its own, since a reload restarts the runner's services."""
    while True:
        raise_if_cancelled()
        pubsub = host.broker.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(host.broker.keys.reload_channel)
            subscribed.set()
            async for message in pubsub.listen():
                request = _request(message)
                if request is not None and host.runner_id in request.get("runners", ()):
                    start(_answer(host, str(request["id"])))
        except (RedisError, RedisClusterException, OSError):
            await asyncio.sleep(1.0)  # Redis away: the registration lapses too, and nobody asks
        finally:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await pubsub.aclose()


def _request(message: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        request = msgpack.unpackb(message["data"])
    except (KeyError, TypeError, ValueError, msgpack.ExtraData):
        return None
    return request if isinstance(request, dict) and "id" in request else None


async def _answer(host: Host, request_id: str) -> None:
    await _send(host, request_id, {"runner": host.runner_id, "state": "received"})
    if host.stopping:
        verdict = Verdict(False, "reload refused: the runner is shutting down")
    else:
        try:
            verdict = await host.reload()
        except Exception as exc:  # a bug or Redis away mid-reload: logged, and told to whoever asked
            log.exception("reload failed")
            verdict = Verdict(False, f"reload failed: {type(exc).__name__}: {exc}")
    answer = {"applied": verdict.applied, "reason": verdict.reason, "problems": list(verdict.problems)}
    await _send(host, request_id, {"runner": host.runner_id, "state": "verdict", **answer})


async def _send(host: Host, request_id: str, answer: Mapping[str, Any]) -> None:
    try:
        await host.broker.answer_reload(request_id, answer)
    except (RedisError, OSError) as exc:  # the CLI that asked will say it got no answer; the log has the verdict
        log.warning("could not answer reload request %s: %s", request_id, exc)


@dataclass
class Answers:
    """What the runners asked by `ask` said: their verdicts, and which only took the request."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)


async def ask(broker: Broker, runner_ids: Collection[str], timeout_s: float) -> Answers:
    """Ask those runners to reload and wait for their verdicts: up to RECEIPT_WAIT_S for a runner to take the
    request, up to `timeout_s` in all for its verdict."""
    request_id = uuid.uuid4().hex
    await broker.request_reload(request_id, list(runner_ids))
    found = Answers()
    started = time.monotonic()
    while True:
        waiting = set(runner_ids) - set(found.verdicts)
        elapsed = time.monotonic() - started
        if not waiting or elapsed >= timeout_s or (elapsed >= RECEIPT_WAIT_S and not waiting & found.received):
            return found
        answer = await broker.reload_answer(request_id, timeout_s - elapsed)
        if answer is None or answer.get("runner") not in waiting:
            continue
        runner = str(answer["runner"])
        found.received.add(runner)
        if answer.get("state") == "verdict":
            problems = tuple(str(p) for p in answer.get("problems", ()))
            found.verdicts[runner] = Verdict(bool(answer.get("applied")), str(answer.get("reason")), problems)
