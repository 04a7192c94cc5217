"""A job's third-party package travels inside the pex (issue 19, item 2): ./build.sh bundles
requirements-jobs.txt, so the built pex validates and runs jobs/sizes.py, which imports humanize, and its
workers import humanize from the pex itself (the pex runs isolated: nothing else on the machine has it)."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskqueue.client import Client
from tests.e2e.harness import HERE, Runner, pex_cmd

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def deployment(pex: Path, redis_url: str, tmp_path: Path) -> Iterator[Path]:
    """A folder as a user deploys it: the shipped jobs/ and a YAML naming the example job; a runner of the pex on it."""
    shutil.copytree(REPO / "jobs", tmp_path / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "task-queue.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            redis: {{url: "{redis_url}"}}
            python_path: [".", "{HERE}"]
            tasks:
              describe_upload: {{path: jobs.sizes:describe_upload}}
              interpreter: {{path: testjobs.tasks:interpreter}}
            workers: {{initial_count: 1, heartbeat_interval: 500ms}}
            autoscaler: {{enabled: false}}
            http: {{enabled: false}}
            """)
    )
    runner = Runner(pex, config, redis_url, tmp_path / "runner.log").start(expect_workers=1)
    yield config
    runner.stop()


def test_a_worker_runs_a_job_that_imports_a_package_bundled_from_requirements_jobs(
    pex: Path, redis_url: str, deployment: Path
) -> None:
    assert "humanize==" in (REPO / "requirements-jobs.txt").read_text("utf-8")
    checked = pex_cmd(pex, deployment, "validate", redis_url=redis_url)
    assert (checked.returncode, checked.stdout) == (0, "OK\n"), checked.stderr

    kwargs = json.dumps({"name": "report.pdf", "size_bytes": 1_234_567})
    enqueued = pex_cmd(pex, deployment, "enqueue", "describe_upload", "--kwargs", kwargs, redis_url=redis_url)
    assert enqueued.returncode == 0, enqueued.stderr
    client = Client(redis_url)
    assert client.result(enqueued.stdout.strip(), timeout=30) == "report.pdf: 1.2 MB"

    where = client.result(client.enqueue("interpreter", module="humanize"), timeout=30)
    pex_root = Path(os.environ.get("PEX_ROOT") or Path.home() / ".cache" / "pex")
    assert Path(where["module"]).is_relative_to(pex_root / "venvs"), where  # the pex's copy, not the checkout's .venv
