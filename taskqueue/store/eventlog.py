"""Reading the lifecycle events stream `{p}:events` (SPEC §13), for `AsyncClient.events()` and `events tail`.
Client-safe (redis only). Writing happens only inside the scripts that change a task's state (see
features/events.py for the fields)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from redis.exceptions import ResponseError

EVENT_NAMES = ("enqueued", "started", "succeeded", "retried", "failed", "cancelled", "workflow_finished")
INTEGER_FIELDS = frozenset({"attempt", "at"})


def entry(stream_id: bytes | str, fields: Mapping[bytes | str, bytes | str] | None) -> dict[str, Any] | None:
    """One stream entry as a dict: its fields as text (`attempt` and `at` as integers) and `stream_id`, the
    entry's id in the stream; None for an entry trimmed away meanwhile (a pending one past max_len)."""
    if fields is None:
        return None
    body: dict[str, Any] = {}
    for key, value in fields.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        body[name] = int(text) if name in INTEGER_FIELDS and text.lstrip("-").isdigit() else text
    body["stream_id"] = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return body


def blocking_ms(redis: Any, wanted_ms: int) -> int:
    """How long a blocking read (XREAD/XREADGROUP BLOCK) may wait on this client: under half its command
    timeout (the socket timeout), or the read would fail as a timeout when nothing comes."""
    pool = getattr(redis, "connection_pool", None)
    timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout") if pool is not None else None
    if not timeout:
        return wanted_ms if pool is not None else min(wanted_ms, 1000)
    return max(1, min(wanted_ms, int(float(timeout) * 500)))


async def follow_group(
    redis: Any, stream: str, group: str, consumer: str, *, start: str = "0", batch: int = 100, block_ms: int = 5000
) -> AsyncIterator[dict[str, Any]]:
    """The events of consumer group `group` (created at `start`, with the stream if need be), oldest first:
    first what this consumer was given and had not acknowledged (a crash before the ack), then new ones.
    An event is acknowledged (XACK) when the next one is asked for, so one whose handling did not finish is
    delivered again; several consumers of a group share the events."""
    try:
        await redis.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    cursor = "0"  # this consumer's pending entries first
    block_ms = blocking_ms(redis, block_ms)
    while True:
        reply = await redis.xreadgroup(
            group, consumer, {stream: cursor}, count=batch, block=None if cursor == "0" else block_ms
        )
        entries = reply[0][1] if reply else []
        if cursor == "0" and not entries:
            cursor = ">"
            continue
        for stream_id, fields in entries:
            found = entry(stream_id, fields)
            if found is not None:
                yield found
            await redis.xack(stream, group, stream_id)


async def backlogs(redis: Any, stream: str) -> dict[str, int | None]:
    """Per consumer group of the stream: the events it holds pending or has not read yet (None where Redis
    cannot tell: before 7.0, or a read counter it lost track of)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no stream yet
        return {}
    found: dict[str, int | None] = {}
    for group in groups:
        name = group["name"].decode() if isinstance(group["name"], bytes) else str(group["name"])
        lag = group.get("lag")
        found[name] = None if lag is None else int(lag) + int(group["pending"])
    return found
