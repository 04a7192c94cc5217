"""The message ("envelope"): JSON or MessagePack map in, MessagePack out. Client-safe (msgpack only).

Keys: `task` (required), `id`, `args`, `kwargs`, `max_retries`, `timeout`, `enqueued_at` (SPEC §5), and
`attempt`, which taskqueue itself sets on retries (attempts already made), `unique`, the unique key a
task holds (SPEC §11; set by the producer, kept across retries and re-deliveries), and `trace`, the W3C
traceparent of the span the enqueue was made in (SPEC §12; only with OpenTelemetry in use: tracing.py).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

_KNOWN = frozenset(
    {"task", "id", "args", "kwargs", "max_retries", "timeout", "enqueued_at", "attempt", "unique", "trace"}
)
_CORE = frozenset({"task", "id", "args", "kwargs", "enqueued_at"})  # what producers send
_NO_KWARGS: dict[str, Any] = {}  # shared, never mutated: tasks get it unpacked (**kwargs)
_packer = msgpack.Packer(use_bin_type=True)
MAX_NAME = 200  # characters of a task name or an id
MAX_COUNT = 1_000_000  # max_retries, attempt
MAX_TRACE = 128  # characters of `trace` (tracing.MAX_TRACEPARENT)


def _reset_ids() -> None:
    global _id_prefix, _id_counter  # noqa: PLW0603 - per-process id state, renewed in a forked child
    _id_prefix = os.urandom(8).hex()
    _id_counter = itertools.count()


_id_prefix = ""
_id_counter = itertools.count()
_reset_ids()
os.register_at_fork(after_in_child=_reset_ids)


def new_id() -> str:
    """A task id unique across processes and hosts: 64 random bits per process, then a counter
    (several times cheaper than uuid4 on the enqueue hot path)."""
    return f"{_id_prefix}{next(_id_counter):x}"


def pack(
    task: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    enqueued_at: float,
    unique: str | None = None,
    trace: str | None = None,
) -> bytes:
    """The message a producer sends (what `Envelope.encode` gives, built without the dataclass)."""
    body: dict[str, Any] = {"id": task_id, "task": task, "enqueued_at": enqueued_at}
    if args:
        body["args"] = list(args)
    if kwargs:
        body["kwargs"] = kwargs if isinstance(kwargs, dict) else dict(kwargs)
    if unique is not None:
        body["unique"] = unique
    if trace is not None:
        body["trace"] = trace
    packed: bytes = _packer.pack(body)
    return packed


class InvalidEnvelope(ValueError):
    """The bytes are not a valid message; the reason goes to the dead-letter record."""


@dataclass(slots=True)
class Envelope:
    task: str
    id: str = field(default_factory=new_id)
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_retries: int | None = None
    timeout: float | None = None
    enqueued_at: float | None = None
    attempt: int = 0  # attempts already made before this delivery
    unique: str | None = None  # the unique key it holds (Keys.unique), released when it finishes
    trace: str | None = None  # the enqueue's W3C traceparent: the worker runs it in a span continuing it

    def encode(self) -> bytes:
        body: dict[str, Any] = {"id": self.id, "task": self.task}
        if self.args:
            body["args"] = list(self.args)
        if self.kwargs:
            body["kwargs"] = dict(self.kwargs)
        for key in ("max_retries", "timeout", "enqueued_at"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.attempt:
            body["attempt"] = self.attempt
        if self.unique is not None:
            body["unique"] = self.unique
        if self.trace is not None:
            body["trace"] = self.trace
        packed: bytes = _packer.pack(body)
        return packed


def new(
    task: str, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None, task_id: str | None = None
) -> Envelope:
    return Envelope(
        task=task,
        id=task_id or new_id(),
        args=tuple(args),
        kwargs=kwargs or {},
        enqueued_at=round(time.time(), 6),
    )


def decode(raw: bytes, max_bytes: int) -> Envelope:
    """Parse and check one message; raises InvalidEnvelope with a reason a user can act on."""
    if len(raw) > max_bytes:
        raise InvalidEnvelope(f"message of {len(raw)} bytes exceeds limits.max_payload_size ({max_bytes})")
    body = _parse(raw)
    if not isinstance(body, dict):
        raise InvalidEnvelope(f"expected a JSON/MessagePack object, got {type(body).__name__}")
    if not all(isinstance(k, str) for k in body) or not _KNOWN.issuperset(body):
        unknown = sorted(_shown(k) for k in body if k not in _KNOWN)
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidEnvelope(
            f"unknown envelope key(s) {', '.join(unknown[:5])}{more} (allowed: {', '.join(sorted(_KNOWN))})"
        )
    task, task_id = body.get("task"), body.get("id")
    if not isinstance(task, str) or not task:
        raise InvalidEnvelope("missing 'task' (a task name declared in the YAML)")
    if len(task) > MAX_NAME:
        raise InvalidEnvelope(f"'task' must be a task name of at most {MAX_NAME} characters")
    if task_id is not None and (not isinstance(task_id, str) or not task_id or len(task_id) > MAX_NAME):
        raise InvalidEnvelope(f"'id' must be a non-empty string of at most {MAX_NAME} characters")
    args, kwargs = body.get("args", ()), body.get("kwargs", _NO_KWARGS)
    if not isinstance(args, list | tuple):
        raise InvalidEnvelope(f"'args' must be an array, got {type(args).__name__}")
    if not isinstance(kwargs, dict) or (kwargs and not all(isinstance(k, str) for k in kwargs)):
        raise InvalidEnvelope("'kwargs' must be an object with string keys")
    env = Envelope(task, task_id or new_id(), tuple(args), kwargs)
    if not _CORE.issuperset(body):  # max_retries, timeout, attempt, unique or trace: absent from most messages
        env.max_retries = _number(body, "max_retries", int)
        env.timeout = _number(body, "timeout", float)
        env.enqueued_at = _number(body, "enqueued_at", float)
        env.attempt = _number(body, "attempt", int) or 0
        unique = body.get("unique")
        if unique is not None and (not isinstance(unique, str) or not 0 < len(unique) <= 3 * MAX_NAME):
            raise InvalidEnvelope(f"'unique' must be a non-empty string of at most {3 * MAX_NAME} characters")
        env.unique = unique
        trace = body.get("trace")
        if trace is not None and (not isinstance(trace, str) or not 0 < len(trace) <= MAX_TRACE):
            raise InvalidEnvelope(f"'trace' must be a W3C traceparent string of at most {MAX_TRACE} characters")
        env.trace = trace
    else:
        env.enqueued_at = _number(body, "enqueued_at", float)
    return env


def _parse(raw: bytes) -> Any:
    if raw[:1] in (b"{", b"[", b" ", b"\n", b"\t", b"\r", b'"'):
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidEnvelope(f"invalid UTF-8 at byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise InvalidEnvelope(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise InvalidEnvelope("invalid JSON: nested too deeply") from None
        # JSON can say what MessagePack (and so a retry, a result, a dead-letter record) cannot: a lone
        # surrogate escape ("\ud800", from JavaScript's JSON.stringify of a broken string), integers
        # beyond 64 bits, nesting deeper than MessagePack's limit. Such a message is refused here, once.
        try:
            _packer.pack(body)
        except UnicodeEncodeError:
            raise InvalidEnvelope("invalid JSON string: a lone UTF-16 surrogate escape (not valid Unicode)") from None
        except OverflowError:
            raise InvalidEnvelope("integer beyond 64 bits (not representable in MessagePack)") from None
        except (ValueError, TypeError) as exc:
            raise InvalidEnvelope(f"not representable in MessagePack ({type(exc).__name__}: {exc})") from None
        return body
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except UnicodeDecodeError:
        raise InvalidEnvelope("invalid UTF-8 in a MessagePack string") from None
    except Exception as exc:  # any malformed input: ExtraData, FormatError, StackError, unhashable keys...
        raise InvalidEnvelope(f"neither JSON nor MessagePack ({type(exc).__name__})") from None


def _shown(key: object) -> str:
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or not math.isfinite(value):
        raise InvalidEnvelope(f"'{key}' must be a finite non-negative number, got {_shown(value)}")
    if kind is int and (value != int(value) or value > MAX_COUNT):
        raise InvalidEnvelope(f"'{key}' must be a whole number of at most {MAX_COUNT}, got {_shown(value)}")
    return kind(value)


def identify(raw: bytes, limit: int = 64 << 20) -> tuple[str | None, str | None]:
    """(id, task) of a message that failed `decode`, when they can still be read (e.g. one that is only too
    large), so its dead-letter record can be found by the id its producer holds; (None, None) otherwise."""
    if len(raw) > limit:
        return None, None
    try:
        body = _parse(raw)
    except InvalidEnvelope:
        return None, None
    if not isinstance(body, dict):
        return None, None
    task_id, task = body.get("id"), body.get("task")
    ok = [isinstance(v, str) and 0 < len(v) <= MAX_NAME for v in (task_id, task)]
    return (task_id if ok[0] else None), (task if ok[1] else None)


def printable(value: Any) -> Any:
    """A str that UTF-8 can always encode (lone surrogates become `\\udXXX` escapes); other values as they are."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def preview(raw: bytes, limit: int = 2048) -> bytes:
    """What a dead-letter record keeps of an oversized or unparseable message."""
    return raw if len(raw) <= limit else raw[:limit]
