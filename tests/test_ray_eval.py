"""`magnet eval paths --ray` and `magnet improve --ray` on a real local Ray cluster (tests/conftest.py's
head on 127.0.0.1, shared with tests/test_ray_generate.py): two actors grade exactly what one process
grades, record for record; a driver killed with SIGKILL mid-evaluation resumes without grading an
episode twice; improve's --ray reaches its generation and evaluation stages, whose actors build the
model from its spec.

The model under test is the in-process simulator in prompt mode (deterministic per episode, and it
passes some kinds and fails others, so both grades are compared) or the reference replay (100%).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray  # noqa: F401 - an optional extra of the project; setup.sh installs it, and these tests fail loudly without it

from distill.cli import SUMMARY_FILE
from distill.eval_paths import REPORT_JSON, teacher_kwargs
from distill.eval_paths import main as eval_paths_main
from distill.improve import Loop
from distill.improve import load_config as improve_config
from distill.improve_serve import Served
from engine.ray_leases import RAY_FIELDS
from engine.store import read_records
from engine.teachers import make_teacher

TESTSET = ["--toolkits", "travel,banking", "--per-kind", "2", "--draw-factor", "20"]
RAY = ["--ray-actors", "2", "--concurrency", "2", "--ray-block", "2"]


def _eval(out: Path, testset: Path, *extra: str) -> dict[str, Any]:
    assert eval_paths_main(["--out", str(out), "--testset", str(testset), "--no-progress", *extra]) == 0
    return json.loads((out / REPORT_JSON).read_text())


def _graded(out: Path) -> dict[str, bytes]:
    """Episode id -> its stored trajectory's bytes; fails on an episode stored twice."""
    ids, records = [], {}
    for t in read_records(out, "trajectories"):
        ids.append(t.id)
        records[t.id] = msgspec.json.encode(t)
    assert len(ids) == len(set(ids)), f"graded twice: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    assert not list(read_records(out, "dead_letters"))
    return records


def _stored(out: Path) -> int:
    """Episodes finished (done markers) in a folder a driver may be writing."""
    return sum(1 for _ in read_records(out, "done", on_corrupt=lambda _c: None))


def _ray_stats(out: Path) -> dict[str, int]:
    return json.loads((out / "manifest.json").read_text())["extra"]["eval_paths"]["ray"]


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> tuple[Path, dict[str, Any], dict[str, bytes]]:
    """A test set authored here, and the simulator graded on it in one process."""
    root = tmp_path_factory.mktemp("ray-eval")
    report = _eval(root / "local", root / "testset", "--model", "sim", *TESTSET)
    passed = report["overall"]["passed"]
    assert 0 < passed < report["overall"]["n"] == report["episodes"] >= 15, report["overall"]
    return root / "testset", report, _graded(root / "local")


def test_two_actors_grade_what_one_process_grades(cluster, local, tmp_path):
    testset, want, graded = local
    got = _eval(tmp_path / "ray", testset, "--model", "sim", "--ray", cluster, *RAY)
    assert _graded(tmp_path / "ray") == graded  # every conversation and grade, byte for byte
    assert got["overall"] == want["overall"] and got["by_kind"] == want["by_kind"] and got["failures"] == want["failures"]
    stats = _ray_stats(tmp_path / "ray")
    assert stats["actors"] == 2 and stats["leases"] >= 2 and stats["leases_lost"] == 0, stats
    # the actors' model calls are counted here: one call per answer, prompt and completion tokens
    assert got["this_run"]["prompt_tokens"] == want["this_run"]["prompt_tokens"] > 0
    assert got["this_run"]["completion_tokens"] == want["this_run"]["completion_tokens"]
    # the reference replay, built in each actor from the test set's episodes, scores 100%
    replay = _eval(tmp_path / "replay", testset, "--model", "replay", "--ray", cluster, *RAY)
    assert replay["overall"]["accuracy"] == 1.0 and replay["overall"]["n"] == want["episodes"]


def test_kill_9_of_the_driver_then_resume_grades_each_episode_once(cluster, local, tmp_path):
    testset, want, graded = local
    out = tmp_path / "ray"
    # 150 ms per answer: the run lasts long enough to be killed once some episodes are stored
    cmd = [sys.executable, "-m", "engine.cli", "eval", "paths", "--model", "sim", "--teacher-option", "latency_ms=150",
           "--out", str(out), "--testset", str(testset), "--no-progress", "--ray", cluster, *RAY]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _stored(out) < 4:
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        driver.kill()  # SIGKILL: no flush, no report; Ray ends its actors with their owner
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
    partial = _stored(out)
    assert 4 <= partial < want["episodes"], partial
    resumed = _eval(out, testset, "--model", "sim", "--ray", cluster, *RAY)
    # only what the killed driver had not finished was graded again
    assert resumed["this_run"]["skipped_resumed"] == partial
    assert resumed["this_run"]["evaluated"] == want["episodes"] - partial
    assert _graded(out) == graded
    assert resumed["overall"] == want["overall"]
    # and once more: nothing left to grade, nothing leased
    again = _eval(out, testset, "--model", "sim", "--ray", cluster, *RAY)
    assert again["this_run"]["evaluated"] == 0 and _ray_stats(out)["leases"] == 0
    assert _graded(out) == graded


def test_improve_ray_reaches_generation_and_evaluation(cluster, local, tmp_path, monkeypatch):
    testset, want, _ = local
    cfg = improve_config(["--out", str(tmp_path / "loop"), "--ray", cluster, "--ray-actors", "2", "--ray-block", "2",
                          "--concurrency", "2", "--toolkits", "travel", "--bootstrap-teacher", "sim", "--negatives", "perturb",
                          "--positives", "4", "--kinds", "single,irrelevance"])
    loop = Loop(cfg)
    placement = loop.placement()
    assert {f: placement[f] for f in RAY_FIELDS} == {"ray": cluster, "ray_actors": 2, "ray_block": 2, "ray_gpus": 0.0}
    # the options an actor builds the served checkpoint with are the ones the loop's own server gets
    vllm = Served("vllm", {"dtype": "float32"}).teacher_overrides()
    assert vllm == {"options": {"max_model_len": 8192, "dtype": "float32"}, "timeout_s": 900.0}
    model = make_teacher("vllm:/ckpt/final", **teacher_kwargs(vllm, "vllm:/ckpt/final", max_bad_answer_retries=0))
    assert model._server_options == {"max_model_len": 8192, "dtype": "float32"} and model._client_options["timeout_s"] == 900.0
    assert make_teacher("vllm:/ckpt/final", **vllm)._server_options == model._server_options

    # generation of round 0 (the simulator bootstraps it: no checkpoint is served) on the actors
    gen = loop.generate(0, None, {"path_options": {}}, tmp_path / "loop" / "round-0" / "generate")
    summary = json.loads((tmp_path / "loop" / "round-0" / "generate" / SUMMARY_FILE).read_text())
    assert gen["positives"] == summary["positives"] > 0 and summary["ray"]["actors"] == 2 and summary["ray"]["leases"] >= 2

    # the held-out evaluation on the actors; the checkpoint's spec is the reference replay here, so no model is loaded
    monkeypatch.setattr(loop.served, "spec", lambda checkpoint: "replay")
    ev = loop.eval_paths("ckpt", tmp_path / "loop" / "eval", "heldout")
    assert ev["score"] == 1.0 and ev["episodes"] == 2 * cfg.eval_per_kind
    assert _ray_stats(tmp_path / "loop" / "eval")["actors"] == 2
    assert loop.served.server is None  # no server of the loop's own was started for a Ray stage
