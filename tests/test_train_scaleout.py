"""Training across processes and nodes (issue 15, item 3), for real on CPU with gloo:

* two torchrun agents started as two nodes (``--nnodes 2 --node-rank 0|1``, one process each,
  rendezvous on 127.0.0.1) train SFT and mDPO to the same losses and weights as one process;
* FSDP2 (``--parallel fsdp``, ``fully_shard``) on 2 processes matches one process, writes its
  checkpoints and final model as plain Hugging Face folders (gathered from the shards), and a
  run resumed from a sharded run's checkpoint ends with the same weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_support import single_turn_pairs, tiny  # noqa: F401

from engine.store import RunStore
from train.samples import trajectories

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    with RunStore.open(run, config_fingerprint="t") as store:
        for t in trajectories(8, turns=1):
            store.put("trajectories", t)
        for p in single_turn_pairs(4):
            store.put("pairs", p)
    return run


def _metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _magnet(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "engine.cli", *argv], env=ENV, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]


def _torchrun(launch: list[str], argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launch, "-m", "engine.cli", *argv],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]


def _two_nodes(argv: list[str]) -> None:
    """The multi-node recipe of the README, both nodes on this machine."""
    port = str(_free_port())
    nodes = [_torchrun(["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                        "--master-addr", "127.0.0.1", "--master-port", port], argv) for rank in (0, 1)]
    _wait(nodes)


def _assert_same_run(a: Path, b: Path, *, keys: tuple[str, ...]) -> None:
    ra, rb = _metrics(a), _metrics(b)
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb):
        for k in keys:
            assert x[k] == pytest.approx(y[k], rel=1e-5), (k, x, y)
    wa, wb = _weights(a / "final"), _weights(b / "final")
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_two_nodes_train_sft_and_mdpo_like_one_process(tiny, tmp_path):  # noqa: F811
    run = _run_dir(tmp_path)
    sft = ["train", "sft", "--data", str(run), "--model", str(tiny), "--learning-rate", "2e-3", "--batch-size", "4",
           "--micro-batch-size", "1", "--max-steps", "2", "--max-length", "1024", "--mode", "fc", "--device", "cpu"]
    _two_nodes([*sft, "--out", str(tmp_path / "sft2")])
    _magnet([*sft, "--out", str(tmp_path / "sft1")])
    assert json.loads((tmp_path / "sft2" / "summary.json").read_text())["processes"] == 2
    _assert_same_run(tmp_path / "sft2", tmp_path / "sft1", keys=("loss", "tokens", "grad_norm"))

    mdpo = ["train", "mdpo", "--data", str(run), "--model", str(tiny), "--learning-rate", "5e-3", "--batch-size", "2",
            "--micro-batch-size", "1", "--max-length", "1024", "--mode", "fc", "--device", "cpu", "--lora", "--lora-r", "4",
            "--lora-alpha", "8", "--ref-cache-dir", str(tmp_path / "refs")]
    _two_nodes([*mdpo, "--out", str(tmp_path / "mdpo2")])
    _magnet([*mdpo, "--out", str(tmp_path / "mdpo1")])
    assert json.loads((tmp_path / "mdpo2" / "summary.json").read_text())["processes"] == 2
    assert _metrics(tmp_path / "mdpo2")[0]["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0
    _assert_same_run(tmp_path / "mdpo2", tmp_path / "mdpo1", keys=("loss", "dpo_loss"))


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_checkpoint_to_hf(tiny, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    run = _run_dir(tmp_path)
    sft = ["train", "sft", "--data", str(run), "--model", str(tiny), "--learning-rate", "2e-3", "--batch-size", "4",
           "--micro-batch-size", "1", "--max-steps", "2", "--max-length", "1024", "--mode", "fc", "--device", "cpu",
           "--weight-decay", "0.1"]
    standalone = ["--standalone", "--nproc-per-node", "2"]
    _wait([_torchrun(standalone, [*sft, "--parallel", "fsdp", "--save-every", "1", "--out", str(tmp_path / "fsdp")])])
    _magnet([*sft, "--out", str(tmp_path / "one")])
    summary = json.loads((tmp_path / "fsdp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["config"]["parallel"] == "fsdp"
    _assert_same_run(tmp_path / "fsdp", tmp_path / "one", keys=("loss", "tokens", "grad_norm"))

    # The sharded run's checkpoint is a plain HF folder: the full weights, tied embeddings listed once.
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step-000001"
    assert sorted(_weights(ckpt / "model")) == sorted(_weights(tmp_path / "one" / "final"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "final")
    torch.testing.assert_close(model.model.embed_tokens.weight.detach(), _weights(tmp_path / "one" / "final")["model.embed_tokens.weight"],
                               atol=1e-5, rtol=1e-4)

    # Resumed under FSDP from that checkpoint (optimizer state re-sharded): the same step 2 and weights.
    _wait([_torchrun(standalone, [*sft, "--parallel", "fsdp", "--resume", str(ckpt), "--out", str(tmp_path / "resumed")])])
    assert [r["step"] for r in _metrics(tmp_path / "resumed")] == [2]
    assert _metrics(tmp_path / "resumed")[0]["loss"] == pytest.approx(_metrics(tmp_path / "fsdp")[1]["loss"], rel=1e-6)
    wr, wf = _weights(tmp_path / "resumed" / "final"), _weights(tmp_path / "fsdp" / "final")
    for k in wf:
        torch.testing.assert_close(wr[k], wf[k], atol=1e-6, rtol=1e-5)


def test_fsdp_refuses_lora(tiny, tmp_path):  # noqa: F811
    from engine.errors import UserInputError
    from train.sft import run_sft
    from train.sft_config import SFTConfig

    cfg = SFTConfig(lora=True, parallel="fsdp", max_length=1024, mode="fc", device="cpu")
    with pytest.raises(UserInputError, match="parallel fsdp"):
        run_sft(cfg, data=_run_dir(tmp_path), model=tiny, out=tmp_path / "out")
