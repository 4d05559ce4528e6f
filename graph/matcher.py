"""Offline dependency matcher: which function's output can feed which function's input.

An edge f -> g means an output of f is a precondition for, all of, or part of g's input
(MAGNET_METHOD §3). The paper asks an LLM; this matcher gets a usable graph without one by
comparing f's output fields with g's parameters: names reduced to token sets (``flight_id``,
``flightId`` and an ``id`` returned by ``search_flights`` all become {flight, id}), token
weights by rarity (a shared ``flight`` says more than a shared ``id``), JSON types that must be
compatible, and a bonus for the same toolkit or category.

Candidate generation is not quadratic: parameters are indexed by their token-set key and by
their informative tokens, per domain and globally, and every posting list is read only up to a
cap. Each function gets at most ``same_domain_candidates`` candidates from its own toolkit
(index hits first, then a seeded sample, as the paper samples 30 from the same class) and at
most ``cross_domain_candidates`` index hits elsewhere, because dependencies do cross domains.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated, Any, NamedTuple

import msgspec
from msgspec import Meta

from engine.errors import UserInputError
from engine.records import FunctionSpec

_ACRONYM_PLURAL = re.compile(r"([A-Z]{2,})s(?![a-z])")  # "IDs", "URLs": not a camel-case boundary
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")
_IDENT = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b|\b[a-z]+(?:[A-Z][a-z0-9]+)+\b")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

# Spellings of one concept folded together before comparison.
_SYNONYMS = {
    "identifier": "id", "ids": "id", "uid": "id", "uuid": "id", "qty": "quantity", "addr": "address",
    "dest": "destination", "msg": "message", "num": "number", "cost": "amount", "fare": "amount",
    "price": "amount", "amt": "amount", "usr": "user", "img": "image", "pic": "image", "photo": "image",
    "doc": "document", "dir": "directory", "folder": "directory", "filename": "file",
    "filepath": "path", "lat": "latitude", "lng": "longitude", "lon": "longitude",
    "tok": "token", "pwd": "password", "tel": "phone", "mail": "email", "txn": "transaction",
}
# Field names that mean nothing alone: an ``id`` returned by ``search_flights`` is a flight id.
GENERIC = frozenset({
    "id", "name", "key", "code", "number", "value", "url", "path", "status", "type", "count",
    "result", "data", "info", "detail", "item", "output", "text", "list", "response", "ref",
})
# Verbs in function names: not part of the entity a function returns.
_VERBS = frozenset({
    "get", "list", "search", "find", "create", "add", "update", "delete", "remove", "set", "fetch",
    "check", "send", "book", "cancel", "make", "compute", "calculate", "convert", "lookup", "look",
    "query", "retrieve", "read", "write", "post", "put", "new", "start", "stop", "show", "open",
    "close", "edit", "modify", "register", "login", "logout", "view", "display", "request", "by",
    "to", "from", "for", "of", "all", "do", "run", "execute", "submit", "verify", "validate",
})
_STOPWORDS = frozenset({
    "the", "a", "an", "of", "to", "for", "in", "on", "by", "with", "and", "or", "is", "are", "be",
    "this", "that", "from", "as", "at", "it", "its", "your", "you", "which", "will", "can", "return",
    "returns", "returned", "given", "if", "when", "each", "one", "any", "all", "e", "g", "eg", "ie",
    "use", "used", "should", "must", "may", "has", "have", "not", "no", "into", "per", "was", "were",
})
_MAX_TEXT_FIELDS = 48  # a long prose ``returns`` must not cost more index lookups than a schema
_TYPE_ALIASES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "dict": "object"}


class MatcherConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Knobs of the offline matcher; defaults follow the paper's 30 candidates per node."""

    threshold: Annotated[float, Meta(ge=0.0, le=1.0, description="minimum score for an edge f -> g")] = 0.5
    nested_threshold: Annotated[float, Meta(ge=0.0, le=1.0, description=(
        "minimum score (on a required parameter of g) for g to count as nested after f: the offline "
        "default of the paper's nested check, used by Insert"))] = 0.7
    same_domain_candidates: Annotated[int, Meta(ge=0, le=1000, description=(
        "candidates per function from its own toolkit (or category): index hits first, then a seeded sample"))] = 30
    cross_domain_candidates: Annotated[int, Meta(ge=0, le=1000, description=(
        "extra candidates per function from other toolkits, found through the parameter index"))] = 10
    max_postings: Annotated[int, Meta(ge=1, le=100_000, description=(
        "posting entries read per index key and output field; bounds the cost of very common names"))] = 64
    same_toolkit_bonus: Annotated[float, Meta(ge=0.0, le=1.0, description="score added when f and g share a toolkit")] = 0.1
    same_category_bonus: Annotated[float, Meta(ge=0.0, le=1.0, description="score added when f and g share a category (other toolkit)")] = 0.05
    coverage_bonus: Annotated[float, Meta(ge=0.0, le=1.0, description="score added when f's outputs cover all of g's required parameters")] = 0.05
    description_score: Annotated[float, Meta(ge=0.0, le=1.0, description=(
        "score when a parameter's description (not its name) names every word of an output field"))] = 0.6
    mention_score: Annotated[float, Meta(ge=0.0, le=1.0, description=(
        "score of an edge f -> g whose description names f (\"as returned by search_flights\")"))] = 0.8
    seed: Annotated[int, Meta(description="seed of the same-domain candidate sample")] = 0


