"""The scaling decision on its own: thresholds, bounds, cooldown (pure function, no processes)."""

from __future__ import annotations

from taskqueue.config import AutoscalerConfig
from taskqueue.runner.autoscaler import Load, decide

CFG = AutoscalerConfig(True, 1, 4, 5.0, 1.0, 2, 1, 1.0, 10.0)


def test_scales_up_by_scale_up_count_above_the_threshold_and_stops_at_max() -> None:
    assert decide(CFG, Load(30, 2, 0.0), 2, 60).target == 4
    assert decide(CFG, Load(300, 4, 0.0), 4, 60).direction == "hold"
    up = decide(CFG, Load(800, 2, 3.0), 2, 60)
    assert (up.direction, up.target) == ("up", 4)
    assert up.reason == "per_worker 400.0 > scale_up_threshold 5; pending=800, per_worker=400.0, oldest=3.0s"


def test_scales_down_one_at_a_time_below_the_threshold_and_stops_at_min() -> None:
    assert (decide(CFG, Load(0, 3, 0.0), 3, 60).direction, decide(CFG, Load(0, 3, 0.0), 3, 60).target) == ("down", 2)
    assert decide(CFG, Load(0, 1, 0.0), 1, 60).direction == "hold"


def test_between_the_thresholds_or_within_the_cooldown_it_holds() -> None:
    assert decide(CFG, Load(6, 2, 0.0), 2, 60).direction == "hold"  # 3 per worker: 1 < 3 < 5
    assert decide(CFG, Load(800, 2, 0.0), 2, 5).direction == "hold"  # 5 s after the last change, cooldown 10 s


def test_bounds_win_over_the_cooldown() -> None:
    assert decide(CFG, Load(0, 0, 0.0), 0, 0).target == 1
    assert decide(CFG, Load(0, 6, 0.0), 6, 0).target == 4


def test_shared_signal_counts_every_runners_workers() -> None:
    # 20 pending over 8 live workers on all runners is 2.5 each: this runner with 2 does not scale up
    assert decide(CFG, Load(20, 8, 0.0), 2, 60).direction == "hold"
