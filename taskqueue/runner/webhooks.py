"""Webhooks (SPEC §13): the runner POSTs matching lifecycle events to each `webhooks:` endpoint.

Each webhook reads the events stream through its own consumer group (`webhook:<name>`, created at the
stream's end the first time: a new webhook gets the events from then on), as consumer <runner id>, so
several runners share the deliveries and each event goes out once between them. An event is acknowledged
(XACK) only once it was delivered (a 2xx answer) or kept as undeliverable after `max_attempts`: a runner
that dies mid-delivery leaves it pending, and another runner (or the next one) claims it (XAUTOCLAIM) once it
has been idle for `claim_after_s` — at least once. While it retries one event a runner keeps renewing its
claim, so a slow endpoint is not delivered to twice by two runners.

The body is the event as JSON (`{"webhook": <name>, "event": ..., "id": ..., "task": ..., "queue": ...,
"attempt": ..., "at": ..., "stream_id": ...}` and `error` / `workflow` / `state` where they apply), signed per
attempt: `X-Taskqueue-Timestamp: <unix seconds>` and `X-Taskqueue-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>" with the webhook's secret>`, so a receiver that checks the timestamp's age refuses a
captured request replayed later (as Stripe's and Standard Webhooks' receivers do). Counters:
webhook_delivered:<name>, webhook_failed:<name> (failed attempts), webhook_undeliverable:<name>,
webhook_lost:<name> (events trimmed from the stream before this webhook read them).

No event is trimmed before every webhook has read it, up to a memory bound: with webhooks, the scripts that
write events trim the stream only at `events.max_backlog`, and the runners trim it to about `events.max_len`
past what every webhook group has read or holds pending (`trim_events.lua`). A webhook that lags past the
bound (its endpoint down for long) loses the oldest events: `webhook_read.lua` counts them as it reads, they
are logged, and `status` and `/metrics` show them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp
from redis.exceptions import RedisError, ResponseError

from taskqueue._loop import outage, raise_if_cancelled
from taskqueue.config import Config, WebhookConfig
from taskqueue.store import eventlog, scripts
from taskqueue.store.broker import Broker

log = logging.getLogger("taskqueue.webhooks")

UNDELIVERABLE_KEPT = 10000  # undeliverable events kept, all webhooks together (the oldest go first)
BATCH = 100
BLOCK_MS = 2000
TRIM_BATCH = 1000  # most events one trim_events.lua call removes (it reads their ids first)
TRIM_EVERY_S = 1.0
SIGNATURE_HEADER = "X-Taskqueue-Signature"
TIMESTAMP_HEADER = "X-Taskqueue-Timestamp"


def group_of(hook: WebhookConfig) -> str:
    return f"webhook:{hook.name}"


def body_of(hook: WebhookConfig, event: dict[str, Any]) -> bytes:
    return json.dumps({"webhook": hook.name, **event}, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value a receiver checks: `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<raw body>`."""
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


async def post(session: aiohttp.ClientSession, hook: WebhookConfig, event: dict[str, Any]) -> str | None:
    """One delivery attempt: None when the endpoint answered 2xx, else what went wrong."""
    body = body_of(hook, event)
    timestamp = int(time.time())  # each attempt anew: a retry after a long backoff is as fresh as the first
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(hook.secret, timestamp, body),
        "X-Taskqueue-Event": str(event.get("event", "")),
        "X-Taskqueue-Delivery": str(event.get("stream_id", "")),
        "User-Agent": "taskqueue-webhooks",
    }
    try:
        timeout = aiohttp.ClientTimeout(total=hook.timeout_s)
        async with session.post(hook.url, data=body, headers=headers, timeout=timeout) as answer:
            await answer.read()
            if 200 <= answer.status < 300:
                return None
            return f"HTTP {answer.status}"
    except TimeoutError:
        return f"no answer within {hook.timeout_s:g}s"
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"


def backoff_s(hook: WebhookConfig, attempt: int) -> float:
    return float(min(hook.backoff_max_s, hook.backoff_base_s * 2 ** max(attempt - 1, 0)))