@lru_cache(maxsize=1 << 16)
def _canon(word: str) -> str:
    word = _SYNONYMS.get(word, word)
    if len(word) > 3 and not word.endswith(("ss", "us", "is")):
        if word.endswith("ies"):
            word = word[:-3] + "y"
        elif word.endswith(("ses", "xes", "ches", "shes")):
            word = word[:-2]
        elif word.endswith("s"):
            word = word[:-1]
    return _SYNONYMS.get(word, word)


@lru_cache(maxsize=1 << 16)
def name_tokens(name: str) -> tuple[str, ...]:
    """``flightIds`` / ``flight_ids`` / ``Flight-IDs`` -> ("flight", "id")."""
    parts = _NON_ALNUM.split(_CAMEL.sub(" ", _ACRONYM_PLURAL.sub(r"\1", name)))
    return tuple(_canon(p.lower()) for p in parts if p)


def text_tokens(text: str) -> frozenset[str]:
    """Content words of a description (identifiers split into their tokens)."""
    out: set[str] = set()
    for word in _WORD.findall(text):
        out.update(t for t in name_tokens(word) if t not in _STOPWORDS)
    return frozenset(out)


def entity_tokens(function_name: str) -> frozenset[str]:
    """What a function is about: its name without verbs (``search_flights`` -> {flight})."""
    return frozenset(t for t in name_tokens(function_name) if t not in _VERBS and not t.isdigit())


def _types(schema: Any) -> frozenset[str]:
    if not isinstance(schema, dict):
        return frozenset()
    raw = schema.get("type")
    names = raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else []
    return frozenset(_TYPE_ALIASES.get(n, n) for n in names if n != "null")


def _item_types(schema: Any) -> frozenset[str]:
    return _types(schema.get("items")) if isinstance(schema, dict) else frozenset()


class Field(NamedTuple):
    """One output field of f or one parameter of g, reduced to what the matcher compares."""

    name: str
    tokens: frozenset[str]  # qualified token set: generic names take the owner's entity tokens
    key: str  # the token set as an index key
    types: frozenset[str]
    item_types: frozenset[str]
    required: bool = False
    desc: frozenset[str] = frozenset()  # content words of the description
    from_text: bool = False  # found in a prose ``returns``: weaker evidence


def _field(name: str, schema: Any, context: frozenset[str], *, required: bool = False, from_text: bool = False) -> Field | None:
    tokens = frozenset(name_tokens(name))
    if tokens and tokens <= GENERIC:
        tokens = tokens | context
    if not tokens:
        return None
    desc = text_tokens(schema.get("description", "")) if isinstance(schema, dict) else frozenset()
    return Field(name, tokens, "_".join(sorted(tokens)), _types(schema), _item_types(schema), required, desc, from_text)


def output_fields(spec: FunctionSpec) -> list[Field]:
    """Output fields from the ``returns`` schema (properties, list items, one nested level) or prose."""
    entity = entity_tokens(spec.name)
    fields: list[Field] = []
    returns = spec.returns
    if isinstance(returns, dict) and returns:
        _schema_fields(returns, entity, fields, depth=0)
        if not fields:  # a scalar result: it is the entity itself (get_distance -> distance)
            f = _field("_".join(sorted(entity)) or "result", returns, entity)
            fields += [f] if f else []
    elif isinstance(returns, str) and returns.strip():
        fields += _text_fields(returns, entity)
    return fields


def _schema_fields(schema: dict[str, Any], context: frozenset[str], out: list[Field], depth: int) -> None:
    props = schema.get("properties")
    if not isinstance(props, dict) and isinstance(schema.get("items"), dict):
        props = schema["items"].get("properties")
    if not isinstance(props, dict):
        return
    for name, sub in props.items():
        f = _field(name, sub, context)
        if f is None:
            continue
        out.append(f)
        if depth == 0 and isinstance(sub, dict):  # {"booking": {"id": ...}} -> booking id
            _schema_fields(sub, frozenset(name_tokens(name)) - GENERIC or context, out, depth + 1)


