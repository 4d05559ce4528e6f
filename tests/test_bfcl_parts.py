"""Parts of the BFCL evaluation: data loading, the no-eval executor and guards, the CLI's resume."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl_project_"))

from bench.bfcl.arithmetic import MAX_INT_BITS, MAX_ITEMS, Refused, evaluate  # noqa: E402
from bench.bfcl.cli import main  # noqa: E402
from bench.bfcl.data import category_of, load_dataset  # noqa: E402
from bench.bfcl.runner import ApiInstances  # noqa: E402
from bench.bfcl.scoring import REFUSED_CALL, checked_call, decode_python_prompting, forget_model, handler_class, register_model  # noqa: E402
from engine.errors import UserInputError  # noqa: E402


def test_v3_has_the_papers_entries_and_names_its_version() -> None:
    dataset = load_dataset("v3")
    counts: dict[str, int] = {}
    for entry in dataset.entries:
        counts[category_of(entry["id"])] = counts.get(category_of(entry["id"]), 0) + 1
    assert len(counts) == 17 and sum(counts.values()) == 4441  # + 310 exec/REST entries = the paper's 4,751
    assert counts["live_multiple"] == 1053 and counts["multi_turn_miss_func"] == 200
    assert "BFCL-v3" in dataset.describe() and "2025.6.8" in dataset.describe()
    miss = next(e for e in dataset.entries if e["id"] == "multi_turn_miss_func_0")
    held_out = [f["name"] for docs in miss["missed_function"].values() for f in docs]
    assert held_out and not set(held_out) & {f["name"] for f in miss["function"]}


def test_bad_versions_and_categories_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--bfcl-data"):
        load_dataset("v4")  # the installed 2025.6.8 ships only v3 files
    with pytest.raises(UserInputError, match="BFCL_v4"):
        load_dataset("v4", data_dir=tmp_path)
    with pytest.raises(UserInputError, match="live web APIs"):
        load_dataset("v3", ["exec_simple"])
    with pytest.raises(UserInputError, match="unknown BFCL category 'simpel'"):
        load_dataset("v3", ["simpel"])


def test_v4_data_dir_is_read_by_its_file_names(tmp_path: Path) -> None:
    """A v4 folder (names BFCL_v4_*, v4's renamed simple_python) is loaded and scored by name."""
    v3 = load_dataset("v3", ["simple"], limit=3)
    (tmp_path / "possible_answer").mkdir()
    rows = [json.dumps({**e, "id": e["id"].replace("simple", "simple_python")}) for e in v3.entries]
    answers = [json.dumps({"id": i.replace("simple", "simple_python"), "ground_truth": g}) for i, g in v3.ground_truth.items()]
    (tmp_path / "BFCL_v4_simple_python.json").write_text("\n".join(rows) + "\n")
    (tmp_path / "possible_answer" / "BFCL_v4_simple_python.json").write_text("\n".join(answers) + "\n")
    v4 = load_dataset("v4", ["all"], data_dir=tmp_path)
    assert v4.categories == ["simple_python"] and len(v4.entries) == 3 and "BFCL-v4" in v4.describe()


def test_our_executor_gives_bfcls_outputs_without_eval() -> None:
    """ApiInstances (ast + method call) renders every ground-truth call's output exactly as
    BFCL's eval-based executor does, on the first 25 entries of each multi-turn category."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call

    dataset = load_dataset("v3", ["multi_turn"], limit=25)
    model = f"parity_{uuid.uuid4().hex[:8]}"
    compared = 0
    for entry in dataset.entries:
        ours = ApiInstances(entry)
        for turn in dataset.ground_truth[entry["id"]]:
            theirs, _ = execute_multi_turn_func_call(turn, entry["initial_config"], entry["involved_classes"], model, entry["id"],
                                                     long_context="long_context" in entry["id"])
            assert [ours.execute(call) for call in turn] == theirs, entry["id"]
            compared += len(turn)
    assert compared > 500


def test_model_text_that_bfcl_would_evaluate_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # BFCL's prompt decoder evals BinOp values: this would create a file
    with pytest.raises(Refused, match="refused"):
        decode_python_prompting(f"[f(x=open('{marker}', 'w') + 1)]")
    with pytest.raises(Refused, match="refused"):
        decode_python_prompting("[f(x=(lambda: 1)() + 1)]")
    name = register_model("prompt", "guard")
    try:
        handler = handler_class()(name)
        with pytest.raises(ValueError):
            handler.decode_ast(f"[f(x=open('{marker}', 'w') + 1)]")
        # the multi-turn checker evals decoded call strings: only API methods on literals pass
        assert handler.decode_execute(f"[open(file='{marker}', mode='w'), cd(folder='x')]") == [REFUSED_CALL, "cd(folder='x')"]
    finally:
        forget_model(name)
    assert checked_call("cd(folder=ls())") is not None and checked_call("cd(folder=__import__('os'))") is None
    assert not marker.exists()
    entry = load_dataset("v3", ["multi_turn_base"], limit=1).entries[0]
    assert ApiInstances(entry).execute(f"open(file='{marker}', mode='w')") == "Error during execution: name 'open' is not defined"
    assert not marker.exists()


def test_arguments_with_arithmetic_decode_to_the_values_bfcls_eval_gives() -> None:
    """Our decoder against BFCL's own default_decode_ast_prompting (which evals): same values, or
    both fail, on literal arithmetic, concatenation, repetition and BFCL's quirks around it."""
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting

    texts = [
        "[f(city='New ' + 'York', x=10**-3, y=[1] + [2], z=(1, 2) + (3,), w={1: 2} | {3: 4}, v={'a': 1 + 1})]",
        "[f(a='ab' * 3, b=[0] * 2, c=7 // 2, d=7 % 3, e=1 << 3, f=2 ** -2, g='%05d' % 3, h=-1j + 1, i=True + True)]",
        "[f(a=[1, 2][0] + 1, b='abc'[1:] + 'd', c=(1 < 2 < 3) + 0, d=(0 and 1 / 0) + 1, e=(1 if 0 else 2) * 2)]",
        "f(x=1), g(y='a' + 'b')",  # no brackets
        "[f(a=+5, b=g(1 + 2), c=g(x=1 + 2))]",  # BFCL reads +5 as -5 and keeps a keyword-less call as text
        "[f(a=1 / 0)]", "[f(a='a' + 1)]", "[f(a=-(1 + 2))]", "[f(a=(1, 2)[5] + 1)]", "[1 + 1]", "[f(a=b.c + 1)]",
    ]
    for text in texts:
        try:
            theirs: object = default_decode_ast_prompting(text)
        except Exception:  # noqa: BLE001 - any failure is BFCL's decode error
            theirs = "decode error"
        try:
            ours: object = decode_python_prompting(text)
        except Exception:  # noqa: BLE001
            ours = "decode error"
        assert ours == theirs, text
    assert decode_python_prompting("[f(a=-1j + 1)]") == [{"f": {"a": 1 - 1j}}]


def test_arithmetic_refuses_what_would_be_large_before_building_it() -> None:
    import ast

    def value(text: str) -> object:
        return evaluate(ast.parse(text, mode="eval").body)

    # BFCL's eval would build each of these (a 1 GB string, hours of CPU, a 1 GB int, a 1 GB padding)
    for text in ["'a' * 10**9", "10**9 * [0]", "2 ** 10**10", "1 << 10**10", "'%999999999d' % 1", "'%*d' % (10**9, 1)",
                 f"'a' * {MAX_ITEMS} + 'b'", f"2 ** {MAX_INT_BITS} * 2"]:
        with pytest.raises(Refused, match="exceeds"):
            value(text)
    # ... and small cases of the same operations are fine, as are the cheap huge exponents of 0, 1, -1
    assert value("'ab' * 3") == "ababab" and value("2 ** 100") == 1 << 100 and value("1 ** 10**30") == 1
    assert value("(-1) ** (10**30 + 1)") == -1 and value("0 ** 10**30") == 0 and value("'%5d' % 1") == "    1"
    for text in ["x + 1", "len('a') + 1", "f'{1}' + 'x'", "[y for y in []] + []", "(1 is 1) + 1", "{**{}} | {}"]:
        with pytest.raises(Refused, match="not literal arithmetic"):
            value(text)


def test_cli_resumes_and_refuses_a_different_run_in_the_same_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bfcl", "--model", "replay", "--categories", "simple", "multi_turn_miss_func", "--limit", "4", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "report.json").read_text())
    assert first["categories"]["simple"]["correct_count"] == 4 and first["categories"]["multi_turn_miss_func"]["correct_count"] == 4
    result = tmp_path / "result" / "BFCL_v3_simple_result.json"
    lines = result.read_text().splitlines()
    result.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])  # two rows lost, one torn mid-line
    assert main(argv) == 0
    assert len(result.read_text().splitlines()) == 4
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["categories"] == first["categories"] and again["run"]["done"] == 2 and again["run"]["skipped"] == 6
    # The resumed run's wall time is both invocations' time, each recorded with its host.
    segments = again["run"]["segments"]
    assert [s["entries_done"] for s in segments] == [8, 2] and again["run"]["invocations"] == 2
    assert again["wall_s"] == pytest.approx(sum(s["wall_s"] for s in segments), abs=0.01) and segments[0]["machine"]["nproc"]
    with pytest.raises(UserInputError, match="different mode"):
        main([*argv, "--mode", "fc"])
    # --report-only scores what is stored (a partial run) without asking the model or adding a segment
    result.write_text("\n".join(lines[:3]) + "\n")
    assert main([*argv, "--report-only"]) == 0
    partial = json.loads((tmp_path / "report.json").read_text())
    assert partial["entries_scored"] == 7 and partial["entries_in_dataset"] == 8 and partial["run"]["report_only"]
    assert partial["categories"]["simple"]["total_count"] == 3 and partial["run"]["invocations"] == 2


