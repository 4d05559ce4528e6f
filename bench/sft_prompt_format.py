"""`python -m bench.sft_prompt_format`: does training on our prompt-mode data teach BFCL's call format?

SmolLM2-135M-Instruct answers BFCL's prompt-mode entries in prose or Python (no call list
BFCL's decoder can read). This trains it briefly (SFT, prompt mode) on a `magnet generate`
run folder and asks base and trained model the same BFCL-v3 entries through `magnet eval
bfcl --mode prompt` (the same system prompt and text calls as training), then decodes every
answer with BFCL's own prompt-mode decoder. It reports, side by side, how many answers decode
to a call list and BFCL's accuracy, and shows the answers. The data is the simulator's
(labelled so): this measures the format the model learns, not a real teacher's quality.
Writes bench/results/sft_prompt_format.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.results_io import describe, machine, write_results


def magnet(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "engine.cli", *args], check=True)


def answers(eval_dir: Path, category: str) -> list[dict[str, Any]]:
    """Each entry's raw answer and whether BFCL's prompt-mode decoder reads a call list from it."""
    from bench.bfcl.scoring import decode_python_prompting

    rows = []
    for path in sorted((eval_dir / "result").glob(f"*_{category}_result.json")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            try:
                calls = decode_python_prompting(row["result"])
                decoded = bool(calls)
            except Exception:  # noqa: BLE001 - any decoder failure means "not a call list"
                decoded = False
            rows.append({"id": row["id"], "answer": row["result"], "decodes": decoded})
    return rows


def accuracy(eval_dir: Path) -> float | None:
    report = json.loads((eval_dir / "report.json").read_text())
    cats = report.get("categories") or report.get("scores") or {}
    for name, value in cats.items():
        if "simple" in name:
            return value.get("accuracy") if isinstance(value, dict) else value
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sft_prompt_format", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="run folder of `magnet generate` to train on")
    parser.add_argument("--work", required=True, help="folder for the checkpoint and the two evaluations")
    parser.add_argument("--steps", type=int, default=40, help="SFT optimizer steps")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate")
    parser.add_argument("--category", default="simple", help="BFCL-v3 category to ask")
    parser.add_argument("--limit", type=int, default=10, help="entries of the category")
    args = parser.parse_args(argv)
    info = machine()
    work = Path(args.work)
    started = time.monotonic()
    checkpoint = work / "sft"
    if not (checkpoint / "final").exists():
        magnet("train", "sft", "--data", args.data, "--model", "smollm2", "--out", str(checkpoint), "--mode", "prompt",
               "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate),
               "--max-length", "2048")
    # the trainer's own account, also when the checkpoint was made by an earlier invocation
    train_s = json.loads((checkpoint / "summary.json").read_text()).get("train_seconds", time.monotonic() - started)
    sides = {"base": "hf:smollm2", "trained": f"hf:{checkpoint / 'final'}"}
    result: dict[str, Any] = {"machine": info, "data": args.data, "steps": args.steps, "batch_size": args.batch_size,
                              "learning_rate": args.learning_rate, "train_s": round(train_s), "sides": {}}
    for side, spec in sides.items():
        out = work / f"eval-{side}"
        magnet("eval", "bfcl", "--model", spec, "--categories", args.category, "--limit", str(args.limit), "--mode", "prompt",
               "--out", str(out), "--max-tokens", "128", "--no-progress")
        rows = answers(out, args.category)
        result["sides"][side] = {"spec": spec, "decoded": sum(r["decodes"] for r in rows), "entries": len(rows),
                                 "accuracy": accuracy(out), "answers": rows}
    write_results("sft_prompt_format", result, markdown(result, info, args))
    print(json.dumps({s: {k: v for k, v in d.items() if k != "answers"} for s, d in result["sides"].items()}, indent=2))
    return 0


def markdown(result: dict[str, Any], info: dict[str, Any], args: argparse.Namespace) -> str:
    base, trained = result["sides"]["base"], result["sides"]["trained"]
    lines = [f"# SmolLM2-135M on BFCL-v3 `{args.category}` (first {args.limit}), prompt mode, before and after SFT on our data", "",
             f"Training data: `{args.data}` (the simulator teacher: it measures the format learned, not a real teacher's quality); "
             f"SFT in prompt mode, {args.steps} steps x {args.batch_size} examples, lr {args.learning_rate}, "
             f"{result['train_s']} s on {describe(info)}.", "",
             "| model | answers BFCL's decoder reads as a call list | BFCL accuracy |", "|---|---|---|",
             f"| base SmolLM2 | {base['decoded']}/{base['entries']} | {base['accuracy']} |",
             f"| after SFT | {trained['decoded']}/{trained['entries']} | {trained['accuracy']} |", "",
             "| entry | base answer | trained answer (decodes?) |", "|---|---|---|"]
    for b, t in zip(base["answers"], trained["answers"]):
        def cell(text: Any) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| {b['id']} | {cell(b['answer'])} | {cell(t['answer'])} ({'yes' if t['decodes'] else 'no'}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
