"""A few real steps on SmolLM2-135M-Instruct (the bundled checkpoint): SFT in full and mDPO
with LoRA, on its own tool chat template; the results reload and generate."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_support import single_turn_pairs

from engine.models import smollm2_checkpoint
from train.mdpo import run_mdpo
from train.mdpo_config import MDPOConfig
from train.samples import trajectories
from train.sft import run_sft
from train.sft_config import SFTConfig


@pytest.mark.slow
def test_smollm2_sft_then_lora_mdpo(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = smollm2_checkpoint()
    sft = run_sft(SFTConfig(learning_rate=1e-5, batch_size=2, micro_batch_size=1, max_steps=2, max_length=1024),
                  data=tmp_path, model=base, out=tmp_path / "sft", records=trajectories(4, turns=1))
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert sft["steps"] == 2 and all(math.isfinite(x) and 0 < x < 10 for x in losses)
    dpo = run_mdpo(MDPOConfig(learning_rate=1e-4, batch_size=2, micro_batch_size=1, max_steps=1, lora=True, lora_r=8,
                              lora_alpha=16, max_length=1024),
                   data=tmp_path, model=tmp_path / "sft" / "final", out=tmp_path / "dpo", records=single_turn_pairs(2))
    assert dpo["final"]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-3)
    final = tmp_path / "dpo" / "final"
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    text = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).strip()