class Deliveries:
    """The webhook loops of one runner (a reload restarts them with the new configuration)."""

    def __init__(self, broker: Broker, config: Config, consumer: str) -> None:
        self.broker = broker
        self.redis: Any = broker.redis
        self.keys = broker.keys
        self.config = config
        self.consumer = consumer
        self._keep = broker.redis.register_script(scripts.source("webhook_dead"))
        self._read_script = broker.redis.register_script(scripts.source("webhook_read"))
        self._trim_script = broker.redis.register_script(scripts.source("trim_events"))

    async def run(self) -> None:
        if not self.config.webhooks:
            return
        async with aiohttp.ClientSession() as session:
            loops = [asyncio.create_task(self.follow(hook, session)) for hook in self.config.webhooks]
            loops.append(asyncio.create_task(self.trim()))
            try:
                await asyncio.gather(*loops)
            finally:
                for job in loops:
                    job.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    def claim_after_s(self, hook: WebhookConfig) -> float:
        """How long an event may stay pending with another consumer before it is taken over."""
        return 2 * hook.timeout_s + 5.0

    async def follow(self, hook: WebhookConfig, session: aiohttp.ClientSession) -> None:
        stream, group = self.keys.events, group_of(hook)
        created = False
        while True:
            raise_if_cancelled()
            try:
                if not created:
                    await self._create_group(stream, group)
                    created = True
                entries = await self._next(hook, stream, group)
                outage.answered()
                for stream_id, fields in entries:
                    event = eventlog.entry(stream_id, fields)
                    if event is None:  # Redis 6.2: a pending event trimmed away (7 leaves it out of the claim)
                        await self._lost(hook, 1, "a pending event was trimmed before its delivery")
                    elif hook.wants(event):
                        await self._deliver(hook, session, event, stream_id)
                    await self.redis.xack(stream, group, stream_id)
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                if "NOGROUP" in str(exc) or "no such key" in str(exc):
                    created = False  # the stream was deleted: the group comes back with it
                outage.failed(f"delivering webhook '{hook.name}'", exc)
                await asyncio.sleep(1.0)

    async def _create_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _next(self, hook: WebhookConfig, stream: str, group: str) -> list[Any]:
        """What to deliver next: events a dead runner left pending, else the group's next ones (none: wait for one
        without reading it, for every read goes through webhook_read.lua)."""
        entries = await self._claim(hook, stream, group)
        if not entries:
            entries, last = await self._read(hook, stream, group)
            if not entries:
                await self.redis.xread({stream: last}, count=1, block=eventlog.blocking_ms(self.redis, BLOCK_MS))
        return entries

    async def _read(self, hook: WebhookConfig, stream: str, group: str) -> tuple[list[Any], str]:
        """The group's next events, after counting those trimmed before it read them (webhook_read.lua);
        and the id of the last event the group was given (to wait for the next one from)."""
        args = [group, self.consumer, BATCH, f"webhook_lost:{hook.name}"]
        lost, found, last = await self._read_script(keys=[stream, self.keys.stats], args=args)
        if lost:
            self._log_lost(hook, int(lost), "trimmed from the stream before this webhook read them")
        entries = [(stream_id, dict(zip(flat[::2], flat[1::2], strict=True))) for stream_id, flat in found]
        return entries, last.decode() if isinstance(last, bytes) else str(last)

    async def _claim(self, hook: WebhookConfig, stream: str, group: str) -> list[Any]:
        """Events another consumer (a runner that died) was given and has not acknowledged for a while."""
        idle_ms = int(self.claim_after_s(hook) * 1000)
        reply = await self.redis.xautoclaim(stream, group, self.consumer, idle_ms, "0-0", count=BATCH)
        if reply and len(reply) > 2 and reply[2]:  # Redis 7: pending events trimmed away, dropped from the group
            await self._lost(hook, len(reply[2]), "a pending event was trimmed before its delivery")
        return list(reply[1]) if reply else []

    async def _lost(self, hook: WebhookConfig, count: int, why: str) -> None:
        await self.redis.hincrby(self.keys.stats, f"webhook_lost:{hook.name}", count)
        self._log_lost(hook, count, why)

    def _log_lost(self, hook: WebhookConfig, count: int, why: str) -> None:
        bound = self.config.events_cap
        log.error(
            "webhook '%s' lost %d event(s): %s (the events stream keeps at most about %d: events.max_backlog)",
            hook.name,
            count,
            why,
            bound,
            extra={"webhook": hook.name, "lost": count},
        )

    async def trim(self) -> None:
        """Keep the events stream at about `events.max_len`, never past what a webhook still needs."""
        groups = [group_of(hook) for hook in self.config.webhooks]
        args = [self.config.events.max_len, TRIM_BATCH, *groups]
        while True:
            trimmed = 0
            with contextlib.suppress(RedisError):  # an outage: the delivery loops report it
                trimmed, _held = await self._trim_script(keys=[self.keys.events], args=args)
            if trimmed < TRIM_BATCH:
                await asyncio.sleep(TRIM_EVERY_S)

    async def _deliver(
        self, hook: WebhookConfig, session: aiohttp.ClientSession, event: dict[str, Any], stream_id: Any
    ) -> None:
        stats = self.keys.stats
        error: str | None = None
        for attempt in range(1, hook.max_attempts + 1):
            error = await post(session, hook, event)
            if error is None:
                await self.redis.hincrby(stats, f"webhook_delivered:{hook.name}", 1)
                return
            await self.redis.hincrby(stats, f"webhook_failed:{hook.name}", 1)
            fields = {"webhook": hook.name, "task_id": event.get("id"), "event": event.get("event")}
            log.info("webhook delivery failed (attempt %d of %d): %s", attempt, hook.max_attempts, error, extra=fields)
            if attempt < hook.max_attempts:
                await asyncio.sleep(backoff_s(hook, attempt))
                # still ours: reset its idle time, so no other runner takes it over while we retry
                await self.redis.xclaim(self.keys.events, group_of(hook), self.consumer, 0, [stream_id], justid=True)
        await self.keep(hook, event, error or "", hook.max_attempts)

    async def keep(self, hook: WebhookConfig, event: dict[str, Any], error: str, attempts: int) -> None:
        """Keep an event given up on, for `webhooks list|retry`."""
        member = f"{hook.name}|{event.get('stream_id', '')}"
        record = json.dumps(
            {"webhook": hook.name, "event": event, "error": error, "attempts": attempts, "failed_at": time.time()}
        )
        keys = [self.keys.webhooks_dead, self.keys.webhooks_dead_index, self.keys.stats]
        argv = [member, record, int(time.time() * 1000), UNDELIVERABLE_KEPT, f"webhook_undeliverable:{hook.name}"]
        await self._keep(keys=keys, args=argv)
        log.warning(
            "webhook event undeliverable after %d attempts: %s",
            attempts,
            error,
            extra={"webhook": hook.name, "task_id": event.get("id"), "event": event.get("event")},
        )


