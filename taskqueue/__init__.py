"""taskqueue: a declarative, YAML-configured, Redis-backed job runner.

Kept light on purpose: `from taskqueue.client import Client` must not pull in the runner's dependencies.
"""

from taskqueue.context import TaskContext, current_task
from taskqueue.errors import QueueFull, RateLimited, Reject, Retry, TaskCancelled, TaskQueueError, UnknownTask

__version__ = "0.1.0"

__all__ = [
    "QueueFull",
    "RateLimited",
    "Reject",
    "Retry",
    "TaskCancelled",
    "TaskContext",
    "TaskQueueError",
    "UnknownTask",
    "__version__",
    "current_task",
]
