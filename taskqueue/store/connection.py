"""Redis connections from the YAML's `redis:` options (plain, TLS, Sentinel, Cluster); client-safe imports only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline as _AsyncClusterPipeline
from redis.asyncio.cluster import RedisCluster as _AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel as _AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as _AsyncSentinelPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel as _Sentinel
from redis.sentinel import SentinelConnectionPool as _SentinelPool

from taskqueue.config import cluster_url

# redis-py leaves the Sentinel classes unannotated; through Any they do not leak untyped calls.
Sentinel: Any = _Sentinel
AsyncSentinel: Any = _AsyncSentinel
SentinelPoolBase: Any = _SentinelPool
AsyncSentinelPoolBase: Any = _AsyncSentinelPool

AsyncRedisCluster: Any = _AsyncRedisCluster
AsyncClusterPipeline: Any = _AsyncClusterPipeline

PRIMARY_RECHECK_S = 1.0  # Sentinel: how often a pool asks the Sentinels where the primary is


class FollowingSentinelPool(SentinelPoolBase):  # type: ignore[misc]
    """redis-py's Sentinel pool asks where the primary is only when it opens a connection, so after a failover
    its open connections keep writing to the old primary until that one is demoted (~10 s later), and those
    writes are then discarded. This one re-asks at most once per PRIMARY_RECHECK_S; on a change, connections
    to the old primary are closed as they come back to the pool (redis-py's `owns_connection`)."""

    _next_check = 0.0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + PRIMARY_RECHECK_S
            with contextlib.suppress(redis.ConnectionError):  # no Sentinel answers: the connect reports it
                self.get_master_address()  # closes idle connections when the primary moved
        return super().get_connection(*args, **kwargs)


class AsyncFollowingSentinelPool(AsyncSentinelPoolBase):  # type: ignore[misc]
    """The asyncio flavour of FollowingSentinelPool (whose release does not check ownership: checked here).
    `primary_changes` counts the moves it saw, for code that must look again after one."""

    _next_check = 0.0
    primary_changes = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + PRIMARY_RECHECK_S
            before = self.master_address
            with contextlib.suppress(redis.ConnectionError):
                await self.get_master_address()
            if before is not None and self.master_address != before:
                self.primary_changes += 1
        connection = await super().get_connection(*args, **kwargs)
        if (
            self.master_address
            and connection.is_connected
            and (connection.host, connection.port) != tuple(self.master_address)
        ):
            await connection.disconnect()  # was in use when the primary moved; the next connect asks again
            await connection.connect()
        return connection


class DirectConnection:
    """One connection of a plain asyncio pool, used by one coroutine at a time, without redis-py's per-command
    pool checkout, retries and instrumentation (most of the client-side cost of a small command). Nothing is
    retried here: a connection error, a timeout or a cancellation between request and reply drops the
    connection (the next call opens a new one) and propagates; an error reply leaves it usable."""

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool
        self.conn: Any = None
        self.busy = False

    @staticmethod
    def possible(client: Any) -> bool:
        """Plain pools only: a Sentinel or Cluster connection used outside its pool does not find its node."""
        return type(client) is aioredis.Redis and type(client.connection_pool) is aioredis.ConnectionPool

    async def execute(self, *args: Any) -> Any:
        self.busy = True
        conn = self.conn
        try:
            if conn is None:
                conn = self.conn = self.pool.make_connection()
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return await conn.read_response()
        except BaseException as exc:
            if not isinstance(exc, redis.ResponseError) and conn is not None:
                self.conn = None
                await asyncio.shield(conn.disconnect(nowait=True))
            raise
        finally:
            self.busy = False

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.disconnect()


@dataclass(frozen=True)
class RedisOptions:
    """The connection part of the `redis:` section; `Client(...)` takes the same names as keywords."""

    url: str = "redis://127.0.0.1:6379/0"
    pool_size: int = 10
    connection_timeout: float = 5.0
    command_timeout: float | None = 5.0  # None: no limit (blocking waits)
    cluster: bool = False
    sentinel: tuple[str, tuple[tuple[str, int], ...], str | None] | None = None  # service, hosts, password
    tls: dict[str, Any] = field(default_factory=dict)  # ca_file, cert_file, key_file, verify

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": self.connection_timeout,
            "socket_timeout": self.command_timeout,
            "max_connections": self.pool_size,
            "health_check_interval": 30,
        }
        if self.tls:
            if self.sentinel:
                kwargs["ssl"] = True  # no URL to say rediss:// in Sentinel mode
            ca, cert, key = (self.tls.get(k) for k in ("ca_file", "cert_file", "key_file"))
            kwargs["ssl_ca_certs"] = str(ca) if ca else None
            kwargs["ssl_certfile"] = str(cert) if cert else None
            kwargs["ssl_keyfile"] = str(key) if key else None
            if not self.tls.get("verify", True):
                kwargs["ssl_cert_reqs"] = "none"
                kwargs["ssl_check_hostname"] = False
        return kwargs