async def undeliverable(redis: Any, keys: Any) -> list[dict[str, Any]]:
    """The undeliverable events kept, oldest first, each with its `member` (the id `webhooks retry` takes)."""
    members = await redis.zrange(keys.webhooks_dead_index, 0, -1)
    if not members:
        return []
    records = await redis.hmget(keys.webhooks_dead, members)
    found = []
    for member, raw in zip(members, records, strict=True):
        if raw is not None:
            found.append({"member": member.decode(), **json.loads(raw)})
    return found


async def retry(redis: Any, keys: Any, config: Config, members: list[str] | None) -> tuple[int, list[str]]:
    """`webhooks retry`: deliver kept events again, once each, from this process; a delivered one leaves the
    store. Returns (delivered, what still fails: one line each)."""
    hooks = {h.name: h for h in config.webhooks}
    kept = [r for r in await undeliverable(redis, keys) if members is None or r["member"] in members]
    delivered, failures = 0, []
    async with aiohttp.ClientSession() as session:
        for record in kept:
            hook = hooks.get(record["webhook"])
            if hook is None:
                failures.append(f"{record['member']}: webhook '{record['webhook']}' is no longer configured")
                continue
            error = await post(session, hook, record["event"])
            if error is not None:
                failures.append(f"{record['member']}: {error}")
                continue
            delivered += 1
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.webhooks_dead, record["member"])
                pipe.zrem(keys.webhooks_dead_index, record["member"])
                pipe.hincrby(keys.stats, f"webhook_delivered:{hook.name}", 1)
                await pipe.execute()
    return delivered, failures
