"""`magnet graph build|show|stats` and `magnet paths sample`, run in-process on the built-in toolkits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec
import pytest

from engine.cli import main as magnet
from engine.errors import UserInputError
from engine.records import SignaturePath
from graph.cli import graph_main, paths_main
from graph.depgraph import load_graph


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("graph") / "graph.json"
    assert graph_main(["build", "--toolkits", "builtin", "--out", str(out)]) == 0
    return out


def test_build_writes_graph_and_summary(graph_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = load_graph(graph_file)
    assert graph.number_of_nodes() >= 120 and graph.has_edge("search_flights", "book_flight")
    assert graph_main(["stats", str(graph_file)]) == 0
    out = capsys.readouterr().out
    for label in ("functions (nodes)", "dependencies (edges)", "weakly connected components", "isolated functions"):
        assert label in out
    assert str(graph.number_of_edges()) in out


def test_build_subset_gz_and_sim_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAGNET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "g.json.gz"
    assert graph_main(["build", "--toolkits", "travel", "banking", "--teacher", "sim", "--nested", "--out", str(out)]) == 0
    graph = load_graph(out)
    assert {graph.nodes[n]["toolkit"] for n in graph} == {"travel", "banking"}
    assert any("judge" in how for *_, how in graph.edges(data="how"))
    assert "judge" in capsys.readouterr().out
    assert any((tmp_path / "cache" / "graph_judge").rglob("*.json"))  # answers cached on disk


def test_stats_json(graph_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert graph_main(["stats", str(graph_file), "--json"]) == 0
    stats = msgspec.json.decode(capsys.readouterr().out)
    assert stats["nodes"] == load_graph(graph_file).number_of_nodes()


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_show_draws_a_neighbourhood(graph_file: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"pic{suffix}"
    assert graph_main(["show", str(graph_file), "--node", "book_flight", "--depth", "1", "--out", str(out)]) == 0
    data = out.read_bytes()
    if suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    else:
        text = data.decode()
        assert "<svg" in text and "book_flight" in text and "search_flights" in text and "<script" not in text


def test_paths_sample_writes_jsonl_and_summary(graph_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "paths.jsonl"
    assert paths_main(["sample", "--graph", str(graph_file), "--n", "340", "--seed", "7", "--out", str(out)]) == 0
    paths = [msgspec.json.decode(line, type=SignaturePath) for line in out.read_bytes().splitlines()]
    assert len(paths) == 340 and len({p.id for p in paths}) == 340
    kinds = Counter(p.kind for p in paths)
    assert kinds["multi_turn"] == 78 and kinds["irrelevance"] == 62
    summary = capsys.readouterr().out
    assert "avg turns" in summary and "multi_turn" in summary and "merge" in summary
    again = tmp_path / "again.jsonl"
    assert paths_main(["sample", "--graph", str(graph_file), "--n", "340", "--seed", "7", "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()  # same seed, same file


def test_paths_kinds_and_config(graph_file: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "paths.toml"
    cfg.write_text("p_split = 1.0\nwalk_steps = 3\n")
    out = tmp_path / "mt.jsonl"
    assert paths_main(["sample", "--graph", str(graph_file), "--n", "40", "--kinds", "multi_turn",
                       "--config", str(cfg), "--out", str(out)]) == 0
    paths = [msgspec.json.decode(line, type=SignaturePath) for line in out.read_bytes().splitlines()]
    assert {p.kind for p in paths} == {"multi_turn"}
    assert all("split" in p.ops for p in paths)
    # S=3 walk + at most 2 inserts + the logins that issue the tokens its calls need
    assert all(sum(len(t.functions) for t in p.turns) <= 4 + 2 + p.ops.count("login") for p in paths)


def test_help_config_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert paths_main(["sample", "--help-config"]) == 0
    out = capsys.readouterr().out
    for field in ("walk_steps", "p_merge", "p_split", "mixture", "irrelevance_distractors"):
        assert field in out


def test_bad_input(graph_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    cases = [
        (graph_main, ["build", "--toolkits", "nosuchkit", "--out", str(tmp_path / "x.json")], "unknown toolkit"),
        (graph_main, ["build", "--toolkits", str(tmp_path / "missing.py"), "--out", str(tmp_path / "x.json")], "no such file"),
        (graph_main, ["build", "--threshold", "7", "--out", str(tmp_path / "x.json")], "threshold"),
        (graph_main, ["build"], "--out"),
        (graph_main, ["stats", str(bad)], "not valid JSON"),
        (graph_main, ["stats", str(tmp_path / "none.json")], "not found"),
        (graph_main, ["show", str(graph_file), "--node", "book_flihgt", "--out", str(tmp_path / "p.html")], "did you mean book_flight"),
        (graph_main, ["show", str(graph_file), "--node", "book_flight", "--out", str(tmp_path / "p.svg")], ".png or .html"),
        (paths_main, ["sample", "--n", "3"], "--graph is required"),
        (paths_main, ["sample", "--graph", str(graph_file), "--n", "-1"], "--n"),
        (paths_main, ["sample", "--graph", str(graph_file), "--kinds", "weird"], "invalid choice"),
        (paths_main, ["sample", "--graph", str(bad)], "not valid JSON"),
    ]
    for func, argv, message in cases:
        with pytest.raises(UserInputError, match=message):
            func(argv)
    cfg = tmp_path / "bad.toml"
    cfg.write_text("p_merge = 9\n")
    with pytest.raises(UserInputError, match="p_merge"):
        paths_main(["sample", "--graph", str(graph_file), "--config", str(cfg)])
    assert not (tmp_path / "x.json").exists()


def test_router_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert magnet(["graph", "stats", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("magnet graph: error: graph file") and err.count("\n") == 1