def _text_fields(text: str, entity: frozenset[str]) -> list[Field]:
    """Prose returns: identifiers, plus pairs and single content words ("the booking id")."""
    seen: dict[str, Field] = {}
    names = _IDENT.findall(text)
    words = [w for w in (_canon(w.lower()) for w in re.findall(r"[A-Za-z]+", text)) if w not in _STOPWORDS]
    names += [f"{a}_{b}" for a, b in zip(words, words[1:])] + [w for w in words if w not in GENERIC]
    for name in names:
        f = _field(name, {}, entity, from_text=True)
        if f is not None and f.key not in seen:
            seen[f.key] = f
            if len(seen) >= _MAX_TEXT_FIELDS:
                break
    return list(seen.values())


def parameter_fields(spec: FunctionSpec) -> list[Field]:
    params = spec.parameters.get("properties") if isinstance(spec.parameters, dict) else None
    if not isinstance(params, dict):
        return []
    required = set(spec.parameters.get("required") or ())
    entity = entity_tokens(spec.name)
    fields = []
    for name, schema in params.items():
        f = _field(name, schema, entity, required=name in required)
        if f is not None:
            fields.append(f)
    return fields


def types_compatible(out: Field, param: Field) -> bool:
    """Untyped matches anything; integer feeds number; a list element feeds a scalar and back."""
    if not out.types or not param.types:
        return True
    num = {"integer", "number"}

    def meet(a: frozenset[str], b: frozenset[str]) -> bool:
        return bool(a & b) or (bool(a & num) and bool(b & num))

    return meet(out.types, param.types) or meet(out.item_types, param.types) or meet(out.types, param.item_types)


class Match(NamedTuple):
    score: float
    fields: list[str]  # "output->parameter" pairs that carry the edge
    nested: bool  # g's required parameter can be taken from f's output (Insert's offline check)


