"""What the README says a user and a developer need agrees with what the code and the build scripts ask for."""

from __future__ import annotations

import re

from taskqueue.store.redisboot import MIN_VERSION
from tests.conftest import REPO

README = (REPO / "README.md").read_text("utf-8")
BOOTSTRAP = (REPO / "build-support" / "bootstrap.sh").read_text("utf-8")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_one_minimum_redis_version_everywhere() -> None:
    scripts = re.search(r'^TQ_MIN_REDIS="([0-9.]+)"$', BOOTSTRAP, re.MULTILINE)
    assert scripts is not None
    assert _version(scripts.group(1)) == MIN_VERSION
    stated = re.findall(r"Redis (?:≥|>=) ?([0-9][0-9.]*[0-9])|older than ([0-9][0-9.]*[0-9])", README)
    versions = {_version(a or b) for a, b in stated}
    assert versions == {MIN_VERSION[:2]}, stated
    assert not re.search(r"(?:≥|>=) ?7\b", BOOTSTRAP + README)  # what the scripts used to ask for


def test_the_readme_names_every_tool_the_test_scripts_install() -> None:
    body = BOOTSTRAP.split("tq_ensure_test_tools() {", 1)[1].split("\n}\n", 1)[0]
    tools = re.findall(r"command -v (\w+) >/dev/null 2>&1 \|\| missing\+=\((\S+)\)", body)
    assert {tool for tool, _ in tools} == {"promtool", "chromium", "chromedriver"}
    section = README.split("### What the tests need", 1)[1]
    for tool, package in tools:
        assert f"`{tool}`" in section and f"`{package}`" in section, (tool, package)
    assert "`redis-server` ≥ 6.2" in section
