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
# stored item or first training checkpoint (in the thread running the stage: an overlapped generation
# runs in its own), or, when the stage has neither, once its work is done but before its marker is
# written. With a fifth argument "overlap", the background generation's first stored item is flushed,
# waits for the stage's first training checkpoint and then kills: both are half done.
CHILD = r"""
import os, signal, sys, threading
sys.path.insert(0, sys.argv[1])
import distill.improve_stages as stages
import engine.store as store
import train.loop as loop

folder, name = sys.argv[2].rsplit("/", 1)
in_overlap = sys.argv[5:] == ["overlap"]
active = []  # the thread running the stage to kill
checkpoint_saved = threading.Event()

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

commit, save = store.RunStore.commit, loop.Trainer.save_checkpoint
def killing_commit(self, *a, **k):
    commit(self, *a, **k)
    if in_overlap and threading.current_thread() is not threading.main_thread():
        self.flush()  # on disk, so the rerun has finished work to skip
        checkpoint_saved.wait(300)
        die()
    if threading.get_ident() in active:
        die()
def killing_save(self, *a, **k):
    path = save(self, *a, **k)
    if threading.get_ident() in active:
        if in_overlap:
            checkpoint_saved.set()
            threading.Event().wait(300)  # the background generation kills the process
        die()
    return path
store.RunStore.commit, loop.Trainer.save_checkpoint = killing_commit, killing_save

run = stages.Stages.run
def killing_run(self, stage, fn):
    if self.folder.name != folder or stage != name or self.result(stage) is not None:
        return run(self, stage, fn)
    def wrapped():
        active.append(threading.get_ident())
        fn()
        die()
    return run(self, stage, wrapped)
stages.Stages.run = killing_run

from engine.cli import main
sys.exit(main(["improve", "--config", sys.argv[3], "--out", sys.argv[4]]))
"""

STAGES = ["base/eval", "round-0/probe", "round-0/target", "round-0/generate", "round-0/train_sft",
          "round-0/train_mdpo", "round-0/eval", "round-0/decide"]


def _improve(config: Path, out: Path, kill: str | None, child: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, str(child), str(ROOT), kill, str(config), str(out), *extra] if kill else
           [sys.executable, "-m", "engine.cli", "improve", "--config", str(config), "--out", str(out)])
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _uninterrupted(model: Path, tmp_path: Path, config_text: str) -> tuple[Path, Path, Path]:
    """Writes the config (for ``model``) and the killing child, then runs the loop once without a kill:
    (config, child, the reference run's folder)."""
    config = tmp_path / "improve.toml"
    config.write_text(f'model = "{model}"\n' + config_text)
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    reference = tmp_path / "reference"
    done = _improve(config, reference, None, child)
    assert done.returncode == 0, done.stderr[-2000:]
    return config, child, reference


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
    config, child, reference = _uninterrupted(tiny, tmp_path, CONFIG)
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
    check_resume(out, load_config(["--model", str(tiny), "--out", str(out), "--positives", "6", "--stratum-patience", "12"]))
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


# Every round taught by the simulator with perturbed negatives: round 1's generation needs nothing of
# the model round 0 trains, so it runs while round 0 trains.
OVERLAP_CONFIG = CONFIG.replace('rounds = 1\n', 'rounds = 2\nteacher = "sim"\noverlap = true\n')


