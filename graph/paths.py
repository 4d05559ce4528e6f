"""Signature paths: the lazy, seeded stream of function sequences that episodes are made from.

Multi-turn paths follow MAGNET_METHOD §3-4: a random walk of up to S steps, uniform over the
out-edges not yet visited (no function repeats; a dead end stops it early), then Merge (two
consecutive turns become one with probability p, order kept, at most ``max_functions_per_turn``),
then Insert (after a turn's last function f, a nested out-neighbour of f joins the turn, or
becomes its own turn after a later turn: a long dependency). A share of them is emitted as the
Split copy: one empty turn, labelled miss_func (the function is withheld from the tools; the
name is in ``missing``) or miss_param (a required value is left out of the query;
``missing`` holds "function.param"), placed right before the turn that restores it.

Single-turn kinds follow BFCL: single (one function, one call), parallel (one function, several
calls), multiple (several functions offered, one called; the others are ``distractors``),
parallel_multiple (several calls of at least two functions). Irrelevance: the turn names a
function that is NOT offered (label miss_func); only ``distractors`` are offered.

``function_weights`` tilt which functions paths call: a walk's start and each step, an Insert,
and the function a single-turn or irrelevance path requests are drawn in proportion to them
(unnamed functions weight 1; without weights every draw is the uniform one, unchanged).

Path i of a stream depends only on (seed, i): its kind comes from a fixed interleaving of the
mixture and its random choices from ``PathRng(seed, i)``, so a stream can be sharded or
resumed at any index and the same seed always gives the same paths.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import networkx as nx

from engine.errors import UserInputError
from engine.records import FunctionSpec, PathTurn, SignaturePath
from graph.paths_config import KINDS, PathConfig, path_config

_WALK_RETRIES = 10
_NEEDS_TWO = ("multiple", "parallel_multiple", "irrelevance")


def apportion(weights: dict[str, float], n: int) -> dict[str, int]:
    """Counts summing to ``n`` in proportion to ``weights`` (largest remainder; ties by kind order,
    then by the order of ``weights``: strata such as ``multi_turn.long`` come after the kinds)."""
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    rest = n - sum(counts.values())
    rank = {k: KINDS.index(k) if k in KINDS else len(KINDS) + i for i, k in enumerate(weights)}
    order = sorted(weights, key=lambda k: (-(exact[k] - counts[k]), rank[k]))
    for k in order[:rest]:
        counts[k] += 1
    return counts


def kind_schedule(weights: dict[str, float], counts: dict[str, int] | None = None) -> Iterator[str]:
    """Kinds interleaved smoothly: the m-th path of kind k sits at virtual time (m + 0.5) / weight,
    so every prefix of the stream holds each kind in proportion. Finite when ``counts`` is given."""
    heap = [((0.5 / w), KINDS.index(k), k, 0) for k, w in weights.items() if w > 0 and (counts is None or counts.get(k, 0) > 0)]
    heapq.heapify(heap)
    while heap:
        _, order, kind, m = heap[0]
        yield kind
        m += 1
        if counts is not None and m >= counts[kind]:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, ((m + 0.5) / weights[kind], order, kind, m))


_MASK = (1 << 64) - 1
_LCG_A, _LCG_C = 6364136223846793005, 1442695040888963407  # Knuth's MMIX constants


class PathRng:
    """A 64-bit LCG whose high 32 bits drive every draw, seeded in O(1) from (seed, index).

    ``random.Random`` costs ~10 us just to seed (MT19937 fills 624 words), a fifth of a path's
    time budget at 20,000 paths/s, and each of its draws is several Python calls. The seed is
    scrambled with the SplitMix64 finaliser so neighbouring indices start far apart.
    """

    __slots__ = ("state",)

    def __init__(self, seed: int, index: int):
        z = (seed * 0x9E3779B97F4A7C15 + index * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        self.state = z ^ (z >> 31)

    def randrange(self, n: int) -> int:
        """Uniform in [0, n) for n < 2**32, by multiply-shift of the high bits."""
        self.state = s = (self.state * _LCG_A + _LCG_C) & _MASK
        return ((s >> 32) * n) >> 32

    def random(self) -> float:
        self.state = s = (self.state * _LCG_A + _LCG_C) & _MASK
        return (s >> 32) * 2.3283064365386963e-10  # 2**-32

    def randint(self, lo: int, hi: int) -> int:
        return lo + self.randrange(hi - lo + 1)

    def choice(self, seq: Any) -> Any:
        return seq[self.randrange(len(seq))]

    def sample(self, seq: Any, k: int) -> list[Any]:
        """k distinct elements (partial Fisher-Yates on a copy)."""
        pool = list(seq)
        k = min(k, len(pool))
        for i in range(k):
            j = i + self.randrange(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def getrandbits32(self) -> int:
        self.state = s = (self.state * _LCG_A + _LCG_C) & _MASK
        return s >> 32


def _stream_salt(name: str) -> int:
    """A fixed 64-bit number per stratum name, so each stratum has a random stream of its own."""
    return zlib.crc32(name.encode()) * 0x9E3779B97F4A7C15 & _MASK


class PathSampler:
    """A graph compiled to integer adjacency lists, and the path builders over it."""

    def __init__(self, graph: nx.DiGraph, specs: list[FunctionSpec] | None = None, config: PathConfig | None = None):
        self.config = path_config(msgspec.to_builtins(config or PathConfig()))
        if graph.number_of_nodes() == 0:
            raise UserInputError("dependency graph has no functions; build it from a non-empty pool")
        self.names: list[str] = list(graph.nodes)
        self.index = index = {n: i for i, n in enumerate(self.names)}
        by_name = {s.name: s for s in specs} if specs is not None else {}
        missing = [n for n in self.names if specs is not None and n not in by_name]
        if missing:
            raise UserInputError(f"specs do not match the graph: no spec for function {missing[0]!r}; pass the pool the graph was built from")
        attrs = [by_name.get(n) or graph.nodes[n] for n in self.names]
        self.toolkit = [_get(a, "toolkit") or "" for a in attrs]
        self.required: list[tuple[str, ...]] = [tuple((_get(a, "parameters") or {}).get("required") or ()) for a in attrs]
        self.out = [tuple(index[v] for v in graph.successors(n)) for n in self.names]
        self.nested = [tuple(index[v] for v in graph.successors(n) if graph.edges[n, v].get("nested")) for n in self.names]
        self.starts = [i for i, o in enumerate(self.out) if o] or list(range(len(self.names)))
        # Values only a call can issue (a login's token): a path needing one starts with the call that
        # issues it, and single-turn kinds draw from functions that need none.
        suffix = self.config.issued_suffix
        self.issued = [tuple(p for p in req if suffix and p.endswith(suffix)) for req in self.required]
        self.issues: list[set[str]] = [set() for _ in self.names]
        self.issuer: dict[str, int] = {}
        for u, v, data in graph.edges(data=True):
            for field in data.get("fields", ()):
                target = field.split("->")[-1]
                if target in self.issued[index[v]]:
                    self.issues[index[u]].add(target)
                    if not self.issued[index[u]]:  # a login: needs no issued value itself
                        self.issuer.setdefault(f"{self.toolkit[index[v]]}:{target}", index[u])
        self.plain = [i for i in range(len(self.names)) if not self.issued[i]] or list(range(len(self.names)))
        groups: dict[str, list[int]] = {}
        for i, tk in enumerate(self.toolkit):
            groups.setdefault(tk, []).append(i)
        self.by_toolkit = {tk: tuple(ids) for tk, ids in groups.items()}
        self.toolkits = tuple(self.by_toolkit)
        self.toolkit_of = dict(zip(self.names, self.toolkit))
        unknown = sorted(set(self.config.function_weights) - set(index))
        if unknown:
            raise UserInputError(f"function_weights: no function {unknown[0]!r} in the graph; name functions of the pool")
        # None when no function is weighted: every draw then stays the uniform one, so unweighted
        # streams keep the exact paths (and ids) they always had.
        self.weight: list[float] | None = None
        self._cum: dict[str, list[float] | None] = {"starts": None, "plain": None, "all": None}
        if self.config.function_weights:
            self.weight = [self.config.function_weights.get(n, 1.0) for n in self.names]
            self._cum = {"starts": list(itertools.accumulate(self.weight[i] for i in self.starts)),
                         "plain": list(itertools.accumulate(self.weight[i] for i in self.plain)),
                         "all": list(itertools.accumulate(self.weight))}
        self.builders = {"single": self._single, "parallel": self._parallel, "multiple": self._multiple,
                         "parallel_multiple": self._parallel_multiple, "multi_turn": self._multi_turn,
                         "irrelevance": self._irrelevance}

    # --- streams -------------------------------------------------------------------------

    def stream(self, seed: int = 0, *, n: int | None = None, start: int = 0) -> Iterator[SignaturePath]:
        if n is not None and n < 0:
            raise UserInputError(f"number of paths n={n} is negative; give n >= 0")
        if start < 0:
            raise UserInputError(f"start index {start} is negative; give start >= 0")
        weights = {k: float(w) for k, w in self.config.mixture.items() if w > 0}
        if len(self.names) < 2:
            bad = [k for k in weights if k in _NEEDS_TWO]
            if bad:
                raise UserInputError(f"path kind {bad[0]!r} needs at least two functions in the graph; drop it from the mixture")
        if n is not None:
            counts: dict[str, int] | None = apportion(weights, n)
        elif all(w == int(w) for w in weights.values()):
            counts = {k: int(w) for k, w in weights.items()}
        else:
            counts = None
        return self._generate(seed, itertools.islice(kind_schedule(weights, counts), start, None), start)

    def _generate(self, seed: int, kinds: Iterator[str], start: int) -> Iterator[SignaturePath]:
        for i, kind in enumerate(kinds, start):
            yield self.path(kind, seed, i)

    def path(self, kind: str, seed: int, index: int) -> SignaturePath:
        """Path ``index`` of kind ``kind`` in the stream of ``seed``: depends on nothing else.
        ``kind`` may name a stratum, ``multi_turn.<variant>``: a multi-turn path of that variant,
        drawn from its own random stream and named after it."""
        kind, _, variant = kind.partition(".")
        rng = PathRng(seed, index) if not variant else PathRng(seed ^ _stream_salt(variant), index)
        turns, ops, distractors = (self._multi_turn(rng, variant) if variant else self.builders[kind](rng))
        tk = self.toolkit_of
        # An irrelevance episode exposes only the distractors' toolkits.
        toolkits = {tk[f] for f in distractors}
        if kind != "irrelevance":
            toolkits.update(tk[f] for t in turns for f in t.functions)
        toolkits.discard("")
        name = f"{kind}.{variant}" if variant else kind
        return SignaturePath(id=f"{name}-{seed}-{index}", kind=kind, turns=turns, ops=ops, seed=rng.getrandbits32(),
                             toolkits=sorted(toolkits), distractors=distractors)

    # --- weighted draws ------------------------------------------------------------------

    def _draw(self, rng: PathRng, pool: str) -> int:
        """A function of a fixed pool (starts, plain or all), by function_weights when given:
        one draw either way, bisected on the pool's precomputed cumulative weights."""
        ids = self.starts if pool == "starts" else self.plain if pool == "plain" else None
        cum = self._cum[pool]
        if cum is None:
            return rng.randrange(len(self.names)) if ids is None else ids[rng.randrange(len(ids))]
        k = min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)  # min: float rounding at the top
        return k if ids is None else ids[k]

    def _draw_from(self, rng: PathRng, options: Sequence[int]) -> int:
        """One of ``options`` (a walk's next step, an Insert), by function_weights when given."""
        if self.weight is None:
            return options[rng.randrange(len(options))]
        weights = [self.weight[g] for g in options]
        r = rng.random() * sum(weights)
        for g, w in zip(options, weights):
            r -= w
            if r < 0:
                return g
        return options[-1]

    # --- single-turn kinds ---------------------------------------------------------------

    def _single(self, rng: PathRng) -> tuple[list[PathTurn], list[str], list[str]]:
        return [PathTurn(functions=[self.names[self._draw(rng, "plain")]])], [], []

    def _parallel(self, rng: PathRng) -> tuple[list[PathTurn], list[str], list[str]]:
        f = self.names[self._draw(rng, "plain")]
        return [PathTurn(functions=[f] * rng.randint(*self.config.parallel_calls))], [], []

    def _multiple(self, rng: PathRng) -> tuple[list[PathTurn], list[str], list[str]]:
        f = self._draw(rng, "plain")
        offered = rng.randint(*self.config.multiple_choices)
        others = self._pick_near(rng, f, max(1, offered - 1))
        return [PathTurn(functions=[self.names[f]])], [], [self.names[g] for g in others]

    def _parallel_multiple(self, rng: PathRng) -> tuple[list[PathTurn], list[str], list[str]]:
        lo, hi = self.config.parallel_multiple_calls
        calls = rng.randint(max(2, lo), hi)
        f = self._draw(rng, "plain")
        issuing = {g for g in range(len(self.names)) if self.issued[g]}
        distinct = [f] + self._pick_near(rng, f, rng.randint(1, calls - 1), exclude=issuing)
        counts = [1] * len(distinct)
        for _ in range(calls - len(distinct)):
            counts[rng.randrange(len(distinct))] += 1
        extra = self._pick_near(rng, f, rng.randint(*self.config.parallel_multiple_distractors), exclude=set(distinct))
        turn = PathTurn(functions=[self.names[g] for g, c in zip(distinct, counts) for _ in range(c)])
        return [turn], [], [self.names[g] for g in extra]

    def _irrelevance(self, rng: PathRng) -> tuple[list[PathTurn], list[str], list[str]]:
        f = self._draw(rng, "all")
        far = self._pick_far(rng, f, rng.randint(*self.config.irrelevance_distractors))
        name = self.names[f]
        return [PathTurn(functions=[name], label="miss_func", missing=[name])], [], [self.names[g] for g in far]

    def _pick_near(self, rng: PathRng, f: int, k: int, exclude: set[int] | None = None) -> list[int]:
        """k other functions, from f's toolkit first (a choice between related tools is the hard case)."""
        exclude = {f, *(exclude or ())}
        group = [g for g in self.by_toolkit[self.toolkit[f]] if g not in exclude]
        picked = rng.sample(group, min(k, len(group)))
        return picked + self._sample_excluding(rng, k - len(picked), exclude | set(picked))

    def _pick_far(self, rng: PathRng, f: int, k: int) -> list[int]:
        """k functions that cannot serve a request for f: other toolkits, never f's neighbours."""
        exclude = {f, *self.out[f]}
        own = self.toolkit[f]
        picked: list[int] = []
        for _ in range(4 * k if len(self.by_toolkit) > 1 else 0):
            if len(picked) >= k:
                break
            tk = self.toolkits[rng.randrange(len(self.toolkits))]
            g = rng.choice(self.by_toolkit[tk])
            if tk != own and g not in exclude:
                exclude.add(g)
                picked.append(g)
        picked += self._sample_excluding(rng, k - len(picked), exclude)
        # Tiny pools: any other function is still not the requested one.
        return picked + self._sample_excluding(rng, k - len(picked), {f, *picked})

    def _sample_excluding(self, rng: PathRng, k: int, exclude: set[int]) -> list[int]:
        """Up to k uniform functions outside ``exclude`` (rejection sampling: the pool may be huge)."""
        out: list[int] = []
        room = len(self.names) - len(exclude)
        tries = 0
        while len(out) < min(k, room) and tries < 20 * k:
            tries += 1
            g = rng.randrange(len(self.names))
            if g not in exclude:
                exclude.add(g)
                out.append(g)
        return out

    # --- multi-turn: walk, Merge, Insert, Split ------------------------------------------------

    def walk(self, rng: PathRng) -> list[int]:
        """Random walk of up to S steps over unvisited out-neighbours (uniform, or by function_weights); retried when too short."""
        best: list[int] = []
        for _ in range(_WALK_RETRIES):
            cur = self._draw(rng, "starts")
            seq, seen = [cur], {cur}
            for _ in range(self.config.walk_steps):
                nxt = [g for g in self.out[cur] if g not in seen]
                if not nxt:
                    break
                cur = self._draw_from(rng, nxt)
                seq.append(cur)
                seen.add(cur)
            if len(seq) > len(best):
                best = seq
            if len(best) >= self.config.min_walk_functions:
                break
        return best

    def merge(self, rng: PathRng, turns: list[list[int]], ops: list[str]) -> list[list[int]]:
        """Combine consecutive turns with probability p_merge, keeping order and the per-turn cap."""
        merged = [list(turns[0])]
        for turn in turns[1:]:
            if rng.random() < self.config.p_merge and len(merged[-1]) + len(turn) <= self.config.max_functions_per_turn:
                merged[-1].extend(turn)
                ops.append("merge")
            else:
                merged.append(list(turn))
        return merged

    def insert(self, rng: PathRng, turns: list[list[int]], ops: list[str], p_insert: float | None = None,
               p_long: float | None = None) -> list[list[int]]:
        """After a turn's last function f, add a nested out-neighbour of f in the turn or as a later turn.
        ``p_insert`` / ``p_long`` override the config (a path drawn for one variant forces them)."""
        cfg = self.config
        p_insert = cfg.p_insert if p_insert is None else p_insert
        p_long = cfg.p_insert_long if p_long is None else p_long
        used = {f for t in turns for f in t}
        done, h = 0, 0
        while h < len(turns) and done < cfg.max_inserts:
            if rng.random() < p_insert:
                options = [c for c in self.nested[turns[h][-1]] if c not in used]
                if options:
                    c = self._draw_from(rng, options)
                    later = len(turns) - h - 1
                    fits = len(turns[h]) < cfg.max_functions_per_turn
                    if later and (rng.random() < p_long or not fits):
                        turns.insert(rng.randint(h + 2, len(turns)), [c])
                        ops.append("insert_long")
                    elif fits:
                        turns[h].append(c)
                        ops.append("insert_nested")
                    else:
                        h += 1
                        continue
                    used.add(c)
                    done += 1
            h += 1
        return turns

    def logins(self, turns: list[list[int]], ops: list[str]) -> list[list[int]]:
        """Before a call that needs an issued value no earlier call of the path issued, put the login
        that issues it, in the same turn: a user cannot state a session token, a login call can."""
        used = {f for t in turns for f in t}
        have: set[str] = set()
        out = []
        for turn in turns:
            new: list[int] = []
            for f in turn:
                for p in self.issued[f]:
                    g = self.issuer.get(f"{self.toolkit[f]}:{p}")
                    if p not in have and g is not None and g not in used:
                        new.append(g)
                        used.add(g)
                        have |= self.issues[g]
                        ops.append("login")
                new.append(f)
                have |= self.issues[f]
            out.append(new)
        return out

    def split(self, rng: PathRng, turns: list[PathTurn], ops: list[str], p_miss_param: float | None = None) -> list[PathTurn]:
        """Add one empty turn before a random turn: that turn's function withheld, or one of its required values."""
        p_miss_param = self.config.p_miss_param if p_miss_param is None else p_miss_param
        h = rng.randrange(len(turns))
        funcs = turns[h].functions
        with_required = [f for f in funcs if self.required[self.index[f]]]
        if with_required and rng.random() < p_miss_param:
            f = with_required[rng.randrange(len(with_required))]
            params = self.required[self.index[f]]
            empty = PathTurn(functions=[], label="miss_param", missing=[f"{f}.{params[rng.randrange(len(params))]}"])
        else:
            empty = PathTurn(functions=[], label="miss_func", missing=[funcs[0]])
        ops.append("split")
        return turns[:h] + [empty] + turns[h:]

    def _multi_turn(self, rng: PathRng, variant: str | None = None) -> tuple[list[PathTurn], list[str], list[str]]:
        """A walk, Merge, Insert and maybe Split. A requested ``variant`` forces the operations that
        make it (and forbids the ones that would make another), retrying walks that cannot: a
        stratified run asks for each variant as often as its share needs."""
        cfg = self.config
        force = _VARIANT_FORCE.get(variant, {})
        for _ in range(_WALK_RETRIES):
            ops = ["walk"]
            turns = self.merge(rng, [[f] for f in self.walk(rng)], ops)
            turns = self.insert(rng, turns, ops, force.get("p_insert"), force.get("p_long"))
            turns = self.logins(turns, ops)
            path = [PathTurn(functions=[self.names[f] for f in t]) for t in turns]
            if rng.random() < force.get("p_split", cfg.p_split):
                path = self.split(rng, path, ops, force.get("p_miss_param"))
            if variant is None or path_variant(path, ops) == variant:
                break
        else:
            raise UserInputError(f"the graph has no multi_turn path of variant {variant!r} (no nested edges?); "
                                 f"give it share 0 in multi_turn_mixture")
        # Like BFCL's multi-turn entries the model sees a toolkit's functions beyond the ones it
        # needs, but a few of them, not the whole toolkit: sequences stay within a training length.
        used = {self.index[f] for t in path for f in t.functions}
        first = self.index[path[0].functions[0]] if path[0].functions else self.index[path[1].functions[0]]
        extra = self._pick_near(rng, first, rng.randint(*cfg.multi_turn_distractors), exclude=used)
        return path, ops, [self.names[g] for g in extra]


