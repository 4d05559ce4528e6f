"""BFCL fidelity on outputs where harnesses can part: a loopback server answers every category with a
fixed mix of right, wrong and malformed outputs (arithmetic in prompt-mode arguments, tool-call
arguments "" and invalid JSON, an empty tool_calls list, no content, truncation).

For each mode, against the same server: our stored outputs equal BFCL's own generator's (its
OpenAIHandler), our verdicts equal those of BFCL's ``eval_runner`` per-category runners entry by entry -- run with
BFCL's own, unguarded OpenAIHandler, so BFCL really ``eval``s the (scripted, harmless) arithmetic
here -- and our report's columns equal the leaderboard CSV BFCL's aggregation writes, for a full
and a partial run.
"""

from __future__ import annotations

import asyncio
import csv
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl_project_"))

from bench.bfcl.adversary import FC_VARIANTS, PROMPT_VARIANTS, AdversaryTeacher, build_adversary_app  # noqa: E402
from bench.bfcl.data import Dataset, ModelConfig, category_of, load_dataset, model_config_mapping  # noqa: E402
from bench.bfcl.replay import serve_app  # noqa: E402
from bench.bfcl.report import category_sizes, coverage, paper_columns  # noqa: E402
from bench.bfcl.scoring import forget_model, score_category, score_results  # noqa: E402
from bench.bfcl.throughput import bfcl_generate, engine_generate  # noqa: E402
from engine.teachers import make_teacher  # noqa: E402

SINGLE_TURN_LIMIT = 10  # >= the number of variants: every single-turn category gets the whole mix
MULTI_TURN_LIMIT = 4
PARTIAL = ["simple", "live_multiple", "irrelevance", "multi_turn_base"]


def _dataset() -> Dataset:
    single = load_dataset("v3", ["single_turn"], limit=SINGLE_TURN_LIMIT)
    multi = load_dataset("v3", ["multi_turn"], limit=MULTI_TURN_LIMIT)
    return Dataset(single.version, single.prefix, single.package_version, single.data_dir, single.categories + multi.categories,
                   single.entries + multi.entries, {**single.ground_truth, **multi.ground_truth})


@pytest.fixture(scope="module", params=["prompt", "fc"])
def generated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both harnesses' result rows for one mode, against one adversarial server."""
    mode = request.param
    dataset = _dataset()
    adversary = AdversaryTeacher(dataset, mode)
    with serve_app(lambda: build_adversary_app(adversary)) as url:
        theirs = bfcl_generate(dataset.entries, base_url=url, served_model="adversary", mode=mode, threads=4,
                               result_dir=tmp_path_factory.mktemp("bfcl_generate"))
        teacher = make_teacher(f"openai:adversary@{url}", max_bad_answer_retries=0, probe_limits=False)
        ours = asyncio.run(engine_generate(dataset.entries, teacher, mode, 8))
    return {"mode": mode, "dataset": dataset, "adversary": adversary, "theirs": theirs, "ours": ours}


def _failure_type(row: dict[str, Any]) -> Any:
    return row.get("error_type") or (row.get("error") or {}).get("error_type")


def bfcl_evaluate(rows: list[dict[str, Any]], dataset: Dataset, categories: list[str], mode: str, folder: Path) -> dict[str, Any]:
    """BFCL's evaluation with BFCL's own OpenAIHandler: its per-category runners (``ast_file_runner``,
    ``relevance_file_runner``, ``multi_turn_runner``, via ``score_category``, which only picks the
    entries' prompts and answers: ``eval_runner.runner`` itself insists on whole category files),
    then its leaderboard aggregation; verdicts per entry and the CSV rows it writes."""
    from bfcl_eval.eval_checker.eval_runner_helper import generate_leaderboard_csv, update_leaderboard_table_with_local_score_file
    from bfcl_eval.model_handler.api_inference.openai import OpenAIHandler

    fc = mode == "fc"
    name = f"bfcl-own-{uuid.uuid4().hex[:8]}" + ("-FC" if fc else "")  # no "_": BFCL reads it as "/"
    model_config_mapping()[name] = ModelConfig(model_name=name, display_name=name, url="", org="", license="",
                                               model_handler=OpenAIHandler, is_fc_model=fc, underscore_to_dot=fc)
    try:
        verdicts = {}
        for category in categories:
            mine = [r for r in rows if category_of(r["id"]) == category]
            _, _, failures = score_category(category, mine, dataset, name, folder)
            verdicts.update({r["id"]: (False, _failure_type(failures[r["id"]])) if r["id"] in failures else (True, None) for r in mine})
        table: dict[str, Any] = {}
        update_leaderboard_table_with_local_score_file(table, folder)
        generate_leaderboard_csv(table, folder, [name], categories)
        tables = {}
        for csv_name in ("data_overall", "data_live"):
            with open(folder / f"{csv_name}.csv") as f:
                tables[csv_name] = next(csv.DictReader(f))
        return {"verdicts": verdicts, **tables}
    finally:
        forget_model(name)


