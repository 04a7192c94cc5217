"""Resolve a YAML `module:attribute` task path to the object it names (used by config checks and registry)."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def add_to_sys_path(folders: Iterable[Path]) -> None:
    """Add the YAML's import folders to sys.path (once each, in order) after taskqueue's own modules and
    the standard library, so `jobs.email` imports from there but a `signal.py` beside the YAML cannot
    replace the standard library's `signal` (nor a folder named `taskqueue` this package)."""
    for folder in folders:
        text = str(folder)
        if text not in sys.path:
            sys.path.append(text)


def resolve(path: str) -> object:
    """Import `module:attr.sub` and return the attribute; raises ImportError with a one-line reason."""
    module_name, _, attr_path = path.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ImportError(f"module '{exc.name}' not found") from exc
        raise ImportError(f"importing '{module_name}' failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: report it, do not crash
        raise ImportError(f"importing '{module_name}' raised {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"'{module_name}' has no attribute '{attr_path}'{_shadowed(module_name)}") from None
    return obj


def _shadowed(module_name: str) -> str:
    """Why a module lacks the attribute when the user's file of that name never got imported: the name is
    the standard library's (its modules come first on sys.path, on purpose: see add_to_sys_path)."""
    top = module_name.split(".", 1)[0]
    if top not in sys.stdlib_module_names:
        return ""
    found = getattr(sys.modules.get(module_name), "__file__", None) or "built in"
    mine = next(
        (f"{p}/{top}.py" for p in sys.path if p and (Path(p) / f"{top}.py").is_file()),
        None,
    )
    beside = f", not {mine}" if mine else ""
    return (
        f": '{top}' is the standard library's module ({found}){beside}; give your module another name "
        f"(e.g. {top}_tasks.py) or put it in a package (jobs/{top}.py as jobs.{top})"
    )


_DJANGO_READY: list[str] = []  # the settings module this process set Django up with (once)


def setup_django(settings: str) -> None:
    """`django: {settings: ...}`: DJANGO_SETTINGS_MODULE and django.setup(), once per process, before any task
    is imported (a task module may use models). Raises ImportError with a one-line reason."""
    if _DJANGO_READY:
        if _DJANGO_READY[0] != settings:
            raise ImportError(f"Django is set up already with '{_DJANGO_READY[0]}' in this process")
        return
    try:
        import django
    except ImportError:
        raise ImportError("module 'django' not found: pip install 'taskqueue[django]' (Django >= 6)") from None
    if django.VERSION[0] < 6:
        raise ImportError(f"Django {django.get_version()} has no django.tasks: taskqueue needs Django >= 6")
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    try:
        django.setup()
    except Exception as exc:  # the user's settings raised (or could not be imported): report it, do not crash
        raise ImportError(f"django.setup() with '{settings}' raised {type(exc).__name__}: {exc}") from exc
    _DJANGO_READY.append(settings)


def django_task(target: object) -> Any | None:
    """The django.tasks.Task object `target` is (a `@task` function), else None. Never imports Django: a Task
    exists only if its module was imported already."""
    tasks = sys.modules.get("django.tasks")
    task_class = getattr(tasks, "Task", None)
    return target if task_class is not None and isinstance(target, task_class) else None


def django_task_problem(name: str, task: Any) -> str | None:
    """Why a Django `@task` object cannot be the YAML task `name` (None when it can)."""
    if task.takes_context:
        return "is a Django task with takes_context=True, which taskqueue does not support"
    if name != task.module_path:
        return (
            f"is a Django task: the YAML name must be its module path '{task.module_path}' "
            f"(what Task.enqueue() sends), not '{name}'"
        )
    return None


def callable_problem(target: object) -> str | None:
    """Why `target` cannot be a task (None when it can): a function, or a class with an execute() method."""
    if inspect.isclass(target):
        return None if callable(getattr(target, "execute", None)) else "is a class without an execute() method"
    return None if callable(target) else f"is a {type(target).__name__}, not a function or class"


def shown(signature: inspect.Signature) -> inspect.Signature:
    """Names and defaults only: annotations (strings, with `from __future__ import annotations`) are noise here."""
    empty = inspect.Parameter.empty
    parameters = [p.replace(annotation=empty) for p in signature.parameters.values()]
    return signature.replace(parameters=parameters, return_annotation=empty)
