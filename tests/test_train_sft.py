"""Real training runs on the tiny model: loss goes down, the checkpoint reloads and generates,
resume continues identically, LoRA (merged) and the reference cache, DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_support import single_turn_pairs, tiny  # noqa: F401

from engine.store import RunStore
from train.mdpo import run_mdpo
from train.mdpo_config import MDPOConfig
from train.samples import trajectories
from train.sft import run_sft
from train.sft_config import SFTConfig

ROOT = Path(__file__).resolve().parents[1]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _run_dir(tmp_path: Path, n: int = 8) -> Path:
    run = tmp_path / "run"
    with RunStore.open(run, config_fingerprint="t") as store:
        for t in trajectories(n, turns=1):
            store.put("trajectories", t)
        for p in single_turn_pairs(4):
            store.put("pairs", p)
    return run


def test_sft_lowers_loss_and_checkpoint_generates(tiny, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = _run_dir(tmp_path)
    cfg = SFTConfig(learning_rate=3e-3, batch_size=4, micro_batch_size=2, epochs=4, warmup_ratio=0.1, max_length=1024, mode="fc")
    summary = run_sft(cfg, data=run, model=tiny, out=tmp_path / "out")
    rows = _metrics(tmp_path / "out")
    assert len(rows) == summary["steps"] == 8
    assert rows[-1]["loss"] < 0.75 * rows[0]["loss"]
    assert (tmp_path / "out" / "training.png").stat().st_size > 1000
    final = tmp_path / "out" / "final"
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Weather in Oslo?"}], add_generation_prompt=True,
                                     tokenize=False)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert not torch.equal(_weights(final)["model.embed_tokens.weight"], _weights(tiny)["model.embed_tokens.weight"])


def test_resume_continues_identically(tiny, tmp_path):  # noqa: F811
    run = _run_dir(tmp_path)
    cfg = SFTConfig(learning_rate=2e-3, batch_size=2, micro_batch_size=1, max_steps=4, save_every=2, max_length=1024, mode="fc",
                    weight_decay=0.1)
    run_sft(cfg, data=run, model=tiny, out=tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "step-000002"
    assert (ckpt / "trainer_state.pt").is_file()
    run_sft(cfg, data=run, model=tiny, out=tmp_path / "b", resume=ckpt)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [3, 4]
    assert [r["loss"] for r in a[2:]] == [r["loss"] for r in b] and [r["lr"] for r in a[2:]] == [r["lr"] for r in b]
    wa, wb = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_mdpo_lora_merged_and_reference_cache(tiny, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    run = _run_dir(tmp_path)
    cfg = MDPOConfig(learning_rate=5e-3, batch_size=2, micro_batch_size=1, epochs=1, lora=True, lora_r=4,
                     lora_alpha=8, max_length=1024, mode="fc")
    first = run_mdpo(cfg, data=run, model=tiny, out=tmp_path / "o1")
    assert first["data"]["ref_cache_hit"] is False and Path(first["data"]["ref_cache"]).parent == run / "train_cache"
    rows = _metrics(tmp_path / "o1")
    assert rows[0]["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "o1" / "final")  # a plain model: no adapter files
    assert not (tmp_path / "o1" / "final" / "adapter_config.json").exists()
    base = _weights(tiny)
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base["model.layers.0.self_attn.q_proj.weight"])
    second = run_mdpo(cfg, data=run, model=tiny, out=tmp_path / "o2")
    assert second["data"]["ref_cache_hit"] is True
    assert _metrics(tmp_path / "o2")[0]["loss"] == pytest.approx(rows[0]["loss"], abs=1e-6)


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tiny, tmp_path):  # noqa: F811
    run = _run_dir(tmp_path)
    common = ["train", "sft", "--data", str(run), "--model", str(tiny), "--learning-rate", "2e-3", "--batch-size", "4",
              "--micro-batch-size", "1", "--max-steps", "2", "--max-length", "1024", "--mode", "fc", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "engine.cli", *common, "--out", str(tmp_path / "ddp")],
                         env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "engine.cli", *common, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    d, o = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["processes"] == 2
    for rd, ro in zip(d, o):
        assert rd["loss"] == pytest.approx(ro["loss"], rel=1e-5) and rd["tokens"] == ro["tokens"]
    wd, wo = _weights(tmp_path / "ddp" / "final"), _weights(tmp_path / "one" / "final")
    for k in wd:
        torch.testing.assert_close(wd[k], wo[k], atol=1e-5, rtol=1e-4)
