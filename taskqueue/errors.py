"""The exception hierarchy: what users catch, what tasks raise, and what the CLI turns into exit codes."""

from __future__ import annotations

from collections.abc import Sequence


class TaskQueueError(Exception):
    """Base of every error taskqueue raises on purpose; the CLI prints it as one line."""

    exit_code = 1


class ConfigError(TaskQueueError):
    """The configuration is invalid; carries every problem found, each already located."""

    exit_code = 2

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class UsageError(TaskQueueError):
    """The command line is wrong."""

    exit_code = 2


class Interrupted(TaskQueueError):
    """Ctrl-C while a command waited on something it names (the CLI prints that one line and exits 130)."""

    exit_code = 130


class BrokerUnavailable(TaskQueueError):
    """Redis cannot be reached (or answered with something unusable)."""


class QueueFull(TaskQueueError):
    """Enqueue refused: the queue already holds `max_length` ready tasks."""


class UnknownTask(TaskQueueError):
    """The task name is not declared in the running deployment's YAML."""


class PayloadTooLarge(TaskQueueError):
    """The encoded message is larger than `limits.max_payload_size`."""


class ResultTimeout(TaskQueueError):
    """`Client.result()` gave up waiting."""


class TaskFailed(TaskQueueError):
    """`Client.result()` of a task that ended in the dead-letter list."""


class TaskCancelled(TaskFailed):
    """`Client.result()` of a task that was cancelled."""


class RateLimited(Exception):
    """Raised by a task that was told to slow down (e.g. a partner's HTTP 429): it goes back to wait for
    `retry_after` seconds, no attempt counted, no slot kept."""

    def __init__(self, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limited: retry after {retry_after:g}s")


class Retry(Exception):
    """Raised by a task to be run again after `delay` seconds (or per its backoff policy when None)."""

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        self.delay = delay
        self.reason = reason
        super().__init__(reason)


class Reject(Exception):
    """Raised by a task to dead-letter itself at once, without retries."""

    def __init__(self, reason: str = "rejected") -> None:
        self.reason = reason
        super().__init__(reason)
