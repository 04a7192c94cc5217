"""Secret redaction (ops/logs.redact): every form of a Redis URL's password is masked wherever it is printed."""

from __future__ import annotations

import logging

import pytest

from taskqueue.ops import logs


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("cannot reach Redis at redis://user:s3cret@db:6379/0", "cannot reach Redis at redis://user:***@db:6379/0"),
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://default:s3cret@db:6380", "rediss://default:***@db:6380"),
        ("redis://db:6379/0?password=s3cret", "redis://db:6379/0?password=***"),
        (
            "rediss://db:6380/0?ssl_cert_reqs=none&password=s3cret&db=2",
            "rediss://db:6380/0?ssl_cert_reqs=none&password=***&db=2",
        ),
        ("redis://db/0?PASSWORD=s3cret#x", "redis://db/0?PASSWORD=***#x"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("unix://user:s3cret@/run/redis.sock?db=0", "unix://user:***@/run/redis.sock?db=0"),
        ("'redis://u:s3cret@h?password=s3cret'", "'redis://u:***@h?password=***'"),
        ("redis://db:6379/0 and no password", "redis://db:6379/0 and no password"),
    ],
)
def test_every_form_of_a_redis_password_is_masked(text: str, masked: str) -> None:
    assert logs.redact(text) == masked


@pytest.mark.parametrize("formatter", [logs._TextFormatter(), logs._JsonFormatter()], ids=["text", "json"])
def test_log_lines_are_redacted_in_both_formats(formatter: logging.Formatter) -> None:
    record = logging.LogRecord(
        "taskqueue", logging.WARNING, __file__, 1, "lost %s", ("redis://db/0?password=s3cret",), None
    )
    line = formatter.format(record)
    assert "s3cret" not in line and "redis://db/0?password=***" in line
