"""The paper's LLM judges: the dependency judge (adjacency list) and the nested check (yes/no).

Each is a prompt (graph/prompts/*.txt, or the same file names in a user's ``prompts_dir``)
plus a parser that takes whatever a model writes: code fences, prose around the JSON, single
quotes, trailing commas, Python literals. Model text is parsed with ``json`` and
``ast.literal_eval``, never evaluated. Answers are cached on disk keyed by the teacher's name
and the rendered prompt (which holds the target, the candidate set and the template), so a
rebuilt graph costs no second call. Calls run concurrently through the ``Teacher`` protocol,
at most ``concurrency`` at once, asked as ``engine.structured.ask_json`` asks and retried by
``engine.retry.with_reasks`` (an unreadable answer at once, a transient error after a jittered
backoff that honours Retry-After).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import os
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import msgspec
import orjson
from msgspec import Meta

from engine.atomic import write_atomic
from engine.errors import BadAnswer, RetryableError, UserInputError
from engine.records import FunctionSpec
from engine.retry import with_reasks
from engine.structured import ask_json
from engine.teacher import Teacher

T = TypeVar("T")
_PROMPTS = Path(__file__).parent / "prompts"
_PLACEHOLDERS = {"dependency.txt": ("target", "candidates"), "nested.txt": ("first", "second")}
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.S)
_YES_NO = re.compile(r"\b(yes|no|true|false)\b", re.I)
_MAX_JSON = 200_000  # longer replies are not an adjacency list; refuse before parsing


class JudgeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the LLM judges run when a teacher is given to ``build_graph``."""

    max_candidates: Annotated[int, Meta(ge=1, le=200, description="candidates shown per dependency prompt (the paper: 30)")] = 30
    concurrency: Annotated[int, Meta(ge=1, le=4096, description="teacher calls in flight at once")] = 16
    attempts: Annotated[int, Meta(ge=1, le=20, description="tries per prompt when the answer cannot be parsed or the call fails transiently")] = 3
    mode: Annotated[Literal["union", "replace"], Meta(description=(
        "union: matcher edges plus the judge's; replace: the judge decides among its candidates "
        "(the paper), the matcher's edges kept only where the judge's answer failed"))] = "union"
    nested: Annotated[bool, Meta(description="also ask the nested judge about every edge (sets the edge's `nested` flag used by Insert)")] = False
    structured: Annotated[bool, Meta(description="send a JSON-schema response_format (for teachers that support structured output)")] = True
    temperature: Annotated[float, Meta(ge=0.0, le=2.0, description="sampling temperature of the first try; retries add 0.3 each")] = 0.0
    max_tokens: Annotated[int, Meta(ge=16, le=32768, description="completion budget per judge call")] = 512
    prompts_dir: Annotated[str, Meta(description="folder with your own dependency.txt / nested.txt ($placeholders as in graph/prompts); empty: "
                                                 "built-in prompts")] = ""
    cache_dir: Annotated[str, Meta(description="answer cache folder; empty: $MAGNET_CACHE/graph_judge (default ~/.cache/magnet)")] = ""
    use_cache: Annotated[bool, Meta(description="read and write the answer cache")] = True


class NestedVerdict(NamedTuple):
    nested: bool
    reason: str


def load_prompt(name: str, prompts_dir: str = "") -> string.Template:
    """The template ``name`` from ``prompts_dir`` when it has one, else the built-in one."""
    path = Path(prompts_dir) / name if prompts_dir and (Path(prompts_dir) / name).is_file() else _PROMPTS / name
    if prompts_dir and not Path(prompts_dir).is_dir():
        raise UserInputError(f"prompts_dir {prompts_dir!r} is not a folder; point it at a folder holding {name}")
    template = string.Template(path.read_text(encoding="utf-8"))
    found = {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)}
    missing = [p for p in _PLACEHOLDERS[name] if p not in found]
    if missing:
        raise UserInputError(f"prompt {path}: missing placeholder(s) {', '.join('$' + m for m in missing)}; add them to the template")
    return template


