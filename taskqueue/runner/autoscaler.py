"""The autoscaler's decision: how many worker processes this runner should have, from the load that all
runners share (pending tasks per live worker across the whole Redis), with hysteresis and a cooldown."""

from __future__ import annotations

from dataclasses import dataclass

from taskqueue.config import AutoscalerConfig


@dataclass(frozen=True, slots=True)
class Load:
    pending: int  # ready tasks in every queue, plus delayed tasks already due
    live_workers: int  # worker processes of every runner with a live lease
    oldest_age_s: float  # age of the oldest ready task (0 when none)

    @property
    def per_worker(self) -> float:
        return self.pending / max(self.live_workers, 1)


@dataclass(frozen=True, slots=True)
class Decision:
    direction: str  # "up", "down" or "hold"
    target: int
    reason: str


def decide(cfg: AutoscalerConfig, load: Load, current: int, since_last_s: float) -> Decision:
    """Scale up above scale_up_threshold, down below scale_down_threshold (never both: the config
    requires down < up), at most once per cooldown, always within min_workers..max_workers."""
    inputs = f"pending={load.pending}, per_worker={load.per_worker:.1f}, oldest={load.oldest_age_s:.1f}s"
    if current < cfg.min_workers:
        return Decision("up", cfg.min_workers, f"{inputs}; below min_workers {cfg.min_workers}")
    if current > cfg.max_workers:
        return Decision("down", cfg.max_workers, f"{inputs}; above max_workers {cfg.max_workers}")
    if since_last_s < cfg.cooldown_s:
        return Decision("hold", current, f"{inputs}; cooling down")
    if load.per_worker > cfg.scale_up_threshold and current < cfg.max_workers:
        target = min(cfg.max_workers, current + cfg.scale_up_count)
        return Decision(
            "up", target, f"per_worker {load.per_worker:.1f} > scale_up_threshold {cfg.scale_up_threshold:g}; {inputs}"
        )
    if load.per_worker < cfg.scale_down_threshold and current > cfg.min_workers:
        target = max(cfg.min_workers, current - cfg.scale_down_count)
        return Decision(
            "down",
            target,
            f"per_worker {load.per_worker:.1f} < scale_down_threshold {cfg.scale_down_threshold:g}; {inputs}",
        )
    return Decision("hold", current, inputs)
