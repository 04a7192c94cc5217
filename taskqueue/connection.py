"""Redis connections from the YAML's `redis:` options (plain, TLS, Sentinel, Cluster); client-safe imports only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as _AsyncSentinel
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel as _Sentinel

# redis-py leaves the Sentinel classes unannotated; through Any they do not leak untyped calls.
Sentinel: Any = _Sentinel
AsyncSentinel: Any = _AsyncSentinel


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
            ca, cert, key = (self.tls.get(k) for k in ("ca_file", "cert_file", "key_file"))
            kwargs["ssl_ca_certs"] = str(ca) if ca else None
            kwargs["ssl_certfile"] = str(cert) if cert else None
            kwargs["ssl_keyfile"] = str(key) if key else None
            if not self.tls.get("verify", True):
                kwargs["ssl_cert_reqs"] = "none"
                kwargs["ssl_check_hostname"] = False
        return kwargs

    def with_timeout(self, command_timeout: float | None) -> RedisOptions:
        return RedisOptions(
            self.url,
            self.pool_size,
            self.connection_timeout,
            command_timeout,
            self.cluster,
            self.sentinel,
            self.tls,
        )


def sync_client(options: RedisOptions) -> Any:
    """A redis-py client (`redis.Redis`, or the Cluster/Sentinel flavour the options ask for)."""
    kwargs = options._kwargs()
    if options.sentinel:
        service, hosts, password = options.sentinel
        sentinel = Sentinel(list(hosts), sentinel_kwargs={"password": password} if password else None)
        kwargs.pop("max_connections")
        return sentinel.master_for(service, **kwargs)
    if options.cluster:
        kwargs.pop("health_check_interval")
        return RedisCluster.from_url(options.url, **kwargs)
    return redis.Redis.from_url(options.url, **kwargs)


def async_client(options: RedisOptions) -> Any:
    """The asyncio flavour of `sync_client`."""
    kwargs = options._kwargs()
    if options.sentinel:
        service, hosts, password = options.sentinel
        sentinel = AsyncSentinel(list(hosts), sentinel_kwargs={"password": password} if password else None)
        kwargs.pop("max_connections")
        return sentinel.master_for(service, **kwargs)
    if options.cluster:
        kwargs.pop("health_check_interval")
        return AsyncRedisCluster.from_url(options.url, **kwargs)
    return aioredis.Redis.from_url(options.url, **kwargs)


def tls_files(ca_file: Path | None, cert_file: Path | None, key_file: Path | None, verify: bool) -> dict[str, Any]:
    return {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file, "verify": verify}
