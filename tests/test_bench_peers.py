"""The peers comparison's arithmetic and table (no peer is installed or run here)."""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path

from bench import procstat
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


def _plan(what: str, per_process: int, commands: int = 1, env: dict[str, str] | None = None) -> dict[str, object]:
    return {"commands": [[what]] * commands, "env": env or {}, "per_process": per_process, "what": what}


def _facts(equal: tuple[int, int], own: tuple[int, int] | None) -> dict[str, object]:
    """Plans for 1 and 2 processes: per-process concurrency at C, and at the peer's own setting (None: the same)."""
    mine = own or equal
    return {
        "plans": {
            "equal": {"1": _plan("at-c-1", equal[0]), "2": _plan("at-c-2", equal[1], commands=2)},
            "own": {
                "1": _plan("own-1" if own else "at-c-1", mine[0]),
                "2": _plan("own-2" if own else "at-c-2", mine[1], commands=1 if own else 2),
            },
        }
    }


def test_fairness_from_the_plans() -> None:
    huey = harness.Peer("huey", facts=_facts((10, 10), (1, 1)))
    rq = harness.Peer("rq", facts=_facts((1, 1), None))
    saq = harness.Peer("saq", facts=_facts((10, 10), None))
    assert huey.own_differs(1) and huey.own_differs(2) and not saq.own_differs(1)
    assert huey.runs_at(2, 10) and not rq.runs_at(1, 10)
    rule = harness.fairness([huey, rq, saq], 10)
    assert rule.unequal == {"huey": set(), "rq": {1, 2}, "saq": set()}
    assert rule.own_same == {"huey": set(), "rq": {1, 2}, "saq": {1, 2}}
    assert harness.fairness([rq], 1).unequal == {"rq": set()}  # at C = 1 rq does run at C


def test_only_equal_concurrency_is_compared() -> None:
    rule = harness.Fairness(10, unequal={"rq": {1, 2}}, own_same={"rq": {1, 2}, "saq": {1, 2}})
    ours = {"drain1": 9_000.0, "lat_p50": 0.5, "bulk_enqueue": 100_000.0}
    peers = {
        "rq": {"drain1": 1_000.0, "lat_p50": 0.3, "bulk_enqueue": 20_000.0},  # lowest latency, but at 1 per process
        "huey": {"drain1": 3_000.0, "lat_p50": 0.6, "own.drain1": 4_500.0, "own.lat_p50": 0.4},
        "saq": {"drain1": 2_000.0, "lat_p50": 0.8},
    }
    rows = harness.comparison(ours, peers, rule)
    equal = {row["key"]: row for row in rows if row["setting"] == "equal"}
    own = {row["key"]: row for row in rows if row["setting"] == "own"}
    assert equal["lat_p50"]["best_peer"] == "huey" and equal["lat_p50"]["marks"] == {"rq": "*"}
    assert equal["lat_p50"]["ratio"] == 0.6 / 0.5
    assert equal["bulk_enqueue"]["best_peer"] == "rq"  # no worker runs in an enqueue figure
    assert equal["drain1"]["ratio"] == 3.0
    assert own["own.drain1"]["peers"] == {"huey": 4_500.0, "rq": 1_000.0, "saq": 2_000.0}
    assert own["own.drain1"]["marks"] == {"rq": "=", "saq": "="}
    assert own["own.drain1"]["best_peer"] == "huey"
    assert all(row["ratio"] is None and row["taskqueue"] is None for row in own.values())
    assert "own.enqueue" not in own  # only the worker figures get own rows
    text = harness.render(rows, ["rq", "huey", "saq"], {})
    assert "1000*" in text and "2000=" in text
    assert "each peer at its own best documented setting" in text
    assert not any(row["setting"] == "own" for row in harness.comparison(ours, {"saq": peers["saq"]}, rule))


def test_a_worker_of_several_commands_is_one_tree(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    worker = harness.PeerWorker([argv, argv], [tmp_path / "a.log", tmp_path / "b.log"]).start()
    try:
        assert worker.alive()
        _, _, processes = worker.rss()
        assert processes == 2
        worker.check()
    finally:
        code = worker.stop()
    assert code == -signal.SIGTERM
    assert not worker.alive() and not any(procstat.alive(pid) for pid in worker.pids)
