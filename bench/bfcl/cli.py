"""``magnet eval bfcl``: run a model on BFCL through the engine, score it with BFCL's checkers.

    magnet eval bfcl --model vllm:smollm2 --categories all --out runs/bfcl-smollm2
    magnet eval bfcl --model openai:gpt-4o-mini@https://api.openai.com/v1 --mode fc --categories multi_turn --out DIR
    magnet eval bfcl --model replay --categories multi_turn --out DIR   # ground-truth replay (fidelity check)

Rerunning the same command resumes: entries already in ``OUT/result`` are not asked again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.bfcl.config import BfclConfig
from bench.bfcl.data import load_dataset
from engine.config_cli import ConfigCLI

# Every option is a BfclConfig field; a TOML file may hold them flat or under [bfcl].
CONFIG = ConfigCLI(BfclConfig, section="bfcl")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magnet eval bfcl", description=__doc__.split("\n\n")[0])
    CONFIG.add_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.add_argument("--report-only", action="store_true",
                   help="ask nothing: score the entries already in --out (e.g. of an interrupted run) and write the report")
    return p


# BFCL's prompts (function docs in the system prompt, multi-turn histories) outgrow the 2,048-token
# default context of a managed vLLM server; SmolLM2 itself supports 8,192.
VLLM_DEFAULT_OPTIONS = {"max_model_len": 8192}


def _options(config: BfclConfig) -> dict[str, Any] | None:
    defaults = VLLM_DEFAULT_OPTIONS if config.model.startswith("vllm:") else {}
    return {**defaults, **config.teacher_options} or None


def _client_options(config: BfclConfig) -> dict[str, Any]:
    """Options of teachers answering over HTTP: a truncated answer is BFCL's answer too (it just fails
    to decode), so never re-ask; long BFCL prompts on a CPU-served model need a long timeout.
    In-process teachers (hf:, sim) take neither."""
    if config.model.startswith(("hf:", "sim", "vllm-inproc:")):
        return {}
    timeout = config.timeout_s if config.timeout_s is not None else 600.0 if config.model.startswith("vllm:") else None
    return {"max_bad_answer_retries": 0, "timeout_s": timeout}


async def _generate(config: BfclConfig, dataset: Any, store: Any, progress: bool) -> dict[str, Any]:
    from bench.bfcl.data import category_of
    from bench.bfcl.replay import ReplayTeacher
    from bench.bfcl.runner import EntryRunner, run_entries

    if config.model == "replay":
        # One replay per category: base and long-context entries share their questions.
        plan = [(ReplayTeacher(dataset, config.mode, categories=[c]), [e for e in dataset.entries if category_of(e["id"]) == c])
                for c in dataset.categories]
    else:
        from engine.teachers import make_teacher

        plan = [(make_teacher(config.model, **_client_options(config), options=_options(config)), dataset.entries)]
    summary: dict[str, Any] = {}
    for teacher, entries in plan:
        runner = EntryRunner(teacher, config.mode, max_tokens=config.max_tokens, temperature=config.temperature)
        try:
            part = await run_entries(entries, runner, store, concurrency=config.concurrency, progress=progress)
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
    config = CONFIG.load(args)
    from bench.bfcl.report import build_report, to_markdown, write_report
    from bench.bfcl.runner import ResultFiles
    from bench.bfcl.scoring import score_results
    from bench.results_io import machine
    from engine.scheduler import run

    dataset = load_dataset(config.bfcl_version, config.categories, data_dir=config.bfcl_data, limit=config.limit,
                           category_limits=config.category_limits)
    out = Path(config.out).expanduser()
    store = ResultFiles(out, dataset, {"model": config.model, "mode": config.mode, "bfcl_version": config.bfcl_version,
                                       "data": str(dataset.data_dir), "max_tokens": config.max_tokens, "temperature": config.temperature})
    host, started, before, summary = machine(), time.monotonic(), len(store.rows), {"interrupted": True}
    if args.report_only:
        summary = {"report_only": True}
        store.close()
    else:
        try:
            summary = run(_generate(config, dataset, store, not args.no_progress))
        finally:
            store.close()
            store.add_segment(time.monotonic() - started, len(store.rows) - before, bool(summary.get("interrupted")), host)
    segments = store.segments()
    if summary.get("interrupted"):
        print(f"interrupted; rerun the same command to resume ({len(store.rows)} entries stored in {out / 'result'})")
        return 130
    rows = [store.rows[e["id"]] for e in dataset.entries if e["id"] in store.rows]
    scores = score_results(rows, dataset, config.mode, out / "score")
    report = build_report(dataset, model=config.model, mode=config.mode, rows=rows, scores=scores, wall_s=sum(s["wall_s"] for s in segments),
                          run_summary={**summary, "invocations": len(segments), "segments": segments})
    json_path, md_path = write_report(report, out)
    print(to_markdown({**report, "entries": []}))
    print(f"report: {md_path} and {json_path}")
    return 0
