"""Docs that drifted from the code (issue 29, B7): what the README says of workflows' cancel and of the
dashboard's workers, and the example jobs' docstrings, checked against what the code does."""

from __future__ import annotations

import re

from tests.conftest import REPO

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