def describe(spec: FunctionSpec) -> str:
    """One compact JSON line: what a judge needs to know about a function's inputs and outputs."""
    props = spec.parameters.get("properties") or {}
    params = {k: (v.get("type", "any") if isinstance(v, dict) else "any") for k, v in props.items()}
    returns: Any = spec.returns
    if isinstance(returns, dict):
        inner = returns.get("items") if returns.get("type") == "array" else returns
        fields = (inner or {}).get("properties") if isinstance(inner, dict) else None
        returns = ({k: (v.get("type", "any") if isinstance(v, dict) else "any") for k, v in fields.items()}
                   if isinstance(fields, dict) else returns.get("type", "any"))
        if spec.returns.get("type") == "array":
            returns = [returns]
    return orjson.dumps({"name": spec.name, "description": spec.description, "parameters": params,
                         "required": spec.parameters.get("required") or [], "returns": returns}).decode()


def _balanced(text: str, start: int) -> str | None:
    """The bracketed value opening at ``start``, skipping brackets inside quoted strings."""
    depth, quote, escape = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            escape = not escape and ch == "\\"
            if ch == quote and not escape:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    # Python-literal spelling covers single quotes and trailing commas; JSON's words map over.
    pythonic = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", text)))
    try:
        return ast.literal_eval(pythonic)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def extract_json(text: str) -> Any:
    """The first JSON object or list in a model's reply (fenced blocks first), or None."""
    if not text or len(text) > _MAX_JSON:
        return None
    for chunk in [*_FENCE.findall(text), text]:
        for match in re.finditer(r"[{\[]", chunk):
            candidate = _balanced(chunk, match.start())
            if candidate is None:
                continue
            value = _loads(candidate)
            if isinstance(value, (dict, list)):
                return value
    return None


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\n]", value) if v.strip()]
    if not isinstance(value, (list, tuple)):
        return []
    out = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("name") or item.get("function") or ""
        if isinstance(item, str):
            out.append(item.strip().strip("`'\"").removesuffix("()").strip())
    return out


def parse_adjacency(text: str, target: str, candidates: list[str]) -> list[str]:
    """Related candidate names from a reply like ``{"target": ["a", "b"]}``; unknown names and the
    target itself dropped; BadAnswer when no adjacency list can be found."""
    data = extract_json(text)
    if isinstance(data, dict):
        if target in data:
            value = data[target]
        elif not data:  # "{}": nothing depends on the target
            value = []
        elif len(data) == 1:
            value = next(iter(data.values()))
        elif data and all(isinstance(v, bool) for v in data.values()):  # {"candidate": true, ...}
            value = [k for k, v in data.items() if v]
        else:
            value = next((v for v in data.values() if isinstance(v, list)), None)
    else:
        value = data
    if not isinstance(value, (list, str)):
        raise BadAnswer(f"dependency judge for {target!r}: no adjacency list in the reply", text=text[:500])
    known = {c: c for c in candidates} | {c.lower(): c for c in candidates}
    related: list[str] = []
    for name in _names(value):
        hit = known.get(name) or known.get(name.lower())
        if hit and hit != target and hit not in related:
            related.append(hit)
    return related


def parse_nested(text: str) -> NestedVerdict:
    """yes/no and a one-line reason from JSON (``nested``/``answer`` keys) or plain text."""
    data = extract_json(text)
    if isinstance(data, dict):
        answer = next((data[k] for k in ("nested", "answer", "is_nested", "result") if k in data), None)
        reason = str(next((data[k] for k in ("reason", "explanation", "why") if k in data), "")).strip()
        if isinstance(answer, bool):
            return NestedVerdict(answer, reason.splitlines()[0] if reason else "")
        if isinstance(answer, str) and (m := _YES_NO.search(answer)):
            return NestedVerdict(m.group(1).lower() in ("yes", "true"), reason.splitlines()[0] if reason else "")
    m = _YES_NO.search(text or "")
    if not m:
        raise BadAnswer("nested judge: no yes/no in the reply", text=(text or "")[:500])
    rest = text[m.end():].lstrip(" .,:;-\n").splitlines()
    return NestedVerdict(m.group(1).lower() in ("yes", "true"), rest[0].strip() if rest else "")


