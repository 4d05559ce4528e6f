"""mDPO against TRL: on single-turn pairs our loss and its gradients equal DPOTrainer's sigmoid loss.
(Multi-turn and DMPO weighting are checked against float64 in test_train_loss.py.)"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from train_support import single_turn_pairs, tiny  # noqa: F401

from train.batch import TokenLogProbs
from train.data import ChatRenderer, pair_examples
from train.loop import load_causal_lm, load_tokenizer
from train.mdpo import MDPOStep
from train.mdpo_config import MDPOConfig
from train.ref_cache import compute


def _perturbed(model, seed: int):
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return ref


def _our_loss(model, ref_model, examples, cfg: MDPOConfig):
    ref = compute(ref_model, examples, micro_batch_size=len(examples), packing=cfg.packing == "on",
                  share_prefix=cfg.share_prefix, pad_id=0, device=torch.device("cpu"), bf16=False, logits_chunk=64)
    step = MDPOStep(cfg, 0, torch.device("cpu"), ref)
    loss, stats = step(TokenLogProbs(model, logits_chunk=64), examples, MDPOStep.counts(examples))
    loss.backward()
    return loss, stats


@pytest.mark.parametrize("share_prefix", [True, False])
def test_single_turn_loss_and_grads_match_trl(tiny, tmp_path, share_prefix):  # noqa: F811
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok = load_tokenizer(tiny)
    examples, report = pair_examples(single_turn_pairs(4), ChatRenderer(tok, source="tiny", max_length=1024, mode="fc"))
    assert report.used == 4
    policy = load_causal_lm(tiny)
    ref_model = _perturbed(policy, 1)  # a reference unlike the policy: the loss is not just ln 2
    trl_policy, trl_ref = copy.deepcopy(policy), copy.deepcopy(ref_model)

    cfg = MDPOConfig(beta=0.1, sft_weight=0.0, share_prefix=share_prefix)
    ours, _ = _our_loss(policy, ref_model, examples, cfg)

    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, loss_type=["sigmoid"], use_cpu=True, report_to="none",
                     per_device_train_batch_size=4, max_length=None, bf16=False)
    prompt = [{"role": "user", "content": "hi"}]
    ds = Dataset.from_list([{"prompt": prompt, "chosen": [{"role": "assistant", "content": "a"}],
                             "rejected": [{"role": "assistant", "content": "b"}]}])
    trainer = DPOTrainer(model=trl_policy, ref_model=trl_ref, args=args, train_dataset=ds, processing_class=tok)
    rows = []
    for ex in examples:  # TRL's prompt/completion split of exactly our tokens: completion = the assistant turn
        t = [np.nonzero(s.turn >= 0)[0] for s in (ex.chosen, ex.rejected)]
        start = int(t[0][0])
        assert int(t[1][0]) == start and np.array_equal(ex.chosen.input_ids[:start], ex.rejected.input_ids[:start])
        rows.append({"prompt_ids": ex.chosen.input_ids[:start].tolist(),
                     "chosen_ids": ex.chosen.input_ids[start:t[0][-1] + 1].tolist(),
                     "rejected_ids": ex.rejected.input_ids[start:t[1][-1] + 1].tolist()})
    batch = trainer.data_collator(rows)
    trl_policy.train()
    theirs = trainer.compute_loss(trainer.model, batch)
    theirs.backward()

    assert abs(ours.item() - math.log(2)) > 1e-3
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    grads = dict(trl_policy.named_parameters())
    n = 0
    for name, p in policy.named_parameters():
        if p.grad is None:
            continue
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-5, rtol=1e-5, msg=name)
        n += 1
    assert n >= 20
