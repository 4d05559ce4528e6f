"""Score model outputs with BFCL's own code: its decoders, its checkers, its per-category runners.

Each category goes through the very function ``bfcl evaluate`` uses for it
(``ast_file_runner``, ``relevance_file_runner`` or ``multi_turn_runner`` from
``bfcl_eval.eval_checker.eval_runner``), fed with the model outputs in BFCL's result format
and a registered handler whose ``decode_ast`` / ``decode_execute`` are BFCL's
``OpenAIHandler`` ones: ``default_decode_ast_prompting`` / ``default_decode_execute_prompting``
in prompt mode, the JSON tool-call conversion in FC mode. The per-entry verdicts are read back
from the score file the runner writes.

Two places of BFCL's pipeline run Python's ``eval``: the prompt decoder evaluates arithmetic
(``BinOp``) argument values, and the multi-turn checker evaluates each decoded call string to
execute it on the API instances. Model text must never be executed, so the handler here
(1) decodes prompt-mode Python answers with BFCL's own code (``resolve_ast_call``) on a syntax
tree in which every ``BinOp`` BFCL would ``eval`` was replaced by its value from
``arithmetic.evaluate`` (literal arithmetic only; anything else is a decode error), and
(2) hands the checker only call strings that parse as calls of a public method of BFCL's API
classes with literal (or nested such call) arguments; any other call string is replaced by
``REFUSED_CALL``, a call of a name that exists nowhere, which BFCL's executor reports as an
execution error without touching state -- the same outcome it gives any unknown function.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import inspect
import uuid
from pathlib import Path
from typing import Any

from bench.bfcl import arithmetic
from bench.bfcl.data import Dataset, ModelConfig, category_of, ensure_bfcl, is_multi_turn, is_relevance, language_of, model_config_mapping

REFUSED_CALL = "magnet_refused_call()"


@functools.cache
def api_classes() -> dict[str, type]:
    """BFCL's eight executable multi-turn API classes, by name."""
    ensure_bfcl()
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import CLASS_FILE_PATH_MAPPING

    return {name: getattr(importlib.import_module(module), name) for name, module in CLASS_FILE_PATH_MAPPING.items()}


@functools.cache
def api_methods() -> frozenset[str]:
    """Every public method name of the API classes: the only names a checked call may use."""
    return frozenset(
        name for cls in api_classes().values() for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")
    )


# -- guards ----------------------------------------------------------------------------------


def _fold(node: ast.AST) -> ast.AST:
    """Replace each ``BinOp`` that BFCL's ``resolve_ast_by_type`` would ``eval`` by its value.

    Follows that function's recursion exactly: keyword values of calls, list and tuple elements,
    dict keys and values. It never looks inside what BFCL keeps as text or rejects (positional
    arguments, a keyword-less call, which it unparses; a UnaryOp, whose operand it reads as a
    constant), so those are left as BFCL leaves them."""
    if isinstance(node, ast.BinOp):
        return ast.Constant(value=arithmetic.evaluate(node))
    if isinstance(node, ast.Lambda):
        # BFCL's lambda branch evals ``value.body[0]``, which fails on any lambda: a decode error either way
        raise arithmetic.Refused(f"refused: {ast.unparse(node)[:80]!r} is a lambda")
    if isinstance(node, ast.Call):
        for keyword in node.keywords:
            keyword.value = _fold(keyword.value)
    elif isinstance(node, (ast.List, ast.Tuple)):
        node.elts = [_fold(e) for e in node.elts]
    elif isinstance(node, ast.Dict):
        node.keys = [k if k is None else _fold(k) for k in node.keys]
        node.values = [_fold(v) for v in node.values]
    return node


def decode_python_prompting(result: Any) -> list[dict[str, Any]]:
    """BFCL's ``default_decode_ast_prompting`` for Python (the same statements, the same
    exceptions) with ``arithmetic.evaluate`` in place of its ``eval``."""
    from bfcl_eval.model_handler.utils import resolve_ast_call

    result = result.strip("`\n ")
    if not result.startswith("["):
        result = "[" + result
    if not result.endswith("]"):
        result = result + "]"
    parsed = ast.parse(result.strip("[]'"), mode="eval")
    if isinstance(parsed.body, ast.Call):
        return [resolve_ast_call(_fold(parsed.body))]
    extracted = []
    for elem in parsed.body.elts:  # AttributeError when the body is no list, as in BFCL
        if not isinstance(elem, ast.Call):
            raise AssertionError  # BFCL asserts it (a bare AssertionError)
        extracted.append(resolve_ast_call(_fold(elem)))
    return extracted


