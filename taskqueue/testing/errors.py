"""What taskqueue.testing raises: a setup problem (one line saying what to do), or a test failure."""

from __future__ import annotations

from taskqueue.errors import TaskQueueError


class TaskQueueTestError(TaskQueueError):
    """The test runner could not be set up or stopped working: no redis-server, an invalid YAML, a runner
    that exited. The message says what to do."""


class TaskQueueTestFailure(AssertionError):
    """A task the test ran failed: the message names each dead-lettered task with its id and traceback."""


class DrainTimeout(TaskQueueTestFailure):
    """drain() gave up: the message says what was still queued, delayed, waiting or running."""
