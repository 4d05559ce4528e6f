"""`magnet improve` killed with SIGKILL inside each stage, then rerun: it finishes with the same records,
the same scores and the same checkpoint choice as a run never interrupted, and nothing stored twice.

The model is the tiny random Qwen2 answering in-process (serve = hf) and the bootstrap teacher is
the simulator: what is tested here is the loop's bookkeeping; tests/test_improve_vllm.py runs a
round with vLLM serving the checkpoint it trained.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from train_support import tiny  # noqa: F401

from engine.store import read_records

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
rounds = 1
serve = "hf"
serve_options = {}
bootstrap_teacher = "sim"
negatives = "perturb"
kinds = ["single", "multi_turn.base", "irrelevance"]
positives = 6
probe_per_kind = 1
eval_per_kind = 2
max_tokens = 16
concurrency = 1
[sft_options]
learning_rate = 1e-3
batch_size = 2
micro_batch_size = 2
max_steps = 2
max_length = 4096
save_every = 1
[mdpo_options]
learning_rate = 1e-4
batch_size = 2
micro_batch_size = 1
max_steps = 2
max_length = 4096
save_every = 1
"""

# Runs `magnet improve` and SIGKILLs itself inside stage KILL (folder/name): after the stage's first
# stored item or first training checkpoint, or, when the stage has neither, once its work is done but
# before its marker is written.
CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import distill.improve_stages as stages
import engine.store as store
import train.loop as loop

folder, name = sys.argv[2].rsplit("/", 1)
active = []

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

commit, save = store.RunStore.commit, loop.Trainer.save_checkpoint
def killing_commit(self, *a, **k):
    commit(self, *a, **k)
    if active:
        die()
def killing_save(self, *a, **k):
    path = save(self, *a, **k)
    if active:
        die()
    return path
store.RunStore.commit, loop.Trainer.save_checkpoint = killing_commit, killing_save

run = stages.Stages.run
def killing_run(self, stage, fn):
    if self.folder.name != folder or stage != name or self.result(stage) is not None:
        return run(self, stage, fn)
    def wrapped():
        active.append(1)
        fn()
        die()
    return run(self, stage, wrapped)
stages.Stages.run = killing_run

from engine.cli import main
sys.exit(main(["improve", "--config", sys.argv[3], "--out", sys.argv[4]]))
"""

STAGES = ["base/eval", "round-0/probe", "round-0/target", "round-0/generate", "round-0/train_sft",
          "round-0/train_mdpo", "round-0/eval", "round-0/decide"]


def _improve(config: Path, out: Path, kill: str | None, child: Path) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, str(child), str(ROOT), kill, str(config), str(out)] if kill else
           [sys.executable, "-m", "engine.cli", "improve", "--config", str(config), "--out", str(out)])
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _records(out: Path) -> dict[str, list[tuple[str, str]]]:
    """Sorted (id, polarity or stage) of every store folder's records; asserts no id is stored twice."""
    found = {}
    for manifest in sorted(out.rglob("manifest.json")):
        run = manifest.parent
        for kind in ("trajectories", "pairs", "episodes", "dead_letters"):
            ids = [(r.id, getattr(r, "polarity", "") or getattr(r, "stage", "")) for r in read_records(run, kind)]
            doubled = [i for i, n in Counter(ids).items() if n > 1]
            assert not doubled, f"{run}/{kind} stored twice: {doubled[:3]}"
            found[f"{run.relative_to(out)}/{kind}"] = sorted(ids)
    return found


def _summary(out: Path) -> list[dict]:
    doc = json.loads((out / "rounds.json").read_text())
    return [{k: (str(Path(v).relative_to(out)) if k == "checkpoint" and str(v).startswith(str(out)) else v)
             for k, v in r.items() if k != "wall_s" and k != "eval_tokens"} for r in doc["rounds"]]


