"""Error-driven expansion: the path mixture of the next generation, tilted toward what the probe failed.

Each stratum's share is a floor plus the rest in proportion to its failures (1 - accuracy) on the
probe split, so data goes where the model is wrong while no stratum disappears (a stratum the
model passes would otherwise be forgotten). The shares become `magnet generate`'s
``path_options``: ``mixture`` over path kinds and ``multi_turn_mixture`` over the multi-turn variants.

Function choice is tilted the same way: each function the probe tested gets a weight, a floor plus
the rest in proportion to how often the first wrong step of an episode was about it, relative to
how often it was tested (the report's ``by_function``). The weights average 1 over the tested
functions, the weight of functions the probe did not test, and become ``path_options.function_weights``:
walks start at and step to failed functions more often.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

MULTI = "multi_turn."
# A function's failure rate is shrunk toward the probe's mean as if it had been tested this many
# more times at that rate: one failure in one test must not outrank 8 failures in 10.
PRIOR_TESTS = 2.0
# Least function weight whatever the floor: a weight of 0 would drop the function from generation.
MIN_FUNCTION_FLOOR = 0.05
TOP_FUNCTIONS = 10  # favoured functions listed in target.json (``top_functions``) for the improve report


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


def function_weights(by_function: dict[str, dict[str, int]], floor: float) -> dict[str, float]:
    """Function -> weight (mean 1 over the tested functions, at least ``floor``), most weighted first;
    empty when nothing failed (no tilt: generation then draws exactly the unweighted paths)."""
    tested = {f: s for f, s in by_function.items() if s.get("n")}
    failed = sum(s["failed"] for s in tested.values())
    if not failed:
        return {}
    mean = failed / sum(s["n"] for s in tested.values())
    rate = {f: (s["failed"] + PRIOR_TESTS * mean) / (s["n"] + PRIOR_TESTS) for f, s in tested.items()}
    # tilted_shares on 1 - rate with floor/n per function, times n: floor + the rest by failure rate, mean 1.
    shares = tilted_shares({f: 1.0 - r for f, r in rate.items()}, floor / len(rate))
    weights = {f: round(share * len(rate), 4) for f, share in shares.items()}
    return dict(sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])))


def failure_counts(failures: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Why and where the probe failed (reasons, toolkits), most frequent first: reported with the target."""
    reasons = Counter(f["reason"] for f in failures)
    toolkits = Counter(tk for f in failures for tk in f.get("toolkits", []))
    return {"reasons": dict(reasons.most_common()), "toolkits": dict(toolkits.most_common())}


def target(report: dict[str, Any], kinds: list[str], floor: float) -> dict[str, Any]:
    """target.json from a probe's report.json: per-stratum accuracy, the shares, the function weights and
    generate's path_options. A report without ``by_function`` (written before it existed) tilts no function."""
    by_kind = report.get("by_kind", {})
    accuracy = {k: float(by_kind[k]["accuracy"]) for k in kinds if k in by_kind and by_kind[k].get("n")}
    # A stratum the probe could not fill (no episode authored) counts as failing as much as the average.
    mean = sum(accuracy.values()) / len(accuracy) if accuracy else 0.0
    accuracy |= {k: mean for k in kinds if k not in accuracy}
    shares = tilted_shares(accuracy, floor)
    # Functions keep the fraction of an even share the strata keep (floor * strata).
    function_floor = min(1.0, max(MIN_FUNCTION_FLOOR, floor * len(kinds)))
    by_function = report.get("by_function", {})
    weights = function_weights(by_function, function_floor)
    options = path_options(shares) | ({"function_weights": weights} if weights else {})
    # Reported: the functions generation now favours (above the mean weight 1), most weighted first.
    top = [{"function": f, "weight": w, **by_function[f]} for f, w in weights.items() if w > 1][:TOP_FUNCTIONS]
    return {"probe_accuracy": accuracy, "shares": {k: round(v, 6) for k, v in shares.items()},
            "path_options": options, "floor": floor, "probe_failures": failure_counts(report.get("failures", [])),
            "function_floor": function_floor, "function_weights": weights, "top_functions": top}
