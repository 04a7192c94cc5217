"""One taskqueue.pex for every CPython >= 3.11 (issue 19, item 15): `python3.X taskqueue.pex run` runs the runner
and its workers on that interpreter itself, with the pex's own wheels for it — not re-executed under another
Python it finds, not importing from the checkout's venv. Each interpreter on this machine is tried (the same
list as build.sh's smoke test: tq_find_pythons)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from taskqueue.client import Client
from tests.e2e.harness import RunnerFactory

REPO = Path(__file__).resolve().parents[2]


def available_pythons() -> dict[str, str]:
    """Version → interpreter path, for every CPython >= 3.11 that build-support/bootstrap.sh finds."""
    script = "source build-support/bootstrap.sh && tq_find_pythons"
    found = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    pythons = {}
    for path in found.stdout.split():
        version = subprocess.run(
            [path, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        pythons[version.stdout.strip()] = path
    return pythons


PYTHONS = available_pythons()


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_runner_and_workers_run_on_the_interpreter_that_started_the_pex(
    make_runner: RunnerFactory, redis_url: str, version: str
) -> None:
    runner = make_runner(redis_url, workers=1, python=PYTHONS[version]).start(expect_workers=1)
    client = Client(redis_url)
    ran = client.result(client.enqueue("interpreter"), timeout=30)
    assert ran["python"] == version, runner.log.read_text()
    pex_root = Path(os.environ.get("PEX_ROOT") or Path.home() / ".cache" / "pex")
    assert Path(ran["executable"]).is_relative_to(pex_root / "venvs"), ran  # the pex's venv for this Python
    assert Path(ran["module"]).is_relative_to(pex_root / "venvs"), ran  # msgpack: a compiled wheel from the pex
