"""Semantic checks the schema cannot express: cross-references, bounds, cron, time zones, task imports."""

from __future__ import annotations

import difflib
import inspect
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskqueue.config import cluster_url, crontab, imports
from taskqueue.config.yamlsource import Document


def semantic(doc: Document, base_dir: Path, *, import_tasks: bool) -> list[str]:
    """Every cross-field problem; each check skips data the schema already rejected."""
    data: dict[str, Any] = doc.data
    found = [*_autoscaler(doc, data), *_redis(doc, data), *_tasks(doc, data), *_schedules(doc, data)]
    found += _workflows(doc, data)
    found += _webhooks(doc, data)
    if import_tasks:
        found += _imports(doc, data, base_dir)
    return found


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _names_hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"({hint}known: {', '.join(sorted(known))})"


def _autoscaler(doc: Document, data: dict[str, Any]) -> Iterator[str]:
    scaler, workers = data.get("autoscaler"), data.get("workers")
    if not isinstance(scaler, dict) or not isinstance(workers, dict):
        return
    high, initial = _int(scaler.get("max_workers")), _int(workers.get("initial_count"))
    explicit = "min_workers" in scaler  # absent: min_workers is initial_count
    low = _int(scaler.get("min_workers")) if explicit else initial
    if low is None or high is None:
        pass
    elif explicit and low > high:
        yield doc.problem(("autoscaler", "min_workers"), f"min_workers ({low}) is above max_workers ({high})")
    elif scaler.get("enabled") is True and initial is not None and not low <= initial <= high:
        problem = (
            f"must lie within autoscaler min_workers..max_workers ({low}..{high})"
            if explicit
            else f"is above autoscaler max_workers ({high})"
        )
        yield doc.problem(("workers", "initial_count"), f"initial_count ({initial}) {problem}")
    down, up = _number(scaler.get("scale_down_threshold")), _number(scaler.get("scale_up_threshold"))
    if down is not None and up is not None and down >= up:
        yield doc.problem(
            ("autoscaler", "scale_down_threshold"),
            f"scale_down_threshold ({down}) must be below scale_up_threshold ({up})",
        )


def _redis(doc: Document, data: dict[str, Any]) -> Iterator[str]:
    redis = data.get("redis")
    if not isinstance(redis, dict):
        return
    prefix = redis.get("key_prefix")
    url = redis.get("url")
    cluster = redis.get("cluster") is True or (isinstance(url, str) and cluster_url(url)[1])
    if cluster and isinstance(prefix, str) and not (prefix.startswith("{") and "}" in prefix):
        yield doc.problem(
            ("redis", "key_prefix"),
            f"with cluster: true the key_prefix must be a hash tag such as '{{{prefix}}}', so every key of a "
            "deployment lives in one slot",
        )
    if cluster and redis.get("sentinel"):
        yield doc.problem(("redis", "sentinel"), "choose one of cluster and sentinel")
    tls_url = isinstance(url, str) and url.startswith(("rediss://", "rediss+cluster://"))
    if redis.get("tls") and isinstance(url, str) and not tls_url and not redis.get("sentinel"):
        yield doc.problem(("redis", "tls"), "tls is set but redis.url does not start with rediss://")


def _queue_names(data: dict[str, Any]) -> list[str]:
    queues = data.get("queues")
    return list(queues) if isinstance(queues, dict) else []


def _tasks(doc: Document, data: dict[str, Any]) -> Iterator[str]:
    tasks, defaults = data.get("tasks"), data.get("defaults")
    queues = _queue_names(data)
    if not isinstance(tasks, dict) or not queues:
        return
    fallback = defaults.get("queue") if isinstance(defaults, dict) else None
    if isinstance(fallback, str) and fallback not in queues and ("defaults", "queue") in doc.key_marks:
        yield doc.problem(("defaults", "queue"), f"unknown queue '{fallback}' {_names_hint(fallback, queues)}")
        fallback = None  # reported once, here, not on every task that inherits it
    for name, task in tasks.items():
        if not isinstance(task, dict):
            continue
        queue = task.get("queue", fallback)
        if isinstance(queue, str) and queue not in queues:
            where = ("tasks", name, "queue") if "queue" in task else ("tasks", name)
            how = "" if "queue" in task else " (from defaults.queue; declare it or set queue: on the task)"
            yield doc.problem(where, f"unknown queue '{queue}'{how} {_names_hint(queue, queues)}")


