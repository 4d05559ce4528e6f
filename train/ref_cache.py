"""Reference-policy log-probabilities, computed once and cached beside the data.

mDPO needs log pi_ref for every assistant turn of both sides of every pair. They never change
during training, so they are computed before training (split over the processes) and stored
in <data>/train_cache/ref-<data fingerprint>-<model fingerprint>.msgpack: the reference model
is gone from memory before the first optimizer step, and a second run (or a resume) on the
same data and reference reads the file instead of running the model. The data fingerprint
covers tokens and masks, so a different template or max_length gets its own file.
"""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Sequence

import msgspec
import numpy as np
import torch
import torch.distributed as dist

from engine.atomic import write_atomic
from engine.errors import UserInputError
from train.batch import TokenLogProbs, collate_pairs, token_logps, turn_sums
from train.data import PairExample

RefLogps = dict[str, tuple[np.ndarray, np.ndarray]]  # pair id -> per-turn log-prob sums (chosen, rejected)


class _CacheFile(msgspec.Struct):
    data_fingerprint: str
    model_fingerprint: str
    logps: dict[str, tuple[list[float], list[float]]]


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 of the config and every weight file's bytes."""
    folder = Path(model_dir)
    files = [folder / "config.json"] + sorted(p for ext in ("*.safetensors", "*.bin") for p in folder.glob(ext))
    h = hashlib.sha256()
    for f in files:
        if not f.is_file():
            raise UserInputError(f"reference model {model_dir}: {f.name} is missing; pass a complete checkpoint folder")
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def cache_path(cache_dir: Path, data_fp: str, model_fp: str) -> Path:
    return cache_dir / f"ref-{data_fp[:20]}-{model_fp[:20]}.msgpack"


@torch.no_grad()
def compute(model, pairs: Sequence[PairExample], *, micro_batch_size: int, packing: bool, share_prefix: bool, pad_id: int,
            device: torch.device, bf16: bool, logits_chunk: int) -> RefLogps:
    was_training = model.training
    model.eval()
    module = TokenLogProbs(model, logits_chunk=logits_chunk)
    out: RefLogps = {}
    use_bf16 = device.type == "cuda" and bf16
    for a in range(0, len(pairs), micro_batch_size):
        chunk = pairs[a:a + micro_batch_size]
        batch = collate_pairs(chunk, packing=packing, pad_id=pad_id, share_prefix=share_prefix).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            turns = turn_sums(batch, token_logps(module, batch)).double().cpu().numpy()
        sizes = batch.seq_turns.tolist()
        bounds = np.cumsum([0] + sizes)
        for i, p in enumerate(chunk):
            out[p.id] = (turns[bounds[2 * i]:bounds[2 * i + 1]], turns[bounds[2 * i + 1]:bounds[2 * i + 2]])
    model.train(was_training)
    return out


def reference_logps(pairs: Sequence[PairExample], *, data_fp: str, ref_dir: str | Path, cache_dir: Path,
                    rank: int, world: int, device: torch.device, micro_batch_size: int, packing: bool, share_prefix: bool, pad_id: int,
                    bf16: bool, logits_chunk: int, model=None) -> tuple[RefLogps, Path, bool]:
    """(log-probs, cache file, whether it was a cache hit). ``model`` reuses an already loaded
    reference (the policy before training); otherwise ``ref_dir`` is loaded and freed after."""
    model_fp = model_fingerprint(ref_dir)
    path = cache_path(cache_dir, data_fp, model_fp)
    if path.is_file():
        cached = msgspec.msgpack.decode(path.read_bytes(), type=_CacheFile)
        if {p.id for p in pairs} <= cached.logps.keys():
            return {k: (np.asarray(c), np.asarray(r)) for k, (c, r) in cached.logps.items()}, path, True
    own = model is None
    if own:
        from train.loop import load_causal_lm

        model = load_causal_lm(ref_dir)
    model.to(device)
    mine = compute(model, list(pairs[rank::world]), micro_batch_size=micro_batch_size, packing=packing, share_prefix=share_prefix, pad_id=pad_id,
                   device=device, bf16=bf16, logits_chunk=logits_chunk)
    if own:
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    parts = [mine]
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, mine)
    merged: RefLogps = {k: v for part in parts for k, v in part.items()}
    if rank == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        body = _CacheFile(data_fp, model_fp, {k: (c.tolist(), r.tolist()) for k, (c, r) in merged.items()})
        write_atomic(path, msgspec.msgpack.encode(body))
    if world > 1:
        dist.barrier()
    return merged, path, False
