"""How a feature takes part in a task's life, without editing the core (Dramatiq's middleware in spirit,
but atomic and free for tasks that do not use it).

A feature is a `Feature` subclass. The worker asks `wants(task)` once per task name; a task no feature
wants runs exactly as before, with no Redis command and no Python call of any feature. For a task it
wants, a feature can

- hold it back before it starts: `admission(env, task, queue)` returns None (start now) or a gate that the
  worker passes through its admit script (features/limits.py: admit.lua); a run the gate refuses leaves the
  worker for the gate's waiting list, without counting an attempt and without keeping a slot;
- join its settle step: `on_settle(outcome, task)` returns an `Effect` or None. An effect is a tuple
  `(hook, *args)` that the settle script itself applies — in the same atomic script that acknowledges,
  retries or dead-letters the task, and only if this worker still held it — through the Lua fragment
  `taskqueue/store/lua/hooks/<hook>.lua`, which declares `arity.<hook> = <number of args>` and
  `hooks.<hook> = function(argv, i) ... return i + <number of args> end`. Keys travel as arguments: every
  key shares the deployment's prefix (and hash tag with Cluster), so the script stays on one slot.

The first feature built this way is `results` (the result write); workflows, unique jobs, limits, cancel
and events are each meant to be one module here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from taskqueue.envelope import Envelope

Effect = tuple[Any, ...]  # (hook name, its arguments...): applied by lua/hooks/<hook name>.lua


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as a feature sees it."""

    status: Literal["ok", "retry", "dead", "cancelled"]
    env: Envelope
    queue: str
    value: Any = None
    error: str | None = None


class Feature:
    """Override what the feature needs; the defaults do nothing and cost nothing. A feature that concerns only
    some messages of a task (workflow steps) names their id prefix in `id_prefix`: for other messages it is
    not called at all."""

    id_prefix: str | None = None

    def wants(self, task: Any) -> bool:
        """Does this feature take part in runs of `task` (a TaskConfig)? Asked once per task name."""
        return False

    def admission(self, env: Envelope, task: Any, queue: str) -> Any | None:
        """The gate this run must pass in Redis before it starts, or None (most features, most tasks)."""
        return None

    def on_settle(self, outcome: Outcome, task: Any) -> Effect | None:
        return None


class Hooks:
    """The features of one worker process, and which of them each task uses (decided once per name)."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = tuple(features)
        self._of: dict[str, tuple[Feature, ...]] = {}
        self._starts: dict[str, tuple[Feature, ...]] = {}

    def of(self, name: str, task: Any) -> tuple[Feature, ...]:
        found = self._of.get(name)
        if found is None:
            found = self._of[name] = tuple(f for f in self.features if f.wants(task))
            overrides = [f for f in found if type(f).admission is not Feature.admission]
            self._starts[name] = tuple(overrides)
        return found

    def starters(self, name: str, task: Any) -> tuple[Feature, ...]:
        """The features of `task` that may hold a run back (most tasks: none)."""
        found = self._starts.get(name)
        if found is None:
            self.of(name, task)
            found = self._starts[name]
        return found

    @staticmethod
    def gate(starters: tuple[Feature, ...], env: Envelope, task: Any, queue: str) -> Any | None:
        """The first gate any of them asks this run to pass, or None."""
        for feature in starters:
            found = feature.admission(env, task, queue)
            if found is not None:
                return found
        return None

    @staticmethod
    def settle(
        features: tuple[Feature, ...],
        status: Literal["ok", "retry", "dead", "cancelled"],
        env: Envelope,
        queue: str,
        task: Any,
        value: Any = None,
        error: str | None = None,
    ) -> list[Effect]:
        """The effects of this settle; the Outcome is built only when some feature is concerned."""
        effects: list[Effect] = []
        outcome: Outcome | None = None
        for feature in features:
            if feature.id_prefix is not None and not env.id.startswith(feature.id_prefix):
                continue
            outcome = outcome or Outcome(status, env, queue, value, error)
            effect = feature.on_settle(outcome, task)
            if effect is not None:
                effects.append(effect)
        return effects