def _schedules(doc: Document, data: dict[str, Any]) -> Iterator[str]:
    schedules, tasks = data.get("schedules"), data.get("tasks")
    if not isinstance(schedules, dict):
        return
    task_names = list(tasks) if isinstance(tasks, dict) else []
    queues = _queue_names(data)
    workflows = data.get("workflows")
    workflow_names = list(workflows) if isinstance(workflows, dict) else []
    for name, entry in schedules.items():
        if not isinstance(entry, dict):
            continue
        at = ("schedules", name)
        task, queue, tz = entry.get("task"), entry.get("queue"), entry.get("timezone", "UTC")
        workflow = entry.get("workflow")
        if ("task" in entry) == ("workflow" in entry):
            yield doc.problem(at, "needs exactly one of 'task' or 'workflow'", key=True)
        if isinstance(task, str) and task_names and task not in task_names + workflow_names:
            yield doc.problem((*at, "task"), f"unknown task '{task}' {_names_hint(task, task_names)}")
        if isinstance(workflow, str) and workflow not in workflow_names:
            hint = _names_hint(workflow, workflow_names) if workflow_names else "(no workflows are declared)"
            yield doc.problem((*at, "workflow"), f"unknown workflow '{workflow}' {hint}")
        if isinstance(queue, str) and queues and queue not in queues:
            yield doc.problem((*at, "queue"), f"unknown queue '{queue}' {_names_hint(queue, queues)}")
        zone_ok = isinstance(tz, str)
        if zone_ok:
            try:
                zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                zone_ok = False
                yield doc.problem((*at, "timezone"), f"unknown time zone '{tz}' (use an IANA name like Europe/Paris)")
        cron = entry.get("cron")
        if isinstance(cron, str) and zone_ok:
            try:
                crontab.trigger(cron, tz)
            except ValueError as exc:
                yield doc.problem((*at, "cron"), f"invalid cron expression '{cron}': {exc}")


def _webhooks(doc: Document, data: dict[str, Any]) -> Iterator[str]:
    """A webhook's tasks must exist and have events on (a task with events off writes none to deliver)."""
    hooks, tasks, events = data.get("webhooks"), data.get("tasks"), data.get("events")
    if not isinstance(hooks, dict) or not hooks or not isinstance(tasks, dict):
        return
    default = bool(events.get("enabled", False)) if isinstance(events, dict) else False
    evented = [n for n, t in tasks.items() if isinstance(t, dict) and t.get("events", default)]
    for name, hook in hooks.items():
        if not isinstance(hook, dict):
            continue
        wanted = hook.get("tasks")
        if not isinstance(wanted, list):
            if not evented:
                yield doc.problem(
                    ("webhooks", name), "no task has events on (events.enabled, or a task's events: true)"
                )
            continue
        for index, task in enumerate(wanted):
            if not isinstance(task, str):
                continue
            if task not in tasks:
                yield doc.problem(
                    ("webhooks", name, "tasks", index), f"unknown task '{task}' {_names_hint(task, list(tasks))}"
                )
            elif task not in evented:
                yield doc.problem(
                    ("webhooks", name, "tasks", index), f"task '{task}' has events off: it writes none to send"
                )


def _workflows(doc: Document, data: dict[str, Any]) -> Iterator[str]:
    """Every step names a declared task; a workflow's name is not also a task's (one namespace)."""
    workflows, tasks = data.get("workflows"), data.get("tasks")
    if not isinstance(workflows, dict):
        return
    task_names = list(tasks) if isinstance(tasks, dict) else []
    for name, definition in workflows.items():
        if name in task_names:
            yield doc.problem(
                ("workflows", name),
                f"'{name}' is a task's name too: task and workflow names share one namespace",
                key=True,
            )
        for path, task in _steps(definition, ("workflows", name)):
            if task in workflows:
                yield doc.problem(path, f"'{task}' is a workflow: a step names a task (nest the parts instead)")
            elif task_names and task not in task_names:
                yield doc.problem(path, f"unknown task '{task}' {_names_hint(task, task_names)}")


