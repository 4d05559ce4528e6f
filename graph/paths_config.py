"""Every knob of signature-path sampling, in one typed config with help text.

Defaults follow the paper (MAGNET_METHOD §3-4): walks of S=7 steps, Merge with p=0.3, and the
data mixture 20k single-turn : 7.8k multi-turn : 6.2k irrelevance, the single-turn share split
evenly among BFCL's simple / parallel / multiple / parallel-multiple.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from engine.errors import UserInputError
from engine.records import PathKind

KINDS: tuple[str, ...] = ("single", "parallel", "multiple", "parallel_multiple", "multi_turn", "irrelevance")
MULTI_TURN_VARIANTS: tuple[str, ...] = ("base", "nested", "long", "miss_func", "miss_param")
_Prob = Annotated[float, Meta(ge=0.0, le=1.0)]
_Range = Annotated[list[Annotated[int, Meta(ge=1, le=64)]], Meta(min_length=2, max_length=2)]
_Range0 = Annotated[list[Annotated[int, Meta(ge=0, le=64)]], Meta(min_length=2, max_length=2)]


def _default_mixture() -> dict[str, float]:
    return {"single": 5000, "parallel": 5000, "multiple": 5000, "parallel_multiple": 5000, "multi_turn": 7800, "irrelevance": 6200}


class PathConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How signature paths are sampled from a dependency graph."""

    mixture: Annotated[dict[PathKind, Annotated[float, Meta(ge=0.0)]], Meta(description=(
        "kind -> weight: counts (20000) or fractions (0.4). With n given, rescaled to n paths by largest "
        "remainder; without n, whole-number counts give exactly that many paths and fractions an endless stream. "
        "Kinds: single (BFCL simple), parallel, multiple, parallel_multiple, multi_turn, irrelevance"))] = msgspec.field(
        default_factory=_default_mixture)
    walk_steps: Annotated[int, Meta(ge=0, le=64, description="random-walk steps S (a walk visits at most S+1 functions)")] = 7
    min_walk_functions: Annotated[int, Meta(ge=1, le=64, description=(
        "a walk that ends (dead end) with fewer functions than this is retried from another start, up to 10 times"))] = 5
    p_merge: Annotated[_Prob, Meta(description="probability of merging two consecutive turns into one (Merge)")] = 0.3
    max_functions_per_turn: Annotated[int, Meta(ge=1, le=16, description="Merge and same-turn Insert never grow a turn past this")] = 3
    p_insert: Annotated[_Prob, Meta(description="per turn: probability of trying Insert of a nested function after the turn's last function")] = 0.3
    p_insert_long: Annotated[_Prob, Meta(description=(
        "given an Insert: probability it becomes its own turn after a random later turn (long dependency) instead of joining the turn"))] = 0.3
    max_inserts: Annotated[int, Meta(ge=0, le=16, description="at most this many Inserts per path")] = 2
    p_split: Annotated[_Prob, Meta(description=(
        "fraction of multi_turn paths emitted as the Split copy (one empty turn labelled miss_func or miss_param)"))] = 0.5
    p_miss_param: Annotated[_Prob, Meta(description=(
        "given a Split: probability of miss_param (needs a function with a required parameter) rather than miss_func"))] = 0.5
    parallel_calls: Annotated[_Range, Meta(description="[min, max] calls of the one function in a parallel path")] = msgspec.field(
        default_factory=lambda: [2, 4])
    multiple_choices: Annotated[_Range, Meta(description="[min, max] functions offered in a multiple path (one of them is called)")] = msgspec.field(
        default_factory=lambda: [2, 4])
    parallel_multiple_calls: Annotated[_Range, Meta(description="[min, max] calls in a parallel_multiple path "
                                                                "(at least two distinct functions)")] = msgspec.field(default_factory=lambda: [2, 4])
    irrelevance_distractors: Annotated[_Range, Meta(description="[min, max] unrelated functions offered in an irrelevance path")] = msgspec.field(
        default_factory=lambda: [1, 4])
    parallel_multiple_distractors: Annotated[_Range0, Meta(description=(
        "[min, max] related functions offered besides the called ones in a parallel_multiple path"))] = msgspec.field(
        default_factory=lambda: [0, 2])
    multi_turn_distractors: Annotated[_Range0, Meta(description=(
        "[min, max] functions of the path's toolkits offered besides the path's own in a multi_turn path "
        "(BFCL offers whole API classes; a few keep sequences within a training length)"))] = msgspec.field(
        default_factory=lambda: [0, 2])
    issued_suffix: Annotated[str, Meta(description=(
        "a required parameter whose name ends so (a session token) holds a value only a call issues: multi_turn "
        "paths get the login that issues it, single-turn kinds avoid functions that need one; empty = off"))] = "_token"
    multi_turn_mixture: Annotated[dict[str, Annotated[float, Meta(ge=0.0)]], Meta(description=(
        "stratified runs: shares of the multi_turn variants base (walk + Merge), nested (an Insert joins a "
        "turn), long (an Insert becomes a later turn), miss_func and miss_param (a Split); BFCL's multi-turn "
        "categories weigh base, miss_func, miss_param and long alike"))] = msgspec.field(
        default_factory=lambda: {"base": 1.0, "nested": 1.0, "long": 1.0, "miss_func": 1.0, "miss_param": 1.0})
    function_weights: Annotated[dict[str, Annotated[float, Meta(gt=0.0)]], Meta(description=(
        "function -> weight: walks start at and step to, Insert adds, and single-turn and irrelevance paths "
        "request functions in proportion to these weights (distractors stay uniform); unnamed functions weight 1. "
        "`magnet improve` sets them from the functions its probe failed on"))] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("parallel_calls", "multiple_choices", "parallel_multiple_calls", "irrelevance_distractors",
                     "parallel_multiple_distractors", "multi_turn_distractors"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: min {lo} > max {hi}")
        if not any(w > 0 for w in self.mixture.values()):
            raise ValueError("mixture: every weight is 0; give at least one kind a positive weight")
        unknown = sorted(set(self.multi_turn_mixture) - set(MULTI_TURN_VARIANTS))
        if unknown:
            raise ValueError(f"multi_turn_mixture: unknown variant {unknown[0]!r}; use {', '.join(MULTI_TURN_VARIANTS)}")
        if not any(w > 0 for w in self.multi_turn_mixture.values()):
            raise ValueError("multi_turn_mixture: every share is 0; give at least one variant a positive share")
        if self.parallel_multiple_calls[1] < 2:
            raise ValueError("parallel_multiple_calls: max must be at least 2 (two distinct functions)")


def path_config(data: dict[str, Any] | None = None, *, where: str = "path config") -> PathConfig:
    """A PathConfig from plain data; bad fields -> UserInputError naming the field."""
    try:
        return msgspec.convert(data or {}, PathConfig)
    except msgspec.ValidationError as err:
        raise UserInputError(f"{where}: {err}; see `magnet paths sample --help-config` for the fields") from None
