"""SFT and mDPO losses against direct float64 computations (one sequence at a time, full
logits, explicit loops), with packing, padding and prefix sharing."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from train_support import tiny  # noqa: F401

from train.batch import TokenLogProbs
from train.data import ChatRenderer, pair_examples, sft_examples
from train.loop import load_causal_lm, load_tokenizer
from train.mdpo import MDPOStep
from train.mdpo_config import MDPOConfig
from train.ref_cache import compute
from train.samples import pairs, trajectories
from train.sft import SFTStep
from train.sft_config import SFTConfig


def _turn_logps64(model, ex) -> list[float]:
    """Per assistant turn: sum of log p(token | everything before it), in float64."""
    ids = torch.tensor(ex.input_ids.astype(np.int64))[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    t = np.nonzero(ex.turn >= 0)[0]
    picked = logp[torch.from_numpy(t - 1), torch.from_numpy(ex.input_ids[t].astype(np.int64))].numpy()
    return np.bincount(ex.turn[t], weights=picked, minlength=ex.n_turns).tolist()


@pytest.fixture(scope="module")
def models(tiny):  # noqa: F811
    m32 = load_causal_lm(tiny)
    return m32, copy.deepcopy(m32).double()


@pytest.mark.parametrize("packing", ["on", "off"])
def test_sft_loss_equals_float64_reference(tiny, models, packing):  # noqa: F811
    m32, m64 = models
    tok = load_tokenizer(tiny)
    examples, _ = sft_examples(trajectories(2, turns=2), ChatRenderer(tok, source="t", max_length=4096))
    n = sum(e.n_targets for e in examples)
    ref = -sum(sum(_turn_logps64(m64, e)) for e in examples) / n
    step32 = SFTStep(SFTConfig(packing=packing), tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        ours64, _ = step32(TokenLogProbs(m64, logits_chunk=100), examples, SFTStep.counts(examples))
        ours32, _ = step32(TokenLogProbs(m32, logits_chunk=100), examples, SFTStep.counts(examples))
    assert ours64.item() == pytest.approx(ref, rel=1e-10)
    assert ours32.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("weighting,share", [("uniform", True), ("dmpo", True), ("dmpo", False)])
def test_mdpo_loss_equals_float64_reference(tiny, models, weighting, share):  # noqa: F811
    _, m64 = models
    ref64 = copy.deepcopy(m64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in ref64.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1)
    tok = load_tokenizer(tiny)
    examples, _ = pair_examples(pairs(2, turns=2), ChatRenderer(tok, source="t", max_length=4096))
    beta, lam, gamma = 0.3, 0.5, 0.8
    dpo, nll, n_chosen = 0.0, 0.0, 0
    for ex in examples:
        score = []
        for side in (ex.chosen, ex.rejected):
            pol, ref = _turn_logps64(m64, side), _turn_logps64(ref64, side)
            H = len(pol)
            w = [1.0] * H if weighting == "uniform" else [gamma ** h * (1 - gamma) / (1 - gamma ** H) for h in range(H)]
            score.append(sum(w[h] * (pol[h] - ref[h]) for h in range(H)))
        dpo += math.log1p(math.exp(-beta * (score[0] - score[1])))  # -log sigmoid(x)
        nll -= sum(_turn_logps64(m64, ex.chosen))
        n_chosen += ex.chosen.n_targets
    expected = dpo / len(examples) + lam * nll / n_chosen

    cfg = MDPOConfig(beta=beta, sft_weight=lam, turn_weighting=weighting, turn_discount=gamma, share_prefix=share)
    cached = compute(ref64, examples, micro_batch_size=2, packing=True, share_prefix=share, pad_id=0,
                     device=torch.device("cpu"), bf16=False, logits_chunk=50)
    step = MDPOStep(cfg, 0, torch.device("cpu"), cached)
    assert all(len(c) == 4 and len(r) == 4 for c, r in cached.values())
    with torch.no_grad():
        loss, stats = step(TokenLogProbs(m64, logits_chunk=50), examples, MDPOStep.counts(examples))
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert abs(stats["reward_margin"]) > 1e-3  # the reference really differs from the policy
