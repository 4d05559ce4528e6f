"""``attn_implementation="torch_varlen"``: packed rows attended per sequence with PyTorch's own
flash-attention varlen kernel, for machines without the ``flash_attn`` package.

Packing (train/batch.py) lays a micro-batch's sequences end to end in one row with position
ids that restart at 0 per sequence. Under ``sdpa`` transformers then builds a dense
block-diagonal mask and attends over the whole row, so packing costs more attention than it
saves in padding; ``flash_attention_2`` needs the ``flash_attn`` wheel (or a hub kernel), which
a machine without internet may lack. PyTorch ships the same FlashAttention-2 varlen kernel as
``torch.nn.attention.varlen.varlen_attn`` (CUDA only): this module derives the cumulative
sequence offsets from the position ids (a new sequence wherever a position does not continue
the one before, as transformers' own packed-sequence detection does) and calls it.

On CPU, or without that kernel, or in float32 without autocast (the kernel takes 16-bit
inputs), each sequence goes through SDPA on its own: the same result, the reference path the
CPU tests check against ``sdpa``. A 4-D mask (mDPO's shared-prefix tree) cannot be expressed as
sequence offsets and goes to ``sdpa`` unchanged. Training forward passes only: with a KV cache
(queries shorter than keys) it refuses, since generation needs ``sdpa``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

NAME = "torch_varlen"


def kernel_available() -> bool:
    """Whether PyTorch has its varlen flash kernel and a CUDA device to run it on."""
    return torch.cuda.is_available() and _torch_varlen() is not None


def register() -> str:
    """Make ``attn_implementation="torch_varlen"`` loadable by transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    # flash's mask function: None for unpadded rows (no dense mask is ever built), the 2-D padding
    # mask otherwise; without a registered one transformers would drop padding masks silently.
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, flash_attention_mask)
    return NAME


def sequence_offsets(position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, rows: int,
                     length: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """(int32 cumulative offsets over the flattened rows, longest sequence). A row always starts a
    sequence; so does every position that does not continue the previous one, and every switch
    between real and padding tokens (padding then forms sequences of its own that nothing real sees)."""
    pos = (torch.arange(length, device=device) if position_ids is None else position_ids).expand(rows, length)
    start = torch.ones(rows, length, dtype=torch.bool, device=device)
    start[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    if attention_mask is not None:
        keep = attention_mask.bool()
        start[:, 1:] |= keep[:, 1:] != keep[:, :-1]
    begins = start.flatten().nonzero().squeeze(1)
    offsets = torch.cat([begins, begins.new_tensor([rows * length])]).to(torch.int32)
    return offsets, int((offsets[1:] - offsets[:-1]).max())


def varlen_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                             position_ids: torch.Tensor | None = None, sliding_window: int | None = None, **kwargs):
    """transformers' attention interface: q/k/v [B, H, T, D] -> ([B, T, H, D], None)."""
    if attention_mask is not None and attention_mask.ndim == 4:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      sliding_window=sliding_window, **kwargs)
    rows, heads, length, dim = query.shape
    if key.shape[2] != length:
        raise ValueError(f"{NAME} attention is for training forward passes (queries {length}, keys {key.shape[2]}: "
                         "a KV cache); load the model with attn_implementation='sdpa' to generate")
    if sliding_window is not None or dropout:
        raise ValueError(f"{NAME} attention supports neither sliding windows nor attention dropout; use sdpa")
    offsets, longest = _offsets_once(position_ids, attention_mask, rows, length, query.device)
    flat = [t.transpose(1, 2).reshape(rows * length, t.shape[1], dim) for t in (query, key, value)]
    out = _attend(*flat, offsets, longest, scaling)
    return out.view(rows, length, heads, dim), None


# Every layer of one forward pass gets the same position_ids tensor; deriving the offsets once
# instead of per layer saves a host-device sync (nonzero, max) per layer, which would stall the
# kernel queue each time. The entry holds its tensors, so their identity cannot be reused meanwhile.
_last: list[tuple] = []


def _offsets_once(position_ids, attention_mask, rows: int, length: int,
                  device: torch.device) -> tuple[torch.Tensor, int]:
    key = (position_ids, attention_mask, rows, length, device)
    if _last and all(a is b if isinstance(a, torch.Tensor) or a is None else a == b for a, b in zip(_last[0][0], key)):
        return _last[0][1]
    found = sequence_offsets(position_ids, attention_mask, rows, length, device)
    _last[:] = [(key, found)]
    return found


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, longest: int,
            scale: float | None) -> torch.Tensor:
    """Causal attention within each [offsets[i], offsets[i+1]) of [tokens, heads, dim] tensors."""
    dtype = torch.get_autocast_dtype("cuda") if q.is_cuda and torch.is_autocast_enabled("cuda") else q.dtype
    fn = _torch_varlen()
    if q.is_cuda and fn is not None and dtype in (torch.float16, torch.bfloat16):
        return _call_varlen(fn, q.to(dtype), k.to(dtype), v.to(dtype), offsets, longest, scale)
    bounds = offsets.tolist()
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[a:b].transpose(0, 1)[None].to(dtype) for t in (q, k, v))
        parts.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale,
                                                    enable_gqa=qs.shape[1] != ks.shape[1])[0].transpose(0, 1))
    return torch.cat(parts)


def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # PyTorch before 2.9
        return None
    return varlen_attn


def _call_varlen(fn, q, k, v, offsets, longest, scale):
    # The public signature changed between releases: 2.9-2.10 take is_causal and equal head
    # counts; later ones take window_size=(-1, 0) for causal, scale, and enable_gqa.
    params = inspect.signature(fn).parameters
    kwargs = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    if "scale" in params:
        kwargs["scale"] = scale
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    return fn(q, k, v, offsets, offsets, longest, longest, **kwargs)
