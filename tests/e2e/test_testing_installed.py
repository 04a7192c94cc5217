"""The pytest plugin as a user gets it (issue 16): taskqueue pip-installed into a new venv, and the README's test
file for jobs/ (the block marked `<!-- pytest-example:test-jobs -->`, verbatim) run by pytest in a project that holds
only jobs/, task-queue.yaml and that file — no conftest: `taskqueue_test` comes from the pytest11 entry point.

The new venv sees .venv's site-packages (a .pth file): taskqueue's dependencies, pytest and the jobs' humanize
are installed already, so `pip install` only builds and installs taskqueue itself (its build backend comes
from the package index, as for any `pip install .`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.e2e.test_readme_example import example_blocks

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("TASKQUEUE_TEST_REDIS_URL"),
    reason="redis-server is not installed (.ci/run installs it)",
)


def tracked_copy(folder: Path) -> Path:
    """What `pip install .` builds from, as a fresh clone has it (and no build/ or egg-info left in the checkout)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "pyproject.toml", "README.md", "taskqueue"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=30,
    )
    for name in filter(None, listed.stdout.split(b"\0")):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            (folder / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / os.fsdecode(name))
    return folder


def run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TASKQUEUE_TEST_CONFIG")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.timeout(600)
def test_the_readme_test_file_passes_with_taskqueue_pip_installed(tmp_path: Path) -> None:
    source = tracked_copy(tmp_path / "taskqueue")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, 60)
    Path(purelib.stdout.strip(), "dev-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([str(python), "-m", "pip", "install", "--quiet", f"{source}[runner]"], tmp_path, 300)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    project = tmp_path / "app"
    shutil.copytree(REPO / "jobs", project / "jobs")
    shutil.copy2(REPO / "task-queue.yaml", project / "task-queue.yaml")
    (project / "tests").mkdir()
    (project / "tests" / "test_jobs.py").write_text(example_blocks("pytest-example")["test-jobs"])
    where = run([str(python), "-c", "import taskqueue.testing; print(taskqueue.testing.__file__)"], project, 60)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # the installed one, not a checkout
    pytest_argv = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-v", f"--basetemp={tmp_path / 'tmp'}"]
    tested = run(pytest_argv, project, 300)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "4 passed" in tested.stdout, tested.stdout
    assert "taskqueue-0.1.0" in tested.stdout  # "plugins: taskqueue-…": loaded through its entry point
