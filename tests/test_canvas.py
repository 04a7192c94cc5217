"""How workflows are laid out as numbered steps (taskqueue.canvas): inputs, waits and the result source."""

from __future__ import annotations

import pytest

from taskqueue.canvas import chain, chord, group, lay_out, step


def test_a_chain_feeds_each_step_the_one_before() -> None:
    laid = lay_out(chain(step("a", 1), step("b"), step("c", k=2)))
    assert [(s.task, given) for s, given in laid.steps] == [("a", None), ("b", 0), ("c", 1)]
    assert laid.out == 2
    assert laid.dependents() == {0: [1], 1: [2]}


def test_a_group_inside_a_chain_gets_the_result_before_it_and_passes_on_its_list() -> None:
    laid = lay_out(chain(step("a"), group(step("b"), chain(step("c"), step("d"))), step("e")))
    assert [(s.task, given) for s, given in laid.steps] == [("a", None), ("b", 0), ("c", 0), ("d", 2), ("e", [1, 3])]
    assert laid.waits(4) == [1, 3]
    assert laid.out == 4


def test_a_chord_is_a_group_then_its_callback() -> None:
    laid = lay_out(chord([step("h", n) for n in range(3)], step("cb")))
    assert [given for _, given in laid.steps] == [None, None, None, [0, 1, 2]]
    assert laid.dependents() == {0: [3], 1: [3], 2: [3]}
    nested = lay_out(group(group(step("x"), step("y")), step("z")))
    assert nested.out == [[0, 1], 2]


def test_empty_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        chain()
    with pytest.raises(ValueError, match="at least one"):
        group([])
    with pytest.raises(TypeError, match="not a workflow part"):
        lay_out(chain("a"))  # type: ignore[arg-type]
