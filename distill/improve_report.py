"""The round report of `magnet improve`: rounds.json (the layout `magnet view` charts), report.md and rounds.png.

Written from the stage markers (and each round's target.json) alone after every stage, so a resumed
loop rewrites the same report and a loop killed mid-way still has one for the rounds it finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROUNDS_JSON, REPORT_MD, PLOT_PNG = "rounds.json", "report.md", "rounds.png"
TILT_SHOWN = 5  # functions per round in report.md; target.json keeps the full weights


def teacher_label(spec: str) -> str:
    """How a teacher is named in reports: the simulator is always called so (never a quality claim)."""
    return f"simulator ({spec})" if spec == "sim" or spec.startswith("sim:") else spec


def write_report(out: Path, rounds: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    from engine.store import write_json_atomic

    chosen = [r for r in rounds if r.get("chosen")]
    doc = {**meta, "rounds": rounds, "best_checkpoint": chosen[-1]["checkpoint"] if chosen else None}
    tilt = function_tilt(out, rounds)
    if tilt:
        doc["function_tilt"] = tilt
    write_json_atomic(out / ROUNDS_JSON, doc)
    (out / REPORT_MD).write_text(to_markdown(doc))
    plot(rounds, out / PLOT_PNG)
    return doc


def function_tilt(out: Path, rounds: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Round -> the most weighted functions of its generation (target.json's ``top_functions``)."""
    tilt = {}
    for r in rounds:
        path = out / f"round-{r['round']}" / "target.json"
        if isinstance(r["round"], int) and path.is_file():
            top = json.loads(path.read_text()).get("top_functions") or []
            if top:
                tilt[str(r["round"])] = top
    return tilt


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) else "-"


def to_markdown(doc: dict[str, Any]) -> str:
    rounds = doc["rounds"]
    labels = [str(r["round"]) for r in rounds]
    cats = list(dict.fromkeys(c for r in rounds for c in r.get("categories", {})))
    lines = [f"# magnet improve: {doc.get('out', '')}", "",
             f"Start model `{doc.get('model')}`; held-out score = macro accuracy over strata (`magnet eval paths`). "
             f"Best checkpoint: `{doc.get('best_checkpoint')}`.", "",
             "## Held-out accuracy (%) per category per round", "",
             "| category | " + " | ".join(f"round {x}" for x in labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {c} | " + " | ".join(_pct(r.get("categories", {}).get(c)) for r in rounds) + " |" for c in cats]
    lines += ["", "## Rounds", "", "| round | teacher | positives | pairs | yield | tokens | checkpoint | chosen |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    for r in rounds:
        lines.append(f"| {r['round']} | {r.get('teacher', '-')} | {r.get('positives', '-')} | {r.get('pairs', '-')} | "
                     f"{_pct(r.get('yield'))} | {r.get('tokens', '-')} | `{r.get('checkpoint')}` | {'yes' if r.get('chosen') else 'no'} |")
    stages = list(dict.fromkeys(s for r in rounds for s in r.get("wall_s", {})))
    lines += ["", "## Wall time per stage (s)", "", "| round | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    lines += [f"| {r['round']} | " + " | ".join(f"{r['wall_s'][s]:.1f}" if s in r.get("wall_s", {}) else "-" for s in stages) + " |"
              for r in rounds]
    if doc.get("function_tilt"):
        lines += ["", "## Function tilt", "", "Generation's function weights (mean 1; from the functions the probe's first wrong steps "
                  "were about): the most weighted, as weight (failed / tested episodes).", ""]
        lines += [f"- round {n}: " + ", ".join(f"`{t['function']}` {t['weight']:.2f} ({t.get('failed', '-')}/{t.get('n', '-')})"
                                               for t in top[:TILT_SHOWN]) for n, top in doc["function_tilt"].items()]
    if doc.get("stopped"):
        lines += ["", f"Stopped: {doc['stopped']}"]
    return "\n".join(lines) + "\n"


def plot(rounds: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    labels = [str(r["round"]) for r in rounds]
    cats = list(dict.fromkeys(c for r in rounds for c in r.get("categories", {})))
    fig, ax = plt.subplots(figsize=(7, 4))
    # Held-out strata solid with circles, BFCL categories dashed with squares: each family cycles its own colours.
    held_out, bfcl = [c for c in cats if not c.startswith("bfcl:")], [c for c in cats if c.startswith("bfcl:")]
    for family, style in ((held_out, {"marker": "o", "ls": "-"}), (bfcl, {"marker": "s", "ls": "--"})):
        for k, c in enumerate(family):
            pts = [(i, r["categories"][c]) for i, r in enumerate(rounds) if c in r.get("categories", {})]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{k % 10}", lw=2.5 if c == "overall" else 1, label=c, **style)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (held-out paths; BFCL dashed)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if cats:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
