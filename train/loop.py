"""The training loop both stages share: devices and DDP or FSDP2 (train/fsdp.py), model and LoRA set-up, the data plan,
AdamW with warmup + linear decay, accumulation, clipping, checkpoints that resume exactly,
metrics JSONL and progress lines.

The data plan is a pure function of (seed, epoch): a seeded permutation cut into micro-batches,
grouped into optimizer steps, and dealt round-robin to the processes. The position in the
data is therefore just the optimizer step, which is all a checkpoint needs to resume the
same batches. A stage plugs in a ``StepFn`` that turns one micro-batch into a loss already
normalised by the whole step's counts (all micro-batches on all processes), so accumulation
and process count never change the gradient.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import msgspec
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from engine.atomic import write_atomic
from engine.errors import UserInputError
from train.batch import TokenLogProbs
from train.sft_config import TrainConfig

# (module, items of one micro-batch, step-wide counts) -> (loss, stats already divided by those counts)
StepFn = Callable[[nn.Module, list[Any], dict[str, float]], tuple[torch.Tensor, dict[str, float]]]
CountFn = Callable[[list[Any]], dict[str, float]]


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; gloo on CPU, nccl on GPU."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA GPU is visible; use --device cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank=int(os.environ.get("RANK", "0")), world=world, device=dev)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def all_sum(d: Dist, values: dict[str, float]) -> dict[str, float]:
    if d.world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def load_causal_lm(path: str | Path, attn_implementation: str = "sdpa"):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation=attn_implementation)
    except OSError as err:
        raise UserInputError(f"--model {path}: not a Hugging Face model folder ({err}); pass a checkpoint directory") from err
    model.config.use_cache = False
    return model


def resolve_packing(cfg: TrainConfig, model) -> TrainConfig:
    """``auto`` packs only where the kernel attends per sequence (flash varlen); elsewhere a packed
    row costs attention over its full length, and length-bucketed padding is cheaper."""
    if cfg.packing != "auto":
        return cfg
    kernel = str(getattr(model.config, "_attn_implementation", ""))
    # torch_varlen (train/varlen_attention.py) is PyTorch's flash kernel on CUDA, a per-sequence loop elsewhere
    varlen = kernel.startswith("flash") or (kernel == "torch_varlen" and model.device.type == "cuda")
    return msgspec.structs.replace(cfg, packing="on" if varlen else "off")


def load_tokenizer(path: str | Path, chat_template_file: str = ""):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise UserInputError(f"--model {path}: no tokenizer there ({err}); pass a checkpoint directory") from err
    if chat_template_file:
        try:
            tok.chat_template = Path(chat_template_file).read_text(encoding="utf-8")
        except OSError as err:
            raise UserInputError(f"--chat-template {chat_template_file}: cannot read it ({err})") from err
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def add_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in cfg.lora_target_modules if t in names]
    if not targets:
        raise UserInputError(f"lora_target_modules {cfg.lora_target_modules} match no module of the model; name some of its linear layers")
    lc = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                    task_type="CAUSAL_LM")
    return get_peft_model(model, lc)


class Plan:
    """Which examples each process sees at each optimizer step."""

    def __init__(self, lengths: Sequence[int], cfg: TrainConfig, world: int):
        self.lengths = np.asarray(lengths)
        self.cfg = cfg
        self.world = world
        self.accum = max(1, cfg.batch_size // (cfg.micro_batch_size * world))
        n_micro = len(lengths) // cfg.micro_batch_size
        self.micro_per_epoch = n_micro - n_micro % world  # every process gets the same number
        if self.micro_per_epoch == 0:
            raise UserInputError(f"{len(lengths)} examples are fewer than micro_batch_size {cfg.micro_batch_size} x "
                                 f"{world} processes; lower --micro-batch-size or add data")
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / (self.accum * world))
        full = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(full, cfg.max_steps) if cfg.max_steps else full

    def _micro_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(len(self.lengths))
        mb = self.cfg.micro_batch_size
        if self.cfg.packing != "on":  # bucket by length inside windows so padded rows waste little
            window = mb * 16
            order = np.concatenate([w[np.argsort(self.lengths[w], kind="stable")]
                                    for w in np.array_split(order, max(1, math.ceil(len(order) / window)))])
        batches = [order[i * mb:(i + 1) * mb] for i in range(self.micro_per_epoch)]
        if self.cfg.packing != "on":  # buckets come out sorted by length: shuffle their order back
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def step(self, step: int, rank: int) -> list[np.ndarray]:
        """Micro-batches (example indices) of optimizer step ``step`` (0-based) for ``rank``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        group = self.accum * self.world
        chosen = self._micro_batches(epoch)[k * group:(k + 1) * group]
        return chosen[rank::self.world]