def _literal_or_api_call(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        return (
            isinstance(node.func, ast.Name)
            and node.func.id in api_methods()
            and all(_literal_or_api_call(a) for a in node.args)
            and all(k.arg is not None and _literal_or_api_call(k.value) for k in node.keywords)
        )
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def checked_call(call: str) -> ast.Call | None:
    """The parsed call if it only invokes API methods on literal arguments, else None."""
    try:
        tree = ast.parse(call, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None
    return tree.body if isinstance(tree.body, ast.Call) and _literal_or_api_call(tree.body) else None


# -- the handler BFCL's runners call -----------------------------------------------------------


def _handler_class() -> type:
    ensure_bfcl()
    from bfcl_eval.model_handler.api_inference.openai import OpenAIHandler
    from bfcl_eval.model_handler.base_handler import BaseHandler
    from bfcl_eval.model_handler.model_style import ModelStyle
    from bfcl_eval.model_handler.utils import decoded_output_to_execution_list

    class GuardedOpenAIHandler(OpenAIHandler):
        """BFCL's OpenAI handler (prompt or FC decoding by ``is_fc_model``) without its API client."""

        def __init__(self, model_name: str, temperature: float = 0.0) -> None:
            BaseHandler.__init__(self, model_name, temperature)
            self.model_style = ModelStyle.OpenAI
            self.is_fc_model = model_config_mapping()[model_name].is_fc_model

        def decode_ast(self, result, language="Python"):
            if not self.is_fc_model and language == "Python":
                return decode_python_prompting(result)
            return super().decode_ast(result, language)

        def decode_execute(self, result):
            # BFCL's default_decode_execute_prompting is its Python AST decode turned into call strings
            calls = decoded_output_to_execution_list(decode_python_prompting(result)) if not self.is_fc_model else super().decode_execute(result)
            return [c if checked_call(c) is not None else REFUSED_CALL for c in calls]

    return GuardedOpenAIHandler


@functools.cache
def handler_class() -> type:
    return _handler_class()


def register_model(mode: str, label: str = "magnet") -> str:
    """A fresh model name for one scoring run (BFCL's multi-turn checker caches API instances
    by model name and entry id), registered in the model_config stand-in. No underscores: BFCL
    turns ``_`` into ``/`` when it looks a result folder's model up."""
    fc = mode == "fc"
    name = f"{label.replace('_', '-')}-{uuid.uuid4().hex[:10]}" + ("-FC" if fc else "")
    model_config_mapping()[name] = ModelConfig(
        model_name=name, display_name=f"{label} ({'FC' if fc else 'Prompt'})", url="", org="magnet", license="",
        model_handler=handler_class(), is_fc_model=fc,
        # OpenAI-style tool names cannot hold "." (BFCL's convert_to_tool turns it into "_"), so
        # in FC mode the AST checker compares against the ground truth's names converted the same way.
        underscore_to_dot=fc,
    )
    return name


def forget_model(name: str) -> None:
    """Drop the model's cached API instances from BFCL's executor module (they are only kept
    for the scoring run that made them) and its registration."""
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    prefix = name.replace("-", "_").replace(".", "_").replace("/", "_") + "_"
    for key in [k for k in vars(multi_turn_utils) if k.startswith(prefix)]:
        del vars(multi_turn_utils)[key]
    model_config_mapping().pop(name, None)


# -- scoring ---------------------------------------------------------------------------------


def score_category(
    category: str, results: list[dict[str, Any]], dataset: Dataset, model_name: str, score_dir: Path
) -> tuple[float, int, dict[str, dict[str, Any]]]:
    """Run BFCL's runner for one category over ``results`` (BFCL result rows, any order).

    Returns (accuracy, count, failures by entry id as BFCL's score file records them)."""
    from bfcl_eval.constants.category_mapping import VERSION_PREFIX
    from bfcl_eval.eval_checker.eval_runner import ast_file_runner, multi_turn_runner, relevance_file_runner
    from bfcl_eval.utils import load_file, sort_key

    rows = sorted(results, key=sort_key)
    by_id = {e["id"]: e for e in dataset.entries}
    prompt = [copy.deepcopy(by_id[r["id"]]) for r in rows]
    handler = model_config_mapping()[model_name].model_handler(model_name, temperature=0)
    if is_relevance(category):
        accuracy, count = relevance_file_runner(handler, rows, prompt, model_name, category, score_dir)
    else:
        answers = [{"id": r["id"], "ground_truth": dataset.ground_truth[r["id"]]} for r in rows]
        if is_multi_turn(category):
            accuracy, count = multi_turn_runner(handler, rows, prompt, answers, model_name, category, score_dir)
        else:
            accuracy, count = ast_file_runner(
                handler, rows, prompt, answers, language_of(category), category, model_name, score_dir
            )
    failures: dict[str, dict[str, Any]] = {}
    for row in load_file(score_dir / model_name / f"{VERSION_PREFIX}_{category}_score.json")[1:]:
        failures.setdefault(row["id"], row)  # BFCL may log two rows for one broken multi-turn result
    return accuracy, count, failures


def irrelevance_turns(rows: list[dict[str, Any]], dataset: Dataset, model_name: str) -> dict[str, dict[str, Any]]:
    """BFCL's ``multi_turn_irrelevance_checker`` per miss_func / miss_param entry: did the model
    stay silent on the turn it could not complete? bfcl-eval 2025.6.8 leaves this check out of
    the score (commented out in its runner), so it is reported beside the score, not in it."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_irrelevance_checker
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import is_empty_execute_response

    handler = model_config_mapping()[model_name].model_handler(model_name, temperature=0)
    out = {}
    for row in rows:
        truth = dataset.ground_truth[row["id"]]
        if not isinstance(row["result"], list) or len(row["result"]) != len(truth):
            continue  # BFCL's runner already failed it (inference error or force-quit)
        decoded = []
        for turn in row["result"]:
            steps = []
            for step in turn:
                try:
                    calls = handler.decode_execute(step)
                except Exception:  # noqa: BLE001 - as BFCL's runner: an undecodable step holds no call
                    continue
                if not is_empty_execute_response(calls):
                    steps.append(calls)
            decoded.append(steps)
        verdict = multi_turn_irrelevance_checker(decoded, truth)
        out[row["id"]] = {"valid": verdict["valid"], "error_type": verdict.get("error_type")}
    return out


def contain_irrelevance(category: str) -> bool:
    return "miss_func" in category or "miss_param" in category


def score_results(
    results: list[dict[str, Any]], dataset: Dataset, mode: str, score_dir: Path, *, label: str = "magnet"
) -> dict[str, Any]:
    """Score every category present in ``results``: per-category accuracy and per-entry verdicts."""
    model_name = register_model(mode, label)
    try:
        by_category: dict[str, list[dict[str, Any]]] = {}
        for row in results:
            by_category.setdefault(category_of(row["id"]), []).append(row)
        categories: dict[str, dict[str, Any]] = {}
        entries: dict[str, dict[str, Any]] = {}
        for category in [c for c in dataset.categories if c in by_category]:
            accuracy, count, failures = score_category(category, by_category[category], dataset, model_name, score_dir)
            categories[category] = {"accuracy": accuracy, "total_count": count, "correct_count": round(accuracy * count)}
            silent = irrelevance_turns(by_category[category], dataset, model_name) if contain_irrelevance(category) else {}
            if silent:
                categories[category]["irrelevance_checker_correct"] = sum(v["valid"] for v in silent.values())
            for row in by_category[category]:
                failure = failures.get(row["id"])
                entries[row["id"]] = {
                    "valid": failure is None,
                    "error": None if failure is None else failure.get("error"),
                    "error_type": None if failure is None else failure.get("error_type") or (failure.get("error") or {}).get("error_type"),
                }
                if row["id"] in silent:
                    entries[row["id"]]["irrelevance_check"] = silent[row["id"]]
        return {"model_name": model_name, "categories": categories, "entries": entries}
    finally:
        forget_model(model_name)