@pytest.mark.slow
def test_kill_during_overlapped_generation_then_resume_matches_uninterrupted(tiny, tmp_path):  # noqa: F811
    config, child, reference = _uninterrupted(tiny, tmp_path, OVERLAP_CONFIG)
    resumed = tmp_path / "resumed"
    # 1. killed while round 0 trains (a checkpoint saved) and round 1 generates (an item stored), both half done
    killed = _improve(config, resumed, "round-0/train_sft", child, "overlap")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list((resumed / "round-0" / "train_sft" / "checkpoints").iterdir())
    assert not (resumed / "round-0" / "stages" / "train_sft.json").exists()
    assert not (resumed / "round-1" / "stages" / "generate.json").exists()
    stored_before = {k: v for k, v in _records(resumed).items() if k.startswith("round-1/generate/")}
    assert any(stored_before.values()), "round 1's generation stored nothing before the kill: not during the overlap"
    # 2. killed inside round 1's generation (the background thread) on its rerun
    killed = _improve(config, resumed, "round-1/generate", child)
    assert killed.returncode == -9, killed.stderr[-2000:]
    finished = _improve(config, resumed, None, child)
    assert finished.returncode == 0, finished.stderr[-2000:]

    assert _records(resumed) == _records(reference)  # asserts no id stored twice, too
    # A round's tokens are those its finishing generate run spent: fewer here, the items stored before the kill were not redone.
    tokens = [[r.get("tokens") for r in _summary(out)] for out in (resumed, reference)]
    assert [{k: v for k, v in r.items() if k != "tokens"} for r in _summary(resumed)] == \
        [{k: v for k, v in r.items() if k != "tokens"} for r in _summary(reference)]
    assert tokens[0][1] == tokens[1][1] and tokens[0][2] < tokens[1][2]
    assert all(set(ids) <= set(_records(resumed)[k]) for k, ids in stored_before.items())
    rounds = _summary(resumed)
    assert [r["round"] for r in rounds] == ["base", 0, 1] and all(r["teacher"] == "simulator (sim)" for r in rounds[1:])
    # round 1 was steered by round 0's probe: the same target as round 0's
    targets = [json.loads((resumed / f"round-{n}" / "target.json").read_text())["shares"] for n in (0, 1)]
    assert targets[0] == targets[1]
    # and it ran ahead: it finished before round 0's evaluation did (serially it would start after it)
    finished_at = {(n, s): json.loads((reference / f"round-{n}" / "stages" / f"{s}.json").read_text())["finished_at"]
                   for n, s in ((1, "generate"), (0, "eval"))}
    assert finished_at[(1, "generate")] < finished_at[(0, "eval")]


def test_overlap_only_when_generation_needs_no_model_being_trained(tiny, tmp_path):  # noqa: F811
    from distill.improve import Loop, load_config

    def loop(*flags: str) -> Loop:
        return Loop(load_config(["--model", str(tiny), "--out", str(tmp_path / "x"), *flags]))

    sim = loop("--teacher", "sim", "--negatives", "perturb", "--rounds", "3", "--overlap")
    assert [sim.overlapped(n) for n in range(3)] == [False, True, True]  # round 0 has no round before it
    assert not any(loop("--teacher", "sim", "--negatives", "mined", "--overlap").overlapped(n) for n in range(3))  # mines it
    assert not any(loop("--bootstrap-teacher", "sim", "--negatives", "perturb", "--overlap").overlapped(n) for n in range(3))
    assert not any(loop("--teacher", "sim", "--negatives", "perturb").overlapped(n) for n in range(3))  # off by default


def test_a_background_generation_failure_is_raised_where_the_loop_joins_it():
    from distill.improve_overlap import Ahead
    from engine.errors import UserInputError

    def fails() -> None:
        raise UserInputError("round 1: simulator produced no verified positive")

    ahead = Ahead("generate round 1", fails)
    with pytest.raises(UserInputError, match="no verified positive"):
        ahead.join()
    done: list[int] = []
    Ahead("generate round 2", lambda: done.append(2)).join()
    assert done == [2]


def test_a_round_whose_pairs_all_exceed_max_length_skips_mdpo_and_goes_on(tiny, tmp_path):  # noqa: F811
    """A small model mines few pairs, often all longer than mDPO's max_length: the round keeps its SFT
    checkpoint, says why mDPO was skipped, and the loop finishes instead of ending on 'no usable pairs'."""
    config = tmp_path / "improve.toml"
    # CONFIG's last table is [mdpo_options]: its max_length (the last one) becomes 64 tokens.
    config.write_text(f'model = "{tiny}"\n' + CONFIG.rsplit("max_length = 4096", 1)[0] + "max_length = 64\nsave_every = 1\n")
    out = tmp_path / "loop"
    done = _improve(config, out, None, tmp_path / "unused.py")
    assert done.returncode == 0, done.stderr[-2000:]
    round0 = _summary(out)[1]
    assert round0["pairs"] > 0 and round0["mdpo"].startswith("no usable pair (") and "too_long" in round0["mdpo"]
    assert round0["checkpoint"] == "round-0/train_sft/final"
