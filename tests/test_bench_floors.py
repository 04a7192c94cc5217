"""`python -m bench.floors`, the README's measured floors: every import is measured, every thread count runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import floors
from bench.redisserver import RedisServer


def test_every_import_gets_a_resident_size_and_a_workers_subtotal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    floors.memory(None)
    out = capsys.readouterr().out
    for name in ("interpreter", *floors.WORKER_IMPORTS, *floors.RUNNER_IMPORTS):
        assert re.search(rf"^  {re.escape(name)} +\d+\.\d +total +\d+\.\d$", out, re.MULTILINE), name
    subtotal = re.search(r"a worker's imports: (\d+\.\d) MiB", out)
    assert subtotal is not None and float(subtotal.group(1)) > 8.0  # at least an interpreter


def test_the_sync_body_runs_from_each_thread_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = RedisServer(tmp_path).start()
    try:
        floors.sync_body(server.url, 60)
        done = int(server.client().get("floors:done"))
    finally:
        server.stop()
    rows = re.findall(
        r"^ +(\d+) threads: +\d+ calls/s +\d+\.\d us CPU per call$", capsys.readouterr().out, re.MULTILINE
    )
    assert [int(count) for count in rows] == list(floors.THREADS)
    assert done == sum(60 // count * count for count in floors.THREADS)
