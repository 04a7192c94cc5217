"""Docs that drifted from the code (issue 29, B7): what the README says of workflows' cancel and of the
dashboard's workers, and the example jobs' docstrings, checked against what the code does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_build_checks import checks

README = (REPO / "README.md").read_text("utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_workflows_section_does_not_call_cancel_missing() -> None:
    workflows = section("Workflows")
    assert not re.search(r"(?i)not yet[^\n]*cancel", workflows)
    assert "cancel wf-" in workflows  # cancelling a workflow works: tests/e2e/test_workflows.py, test_job_control.py


def test_the_dashboard_row_says_what_the_workers_table_shows() -> None:
    page = (REPO / "taskqueue" / "ops" / "static" / "dashboard.html").read_text("utf-8")
    table = page[page.index('<table id="workers">') : page.index("</table>", page.index('<table id="workers">'))]
    assert "in flight now / slots" in table  # a count per worker, not the tasks themselves
    row = next(line for line in README.splitlines() if line.startswith("| `GET /` |"))
    assert "workers with the tasks each holds" not in row
    assert "how many tasks each holds right now against its slots" in row


def test_the_example_jobs_speak_to_users() -> None:
    for path in sorted((REPO / "jobs").glob("*.py")):
        assert "seed" not in path.read_text("utf-8").lower(), f"{path.name}: the seed is the project's, not the user's"


@pytest.mark.timeout(300)
def test_the_recipe_that_adds_jobs_requirements_keeps_what_the_file_held(tmp_path: Path) -> None:
    """The README's recipe, run as written (in a copy, with `six` for `requests`: smaller, no dependencies)."""
    body = section("Jobs that import third-party packages")
    at = body.index("pip freeze -r")
    recipe = body[body.rindex("```bash", 0, at) + len("```bash") : body.index("```", at)]
    project, scratch = tmp_path / "project", tmp_path / "tmp"  # scratch stands for /tmp
    project.mkdir()
    scratch.mkdir()
    for name in ("requirements-jobs.txt", "requirements.lock"):
        shutil.copy(REPO / name, project / name)
    script = recipe.replace("/tmp/", f"{scratch}/").replace(" requests\n", " six\n")
    ran = subprocess.run(
        ["bash", "-euc", script], cwd=project, capture_output=True, text=True, timeout=280, check=False
    )
    assert ran.returncode == 0, ran.stderr
    pins = (project / "requirements-jobs.txt").read_text("utf-8")
    assert pins.startswith((REPO / "requirements-jobs.txt").read_text("utf-8"))  # comments and pins kept, in order
    assert re.search(r"(?m)^six==[\d.]+$", pins)
    assert checks.check_requirements(project / "requirements-jobs.txt", REPO / "requirements.lock") == []
