"""Task name → the callable the YAML names, with its policy. Only what the YAML declares can ever run."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from taskqueue.config import Config, TaskConfig, checks, imports
from taskqueue.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RegisteredTask:
    config: TaskConfig
    target: Callable[..., Any]
    is_async: bool  # True: run on the event loop; False: run in the worker's thread pool
    is_class: bool  # the seed's Task trait: instantiate with kwargs, then call execute()

    @property
    def name(self) -> str:
        return self.config.name

    def call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """Run the task (for async ones: create the coroutine)."""
        if self.is_class:
            return self.target(*args, **kwargs).execute()
        return self.target(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class Registry:
    tasks: Mapping[str, RegisteredTask]

    def get(self, name: str) -> RegisteredTask | None:
        return self.tasks.get(name)


def build(config: Config) -> Registry:
    """Import every declared task; raises ConfigError naming the task (config.load checked them already)."""
    imports.add_to_sys_path(config.python_path)
    found: dict[str, RegisteredTask] = {}
    problems: list[str] = []
    for name, task in config.tasks.items():
        try:
            target = imports.resolve(task.path)
        except ImportError as exc:
            problems.append(f"{config.source}: tasks.{name}.path: cannot import '{task.path}': {exc}")
            continue
        problem = checks.callable_problem(target)
        if problem:
            problems.append(f"{config.source}: tasks.{name}.path: '{task.path}' {problem}")
            continue
        is_class = inspect.isclass(target)
        runs = getattr(target, "execute") if is_class else target  # noqa: B009 - checked by callable_problem
        call_method = getattr(type(runs), "__call__", None)  # noqa: B004 - async callable objects count too
        is_async = inspect.iscoroutinefunction(runs) or inspect.iscoroutinefunction(call_method)
        found[name] = RegisteredTask(task, cast(Callable[..., Any], target), is_async, is_class)
    if problems:
        raise ConfigError(problems)
    return Registry(MappingProxyType(found))