async def test_a_truncated_answer_reports_the_tokens_it_really_used() -> None:
    """A reply cut at max_tokens is still the model's answer; its token counts come from the reply's usage."""
    from bench.bfcl.runner import EntryRunner
    from engine import metrics
    from engine.sim_server import serve_sim
    from engine.teachers import make_teacher

    entry = load_dataset("v3", ["simple"], limit=1).entries[0]
    async with serve_sim(script=["length"]) as url:
        teacher = make_teacher(f"openai:sim@{url}", max_retries=0, max_bad_answer_retries=0)
        runner = EntryRunner(teacher, "prompt", max_tokens=1024)
        metrics.reset_metrics()
        try:
            row = await runner.single_turn(entry)
        finally:
            runner.close()
            await teacher.aclose()
    m = metrics.METRICS
    assert m.requests == 1 and m.prompt_tokens > 0 and 0 < m.completion_tokens < 1024
    assert (row["input_token_count"], row["output_token_count"]) == (m.prompt_tokens, m.completion_tokens)


def test_volume_counts_every_entry_of_a_category_with_the_models_template() -> None:
    from bench.bfcl.volume import volume

    result = volume("v3", ["javascript", "multi_turn_base"], "prompt", "smollm2", max_model_len=8192, answer_tokens=256)
    js, mt = result["categories"]["javascript"], result["categories"]["multi_turn_base"]
    assert js["entries"] == 50 and js["user_turns"] == 50 and not js["multi_turn"]
    # BFCL's prompt-mode system prompt with one JavaScript function doc: hundreds of tokens
    assert 200 < js["mean_prompt_tokens"] < 2000 and js["too_long"] == 0
    # multi-turn entries carry the docs of their API classes: thousands of tokens, one past the context
    assert mt["multi_turn"] and mt["user_turns"] > mt["entries"] and mt["mean_prompt_tokens"] > 4000 and mt["too_long"] >= 1
