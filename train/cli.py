"""`magnet train sft|mdpo --data RUN_DIR --model DIR --out DIR [--config TOML] [flags]`.

Every config field is also a flag (``--learning-rate``, ``--lora/--no-lora``, ...) with the
field's help text; flags override the TOML file, which overrides the defaults. Run it under
``torchrun --nproc-per-node N -m engine.cli train ...`` for DDP.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.config_cli import ConfigCLI
from engine.errors import UserInputError
from train.mdpo_config import MDPOConfig
from train.sft_config import SFTConfig

# A TOML file may hold both stages' settings, each under its own table.
STAGES = {"sft": ConfigCLI(SFTConfig, section="sft"), "mdpo": ConfigCLI(MDPOConfig, section="mdpo")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magnet train", description="Train on a Magnet run: sft (stage 1) or mdpo (stage 2).")
    sub = p.add_subparsers(dest="stage", required=True)
    for stage, config in STAGES.items():
        sp = sub.add_parser(stage, help=config.cls.__doc__.strip().splitlines()[0] if config.cls.__doc__ else stage)
        sp.add_argument("--data", required=True, help="run directory written by `magnet generate` (reads its "
                        + ("trajectories" if stage == "sft" else "pairs") + " shards)")
        sp.add_argument("--model", required=True, help="HF checkpoint folder to start from, or 'smollm2' for the "
                        "bundled SmolLM2-135M-Instruct")
        sp.add_argument("--out", required=True, help="output folder: final/ checkpoint, checkpoints/, metrics.jsonl, "
                        "training.png, summary.json")
        sp.add_argument("--resume", help="checkpoint folder (<out>/checkpoints/step-N) or 'latest' to continue from")
        config.add_arguments(sp, "config (also settable in --config TOML)")
    return p


def _model_dir(spec: str) -> str:
    if spec == "smollm2":
        from engine.models import smollm2_checkpoint

        return str(smollm2_checkpoint())
    if not Path(spec).is_dir():
        raise UserInputError(f"--model {spec}: no such folder; pass a Hugging Face checkpoint folder or 'smollm2'")
    return spec


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = STAGES[args.stage].load(args)
    out = Path(args.out)
    resume = None
    if args.resume:
        from train.loop import latest_checkpoint

        resume = latest_checkpoint(out) if args.resume == "latest" else Path(args.resume)
        if resume is None:
            raise UserInputError(f"--resume latest: no checkpoint under {out}/checkpoints; run without --resume")
    model = _model_dir(args.model)
    if args.stage == "sft":
        from train.sft import run_sft as run
    else:
        from train.mdpo import run_mdpo as run
    summary = run(cfg, data=args.data, model=model, out=out, resume=resume)
    if summary.get("processes", 1) == 1 or _rank() == 0:
        print(json.dumps({k: summary[k] for k in ("stage", "steps", "train_seconds", "data", "final")}, indent=2))
    return 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
