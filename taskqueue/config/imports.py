"""Resolve a YAML `module:attribute` task path to the object it names (used by config checks and registry)."""

from __future__ import annotations

import importlib
import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import Any

from taskqueue.errors import Interrupted, UsageError

IMPORT_TIMEOUT_ENV = "TASKQUEUE_IMPORT_TIMEOUT"
IMPORT_TIMEOUT_S = 60.0  # the default: a module that takes longer is taken to be stuck at import
NOTICE_AFTER_S = 5.0  # a slow import is said once, after this long


def add_to_sys_path(folders: Iterable[Path]) -> None:
    """Add the YAML's import folders to sys.path (once each, in order) after taskqueue's own modules and
    the standard library, so `jobs.email` imports from there but a `signal.py` beside the YAML cannot
    replace the standard library's `signal` (nor a folder named `taskqueue` this package)."""
    for folder in folders:
        text = str(folder)
        if text not in sys.path:
            sys.path.append(text)


def resolve(path: str, *, bounded: bool = False) -> object:
    """Import `module:attr.sub` and return the attribute; raises ImportError with a one-line reason. `bounded`
    (the configuration check's imports: `validate`, and the runner's check apart): a module still importing
    after NOTICE_AFTER_S is named once on stderr, and one still importing after the import timeout is given
    up on (see `bounded_import`)."""
    module_name, _, attr_path = path.partition(":")
    if module_name in _TIMED_OUT:  # another task of the same module: it would block as long again
        raise ImportTimedOut(_TIMED_OUT[module_name], name=module_name)
    limit_s = import_timeout_s() if bounded else None  # a wrong setting is the user's error, not the module's
    try:
        with nullcontext() if limit_s is None else bounded_import(module_name, limit_s):
            obj: object = importlib.import_module(module_name)
    except _ImportTimeout as exc:
        _TIMED_OUT[module_name] = str(exc)
        raise ImportTimedOut(str(exc), name=module_name) from None
    except Interrupted:
        raise
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


_TIMED_OUT: dict[str, str] = {}  # module → why its import was given up on, in this process


class ImportTimedOut(ImportError):
    """The module (`name`) did not finish importing within the import timeout."""


class _ImportTimeout(BaseException):
    """Raised into a stuck import by SIGALRM; a BaseException, so a module's own `except Exception` lets it by."""


def import_timeout_s() -> float:
    """$TASKQUEUE_IMPORT_TIMEOUT (seconds, > 0), else IMPORT_TIMEOUT_S."""
    text = os.environ.get(IMPORT_TIMEOUT_ENV, "").strip()
    if not text:
        return IMPORT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise UsageError(f"{IMPORT_TIMEOUT_ENV}={text!r}: give the import timeout in seconds, a number above 0")
    return value


@contextmanager
def bounded_import(module_name: str, timeout_s: float) -> Iterator[None]:
    """Bound the import of `module_name` with SIGALRM (signals reach the main thread only; elsewhere unbounded):
    "still importing X (N s)" once after NOTICE_AFTER_S, `_ImportTimeout` after `timeout_s`; Ctrl-C
    becomes Interrupted naming the module (one line, no traceback from the module's frames)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    started = time.monotonic()
    notice = [timeout_s > NOTICE_AFTER_S]  # the first alarm says so, the second gives up

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if notice.pop():
            waited = time.monotonic() - started
            print(f"taskqueue: still importing {module_name} ({waited:.0f} s)", file=sys.stderr, flush=True)
            notice.append(False)
            signal.setitimer(signal.ITIMER_REAL, max(timeout_s - waited, 0.001))
            return
        raise _ImportTimeout(
            f"importing '{module_name}' did not finish within {timeout_s:g} s (does it block at import? "
            f"{IMPORT_TIMEOUT_ENV} sets the limit)"
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, min(NOTICE_AFTER_S, timeout_s))
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while importing {module_name}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
