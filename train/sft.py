"""Stage 1: supervised fine-tuning on the assistant tokens of positive trajectories.

The loss is the mean negative log-likelihood over every trained token of the optimizer step
(all micro-batches, all processes), so a long conversation weighs by its tokens, the way a
single large batch would.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from train.batch import collate, token_logps
from train.data import ChatRenderer, Example, fingerprint, read_run, require_examples, sft_examples
from train.loop import Trainer, init_distributed, load_causal_lm, load_tokenizer, resolve_packing, seed_everything
from train.sft_config import SFTConfig


class SFTStep:
    def __init__(self, cfg: SFTConfig, pad_id: int, device: torch.device):
        self.packing, self.pad_id, self.device = cfg.packing == "on", pad_id, device

    @staticmethod
    def counts(items: list[Example]) -> dict[str, float]:
        return {"targets": float(sum(e.n_targets for e in items))}

    def __call__(self, module, items: list[Example], counts: dict[str, float]):
        batch = collate(items, packing=self.packing, pad_id=self.pad_id).to(self.device)
        loss = -token_logps(module, batch).sum() / counts["targets"]
        return loss, {"loss": loss.item(), "tokens": float(batch.n_tokens)}


def run_sft(cfg: SFTConfig, *, data: str | Path, model: str | Path, out: str | Path,
            resume: Path | None = None, records: Iterable[Any] | None = None) -> dict[str, Any]:
    """Train and write <out>/final (HF checkpoint), metrics.jsonl, training.png, summary.json."""
    d = init_distributed(cfg.device)
    seed_everything(cfg.seed)
    tok = load_tokenizer(model, cfg.chat_template)
    renderer = ChatRenderer(tok, source=str(model), max_length=cfg.max_length, truncation=cfg.truncation, mode=cfg.mode)
    source = read_run(data, "trajectories") if records is None else records
    examples, report = sft_examples(source, renderer, polarity=cfg.polarity, require_verified=cfg.require_verified)
    require_examples(examples, report, "trajectories", f"{data}/trajectories")
    if d.main:
        print(f"[sft] trajectories: {report.summary()}", file=sys.stderr, flush=True)
    lm = load_causal_lm(model, cfg.attn_implementation)
    cfg = resolve_packing(cfg, lm)
    step = SFTStep(cfg, tok.pad_token_id, d.device)
    trainer = Trainer(stage="sft", cfg=cfg, d=d, model=lm, tokenizer=tok, items=examples,
                      lengths=[len(e) for e in examples], step_fn=step, count_fn=SFTStep.counts, out_dir=Path(out),
                      data_fp=fingerprint(examples), model_source=str(model), report=report.as_dict())
    return trainer.train(resume)
