"""Signature paths: property tests of the walk, Merge, Insert and Split invariants, the mixture,
and reproducibility, on random graphs drawn by hypothesis."""

from __future__ import annotations

from argparse import Namespace
from collections import Counter

import msgspec
import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import UserInputError
from engine.records import PathTurn, SignaturePath
from graph.cli import PATHS_CLI
from graph.paths import PathRng, PathSampler, apportion, kind_schedule, sample_paths
from graph.paths_config import KINDS, PathConfig, path_config

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def graphs(draw: st.DrawFn, min_nodes: int = 2) -> nx.DiGraph:
    """A random dependency graph: functions in 1-4 toolkits, random edges, some nested, some required params."""
    n = draw(st.integers(min_nodes, 24))
    g = nx.DiGraph(format="magnet-graph", version=1)
    for i in range(n):
        required = [f"p{j}" for j in range(draw(st.integers(0, 2)))]
        g.add_node(f"f{i}", name=f"f{i}", description="", toolkit=f"tk{draw(st.integers(0, 3))}",
                   parameters={"type": "object", "properties": {p: {"type": "string"} for p in required}, "required": required})
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.booleans()), max_size=4 * n))
    for a, b, nested in pairs:
        if a != b:
            g.add_edge(f"f{a}", f"f{b}", nested=nested, score=1.0, fields=[], how="matcher")
    return g


configs = st.builds(
    PathConfig,
    walk_steps=st.integers(0, 9),
    p_merge=st.floats(0, 1),
    max_functions_per_turn=st.integers(1, 4),
    p_insert=st.floats(0, 1),
    p_insert_long=st.floats(0, 1),
    max_inserts=st.integers(0, 3),
    p_split=st.floats(0, 1),
    p_miss_param=st.floats(0, 1),
)


def _flat(turns: list[list[int]] | list[PathTurn]) -> list:
    return [f for t in turns for f in (t.functions if isinstance(t, PathTurn) else t)]


@SETTINGS
@given(graphs(), configs, st.integers(0, 2**40))
def test_walk_follows_edges_without_repeats(graph: nx.DiGraph, config: PathConfig, seed: int) -> None:
    sampler = PathSampler(graph, config=config)
    walk = sampler.walk(PathRng(seed, 0))
    assert 1 <= len(walk) <= config.walk_steps + 1
    assert len(set(walk)) == len(walk)
    names = [sampler.names[i] for i in walk]
    assert all(graph.has_edge(a, b) for a, b in zip(names, names[1:]))
    # It stops early only at a dead end: every unvisited out-neighbour would have been a valid step.
    if len(walk) < config.walk_steps + 1:
        assert all(v in set(names) for v in graph.successors(names[-1]))


@SETTINGS
@given(graphs(), configs, st.integers(0, 2**40))
def test_merge_keeps_order_and_cap(graph: nx.DiGraph, config: PathConfig, seed: int) -> None:
    sampler = PathSampler(graph, config=config)
    rng = PathRng(seed, 1)
    turns = [[f] for f in sampler.walk(rng)]
    ops: list[str] = []
    merged = sampler.merge(rng, turns, ops)
    assert _flat(merged) == _flat(turns)
    assert all(1 <= len(t) <= config.max_functions_per_turn for t in merged)
    assert ops.count("merge") == len(turns) - len(merged)


@SETTINGS
@given(graphs(), configs, st.integers(0, 2**40))
def test_insert_adds_nested_successors_only(graph: nx.DiGraph, config: PathConfig, seed: int) -> None:
    sampler = PathSampler(graph, config=config)
    rng = PathRng(seed, 2)
    base = sampler.merge(rng, [[f] for f in sampler.walk(rng)], [])
    ops: list[str] = []
    out = sampler.insert(rng, [list(t) for t in base], ops)
    added = [f for f in _flat(out) if f not in set(_flat(base))]
    assert len(added) == ops.count("insert_nested") + ops.count("insert_long") <= config.max_inserts
    assert len(set(_flat(out))) == len(_flat(out))
    # the original functions keep their relative order, and every added one is nested after some function
    assert [f for f in _flat(out) if f in set(_flat(base))] == _flat(base)
    nested_targets = {c for f in _flat(out) for c in sampler.nested[f]}
    assert all(f in nested_targets for f in added)
    assert all(len(t) <= max(config.max_functions_per_turn, 1) for t in out)


