"""Where is task X, and what is it doing? (SPEC §11 `status`), cancelling it, and which of a workflow's steps
run (SPEC §10). Client-safe (redis + msgpack).

Nothing on the hot path records a task's whereabouts: the answer is looked up where the task can be, in this
order, each a few commands: its result, the dead-letter store, the cancelled set, the in-flight hashes of the
live workers, the delayed set, the limits' waiting lists, then the ready lists (read in pages, from the end
workers take from). A task moving between two of them while we look may be missed; the lookup then looks once
more. The logic is written once, as generators that yield Redis commands (a list of commands = one pipeline;
`("SCRIPT", name, keys, args)` calls lua/<name>.lua) and receive the replies; `run` and `arun` drive them on
a sync or an asyncio client, with the client's registered scripts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import msgpack

from taskqueue import canvas, envelope
from taskqueue.store.keys import Keys, split_member

Command = tuple[Any, ...]
Lookup = Generator[list[Command], list[Any], Any]

CANCELLED_KEPT = 100_000  # ids in the cancelled set, and for how long (every worker keeps a copy in memory)
CANCELLED_FOR_S = 7 * 86400
PAGE = 1000  # ready-list entries read per command
READY_SCANNED = 200_000  # entries of each ready list looked at, at most
PROGRESS_TTL_S = 86400
MAX_PROGRESS_MESSAGE = 1000
SHAPE = {"task": None, "queue": None, "attempt": None, "progress": None, "waiting": None, "result": None}
FINISHED = {"ok": "succeeded", "dead": "failed", "cancelled": "cancelled"}


TASK_CANCELLED_BEFORE = 2  # what cancel.lua answers for an id already in the cancelled set
WORKFLOW_CANCELLED_BEFORE = -2  # and cancel_workflow.lua for a workflow cancelled before
SCRIPTS = ("cancel", "cancel_workflow")  # what a client registers for these lookups


def _split(batch: list[Command]) -> tuple[list[Command], list[Command]]:
    """The plain commands of a batch (one pipeline) and its script calls.
    Scripts are called on the client, not queued on the pipeline: redis-py's Cluster pipeline refuses EVALSHA
    (and a script's keys are one slot anyway: it goes to the node that holds them)."""
    plain = [command for command in batch if command[0] != "SCRIPT"]
    called = [command for command in batch if command[0] == "SCRIPT"]
    return plain, called


def _merge(batch: list[Command], plain: list[Any], called: list[Any]) -> list[Any]:
    """The replies in the batch's order."""
    replies, scripted = iter(plain), iter(called)
    return [next(scripted) if command[0] == "SCRIPT" else next(replies) for command in batch]


def run(lookup: Lookup, client: Any, scripts: Mapping[str, Any]) -> Any:
    """Drive a lookup on a redis-py client (sync; a plain Redis or a Cluster)."""
    try:
        batch = next(lookup)
        while True:
            plain, called = _split(batch)
            pipe = client.pipeline(transaction=False)
            for command in plain:
                pipe.execute_command(*command)
            replies = pipe.execute() if plain else []
            done = [scripts[name](keys=list(keys), args=list(args)) for _, name, keys, args in called]
            batch = lookup.send(_merge(batch, replies, done))
    except StopIteration as finished:
        return finished.value


async def arun(lookup: Lookup, client: Any, scripts: Mapping[str, Any]) -> Any:
    """Drive a lookup on a redis.asyncio client (a plain Redis or a Cluster)."""
    try:
        batch = next(lookup)
        while True:
            plain, called = _split(batch)
            replies: list[Any] = []
            if plain:
                async with client.pipeline(transaction=False) as pipe:
                    for command in plain:
                        pipe.execute_command(*command)
                    replies = await pipe.execute()
            done = [await scripts[name](keys=list(keys), args=list(args)) for _, name, keys, args in called]
            batch = lookup.send(_merge(batch, replies, done))
    except StopIteration as finished:
        return finished.value


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _scored(pairs: Any) -> list[tuple[bytes, float]]:
    """(member, score) of a ZSCAN page: redis-py gives pairs, Redis a flat list."""
    if pairs and isinstance(pairs[0], tuple | list):
        return [(m, float(score)) for m, score in pairs]
    return [(m, float(score)) for m, score in zip(pairs[::2], pairs[1::2], strict=True)]


def _progress(fields: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    if not fields:
        return None
    found = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
    return {"fraction": float(found.get("fraction", 0)), "message": found.get("message", ""), "at": float(found["at"])}


def _is(raw: bytes, task_id: str) -> envelope.Envelope | None:
    """The message, if it is task `task_id`'s (the id's bytes were found in it: now make sure)."""
    try:
        env = envelope.decode(raw, 1 << 62)
    except envelope.InvalidEnvelope:
        found_id, _ = envelope.identify(raw)
        return envelope.Envelope("(invalid)", task_id) if found_id == task_id else None
    return env if env.id == task_id else None


def _seen(env: envelope.Envelope, state: str, queue: str, **more: Any) -> dict[str, Any]:
    return {"id": env.id, "task": env.task, "state": state, "queue": queue, "attempt": env.attempt + 1, **more}


def status(keys: Keys, task_id: str) -> Lookup:
    """The status of one task (see Client.status), or None when it is unknown."""
    for look in range(2):
        found = yield from _status_once(keys, task_id)
        if found is not None:
            return {**SHAPE, **found}  # every answer has the same keys, None where they do not apply
        if look == 1:
            return None
    return None


def _status_once(keys: Keys, task_id: str) -> Lookup:
    result, dead, cancelled, progress, workers, queues = yield [
        ("GET", keys.result(task_id)),
        ("HGET", keys.dead, task_id),
        ("ZSCORE", keys.cancelled, task_id),
        ("HGETALL", keys.progress(task_id)),
        ("ZRANGEBYSCORE", keys.workers, int(time.time() * 1000), "+inf"),
        ("HKEYS", keys.queues),
    ]
    shown_progress = _progress(progress)
    finished = _finished(task_id, result, dead, cancelled, shown_progress)
    if finished is not None:
        return finished
    names = sorted(_text(q) for q in queues)
    found = yield from _running(keys, task_id, [_text(w) for w in workers], names, shown_progress)
    found = found or (yield from _delayed(keys, task_id))
    found = found or (yield from _waiting(keys, task_id))
    return found or (yield from _queued(keys, task_id, names))


def _finished(
    task_id: str, result: bytes | None, dead: bytes | None, cancelled: Any, progress: dict[str, Any] | None
) -> dict[str, Any] | None:
    if result is not None:
        body = msgpack.unpackb(result, raw=False)
        state = FINISHED.get(str(body.get("status")), "failed")
        out = {"id": task_id, "state": state, "finished_at": body.get("finished_at"), "progress": progress}
        if body.get("task"):
            out["task"] = body["task"]
        if state in ("failed", "cancelled"):
            out["error"] = body.get("error")
        else:
            out["result"] = body.get("value")  # what result() returns
        return out
    if dead is not None:
        record = msgpack.unpackb(dead, raw=False)
        return {
            "id": task_id,
            "task": record.get("task"),
            "state": "failed",
            "queue": record.get("queue"),
            "attempt": record.get("attempts"),
            "error": record.get("error"),
            "finished_at": record.get("failed_at"),
            "progress": progress,
        }
    if cancelled is not None:
        return {"id": task_id, "state": "cancelled", "cancelled_at": float(cancelled) / 1000}
    return None


def _running(
    keys: Keys, task_id: str, workers: list[str], queues: list[str], progress: dict[str, Any] | None
) -> Lookup:
    held = yield from _held(keys, workers, queues, task_id.encode(), {task_id})
    if task_id not in held:
        return None
    worker, queue, env = held[task_id]
    return _seen(env, "running", queue, worker=worker, progress=progress)


def _held(keys: Keys, workers: list[str], queues: list[str], needle: bytes, wanted: set[str]) -> Lookup:
    """Which live workers hold the tasks `wanted` (ids whose bytes hold `needle`): {id: (worker, queue, envelope)}.
    In a worker's in-flight hash (as many entries as it has slots), or just taken by an idle worker's watcher and
    not yet in its in-flight hash (its claim lists: a moment, found if still there). One pipeline, or two."""
    found: dict[str, tuple[str, str, envelope.Envelope]] = {}
    if not workers:
        return found
    held = yield [("HVALS", keys.inflight(worker)) for worker in workers]
    members = zip(workers, held, strict=True)
    _pick(found, wanted, [(worker, *split_member(m)) for worker, ms in members for m in ms if needle in m])
    if len(found) < len(wanted):
        claimed = [(worker, queue) for worker in workers for queue in queues]
        lists = yield [("LRANGE", keys.claim(worker, queue), 0, -1) for worker, queue in claimed]
        raws = zip(claimed, lists, strict=True)
        _pick(found, wanted, [(worker, queue, raw) for (worker, queue), rs in raws for raw in rs if needle in raw])
    return found


def _pick(
    found: dict[str, tuple[str, str, envelope.Envelope]], wanted: set[str], entries: list[tuple[str, str, bytes]]
) -> None:
    for worker, queue, raw in entries:
        task_id, _ = envelope.identify(raw)
        if task_id in wanted and task_id not in found and (env := _is(raw, task_id)) is not None:
            found[task_id] = (worker, queue, env)


def workflow(keys: Keys, workflow_id: str) -> Lookup:
    """Client.workflow(): canvas.view of the workflow's hash, where a queued step that a live worker holds is
    `running`. Nothing on the hot path records a step's start: its worker's in-flight hash says it."""
    fields, workers, queues = yield [
        ("HGETALL", keys.workflow(workflow_id)),
        ("ZRANGEBYSCORE", keys.workers, int(time.time() * 1000), "+inf"),
        ("HKEYS", keys.queues),
    ]
    shown = canvas.view(workflow_id, fields)
    queued = {s["id"]: s for s in shown["steps"] if s["state"] == "queued"} if shown else {}
    if queued:
        names = sorted(_text(q) for q in queues)
        needle = f"{workflow_id}.".encode()
        held = yield from _held(keys, [_text(w) for w in workers], names, needle, set(queued))
        for step_id in held:
            queued[step_id]["state"] = "running"
    return shown


def _delayed(keys: Keys, task_id: str) -> Lookup:
    """In the delayed set: a delay, a retry's backoff, or a task holding back (RateLimited)."""
    cursor: Any = 0
    for _ in range(100_000):
        pattern = f"*{_glob(task_id)}*"
        ((cursor, pairs),) = yield [("ZSCAN", keys.delayed, cursor, "MATCH", pattern, "COUNT", 1000)]
        for member, score in _scored(pairs):
            queue, raw = split_member(member)
            if (env := _is(raw, task_id)) is not None:
                return _seen(env, "delayed", queue, due_at=float(score) / 1000)
        if int(cursor) == 0:
            break
    return None


def _waiting(keys: Keys, task_id: str) -> Lookup:
    """In the waiting list of a rate or concurrency limit: which one, and when the timer looks again."""
    (specs,) = yield [("HGETALL", keys.limits_spec)]
    needle = task_id.encode()
    for waiting, spec in specs.items():
        (members, look_at) = yield [("LRANGE", waiting, 0, -1), ("ZSCORE", keys.limits_waiting, waiting)]
        for member in members:
            if needle not in member:
                continue
            queue, raw = split_member(member)
            if (env := _is(raw, task_id)) is not None:
                why = json.loads(spec).get("why", "a limit")
                until = float(look_at) / 1000 if look_at is not None else None
                return _seen(env, "waiting", queue, waiting={"limit": why, "until": until})
    return None


def _queued(keys: Keys, task_id: str, queues: list[str]) -> Lookup:
    """In a ready list, read in pages from the end workers take from (the next to run first)."""
    needle = task_id.encode()
    for queue in queues:
        for start in range(0, READY_SCANNED, PAGE):
            (page,) = yield [("LRANGE", keys.queue(queue), -start - PAGE, -start - 1)]
            for raw in reversed(page):
                if needle in raw and (env := _is(raw, task_id)) is not None:
                    return _seen(env, "queued", queue)
            if len(page) < PAGE:
                break
    return None


def cancel(keys: Keys, task_id: str, result_ttl_s: Callable[[str], float]) -> Lookup:
    """Cancel one task or workflow: "cancelled" (it will not start, or it stopped), "cancelling" (it is
    running: its worker stops it), "already_cancelled" (it was cancelled before: nothing changes), or
    "not_found" (unknown, or finished already). An id found nowhere leaves no trace: ids come from producers,
    and a cancel must not make `status` report a task that never existed."""
    if task_id.startswith("wf-"):
        record = _record("cancelled", "workflow cancelled")
        now_ms = int(time.time() * 1000)
        oldest = now_ms - CANCELLED_FOR_S * 1000
        wf_keys = (keys.workflow(task_id), keys.result(task_id), keys.cancelled, keys.stats)
        wf_args = (task_id, now_ms, CANCELLED_KEPT, oldest, keys.cancel_channel, record)
        (count,) = yield [("SCRIPT", "cancel_workflow", wf_keys, wf_args)]
        if int(count) == WORKFLOW_CANCELLED_BEFORE:
            return "already_cancelled"
        if int(count) >= 0:
            return "cancelled"
    found = yield from status(keys, task_id)
    if found is None or found["state"] in ("succeeded", "failed"):
        return "not_found"
    if found["state"] == "cancelled":
        return "already_cancelled"
    ttl = int(result_ttl_s(found.get("task") or "") * 1000)
    now_ms = int(time.time() * 1000)
    args = (task_id, now_ms, CANCELLED_KEPT, now_ms - CANCELLED_FOR_S * 1000, keys.cancel_channel, max(ttl, 0) or "")
    cancel_keys = (keys.cancelled, keys.result(task_id), keys.dead)
    (done,) = yield [("SCRIPT", "cancel", cancel_keys, (*args, _record("cancelled", "cancelled", found.get("task"))))]
    if int(done) == 0:
        return "not_found"  # it finished while we looked
    if int(done) == TASK_CANCELLED_BEFORE:
        return "already_cancelled"  # another cancel came first
    return "cancelling" if found["state"] == "running" else "cancelled"


def _record(status: str, error: str, task: str | None = None) -> bytes:
    body = {"status": status, "value": None, "error": error, "finished_at": time.time(), "task": task}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def jsonable(value: Any) -> Any:
    """A task's result as JSON can carry it (the CLI's `show --json`, HTTP): bytes as text (undecodable bytes
    as `\\xNN`), map keys as strings; what MessagePack decodes to is otherwise JSON already."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def progress_fields(fraction: float, message: str) -> dict[str, str]:
    """What current_task().progress() stores; raises ValueError for a fraction outside 0..1."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress fraction must be within 0 .. 1, got {fraction!r}")
    shown = envelope.printable(str(message))[:MAX_PROGRESS_MESSAGE]
    return {"fraction": repr(float(fraction)), "message": shown, "at": repr(time.time())}
