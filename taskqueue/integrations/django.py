"""Django >= 6's task framework (`django.tasks`) on taskqueue: `my_task.enqueue(...)` becomes a taskqueue task,
`get_result(id)` reads taskqueue's result store. Django ships the API but no worker; taskqueue's runner is the
worker (README, "Django").

    TASKS = {
        "default": {
            "BACKEND": "taskqueue.integrations.django.TaskQueueBackend",
            "OPTIONS": {"CONFIG": BASE_DIR / "task-queue.yaml"},  # or REDIS_URL / KEY_PREFIX
        }
    }

The message names the task by its module path (`Task.module_path`, e.g. "myapp.tasks.send"), never by code
to import: the workers run only what the YAML declares under that name (`tasks: {myapp.tasks.send: {path:
"myapp.tasks:send"}}`), and a YAML with `django: {settings: mysite.settings}` sets Django up first. Only this
module (used as a backend) and a YAML with `django:` import Django.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist

from taskqueue.client import Client
from taskqueue.errors import ResultTimeout, TaskFailed, UnknownTask

__all__ = ["TaskQueueBackend"]

OPTIONS = ("CONFIG", "REDIS_URL", "KEY_PREFIX")  # upper or lower case

# taskqueue's states (Client.status) as Django's.
STATUS = {
    "queued": TaskResultStatus.READY,
    "delayed": TaskResultStatus.READY,  # a delay (run_after) or a retry's backoff: it will run again
    "waiting": TaskResultStatus.READY,  # held back by a rate or concurrency limit
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,  # dead-lettered
    "cancelled": TaskResultStatus.FAILED,
}


def _at(seconds: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(float(seconds), dt.UTC) if isinstance(seconds, int | float) else None


def exception_path(error: str, trace: str) -> str:
    """The dotted path of the exception a failure names: the traceback's last line ("myapp.errors.Boom: ...",
    as the traceback module prints it), else the error's "Name: ..." (a builtin); "builtins.Exception" when
    neither says (a timeout, an unknown task)."""
    for text in (trace.strip().rsplit("\n", 1)[-1] if trace.strip() else "", error):
        name = text.split(":", 1)[0].strip()
        if name and ":" in text and all(part.isidentifier() for part in name.split(".")):
            return name if "." in name else f"builtins.{name}"
    return "builtins.Exception"


class TaskQueueBackend(BaseTaskBackend):  # type: ignore[misc]  # django is untyped
    """A `TASKS` backend. OPTIONS: `CONFIG` (the runner's YAML: its redis section, key prefix and queues), or
    `REDIS_URL` and `KEY_PREFIX` (which also override the YAML's)."""

    supports_defer = True  # run_after: a taskqueue delay
    supports_async_task = True  # an `async def` task runs on the worker's event loop
    supports_get_result = True
    supports_priority = False  # taskqueue orders queues, not tasks: use queue_name with a higher-priority queue

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        super().__init__(alias, params)
        options = {str(key).upper(): value for key, value in dict(self.options).items()}
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS['{alias}']['OPTIONS']: unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})"
            )
        config = options.get("CONFIG")
        self.config_path = Path(config) if config else None
        self.redis_url: str | None = options.get("REDIS_URL")
        self.key_prefix: str | None = options.get("KEY_PREFIX")
        self._client: Client | None = None
        self._yaml: Any = None
        self._lock = threading.Lock()
        if "QUEUES" not in params:
            # Django's default allows only "default"; here any queue the YAML declares (taskqueue refuses others)
            self.queues = {DEFAULT_TASK_QUEUE_NAME, *self._queues()}

    def _queues(self) -> list[str]:
        return [queue.name for queue in self._config().queues] if self.config_path else []

    def _config(self) -> Any:
        """The YAML (its tasks are not imported here), read once."""
        if self._yaml is None and self.config_path is not None:
            from taskqueue.config import load
            from taskqueue.errors import ConfigError

            try:
                self._yaml = load(self.config_path, import_tasks=False)
            except ConfigError as exc:
                raise ImproperlyConfigured(f"TASKS['{self.alias}']: {exc}") from None
        return self._yaml

    @property
    def client(self) -> Client:
        """The one producer, made on first use (not at start-up: Django builds backends while importing tasks)."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Client:
        if self.config_path is None:
            return Client(self.redis_url or "redis://127.0.0.1:6379/0", key_prefix=self.key_prefix or "tq")
        from taskqueue.client import _options
        from taskqueue.store.redisboot import options

        config = self._config()
        found = options(config)
        return Client(
            self.redis_url or found.url, key_prefix=self.key_prefix or config.redis.key_prefix, **_options(found)
        )

    def enqueue(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """One taskqueue task named `task.module_path`: on the task's YAML queue (Django's "default" queue
        name) or the one `queue_name` names, delayed until `run_after`. Raises InvalidTask for a task or queue
        the YAML does not declare, QueueFull, PayloadTooLarge, or ValueError (arguments MessagePack cannot
        encode)."""
        queue = None if task.queue_name == DEFAULT_TASK_QUEUE_NAME else task.queue_name
        delay = _delay(task.run_after)
        try:
            task_id = self.client.enqueue_call(task.module_path, list(args), dict(kwargs), queue=queue, delay=delay)
        except UnknownTask as exc:
            raise InvalidTask(
                f"{task.module_path}: {exc} (the YAML declares a Django task under its module path)"
            ) from exc
        return TaskResult(
            task=task,
            id=task_id,
            status=TaskResultStatus.READY,
            enqueued_at=dt.datetime.now(dt.UTC),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    def get_result(self, result_id: str) -> Any:
        """The task's TaskResult from taskqueue's status and result store; raises TaskResultDoesNotExist for an
        unknown id (or one whose result expired: `result_ttl`). `args`/`kwargs` are not kept by taskqueue's
        status: they are empty lists here."""
        client = self.client
        found = client.status(result_id)
        if found is None:
            raise TaskResultDoesNotExist(result_id)
        state = str(found["state"])
        status = STATUS.get(state, TaskResultStatus.FAILED)
        task = self._task(result_id, found.get("task"))
        errors: list[Any] = []
        value: Any = None
        if status == TaskResultStatus.SUCCESSFUL:
            try:
                value = client.result(result_id, timeout=0)
            except ResultTimeout:  # expired between the two looks
                raise TaskResultDoesNotExist(result_id) from None
            except TaskFailed as exc:  # the value could not be stored
                status, errors = (
                    TaskResultStatus.FAILED,
                    [TaskError(exception_class_path="builtins.Exception", traceback=str(exc))],
                )
        elif status == TaskResultStatus.FAILED:
            errors = [self._error(result_id, str(found.get("error") or state))]
        finished = (
            _at(found.get("finished_at")) if status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED) else None
        )
        worker = found.get("worker")
        result = TaskResult(
            task=task,
            id=result_id,
            status=status,
            enqueued_at=None,
            started_at=None,
            finished_at=finished,
            last_attempted_at=finished,
            args=[],
            kwargs={},
            backend=self.alias,
            errors=errors,
            worker_ids=[worker] if worker else [],
        )
        object.__setattr__(result, "_return_value", value)  # Django's own backends set it the same way
        return result

    def _error(self, result_id: str, error: str) -> Any:
        """A Django TaskError from taskqueue's failure: its dead-letter record's traceback when there is one."""
        client = self.client
        trace = ""
        raw = client.redis.hget(client.keys.dead, result_id)
        if raw is not None:
            from taskqueue.store.broker import DeadRecord

            trace = DeadRecord.decode(raw).traceback or ""
        return TaskError(exception_class_path=exception_path(error, trace), traceback=trace or error)

    def _task(self, result_id: str, name: Any) -> Any:
        """The Task object a result belongs to, found without importing what Redis names: the one this process
        imported already, else the one the YAML declares under that name (CONFIG)."""
        if not isinstance(name, str):
            raise TaskResultDoesNotExist(f"{result_id}: the task it belongs to is not recorded")
        module, _, attr = name.rpartition(".")
        found = getattr(sys.modules.get(module), attr, None)
        if isinstance(found, Task) and found.module_path == name:
            return found
        declared = self._config().tasks.get(name) if self.config_path else None
        if declared is not None:
            from taskqueue.config import imports

            try:
                found = imports.resolve(declared.path)
            except ImportError as exc:
                raise TaskResultDoesNotExist(f"{result_id}: task {name}: {exc}") from None
            if isinstance(found, Task):
                return found
        raise TaskResultDoesNotExist(
            f"{result_id}: its task '{name}' is neither imported in this process nor a Django task the YAML declares"
        )


def _delay(run_after: dt.datetime | None) -> float | None:
    """Seconds until `run_after` (0 when past); an aware time is compared with now in UTC, a naive one
    with local now."""
    if run_after is None:
        return None
    now = dt.datetime.now(dt.UTC) if run_after.tzinfo is not None else dt.datetime.now()
    return max(0.0, (run_after - now).total_seconds())