@SETTINGS
@given(graphs(), configs, st.integers(0, 2**40))
def test_split_adds_exactly_one_labelled_empty_turn(graph: nx.DiGraph, config: PathConfig, seed: int) -> None:
    sampler = PathSampler(graph, config=config)
    rng = PathRng(seed, 3)
    turns = [PathTurn(functions=[sampler.names[f] for f in t]) for t in sampler.merge(rng, [[f] for f in sampler.walk(rng)], [])]
    ops: list[str] = []
    out = sampler.split(rng, turns, ops)
    assert len(out) == len(turns) + 1 and ops == ["split"]
    empty = [i for i, t in enumerate(out) if not t.functions]
    assert len(empty) == 1
    h = empty[0]
    hole = out[h]
    assert hole.label in ("miss_func", "miss_param") and len(hole.missing) == 1
    assert out[:h] + out[h + 1:] == turns  # the other turns are untouched, in order
    restored = out[h + 1].functions  # the turn right after restores what was missing
    if hole.label == "miss_func":
        assert hole.missing[0] in restored
    else:
        func, param = hole.missing[0].split(".")
        assert func in restored and param in sampler.required[sampler.index[func]]


@SETTINGS
@given(graphs(), configs, st.integers(0, 2**40))
def test_paths_are_well_formed(graph: nx.DiGraph, config: PathConfig, seed: int) -> None:
    for path in sample_paths(graph, None, config, seed, n=36):
        calls = _flat(path.turns)
        assert all(f in graph for f in calls + path.distractors)
        assert path.id.startswith(f"{path.kind}-{seed}-")
        if path.kind == "multi_turn":
            assert len(set(calls)) == len(calls)  # no function repeats in a walk, even after Insert
            assert sum(1 for t in path.turns if t.label != "call") == path.ops.count("split") <= 1
            assert all(bool(t.functions) == (t.label == "call") for t in path.turns)
        elif path.kind == "parallel":
            assert len(set(calls)) == 1 and config.parallel_calls[0] <= len(calls) <= config.parallel_calls[1]
        elif path.kind == "multiple":
            assert len(calls) == 1 and calls[0] not in path.distractors and len(set(path.distractors)) == len(path.distractors) >= 1
        elif path.kind == "parallel_multiple":
            assert len(set(calls)) >= 2 and len(calls) <= config.parallel_multiple_calls[1]
        elif path.kind == "irrelevance":
            assert path.turns[0].label == "miss_func" and path.turns[0].missing == calls
            assert calls[0] not in path.distractors and len(path.distractors) >= 1


@SETTINGS
@given(graphs(), st.integers(0, 2**40), st.integers(0, 50))
def test_same_seed_same_stream_and_resume_at_any_index(graph: nx.DiGraph, seed: int, start: int) -> None:
    a = list(sample_paths(graph, None, PathConfig(), seed, n=60))
    b = list(sample_paths(graph, None, PathConfig(), seed, n=60))
    assert a == b
    assert list(sample_paths(graph, None, PathConfig(), seed, n=60, start=start)) == a[start:]
    assert len({p.id for p in a}) == len(a)


def test_different_seeds_differ() -> None:
    graph = nx.complete_graph(12, create_using=nx.DiGraph)
    nx.relabel_nodes(graph, {i: f"f{i}" for i in range(12)}, copy=False)
    a = [p.turns for p in sample_paths(graph, None, PathConfig(), 1, n=50)]
    b = [p.turns for p in sample_paths(graph, None, PathConfig(), 2, n=50)]
    assert a != b


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(KINDS), st.integers(0, 50), min_size=1).filter(lambda d: sum(d.values()) > 0),
       st.integers(0, 300))
