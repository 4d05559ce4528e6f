"""Typed configuration of the SFT stage, and the fields both training stages share.

Every field carries its help text (``Meta(description=...)``); `magnet train` turns the fields
into command-line flags with that help, and a TOML file may set any of them. Defaults follow
the paper's SFT setup (peak lr 1e-5, warmup 0.1 + linear decay, batch 64, one epoch) except
max_length, which is kept small enough for CPU.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from engine.config_cli import doc
from engine.render import MODE_HELP


class TrainConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mode: Annotated[Literal["prompt", "fc"], doc(MODE_HELP)] = "prompt"
    seed: Annotated[int, doc("seed of weight init for LoRA and of the data order; same seed, same run")] = 0
    epochs: Annotated[int, doc("passes over the data", ge=1)] = 1
    max_steps: Annotated[int, doc("stop after this many optimizer steps (0 = run all epochs); the schedule spans the steps actually run")] = 0
    learning_rate: Annotated[float, doc("peak learning rate of AdamW", gt=0)] = 1e-5
    warmup_ratio: Annotated[float, doc("fraction of the steps with linear warmup from 0, then linear decay to 0", ge=0, le=1)] = 0.1
    weight_decay: Annotated[float, doc("AdamW weight decay (not applied to biases and norms)", ge=0)] = 0.0
    adam_beta1: Annotated[float, doc("AdamW beta1")] = 0.9
    adam_beta2: Annotated[float, doc("AdamW beta2")] = 0.999
    adam_eps: Annotated[float, doc("AdamW epsilon")] = 1e-8
    max_grad_norm: Annotated[float, doc("clip the global gradient norm to this (0 = no clipping)", ge=0)] = 1.0
    batch_size: Annotated[int, doc("examples per optimizer step across all processes (sequences for SFT, pairs for mDPO)", ge=1)] = 64
    micro_batch_size: Annotated[int, doc("examples per forward pass per process; batch_size / (micro_batch_size * processes) gives the gradient "
                                         "accumulation", ge=1)] = 4
    max_length: Annotated[int, doc("longest conversation in tokens; longer ones lose whole trailing turns or are skipped (see truncation)",
                                   ge=16)] = 2048
    truncation: Annotated[Literal["drop_turns", "skip"], doc("too-long conversations: drop whole trailing turns (never cut inside an assistant turn) "
                                                             "or skip them; mDPO pairs are always skipped")] = "drop_turns"
    packing: Annotated[Literal["auto", "on", "off"], doc("on = pack a micro-batch's sequences into one row without padding (position ids restart per "
                                                         "sequence); off = right-padded rows bucketed by length; auto = on only with a "
                                                         "variable-length attention kernel (flash_attention_*), since sdpa/eager then attend "
                                                         "over the whole packed row")] = "auto"
    attn_implementation: Annotated[str, doc("transformers attention kernel: sdpa, eager, flash_attention_2, ...")] = "sdpa"
    gradient_checkpointing: Annotated[bool, doc("recompute activations in the backward pass to save memory")] = False
    bf16: Annotated[bool, doc("bfloat16 autocast on GPU (ignored on CPU, which trains in float32)")] = True
    logits_chunk: Annotated[int, doc("trained tokens per LM-head chunk; bounds the logits memory to chunk x vocabulary", ge=1)] = 1024
    lora: Annotated[bool, doc("train a LoRA adapter (peft) instead of all weights")] = False
    lora_r: Annotated[int, doc("LoRA rank", ge=1)] = 32
    lora_alpha: Annotated[int, doc("LoRA alpha (scale = alpha / r)", ge=1)] = 64
    lora_dropout: Annotated[float, doc("dropout on the LoRA input", ge=0, lt=1)] = 0.0
    lora_target_modules: Annotated[list[str], doc("module names LoRA wraps")] = msgspec.field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    merge_lora: Annotated[bool, doc("write the final checkpoint with the adapter merged into the weights (a plain model vLLM serves)")] = True
    chat_template: Annotated[str, doc("Jinja chat template file to use instead of the model's own (must render tools and tool_calls)")] = ""
    save_every: Annotated[int, doc("write a resumable checkpoint every N optimizer steps (0 = only at the end)", ge=0)] = 0
    log_every: Annotated[int, doc("write a metrics line every N optimizer steps", ge=1)] = 1
    device: Annotated[Literal["auto", "cpu", "cuda"], doc("where to train; auto = cuda when available")] = "auto"
    parallel: Annotated[Literal["ddp", "fsdp"], doc("how several processes (torchrun) share the work: ddp = each holds the whole model; "
                                                   "fsdp = FSDP2 fully_shard: weights, gradients and optimizer state sharded over the "
                                                   "processes, for full fine-tuning of a model larger than one GPU (checkpoints are "
                                                   "gathered back to Hugging Face folders); not with lora")] = "ddp"


class SFTConfig(TrainConfig, kw_only=True, forbid_unknown_fields=True):
    polarity: Annotated[Literal["positive", "negative", "any"], doc("which trajectories to train on")] = "positive"
    require_verified: Annotated[bool, doc("train only on trajectories whose replay verification passed")] = False
