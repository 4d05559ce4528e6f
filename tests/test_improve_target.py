"""Error-driven function choice: the probe report counts per function the episodes that test it and the
first wrong steps about it; the improve target turns that into function weights with a floor, generate's
path sampler draws by them, and the improve report names the most weighted."""

from __future__ import annotations

import json
from collections import Counter

import networkx as nx
import pytest

from distill.eval_report import build_report, by_function, episode_row, turn_functions
from distill.improve_report import write_report
from distill.improve_target import MIN_FUNCTION_FLOOR, function_weights, target
from engine.records import DeadLetter, Episode, EpisodeTurn, Message, ToolCall, Trajectory, Verification
from graph.paths import PathSampler
from graph.paths_config import PathConfig

KINDS = ["single", "multi_turn.base", "irrelevance"]


def _episode(turns: list[EpisodeTurn]) -> Episode:
    return Episode(id="ep-multi_turn.base-0-1", path_id="multi_turn.base-0-1", kind="multi_turn", tools=[], toolkits=["bank"], turns=turns)


def _call(*names: str) -> list[ToolCall]:
    return [ToolCall(name=n, arguments={}) for n in names]


def test_turn_functions_follow_the_turn_label() -> None:
    ep = _episode([EpisodeTurn(query="q0", calls=_call("login", "balance")),
                   EpisodeTurn(query="q1", label="miss_param", missing=["amount"]),
                   EpisodeTurn(query="q2", calls=_call("withdraw")),
                   EpisodeTurn(query="q3", label="miss_func", missing=["transfer"]),
                   EpisodeTurn(query="q4", calls=_call("transfer"))])
    assert [turn_functions(ep, h) for h in range(6)] == [["balance", "login"], ["withdraw"], ["withdraw"], ["transfer"], ["transfer"], []]


def test_report_counts_tested_and_failed_functions_per_episode() -> None:
    ep = _episode([EpisodeTurn(query="q0", calls=_call("login")), EpisodeTurn(query="q1", calls=_call("withdraw"))])
    messages = [Message(role="user", content="q0"), Message(role="assistant", content="ok"),
                Message(role="user", content="q1"), Message(role="assistant", content="done")]
    wrong = Trajectory(id="t1", episode_id=ep.id, polarity="negative", tools=[], messages=messages, teacher="m",
                       verification=Verification(ok=False, errors=["turn 1: state: bank.balance: 1 (expected 2)"]))
    right = Trajectory(id="t2", episode_id=ep.id, polarity="positive", tools=[], messages=messages, teacher="m",
                       verification=Verification(ok=True))
    dead = DeadLetter(id="d", item_id=ep.id, stage="eval", error="context too long")
    rows = [episode_row(ep, wrong), episode_row(ep, right), episode_row(ep, dead)]
    assert rows[0]["step_functions"] == ["withdraw"] and rows[2]["step_functions"] == []
    assert by_function(rows) == {"login": {"n": 3, "failed": 0}, "withdraw": {"n": 3, "failed": 1}}
    assert build_report(rows, {})["by_function"]["withdraw"] == {"n": 3, "failed": 1}


def _probe_report() -> dict:
    # x fails at 6 of its 8 episodes, y at 1 of 8, z (a single test, failed) is shrunk toward the mean, w never fails.
    stats = {"x": {"n": 8, "failed": 6}, "y": {"n": 8, "failed": 1}, "z": {"n": 1, "failed": 1}, "w": {"n": 8, "failed": 0}}
    return {"by_kind": {"single": {"accuracy": 0.5, "n": 8}, "multi_turn.base": {"accuracy": 0.25, "n": 8}},
            "by_function": stats, "failures": [{"reason": "state", "toolkits": ["bank"], "step_functions": ["x"]}]}


def test_target_weights_the_failed_function_most_and_keeps_a_floor() -> None:
    doc = target(_probe_report(), KINDS, 0.05)
    weights = doc["function_weights"]
    floor = doc["function_floor"]
    assert floor == pytest.approx(0.15)  # the strata's floor as a fraction of an even share: 0.05 * 3 strata
    assert max(weights, key=weights.get) == "x" and list(weights)[0] == "x"
    assert weights["x"] > weights["z"] > weights["y"] > weights["w"] >= floor
    assert weights["z"] < weights["x"]  # one failure in one test does not outrank 6 in 8
    assert sum(weights.values()) / len(weights) == pytest.approx(1.0, abs=1e-3)
    assert doc["path_options"]["function_weights"] == weights
    assert PathConfig(**doc["path_options"]).function_weights["x"] == weights["x"]  # generate accepts it
    assert doc["top_functions"][0] == {"function": "x", "weight": weights["x"], "n": 8, "failed": 6}
    assert [t["function"] for t in doc["top_functions"]] == ["x", "z"]  # only the favoured: weight above the mean 1


def test_no_failures_or_an_old_report_tilt_no_function() -> None:
    assert function_weights({"x": {"n": 3, "failed": 0}}, 0.5) == {}
    old = _probe_report()
    del old["by_function"]
    doc = target(old, KINDS, 0.0)
    assert doc["function_weights"] == {} and "function_weights" not in doc["path_options"]
    assert function_weights({"x": {"n": 4, "failed": 4}, "y": {"n": 4, "failed": 0}}, MIN_FUNCTION_FLOOR)["y"] > 0


def test_target_weights_steer_the_sampler_toward_the_failed_function() -> None:
    graph = nx.gnp_random_graph(30, 0.12, seed=3, directed=True)
    nx.relabel_nodes(graph, {i: f"f{i}" for i in range(30)}, copy=False)
    report = {"by_kind": {}, "by_function": {f: {"n": 6, "failed": 5 if f == "f7" else 0} for f in graph}}
    options = target(report, ["single", "multi_turn.base"], 0.05)["path_options"]

    def hits(config: PathConfig) -> int:
        return sum(any("f7" in t.functions or "f7" in t.missing for t in p.turns) for p in PathSampler(graph, config=config).stream(0, n=300))

    base = hits(PathConfig(mixture=options["mixture"]))
    tilted = hits(PathConfig(**options))
    assert tilted > 3 * max(base, 1)


def test_improve_report_names_the_most_weighted_functions(tmp_path) -> None:
    (tmp_path / "round-0").mkdir()
    (tmp_path / "round-0" / "target.json").write_text(json.dumps(target(_probe_report(), KINDS, 0.05)))
    rounds = [{"round": "base", "categories": {"overall": 0.2}, "score": 0.2, "checkpoint": "m", "accepted": True, "chosen": False},
              {"round": 0, "categories": {"overall": 0.3}, "score": 0.3, "checkpoint": "c0", "accepted": True, "chosen": True}]
    doc = write_report(tmp_path, rounds, {"out": str(tmp_path), "model": "m"})
    assert doc["function_tilt"]["0"][0]["function"] == "x"
    md = (tmp_path / "report.md").read_text()
    assert "## Function tilt" in md and "- round 0: `x`" in md and "(6/8)" in md
    assert Counter(line.startswith("- round") for line in md.splitlines())[True] == 1
