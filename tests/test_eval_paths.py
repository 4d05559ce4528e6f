"""`magnet eval paths` end to end: a test set authored by the simulator on real toolkits, models run on
it with every call executed, graded by state: the reference replay scores 100% on every kind in both
modes, a model that never calls scores 0 on call kinds and 100% on irrelevance, one wrong argument
value fails by state at the right turn, and reruns resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from distill.eval_config import STRATA, TESTSET_SEED_OFFSET
from distill.eval_paths import (
    REPORT_JSON,
    REPORT_MD,
    TESTSET_FILE,
    evaluate,
    load_config,
    resolve_testset,
)
from distill.eval_paths import main as eval_paths_main
from distill.eval_replay import ReplayModel
from distill.parsers import validate_call
from distill.verify import replay_reference
from engine.cli import main as magnet
from engine.errors import UserInputError
from engine.records import ToolCall
from engine.scheduler import run
from engine.store import RunStore, read_records
from graph.pool import tool_pool

TOOLKITS = "travel,banking,files,calendar"
CALL_KINDS = [k for k in STRATA if k != "irrelevance"]


def _eval(out: Path, testset: Path, *extra: str) -> dict[str, Any]:
    """`magnet eval paths` through the real router; returns report.json."""
    assert magnet(["eval", "paths", "--out", str(out), "--testset", str(testset), "--no-progress", *extra]) == 0
    return json.loads((out / REPORT_JSON).read_text())


@pytest.fixture(scope="module")
def authored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A test set of every stratum (3 each) authored by sim, and the replay's prompt-mode report on it."""
    root = tmp_path_factory.mktemp("eval")
    testset = root / "testset"
    report = _eval(root / "replay-prompt", testset, "--model", "replay", "--toolkits", TOOLKITS, "--per-kind", "3", "--draw-factor", "20")
    return testset, report


def test_replay_of_the_references_scores_100_on_every_kind_in_both_modes(authored, tmp_path):
    testset, prompt = authored
    fc = _eval(tmp_path / "replay-fc", testset, "--model", "replay", "--mode", "fc")
    # the test set covers the single-turn kinds, the multi-turn variants and irrelevance
    assert {"single", "parallel", "multiple", "parallel_multiple", "multi_turn.base", "multi_turn.miss_func",
            "multi_turn.miss_param", "irrelevance"} <= set(prompt["by_kind"])
    for report in (prompt, fc):
        assert report["overall"]["n"] == report["episodes"] >= 20 and report["pending"] == 0
        assert all(s["accuracy"] == 1.0 for s in report["by_kind"].values()), report["by_kind"]
        assert all(s["accuracy"] == 1.0 for s in report["by_toolkit"].values())
        assert report["failures"] == []
    assert fc["mode"] == "fc" and set(fc["by_kind"]) == set(prompt["by_kind"])
    # the test set is held out: its paths come from the disjoint seed space, recorded for training runs to check
    manifest = json.loads((testset / "manifest.json").read_text())["extra"]["eval_testset"]
    assert manifest["path_seed"] == TESTSET_SEED_OFFSET and manifest["seed_offset"] == TESTSET_SEED_OFFSET
    assert all(f"-{TESTSET_SEED_OFFSET}-" in p.id for p in read_records(testset, "paths"))
    # what is stored per episode: the conversation the model had, without hints, verified by state
    stored = list(read_records(tmp_path / "replay-fc", "trajectories"))
    assert len(stored) == fc["episodes"] and all(t.verification.ok and t.polarity == "positive" for t in stored)
    assert not any("[Hint]" in (m.content or "") for t in stored for m in t.messages)
    assert any(m.tool_calls for t in stored for m in t.messages)  # fc mode: native tool calls