@pytest.mark.slow
def test_kill_in_every_stage_then_resume_matches_uninterrupted(tiny, tmp_path):  # noqa: F811
    config = tmp_path / "improve.toml"
    config.write_text(f'model = "{tiny}"\n' + CONFIG)
    child = tmp_path / "child.py"
    child.write_text(CHILD)

    reference = tmp_path / "reference"
    done = _improve(config, reference, None, child)
    assert done.returncode == 0, done.stderr[-2000:]

    resumed = tmp_path / "resumed"
    for stage in STAGES:
        killed = _improve(config, resumed, stage, child)
        assert killed.returncode == -9, f"{stage}: expected SIGKILL, got {killed.returncode}\n{killed.stderr[-2000:]}"
        folder, name = stage.split("/")
        assert not (resumed / folder / "stages" / f"{name}.json").exists(), f"{stage} marked done though killed inside"
    finished = _improve(config, resumed, None, child)
    assert finished.returncode == 0, finished.stderr[-2000:]

    assert _records(resumed) == _records(reference)
    assert _summary(resumed) == _summary(reference)
    rounds = _summary(resumed)
    assert [r["round"] for r in rounds] == ["base", 0]
    assert rounds[1]["teacher"] == "simulator (sim)" and rounds[1]["pairs"] > 0  # labelled; mDPO had pairs
    assert [r["chosen"] for r in rounds].count(True) == 1
    for stage in STAGES:  # every stage finished exactly once more after its kill, and is on record
        folder, name = stage.split("/")
        assert (resumed / folder / "stages" / f"{name}.json").exists()
    assert (resumed / "rounds.png").stat().st_size > 0 and "| round 0 |" in (resumed / "report.md").read_text()


def test_resume_with_other_settings_is_refused_in_one_line(tiny, tmp_path):  # noqa: F811
    from distill.improve import check_resume, load_config
    from engine.errors import UserInputError

    out = tmp_path / "loop"
    out.mkdir()
    check_resume(out, load_config(["--model", str(tiny), "--out", str(out), "--positives", "6"]))
    check_resume(out, load_config(["--model", str(tiny), "--out", str(out), "--positives", "6", "--rounds", "5"]))
    with pytest.raises(UserInputError, match=r"other settings \(positives\)"):
        check_resume(out, load_config(["--model", str(tiny), "--out", str(out), "--positives", "7"]))


def test_bad_input_is_one_line_exit_2(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "improve", "--out", str(tmp_path / "x"), "--tilt-floor", "0.5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--tilt-floor" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "engine.cli", "improve", "--out", str(tmp_path / "y"),
                              "--model", str(tmp_path / "nope"), "--serve", "hf"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "not a Hugging Face checkpoint folder" in missing.stderr


def test_tilt_puts_failing_strata_first_and_keeps_a_floor():
    from distill.improve_target import target
    from graph.paths_config import PathConfig

    report = {"by_kind": {"single": {"accuracy": 1.0, "n": 4}, "multi_turn.long": {"accuracy": 0.0, "n": 4},
                          "multi_turn.base": {"accuracy": 0.5, "n": 4}},
              "failures": [{"reason": "state", "toolkits": ["bank"]}]}
    doc = target(report, ["single", "multi_turn.base", "multi_turn.long", "irrelevance"], 0.05)
    shares = doc["shares"]
    assert shares["single"] == pytest.approx(0.05)  # passed everything: the floor only
    assert shares["multi_turn.long"] > shares["multi_turn.base"] > shares["single"]
    assert shares["irrelevance"] == pytest.approx(shares["multi_turn.base"])  # not probed: the mean accuracy (0.5)
    assert sum(shares.values()) == pytest.approx(1.0)
    cfg = PathConfig(**doc["path_options"])  # generate accepts it
    assert cfg.mixture["parallel"] == 0 and cfg.multi_turn_mixture["long"] > cfg.multi_turn_mixture["base"] > 0
    assert doc["probe_failures"] == {"reasons": {"state": 1}, "toolkits": {"bank": 1}}
