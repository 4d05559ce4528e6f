"""Micro-batches and per-token log-probabilities of the trained tokens only.

Packing puts a micro-batch's sequences end to end in one row with ``position_ids`` that restart
at 0 for each sequence and no attention mask: transformers then builds a block-diagonal causal
mask (sdpa/eager) or uses variable-length kernels (flash attention), so no token attends across
a sequence boundary and no padding is computed. Without packing, rows are right-padded.

Only positions that predict an assistant token go through the LM head, in chunks that are
recomputed in the backward pass, so the full [tokens, vocab] logits never exist at once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from train.data import Example


@dataclass
class Batch:
    input_ids: torch.Tensor  # [R, T]
    position_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor | None  # [R, T] padded, [R, 1, T, T] bool tree mask, None packed
    pred_index: torch.Tensor  # [N] flat index (r*T + t-1) of the state that predicts target t
    targets: torch.Tensor  # [N] token ids of the trained tokens
    token_turn: torch.Tensor  # [N] global turn index of each target
    turn_seq: torch.Tensor  # [H] sequence index of each turn
    turn_pos: torch.Tensor  # [H] position of the turn within its sequence (0 = first)
    seq_turns: torch.Tensor  # [S] number of assistant turns per sequence
    n_tokens: int  # real (non-pad) tokens

    def to(self, device: torch.device | str) -> "Batch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device, non_blocking=True)
        return Batch(**moved)

    @property
    def token_seq(self) -> torch.Tensor:
        return self.turn_seq[self.token_turn]


def collate(seqs: Sequence[Example], *, packing: bool, pad_id: int) -> Batch:
    lengths = [len(s) for s in seqs]
    rows, width = (1, sum(lengths)) if packing else (len(seqs), max(lengths))
    ids = np.full((rows, width), pad_id, dtype=np.int64)
    pos = np.zeros((rows, width), dtype=np.int64)
    mask = np.zeros((rows, width), dtype=np.int64)
    pred, targets, token_turn, turn_seq, turn_pos = [], [], [], [], []
    offset, turns_before = 0, 0
    for i, s in enumerate(seqs):
        r, start = (0, offset) if packing else (i, 0)
        n = len(s)
        ids[r, start:start + n] = s.input_ids
        pos[r, start:start + n] = np.arange(n)
        mask[r, start:start + n] = 1
        t = np.nonzero(s.turn >= 0)[0]  # never 0: a conversation starts with template tokens
        pred.append(r * width + start + t - 1)
        targets.append(s.input_ids[t])
        token_turn.append(s.turn[t].astype(np.int64) + turns_before)
        turn_seq.append(np.full(s.n_turns, i))
        turn_pos.append(np.arange(s.n_turns))
        turns_before += s.n_turns
        offset += n
    cat = lambda parts: torch.from_numpy(np.concatenate(parts).astype(np.int64))  # noqa: E731
    return Batch(
        input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos),
        attention_mask=None if packing else torch.from_numpy(mask),
        pred_index=cat(pred), targets=cat(targets), token_turn=cat(token_turn), turn_seq=cat(turn_seq),
        turn_pos=cat(turn_pos), seq_turns=torch.tensor([s.n_turns for s in seqs]), n_tokens=sum(lengths))


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if len(diff) else n


def collate_shared(pairs: Sequence[tuple[Example, Example]], *, packing: bool, pad_id: int) -> Batch:
    """Pairs with the tokens both sides share computed once: each pair is laid out as
    [shared prefix | chosen rest | rejected rest]; a tree-shaped mask lets each rest attend to the
    prefix and to itself only, and position ids continue the prefix, so every token sees exactly
    the context it has in its own conversation. Sequences in the result alternate chosen, rejected."""
    plans = []
    for c, r in pairs:
        k = _common_prefix(c.input_ids, r.input_ids)
        plans.append((c, r, k, len(c) - k, len(r) - k))
    sizes = [k + a + b for _, _, k, a, b in plans]
    rows, width = (1, sum(sizes)) if packing else (len(plans), max(sizes))
    ids = np.full((rows, width), pad_id, dtype=np.int64)
    pos = np.zeros((rows, width), dtype=np.int64)
    block = np.full((rows, width), -1, dtype=np.int64)
    branch = np.zeros((rows, width), dtype=np.int64)
    pred, targets, token_turn, turn_seq, turn_pos, seq_turns = [], [], [], [], [], []
    offset, turns_before = 0, 0
    for i, (c, r, k, a, b) in enumerate(plans):
        row, base = (0, offset) if packing else (i, 0)
        ids[row, base:base + k] = c.input_ids[:k]
        ids[row, base + k:base + k + a] = c.input_ids[k:]
        ids[row, base + k + a:base + k + a + b] = r.input_ids[k:]
        pos[row, base:base + k + a] = np.arange(k + a)
        pos[row, base + k + a:base + k + a + b] = np.arange(k, k + b)
        block[row, base:base + k + a + b] = i
        branch[row, base + k:base + k + a] = 1
        branch[row, base + k + a:base + k + a + b] = 2
        for side, (s, rest_start) in enumerate(((c, base + k), (r, base + k + a))):
            t = np.nonzero(s.turn >= 0)[0]
            src = t - 1
            flat = np.where(src < k, base + src, rest_start + src - k)
            pred.append(row * width + flat)
            targets.append(s.input_ids[t])
            token_turn.append(s.turn[t].astype(np.int64) + turns_before)
            turn_seq.append(np.full(s.n_turns, 2 * i + side))
            turn_pos.append(np.arange(s.n_turns))
            seq_turns.append(s.n_turns)
            turns_before += s.n_turns
        offset += k + a + b
    same = block[:, :, None] == block[:, None, :]
    causal = pos[:, None, :] <= pos[:, :, None]
    tree = (branch[:, None, :] == 0) | (branch[:, None, :] == branch[:, :, None])
    mask = (same & causal & tree & (block[:, :, None] >= 0)) | np.eye(width, dtype=bool)[None]  # pads see themselves
    cat = lambda parts: torch.from_numpy(np.concatenate(parts).astype(np.int64))  # noqa: E731
    return Batch(
        input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos),
        attention_mask=torch.from_numpy(mask)[:, None], pred_index=cat(pred), targets=cat(targets),
        token_turn=cat(token_turn), turn_seq=cat(turn_seq), turn_pos=cat(turn_pos),
        seq_turns=torch.tensor(seq_turns), n_tokens=sum(len(c) + len(r) for c, r, *_ in plans))


def collate_pairs(pairs, *, packing: bool, pad_id: int, share_prefix: bool) -> Batch:
    """Chosen/rejected of each pair as consecutive sequences (see ``collate_shared``)."""
    if share_prefix:
        return collate_shared([(p.chosen, p.rejected) for p in pairs], packing=packing, pad_id=pad_id)
    return collate([s for p in pairs for s in (p.chosen, p.rejected)], packing=packing, pad_id=pad_id)


def _target_logp(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden)
    if logits.dtype in (torch.bfloat16, torch.float16):  # softmax over a large vocabulary needs float32
        logits = logits.float()
    return -F.cross_entropy(logits, targets, reduction="none")


def _core(lm: nn.Module) -> nn.Module:
    """The CausalLM under a peft wrapper (its LoRA layers are injected in place, so they still run)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