def test_a_model_that_never_calls_scores_0_on_calls_and_100_on_irrelevance(authored, tmp_path):
    testset, _ = authored
    script = tmp_path / "never.json"
    script.write_text(json.dumps([{"match": "", "content": "Sorry, I would rather not use any function here."}]))
    report = _eval(tmp_path / "never", testset, "--model", f"sim:{script}")
    assert report["by_kind"]["irrelevance"]["accuracy"] == 1.0
    for kind in CALL_KINDS:
        if kind in report["by_kind"]:
            assert report["by_kind"][kind]["accuracy"] == 0.0, kind
    episodes = {e.id: e for e in read_records(testset, "episodes")}
    for f in report["failures"]:
        assert f["reason"] in ("state", "outputs") and f["got"].startswith("(no call)") and f["expected"].startswith("[")
        # the first wrong step is a call turn: a miss turn (no call due) is passed on the way
        assert episodes[f["episode"]].turns[f["turn"]].label == "call"
    assert "first wrong step" in (tmp_path / "never" / REPORT_MD).read_text()


def _one_wrong_value(testset: Path, pool: Any) -> tuple[str, int, Any, Any, list[Any]]:
    """An episode and a reference call of it whose argument, changed, leaves another state after its
    turn (checked here by executing it); returns (episode id, turn, old value, new value, episodes)."""
    episodes = list(read_records(testset, "episodes"))
    for episode in episodes:
        reference = replay_reference(pool, episode)
        specs = {s.name: s for s in episode.tools}
        for h, turn in enumerate(episode.turns):
            for i, call in enumerate(turn.calls):
                props = pool.spec(call.name).parameters.get("properties", {})
                for key, value in call.arguments.items():
                    if "enum" in props.get(key, {}) or isinstance(value, bool) or not isinstance(value, (int, str)):
                        continue
                    wrong = value + 7 if isinstance(value, int) else f"{value}-other"
                    changed = ToolCall(name=call.name, arguments={**call.arguments, key: wrong})
                    try:
                        validate_call(changed, specs)
                    except ValueError:
                        continue
                    altered = msgspec.structs.replace(turn, calls=[*turn.calls[:i], changed, *turn.calls[i + 1:]])
                    bad = msgspec.structs.replace(episode, turns=[*episode.turns[:h], altered, *episode.turns[h + 1:]])
                    runtime = pool.instantiate(bad.initial_state, seed=bad.seed, only=bad.toolkits)
                    for t in bad.turns[: h + 1]:
                        for c in t.calls:
                            runtime.execute(c)
                    if runtime.snapshot() != reference[h].snapshot:
                        return episode.id, h, value, wrong, [bad if e.id == episode.id else e for e in episodes]
    raise AssertionError("no reference call whose changed argument changes the state")


def test_one_wrong_argument_value_fails_by_state_with_its_first_wrong_step(authored, tmp_path):
    testset, _ = authored
    config, given, _ = load_config(["--model", "replay", "--out", str(tmp_path / "wrong"), "--testset", str(testset)])
    spec, folder = resolve_testset(config, given)
    pool = tool_pool(spec.toolkits)
    episode_id, turn, right, wrong, episodes = _one_wrong_value(testset, pool)
    store = RunStore.open(tmp_path / "wrong", config_fingerprint="wrong-value")
    try:
        report = run(evaluate(config, spec, folder, pool, ReplayModel(episodes), store, progress=False))
    finally:
        store.close()
    assert report["overall"]["passed"] == report["overall"]["n"] - 1
    [failure] = report["failures"]
    assert failure["episode"] == episode_id and failure["reason"] == "state" and failure["turn"] == turn
    assert json.dumps(right) in failure["expected"] and json.dumps(wrong) in failure["got"]
    assert "(expected" in failure["detail"]  # where the state differs, and what it should hold
    # the functions of the first wrong step, counted per function against the episodes that test each
    [bad] = [e for e in episodes if e.id == episode_id]
    assert failure["step_functions"] == sorted({c.name for c in bad.turns[turn].calls})
    assert {f for f, s in report["by_function"].items() if s["failed"]} == set(failure["step_functions"])
    assert all(s["n"] >= 1 for s in report["by_function"].values())
    [stored] = [t for t in read_records(tmp_path / "wrong", "trajectories") if t.id == episode_id]
    assert not stored.verification.ok and not stored.verification.state_match and stored.error_types == ["state"]


