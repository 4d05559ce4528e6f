"""`magnet inspect`: counts, sizes, dead letters, damage and samples of a real run directory."""

from __future__ import annotations

import json

import _records_factory as F
import pytest

from engine.cli import main as cli
from engine.records import RECORD_KINDS
from engine.shards import FRAME_OVERHEAD, iter_frames, shard_files
from engine.store import RunStore


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    with RunStore.open(run, config_fingerprint="inspect-fp", config={"teacher": "sim", "api_key": "sk-hidden"}, shard_bytes=16 << 10) as store:
        for i in range(12):
            store.commit(f"item-{i}", [("paths", F.path(i)), ("episodes", F.episode(i)), ("trajectories", F.trajectory(i))])
        for i in range(3):
            store.put("trajectories", F.trajectory(i, "negative"))
            store.put("pairs", F.pair(i))
        for i, (stage, error) in enumerate([("rollout", "BadAnswer: no JSON in 'hello'"), ("rollout", "BadAnswer: no JSON in 'hi'"),
                                            ("judge", "RateLimited: gave up after 6 tries")]):
            store.dead_letter(F.dead_letter(100 + i, stage=stage, error=error))
    return run


def inspect_json(capsys, *args) -> dict:
    assert cli(["inspect", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_report(run_dir, capsys):
    report = inspect_json(capsys, run_dir, "--samples", "2")
    counts = {k: v["records"] for k, v in report["kinds"].items()}
    assert counts == {"paths": 12, "episodes": 12, "trajectories": 15, "pairs": 3, "dead_letters": 3, "done": 12}
    assert report["manifest"]["counts"] == counts and report["manifest"]["config_fingerprint"] == "inspect-fp"
    assert "api_key" not in report["manifest"]["config"]
    trajectories = report["kinds"]["trajectories"]
    assert len(trajectories["files"]) > 1  # rotated at 16 KiB
    assert trajectories["bytes"] == sum(p.stat().st_size for p in shard_files(run_dir / "trajectories"))
    assert report["trajectories_by_polarity"] == {"positive": 12, "negative": 3}
    assert report["dead_letters_by_reason"] == [
        {"stage": "rollout", "reason": "no JSON in …", "count": 2},  # engine.reasons: one row whatever the quoted text
        {"stage": "judge", "reason": "gave up after … tries", "count": 1},
    ]
    assert {k: len(v) for k, v in report["samples"].items()} == dict.fromkeys(
        ("paths", "episodes", "trajectories", "pairs", "dead_letters", "done"), 2)
    assert report["samples"]["trajectories"][0]["id"] == "traj-0-positive"
    assert report["samples"]["trajectories"][0]["messages"][2]["tool_calls"][0]["name"] == "search_flights"
    assert report["damaged"] == []


def test_kind_filter_and_zero_samples(run_dir, capsys):
    report = inspect_json(capsys, run_dir, "--kind", "pairs", "--samples", "0")
    assert list(report["kinds"]) == ["pairs"] and report["samples"] == {"pairs": []}


def test_damage_is_listed_with_file_and_offset(run_dir, capsys):
    path = shard_files(run_dir / "episodes")[0]
    victim = [off for off, _ in iter_frames(path)][1]
    with open(path, "r+b") as f:
        f.seek(victim + FRAME_OVERHEAD + 3)
        f.write(b"\x00\x00")
    with open(shard_files(run_dir / "done")[-1], "ab") as f:
        f.write(b"\xc1MG\xc1\x10\x00")  # a frame cut short, as a live or killed writer leaves it
    report = inspect_json(capsys, run_dir, "--samples", "0")
    assert report["kinds"]["episodes"]["records"] == 11 and report["kinds"]["done"]["records"] == 12
    damaged = {(d["path"], d["torn_tail"]): d for d in report["damaged"]}
    assert damaged[(str(path), False)]["offset"] == victim
    assert (str(shard_files(run_dir / "done")[-1]), True) in damaged

    assert cli(["inspect", str(run_dir), "--samples", "0"]) == 0
    text = capsys.readouterr().out
    assert "damaged spans" in text and str(victim) in text and "torn tail" in text


def test_rich_tables(run_dir, capsys):
    assert cli(["inspect", str(run_dir)]) == 0
    text = capsys.readouterr().out
    for kind in RECORD_KINDS:
        assert kind in text
    assert "inspect-fp" in text and "no JSON in …" in text and "gave up after … tries" in text
    assert "trajectories sample 1" in text and "positive 12, negative 3" in text
    assert "sk-hidden" not in text


def test_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv, fragment in [
        (["inspect", str(tmp_path / "missing")], "does not exist"),
        (["inspect", str(tmp_path / "empty")], "is not a magnet run directory"),
        (["inspect", str(tmp_path / "empty"), "--samples", "-1"], "--samples -1: Expected `int` >= 0"),
    ]:
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("magnet inspect: error:") and fragment in err and "\n" not in err
