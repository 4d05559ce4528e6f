"""Trainer benchmark: our mDPO against TRL's DPOTrainer, and SFT with and without packing.

    python -m bench.train_bench [--device cpu|cuda] [--model smollm2|random-large|tiny]

Same model, same pairs, same order, same optimizer settings, one run. The pairs are multi-turn
tool-use conversations whose chosen and rejected sides differ in the last assistant turn, so
TRL's prompt/completion split (prompt = the shared history) and our trajectory-level loss are
the same objective (shared turns cancel in the margin; lambda = 0): the per-step losses must
agree, and the bench reports how closely they do. Each trainer runs in its own process so
peak memory (RSS on CPU, max allocated on CUDA) is its own. Tokens/s counts the tokens of
both sides of every pair trained on, divided by the time to train them; ours includes the
one-time reference pass (TRL runs its reference model at every step instead).

Writes bench/results/train_bench.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def last_turn_pairs(n: int, seed: int = 0):
    """Pairs of 1-3 user turns whose sides differ only in the final assistant message."""
    from engine.records import Message, PreferencePair, ToolCall
    from train.samples import trajectory

    out = []
    for i in range(n):
        chosen = trajectory(i, turns=1 + i % 3, seed=seed)
        msgs = list(chosen.messages)
        wrong = msgs[-3].tool_calls[0]
        msgs[-1] = Message(role="assistant", tool_calls=[ToolCall(name=wrong.name, arguments={k: "Nowhere" for k in wrong.arguments})])
        rejected = copy.copy(chosen)
        rejected = type(chosen)(**{**{f: getattr(chosen, f) for f in chosen.__struct_fields__},
                                   "id": chosen.id + "-neg", "polarity": "negative", "messages": msgs})
        out.append(PreferencePair(id=f"pair-{i}", episode_id=chosen.episode_id, chosen=chosen, rejected=rejected))
    return out


def resolve_model(name: str, cache: Path) -> Path:
    if name == "smollm2":
        from engine.models import smollm2_checkpoint

        return smollm2_checkpoint()
    from train.tiny_model import build_random_model

    preset = "large" if name == "random-large" else "tiny"
    out = cache / f"random-{preset}"
    if not (out / "config.json").is_file():
        tokenizer = None
        if preset == "large":  # a real 49k vocabulary, so logits memory is realistic
            from transformers import AutoTokenizer

            from engine.models import smollm2_checkpoint

            tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint())
        build_random_model(out, preset=preset, tokenizer=tokenizer)
    return out


def _peak_memory(device: str) -> int:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _examples(spec: dict):
    from train.data import ChatRenderer, pair_examples
    from train.loop import load_tokenizer

    tok = load_tokenizer(spec["model"])
    pairs, _ = pair_examples(last_turn_pairs(spec["pairs"]), ChatRenderer(tok, source=spec["model"], max_length=4096))
    return tok, pairs


def _order(pairs, spec: dict) -> list[int]:
    from train.loop import Plan
    from train.mdpo_config import MDPOConfig

    plan = Plan([len(p) for p in pairs], MDPOConfig(batch_size=spec["batch"], micro_batch_size=spec["micro"],
                                                    max_steps=spec["steps"]), 1)
    return [int(i) for s in range(plan.total_steps) for mb in plan.step(s, 0) for i in mb]


def worker_ours(spec: dict) -> dict:
    from train.mdpo import run_mdpo
    from train.mdpo_config import MDPOConfig

    tok, pairs = _examples(spec)
    order = _order(pairs, spec)
    records = last_turn_pairs(spec["pairs"])
    cfg = MDPOConfig(learning_rate=spec["lr"], beta=0.1, sft_weight=0.0, batch_size=spec["batch"],
                     micro_batch_size=spec["micro"], max_steps=spec["steps"], warmup_ratio=0.0, max_grad_norm=1.0,
                     device=spec["device"], max_length=4096, share_prefix=spec.get("share_prefix", True))
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_mdpo(cfg, data=tmp, model=spec["model"], out=Path(tmp) / "out", records=records)
        losses = [json.loads(ln)["loss"] for ln in (Path(tmp) / "out" / "metrics.jsonl").read_text().splitlines()]
    seconds = summary["train_seconds"] + summary["data"]["ref_seconds"]
    return {"seconds": seconds, "train_seconds": summary["train_seconds"], "ref_seconds": summary["data"]["ref_seconds"],
            "tokens": sum(len(pairs[i]) for i in order), "losses": losses, "peak_bytes": _peak_memory(spec["device"])}


def worker_trl(spec: dict) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from trl import DPOConfig, DPOTrainer

    from train.loop import load_causal_lm

    tok, pairs = _examples(spec)
    order = _order(pairs, spec)
    rows = []
    for i in order:  # exactly our tokens: prompt = shared history, completion = the final assistant turn
        ex = pairs[i]
        c, r = (np.nonzero(s.turn == s.n_turns - 1)[0] for s in (ex.chosen, ex.rejected))
        rows.append({"prompt_ids": ex.chosen.input_ids[:c[0]].tolist(), "chosen_ids": ex.chosen.input_ids[c[0]:c[-1] + 1].tolist(),
                     "rejected_ids": ex.rejected.input_ids[r[0]:r[-1] + 1].tolist()})

    class InOrder(DPOTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    cuda = spec["device"] == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, beta=0.1, loss_type=["sigmoid"], learning_rate=spec["lr"],
                         per_device_train_batch_size=spec["micro"], gradient_accumulation_steps=spec["batch"] // spec["micro"],
                         max_steps=spec["steps"], lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0,
                         logging_steps=1, save_strategy="no", report_to="none", use_cpu=not cuda, bf16=cuda,
                         max_length=None, seed=0, dataloader_num_workers=0)
        dummy = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
                                    "rejected": [{"role": "assistant", "content": "b"}]}])
        trainer = InOrder(model=load_causal_lm(spec["model"]), ref_model=load_causal_lm(spec["model"]), args=args,
                          train_dataset=dummy, processing_class=tok)
        trainer.train_dataset = Dataset.from_list(rows)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": seconds, "tokens": sum(len(pairs[i]) for i in order), "losses": losses,
            "peak_bytes": _peak_memory(spec["device"])}


def worker_sft(spec: dict) -> dict:
    from train.samples import trajectories
    from train.sft import run_sft
    from train.sft_config import SFTConfig

    records = trajectories(spec["pairs"] * 2)
    for i, t in enumerate(records):  # varied lengths: what packing is for
        t.messages = t.messages[:1 + 4 * (1 + i % 3)]
    cfg = SFTConfig(learning_rate=spec["lr"], batch_size=spec["sft_batch"], micro_batch_size=spec["sft_batch"],
                    max_steps=spec["steps"], packing=spec["packing"], device=spec["device"], max_length=4096,
                    attn_implementation=spec.get("attn", "sdpa"))
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_sft(cfg, data=tmp, model=spec["model"], out=Path(tmp) / "out", records=records)
        rows = [json.loads(ln) for ln in (Path(tmp) / "out" / "metrics.jsonl").read_text().splitlines()]
    tokens = sum(r["tokens"] for r in rows)
    return {"seconds": summary["train_seconds"], "tokens": tokens, "losses": [r["loss"] for r in rows],
            "peak_bytes": _peak_memory(spec["device"])}


WORKERS = {"ours": worker_ours, "trl": worker_trl, "sft": worker_sft}


def _spawn(kind: str, spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "bench.train_bench", "--worker", kind, "--spec", json.dumps(spec)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine(device: str) -> dict:
    import torch
    import transformers
    import trl

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "load_average": os.getloadavg()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", choices=["smollm2", "random-large", "tiny"], default="smollm2")
    p.add_argument("--pairs", type=int, default=None, help="pairs in the data set (default: steps x batch, one epoch)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per trainer (default: cpu 2, cuda 20)")
    p.add_argument("--batch", type=int, default=None, help="pairs per optimizer step (default: cpu 2, cuda 16)")
    p.add_argument("--micro", type=int, default=None, help="pairs per forward pass (default: cpu 1, cuda 4)")
    p.add_argument("--parts", default="mdpo,sft", help="comma-separated parts to run: mdpo, sft")
    p.add_argument("--out", default=str(RESULTS / "train_bench"), help="results path without extension")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(WORKERS[a.worker](json.loads(a.spec))))
        return 0
    cuda = a.device == "cuda"
    cache = Path(os.environ.get("MAGNET_CACHE") or Path.home() / ".cache" / "magnet") / "bench"
    spec = {"device": a.device, "model": str(resolve_model(a.model, cache)), "lr": 1e-5,
            "steps": a.steps or (20 if cuda else 2), "batch": a.batch or (16 if cuda else 2),
            "micro": a.micro or (4 if cuda else 1)}
    spec["pairs"] = a.pairs or spec["steps"] * spec["batch"]  # one epoch: the reference pass covers what is trained
    spec["sft_batch"] = spec["micro"] * 2
    t0 = time.perf_counter()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": _machine(a.device),
              "model": a.model, "settings": spec}
    rate = lambda r: r["tokens"] / r["seconds"]  # noqa: E731
    if "mdpo" in a.parts:
        ours, trl = _spawn("ours", spec), _spawn("trl", spec)
        n = min(len(ours["losses"]), len(trl["losses"]))
        result["mdpo"] = {
            "ours": ours, "trl": trl, "ours_tokens_per_s": round(rate(ours), 1), "trl_tokens_per_s": round(rate(trl), 1),
            "speedup": round(rate(ours) / rate(trl), 3),
            "speedup_training_only": round(ours["tokens"] / ours["train_seconds"] / rate(trl), 3),
            "peak_memory_ratio": round(ours["peak_bytes"] / trl["peak_bytes"], 3),
            "max_abs_loss_diff": max(abs(x - y) for x, y in zip(ours["losses"][:n], trl["losses"][:n]))}
        _write(out, result, t0)  # a part's numbers survive an interrupted later part
    if "sft" in a.parts:
        packed, padded = _spawn("sft", spec | {"packing": "on"}), _spawn("sft", spec | {"packing": "off"})
        result["sft"] = {"packed": packed, "padded": padded, "packed_tokens_per_s": round(rate(packed), 1),
                         "padded_tokens_per_s": round(rate(padded), 1),
                         "packing_speedup": round(rate(packed) / rate(padded), 3)}
        _write(out, result, t0)
    print(_markdown(result))
    return 0


def _write(out: Path, result: dict, t0: float) -> None:
    from engine.atomic import write_atomic

    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=2))
    write_atomic(out.with_suffix(".md"), _markdown(result))


def _markdown(r: dict) -> str:
    head = [f"# Trainer benchmark ({r['model']}, {r['settings']['device']})", "",
            f"Date {r['date']}; machine: {r['machine']}", "", f"Settings: {r['settings']}", ""]
    return "\n".join(head + (_md_mdpo(r) if "mdpo" in r else []) + (_md_sft(r) if "sft" in r else []))


def _md_mdpo(r: dict) -> list[str]:
    m = r["mdpo"]
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    return [
        "## mDPO vs TRL DPOTrainer (same model, pairs, order, optimizer; lambda = 0)", "",
        "| trainer | tokens/s | seconds | peak memory | losses per step |", "|---|---|---|---|---|",
        f"| ours (incl. reference pass {m['ours']['ref_seconds']} s) | {m['ours_tokens_per_s']} | {m['ours']['seconds']:.1f} | "
        f"{gib(m['ours']['peak_bytes'])} | {[round(x, 5) for x in m['ours']['losses']]} |",
        f"| TRL {r['machine']['trl']} | {m['trl_tokens_per_s']} | {m['trl']['seconds']:.1f} | {gib(m['trl']['peak_bytes'])} | "
        f"{[round(x, 5) for x in m['trl']['losses']]} |", "",
        f"Speed-up {m['speedup']}x (training steps only: {m['speedup_training_only']}x); peak memory ratio "
        f"{m['peak_memory_ratio']}; max |loss difference| {m['max_abs_loss_diff']:.2e}.", ""]


def _md_sft(r: dict) -> list[str]:
    s = r["sft"]
    return [
        "## SFT packing", "",
        "| mode | tokens/s | seconds |", "|---|---|---|",
        f"| packed (padding-free) | {s['packed_tokens_per_s']} | {s['packed']['seconds']:.1f} |",
        f"| padded (length-bucketed) | {s['padded_tokens_per_s']} | {s['padded']['seconds']:.1f} |", "",
        f"Packing speed-up {s['packing_speedup']}x.", ""]


if __name__ == "__main__":
    sys.exit(main())