def test_rerun_resumes_and_a_reused_test_set_keeps_its_settings(authored, tmp_path):
    testset, first = authored
    out = tmp_path / "again"
    once = _eval(out, testset, "--model", "replay")
    again = _eval(out, testset, "--model", "replay")
    assert again["this_run"]["evaluated"] == 0 and again["this_run"]["skipped_resumed"] == first["episodes"]
    assert again["overall"] == once["overall"] and len(list(read_records(out, "trajectories"))) == first["episodes"]
    spec = json.loads((testset / TESTSET_FILE).read_text())["spec"]
    assert spec["per_kind"] == 3 and spec["toolkits"] == TOOLKITS.split(",")
    config, given, _ = load_config(["--model", "replay", "--out", str(out), "--testset", str(testset), "--per-kind", "5"])
    with pytest.raises(UserInputError, match="--per-kind: the test set .* was authored with 3"):
        resolve_testset(config, given)
    # another model on the same results folder would mix two evaluations: refused
    with pytest.raises(UserInputError, match="--force"):
        eval_paths_main(["--model", "sim", "--out", str(out), "--testset", str(testset), "--no-progress"])


def test_users_own_python_class_and_json_spec(tmp_path):
    module = tmp_path / "shelf.py"
    module.write_text('''from typing import TypedDict


class Shelved(TypedDict):
    """title: The book's title.
    count: Copies now on the shelf."""

    title: str
    count: int


class Bookshelf:
    def __init__(self) -> None:
        self.copies: dict[str, int] = {"Dune": 2}

    def add_copies(self, title: str, count: int) -> Shelved:
        """Put copies of a book on the shelf.

        Args:
            title: The book's title.
            count: How many copies to add.
        """
        self.copies[title] = self.copies.get(title, 0) + count
        return Shelved(title=title, count=self.copies[title])
''')
    spec = tmp_path / "weather.json"
    spec.write_text(json.dumps([{"type": "function", "function": {
        "name": "get_forecast", "description": "Weather forecast for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}]))
    out = tmp_path / "own"
    report = _eval(out, tmp_path / "own-testset", "--model", "replay", "--toolkits", f"{module},{spec}",
                   "--kinds", "single,parallel,irrelevance", "--per-kind", "2")
    assert report["overall"]["accuracy"] == 1.0 and set(report["by_kind"]) == {"single", "parallel", "irrelevance"}
    assert {"Bookshelf", "weather"} <= set(report["by_toolkit"])
    calls = [c.name for e in read_records(tmp_path / "own-testset", "episodes") for t in e.turns for c in t.calls]
    assert "add_copies" in calls  # the user's class is executed, not only offered


def test_bad_input_is_one_line_naming_the_flag(tmp_path, capsys):
    assert magnet(["eval", "paths", "--model", "replay", "--out", str(tmp_path / "x"), "--kinds", "single,bogus"]) == 2
    assert "--kinds: unknown kind 'bogus'" in capsys.readouterr().err
    assert magnet(["eval", "paths", "--out", str(tmp_path / "x")]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert magnet(["eval", "paths", "--model", "replay", "--out", str(tmp_path / "y"), "--toolkits", "nope"]) == 2
    assert "--toolkits nope: unknown toolkit" in capsys.readouterr().err
    assert magnet(["eval", "paths", "--model", "replay", "--out", str(tmp_path / "z"), "--teacher-option", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_bfcl_api_classes_multi_turn(tmp_path):
    """BFCL's own API classes as the pool: multi-turn episodes on their real code, checked by state."""
    # the simulator rarely writes a whole multi-turn conversation on BFCL's classes: many draws for one episode
    report = _eval(tmp_path / "bfcl", tmp_path / "bfcl-testset", "--model", "replay", "--mode", "fc", "--toolkits", "bfcl",
                   "--kinds", "parallel,multi_turn.base", "--per-kind", "1", "--draw-factor", "60")
    assert report["overall"]["accuracy"] == 1.0 and report["by_kind"]["multi_turn.base"]["n"] == 1
    episodes = list(read_records(tmp_path / "bfcl-testset", "episodes"))
    assert any(len(e.turns) > 1 for e in episodes)
    assert set(report["by_toolkit"]) <= {"file_system", "math_api", "message", "posting", "ticket", "trading",
                                         "travel_booking", "vehicle"}
