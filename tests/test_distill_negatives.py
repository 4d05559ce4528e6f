"""Perturbed negatives: the rejected side is continued by the model from the wrong turn on, so
it stays consistent with its own tool outputs, and each rule's error label is what it did."""

from __future__ import annotations

import random

import pytest

from distill import negatives as neg
from distill.generate_config import GenerateConfig
from distill.pipeline import Distiller
from engine.records import Episode, EpisodeTurn, PathTurn, SignaturePath, ToolCall
from engine.teachers.sim import SimTeacher
from graph.toolkit import ToolPool
from graph.toolkits import builtin_toolkits


@pytest.fixture(scope="module")
def pool() -> ToolPool:
    return ToolPool([builtin_toolkits()["travel"]])


def _turns(messages):
    """Messages grouped per user turn."""
    out = []
    for m in messages:
        if m.role == "user":
            out.append([m])
        else:
            out[-1].append(m)
    return out


async def test_rejected_sides_part_at_the_changed_turn_and_summarise_their_own_outputs(pool) -> None:
    path = SignaturePath(id="multi_turn.base-0-1", kind="multi_turn", toolkits=["travel"], seed=3, turns=[
        PathTurn(functions=["list_airports"]), PathTurn(functions=["get_airport_code"]),
        PathTurn(functions=["search_flights"])])
    d = Distiller(pool, SimTeacher(), GenerateConfig(negatives="perturb", negatives_per_episode=3))
    records = await d.run_path(path)
    pairs = [r for k, r in records if k == "pairs"]
    assert len(pairs) >= 2
    for pair in pairs:
        chosen, rejected = _turns(pair.chosen.messages), _turns(pair.rejected.messages)
        first = next(h for h, (a, b) in enumerate(zip(chosen, rejected)) if a != b)
        assert chosen[:first] == rejected[:first]  # the shared prefix is the positive's, as it is
        for turn in rejected[first:]:
            outputs = [m.content for m in turn if m.role == "tool"]
            final = turn[-1]
            assert final.role == "assistant" and final.content
            for m in turn:
                if m.role == "tool" and m.content.startswith("Error"):
                    assert "Error" in final.content  # the model reports its own failure, not the chosen side's result
            if outputs and turn != chosen[rejected.index(turn)]:
                assert final.content != chosen[rejected.index(turn)][-1].content
        assert pair.rejected.turn_tools == pair.chosen.turn_tools and not pair.rejected.verification.ok


def _episode(*turns: EpisodeTurn, kind: str = "multi_turn") -> Episode:
    return Episode(id="ep-x", path_id="x", kind=kind, tools=[], turns=list(turns))


def test_rule_labels_follow_what_the_change_did(pool) -> None:
    login = ToolCall(name="authenticate_travel", arguments={"username": "u", "password": "p"})
    book = ToolCall(name="book_flight", arguments={"access_token": "TOK-123", "flight_id": "FL-1"})
    nested = EpisodeTurn(query="q", calls=[login, book], outputs=[{"access_token": "TOK-123"}, {"booking_id": "B-1"}])
    rng = random.Random(0)
    change = neg.rule_missing_nested(_episode(nested), pool, rng)
    assert change.error_type == "nested" and change.calls == [login]  # the dependent call was left out
    assert neg.rule_dropped_call(_episode(nested), pool, rng).calls == [book]  # only the independent one is "dropped"

    a = ToolCall(name="get_airport_code", arguments={"city": "Paris"})
    b = ToolCall(name="get_airport_code", arguments={"city": "Rome"})
    parallel = EpisodeTurn(query="q", calls=[a, b], outputs=[{"airport_code": "CDG"}, {"airport_code": "FCO"}])
    assert neg.rule_missing_nested(_episode(parallel, kind="parallel"), pool, rng) is None  # no nesting to miss
    assert neg.rule_dropped_call(_episode(parallel, kind="parallel"), pool, rng).error_type == "missed_function_or_param"

    later = EpisodeTurn(query="q2", calls=[ToolCall(name="get_booking", arguments={"access_token": "TOK-123", "booking_id": "B-1"})],
                        outputs=[{}])
    change = neg.rule_broken_dependency(_episode(nested, later), pool, random.Random(1))
    assert change.error_type in {"short_dependency", "long_dependency"}
    kinds = {neg.rule_broken_dependency(_episode(nested, later), pool, random.Random(s)).error_type for s in range(20)}
    assert kinds == {"short_dependency", "long_dependency"}  # same-turn source vs earlier-turn source
    assert neg.rule_wrong_value(_episode(nested), pool, rng).error_type == "wrong_value"
