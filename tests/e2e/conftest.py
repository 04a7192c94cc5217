"""Fixtures of the end-to-end tests: runners of the built PEX, each in its own folder, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Runner, RunnerFactory, write_config


@pytest.fixture
def make_runner(pex: Path, tmp_path: Path) -> Iterator[RunnerFactory]:
    """`make_runner(redis_url, command="run", args=(), env=None, python=None, **write_config options)` → a
    Runner, not started yet; `args` are more command-line options, `env` more environment variables, `python`
    the interpreter to run the PEX with."""
    started: list[Runner] = []

    def make(
        redis_url: str,
        *,
        command: str = "run",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        python: str | None = None,
        **options: Any,
    ) -> Runner:
        folder = tmp_path / f"r{len(started)}"
        folder.mkdir()
        config = write_config(folder, redis_url, **options)
        runner = Runner(
            pex, config, redis_url, folder / "runner.log", command=command, args=args, env=env, python=python
        )
        started.append(runner)
        return runner

    yield make
    for runner in started:
        runner.stop()
