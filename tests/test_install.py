"""The producer-only install (issue 19, item 3): `pip install taskqueue` brings the client with redis and
msgpack only; the runner's dependencies come with the `runner` extra (or the PEX)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

CLIENT_SIDE = {"taskqueue", "redis", "msgpack", "pip", "setuptools", "async-timeout"}


@pytest.mark.timeout(300)
def test_the_base_install_is_the_producer_and_it_enqueues(tmp_path: Path, redis_url: str) -> None:
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and *.egg-info there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "taskqueue", source / "taskqueue", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "producer"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(REPO / "requirements.lock"), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert installed <= CLIENT_SIDE, f"the producer install pulled {sorted(installed - CLIENT_SIDE)}"

    script = textwrap.dedent(
        f"""
        import sys
        from taskqueue.client import Client
        c = Client({redis_url!r})
        task_id = c.enqueue("send_email", to="a@example.com", queue="default")  # no runner yet: a named queue
        print(task_id)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("yaml", "jsonschema", "aiohttp", "apscheduler")))
        """
    )
    ran = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    task_id, heavy = ran.stdout.splitlines()
    assert heavy == "[]"
    import redis

    queued = redis.Redis.from_url(redis_url).lrange("tq:queue:default", 0, -1)
    assert any(task_id.encode() in m for m in queued)

    console = venv / "bin" / "taskqueue"
    version = subprocess.run([str(console), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.startswith("taskqueue ")
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    runner = subprocess.run(
        [str(console), "-c", str(REPO / "task-queue.yaml"), "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert runner.returncode == 1
    assert runner.stderr == (  # one line, no traceback before it
        "taskqueue: the 'validate' command needs the runner's dependencies (yaml is missing): "
        "pip install 'taskqueue[runner]', or use taskqueue.pex\n"
    )

    from_config = textwrap.dedent(
        f"""
        from taskqueue.client import Client
        from taskqueue.errors import TaskQueueError
        try:
            Client.from_config({str(REPO / "task-queue.yaml")!r})
        except TaskQueueError as exc:
            print(exc)
        """
    )
    ran = subprocess.run([str(python), "-c", from_config], capture_output=True, text=True, timeout=60, check=False)
    assert (ran.returncode, ran.stderr) == (0, ""), ran.stderr
    assert ran.stdout == (
        "from_config() reads the YAML with the runner's dependencies (yaml is missing): "
        "pip install 'taskqueue[runner]', or pass the URL: Client(url, key_prefix=...)\n"
    )
