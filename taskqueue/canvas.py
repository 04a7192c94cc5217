"""Workflows as values (SPEC §10): `step`, `chain`, `group`, `chord`, and how one is laid out as numbered
steps for Redis. Client-safe (no Redis, msgpack only).

    chain(step("fetch", url), step("parse"), step("store", bucket="b"))
    group(step("resize", img, s) for s in sizes)
    chord([step("count", p) for p in pages], step("total"))

A chain passes each result to the next step as its first argument; a group's result is the list of its
members' results, in order; a chord is a group whose list goes to a callback. They nest.

Layout: every step gets an index; its *input* is the source of its first argument: None (nothing to
prepend), a step index (that step's result) or a list of sources (a group's results, in order). A step
starts when every step its input names has succeeded. The workflow's own result is the source `out`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import msgpack

Source = Union[int, list["Source"], None]  # noqa: UP007 - a recursive alias


@dataclass(frozen=True)
class Step:
    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    parts: tuple[Flow, ...]


@dataclass(frozen=True)
class Group:
    parts: tuple[Flow, ...]


Flow = Union[Step, Chain, Group]  # noqa: UP007 - forward references


def step(task: str, *args: Any, **kwargs: Any) -> Step:
    """One call of a declared task."""
    return Step(task, args, kwargs)


def chain(*parts: Flow) -> Chain:
    """Each part starts after the one before succeeded, with its result prepended to the part's args."""
    if not parts:
        raise ValueError("chain() needs at least one step")
    return Chain(tuple(parts))


def group(*parts: Flow | Iterable[Flow]) -> Group:
    """All parts start at once; the group's result is the list of their results, in order.
    `group(a, b)` or `group(generator_of_steps)`."""
    flat: list[Flow] = []
    for part in parts:
        if isinstance(part, Step | Chain | Group):
            flat.append(part)
        else:
            flat.extend(part)
    if not flat:
        raise ValueError("group() needs at least one step")
    return Group(tuple(flat))


def chord(header: Group | Iterable[Flow], callback: Flow) -> Chain:
    """The callback runs once, after every member of the header succeeded, with their results' list."""
    return Chain((header if isinstance(header, Group) else group(header), callback))


@dataclass(frozen=True)
class Laid:
    """A workflow laid out: its steps in index order, each with its input source; the result source."""

    steps: tuple[tuple[Step, Source], ...]
    out: Source

    def waits(self, index: int) -> list[int]:
        """The steps that must succeed before step `index` can start."""
        return sorted(set(_indices(self.steps[index][1])))

    def dependents(self) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for index in range(len(self.steps)):
            for before in self.waits(index):
                found.setdefault(before, []).append(index)
        return found


def lay_out(flow: Flow, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Laid:
    """Number the steps. `args`/`kwargs` (a message that named a YAML workflow) go to the first step(s):
    prepended to their args, merged over their kwargs."""
    steps: list[tuple[Step, Source]] = []

    def place(node: Flow, given: Source) -> Source:
        if isinstance(node, Step):
            if given is None and (args or kwargs):
                node = Step(node.task, (*args, *node.args), {**node.kwargs, **(kwargs or {})})
            steps.append((node, given))
            return len(steps) - 1
        if isinstance(node, Chain):
            source = given
            for part in node.parts:
                source = place(part, source)
            return source
        if isinstance(node, Group):
            return [place(part, given) for part in node.parts]
        raise TypeError(f"not a workflow part: {node!r} (use step, chain, group or chord)")

    out = place(flow, None)
    return Laid(tuple(steps), out)


def _indices(source: Source) -> Iterable[int]:
    if source is None:
        return
    if isinstance(source, int):
        yield source
        return
    for part in source:
        yield from _indices(part)


def pack_source(source: Source) -> bytes:
    """A source as the workflow scripts read it (cmsgpack: an integer step index, or an array)."""
    packed: bytes = msgpack.packb(source)
    return packed


STEP_STATES = ("pending", "queued", "succeeded", "failed", "cancelled")


def view(workflow_id: str, fields: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    """`Client.workflow()`: {"id", "state", "steps": [{"index", "id", "task", "state"}, ...]}; None: unknown."""
    if not fields:
        return None
    text = {k.decode(): v for k, v in fields.items()}
    state = text["state"].decode()
    steps: list[dict[str, Any]] = []
    for index in range(int(text["steps"])):
        step_state = text.get(f"s:{index}", b"pending").decode()
        if state in ("failed", "cancelled") and step_state == "pending":
            step_state = "cancelled"  # depends on a failed step: it will not start unless the workflow resumes
        steps.append(
            {
                "index": index,
                "id": f"{workflow_id}.{index}",
                "task": text[f"t:{index}"].decode(),
                "state": step_state,
            }
        )
    return {"id": workflow_id, "state": state, "steps": steps}


def step_ids(workflow_id: str, count: int) -> Sequence[str]:
    return [f"{workflow_id}.{index}" for index in range(count)]
