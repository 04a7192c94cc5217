"""Bad input through the built PEX: whatever a producer pushes onto a queue, every good task runs once, every
bad message is dead-lettered with a reason, no worker restarts and the log stays bounded (issue 12, part B)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import wait_for
from tests.e2e.harness import Runner, RunnerFactory, lpush_cli, runs, store

DECLARED = {"record", "arecord", "recorder", "echo", "order", "always_fails", "retry_once", "reject"}
DECLARED |= {"sleep_sync", "sleep_async", "slow_once", "fire_log", "sleep_long"}
KNOWN_KEYS = ["task", "id", "args", "kwargs", "max_retries", "timeout", "enqueued_at", "attempt"]

# Strings a decoder can hand us: any code point, lone surrogates included (JSON escapes them as \udXXX).
anything_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, anything_text)
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(anything_text, inner, max_size=3), max_leaves=6
)
unknown_task = anything_text.filter(lambda name: name not in DECLARED)
# A declared task with a field that no valid envelope has: never runs, whatever the rest says.
broken_fields = st.sampled_from(
    [
        {"args": "not a list"},
        {"args": {"a": 1}},
        {"kwargs": [1, 2]},
        {"kwargs": 7},
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": "three"},
        {"timeout": -2},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"attempt": 10**30},
        {"enqueued_at": float("-inf")},
        {"id": ""},
        {"id": 12},
        {"id": "x" * 201},
        {"surprise": True},
    ]
)


@st.composite
def bad_message(draw: Callable[..., Any]) -> bytes:
    """One message that must be dead-lettered: garbage, a broken envelope, or a well-formed one for a task
    that is not declared (its name possibly a lone surrogate), as JSON or MessagePack, maybe truncated."""
    kind = draw(st.sampled_from(["unknown-task", "broken-field", "random-map", "not-a-map", "bytes"]))
    if kind == "bytes":
        return bytes(draw(st.binary(min_size=0, max_size=40)))
    body: Any
    if kind == "unknown-task":
        body = {"task": draw(unknown_task)}
        for key in draw(st.lists(st.sampled_from(KNOWN_KEYS[1:]), max_size=3, unique=True)):
            body[key] = draw(json_values)
    elif kind == "broken-field":
        body = {"task": draw(st.sampled_from(sorted(DECLARED))), **draw(broken_fields)}
    elif kind == "random-map":
        body = draw(st.dictionaries(st.sampled_from([*KNOWN_KEYS, "zz"]) | anything_text, json_values, max_size=4))
        if isinstance(body.get("task"), str) and body["task"] in DECLARED:
            body["task"] = body["task"] + "?"  # keep it bad: a declared name with valid fields could run
    else:
        body = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    if draw(st.booleans()):
        raw = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \udXXX escapes
    else:
        try:
            raw = msgpack.packb(_for_msgpack(body), use_bin_type=True)
        except (OverflowError, ValueError, TypeError):
            raw = json.dumps(body).encode()
    if draw(st.integers(0, 4)) == 0 and len(raw) > 1:
        raw = raw[: draw(st.integers(1, len(raw) - 1))]  # a proper prefix of a map never parses as one
    return raw


def _for_msgpack(value: Any) -> Any:
    """JSON-ish values in MessagePack (a lone surrogate cannot be UTF-8: such a message goes as JSON)."""
    if isinstance(value, str):
        value.encode("utf-8")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return value
    if isinstance(value, list):
        return [_for_msgpack(v) for v in value]
    if isinstance(value, dict):
        return {_for_msgpack(k): _for_msgpack(v) for k, v in value.items()}
    return value


def _dead_total(db: Any) -> int:
    return sum(int(v) for k, v in db.hgetall("tq:stats").items() if k.startswith(b"dead:"))


@pytest.fixture
def fuzz_runner(make_runner: RunnerFactory, redis_url: str) -> Runner:
    return make_runner(redis_url, workers=2, slots=5).start(expect_workers=2)


def test_a_lone_surrogate_task_name_is_dead_lettered_at_once(fuzz_runner: Runner, redis_url: str) -> None:
    port = int(urlparse(redis_url).port or 6379)
    pids = fuzz_runner.worker_pids()
    good = [json.dumps({"task": "record", "args": [n]}).encode() for n in range(100)]
    lpush_cli(port, "tq:queue:default", [b'{"task": "\\ud800"}'])
    store(redis_url).lpush("tq:queue:default", *good)
    db = store(redis_url)
    wait_for(lambda: len(runs(redis_url)) == 100, timeout=30, what="the 100 good tasks")
    wait_for(lambda: db.zcard("tq:dead:index") == 1, timeout=10, what="the surrogate message dead-lettered")
    record = msgpack.unpackb(db.hget("tq:dead", db.zrange("tq:dead:index", 0, 0)[0]), raw=False)
    assert "lone UTF-16 surrogate" in record["error"]
    assert record["message"] == b'{"task": "\\ud800"}'  # the raw bytes, kept
    assert runs(redis_url) == {n: 1 for n in range(100)}
    assert fuzz_runner.worker_pids() == pids
    handed_back = [line for line in fuzz_runner.logs() if "bookkeeping" in str(line.get("msg"))]
    assert handed_back == []


SERIAL = itertools.count()


def test_fuzzed_bad_messages_never_stall_good_ones(fuzz_runner: Runner, redis_url: str) -> None:
    """Twenty examples of 50 fuzzed bad messages, each with 25 good tasks interleaved, through one runner:
    1,000 bad among 500 good in all. Each example: every good one ran once, every bad one dead-lettered."""
    db = store(redis_url)
    pids = fuzz_runner.worker_pids()
    totals = {"bad": 0, "good": 0}

    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(st.lists(bad_message(), min_size=50, max_size=50))
    def example(bad: list[bytes]) -> None:
        dead_before = _dead_total(db)
        first = next(SERIAL) * 1000
        good = [json.dumps({"task": "record", "args": [first + n]}).encode() for n in range(25)]
        mixed = [m for pair in itertools.zip_longest(bad, good) for m in pair if m is not None]
        db.lpush("tq:queue:default", *mixed)
        wait_for(
            lambda: _dead_total(db) >= dead_before + len(bad) and db.llen("tq:queue:default") == 0,
            timeout=60,
            what=f"{len(bad)} bad messages dead-lettered",
        )
        wait_for(lambda: all(first + n in runs(redis_url) for n in range(25)), timeout=30, what="the good tasks")
        done = runs(redis_url)
        assert [done[first + n] for n in range(25)] == [1] * 25
        assert _dead_total(db) == dead_before + len(bad)
        totals["bad"] += len(bad)
        totals["good"] += len(good)

    example()
    assert totals["bad"] >= 1000 and totals["good"] >= 500
    assert fuzz_runner.alive() and fuzz_runner.worker_pids() == pids  # no worker restarted
    wait_for(lambda: all(db.hlen(k) == 0 for k in db.keys("tq:inflight:*")), timeout=10, what="nothing in flight")
    lines = fuzz_runner.logs()
    assert len(lines) <= 2 * totals["bad"] + 100, f"{len(lines)} log lines for {totals['bad']} bad messages"
    assert not [line for line in lines if "bookkeeping" in str(line.get("msg"))]
