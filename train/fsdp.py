"""FSDP2 (``torch.distributed.fsdp.fully_shard``): full fine-tuning of a model larger than one GPU.

Every decoder layer (the classes a Hugging Face model lists in ``_no_split_modules``) becomes
its own FSDP unit, and the ``TokenLogProbs`` wrapper, whose forward the trainer calls, is the
root unit holding the rest (embeddings, final norm, LM head). Parameters, gradients and AdamW
state are sharded over the processes; a layer's weights are gathered only while it runs.
Sharding starts from the model on the CPU and moves only each process's shard to its device,
so the whole model never has to fit one GPU.

Checkpoints stay Hugging Face folders: the full state dict is gathered to rank 0 on the CPU
(``get_model_state_dict(full_state_dict=True, cpu_offload=True)``), which writes it with
``save_pretrained(state_dict=...)``; the optimizer state is gathered the same way. Resuming hands every rank
the full state dicts and each keeps its own shard. Gathering is collective: every rank calls
these functions, only rank 0 gets (and writes) the result.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from engine.errors import UserInputError

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Not strict: a checkpoint of a model with tied embeddings has no lm_head.weight (the trainer checks what is missing).
_SCATTER = StateDictOptions(full_state_dict=True, strict=False)


def shard(root: nn.Module, lm: nn.Module) -> nn.Module:
    """Shard ``lm``'s decoder layers, then ``root`` (the module the trainer calls, wrapping ``lm``)."""
    layer_classes = set(getattr(lm, "_no_split_modules", None) or ())
    layers = [m for m in lm.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise UserInputError(f"--parallel fsdp: {type(lm).__name__} names no decoder layer classes (_no_split_modules); "
                             "train it with --parallel ddp")
    for layer in layers:
        fully_shard(layer)
    fully_shard(root)
    return root


def set_gradient_sync(module: nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients on this backward (the last micro-batch of a step) or keep accumulating."""
    assert isinstance(module, FSDPModule)
    module.set_requires_gradient_sync(sync)


def full_model_state(lm: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0's CPU ({} on other ranks). Collective.

    A tied weight (the LM head sharing the embeddings) is listed once, under its first name, as
    ``save_pretrained`` writes an unsharded model: the gathered copies are no longer one tensor."""
    weights = get_model_state_dict(lm, options=_GATHER)
    first: dict[int, str] = {}
    for name, param in lm.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            weights.pop(name, None)
    return weights


def full_optimizer_state(lm: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The unsharded optimizer state, keyed by parameter name, on rank 0 ({} elsewhere). Collective."""
    return get_optimizer_state_dict(lm, opt, options=_GATHER)


def load_full_model_state(lm: nn.Module, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Every rank passes the full weights; each keeps its shard. Returns (missing, unexpected) keys."""
    missing, unexpected = set_model_state_dict(lm, weights, options=_SCATTER)
    return list(missing), list(unexpected)


def load_full_optimizer_state(lm: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    set_optimizer_state_dict(lm, opt, state, options=_SCATTER)

