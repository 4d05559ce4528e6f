"""Stage 2: trajectory-level multi-turn DPO (Xiong et al.'s M-DPO, as the paper uses it).

    L = -log sigmoid(beta * [sum_h w_h log pi/pi_ref (chosen turn h) - sum_h w_h log pi/pi_ref (rejected turn h)])
        + lambda * NLL(assistant tokens of chosen)

A turn's log pi is the sum of its tokens' log-probs (end-of-turn token included); system,
user and tool tokens never count. w_h = 1 is the paper's plain sum; the DMPO option weights
turn h by gamma^h (1-gamma)/(1-gamma^H). The DPO term is averaged over the step's pairs and the
NLL over the step's chosen tokens. With one assistant turn, w = 1 and lambda = 0 this is
exactly TRL's sigmoid DPO loss.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from train.batch import Batch, collate_pairs, token_logps, turn_sums
from train.data import ChatRenderer, PairExample, fingerprint, pair_examples, read_run, require_examples
from train.loop import Trainer, init_distributed, load_causal_lm, load_tokenizer, resolve_packing, seed_everything
from train.mdpo_config import MDPOConfig
from train.ref_cache import RefLogps, reference_logps


def turn_weights(batch: Batch, weighting: str, gamma: float) -> torch.Tensor:
    if weighting == "uniform":
        return torch.ones(len(batch.turn_pos), dtype=torch.float64, device=batch.turn_pos.device)
    h = batch.turn_pos.double()
    n = batch.seq_turns[batch.turn_seq].double()
    return (1 / n) if gamma == 1 else gamma ** h * (1 - gamma) / (1 - gamma ** n)


def mdpo_terms(batch: Batch, logp: torch.Tensor, ref_turns: torch.Tensor, *, beta: float, weighting: str = "uniform",
               gamma: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-pair margins and losses; sequences in ``batch`` alternate chosen, rejected."""
    ratio = (turn_sums(batch, logp) - ref_turns) * turn_weights(batch, weighting, gamma).to(logp.dtype)
    seq = ratio.new_zeros(len(batch.seq_turns)).index_add(0, batch.turn_seq, ratio)
    chosen, rejected = beta * seq[0::2], beta * seq[1::2]
    margin = chosen - rejected
    return {"dpo": -F.logsigmoid(margin), "margin": margin, "chosen": chosen, "rejected": rejected,
            "chosen_nll": -logp[batch.token_seq % 2 == 0].sum()}


class MDPOStep:
    def __init__(self, cfg: MDPOConfig, pad_id: int, device: torch.device, ref: RefLogps):
        self.cfg, self.pad_id, self.device, self.ref = cfg, pad_id, device, ref

    @staticmethod
    def counts(items: list[PairExample]) -> dict[str, float]:
        return {"pairs": float(len(items)), "chosen_tokens": float(sum(p.chosen.n_targets for p in items))}

    def __call__(self, module, items: list[PairExample], counts: dict[str, float]):
        cfg = self.cfg
        batch = collate_pairs(items, packing=cfg.packing == "on", pad_id=self.pad_id, share_prefix=cfg.share_prefix).to(self.device)
        logp = token_logps(module, batch)
        ref = torch.from_numpy(np.concatenate([np.concatenate(self.ref[p.id]) for p in items]))
        t = mdpo_terms(batch, logp, ref.to(self.device, logp.dtype), beta=cfg.beta, weighting=cfg.turn_weighting,
                       gamma=cfg.turn_discount)
        n = counts["pairs"]
        dpo = t["dpo"].sum() / n
        nll = t["chosen_nll"] / counts["chosen_tokens"]
        loss = dpo + cfg.sft_weight * nll if cfg.sft_weight else dpo
        stats = {"loss": loss.item(), "dpo_loss": dpo.item(), "nll": nll.item(),
                 "reward_margin": t["margin"].sum().item() / n, "reward_accuracy": (t["margin"] > 0).sum().item() / n,
                 "chosen_reward": t["chosen"].sum().item() / n, "rejected_reward": t["rejected"].sum().item() / n,
                 "tokens": float(batch.n_tokens)}
        return loss, stats


def run_mdpo(cfg: MDPOConfig, *, data: str | Path, model: str | Path, out: str | Path,
             resume: Path | None = None, records: Iterable[Any] | None = None) -> dict[str, Any]:
    d = init_distributed(cfg.device)
    seed_everything(cfg.seed)
    tok = load_tokenizer(model, cfg.chat_template)
    renderer = ChatRenderer(tok, source=str(model), max_length=cfg.max_length, truncation="skip", mode=cfg.mode)
    source = read_run(data, "pairs") if records is None else records
    pairs, report = pair_examples(source, renderer)
    require_examples(pairs, report, "preference pairs", f"{data}/pairs")
    if d.main:
        print(f"[mdpo] pairs: {report.summary()}", file=sys.stderr, flush=True)
    data_fp = fingerprint(pairs)
    ref_dir = cfg.ref_model or str(model)
    # The policy starts as the reference unless another is named: reuse it instead of a second copy.
    policy = load_causal_lm(model, cfg.attn_implementation)
    cfg = resolve_packing(cfg, policy)
    t0 = time.perf_counter()
    ref, cache_file, hit = reference_logps(
        pairs, data_fp=data_fp, ref_dir=ref_dir, cache_dir=Path(cfg.ref_cache_dir or Path(data) / "train_cache"),
        rank=d.rank, world=d.world, device=d.device, micro_batch_size=cfg.micro_batch_size, packing=cfg.packing == "on",
        share_prefix=cfg.share_prefix, pad_id=tok.pad_token_id, bf16=cfg.bf16, logits_chunk=cfg.logits_chunk,
        model=None if cfg.ref_model else policy)
    ref_seconds = round(time.perf_counter() - t0, 2)
    if d.main:
        print(f"[mdpo] reference log-probs: {'cached' if hit else 'computed'} ({cache_file})", file=sys.stderr, flush=True)
    step = MDPOStep(cfg, tok.pad_token_id, d.device, ref)
    trainer = Trainer(stage="mdpo", cfg=cfg, d=d, model=policy, tokenizer=tok, items=pairs, lengths=[len(p) for p in pairs],
                      step_fn=step, count_fn=MDPOStep.counts, out_dir=Path(out), data_fp=data_fp,
                      model_source=str(model), report=report.as_dict() | {"ref_cache": str(cache_file), "ref_cache_hit": hit,
                                                           "ref_seconds": ref_seconds})
    return trainer.train(resume)
