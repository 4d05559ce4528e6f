"""What a BFCL run costs before it starts: prompt tokens of every entry's first request, per category.

    python -m bench.bfcl.volume                       # BFCL-v3, prompt mode, SmolLM2's tokenizer
    python -m bench.bfcl.volume --mode fc --model /path/to/checkpoint

Every entry's first request is rendered exactly as the runner sends it (BFCL's system prompt
and function docs, the model's chat template) and tokenized. Multi-turn entries send more
requests than that (one per step, each re-sending the growing history; with vLLM's prefix
cache only the new part is prefilled), so their count is a floor. Entries whose first prompt
leaves no room for an answer in ``--max-model-len`` end as inference errors, as under
``bfcl generate``. Writes bench/results/bfcl_volume.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import Any

from bench.bfcl.data import category_of, is_multi_turn, load_dataset
from bench.results_io import RESULTS, describe, machine, utc_now, write_results
from engine import wire


def first_prompt_tokens(entry: dict[str, Any], mode: str, tokenizer: Any) -> int:
    from bench.bfcl.runner import Conversation

    convo = Conversation(entry, mode)
    convo.add_user(convo.turn_messages(0))
    tools = wire.tools_to_wire(convo.tools) if convo.tools else None
    text = tokenizer.apply_chat_template(wire.messages_to_wire(convo.messages), tools=tools, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def volume(version: str, categories: list[str], mode: str, model: str, max_model_len: int, answer_tokens: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from engine.teachers.vllm_server import resolve_model

    path, _, template = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if template:
        tokenizer.chat_template = Path(template).read_text(encoding="utf-8")
    dataset = load_dataset(version, categories)
    rows: dict[str, dict[str, Any]] = collections.defaultdict(lambda: {"entries": 0, "prompt_tokens": 0, "too_long": 0, "user_turns": 0})
    for entry in dataset.entries:
        row = rows[category_of(entry["id"])]
        tokens = first_prompt_tokens(entry, mode, tokenizer)
        row["entries"] += 1
        row["prompt_tokens"] += tokens
        row["too_long"] += tokens > max_model_len - answer_tokens
        row["user_turns"] += len(entry["question"])
    for name, row in rows.items():
        row["mean_prompt_tokens"] = round(row["prompt_tokens"] / row["entries"])
        row["multi_turn"] = is_multi_turn(name)
    return {"benchmark": dataset.describe(), "mode": mode, "model": model, "max_model_len": max_model_len,
            "answer_tokens": answer_tokens, "categories": dict(sorted(rows.items()))}


def to_markdown(result: dict[str, Any]) -> str:
    cats = result["categories"]
    lines = [f"# BFCL request volume: first-request prompt tokens ({result['date']})", "",
             f"{result['benchmark']}; {result['mode']} mode; tokenizer and chat template of `{result['model']}`; "
             f"an entry is too long when its first prompt leaves fewer than {result['answer_tokens']} of "
             f"{result['max_model_len']} context tokens. Machine: {describe(result['machine'])}.", "",
             "| category | entries | user turns | mean first prompt | first-request prompt tokens | too long |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in cats.items():
        lines.append(f"| {name} | {row['entries']} | {row['user_turns']} | {row['mean_prompt_tokens']} | {row['prompt_tokens']:,} | "
                     f"{row['too_long']} |")
    single = sum(r["prompt_tokens"] for r in cats.values() if not r["multi_turn"])
    multi = sum(r["prompt_tokens"] for r in cats.values() if r["multi_turn"])
    lines += ["", f"Single-turn: {single:,} prompt tokens (one request per entry). Multi-turn: {multi:,} in first requests alone; "
              "every later step re-sends the history (prefilled again without a prefix cache), so a full run prefills more.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bfcl.volume", description=__doc__.split("\n\n")[0])
    p.add_argument("--bfcl-version", default="v3", choices=["v3", "v4"])
    p.add_argument("--categories", nargs="+", default=["all"])
    p.add_argument("--mode", default="prompt", choices=["prompt", "fc"])
    p.add_argument("--model", default="smollm2", help="whose tokenizer and chat template: smollm2 or a checkpoint folder")
    p.add_argument("--max-model-len", type=int, default=8192, help="the server's context length")
    p.add_argument("--answer-tokens", type=int, default=256, help="room an answer needs (the run's --max-tokens)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    result = {"date": utc_now(), "machine": machine(),
              **volume(args.bfcl_version, args.categories, args.mode, args.model, args.max_model_len, args.answer_tokens)}
    write_results("bfcl_volume", result, to_markdown(result), args.out)
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
