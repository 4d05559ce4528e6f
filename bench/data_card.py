"""`python -m bench.data_card`: the stored data of a simulator run against issue 10's targets.

Runs `magnet generate --teacher sim` (the deterministic simulator: this measures what the
pipeline stores and how, never the quality of a real teacher) and checks the data card:
stored positive mixture within 3 points of the target per stratum, every multi-turn variant
within 5 points of its share of multi-turn, multi-turn positives of
at least 4 turns and 8 calls on average, distinct calls in one message in every parallel
positive, no hint text in any stored message, at most 2% of positives over 2,048 tokens.
Writes bench/results/data_card.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results_io import describe, machine, write_results

TARGETS = {"mixture_points": 3.0, "flag_points": 5.0, "multi_turn_turns": 4.0, "multi_turn_calls": 8.0, "over_2048_pct": 2.0}


def hint_leaks(run_dir: Path) -> int:
    from distill.verify import _HINT_WORD
    from engine.store import read_records

    return sum(1 for t in read_records(run_dir, "trajectories") for m in t.messages
               if _HINT_WORD.search(m.content or "") or "[Hint]" in (m.content or ""))


def parallel_together(run_dir: Path) -> tuple[int, int]:
    """(parallel positives with >= 2 distinct calls in one message, parallel positives)."""
    from distill.data_card import trajectory_shape
    from engine.store import read_records

    ok = total = 0
    for t in read_records(run_dir, "trajectories"):
        if t.polarity == "positive" and t.episode_id.startswith(("ep-parallel-", "ep-parallel_multiple-")):
            total += 1
            ok += trajectory_shape(t)["max_distinct_together"] >= 2
    return ok, total


def check(card: dict[str, Any], leaks: int, together: tuple[int, int]) -> dict[str, Any]:
    worst = max((abs(m["positives"] - m["target"]) for m in card["mixture_pct"].values()), default=0.0)
    variants = {s: m for s, m in card["mixture_pct"].items() if s.startswith("multi_turn.")}
    got, want = sum(m["positives"] for m in variants.values()), sum(m["target"] for m in variants.values())
    flag_worst = max((abs(100 * m["positives"] / got - 100 * m["target"] / want) for m in variants.values()), default=0.0) if got else 100.0
    mt = card["kinds"].get("multi_turn", {})
    tokens = card.get("tokens", {})
    return {
        "mixture_worst_points": round(worst, 2), "mixture_ok": worst <= TARGETS["mixture_points"],
        "multi_turn_flag_worst_points": round(flag_worst, 2), "flags_ok": flag_worst <= TARGETS["flag_points"],
        "multi_turn_turns": mt.get("avg_turns"), "multi_turn_calls": mt.get("avg_calls"),
        "multi_turn_ok": bool(mt) and mt["avg_turns"] >= TARGETS["multi_turn_turns"] and mt["avg_calls"] >= TARGETS["multi_turn_calls"],
        "parallel_together": f"{together[0]}/{together[1]}", "parallel_ok": together[1] > 0 and together[0] == together[1],
        "hint_leaks": leaks, "hint_ok": leaks == 0,
        "over_2048_pct": tokens.get("over_max_length_pct"),
        "length_ok": tokens.get("over_max_length_pct", 100.0) <= TARGETS["over_2048_pct"],
    }


def markdown(info: dict[str, Any], card: dict[str, Any], verdict: dict[str, Any], wall_s: float, paths: int) -> str:
    lines = [f"# Data card: `magnet generate --teacher sim --paths {paths}`", "",
             "The simulator teacher (deterministic, engine/teachers/sim.py): this measures the pipeline's stored "
             "data, never a real teacher's quality.", "", f"Machine: {describe(info)}. Wall time {wall_s:.0f} s.", "",
             "| stratum | target % | positives % | pairs % | drawn | yield | died (stage: paths) |", "|---|---|---|---|---|---|---|"]
    for s, m in card["mixture_pct"].items():
        row = card.get("strata", {}).get(s, {})
        died = ", ".join(f"{k}: {v}" for k, v in sorted(row.get("died", {}).items()))
        lines.append(f"| {s} | {m['target']:.1f} | {m['positives']:.1f} | {m['pairs']:.1f} | {row.get('drawn', '')} | "
                     f"{row.get('yield', '')} | {died} |")
    lines += ["", "| kind | positives | avg turns | avg calls | distinct calls in one message | mean tokens | over 2,048 |",
              "|---|---|---|---|---|---|---|"]
    for kind, k in card["kinds"].items():
        lines.append(f"| {kind} | {k['positives']} | {k['avg_turns']} | {k['avg_calls']} | {k['with_distinct_calls_together_pct']}% | "
                     f"{k.get('tokens_mean', '')} | {k.get('over_max_length_pct', '')}% |")
    t = card.get("tokens")
    if t:
        over = ", ".join(f"{pct}% over {int(n):,}" for n, pct in t["over_pct"].items())
        lines += ["", f"Tokens per positive (prompt mode, SmolLM2 template): mean {t['mean']}, p50 {t['p50']}, p95 {t['p95']}, "
                      f"max {t['max']}; {over}."]
    lines += ["", "| target | measured | met |", "|---|---|---|",
              f"| stored mixture within 3 points per stratum | worst {verdict['mixture_worst_points']} points | {verdict['mixture_ok']} |",
              f"| every multi-turn variant within 5 points of its share of multi-turn | worst {verdict['multi_turn_flag_worst_points']} points | "
              f"{verdict['flags_ok']} |",
              f"| multi-turn >= 4 turns, >= 8 calls | {verdict['multi_turn_turns']} turns, {verdict['multi_turn_calls']} calls | "
              f"{verdict['multi_turn_ok']} |",
              f"| every parallel positive has >= 2 distinct calls in one message | {verdict['parallel_together']} | {verdict['parallel_ok']} |",
              f"| 0 hint leakage | {verdict['hint_leaks']} | {verdict['hint_ok']} |",
              f"| <= 2% over 2,048 tokens | {verdict['over_2048_pct']}% | {verdict['length_ok']} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data_card", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, default=300, help="positives to store (issue 10 measures 300)")
    parser.add_argument("--out", help="run folder to write (default: a temporary folder)")
    args = parser.parse_args(argv)
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.out or Path(tmp) / "run")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--teacher", "sim", "--out", str(run_dir),
                        "--paths", str(args.paths), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
        summary = json.loads((run_dir / "generate_summary.json").read_text())
        card = summary["data_card"]
        verdict = check(card, hint_leaks(run_dir), parallel_together(run_dir))
    write_results("data_card", {"machine": info, "paths": args.paths, "wall_s": round(wall, 1), "card": card,
                                "verdict": verdict}, markdown(info, card, verdict, wall, args.paths))
    print(json.dumps(verdict, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
