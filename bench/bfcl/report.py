"""The BFCL report: the paper's columns (aggregated as BFCL's leaderboard aggregates them), the
per-category accuracies, every entry's raw output and checker verdict, wall time and tokens.

Columns follow ``generate_leaderboard_csv`` of bfcl-eval, with its own accuracy functions: Non-live
AST is the unweighted mean of (simple = mean of python/java/javascript simple), multiple, parallel,
parallel_multiple; Live AST is the entry-weighted mean of the four live AST categories; Multi-turn
is the unweighted mean of its four categories; Irrelevance averages the non-live and live
irrelevance; Relevance is live_relevance; Overall is the unweighted mean of the non-live, live and
multi-turn overalls. A category that was not run counts as BFCL's ``get_category_score`` counts it:
accuracy 0 with the entry count of its full data file (full weight in the weighted means). A column
made of categories not all run reads "N/A" where BFCL's reads "N/A" (Overall and Multi-turn never
do). A run that did not score every entry of every category is marked partial.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from bench.bfcl.data import EXEC_CATEGORIES, Dataset, category_of
from bench.results_io import write_results

# v4 renamed the non-live simple categories; the paper's columns use the v3 names.
_V3_NAME = {"simple_python": "simple", "simple_java": "java", "simple_javascript": "javascript"}
COLUMNS = ["Overall", "Non-live AST", "Live AST", "Multi-turn", "MT base", "MT miss func", "MT miss param",
           "MT long context", "Relevance", "Irrelevance"]
# Every category the leaderboard's columns read (v3 names).
COLUMN_CATEGORIES = ["simple", "java", "javascript", "multiple", "parallel", "parallel_multiple", "irrelevance",
                     "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance",
                     "live_relevance", "multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param",
                     "multi_turn_long_context"]


@functools.cache
def _file_sizes(data_dir: Path, prefix: str) -> dict[str, int]:
    """Entries in each column category's full data file (what BFCL counts for a category not run);
    0 when the data folder lacks the file."""
    from bfcl_eval.utils import load_file

    v4_name = {v3: v4 for v4, v3 in _V3_NAME.items()}
    sizes = {}
    for name in COLUMN_CATEGORIES:
        path = next((p for p in (data_dir / f"{prefix}_{n}.json" for n in (name, v4_name.get(name, name))) if p.is_file()), None)
        sizes[name] = len(load_file(path)) if path else 0
    return sizes


def category_sizes(dataset: Dataset) -> dict[str, int]:
    return _file_sizes(dataset.data_dir, dataset.prefix)


def paper_columns(categories: dict[str, dict[str, Any]], sizes: dict[str, int]) -> dict[str, float | str]:
    """The paper's columns from per-category scores, computed as BFCL's ``generate_leaderboard_csv``."""
    from bfcl_eval.eval_checker.eval_runner_helper import calculate_unweighted_accuracy as mean
    from bfcl_eval.eval_checker.eval_runner_helper import calculate_weighted_accuracy

    scores = {_V3_NAME.get(name, name): dict(value) for name, value in categories.items()}

    def get(name: str) -> dict[str, Any]:  # BFCL's get_category_score
        if name in scores:
            return {**scores[name], "display_accuracy": scores[name]["accuracy"]}
        return {"accuracy": 0, "total_count": sizes[name], "display_accuracy": "N/A"}

    def weighted(parts: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        if not sum(p["total_count"] for p in parts):  # only with a data folder lacking these files: BFCL would divide by 0
            return {"accuracy": 0, "total_count": 0, "display_accuracy": "N/A"}
        return calculate_weighted_accuracy(parts, **kw)

    simple = mean([get("simple"), get("java"), get("javascript")])
    non_live_parts = [simple, get("multiple"), get("parallel"), get("parallel_multiple")]
    non_live_ast = mean(non_live_parts)
    non_live = mean([*non_live_parts, get("irrelevance")], display_na_if_category_missing=False)
    live_parts = [get("live_simple"), get("live_multiple"), get("live_parallel"), get("live_parallel_multiple")]
    live_ast = weighted(live_parts)
    live = weighted([*live_parts, get("live_irrelevance"), get("live_relevance")], display_na_if_category_missing=False)
    mt = [get("multi_turn_base"), get("multi_turn_miss_func"), get("multi_turn_miss_param"), get("multi_turn_long_context")]
    multi_turn = mean(mt, display_na_if_category_missing=False)
    overall = mean([live, non_live, multi_turn], display_na_if_category_missing=False)
    values = [overall, non_live_ast, live_ast, multi_turn, *mt, get("live_relevance"), mean([get("irrelevance"), get("live_irrelevance")])]
    return {name: value["display_accuracy"] for name, value in zip(COLUMNS, values)}


def coverage(categories: dict[str, dict[str, Any]], sizes: dict[str, int]) -> dict[str, Any]:
    """Is this a partial run? The column categories not run, and those scored on fewer entries than their file holds."""
    scored = {_V3_NAME.get(name, name): value["total_count"] for name, value in categories.items()}
    not_run = [c for c in COLUMN_CATEGORIES if c not in scored]
    incomplete = {c: f"{n}/{sizes[c]}" for c, n in scored.items() if c in sizes and n < sizes[c]}
    return {"partial": bool(not_run or incomplete), "not_run": not_run, "incomplete": incomplete}


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
        "columns": paper_columns(scores["categories"], category_sizes(dataset)),
        "coverage": coverage(scores["categories"], category_sizes(dataset)),
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
        f"Benchmark: {report['benchmark']}. Entries scored: {report['entries_scored']} of {report['entries_in_dataset']} loaded."
        + (_partial_note(report["coverage"]) if report["coverage"]["partial"] else ""),
        f"Wall time {report['wall_s']} s (summed over {report['run'].get('invocations', 1)} invocation(s) of the command); tokens prompt "
        f"{report['tokens']['prompt']}, completion {report['tokens']['completion']} "
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


def _partial_note(cov: dict[str, Any]) -> str:
    parts = ([f"not run: {', '.join(cov['not_run'])}"] if cov["not_run"] else []) + (
        [f"scored on part of their entries: {', '.join(f'{c} ({n})' for c, n in cov['incomplete'].items())}"] if cov["incomplete"] else [])
    return (f" **Partial run** ({'; '.join(parts)}). The columns are computed as BFCL's leaderboard computes them:"
            " a category not run counts 0 at its full size, a category scored on part of its entries counts"
            " at that part's accuracy and size.")


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_report(report: dict[str, Any], folder: Path, stem: str = "report") -> tuple[Path, Path]:
    return write_results(stem, report, to_markdown(report), folder)
