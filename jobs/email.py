"""Example tasks: a sync function, an async function, and retry policy in action."""

from __future__ import annotations

import asyncio
import logging

import taskqueue

log = logging.getLogger(__name__)


def send_email(to: str, subject: str = "Hello", body: str = "") -> dict[str, str]:
    """A plain sync task: runs in a worker thread, its return value is stored as the result."""
    if "@" not in to:
        raise taskqueue.Reject(f"not an e-mail address: {to!r}")  # retrying cannot fix bad input
    task = taskqueue.current_task()
    log.debug("sending e-mail to %s (attempt %d)", to, task.attempt)
    return {"to": to, "subject": subject, "status": "sent"}


async def notify(channel: str, message: str) -> str:
    """An async task: runs on the worker's event loop, next to the others."""
    await asyncio.sleep(0.01)  # stands in for an HTTP call
    return f"{channel}: {message}"


def flaky(fail_times: int = 1) -> int:
    """Fails its first `fail_times` attempts, then succeeds: shows retries with backoff."""
    attempt = taskqueue.current_task().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"transient failure on attempt {attempt}")
    return attempt
