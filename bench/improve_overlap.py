"""`python -m bench.improve_overlap`: `magnet improve` wall time, serial vs overlapped generation.

The same loop twice (`--no-overlap`, then `--overlap`): the simulator as hinted teacher of every
round and perturbed negatives, so round N+1's generation needs nothing of the model round N
trains and, overlapped, runs while round N trains. The simulator answers after ``--latency-ms``
(default 250 ms), as an API teacher does: its work happens elsewhere, so overlapping it costs the
training little CPU; with 0 it answers at once and the generation competes for this machine's CPUs.
The model is the tiny random Qwen2 answering in-process (serve = hf). The simulator makes this a
measurement of scheduling only, never of data quality. Per-stage wall times come from the stage markers: overlapped, a round's generate
stage ran in the background during the previous round's training, so it adds (almost) nothing
to the loop's wall time. Writes bench/results/improve_overlap.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_io import describe, load_results, loadavg, machine, utc_now, write_results

CONFIG = """
model = "{model}"
rounds = {rounds}
serve = "hf"
teacher = "{teacher}"
negatives = "perturb"
kinds = ["single", "parallel", "multi_turn.base", "irrelevance"]
positives = {positives}
probe_per_kind = 1
eval_per_kind = 1
max_tokens = 16
concurrency = 4
[sft_options]
learning_rate = 1e-3
batch_size = 2
micro_batch_size = 2
max_steps = {sft_steps}
max_length = 4096
[mdpo_options]
learning_rate = 1e-4
batch_size = 2
micro_batch_size = 1
max_steps = {mdpo_steps}
max_length = 4096
"""


def run_loop(config: Path, out: Path, overlap: bool) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "improve", "--config", str(config), "--out", str(out),
                           "--overlap" if overlap else "--no-overlap"], capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"improve ({'overlap' if overlap else 'serial'}) failed: {done.stderr[-2000:]}")
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    return {"wall_s": round(wall, 1), "loadavg_end": loadavg(),
            "stages": {str(r["round"]): r["wall_s"] for r in rounds},
            "positives": [r.get("positives") for r in rounds[1:]]}


def section(run: dict[str, Any]) -> list[str]:
    serial, overlap = run["serial"], run["overlap"]
    saved = serial["wall_s"] - overlap["wall_s"]
    lines = [f"## Simulator answering after {run['latency_ms']:g} ms", "",
             f"Machine: {describe(run['machine'])}.", "",
             "| loop | wall time (s) |", "|---|---:|",
             f"| serial (`--no-overlap`) | {serial['wall_s']:.1f} |", f"| overlapped (`--overlap`) | {overlap['wall_s']:.1f} |",
             f"| saved | {saved:.1f} ({100 * saved / serial['wall_s']:.0f}%) |", "",
             "Seconds per stage and round, as the stage markers record them (overlapped, round N+1's generate ran in "
             "the background during round N's training, whose stages carry any contention):", ""]
    stages = list(dict.fromkeys(s for r in (serial, overlap) for walls in r["stages"].values() for s in walls))
    lines += ["| loop | round | " + " | ".join(stages) + " |", "|---|---|" + "---:|" * len(stages)]
    for name, r in (("serial", serial), ("overlapped", overlap)):
        for rnd, walls in r["stages"].items():
            lines.append(f"| {name} | {rnd} | " + " | ".join(f"{walls[s]:.1f}" if s in walls else "-" for s in stages) + " |")
    def total(r: dict[str, Any], stages: tuple[str, ...], rounds: slice = slice(None)) -> float:
        return sum(w.get(s, 0.0) for w in list(r["stages"].values())[rounds] for s in stages)

    hidden = total(overlap, ("generate",), slice(2, None))  # rounds 1.. (index 0 is base): generated in the background
    train = ("train_sft", "train_mdpo")
    lines += ["", f"Generation moved off the critical path (rounds 1+): {hidden:.1f} s. Training stages: serial "
              f"{total(serial, train):.1f} s, overlapped {total(overlap, train):.1f} s (the difference is the contention the "
              "background generation adds, plus other jobs' load on this shared machine).",
              "", f"Load average at the end: serial {serial['loadavg_end']}, overlapped {overlap['loadavg_end']}.", ""]
    return lines


def markdown(doc: dict[str, Any]) -> str:
    first = next(iter(doc["runs"].values()))
    lines = [f"# `magnet improve`: serial vs overlapped generation ({first['rounds']} rounds)", "",
             f"Tiny random Qwen2 (serve = hf), simulator teacher (a scheduling measurement, never a quality claim), "
             f"{first['positives']} positives per round, SFT {first['sft_steps']} steps and mDPO {first['mdpo_steps']} "
             "steps per round, the same loop serial and overlapped, one after the other.", ""]
    for run in doc["runs"].values():
        lines += section(run)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.improve_overlap", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--positives", type=int, default=24)
    p.add_argument("--sft-steps", type=int, default=8)
    p.add_argument("--mdpo-steps", type=int, default=4)
    p.add_argument("--latency-ms", type=float, default=250.0, help="the simulator's answer latency (an API teacher's)")
    args = p.parse_args(argv)
    from train.tiny_model import build_tiny_model

    run: dict[str, Any] = {"rounds": args.rounds, "positives": args.positives, "sft_steps": args.sft_steps,
                           "mdpo_steps": args.mdpo_steps, "latency_ms": args.latency_ms, "machine": machine(), "date": utc_now()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "tiny", seed=0)
        teacher = work / "teacher.toml"
        teacher.write_text(f'[teacher]\nspec = "sim"\nlatency_ms = {args.latency_ms}\n')
        config = work / "improve.toml"
        config.write_text(CONFIG.format(model=model, teacher=teacher, rounds=args.rounds, positives=args.positives,
                                        sft_steps=args.sft_steps, mdpo_steps=args.mdpo_steps))
        for name, overlap in (("serial", False), ("overlap", True)):
            run[name] = run_loop(config, work / name, overlap)
            print(f"{name}: {run[name]['wall_s']} s", flush=True)
    # One section per latency: a rerun with another --latency-ms adds its own beside the others.
    doc = load_results("improve_overlap")
    doc["runs"] = {**doc.get("runs", {}), f"latency_{args.latency_ms:g}ms": run}
    doc["date"] = utc_now()
    json_path, md_path = write_results("improve_overlap", doc, markdown(doc))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
