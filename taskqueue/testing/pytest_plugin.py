"""The pytest plugin of taskqueue.testing (entry point `pytest11`, active once taskqueue is installed): the
fixture `taskqueue_test`, a started TaskQueueTest per test, stopped after it.

Its configuration, first found: `--taskqueue-config FILE`, $TASKQUEUE_TEST_CONFIG, the ini option
`taskqueue_config` (relative to the ini file), else `task-queue.yaml` in pytest's rootdir (where its
pyproject.toml or pytest.ini is), else in the current directory.
$TASKQUEUE_TEST_REDIS_URL uses that Redis (never flushed: a key prefix of the test's own) instead of a private
redis-server. taskqueue.testing is imported only when a test asks for the fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from taskqueue.testing import TaskQueueTest

DEFAULT_CONFIG = "task-queue.yaml"
CONFIG_ENV = "TASKQUEUE_TEST_CONFIG"
REDIS_URL_ENV = "TASKQUEUE_TEST_REDIS_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    help_text = "the taskqueue YAML of the taskqueue_test fixture (default: task-queue.yaml in the rootdir or here)"
    parser.addini("taskqueue_config", help=help_text + "; relative to the ini file", default="")
    group = parser.getgroup("taskqueue")
    group.addoption("--taskqueue-config", dest="taskqueue_config", metavar="FILE", default=None, help=help_text)


def config_path(config: pytest.Config) -> Path:
    """Where the fixture's YAML is (see the module's docstring for the order)."""
    here = config.invocation_params.dir  # not the current directory of the moment: a test may chdir
    given = config.getoption("taskqueue_config") or os.environ.get(CONFIG_ENV)
    if given:
        return (here / str(given)).resolve()
    ini = str(config.getini("taskqueue_config") or "")
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return (base / ini).resolve()
    found, beside = config.rootpath / DEFAULT_CONFIG, here / DEFAULT_CONFIG
    return beside if not found.is_file() and beside.is_file() else found


@pytest.fixture
def taskqueue_test(request: pytest.FixtureRequest) -> Iterator[TaskQueueTest]:
    """A running TaskQueueTest for this test's YAML: `.client`, `.enqueue()`, `.drain()`, `.dead()`, `.result()`."""
    from taskqueue.testing import TaskQueueTest, TaskQueueTestError

    tq = TaskQueueTest(config_path(request.config), redis_url=os.environ.get(REDIS_URL_ENV) or None)
    problem = None
    try:
        tq.start()
    except TaskQueueTestError as exc:
        problem = str(exc)
    if problem is not None:  # outside the except: the message alone, not "during handling of … another"
        pytest.fail(f"taskqueue_test: {problem}", pytrace=False)
    try:
        yield tq
    finally:
        tq.stop()