class ClusterUnavailable(redis.ConnectionError):
    """redis-py's Cluster client raises RedisClusterException, which is not a RedisError, when no node answers
    (e.g. the whole cluster restarts) or no node serves a slot. taskqueue's loops read RedisError as "Redis is
    away: back off and retry", so the asyncio Cluster client below re-raises it as this ConnectionError."""


class TaskqueueCluster(AsyncRedisCluster):  # type: ignore[misc]
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc
        except RuntimeError as exc:
            if not closed_transport(exc):
                raise
            raise _reset_error(exc) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises redis-py's own error
        return TaskqueueClusterPipeline(self, transaction)


class TaskqueueClusterPipeline(AsyncClusterPipeline):  # type: ignore[misc]
    async def initialize(self) -> Any:  # `async with client.pipeline()` starts here
        try:
            return await super().initialize()
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc
        except RuntimeError as exc:
            if not closed_transport(exc):
                raise
            raise _reset_error(exc) from exc


def sync_client(options: RedisOptions) -> Any:
    """A redis-py client (`redis.Redis`, or the Cluster/Sentinel flavour the options ask for)."""
    return _client(options, Sentinel, FollowingSentinelPool, RedisCluster, redis.Redis)


def async_client(options: RedisOptions, *, retry: bool = False) -> Any:
    """The asyncio flavour of `sync_client`. With `retry`, a command that meets a broken connection is sent
    again on a new one (up to 3 times): for producers, whose commands may run twice. Never for the worker's
    scripts: a retried exchange would take messages the worker never hears of."""
    extra = {"retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 3)} if retry else {}
    client = _client(options, AsyncSentinel, AsyncFollowingSentinelPool, TaskqueueCluster, aioredis.Redis, extra)
    pool = getattr(client, "connection_pool", None)
    if pool is not None:  # plain and Sentinel; the Cluster client converts in TaskqueueCluster
        pool.connection_class = _reset_safe(pool.connection_class)
    return client


def closed_transport(exc: BaseException) -> bool:
    """uvloop's error for a write to a connection the peer has reset: RuntimeError("unable to perform operation
    on <TCPTransport closed=True ...>; the handler is closed"). redis-py lets it through as it is, so it would
    escape every `except RedisError` of a loop that rides out an outage (a worker's pump once died of it)."""
    return isinstance(exc, RuntimeError) and "handler is closed" in str(exc)


def _reset_error(exc: RuntimeError) -> redis.ConnectionError:
    return redis.ConnectionError(f"Error while writing to Redis: the connection was reset ({exc})")


@functools.cache
def _reset_safe(cls: type[Any]) -> type[Any]:
    """`cls` (an asyncio connection class) whose writes on a reset connection raise ConnectionError."""

    class ResetSafe(cls):  # type: ignore[misc]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            try:
                await super().send_packed_command(command, check_health)
            except RuntimeError as exc:  # redis-py has disconnected it already
                if not closed_transport(exc):
                    raise
                raise _reset_error(exc) from exc

    ResetSafe.__name__ = ResetSafe.__qualname__ = f"ResetSafe{cls.__name__}"
    return ResetSafe


def _client(
    options: RedisOptions,
    sentinel_cls: Any,
    pool_cls: Any,
    cluster_cls: Any,
    plain_cls: Any,
    extra: dict[str, Any] | None = None,
) -> Any:
    options = _plain_url(options)
    kwargs = {**options._kwargs(), **(extra or {})}
    if options.sentinel:
        service, hosts, password = options.sentinel
        sentinel = sentinel_cls(list(hosts), sentinel_kwargs=_sentinel_kwargs(kwargs, password))
        kwargs.pop("max_connections")
        kwargs.update(_url_login(options.url))
        return sentinel.master_for(service, connection_pool_class=pool_cls, **kwargs)
    if options.cluster:
        kwargs.pop("health_check_interval")
        return cluster_cls.from_url(options.url, **kwargs)
    return plain_cls.from_url(options.url, **kwargs)


def _url_login(url: str) -> dict[str, Any]:
    """Sentinel mode: the data nodes' user, password and database still come from `url` (its host is unused)."""
    parsed = urlparse(url)
    found: dict[str, Any] = {}
    if parsed.username:
        found["username"] = unquote(parsed.username)
    if parsed.password:
        found["password"] = unquote(parsed.password)
    if parsed.path.strip("/").isdigit():
        found["db"] = int(parsed.path.strip("/"))
    return found


def _plain_url(options: RedisOptions) -> RedisOptions:
    url, cluster = cluster_url(options.url)
    return dataclasses.replace(options, url=url, cluster=True) if cluster else options


def _sentinel_kwargs(kwargs: dict[str, Any], password: str | None) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: the same timeouts (redis-py gives them none when
    `sentinel_kwargs` is set), TLS when the data nodes use it, and their own password if any."""
    found = {k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl"))}
    if found.get("socket_timeout") is None:  # the blocking-watch client has none; a Sentinel query needs one
        found["socket_timeout"] = kwargs["socket_connect_timeout"]
    if password:
        found["password"] = password
    return found


def tls_files(ca_file: Path | None, cert_file: Path | None, key_file: Path | None, verify: bool) -> dict[str, Any]:
    return {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file, "verify": verify}
