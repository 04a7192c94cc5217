"""The peers comparison's arithmetic and table (no peer is installed or run here)."""

from __future__ import annotations

import math

from bench.peers import harness


def test_ratio_is_oriented_so_that_above_one_means_taskqueue_is_better() -> None:
    assert harness.ratio(30_000.0, 10_000.0, higher_is_better=True) == 3.0
    assert harness.ratio(0.5, 1.0, higher_is_better=False) == 2.0  # half the latency of the best peer
    assert harness.ratio(2.0, 1.0, higher_is_better=False) == 0.5
    assert harness.ratio(None, 1.0, higher_is_better=True) is None
    assert harness.ratio(1.0, None, higher_is_better=True) is None
    assert harness.ratio(0.0, 1.0, higher_is_better=False) is None  # no division by zero
    assert harness.ratio(math.nan, 1.0, higher_is_better=True) is None


def test_best_peer_per_direction() -> None:
    values = {"huey": 12.0, "rq": 20.0, "arq": math.nan}
    assert harness.best_peer(values, higher_is_better=True) == ("rq", 20.0)
    assert harness.best_peer(values, higher_is_better=False) == ("huey", 12.0)
    assert harness.best_peer({}, higher_is_better=True) is None


def test_comparison_rows_and_rendering() -> None:
    ours = {"enqueue": 20_000.0, "lat_p50": 0.4}
    peers = {"huey": {"enqueue": 10_000.0, "lat_p50": 0.6}, "rq": {"enqueue": 5_000.0, "bulk_enqueue": 20_000.0}}
    rows = {row["key"]: row for row in harness.comparison(ours, peers)}
    assert rows["enqueue"]["best_peer"] == "huey"
    assert rows["enqueue"]["ratio"] == 2.0
    assert rows["lat_p50"]["ratio"] == 0.6 / 0.4
    assert rows["bulk_enqueue"]["best_peer"] == "rq"
    assert rows["bulk_enqueue"]["ratio"] is None  # taskqueue has no value here
    assert rows["enqueue"]["target"].startswith(">= 18k/s")

    peer = harness.Peer("huey", unsupported={"bulk_enqueue": "no bulk API"})
    failed = harness.Peer("celery", error="pip install failed (1): ERROR: no matching distribution")
    text = harness.render(list(rows.values()), ["huey", "rq", "celery"], harness.missing_cells([peer, failed]))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["metric", "unit", "taskqueue"]
    bulk = next(line for line in lines if line.startswith("bulk enqueue/s"))
    assert " n/a " in bulk and " failed " in bulk and "20,000" in bulk
    enqueue = next(line for line in lines if line.startswith("enqueue/s"))
    assert "2.00x" in enqueue
    legend = harness.legend([peer, failed])
    assert "> 1 means taskqueue is better" in legend
    assert "celery: pip install failed" in legend


def test_legend_flags_a_peer_slower_than_the_latency_load() -> None:
    run = {"repeat": 1, "metrics": {"drain1_steady": 68.0}, "details": {}, "errors": {"drain2": "no progress"}}
    slow = harness.Peer("rq", facts={"version": "3.0.0", "delivery": "at-most-once", "settings": {"a": 1}}, runs=[run])
    text = harness.legend([slow])
    assert "its 1-process drain (68/s) is below the 200/s" in text
    assert "rq, run 1, drain2: no progress" in text
    assert harness.missing_cells([slow])["rq"]["drain2"] == "err"