def test_mixture_counts_respected(weights: dict[str, int], n: int) -> None:
    counts = apportion({k: float(w) for k, w in weights.items() if w}, n)
    assert sum(counts.values()) == n
    total = sum(weights.values())
    assert all(abs(counts[k] - n * w / total) < 1 for k, w in weights.items() if w)
    assert Counter(kind_schedule({k: float(w) for k, w in weights.items() if w}, counts)) == +Counter(counts)


def test_mixture_in_a_real_stream_and_default_counts() -> None:
    graph = nx.path_graph([f"f{i}" for i in range(10)], create_using=nx.DiGraph)
    cfg = PathConfig(mixture={"single": 3, "multi_turn": 2, "irrelevance": 1})
    paths = list(sample_paths(graph, None, cfg, 0))  # whole-number weights and no n: exactly those counts
    assert Counter(p.kind for p in paths) == {"single": 3, "multi_turn": 2, "irrelevance": 1}
    paths = list(sample_paths(graph, None, PathConfig(), 0, n=3400))  # paper's 20k : 7.8k : 6.2k, rescaled
    kinds = Counter(p.kind for p in paths)
    assert kinds["multi_turn"] == 780 and kinds["irrelevance"] == 620
    assert sum(kinds[k] for k in ("single", "parallel", "multiple", "parallel_multiple")) == 2000
    # every prefix is mixed: the first 34 paths already hold every kind
    assert set(p.kind for p in paths[:34]) == set(KINDS)


def test_fraction_mixture_is_an_endless_stream() -> None:
    graph = nx.path_graph(["a", "b", "c"], create_using=nx.DiGraph)
    stream = sample_paths(graph, None, PathConfig(mixture={"single": 0.25, "multi_turn": 0.75}), 5)
    first = [next(stream) for _ in range(4000)]
    assert Counter(p.kind for p in first) == {"single": 1000, "multi_turn": 3000}


def test_paths_round_trip_through_json() -> None:
    graph = nx.path_graph(["a", "b", "c", "d"], create_using=nx.DiGraph)
    for path in sample_paths(graph, None, PathConfig(), 0, n=30):
        assert msgspec.json.decode(msgspec.json.encode(path), type=SignaturePath) == path


def test_toolkits_come_from_the_specs() -> None:
    graph = nx.DiGraph()
    graph.add_node("a", toolkit="t1", parameters={"type": "object", "properties": {}})
    graph.add_node("b", toolkit="t2", parameters={"type": "object", "properties": {}})
    graph.add_edge("a", "b", nested=True)
    cfg = PathConfig(mixture={"multi_turn": 1}, p_merge=0.0, p_split=0.0, p_insert=0.0, walk_steps=1)
    path = next(sample_paths(graph, None, cfg, 0, n=1))
    assert [t.functions for t in path.turns] == [["a"], ["b"]] and path.toolkits == ["t1", "t2"]


# --- bad input --------------------------------------------------------------------------


def test_bad_config_values_are_user_errors(tmp_path) -> None:
    for bad in ({"p_merge": 1.5}, {"walk_steps": -1}, {"parallel_calls": [3, 2]}, {"mixture": {"nope": 1}},
                {"mixture": {"single": 0}}, {"unknown_field": 1}, {"multiple_choices": [1]}):
        with pytest.raises(UserInputError):
            path_config(bad)
    toml = tmp_path / "c.toml"
    toml.write_text("p_merge = 2.0\n")
    with pytest.raises(UserInputError, match="p_merge"):
        PATHS_CLI.load(Namespace(config=toml))
    toml.write_text("p_merge = [\n")
    with pytest.raises(UserInputError, match="not valid TOML"):
        PATHS_CLI.load(Namespace(config=toml))
    with pytest.raises(UserInputError, match="cannot be read"):
        PATHS_CLI.load(Namespace(config=tmp_path / "missing.toml"))
    toml.write_text("p_merge = 0.1\nwalk_steps = 3\n")
    assert PATHS_CLI.load(Namespace(config=toml)).walk_steps == 3


