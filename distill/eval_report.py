"""The `magnet eval paths` report: scores per path kind and per toolkit, failures with their first wrong step.

Built from what the run folder stores (one trajectory per evaluated episode, its verification
holding the grade; dead letters for episodes the model's server rejected), so an interrupted or
resumed evaluation reports exactly what is on disk. An episode that spans several toolkits
counts in each of their rows. ``by_function`` counts, per function an episode calls, the episodes
that test it and those whose first wrong step involves it (`magnet improve` tilts generation
toward the functions failed most often). ``accuracy`` holds the model to every check of
``distill.eval_grade``; ``state_accuracy`` drops the grounding check (a right guess passes).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from distill.eval_config import STRATA
from distill.eval_grade import REASONS, expected_text, said, turn_spans
from distill.strata import stratum_of_id
from engine.records import DeadLetter, Episode, Trajectory

_ERROR_LINE = re.compile(r"turn (-?\d+): (\w+): (.*)", re.DOTALL)
MARKDOWN_FAILURES = 40  # the JSON report lists them all


def turn_functions(episode: Episode, turn: int) -> list[str]:
    """The functions a turn is about: its reference calls; a miss_func or irrelevance turn's withheld
    function; a miss_param turn's, whose calls come in the restoring turn after it."""
    if not 0 <= turn < len(episode.turns):
        return []
    t = episode.turns[turn]
    if t.label == "miss_param" and not t.calls:
        return turn_functions(episode, turn + 1)
    names = [c.name for c in t.calls] + (list(t.missing) if t.label == "miss_func" else [])
    return sorted(set(names))


def episode_row(episode: Episode, result: Trajectory | DeadLetter) -> dict[str, Any]:
    """One evaluated episode: pass, or its reason and first wrong step (turn, expected, got, and
    ``step_functions``, the functions that step is about)."""
    functions = sorted({f for h in range(len(episode.turns)) for f in turn_functions(episode, h)})
    row: dict[str, Any] = {"episode": episode.id, "kind": stratum_of_id(episode.path_id), "toolkits": list(episode.toolkits),
                           "functions": functions}
    if isinstance(result, DeadLetter):
        # The server refused the request (a context limit, say): no step of the model's was wrong.
        return row | {"passed": False, "reason": "model_error", "turn": None, "detail": result.error[:300], "expected": "", "got": "",
                      "step_functions": []}
    check = result.verification
    if check is None or check.ok:
        return row | {"passed": check is not None}
    m = _ERROR_LINE.match(check.errors[0] if check.errors else "")
    turn, reason, detail = (int(m.group(1)), m.group(2), m.group(3)) if m else (None, "stopped", "")
    spans = turn_spans(result.messages)
    got = said(spans[turn]) if turn is not None and 0 <= turn < len(spans) else ""
    return row | {"passed": False, "reason": reason, "turn": turn, "detail": detail,
                  "expected": expected_text(episode, turn) if turn is not None else "", "got": got,
                  "step_functions": turn_functions(episode, turn) if turn is not None else []}


def _score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    passed = sum(r["passed"] for r in rows)
    lenient = sum(r["passed"] or r.get("reason") == "ungrounded" for r in rows)
    reasons = Counter(r["reason"] for r in rows if not r["passed"])
    return {"n": n, "passed": passed, "accuracy": round(passed / n, 4) if n else None,
            "state_accuracy": round(lenient / n, 4) if n else None, "reasons": dict(reasons.most_common())}


def by_function(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Function -> episodes that call it (``n``) and episodes whose first wrong step is about it (``failed``)."""
    tested = Counter(f for r in rows for f in r.get("functions", ()))
    failed = Counter(f for r in rows if not r["passed"] for f in r.get("step_functions", ()))
    return {f: {"n": tested[f], "failed": failed[f]} for f in sorted(tested)}


def _kind_order(kind: str) -> tuple[int, str]:
    return (STRATA.index(kind) if kind in STRATA else len(STRATA), kind)


def build_report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    by_toolkit: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
        for tk in r["toolkits"]:
            by_toolkit.setdefault(tk, []).append(r)
    kinds = {k: _score(by_kind[k]) for k in sorted(by_kind, key=_kind_order)}
    accuracies = [s["accuracy"] for s in kinds.values()]
    failures = sorted((r for r in rows if not r["passed"]), key=lambda r: (_kind_order(r["kind"]), r["episode"]))
    return {**meta, "overall": _score(rows) | {
                "accuracy_macro": round(sum(accuracies) / len(accuracies), 4) if accuracies else None},
            "by_kind": kinds, "by_toolkit": {tk: _score(by_toolkit[tk]) for tk in sorted(by_toolkit)}, "by_function": by_function(rows),
            "reasons": dict(REASONS), "failures": failures}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _table(title: str, scores: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"## {title}", "", f"| {title.split()[-1]} | episodes | passed | accuracy | without grounding | failures by reason |",
             "|---|---:|---:|---:|---:|---|"]
    for name, s in scores.items():
        reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items())
        lines.append(f"| {name} | {s['n']} | {s['passed']} | {pct(s['accuracy'])} | {pct(s['state_accuracy'])} | {reasons} |")
    return lines + [""]


def to_markdown(report: dict[str, Any]) -> str:
    o = report["overall"]
    short = ", ".join(f"{k} {n}" for k, n in report["short_kinds"].items())
    lines = [f"# magnet eval paths: {report['model']} ({report['mode']} mode)", "",
             (f"- test set: `{report['testset']}`, authored by `{report['author']}` from path seed {report['path_seed']:,} "
              f"(seed space offset {report['seed_offset']:,}); toolkits: {', '.join(report['toolkits'])}"),
             f"- episodes: {report['episodes']} in the test set, {o['n']} evaluated, {report['pending']} pending"]
    if short:
        lines.append(f"- short of {report['per_kind']} episodes per kind (the author translated fewer within --draw-factor): {short}")
    lines += [(f"- accuracy: {pct(o['accuracy'])} ({o['passed']}/{o['n']}), macro over kinds {pct(o['accuracy_macro'])}, "
               f"without the grounding check {pct(o['state_accuracy'])}"), ""]
    lines += _table("By path kind", report["by_kind"])
    lines += _table("By toolkit", report["by_toolkit"])
    used = Counter(r["reason"] for r in report["failures"])
    if used:
        lines += ["## Failure reasons", "", "| reason | episodes | meaning |", "|---|---:|---|"]
        lines += [f"| {k} | {n} | {_cell(REASONS.get(k, ''))} |" for k, n in used.most_common()] + [""]
        shown = report["failures"][:MARKDOWN_FAILURES]
        lines += [f"## Failures: first wrong step ({len(shown)} of {len(report['failures'])}; all in report.json)", "",
                  "| episode | kind | turn | reason | detail | expected | got |", "|---|---|---:|---|---|---|---|"]
        lines += [f"| {_cell(r['episode'])} | {r['kind']} | {_cell(r['turn'])} | {r['reason']} | {_cell(r['detail'])} | "
                  f"{_cell(r['expected'])} | {_cell(r['got'])} |" for r in shown]
    return "\n".join(lines) + "\n"
