"""One Redis outage is one warning per process, a reminder now and then, and one line when it ends."""

from __future__ import annotations

import logging

import pytest
import redis

from taskqueue._loop import RedisOutage

REFUSED = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _outage(clock: Clock) -> RedisOutage:
    return RedisOutage(logging.getLogger("test.outage"), remind_s=30.0, clock=clock)


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.outage"]


def test_an_outage_is_one_warning_then_a_reminder_every_30_s_then_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    outage = _outage(clock)
    for _ in range(75 * 3):  # three loops failing every second for 75 s
        outage.failed("promoting due delayed tasks", REFUSED)
        clock.now += 1 / 3
    outage.answered()
    outage.answered()
    assert _lines(caplog) == [
        (
            "WARNING",
            "Redis unreachable while promoting due delayed tasks (Error 111 connecting to 127.0.0.1:6390. "
            "Connection refused.); retrying, with a reminder every 30 s until it is back",
        ),
        ("WARNING", "Redis still unreachable after 30 s (promoting due delayed tasks: " + str(REFUSED) + ")"),
        ("WARNING", "Redis still unreachable after 60 s (promoting due delayed tasks: " + str(REFUSED) + ")"),
        ("INFO", "Redis reachable again after 75 s"),
    ]


def test_error_replies_are_named_as_such(caplog: pytest.LogCaptureFixture) -> None:
    outage = _outage(Clock())
    outage.failed("settling a task", redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."))
    assert _lines(caplog)[0][1].startswith("Redis answering with errors while settling a task (OOM command")


def test_a_flapping_redis_is_not_a_line_per_flap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    outage = _outage(clock)
    for _ in range(60):  # fails, answers, fails, answers … every second for a minute
        outage.failed("renewing this worker's lease", REFUSED)
        clock.now += 0.5
        outage.answered()
        clock.now += 0.5
    levels = [level for level, _ in _lines(caplog)]
    assert levels == ["WARNING", "INFO", "WARNING", "INFO"]  # one outage announced per 30 s, each with its end


def test_nothing_is_said_while_redis_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outage = _outage(Clock())
    for _ in range(10):
        outage.answered()
    assert _lines(caplog) == []
