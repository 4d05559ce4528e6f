"""Error-driven expansion: the path mixture of the next generation, tilted toward what the probe failed.

Each stratum's share is a floor plus the rest in proportion to its failures (1 - accuracy) on the
probe split, so data goes where the model is wrong while no stratum disappears (a stratum the
model passes would otherwise be forgotten). The shares become `magnet generate`'s
``path_options``: ``mixture`` over path kinds and ``multi_turn_mixture`` over the multi-turn variants.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

MULTI = "multi_turn."


def tilted_shares(accuracy: dict[str, float], floor: float) -> dict[str, float]:
    """Stratum -> share (sums to 1): ``floor`` each, the rest split by failure rate; even when nothing failed."""
    failures = {k: max(0.0, 1.0 - a) for k, a in accuracy.items()}
    total = sum(failures.values())
    rest = 1.0 - floor * len(accuracy)
    return {k: floor + rest * (f / total if total else 1 / len(accuracy)) for k, f in failures.items()}


def path_options(shares: dict[str, float]) -> dict[str, Any]:
    """Stratum shares -> PathConfig overrides. Kinds left out get weight 0 (the probe did not test them)."""
    from graph.paths_config import KINDS, MULTI_TURN_VARIANTS

    mixture = {k: 0.0 for k in KINDS}
    variants = {v: 0.0 for v in MULTI_TURN_VARIANTS}
    for stratum, share in shares.items():
        if stratum.startswith(MULTI):
            mixture["multi_turn"] += share
            variants[stratum.removeprefix(MULTI)] = share
        else:
            mixture[stratum] = share
    out: dict[str, Any] = {"mixture": mixture}
    if mixture["multi_turn"] > 0:
        out["multi_turn_mixture"] = variants
    return out


def failure_counts(failures: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Why and where the probe failed (reasons, toolkits), most frequent first: reported with the target."""
    reasons = Counter(f["reason"] for f in failures)
    toolkits = Counter(tk for f in failures for tk in f.get("toolkits", []))
    return {"reasons": dict(reasons.most_common()), "toolkits": dict(toolkits.most_common())}


def target(report: dict[str, Any], kinds: list[str], floor: float) -> dict[str, Any]:
    """target.json from a probe's report.json: per-stratum accuracy, the shares and generate's path_options."""
    by_kind = report.get("by_kind", {})
    accuracy = {k: float(by_kind[k]["accuracy"]) for k in kinds if k in by_kind and by_kind[k].get("n")}
    # A stratum the probe could not fill (no episode authored) counts as failing as much as the average.
    mean = sum(accuracy.values()) / len(accuracy) if accuracy else 0.0
    accuracy |= {k: mean for k in kinds if k not in accuracy}
    shares = tilted_shares(accuracy, floor)
    return {"probe_accuracy": accuracy, "shares": {k: round(v, 6) for k, v in shares.items()},
            "path_options": path_options(shares), "floor": floor, "probe_failures": failure_counts(report.get("failures", []))}