def lr_lambda(total: int, warmup_ratio: float) -> Callable[[int], float]:
    warm = math.ceil(total * warmup_ratio)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / max(1, total - warm))

    return f


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2]
    rest = [p for n, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                             fused=device.type == "cuda")


def save_model(model: nn.Module, tokenizer, out: Path, *, merge: bool, weights: dict[str, torch.Tensor] | None = None) -> None:
    """HF folder (weights, config, tokenizer, chat template); a LoRA model is merged on request.
    ``weights``: the full state dict to write instead of the model's own (gathered from FSDP shards)."""
    out.mkdir(parents=True, exist_ok=True)
    if merge and hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out, state_dict=weights)
    tokenizer.save_pretrained(out)


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / "checkpoints").glob("step-*"))
    return found[-1] if found else None


class Trainer:
    """Runs one stage: ``train()`` returns the summary written to <out>/summary.json."""

    def __init__(self, *, stage: str, cfg: TrainConfig, d: Dist, model, tokenizer, items: Sequence[Any],
                 lengths: Sequence[int], step_fn: StepFn, count_fn: CountFn, out_dir: Path, data_fp: str,
                 model_source: str, report: dict[str, Any]):
        self.stage, self.cfg, self.d = stage, cfg, d
        self.tokenizer, self.items, self.step_fn, self.count_fn = tokenizer, items, step_fn, count_fn
        self.out, self.data_fp, self.report = out_dir, data_fp, report
        self.plan = Plan(lengths, cfg, d.world)
        torch.manual_seed(cfg.seed)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.parallel == "fsdp" and cfg.lora:
            raise UserInputError("--parallel fsdp is for full fine-tuning; a LoRA adapter is small: use --parallel ddp")
        self.fsdp = cfg.parallel == "fsdp" and d.world > 1
        self.model = add_lora(model, cfg) if cfg.lora else model
        if not self.fsdp:  # FSDP moves only each process's shard to the device
            self.model = self.model.to(d.device)
        self.model.train()
        inner = TokenLogProbs(self.model, logits_chunk=cfg.logits_chunk)
        if self.fsdp:
            from train.fsdp import shard

            inner = shard(inner, self.model)
        elif d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            inner = DDP(inner, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        self.module = inner
        self.opt = build_optimizer(self.model, cfg, d.device)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.plan.total_steps, cfg.warmup_ratio))
        self.step = 0
        self.model_source = model_source

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = self.out / "checkpoints" / f"step-{self.step:06d}"
        weights, optim = None, None
        if self.fsdp:  # collective: every rank takes part, rank 0 receives the full states
            from train.fsdp import full_model_state, full_optimizer_state

            weights, optim = full_model_state(self.model), full_optimizer_state(self.model, self.opt)
        if self.d.main:
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            self.model.save_pretrained(tmp / "model", state_dict=weights)
            torch.save({"optimizer": optim if self.fsdp else self.opt.state_dict(), "scheduler": self.sched.state_dict(), "step": self.step,
                        "data_fingerprint": self.data_fp, "stage": self.stage, "torch_rng": torch.get_rng_state(),
                        "config": msgspec.to_builtins(self.cfg)}, tmp / "trainer_state.pt")
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        barrier(self.d)
        return path

    def resume(self, path: Path) -> None:
        state_file = path / "trainer_state.pt"
        if not state_file.is_file():
            raise UserInputError(f"--resume {path}: no trainer_state.pt there; pass a <out>/checkpoints/step-N folder or 'latest'")
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        if state["stage"] != self.stage or state["data_fingerprint"] != self.data_fp:
            raise UserInputError(f"--resume {path}: that checkpoint was trained on other data or another stage; "
                                 "resume with the same --data, --model and config, or start a new --out")
        from safetensors.torch import load_file

        weights = {}
        for f in sorted((path / "model").glob("*.safetensors")):
            weights.update(load_file(f, device="cpu" if self.fsdp else str(self.d.device)))
        if self.cfg.lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, weights)
        else:
            if self.fsdp:
                from train.fsdp import load_full_model_state

                missing, unexpected = load_full_model_state(self.model, weights)
            else:
                missing, unexpected = self.model.load_state_dict(weights, strict=False)
            tied = {k for k in missing if k.endswith("lm_head.weight")}
            if set(missing) - tied or unexpected:
                raise UserInputError(f"--resume {path}: weights do not match the model ({len(missing)} missing, "
                                     f"{len(unexpected)} unexpected); resume with the same --model")
        if self.fsdp:
            from train.fsdp import load_full_optimizer_state

            load_full_optimizer_state(self.model, self.opt, state["optimizer"])
        else:
            self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]

    # -- training ----------------------------------------------------------------------------
    def _one_step(self) -> dict[str, float]:
        micro = [[self.items[i] for i in mb] for mb in self.plan.step(self.step, self.d.rank)]
        counts: dict[str, float] = {}
        for mb in micro:
            for k, v in self.count_fn(mb).items():
                counts[k] = counts.get(k, 0.0) + v
        counts = all_sum(self.d, counts)
        dev = self.d.device
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and self.cfg.bf16 else nullcontext()
        stats: dict[str, float] = {}
        for i, mb in enumerate(micro):
            sync = i == len(micro) - 1 or self.d.world == 1
            if self.fsdp:
                from train.fsdp import set_gradient_sync

                set_gradient_sync(self.module, sync)
            with (nullcontext() if sync or self.fsdp else self.module.no_sync()), autocast:
                loss, s = self.step_fn(self.module, mb, counts)
                (loss * self.d.world).backward()  # DDP and FSDP average gradients over processes
            for k, v in s.items():
                stats[k] = stats.get(k, 0.0) + v
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
                     if self.cfg.max_grad_norm > 0 else torch.tensor(0.0))
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor (the norm over every process's shards)
            grad_norm = grad_norm.full_tensor()
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        stats = all_sum(self.d, stats)
        return stats | {"lr": lr, "grad_norm": float(grad_norm)}

    def train(self, resume: Path | None = None) -> dict[str, Any]:
        if resume is not None:
            self.resume(resume)
        metrics_path = self.out / "metrics.jsonl"
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            kept = [ln for ln in (metrics_path.read_text().splitlines() if metrics_path.exists() and resume else [])
                    if json.loads(ln).get("step", 0) <= self.step]
            write_atomic(metrics_path, "".join(ln + "\n" for ln in kept))
        barrier(self.d)
        total = self.plan.total_steps
        start, t0, last = self.step, time.perf_counter(), {}
        while self.step < total:
            ts = time.perf_counter()
            stats = self._one_step()
            self.step += 1
            dt = time.perf_counter() - ts
            stats = {k: round(v, 8) if isinstance(v, float) else v for k, v in stats.items()}
            last = {"step": self.step, "epoch": round(self.step / self.plan.steps_per_epoch, 4)} | stats | {
                "tokens_per_s": round(stats.get("tokens", 0) / dt, 1), "step_s": round(dt, 3)}
            if self.d.main and (self.step % self.cfg.log_every == 0 or self.step == total):
                with metrics_path.open("a") as f:
                    f.write(json.dumps(last) + "\n")
                shown = " ".join(f"{k} {last[k]:.4g}" for k in ("loss", "reward_margin", "lr", "grad_norm", "tokens_per_s")
                                 if k in last)
                eta = (time.perf_counter() - t0) / (self.step - start) * (total - self.step)
                print(f"[{self.stage}] step {self.step}/{total} {shown} eta {eta:.0f}s", file=sys.stderr, flush=True)
            if self.cfg.save_every and self.step % self.cfg.save_every == 0 and self.step < total:
                self.save_checkpoint()
        elapsed = time.perf_counter() - t0
        summary = {"stage": self.stage, "steps": self.step, "total_steps": total, "processes": self.d.world,
                   "train_seconds": round(elapsed, 2), "model": self.model_source, "data_fingerprint": self.data_fp,
                   "data": self.report, "final": last, "config": msgspec.to_builtins(self.cfg)}
        weights = None
        if self.fsdp:  # collective: gathered to rank 0, which writes it
            from train.fsdp import full_model_state

            weights = full_model_state(self.model)
        if self.d.main:
            save_model(self.model, self.tokenizer, self.out / "final", merge=self.cfg.merge_lora, weights=weights)
            write_atomic(self.out / "summary.json", json.dumps(summary, indent=2))
            from train.plot import plot_metrics

            plot_metrics(metrics_path, self.out / "training.png", title=f"magnet train {self.stage}")
        barrier(self.d)
        return summary


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