class JudgeCache:
    """One small JSON file per answer, written atomically so concurrent builds never tear one."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    @staticmethod
    def default_folder() -> Path:
        return Path(os.environ.get("MAGNET_CACHE") or Path.home() / ".cache" / "magnet") / "graph_judge"

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any:
        if self.folder is None:
            return None
        try:
            return orjson.loads(self._path(key).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None

    def put(self, key: str, value: Any) -> None:
        if self.folder is None:
            return
        write_atomic(self._path(key), orjson.dumps(value))


class Judge:
    """Runs the dependency and nested prompts through a teacher, with cache, retries and a limit."""

    def __init__(self, teacher: Teacher, config: JudgeConfig | None = None):
        self.teacher = teacher
        self.config = config or JudgeConfig()
        self.dependency_prompt = load_prompt("dependency.txt", self.config.prompts_dir)
        self.nested_prompt = load_prompt("nested.txt", self.config.prompts_dir)
        folder = Path(self.config.cache_dir) if self.config.cache_dir else JudgeCache.default_folder()
        self.cache = JudgeCache(folder if self.config.use_cache else None)
        self._limit = asyncio.Semaphore(self.config.concurrency)
        self.calls = self.cached = self.failed = 0

    async def _ask(self, prompt: str, schema: dict[str, Any], parse: Callable[[str], T], encode: Callable[[T], Any],
                   decode: Callable[[Any], T]) -> T | None:
        key = hashlib.sha256(f"{self.teacher.name}\n{prompt}".encode()).hexdigest()
        hit = self.cache.get(key)
        if hit is not None:
            self.cached += 1
            return decode(hit)

        async def ask(attempt: int, last: BadAnswer | None) -> T:
            async with self._limit:  # held for the call only, not while a failed one backs off
                self.calls += 1
                value, _ = await ask_json(self.teacher, prompt, schema, name="answer", structured=self.config.structured,
                                          temperature=self.config.temperature + 0.3 * attempt,
                                          max_tokens=self.config.max_tokens, seed=attempt, parse=parse)
            return value

        try:
            value = await with_reasks(ask, attempts=self.config.attempts, transient=True)
        except (BadAnswer, RetryableError):
            self.failed += 1
            return None
        self.cache.put(key, encode(value))
        return value

    async def related(self, target: FunctionSpec, candidates: list[FunctionSpec]) -> list[str] | None:
        """The candidates the judge says depend on ``target``'s output; None when it never answered usably."""
        candidates = candidates[: self.config.max_candidates]
        names = [c.name for c in candidates]
        if not names:
            return []
        prompt = self.dependency_prompt.safe_substitute(
            target=describe(target), target_name=target.name, candidates="\n".join(describe(c) for c in candidates))
        schema = {"type": "object", "required": [target.name], "additionalProperties": False,
                  "properties": {target.name: {"type": "array", "items": {"type": "string", "enum": names}}}}
        return await self._ask(prompt, schema, lambda text: parse_adjacency(text, target.name, names), list, list)

    async def nested(self, first: FunctionSpec, second: FunctionSpec) -> NestedVerdict | None:
        prompt = self.nested_prompt.safe_substitute(first=describe(first), second=describe(second))
        schema = {"type": "object", "required": ["nested", "reason"], "additionalProperties": False,
                  "properties": {"nested": {"type": "string", "enum": ["yes", "no"]}, "reason": {"type": "string"}}}
        return await self._ask(prompt, schema, parse_nested, list, lambda v: NestedVerdict(bool(v[0]), str(v[1])))

    async def related_all(self, jobs: list[tuple[FunctionSpec, list[FunctionSpec]]]) -> list[list[str] | None]:
        return list(await asyncio.gather(*(self.related(t, c) for t, c in jobs)))

    async def nested_all(self, pairs: list[tuple[FunctionSpec, FunctionSpec]]) -> list[NestedVerdict | None]:
        return list(await asyncio.gather(*(self.nested(f, g) for f, g in pairs)))