def test_bad_sampler_input_is_user_error() -> None:
    with pytest.raises(UserInputError, match="no functions"):
        PathSampler(nx.DiGraph())
    one = nx.DiGraph()
    one.add_node("only")
    with pytest.raises(UserInputError, match="at least two functions"):
        sample_paths(one, None, PathConfig(), 0, n=5)
    graph = nx.path_graph(["a", "b"], create_using=nx.DiGraph)
    with pytest.raises(UserInputError, match="negative"):
        sample_paths(graph, None, PathConfig(), 0, n=-1)
    with pytest.raises(UserInputError, match="negative"):
        sample_paths(graph, None, PathConfig(), 0, start=-3)
    with pytest.raises(UserInputError, match="no spec for function"):
        sample_paths(graph, [], PathConfig(), 0)
    with pytest.raises(UserInputError):  # constraints are checked even on a directly built config
        PathSampler(graph, config=PathConfig(p_merge=3.0))


# --- function weights ---------------------------------------------------------------------


def _ring_graph() -> nx.DiGraph:
    """30 functions in 3 toolkits, 78 fixed edges (a third nested): built by hand so its paths can be pinned."""
    g = nx.DiGraph()
    for i in range(30):
        g.add_node(f"f{i}", toolkit=f"tk{i % 3}", parameters={"type": "object", "required": ["a"] if i % 4 == 0 else []})
    for i in range(30):
        for k in (1, 5, 11):
            if (i * k) % 7 != 3:
                g.add_edge(f"f{i}", f"f{(i * 3 + k) % 30}", nested=(i + k) % 3 == 0)
    return g


def _paths_with(paths: list[SignaturePath], name: str) -> int:
    return sum(any(name in t.functions or name in t.missing for t in p.turns) for p in paths)


def test_a_function_weight_puts_the_function_in_many_more_paths() -> None:
    graph = _ring_graph()
    plain = list(sample_paths(graph, None, PathConfig(), 0, n=400))
    tilted = list(sample_paths(graph, None, PathConfig(function_weights={"f7": 20.0}), 0, n=400))
    assert _paths_with(tilted, "f7") > 3 * _paths_with(plain, "f7")  # measured 169 vs 39
    assert tilted == list(sample_paths(graph, None, PathConfig(function_weights={"f7": 20.0}), 0, n=400))  # seeded
    assert Counter(p.kind for p in tilted) == Counter(p.kind for p in plain)  # the mixture is untouched


def test_no_function_weights_keep_the_paths_byte_identical() -> None:
    import hashlib

    paths = list(sample_paths(_ring_graph(), None, PathConfig(function_weights={}), 11, n=400))
    # Pinned before function_weights existed: unweighted draws must stay the uniform ones.
    digest = hashlib.sha256(b"".join(msgspec.json.encode(p) for p in paths)).hexdigest()
    assert digest == "979da2a3d9f634b090e72f3a8eeb33a03c5d3258ec42b49ce23351ada93bbb7c"


@SETTINGS
@given(graphs(), configs, st.integers(0, 2**40), st.dictionaries(st.integers(0, 23), st.floats(0.01, 50), max_size=6))
def test_weighted_walks_still_follow_edges_without_repeats(graph: nx.DiGraph, config: PathConfig, seed: int, weights: dict[int, float]) -> None:
    config.function_weights = {f"f{i}": w for i, w in weights.items() if f"f{i}" in graph}
    sampler = PathSampler(graph, config=config)
    for i in range(10):
        walk = sampler.walk(PathRng(seed, i))
        assert len(set(walk)) == len(walk) and len(walk) <= config.walk_steps + 1
        assert all(graph.has_edge(sampler.names[a], sampler.names[b]) for a, b in zip(walk, walk[1:]))
    for path in sample_paths(graph, None, config, seed, n=30):
        assert path.turns and all(f in graph for t in path.turns for f in t.functions)


def test_bad_function_weights_are_user_errors() -> None:
    graph = nx.path_graph(["a", "b"], create_using=nx.DiGraph)
    with pytest.raises(UserInputError, match="function_weights: no function 'nope'"):
        PathSampler(graph, config=PathConfig(function_weights={"nope": 2.0}))
    for bad in ({"a": 0.0}, {"a": -1.0}, {"a": "x"}):
        with pytest.raises(UserInputError, match="function_weights"):
            path_config({"function_weights": bad})
