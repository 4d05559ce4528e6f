"""The GPU check's CPU dry run: every code path it takes on the GPU machine, on a tiny model.

One real run of ``python -m bench.gpu_check --cpu-dry-run`` (our mDPO and TRL's DPOTrainer, packed
SFT through the torch_varlen attention and padded SFT through sdpa, the transformers teacher at
batch 1 and above), so the script cannot rot between GPU sessions; plus its bad-input errors and
the varlen attention's sequence offsets.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from train.varlen_attention import sequence_offsets


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bench.gpu_check", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_cpu_dry_run_measures_every_part(tmp_path):
    results_before = {p: p.stat().st_mtime for p in (ROOT / "bench" / "results").glob("gpu_check.*")}
    proc = _run("--cpu-dry-run", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check (cpu-dry-run)")
    assert r["mode"] == "cpu-dry-run" and r["errors"] == []
    assert r["date"] and r["machine"]["torch"] and r["machine"]["transformers"] and r["machine"]["trl"]

    probe = r["varlen_probe"]  # packed varlen attention == sdpa's block-diagonal mask, gradients flow
    assert probe["sequences"] == 8 and probe["max_abs_logp_diff"] < 1e-4
    assert probe["grads_finite"] and probe["matches_sdpa"]

    mdpo = r["sizes"]["tiny"]["mdpo"]
    for side in ("ours", "trl"):
        assert mdpo[f"{side}_tokens_per_s"] > 0 and mdpo[side]["peak_bytes"] > 0
        assert len(mdpo[side]["losses"]) == 2 and all(math.isfinite(x) for x in mdpo[side]["losses"])
    assert mdpo["ours"]["losses"][0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1
    assert mdpo["ours"]["losses"][0] == pytest.approx(mdpo["trl"]["losses"][0], abs=1e-4)
    assert mdpo["max_abs_loss_diff"] < 1e-4 and mdpo["losses_equal"]
    assert mdpo["ours"]["losses"][1] != mdpo["ours"]["losses"][0]  # the first step really trained

    sft = r["sizes"]["tiny"]["sft"]
    for mode in ("packed", "padded"):
        assert sft[f"{mode}_tokens_per_s"] > 0 and sft[mode]["tokens"] > 0
        assert len(sft[mode]["losses"]) == 2 and all(math.isfinite(x) and x > 0 for x in sft[mode]["losses"])

    levels = {x["concurrency"]: x for x in r["teacher"]["levels"]}
    assert set(levels) == {1, 4}
    assert levels[1]["max_batch"] == 1 and levels[1]["completion_tokens"] > 0
    assert levels[4]["max_batch"] > 1  # concurrent requests shared a generate() call
    assert all(x["tokens_per_s"] > 0 for x in levels.values())
    assert set(r["targets_met"]) == {"varlen kernel matches sdpa", "tiny mdpo", "tiny sft packing"}
    assert r["targets_met"]["varlen kernel matches sdpa"] and r["targets_met"]["tiny mdpo"]
    # a dry run never writes the committed results
    assert {p: p.stat().st_mtime for p in (ROOT / "bench" / "results").glob("gpu_check.*")} == results_before


@pytest.mark.parametrize("args, message", [
    (("--cpu-dry-run", "--parts", "mdpo,bogus"), "--parts 'mdpo,bogus'"),
    (("--cpu-dry-run", "--sizes", "3b"), "--sizes '3b'"),
    (("--cpu-dry-run", "--time-limit", "0"), "--time-limit 0"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    proc = _run(*args, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_mode_without_cuda_says_how_to_dry_run():
    proc = _run(timeout=60)
    assert proc.returncode == 2 and "--cpu-dry-run" in proc.stderr


def test_sequence_offsets_split_packed_rows_and_padding():
    # one packed row of sequences of 3, 2 and 4 tokens
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    offsets, longest = sequence_offsets(pos, None, 1, 9, torch.device("cpu"))
    assert offsets.tolist() == [0, 3, 5, 9] and longest == 4 and offsets.dtype == torch.int32
    # two left-padded rows without position ids: real tokens never share a sequence with padding
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    offsets, longest = sequence_offsets(None, mask, 2, 4, torch.device("cpu"))
    assert offsets.tolist() == [0, 2, 4, 8] and longest == 4
