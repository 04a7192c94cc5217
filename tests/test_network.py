"""The Redis connections as the worker and runner loops rely on them: under uvloop (what the processes run), a
connection the network resets is a redis ConnectionError (a RedisError the loops ride out), never another
exception that would end a loop. Through the fault proxy of tests/faultproxy.py, against a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from taskqueue._loop import run_loop
from taskqueue.store.broker import Broker
from taskqueue.store.connection import RedisOptions, async_client
from tests.conftest import RedisServer
from tests.faultproxy import fault_proxy
from tests.test_worker import CONFIG, load_config


def _errors_while_cutting(client: Any, call: Any, cut: Any, close: Any = None) -> list[BaseException]:
    async def main() -> list[BaseException]:
        seen: list[BaseException] = []
        for i in range(300):
            try:
                await call(client)
            except Exception as exc:  # the test is about which kinds come out
                seen.append(exc)
            if i % 10 == 0:
                cut()
            await asyncio.sleep(0.001)
        if close is not None:
            await close()
        await client.aclose()
        return seen

    return run_loop(main())


def test_commands_on_a_reset_connection_fail_as_redis_errors(redis_server: RedisServer) -> None:
    with fault_proxy(redis_server.port) as proxy:
        client = async_client(RedisOptions(url=proxy.url, command_timeout=2.0))
        seen = _errors_while_cutting(client, lambda c: c.hgetall("tq:inflight:w"), proxy.cut)
    assert seen, "the proxy's resets were never noticed: the test proves nothing"
    assert all(isinstance(exc, RedisError) for exc in seen), {type(exc).__name__: str(exc) for exc in seen}


def test_the_worker_exchange_on_a_reset_connection_fails_as_a_redis_error(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    with fault_proxy(redis_server.port) as proxy:
        cfg = load_config(tmp_path, proxy.url, CONFIG)
        broker = Broker(async_client(RedisOptions(url=proxy.url, command_timeout=2.0)), cfg)

        async def exchange(_: Any) -> None:
            await broker.exchange("w-net", [], {}, [], 0, 0)

        seen = _errors_while_cutting(broker.redis, exchange, proxy.cut, broker.close)
    assert seen
    assert all(isinstance(exc, RedisError) for exc in seen), {type(exc).__name__: str(exc) for exc in seen}
