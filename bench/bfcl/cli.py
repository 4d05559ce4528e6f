"""``magnet eval bfcl``: run a model on BFCL through the engine, score it with BFCL's checkers.

    magnet eval bfcl --model vllm:smollm2 --categories all --out runs/bfcl-smollm2
    magnet eval bfcl --model openai:gpt-4o-mini@https://api.openai.com/v1 --mode fc --categories multi_turn --out DIR
    magnet eval bfcl --model replay --categories multi_turn --out DIR   # ground-truth replay (fidelity check)

Rerunning the same command resumes: entries already in ``OUT/result`` are not asked again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.bfcl.data import load_dataset
from engine.errors import UserInputError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magnet eval bfcl", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="teacher spec (sim, openai:MODEL@URL, vllm:MODEL_OR_DIR, hf:DIR, a .toml) or 'replay'")
    p.add_argument("--categories", nargs="+", default=["all"], help="categories or collections (all, multi_turn, single_turn, live, non_live, ast)")
    p.add_argument("--bfcl-version", default="v3", choices=["v3", "v4"], help="v3: the paper's BFCL-v3 (bfcl-eval 2025.6.8); v4: current release")
    p.add_argument("--bfcl-data", default=None, help="folder with BFCL_<version>_*.json files (default: the installed bfcl-eval's data)")
    p.add_argument("--mode", default="prompt", choices=["prompt", "fc"], help="prompt: calls as Python text; fc: native tool calls")
    p.add_argument("--out", required=True, help="run folder: result/ (BFCL's format), score/, report.json, report.md")
    p.add_argument("--limit", type=int, default=None, help="only the first N entries of each category")
    p.add_argument("--concurrency", type=int, default=16, help="entries in flight at once")
    p.add_argument("--max-tokens", type=int, default=1024, help="max tokens per model answer")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="seconds one model answer may take (default: the teacher's; 600 for vllm:/hf:, long BFCL prompts on CPU are slow)")
    p.add_argument("--teacher-option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option passed to the teacher (vllm/hf), e.g. max_model_len=8192; repeatable")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.add_argument("--report-only", action="store_true",
                   help="ask nothing: score the entries already in --out (e.g. of an interrupted run) and write the report")
    return p


# BFCL's prompts (function docs in the system prompt, multi-turn histories) outgrow the 2,048-token
# default context of a managed vLLM server; SmolLM2 itself supports 8,192.
VLLM_DEFAULT_OPTIONS = {"max_model_len": 8192}


def _options(args: argparse.Namespace) -> dict[str, Any] | None:
    options: dict[str, Any] = dict(VLLM_DEFAULT_OPTIONS) if args.model.startswith("vllm:") else {}
    for item in args.teacher_option:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UserInputError(f"--teacher-option {item!r} is not KEY=VALUE; write e.g. --teacher-option max_model_len=8192")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value  # a plain string, e.g. dtype=float32
    return options or None


def _timeout(args: argparse.Namespace) -> float | None:
    if args.timeout_s is not None:
        return args.timeout_s
    return 600.0 if args.model.startswith(("vllm:", "hf:")) else None


async def _generate(args: argparse.Namespace, dataset: Any, store: Any) -> dict[str, Any]:
    from bench.bfcl.data import category_of
    from bench.bfcl.replay import ReplayTeacher
    from bench.bfcl.runner import EntryRunner, run_entries

    if args.model == "replay":
        # One replay per category: base and long-context entries share their questions.
        plan = [(ReplayTeacher(dataset, args.mode, categories=[c]), [e for e in dataset.entries if category_of(e["id"]) == c])
                for c in dataset.categories]
    else:
        from engine.teachers import make_teacher

        # A truncated answer is BFCL's answer too (it just fails to decode): never re-ask.
        plan = [(make_teacher(args.model, max_bad_answer_retries=0, timeout_s=_timeout(args), options=_options(args)), dataset.entries)]
    summary: dict[str, Any] = {}
    for teacher, entries in plan:
        runner = EntryRunner(teacher, args.mode, max_tokens=args.max_tokens, temperature=args.temperature)
        try:
            part = await run_entries(entries, runner, store, concurrency=args.concurrency, progress=not args.no_progress)
        finally:
            runner.close()
            await teacher.aclose()
        for key in ("done", "failed", "skipped", "cancelled"):
            part[key] += summary.get(key, 0)
        summary = part  # token counters are process-wide already; item counts add up over the plan
        if summary.get("interrupted"):
            break
    return summary


def main(argv: list[str]) -> int:
    if argv and argv[0] == "bfcl":  # `magnet eval bfcl ...`: the router hands us everything after "eval"
        argv = argv[1:]
    args = _parser().parse_args(argv)
    if args.concurrency < 1:
        raise UserInputError(f"--concurrency {args.concurrency} must be at least 1")
    if args.max_tokens < 1:
        raise UserInputError(f"--max-tokens {args.max_tokens} must be at least 1")
    from bench.bfcl.report import build_report, to_markdown, write_report
    from bench.bfcl.runner import ResultFiles
    from bench.bfcl.scoring import score_results
    from bench.results_io import machine
    from engine.scheduler import run

    dataset = load_dataset(args.bfcl_version, args.categories, data_dir=args.bfcl_data, limit=args.limit)
    out = Path(args.out).expanduser()
    store = ResultFiles(out, dataset, {"model": args.model, "mode": args.mode, "bfcl_version": args.bfcl_version,
                                       "data": str(dataset.data_dir), "max_tokens": args.max_tokens, "temperature": args.temperature})
    host, started, before, summary = machine(), time.monotonic(), len(store.rows), {"interrupted": True}
    if args.report_only:
        summary = {"report_only": True}
        store.close()
    else:
        try:
            summary = run(_generate(args, dataset, store))
        finally:
            store.close()
            store.add_segment(time.monotonic() - started, len(store.rows) - before, bool(summary.get("interrupted")), host)
    segments = store.segments()
    if summary.get("interrupted"):
        print(f"interrupted; rerun the same command to resume ({len(store.rows)} entries stored in {out / 'result'})")
        return 130
    rows = [store.rows[e["id"]] for e in dataset.entries if e["id"] in store.rows]
    scores = score_results(rows, dataset, args.mode, out / "score")
    report = build_report(dataset, model=args.model, mode=args.mode, rows=rows, scores=scores, wall_s=sum(s["wall_s"] for s in segments),
                          run_summary={**summary, "invocations": len(segments), "segments": segments})
    json_path, md_path = write_report(report, out)
    print(to_markdown({**report, "entries": []}))
    print(f"report: {md_path} and {json_path}")
    return 0
