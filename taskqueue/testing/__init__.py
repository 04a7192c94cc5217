"""Testing your own tasks with the real thing (SPEC §12): `TaskQueueTest` runs your YAML on a private
redis-server with taskqueue's own runner and worker processes, so envelope encoding, retries, timeouts,
workflows and limits behave as in production. The pytest fixture `taskqueue_test` (pytest_plugin.py) yields one
per test. Nothing a producer imports (taskqueue.client) imports this package."""

from taskqueue.store.pending import Pending
from taskqueue.testing.errors import DrainTimeout, TaskQueueTestError, TaskQueueTestFailure
from taskqueue.testing.harness import DeadTask, TaskQueueTest

__all__ = ["DeadTask", "DrainTimeout", "Pending", "TaskQueueTest", "TaskQueueTestError", "TaskQueueTestFailure"]