class Matcher:
    """Scores f -> g for a fixed pool; build once, then ``match(f)`` or ``score(f, g)``."""

    def __init__(self, specs: list[FunctionSpec], config: MatcherConfig | None = None):
        self.config = config or MatcherConfig()
        self.specs = specs
        self.index_of = {s.name: i for i, s in enumerate(specs)}
        if len(self.index_of) != len(specs):
            dup = next(n for n, k in Counter(s.name for s in specs).items() if k > 1)
            raise UserInputError(f"function pool: duplicate function name {dup!r}; rename one of them")
        self.outputs = [output_fields(s) for s in specs]
        self.params = [parameter_fields(s) for s in specs]
        self.domain = [s.toolkit or s.category for s in specs]
        self._build_index()
        self._mentions = self._find_mentions()

    def _build_index(self) -> None:
        df: dict[str, int] = defaultdict(int)
        self.by_domain: dict[str, list[int]] = defaultdict(list)
        # key -> postings (function, parameter) globally and inside each domain
        self.global_index: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.domain_index: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for g, fields in enumerate(self.params):
            self.by_domain[self.domain[g]].append(g)
            for p, field in enumerate(fields):
                for tok in field.tokens:
                    df[tok] += 1
                for key in self._keys(field):
                    self.global_index[key].append((g, p))
                    self.domain_index[(self.domain[g], key)].append((g, p))
                # Description words only inside the domain: "ID of the flight" names what it takes.
                for tok in field.desc - field.tokens - GENERIC:
                    self.domain_index[(self.domain[g], "d:" + tok)].append((g, p))
        total = max(1, sum(len(f) for f in self.params))
        self.weight = {tok: math.log(1.0 + total / n) for tok, n in df.items()}
        self._default_weight = math.log(1.0 + total)

    @staticmethod
    def _keys(field: Field) -> list[str]:
        return ["k:" + field.key] + ["t:" + t for t in field.tokens if t not in GENERIC]

    def _find_mentions(self) -> dict[int, set[int]]:
        """f -> {g whose description text names f}: "the id returned by search_flights"."""
        mentions: dict[int, set[int]] = defaultdict(set)
        for g, spec in enumerate(self.specs):
            texts = [spec.description] + [
                str(p.get("description", "")) for p in (spec.parameters.get("properties") or {}).values() if isinstance(p, dict)
            ]
            for word in set(_WORD.findall(" ".join(texts))):
                f = self.index_of.get(word)
                if f is not None and f != g:
                    mentions[f].add(g)
        return mentions

    def pair_score(self, out: Field, param: Field) -> float:
        if not types_compatible(out, param):
            return 0.0
        w, d = self.weight.get, self._default_weight
        if out.key == param.key:
            score = 1.0 if out.name == param.name and not (out.tokens <= GENERIC) else 0.9
        else:
            score = 0.0
            common = out.tokens & param.tokens
            if common and not common <= GENERIC:
                cw = sum(w(t, d) for t in common)
                pw = sum(w(t, d) for t in param.tokens)
                ow = sum(w(t, d) for t in out.tokens)
                score = 0.85 * (cw / pw) * math.sqrt(cw / ow)
            # The parameter's description names the whole output ("the ID of the flight"); one shared
            # entity word ("title of the event") is not enough.
            if param.desc and not out.tokens <= GENERIC and out.tokens <= (param.desc | param.tokens):
                score = max(score, self.config.description_score)
        return score * 0.9 if out.from_text else score

    def score(self, f: int, g: int, pairs: Iterable[tuple[int, int]] | None = None) -> Match:
        """Score f -> g over the given (output, parameter) index pairs, or all of them."""
        cfg = self.config
        outs, params = self.outputs[f], self.params[g]
        if pairs is None:
            pairs = [(o, p) for o in range(len(outs)) for p in range(len(params))]
        best, fields, covered, nested, top = 0.0, [], set(), False, ""
        for o, p in pairs:
            s = self.pair_score(outs[o], params[p])
            if s <= 0.0:
                continue
            if s > best:
                best, top = s, f"{outs[o].name}->{params[p].name}"
            if s >= cfg.threshold:
                fields.append(f"{outs[o].name}->{params[p].name}")
                covered.add(p)
                nested = nested or (params[p].required and s >= cfg.nested_threshold)
        if best > 0.0:
            sf, sg = self.specs[f], self.specs[g]
            if sf.toolkit and sf.toolkit == sg.toolkit:
                best += cfg.same_toolkit_bonus
            elif sf.category and sf.category == sg.category:
                best += cfg.same_category_bonus
            required = {p for p, field in enumerate(params) if field.required}
            if required and required <= covered:
                best += cfg.coverage_bonus
        fields = fields or ([top] if top else [])  # an edge carried by the bonuses still names its best pair
        if g in self._mentions.get(f, ()):
            best = max(best, cfg.mention_score)
            fields = fields or [f"mentions {self.specs[f].name}"]
        return Match(min(1.0, round(best, 4)), sorted(set(fields)), nested)

    def candidates(self, f: int) -> tuple[list[int], dict[int, list[tuple[int, int]]]]:
        """Up to same_domain + cross_domain candidate consumers of f, and the index pairs that hit each."""
        cfg = self.config
        dom = self.domain[f]
        same: dict[int, list[tuple[int, int]]] = defaultdict(list)
        cross: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for o, out in enumerate(self.outputs[f]):
            for key in self._keys(out) + ["d:" + t for t in out.tokens if t not in GENERIC]:
                for g, p in self.domain_index.get((dom, key), ())[: cfg.max_postings]:
                    if g != f:
                        same[g].append((o, p))
                if cfg.cross_domain_candidates and not key.startswith("d:"):
                    taken = 0
                    for g, p in self.global_index.get(key, ()):
                        if self.domain[g] == dom:
                            continue
                        cross[g].append((o, p))
                        taken += 1
                        if taken >= cfg.max_postings:
                            break
        for g in self._mentions.get(f, ()):
            (same if self.domain[g] == dom else cross).setdefault(g, [])
        # The strongest evidence first: more hits on exact keys means a likelier edge.
        chosen = sorted(same, key=lambda g: (-len(same[g]), g))[: cfg.same_domain_candidates]
        if len(chosen) < cfg.same_domain_candidates:
            pool = self.by_domain[dom]
            need = cfg.same_domain_candidates - len(chosen)
            rng = random.Random(f"{cfg.seed}:{f}")
            have = set(chosen) | {f}
            if len(pool) - len(have) <= need:
                chosen += [g for g in pool if g not in have]
            else:
                # Rejection sampling: O(need) expected, no copy of a large domain.
                while need:
                    g = pool[rng.randrange(len(pool))]
                    if g not in have:
                        have.add(g)
                        chosen.append(g)
                        need -= 1
        chosen += sorted(cross, key=lambda g: (-len(cross[g]), g))[: cfg.cross_domain_candidates]
        hits = {g: same.get(g) or cross.get(g) or [] for g in chosen}
        return chosen, hits

    def match(self, f: int) -> tuple[list[int], list[tuple[int, Match]]]:
        """f's candidate consumers, and those scoring at or above the threshold with their match."""
        chosen, hits = self.candidates(f)
        mentioned = self._mentions.get(f, ())
        found = []
        for g in chosen:
            if hits[g] or g in mentioned:
                m = self.score(f, g, hits[g])
                if m.score >= self.config.threshold:
                    found.append((g, m))
        return chosen, found
