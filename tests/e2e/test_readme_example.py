"""The README's worked example, run verbatim (issue 19, item 12).

Every block that README.md marks `<!-- example:NAME -->` is read from the README as it is, so the two cannot
drift apart, and run in order as a user would: in a copy of the repository's tracked files (what a fresh
clone holds) with the built ./taskqueue.pex, write the job, add its entry, validate (and with the two
mistakes the README shows, compare the report), start the runner, enqueue every way shown, compare what the
Python block prints with what its comment promises, and watch.

What is changed is the machine's, not the example's: the copy talks to the test's Redis (REDIS_URL for the
YAML and the CLI, redis-cli given its address, the one Redis URL of the Python block replaced), runs one
worker process (TASK_QUEUE_WORKERS) and serves HTTP on a free port instead of 8080 (the machine is shared).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from taskqueue.config import ENV_OVERRIDES
from tests.conftest import wait_for
from tests.e2e.harness import live_workers, store

REPO = Path(__file__).resolve().parents[2]
README_URL = "redis://127.0.0.1:6379/0"  # the address the README's Python block names
MARKED = re.compile(  # kind "example": this test's steps; "pytest-example": tests/e2e/test_testing_installed.py's
    r"^(?P<indent> *)<!-- (?P<kind>example|pytest-example):(?P<name>[\w-]+) -->\n"
    r"(?P=indent)```[^\n]*\n(?P<body>.*?)^(?P=indent)```$",
    re.MULTILINE | re.DOTALL,
)
STEPS = ["job", "tasks", "validate", "validate-errors", "run", "enqueue-shell", "enqueue-python", "watch"]


def example_blocks(kind: str = "example") -> dict[str, str]:
    """Name → text of each block of README.md marked `<!-- KIND:NAME -->`, the list item's indentation removed."""
    blocks = {}
    for match in MARKED.finditer((REPO / "README.md").read_text("utf-8")):
        if match.group("kind") != kind:
            continue
        lines = match.group("body").splitlines(keepends=True)
        blocks[match.group("name")] = "".join(line.removeprefix(match.group("indent")) for line in lines)
    return blocks


@pytest.fixture
def clone(pex: Path, tmp_path: Path) -> Path:
    """The repository's tracked files, as a fresh clone has them, and the built pex as ./taskqueue.pex."""
    copy = tmp_path / "taskqueue"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30)
    for name in filter(None, listed.stdout.split(b"\0")):
        source = REPO / os.fsdecode(name)
        if source.is_file():  # a file deleted in the work tree but not yet in git is not there
            (copy / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / os.fsdecode(name))
    (copy / "taskqueue.pex").symlink_to(pex)
    config = copy / "task-queue.yaml"
    text = config.read_text("utf-8")
    assert text.count("\n  port: 8080\n") == 1
    config.write_text(text.replace("\n  port: 8080\n", "\n  port: 0\n"), "utf-8")  # same line count
    return copy


@pytest.fixture
def user_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The user's shell, pointed at the test's Redis: REDIS_URL, and a redis-cli that connects there."""
    address = urlsplit(redis_url)
    shims = tmp_path / "bin"
    shims.mkdir()
    real = shutil.which("redis-cli")
    assert real is not None, "redis-cli is installed with redis-server"
    cli = shims / "redis-cli"
    db = address.path.strip("/") or "0"
    cli.write_text(f'#!/bin/sh\nexec {real} -h {address.hostname} -p {address.port} -n {db} "$@"\n')
    cli.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES and not k.startswith("TASKQUEUE_")}
    return {**clean, "PATH": f"{shims}:{clean['PATH']}", "REDIS_URL": redis_url, "TASK_QUEUE_WORKERS": "1"}


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; SIGTERMed (then killed) at the end whatever happened."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def shell(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def add_task_entry(config: Path, block: str) -> str:
    """Put the README's entry first under the config's `tasks:`, as step 2 says; returns the task's name."""
    first, *entry = block.splitlines()
    assert first == "tasks:"
    while entry and entry[-1].strip().startswith("#"):
        entry.pop()  # "# … the tasks that were there"
    name = entry[0].strip().rstrip(":")
    lines = config.read_text("utf-8").splitlines()
    assert name not in yaml.safe_load("\n".join(lines))["tasks"], f"the example's {name} collides with a shipped task"
    at = lines.index("tasks:") + 1
    config.write_text("\n".join([*lines[:at], *entry, *lines[at:]]) + "\n", "utf-8")
    return name


def test_the_worked_example_runs_verbatim(
    clone: Path, user_env: dict[str, str], redis_url: str, started: list[subprocess.Popen[bytes]]
) -> None:
    blocks = example_blocks()
    assert list(blocks) == STEPS

    # 1. Write a job: a new file, not one that ships (that would replace it and break the reference config).
    job = clone / blocks["job"].splitlines()[0].removeprefix("# ")
    assert not job.exists(), f"{job.relative_to(clone)} ships already: the example would overwrite it"
    job.write_text(blocks["job"], "utf-8")

    # 2. Declare it, validate; then the README's two mistakes give the README's report.
    config = clone / "task-queue.yaml"
    task = add_task_entry(config, blocks["tasks"])
    checked = shell(blocks["validate"], clone, user_env)
    assert (checked.returncode, checked.stdout) == (0, "OK\n"), checked.stderr
    good = config.read_text("utf-8")
    entry = good[good.index(f"  {task}:\n") :]
    mistaken = entry.replace("queue: default", "queue: hihg", 1).replace("timeout: 30s", "timeout: soon", 1)
    config.write_text(good.replace(entry, mistaken), "utf-8")
    checked = shell(blocks["validate"], clone, user_env)
    assert (checked.returncode, checked.stderr) == (2, blocks["validate-errors"])
    config.write_text(good, "utf-8")

    # 3. Run it.
    with (clone / "runner.log").open("wb") as log:
        started.append(
            subprocess.Popen(
                shlex.split(blocks["run"], comments=True),
                cwd=clone,
                env=user_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    wait_for(lambda: len(live_workers(redis_url)) >= 1, timeout=60, what="the runner's worker")

    # 4. Enqueue from the shell and from Python; what Python prints is what the comments say.
    enqueued = shell(blocks["enqueue-shell"], clone, user_env)
    assert enqueued.returncode == 0, enqueued.stderr
    script = blocks["enqueue-python"]
    assert script.count(README_URL) == 1
    printed = subprocess.run(
        ["./taskqueue.pex", "-"],
        input=script.replace(README_URL, redis_url),
        cwd=clone,
        env={**user_env, "PEX_INTERPRETER": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    promised = [line.split("  # ", 1)[1] for line in script.splitlines() if line.startswith("print(")]
    assert printed.stdout.splitlines() == promised

    # Every task enqueued without a delay ran (two from the shell, three from Python); one waits 30 s.
    stats = store(redis_url)
    wait_for(lambda: int(stats.hget("tq:stats", f"processed:default:{task}") or 0) == 5, timeout=30, what="5 runs")
    assert stats.zcard("tq:delayed") == 1

    # 5. Watch it; then SIGTERM stops the runner gracefully.
    watched = shell(blocks["watch"], clone, user_env)
    assert watched.returncode == 0, watched.stderr
    assert "default" in watched.stdout
    runner = started[0]
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(60) == 0
