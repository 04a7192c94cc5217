"""Task name → the callable the YAML names, with its policy. Only what the YAML declares can ever run."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from taskqueue import canvas
from taskqueue.config import Config, TaskConfig, imports
from taskqueue.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RegisteredTask:
    config: TaskConfig
    target: Callable[..., Any]
    is_async: bool  # True: run on the event loop; False: run in the worker's thread pool
    is_class: bool  # the seed's Task trait: instantiate with kwargs, then call execute()
    signature: inspect.Signature | None = None  # what `call` can bind (a class: its __init__); None: unknown

    @property
    def name(self) -> str:
        return self.config.name

    def call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """Run the task (for async ones: create the coroutine)."""
        if self.is_class:
            return self.target(*args, **kwargs).execute()
        return self.target(*args, **kwargs)

    def bind_problem(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """Why `call(args, kwargs)` cannot bind to the task's signature (None when it can, or is unknown)."""
        if self.signature is None:
            return None
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            return f"arguments do not match {self.name}{imports.shown(self.signature)}: {exc}"
        return None


@dataclass(frozen=True, slots=True)
class Registry:
    tasks: Mapping[str, RegisteredTask]

    def get(self, name: str) -> RegisteredTask | None:
        return self.tasks.get(name)

    def call_problem(self, config: Config, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """Why enqueueing `name` (a task, or a workflow: its first steps get the arguments) with these
        arguments could never run, from the signatures of the tasks imported here; None when it may run
        (or when this registry does not hold the task: nothing to check against)."""
        if name in config.workflows:
            laid = canvas.lay_out(config.workflows[name], args, kwargs)
            for step, source in laid.steps:
                task = self.get(step.task)
                problem = task.bind_problem(step.args, step.kwargs) if task and source is None else None
                if problem:
                    return f"workflow {name}, its first step {step.task}: {problem}"
            return None
        task = self.get(name)
        return task.bind_problem(args, kwargs) if task else None


def signature_of(target: Callable[..., Any]) -> inspect.Signature | None:
    """The signature arguments must bind to. Not through `functools.wraps` (a decorator may supply arguments
    itself: the wrapped function's signature would refuse calls that run); None when Python cannot tell."""
    try:
        return inspect.signature(target, follow_wrapped=False)
    except (TypeError, ValueError):
        return None


def build(config: Config, names: Iterable[str] | None = None) -> Registry:
    """Import every declared task (or only those `names`); raises ConfigError naming the task (config.load
    checked them already)."""
    imports.add_to_sys_path(config.python_path)
    if config.django_settings is not None:
        try:
            imports.setup_django(config.django_settings)
        except ImportError as exc:
            raise ConfigError([f"{config.source}: django.settings: cannot set up Django: {exc}"]) from None
    found: dict[str, RegisteredTask] = {}
    problems: list[str] = []
    wanted = None if names is None else set(names)
    for name, task in config.tasks.items():
        if wanted is not None and name not in wanted:
            continue
        try:
            target = imports.resolve(task.path)
        except ImportError as exc:
            problems.append(f"{config.source}: tasks.{name}.path: cannot import '{task.path}': {exc}")
            continue
        django_task = imports.django_task(target)
        if django_task is not None:  # a Django `@task` object: run its function (Task.call would too)
            problem = imports.django_task_problem(name, django_task)
            if problem:
                problems.append(f"{config.source}: tasks.{name}.path: '{task.path}' {problem}")
                continue
            target = django_task.func
        problem = imports.callable_problem(target)
        if problem:
            problems.append(f"{config.source}: tasks.{name}.path: '{task.path}' {problem}")
            continue
        is_class = inspect.isclass(target)
        runs = getattr(target, "execute") if is_class else target  # noqa: B009 - checked by callable_problem
        call_method = getattr(type(runs), "__call__", None)  # noqa: B004 - async callable objects count too
        is_async = inspect.iscoroutinefunction(runs) or inspect.iscoroutinefunction(call_method)
        function = cast(Callable[..., Any], target)
        found[name] = RegisteredTask(task, function, is_async, is_class, signature_of(function))
    if problems:
        raise ConfigError(problems)
    return Registry(MappingProxyType(found))


# ---- signatures without the code: the runner checks arguments but never imports the tasks (config/apart.py) ----
Spec = list[tuple[str, int, str | None]]  # each parameter: name, kind (inspect.Parameter's), repr of its default


class _Default:
    """A parameter's default as the checking process showed it: only its repr travels."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def spec_of(signature: inspect.Signature | None) -> Spec | None:
    """A signature as plain data: what `bind` needs (names, kinds, which have defaults) and what an error shows."""
    if signature is None:
        return None
    empty = inspect.Parameter.empty
    return [
        (p.name, int(p.kind), None if p.default is empty else repr(p.default)) for p in signature.parameters.values()
    ]


_P = inspect.Parameter
_KINDS = {
    int(kind): kind
    for kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.VAR_POSITIONAL, _P.KEYWORD_ONLY, _P.VAR_KEYWORD)
}


def _signature(spec: Spec | None) -> inspect.Signature | None:
    if spec is None:
        return None
    return inspect.Signature(
        [_P(name, _KINDS[kind], default=_P.empty if shown is None else _Default(shown)) for name, kind, shown in spec]
    )


def _elsewhere(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("this process holds the tasks' signatures only: workers run them")


def from_specs(config: Config, specs: Mapping[str, Spec | None]) -> Registry:
    """A Registry that can check an enqueue's arguments (`call_problem`) but never runs a task: the runner's,
    from the signatures a checking process read (`spec_of`)."""
    found = {
        name: RegisteredTask(config.tasks[name], _elsewhere, False, False, _signature(spec))
        for name, spec in specs.items()
        if name in config.tasks
    }
    return Registry(MappingProxyType(found))
