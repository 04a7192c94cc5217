"""A job module that blocks at import (issue 29, B2): `validate` and `run` say which module they are still
importing, give up on it at the import timeout with one line naming it, and stop on Ctrl-C with one line."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskqueue.config import ENV_OVERRIDES
from tests.conftest import wait_for

STUCK = "import time\n\ntime.sleep(3600)  # blocks at import, as a module waiting on a host that never answers\n\n\n"


def stuck_project(folder: Path) -> Path:
    """A YAML whose two tasks live in a module that never finishes importing."""
    (folder / "stuckjobs").mkdir()
    (folder / "stuckjobs" / "__init__.py").write_text("")
    (folder / "stuckjobs" / "stuck.py").write_text(
        STUCK + "def one() -> None:\n    pass\n\n\ndef two() -> None:\n    pass\n"
    )
    config = folder / "task-queue.yaml"
    config.write_text(
        'redis: {url: "redis://127.0.0.1:1"}\n'  # never reached: the check comes first
        "python_path: [.]\n"
        "tasks:\n"
        "  one: {path: 'stuckjobs.stuck:one'}\n"
        "  two: {path: 'stuckjobs.stuck:two'}\n"
    )
    return config


Started = tuple[subprocess.Popen[str], queue.Queue[str]]


@pytest.fixture
def start(pex: Path, tmp_path: Path) -> Iterator[Callable[..., Started]]:
    """Start the pex in `tmp_path`, in a session of its own (so a test can Ctrl-C it as a terminal does: SIGINT
    to the group), its stderr read line by line into the queue ("" at its end); whatever of the group is left
    at the end of the test (a failed one) is killed."""
    started: list[subprocess.Popen[str]] = []

    def begin(command: str, **env: str) -> Started:
        clean = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES and not k.startswith("TASKQUEUE_")}
        process = subprocess.Popen(
            [str(pex), "-c", "task-queue.yaml", command],
            cwd=tmp_path,
            env={**clean, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(process)
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert process.stderr is not None
            with process.stderr:
                for line in process.stderr:
                    lines.put(line)
            lines.put("")

        threading.Thread(target=read, daemon=True).start()
        return process, lines

    yield begin
    for process in started:
        if not group_gone(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rest(lines: queue.Queue[str], timeout_s: float) -> list[str]:
    """Every further stderr line, until the stream ends."""
    found, deadline = [], time.monotonic() + timeout_s
    while (line := lines.get(timeout=max(deadline - time.monotonic(), 0.01))) != "":
        found.append(line)
    return found


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_module_stuck_at_import_is_named_then_given_up_on(
    start: Callable[..., Started], tmp_path: Path, command: str
) -> None:
    stuck_project(tmp_path)
    process, lines = start(command, TASKQUEUE_IMPORT_TIMEOUT="7")
    said = rest(lines, 90)
    assert process.wait(timeout=30) == 2, said
    assert said == [
        "taskqueue: still importing stuckjobs.stuck (5 s)\n",
        "task-queue.yaml:4:15: tasks.one.path: cannot import 'stuckjobs.stuck:one': importing 'stuckjobs.stuck' did "
        "not finish within 7 s (does it block at import? TASKQUEUE_IMPORT_TIMEOUT sets the limit)\n",
        "task-queue.yaml: 1 problem(s); nothing was started\n",
    ]
    wait_for(lambda: group_gone(process.pid), timeout=10, what="no process left behind")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("command", "line"),
    [
        ("validate", "taskqueue: interrupted while importing stuckjobs.stuck\n"),
        ("run", "taskqueue: interrupted while checking task-queue.yaml (importing its tasks)\n"),
    ],
)
def test_ctrl_c_while_a_module_is_stuck_at_import_stops_with_one_line(
    start: Callable[..., Started], tmp_path: Path, command: str, line: str
) -> None:
    stuck_project(tmp_path)
    process, lines = start(command)  # the default timeout (60 s): Ctrl-C comes first
    assert lines.get(timeout=60) == "taskqueue: still importing stuckjobs.stuck (5 s)\n"
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 130
    assert rest(lines, 30) == [line]
    wait_for(lambda: group_gone(process.pid), timeout=10, what="the check's process stopped too")