def _pct(value: Any) -> str:
    return value if value == "N/A" else f"{value * 100:.2f}%"


def _as_bfcl_prints_them(columns: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, str]:
    """Our columns beside the same numbers in BFCL's leaderboard CSVs."""
    overall, live = evaluation["data_overall"], evaluation["data_live"]
    theirs = {"Overall": overall["Overall Acc"], "Non-live AST": overall["Non-Live AST Acc"], "Live AST": live["AST Summary"],
              "Multi-turn": overall["Multi Turn Acc"], "MT base": overall["Multi Turn Base"], "MT miss func": overall["Multi Turn Miss Func"],
              "MT miss param": overall["Multi Turn Miss Param"], "MT long context": overall["Multi Turn Long Context"],
              "Relevance": overall["Relevance Detection"], "Irrelevance": overall["Irrelevance Detection"]}
    return {name: f"ours {_pct(columns[name])} / BFCL {theirs[name]}" for name in theirs}


def test_we_store_what_bfcls_own_generator_stores(generated: dict[str, Any]) -> None:
    theirs = {r["id"]: r["result"] for r in generated["theirs"]}
    ours = {r["id"]: r["result"] for r in generated["ours"]}
    assert len(theirs) == len({e["id"] for e in generated["dataset"].entries})
    assert ours == theirs  # byte for byte: "" arguments, invalid JSON, [] and None included
    variants = FC_VARIANTS if generated["mode"] == "fc" else PROMPT_VARIANTS
    assert set().union(*generated["adversary"].used.values()) == set(variants)
    if generated["mode"] == "fc":  # what the FC variants stored (single-turn rows), as the model sent it
        arguments = [a for r in ours.values() if isinstance(r, list) for c in r if isinstance(c, dict) for a in c.values()]
        assert "" in arguments and '{"value": ' in arguments and any("\n" in a for a in arguments)
        assert [] in ours.values() and None in ours.values()


def test_our_verdicts_equal_bfcls_eval_runner_entry_by_entry(generated: dict[str, Any], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")  # BFCL's OpenAIHandler builds a client it never uses here
    mode, dataset = generated["mode"], generated["dataset"]
    ours = score_results(generated["ours"], dataset, mode, tmp_path / "ours")
    theirs = bfcl_evaluate(generated["theirs"], dataset, dataset.categories, mode, tmp_path / "bfcl")
    assert {i: (e["valid"], e["error_type"]) for i, e in ours["entries"].items()} == theirs["verdicts"]
    # the mix really mixes: per category, some entries right and some wrong
    for category in dataset.categories:
        valid = [v for i, (v, _) in theirs["verdicts"].items() if category_of(i) == category]
        assert any(valid) and not all(valid), category
    # the outputs where our verdicts used to differ from BFCL's (issue 11)
    if mode == "prompt":
        assert ours["entries"]["simple_1"]["valid"]  # arithmetic in arguments, evaluated as BFCL does
        assert not ours["entries"]["irrelevance_1"]["valid"]  # ... so it is a call on an irrelevance entry
        assert ours["entries"]["multi_turn_base_0"]["valid"] and ours["entries"]["multi_turn_base_2"]["valid"]
    else:
        assert ours["entries"]["irrelevance_2"]["valid"] and ours["entries"]["live_irrelevance_2-0-2"]["valid"]  # "" arguments: no call
        assert not ours["entries"]["live_relevance_2-2-0"]["valid"]
    # the report's columns are BFCL's leaderboard numbers, for the full run ...
    columns = paper_columns(ours["categories"], category_sizes(dataset))
    assert {k: v.split(" / ")[0][5:] == v.split(" / BFCL ")[1] for k, v in _as_bfcl_prints_them(columns, theirs).items()} == {
        k: True for k in columns}, _as_bfcl_prints_them(columns, theirs)


def test_a_partial_run_gets_bfcls_leaderboard_numbers_and_is_marked_partial(generated: dict[str, Any], tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Categories not run count 0 at their full size in BFCL's aggregation (weighted means too)."""
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    mode, dataset = generated["mode"], generated["dataset"]
    rows = [r for r in generated["ours"] if category_of(r["id"]) in PARTIAL]
    ours = score_results(rows, dataset, mode, tmp_path / "ours")["categories"]
    theirs = bfcl_evaluate(rows, dataset, PARTIAL, mode, tmp_path / "bfcl")
    sizes = category_sizes(dataset)
    columns = paper_columns(ours, sizes)
    printed = _as_bfcl_prints_them(columns, theirs)
    assert all(v.split(" / ")[0][5:] == v.split(" / BFCL ")[1] for v in printed.values()), printed
    assert columns["Live AST"] == "N/A" and isinstance(columns["Overall"], float) and isinstance(columns["Multi-turn"], float)
    cov = coverage(ours, sizes)
    assert cov["partial"] and "java" in cov["not_run"] and cov["incomplete"]["simple"] == f"{SINGLE_TURN_LIMIT}/400"
