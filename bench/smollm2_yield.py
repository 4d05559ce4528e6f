"""`python -m bench.smollm2_yield`: SmolLM2-135M as hinted teacher, yield per path kind, variant by variant.

Each variant is one `magnet generate` with the embedded SmolLM2 served by vLLM (CPU) as the hinted
rollout teacher in prompt mode, the same seed and the same paths (``--paths N --draw-factor 1``:
one draw per positive wanted, so yield = positives / paths drawn). Variants add one change each:

- baseline: no worked examples in the rollout prompt, free-form answers;
- few_shot: distill/prompts/positive_examples.txt (one example per hint shape);
- grammar: + vLLM structured outputs forcing a BFCL call list over the offered functions or text;
- author_no_facts / author_facts: SmolLM2 also writes the episodes (queries and reference calls),
  without and with the user's own facts (ids, credentials) in the back-translation prompt.

The first three use the simulator as author, so they measure the rollout teacher alone.
Verification is the same in every variant. Writes bench/results/smollm2_yield.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_io import describe, machine, write_results
from distill.prompts import PACKAGED


# name -> (author, grammar, prompt overrides: file stem -> text)
def variants() -> dict[str, tuple[str, bool, dict[str, str]]]:
    no_examples = {"positive_examples": ""}
    facts_section = re.compile(r"\[Your Facts\].*?(?=\[Environment\])", re.S)
    no_facts = {"back_translation": facts_section.sub("", (PACKAGED / "back_translation.txt").read_text())}
    return {"baseline": ("sim", False, no_examples), "few_shot": ("sim", False, {}), "grammar": ("sim", True, {}),
            "author_no_facts": ("", True, no_facts), "author_facts": ("", True, {})}


def run_variant(name: str, author: str, grammar: bool, overrides: dict[str, str], paths: int, seed: int,
                work: Path) -> dict[str, Any]:
    prompts = work / f"prompts-{name}"
    prompts.mkdir()
    for stem, text in overrides.items():
        (prompts / f"{stem}.txt").write_text(text)
    config = work / f"{name}.toml"
    config.write_text("\n".join([
        'teacher = "vllm:smollm2"', f'author = "{author}"', 'rollout_mode = "prompt"', f"paths = {paths}", "draw_factor = 1.0",
        f"seed = {seed}", 'card_tokenizer = ""', f"rollout_grammar = {str(grammar).lower()}", f'prompts_dir = "{prompts}"',
        "few_shot = true",  # the baseline turns the examples off by an empty examples file
        "[teacher_options]", "timeout_s = 900.0", "[teacher_options.options]", "max_model_len = 8192"]) + "\n")
    out = work / name
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--config", str(config), "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"variant {name} failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads((out / "generate_summary.json").read_text())
    strata = summary["data_card"]["strata"]
    return {"author": author or "vllm:smollm2", "grammar": grammar, "overrides": sorted(overrides),
            "paths": summary["paths_finished"], "pending": summary["paths_planned"] - summary["paths_finished"],
            "positives": summary["positives"], "yield": summary["yield_positive"],
            "per_kind": {k: {"drawn": s["drawn"], "positives": s["stored"], "died": s["died"]} for k, s in strata.items() if s["drawn"]},
            "dead_letters_by_reason": summary["dead_letters_by_reason"], "teacher_calls": summary["teacher_calls"],
            "wall_s": round(time.monotonic() - started, 1)}


def markdown(doc: dict[str, Any]) -> str:
    names = list(doc["variants"])
    kinds = sorted({k for v in doc["variants"].values() for k in v["per_kind"]})
    def cell(v: dict[str, Any], k: str) -> str:
        if k not in v["per_kind"]:
            return "-"
        s = v["per_kind"][k]
        finished = s["positives"] + sum(s["died"].values())
        return f"{s['positives']}/{finished}" + (f" (+{s['drawn'] - finished} pending)" if s["drawn"] > finished else "")

    lines = [f"# SmolLM2-135M as hinted teacher: yield per path kind ({doc['paths']} paths, seed {doc['seed']})", "",
             f"Machine: {describe(doc['machine'])}.", "",
             "Positives / paths finished (stored or dead-lettered) per kind, one draw per positive wanted; a path the "
             "run left pending (neither stored nor dead-lettered) is shown apart. The teacher is SmolLM2-135M-Instruct served by "
             "vLLM (CPU) in prompt mode; every variant passes the same verification (execution, reference match, grounding). "
             "A kind has one or two paths per run: a difference of one path is noise.", "",
             "| kind | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {k} | " + " | ".join(cell(doc["variants"][n], k) for n in names) + " |" for k in kinds]
    lines += ["| **all** | " + " | ".join(f"**{v['positives']}/{v['paths']} ({100 * v['yield']:.0f}%)**"
                                          for v in doc["variants"].values()) + " |", ""]
    lines += ["| variant | author | grammar | prompt overrides | paths left pending | teacher calls | wall s |",
              "|---|---|---|---|---:|---:|---:|"]
    lines += [f"| {n} | {v['author']} | {'on' if v['grammar'] else 'off'} | {', '.join(v['overrides']) or '-'} | "
              f"{v['pending']} | {v['teacher_calls']} | {v['wall_s']} |" for n, v in doc["variants"].items()]
    lines += ["", "Dead letters by reason:", ""]
    for n, v in doc["variants"].items():
        reasons = "; ".join(f"{r} ({c})" for r, c in v["dead_letters_by_reason"].items()) or "none"
        lines.append(f"- {n}: {reasons}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.smollm2_yield", description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="variants to run (default: all)")
    args = p.parse_args(argv)
    doc: dict[str, Any] = {"paths": args.paths, "seed": args.seed, "machine": machine(), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (author, grammar, overrides) in variants().items():
            if args.only and name not in args.only:
                continue
            doc["variants"][name] = run_variant(name, author, grammar, overrides, args.paths, args.seed, Path(tmp))
            print(f"{name}: {doc['variants'][name]['positives']}/{doc['variants'][name]['paths']}", flush=True)
    json_path, md_path = write_results("smollm2_yield", doc, markdown(doc))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
