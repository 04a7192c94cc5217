"""Checking an enqueue's arguments against the task's signature, where the task is imported (CLI, HTTP)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from taskqueue import config as config_mod
from taskqueue.config import registry
from taskqueue.errors import ConfigError
from taskqueue.runner import checking

JOBS = """
import functools


def send(to, subject="", *, cc=None):
    return to


class Report:
    def __init__(self, day, fmt="pdf"):
        self.day = day

    def execute(self):
        return self.day


def injects_db(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function("db", *args, **kwargs)

    return wrapper


@injects_db
def query(db, sql):
    return sql
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config_mod.Config:
    name = f"sigjobs_{tmp_path.name.replace('-', '_')}"  # a module of this test alone
    (tmp_path / f"{name}.py").write_text(JOBS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "task-queue.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            tasks:
              send: {{path: "{name}:send"}}
              report: {{path: "{name}:Report"}}
              query: {{path: "{name}:query"}}
            workflows:
              mail_then_report: {{chain: [send, report]}}
            """
        )
    )
    return config_mod.load(path, env={})


def test_calls_that_bind_pass(cfg: config_mod.Config) -> None:
    tasks = registry.build(cfg)
    assert tasks.call_problem(cfg, "send", ["a@x"], {"cc": "b@x"}) is None
    assert tasks.call_problem(cfg, "send", [], {"to": "a@x", "subject": "hi"}) is None
    assert tasks.call_problem(cfg, "report", [], {"day": "mon"}) is None
    assert tasks.call_problem(cfg, "unknown", [1], {}) is None  # not ours to judge: admin.enqueue refuses it


def test_calls_that_cannot_bind_name_the_task_and_the_problem(cfg: config_mod.Config) -> None:
    tasks = registry.build(cfg)
    assert tasks.call_problem(cfg, "send", [], {}) == (
        "arguments do not match send(to, subject='', *, cc=None): missing a required argument: 'to'"
    )
    assert tasks.call_problem(cfg, "send", ["a", "b", "c"], {}) == (
        "arguments do not match send(to, subject='', *, cc=None): too many positional arguments"
    )
    assert tasks.call_problem(cfg, "report", [], {"day": 1, "colour": "red"}) == (
        "arguments do not match report(day, fmt='pdf'): got an unexpected keyword argument 'colour'"
    )


def test_a_workflow_checks_its_first_steps_only(cfg: config_mod.Config) -> None:
    tasks = registry.build(cfg)
    assert tasks.call_problem(cfg, "mail_then_report", ["a@x"], {}) is None  # report gets send's result
    assert tasks.call_problem(cfg, "mail_then_report", [], {}) == (
        "workflow mail_then_report, its first step send: arguments do not match send(to, subject='', *, "
        "cc=None): missing a required argument: 'to'"
    )


def test_a_decorator_that_supplies_arguments_is_not_second_guessed(cfg: config_mod.Config) -> None:
    """`functools.wraps` makes inspect report `query(db, sql)`, but callers pass only `sql`."""
    assert registry.build(cfg).call_problem(cfg, "query", ["select 1"], {}) is None


def test_only_the_named_tasks_are_imported(cfg: config_mod.Config) -> None:
    assert set(registry.build(cfg, {"send"}).tasks) == {"send"}


def _as_sent(tasks: registry.Registry) -> dict[str, registry.Spec | None]:
    """The signatures as config/apart.py sends them to the runner: through JSON."""
    sent = json.dumps({name: registry.spec_of(task.signature) for name, task in tasks.tasks.items()})
    loaded: dict[str, registry.Spec | None] = json.loads(sent)
    return loaded


def test_signatures_sent_apart_judge_every_call_as_the_imported_code_does(cfg: config_mod.Config) -> None:
    """The runner never imports the tasks: it gets their signatures from a checking process (runner/checking.py)."""
    imported = registry.build(cfg)
    apart = registry.from_specs(cfg, _as_sent(imported))
    calls: list[tuple[str, list[object], dict[str, object]]] = [
        ("send", ["a@x"], {"cc": "b@x"}),
        ("send", [], {"to": "a@x", "subject": "hi"}),
        ("send", [], {}),
        ("send", ["a", "b", "c"], {}),
        ("send", ["a"], {"bcc": 1}),
        ("report", [], {"day": "mon"}),
        ("report", [], {"day": 1, "colour": "red"}),
        ("query", ["select 1"], {}),
        ("mail_then_report", [], {}),
        ("mail_then_report", ["a@x"], {}),
        ("unknown", [1], {}),
    ]
    for name, args, kwargs in calls:
        assert apart.call_problem(cfg, name, args, kwargs) == imported.call_problem(cfg, name, args, kwargs), name
    assert apart.call_problem(cfg, "send", [], {}) is not None
    with pytest.raises(RuntimeError, match="signatures only"):
        apart.tasks["send"].call(("a@x",), {})


def test_the_runners_check_apart_gives_the_config_the_problems_and_the_signatures(
    cfg: config_mod.Config, tmp_path: Path
) -> None:
    """`checking.check` starts `python -m taskqueue.config.apart` as a worker is started; nothing of the tasks is
    imported in this process by it."""
    assert cfg.source is not None
    path = Path(cfg.source)
    module = cfg.tasks["send"].path.partition(":")[0]
    sys.modules.pop(module, None)
    checked_config, form, tasks = checking.check(path, path.read_bytes())
    assert module not in sys.modules
    assert form is not None and set(checked_config.tasks) == set(cfg.tasks)
    assert checked_config.workflows.keys() == cfg.workflows.keys()
    assert tasks.call_problem(checked_config, "send", [], {}) == (
        "arguments do not match send(to, subject='', *, cc=None): missing a required argument: 'to'"
    )
    broken = path.read_text().replace(f'"{module}:send"', f'"{module}:nope"') + "queues: 7\n"
    with pytest.raises(ConfigError) as apart:
        checking.check(path, broken.encode())
    path.write_text(broken)
    with pytest.raises(ConfigError) as here:
        registry.build(config_mod.load(path))
    assert len(apart.value.problems) == 2  # the bad queues section and the task that does not import
    assert apart.value.problems == here.value.problems  # the same located lines as loading it here
