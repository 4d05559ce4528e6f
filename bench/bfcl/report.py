"""The BFCL report: the paper's columns (aggregated with BFCL's own accuracy functions), the
per-category accuracies, every entry's raw output and checker verdict, wall time and tokens.

Columns follow ``generate_leaderboard_csv`` of bfcl-eval: Non-live AST is the unweighted mean of
(simple = mean of python/java/javascript simple), multiple, parallel, parallel_multiple; Live AST
is the entry-weighted mean of the four live AST categories; Multi-turn is the unweighted mean of
its four categories; Irrelevance averages the non-live and live irrelevance; Relevance is
live_relevance; Overall is the unweighted mean of the non-live, live and multi-turn overalls.
A column needing a category that was not run shows "N/A" (its score counts as 0 in any mean).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.bfcl.data import EXEC_CATEGORIES, Dataset, category_of
from bench.results_io import write_results

# v4 renamed the non-live simple categories; the paper's columns use the v3 names.
_V3_NAME = {"simple_python": "simple", "simple_java": "java", "simple_javascript": "javascript"}
COLUMNS = ["Overall", "Non-live AST", "Live AST", "Multi-turn", "MT base", "MT miss func", "MT miss param",
           "MT long context", "Relevance", "Irrelevance"]


def paper_columns(categories: dict[str, dict[str, Any]]) -> dict[str, float | str]:
    from bfcl_eval.eval_checker.eval_runner_helper import calculate_unweighted_accuracy as mean
    from bfcl_eval.eval_checker.eval_runner_helper import calculate_weighted_accuracy as weighted

    scores = {_V3_NAME.get(name, name): dict(value) for name, value in categories.items()}

    def get(name: str) -> dict[str, Any]:
        if name in scores:
            return {**scores[name], "display_accuracy": scores[name]["accuracy"]}
        return {"accuracy": 0.0, "total_count": 0, "display_accuracy": "N/A"}

    simple = mean([get("simple"), get("java"), get("javascript")])
    non_live_ast = mean([simple, get("multiple"), get("parallel"), get("parallel_multiple")])
    non_live = mean([simple, get("multiple"), get("parallel"), get("parallel_multiple"), get("irrelevance")], display_na_if_category_missing=False)
    live_parts = [get("live_simple"), get("live_multiple"), get("live_parallel"), get("live_parallel_multiple")]
    live_ast = weighted(live_parts) if any(p["total_count"] for p in live_parts) else {"display_accuracy": "N/A"}
    live_all = live_parts + [get("live_irrelevance"), get("live_relevance")]
    live = weighted(live_all, display_na_if_category_missing=False) if any(p["total_count"] for p in live_all) else {"accuracy": 0.0, "total_count": 0, "display_accuracy": 0.0}
    mt = [get("multi_turn_base"), get("multi_turn_miss_func"), get("multi_turn_miss_param"), get("multi_turn_long_context")]
    multi_turn = mean(mt)
    overall = mean([live, non_live, mean(mt, display_na_if_category_missing=False)])
    values = [overall, non_live_ast, live_ast, multi_turn, *mt, get("live_relevance"), mean([get("irrelevance"), get("live_irrelevance")])]
    return {name: value["display_accuracy"] for name, value in zip(COLUMNS, values)}


def _not_reproducible(dataset: Dataset) -> dict[str, int]:
    """Entry counts of the exec/REST categories (they need live web APIs), where the data has them."""
    counts = {}
    for name in EXEC_CATEGORIES:
        for folder in (dataset.data_dir, dataset.data_dir / "unused_datasets" / "question"):
            path = folder / f"{dataset.prefix}_{name}.json"
            if path.is_file():
                counts[name] = sum(1 for line in path.read_text().splitlines() if line.strip())
                break
    return counts


def count_tokens(rows: list[dict[str, Any]], key: str) -> int:
    """Sum of a BFCL token field over rows (multi-turn rows hold nested lists: per turn, per step)."""
    total, stack = 0, [row.get(key, 0) for row in rows]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, (int, float)):
            total += int(value)
    return total


def build_report(dataset: Dataset, *, model: str, mode: str, rows: list[dict[str, Any]], scores: dict[str, Any],
                 wall_s: float, run_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    prompt_tokens, completion_tokens = count_tokens(rows, "input_token_count"), count_tokens(rows, "output_token_count")
    entries = [
        {"id": row["id"], "category": category_of(row["id"]), **scores["entries"].get(row["id"], {}), "result": row["result"]}
        for row in rows
    ]
    return {
        "benchmark": dataset.describe(),
        "bfcl_version": dataset.version,
        "bfcl_eval_package": dataset.package_version,
        "model": model,
        "mode": mode,
        "columns": paper_columns(scores["categories"]),
        "categories": scores["categories"],
        "entries_scored": len(rows),
        "entries_in_dataset": len(dataset.entries),
        "not_reproducible_offline": _not_reproducible(dataset),
        "wall_s": round(wall_s, 3),
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens,
                   "completion_per_s": round(completion_tokens / wall_s, 3) if wall_s > 0 else None,
                   "total_per_s": round((prompt_tokens + completion_tokens) / wall_s, 3) if wall_s > 0 else None},
        "run": run_summary or {},
        "entries": entries,
    }


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else str(value)


def to_markdown(report: dict[str, Any], *, failures: int = 25) -> str:
    lines = [
        f"# BFCL evaluation: {report['model']} ({report['mode']} mode)",
        "",
        f"Benchmark: {report['benchmark']}. Entries scored: {report['entries_scored']} of {report['entries_in_dataset']} loaded"
        + (" -- a partial run: every number below covers the scored entries only, and a column whose categories are"
           " not all scored yet reads N/A." if report["entries_scored"] < report["entries_in_dataset"] else "."),
        f"Wall time {report['wall_s']} s (summed over {report['run'].get('invocations', 1)} invocation(s) of the command); tokens prompt {report['tokens']['prompt']}, completion {report['tokens']['completion']} "
        f"({report['tokens']['total_per_s']} tokens/s overall).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        "| " + " | ".join(_pct(report["columns"][c]) for c in COLUMNS) + " |",
        "",
        "| category | correct | total | accuracy % | silent on held-out turns (BFCL's irrelevance checker, not in the score) |",
        "|---|---|---|---|---|",
    ]
    for name, value in report["categories"].items():
        silent = value.get("irrelevance_checker_correct", "")
        lines.append(f"| {name} | {value['correct_count']} | {value['total_count']} | {_pct(value['accuracy'])} | {silent} |")
    if report["not_reproducible_offline"]:
        listed = ", ".join(f"{k} ({v})" for k, v in report["not_reproducible_offline"].items())
        lines += ["", f"Not reproducible offline (they call live web APIs; not scored, not in any column): {listed}."]
    bad = [e for e in report["entries"] if not e.get("valid", True)]
    if bad:
        lines += ["", f"First {min(failures, len(bad))} of {len(bad)} failed entries (all entries, with raw outputs, are in the JSON):", "",
                  "| id | error type | error | raw output |", "|---|---|---|---|"]
        for e in bad[:failures]:
            error = e.get("error")
            text = error.get("error_message", "") if isinstance(error, dict) else "; ".join(map(str, error or []))
            raw = json.dumps(e["result"])[:120]
            lines.append(f"| {e['id']} | {e.get('error_type')} | {_cell(text)} | {_cell(raw)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_report(report: dict[str, Any], folder: Path, stem: str = "report") -> tuple[Path, Path]:
    return write_results(stem, report, to_markdown(report), folder)