# What a requested multi-turn variant forces: probabilities that override the config.
_VARIANT_FORCE: dict[str | None, dict[str, float]] = {
    "base": {"p_insert": 0.0, "p_split": 0.0},
    "nested": {"p_insert": 1.0, "p_long": 0.0, "p_split": 0.0},
    "long": {"p_insert": 1.0, "p_long": 1.0, "p_split": 0.0},
    "miss_func": {"p_split": 1.0, "p_miss_param": 0.0},
    "miss_param": {"p_split": 1.0, "p_miss_param": 1.0},
}


def path_variant(turns: list[PathTurn], ops: list[str]) -> str:
    """A multi-turn path's variant, one per path (MULTI_TURN_VARIANTS): its Split label if split,
    else long if an Insert became its own later turn, else nested if one joined a turn, else base."""
    split = next((t.label for t in turns if t.label != "call"), None)
    if split is not None:
        return split
    return "long" if "insert_long" in ops else "nested" if "insert_nested" in ops else "base"


def stratum_of(path: SignaturePath) -> str:
    """The stratum a path counts in: its kind, and for multi-turn its variant (``multi_turn.long``)."""
    return f"multi_turn.{path_variant(path.turns, path.ops)}" if path.kind == "multi_turn" else path.kind


def _get(obj: Any, key: str) -> Any:
    return getattr(obj, key, None) if isinstance(obj, FunctionSpec) else obj.get(key)


def sample_paths(graph: nx.DiGraph, specs: list[FunctionSpec] | None = None, config: PathConfig | None = None,
                 seed: int = 0, *, n: int | None = None, start: int = 0) -> Iterator[SignaturePath]:
    """Lazy, reproducible stream of signature paths (see the module docstring); ``n`` caps it,
    ``start`` skips to an index (path i is the same whatever the start)."""
    return PathSampler(graph, specs, config).stream(seed, n=n, start=start)
