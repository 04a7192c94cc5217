"""Reaching Redis at start-up: connection options from the config, version and eviction checks, and the
first-run private redis-server."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from redis.exceptions import AuthenticationError, RedisClusterException, RedisError

from taskqueue.config import DEFAULT_REDIS_URL, Config
from taskqueue.errors import BrokerUnavailable
from taskqueue.ops.logs import redact
from taskqueue.store.connection import RedisOptions, async_client, tls_files

log = logging.getLogger("taskqueue.redis")

WAIT_LONGEST_S = 5.0  # at start, Redis is asked again at most this far apart
MIN_VERSION = (6, 2, 0)  # RPOP with a count, BLMOVE
# What failing to reach Redis raises: the Cluster client's "no reachable node" is not a RedisError.
UNREACHABLE = (RedisError, RedisClusterException, OSError)


def reason(exc: BaseException) -> str:
    """An exception as one short line: redis-py's MasterNotFoundError appends a repr of every Sentinel client."""
    text = str(exc)
    if type(exc).__name__ == "MasterNotFoundError":
        text = text.split(" : ", 1)[0] + " (check service_name, and that the Sentinels answer)"
    return text


def unreachable(config: Config | None, exc: BaseException) -> BrokerUnavailable:
    """The one line for a failed first contact: a refused login said as such (not "cannot reach"), and a plain
    redis:// URL whose server hung up at once asked whether it is a TLS port."""
    at = where(config) if config else "Redis"
    text = reason(exc)
    if isinstance(exc, AuthenticationError):
        if "HELLO must be called" in text or "Authentication required" in text:
            text = "it requires a login and the URL gives none"
        return BrokerUnavailable(f"{at} refused the login: {text} (check the user and password in redis.url)")
    url = config.redis.url if config and not config.redis.sentinel else ""
    hung_up = "Connection reset by peer" in text or "Connection closed by server" in text
    if url.startswith(("redis://", "redis+cluster://")) and hung_up:
        text += "; is this a TLS port? use rediss://"
    return BrokerUnavailable(f"cannot reach {at}: {text}")


def options(config: Config, command_timeout: float | None = -1.0) -> RedisOptions:
    r = config.redis
    sentinel = (r.sentinel.service_name, r.sentinel.hosts, r.sentinel.password) if r.sentinel else None
    tls = tls_files(r.tls.ca_file, r.tls.cert_file, r.tls.key_file, r.tls.verify) if r.tls else {}
    timeout = r.command_timeout_s if command_timeout == -1.0 else command_timeout
    return RedisOptions(r.url, r.pool_size, r.connection_timeout_s, timeout, r.cluster, sentinel, tls)


def where(config: Config) -> str:
    """Where the config says Redis is, for messages (password masked): the URL, or the Sentinels."""
    r = config.redis
    if r.sentinel:
        hosts = ", ".join(f"{h}:{p}" for h, p in r.sentinel.hosts)
        return f"Redis primary '{r.sentinel.service_name}' through the Sentinels at {hosts}"
    return f"Redis{' Cluster' if r.cluster else ''} at {redact(r.url)}"


async def check(client: Any, config: Config | None = None) -> dict[str, Any]:
    """Ping, then refuse a Redis too old for our commands and warn loudly about an evicting one."""
    try:
        info = await client.info()
        if config and config.redis.cluster:  # the node that holds our slot is the one that matters
            info = await client.info(target_nodes=client.get_node_from_key(config.redis.key_prefix))
    except UNREACHABLE as exc:
        raise unreachable(config, exc) from None
    version = tuple(int(p) for p in str(info.get("redis_version", "0.0.0")).split(".")[:3])
    if version < MIN_VERSION:
        raise BrokerUnavailable(
            f"Redis {info.get('redis_version')} is too old: taskqueue needs {'.'.join(map(str, MIN_VERSION))}+"
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        log.error(
            "Redis maxmemory-policy is '%s': under memory pressure Redis will silently DELETE queued "
            "tasks. Set `maxmemory-policy noeviction` for a task queue.",
            policy,
        )
    return dict(info)


class EmbeddedRedis:
    """A private redis-server child for a first run on a machine without Redis (AOF on, loopback only)."""

    def __init__(self, url: str, data_dir: Path) -> None:
        parsed = urlparse(url)
        self.port = parsed.port or 6379
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BrokerUnavailable(
                "no Redis answers at the default URL and redis-server is not installed: install Redis "
                "(e.g. `apt-get install redis-server`) or set redis.url / $REDIS_URL"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        log.warning(
            "started a private redis-server on 127.0.0.1:%d (pid %d, data in %s); set redis.url to use your own",
            self.port,
            self.process.pid,
            self.data_dir,
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def connect(config: Config, *, fail_fast: bool = True) -> tuple[Any, EmbeddedRedis | None]:
    """A checked async client; may start the private server (see `redis.embedded`). Without `fail_fast`, a
    Redis that does not answer yet is waited for, with backoff, as the runner rides out a later outage."""
    client = async_client(options(config))
    embedded: EmbeddedRedis | None = None
    want = config.redis.embedded
    if want is True:
        embedded = EmbeddedRedis(config.redis.url, config.redis.embedded_data_dir)
        embedded.start()
    try:
        await _wait_ping(client, 5.0 if embedded else 0.0)
    except UNREACHABLE as exc:
        r = config.redis
        if isinstance(exc, AuthenticationError):  # something answers there: never start a private one
            raise unreachable(config, exc) from None
        if want is None and r.url == DEFAULT_REDIS_URL and embedded is None and not (r.sentinel or r.cluster):
            log.warning("nothing answers at %s (%s)", DEFAULT_REDIS_URL, exc)
            embedded = EmbeddedRedis(config.redis.url, config.redis.embedded_data_dir)
            embedded.start()
            try:
                await _wait_ping(client, 5.0)
            except (RedisError, OSError) as again:
                embedded.stop()
                raise BrokerUnavailable(f"the private redis-server did not answer: {again}") from None
        elif fail_fast or _lasting(exc):
            raise unreachable(config, exc) from None
        else:
            await _wait_for_redis(client, config, exc)
    await check(client, config)
    return client, embedded


def _lasting(exc: BaseException) -> bool:
    """A refusal that waiting does not cure: a wrong password, a certificate that does not verify."""
    seen: BaseException | None = exc
    while seen is not None:  # redis-py raises its ConnectionError while handling the ssl module's error
        if isinstance(seen, AuthenticationError | ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _wait_for_redis(client: Any, config: Config, first: BaseException) -> None:
    """Ping until Redis answers, backing off to WAIT_LONGEST_S; said once, and once more when it answers."""
    log.warning(
        "waiting for %s (%s); retrying until it answers (--fail-fast: exit instead)", where(config), reason(first)
    )
    started, delay = time.monotonic(), 0.1
    while True:
        await asyncio.sleep(delay)
        delay = min(delay * 2, WAIT_LONGEST_S)
        try:
            await client.ping()
        except UNREACHABLE as exc:
            if _lasting(exc):
                raise BrokerUnavailable(f"cannot reach {where(config)}: {reason(exc)}") from None
            continue
        log.info("%s answers after %.0f s", where(config), time.monotonic() - started)
        return


async def _wait_ping(client: Any, patience_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + patience_s
    while True:
        try:
            await client.ping()
            return
        except UNREACHABLE:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.05)