def _steps(part: Any, at: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(location, task name) of every step of a workflow part."""
    if isinstance(part, str):
        yield at, part
    elif isinstance(part, dict) and isinstance(part.get("task"), str):
        yield (*at, "task"), part["task"]
    elif isinstance(part, dict):
        for kind in ("chain", "group"):
            if isinstance(part.get(kind), list):
                for index, item in enumerate(part[kind]):
                    yield from _steps(item, (*at, kind, index))
        chord = part.get("chord")
        if isinstance(chord, dict):
            for index, item in enumerate(chord.get("header") or []):
                yield from _steps(item, (*at, "chord", "header", index))
            if "callback" in chord:
                yield from _steps(chord["callback"], (*at, "chord", "callback"))


def _imports(doc: Document, data: dict[str, Any], base_dir: Path) -> Iterator[str]:
    folders = data.get("python_path")
    if isinstance(folders, list):
        imports.add_to_sys_path((base_dir / str(f)).resolve() for f in folders)
    django = data.get("django")
    settings = django.get("settings") if isinstance(django, dict) else None
    if isinstance(settings, str):
        try:
            imports.setup_django(settings)
        except ImportError as exc:
            yield doc.problem(("django", "settings"), f"cannot set up Django: {exc}")
            return  # the tasks would fail to import for the same reason
    tasks, stuck = data.get("tasks"), set()
    imported: dict[str, object] = {}
    for name, task in (tasks or {}).items() if isinstance(tasks, dict) else ():
        path = task.get("path") if isinstance(task, dict) else None
        if not isinstance(path, str) or ":" not in path:
            continue  # the schema already reported its shape
        at = ("tasks", name, "path")
        try:
            target = imports.resolve(path, bounded=True)
        except imports.ImportTimedOut as exc:
            if exc.name not in stuck:  # said once, at the first task of that module
                stuck.add(exc.name)
                yield doc.problem(at, f"cannot import '{path}': {exc}")
            continue
        except ImportError as exc:
            where = ", ".join(str(f) for f in folders) if isinstance(folders, list) else "."
            yield doc.problem(at, f"cannot import '{path}': {exc} (python_path: {where})")
            continue
        django_task = imports.django_task(target)
        if django_task is not None:
            problem = imports.django_task_problem(name, django_task)
            if problem:
                yield doc.problem(at, f"'{path}' {problem}")
                continue
            target = django_task.func
        problem = imports.callable_problem(target)
        if problem:
            yield doc.problem(at, f"'{path}' {problem}")
            continue
        imported[name] = target
    yield from _arguments(doc, data, imported)


def _arguments(doc: Document, data: dict[str, Any], imported: dict[str, object]) -> Iterator[str]:
    """A schedule's arguments bind to its task's signature, and a YAML workflow step's keyword arguments are
    parameters of its task: otherwise every fire, or every such workflow, could only be dead-lettered. (A step's
    positional arguments are not checked: a chain step also gets the previous step's result, a first step the
    enqueue's arguments.)"""
    schedules = data.get("schedules")
    for name, entry in schedules.items() if isinstance(schedules, dict) else ():
        task = entry.get("task") if isinstance(entry, dict) else None
        signature = _signature(imported.get(task)) if isinstance(task, str) else None
        if signature is None:
            continue
        args, kwargs = entry.get("args") or [], entry.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            continue  # the schema said so
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            at = ("schedules", name, "kwargs" if "kwargs" in entry else "args" if "args" in entry else "task")
            yield doc.problem(at, f"arguments do not match {task}{imports.shown(signature)}: {exc}")
    workflows = data.get("workflows")
    for name, definition in workflows.items() if isinstance(workflows, dict) else ():
        for at, step in _step_mappings(definition, ("workflows", name)):
            signature = _signature(imported.get(step["task"]))
            kwargs = step.get("kwargs")
            if signature is None or not isinstance(kwargs, dict):
                continue
            params = signature.parameters.values()
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
                continue
            names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
            for key in kwargs:
                if key not in names:
                    hint = _names_hint(str(key), sorted(names)) if names else "(it takes no keyword arguments)"
                    yield doc.problem(
                        (*at, "kwargs", key),
                        f"'{key}' is not a parameter of {step['task']}{imports.shown(signature)} {hint}",
                        key=True,
                    )


def _signature(target: object) -> inspect.Signature | None:
    """What a call must bind to (a class: its __init__), as the registry sees it; None when Python cannot tell."""
    if target is None or not callable(target):
        return None
    try:
        return inspect.signature(target, follow_wrapped=False)
    except (TypeError, ValueError):
        return None


def _step_mappings(part: Any, at: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(location, mapping) of every step of a workflow part written as `{task: ..., args/kwargs: ...}`."""
    for path, _task in _steps(part, at):
        if path and path[-1] == "task":
            step: Any = part
            for key in path[len(at) : -1]:
                step = step[key]
            yield path[:-1], step