class TokenLogProbs(nn.Module):
    """Wraps a causal LM so that DDP sees one forward: batch -> log p(target) per trained token."""

    def __init__(self, lm: nn.Module, *, logits_chunk: int = 1024):
        super().__init__()
        self.lm = lm
        self.logits_chunk = logits_chunk

    def forward(self, input_ids, position_ids, attention_mask, pred_index, targets) -> torch.Tensor:
        core = _core(self.lm)
        hidden = core.get_decoder()(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                                    use_cache=False).last_hidden_state
        picked = hidden.flatten(0, 1).index_select(0, pred_index)
        head = core.get_output_embeddings()
        out = []
        for a in range(0, len(targets), self.logits_chunk):
            h, t = picked[a:a + self.logits_chunk], targets[a:a + self.logits_chunk]
            if torch.is_grad_enabled():
                out.append(checkpoint(_target_logp, head, h, t, use_reentrant=False))
            else:
                out.append(_target_logp(head, h, t))
        return torch.cat(out) if out else picked.new_zeros(0)


def token_logps(module: nn.Module, batch: Batch) -> torch.Tensor:
    return module(batch.input_ids, batch.position_ids, batch.attention_mask, batch.pred_index, batch.targets)


def turn_sums(batch: Batch, logp: torch.Tensor) -> torch.Tensor:
    """Sum of token log-probs per assistant turn: [H]."""
    out = logp.new_zeros(len(batch.turn_seq))
    return out.index_add(0, batch.token_turn, logp)
