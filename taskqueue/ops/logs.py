"""Logging set-up (`--log-level`, `--log-format json|text`) and secret redaction for anything we print."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Fields a task log line carries (passed as `extra=`); both formats show them.
TASK_FIELDS = ("task_id", "task", "queue", "attempt", "duration_ms", "worker")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z+]+://)?(?P<user>[^\s:@/'\"]*):(?P<password>[^\s@/'\"]+)@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&]password=)[^&#\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """Every way a Redis URL carries a password, masked (redis://, rediss://, unix://): `user:secret@` →
    `user:***@`, `:secret@` → `:***@`, `?password=secret` (or `&password=`) → `?password=***`. Passwords never
    reach a log or a message: everything we print of a URL goes through here."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme'] or ''}{m['user']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}***", text)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = " ".join(f"{k}={getattr(record, k)}" for k in TASK_FIELDS if hasattr(record, k))
        line = f"{stamp}.{int(record.msecs):03d}Z {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f" [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "pid": record.process,
        }
        entry.update({k: getattr(record, k) for k in TASK_FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once per process (worker processes call it again after spawn)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
