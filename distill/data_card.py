"""The data card of a run: what was STORED, beside what was asked for.

Read from the run folder (so it describes the data a trainer will see, whatever earlier runs
or crashes did): the stored mixture of positives and pairs per stratum against the target,
turns and calls per positive per kind, how parallel calls were made, token lengths and how
many examples a training length would cut, and (from the stratified source) the yield of
each stratum with where its paths died.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.strata import stratum_of_id
from engine.records import Trajectory

Lengths = Callable[[Trajectory], int]


def _kind(stratum: str) -> str:
    return stratum.split(".", 1)[0]


def _path_id(episode_id: str) -> str:
    return episode_id.removeprefix("ep-")


def _shares(counts: Counter, total: int) -> dict[str, float]:
    return {k: round(100 * n / total, 2) for k, n in sorted(counts.items())} if total else {}


def token_counter(tokenizer: str, mode: str = "prompt") -> Lengths | None:
    """Tokens of a trajectory as trained: rendered in ``mode`` with the tokenizer's chat template
    (``smollm2`` = the embedded model, else a local Hugging Face folder); None without transformers."""
    import importlib.util

    if not tokenizer or importlib.util.find_spec("transformers") is None:
        return None
    from transformers import AutoTokenizer

    from engine.models import smollm2_checkpoint
    from engine.render import render
    from train.data import template_messages

    tok = AutoTokenizer.from_pretrained(str(smollm2_checkpoint()) if tokenizer == "smollm2" else tokenizer)

    def count(traj: Trajectory) -> int:
        segment = render(traj, mode)[-1]  # the last segment holds the whole conversation
        tools = [t.to_openai_tool() for t in segment.tools] or None
        text = tok.apply_chat_template(template_messages(segment.messages), tools=tools, tokenize=False)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return count


def trajectory_shape(traj: Trajectory) -> dict[str, int]:
    """User turns, calls, and the largest number of calls made together in one assistant message."""
    turns = sum(m.role == "user" for m in traj.messages)
    per_message = [len(m.tool_calls) for m in traj.messages if m.role == "assistant" and m.tool_calls]
    distinct = max((len({(c.name, repr(sorted(c.arguments.items()))) for c in m.tool_calls})
                    for m in traj.messages if m.tool_calls), default=0)
    return {"turns": turns, "calls": sum(per_message), "max_together": max(per_message, default=0),
            "max_distinct_together": distinct}


def data_card(run_dir: str | Path, targets: dict[str, int], *, lengths: Lengths | None = None, max_length: int = 2048,
              strata: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    from engine.store import read_records

    positives: Counter = Counter()
    pairs: Counter = Counter()
    shapes: dict[str, list[dict[str, int]]] = defaultdict(list)
    tokens: list[int] = []
    for traj in read_records(run_dir, "trajectories"):
        if traj.polarity != "positive":
            continue
        stratum = stratum_of_id(_path_id(traj.episode_id))
        positives[stratum] += 1
        shapes[_kind(stratum)].append(trajectory_shape(traj))
        if lengths is not None:
            tokens.append(lengths(traj))
            shapes[_kind(stratum)][-1]["tokens"] = tokens[-1]
    for pair in read_records(run_dir, "pairs"):
        pairs[stratum_of_id(_path_id(pair.episode_id))] += 1
    n_pos, n_pairs, n_target = sum(positives.values()), sum(pairs.values()), sum(targets.values())
    card: dict[str, Any] = {
        "positives": n_pos,
        "pairs": n_pairs,
        "mixture_pct": {
            s: {"target": round(100 * t / n_target, 2) if n_target else 0.0,
                "positives": round(100 * positives[s] / n_pos, 2) if n_pos else 0.0,
                "pairs": round(100 * pairs[s] / n_pairs, 2) if n_pairs else 0.0}
            for s, t in targets.items()},
        "kinds": {},
    }
    for kind, rows in sorted(shapes.items()):
        card["kinds"][kind] = {
            "positives": len(rows),
            "avg_turns": round(statistics.mean(r["turns"] for r in rows), 2),
            "avg_calls": round(statistics.mean(r["calls"] for r in rows), 2),
            "with_distinct_calls_together_pct": round(100 * sum(r["max_distinct_together"] >= 2 for r in rows) / len(rows), 1),
        }
        if tokens:
            card["kinds"][kind]["tokens_mean"] = round(statistics.mean(r["tokens"] for r in rows))
            card["kinds"][kind]["over_max_length_pct"] = round(100 * sum(r["tokens"] > max_length for r in rows) / len(rows), 1)
    if tokens:
        qs = statistics.quantiles(tokens, n=20) if len(tokens) > 1 else [tokens[0]] * 19
        card["tokens"] = {"count": len(tokens), "mean": round(statistics.mean(tokens)), "p50": round(qs[9]),
                          "p95": round(qs[18]), "max": max(tokens), "max_length": max_length,
                          "over_max_length_pct": round(100 * sum(t > max_length for t in tokens) / len(tokens), 2),
                          "over_pct": {n: round(100 * sum(t > n for t in tokens) / len(tokens), 2) for n in (2048, 4096, 8192)}}
    if strata is not None:
        card["strata"] = strata
        card["unfilled"] = sorted(s for s, row in strata.items() if not row["filled"])
    return card


def print_card(card: dict[str, Any], title: str = "data card") -> None:
    """The card as two tables: the stored mixture per stratum beside its target and yield, then the
    shape of the positives per kind (for the final table of `magnet generate` and `magnet inspect`)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.width = max(console.width, 112)  # a stratum per line, also when the output is not a terminal
    strata = card.get("strata", {})
    table = Table(title=f"{title}: {card['positives']} positives, {card['pairs']} pairs stored")
    for col in ("stratum", "target %", "positives %", "pairs %", "drawn", "yield", "died at"):
        table.add_column(col, justify="left" if col in ("stratum", "died at") else "right", no_wrap=col == "stratum")
    for s, m in card["mixture_pct"].items():
        row = strata.get(s, {})
        died = ", ".join(f"{k} {v}" for k, v in sorted(row.get("died", {}).items()))
        name = s if row.get("filled", True) else f"{s} (unfilled)"
        table.add_row(name, f"{m['target']:.1f}", f"{m['positives']:.1f}", f"{m['pairs']:.1f}", str(row.get("drawn", "")),
                      "" if row.get("yield") is None else f"{row['yield']:.0%}", died)
    console.print(table)
    shape = Table(title="per positive, by kind")
    for col in ("kind", "positives", "turns", "calls", "calls together"):
        shape.add_column(col, justify="left" if col == "kind" else "right")
    for kind, k in card["kinds"].items():
        shape.add_row(kind, str(k["positives"]), f"{k['avg_turns']:.2f}", f"{k['avg_calls']:.2f}",
                      f"{k['with_distinct_calls_together_pct']:.0f}%")
    console.print(shape)
    if "tokens" in card:
        t = card["tokens"]
        over = ", ".join(f"{pct}% over {n}" for n, pct in t["over_pct"].items())
        console.print(f"tokens per positive (prompt mode): mean {t['mean']}, p50 {t['p50']}, p95 {t['p95']}, max {t['max']}; {over}")
