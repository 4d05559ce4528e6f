"""A deterministic simulator teacher: the same (messages, tools, seed) always gives the same answer.

It exists so the whole pipeline and the throughput benchmarks run without a model. It is not
a quality claim; it follows the protocol the real teacher is prompted with, writing data
realistic enough that the pipeline's gates (execution, verification) are exercised:

- the translation prompts (recognised by ``response_format``'s schema name or by their
  section headers): it plays the user and the translator, writing requests that state real
  values from the toolkit state and reading them back into calls (``sim_user``);
- the last user message ends with ``[Hint]: <step> then <step> ...``, each step a BFCL python
  list ``[f(a=1), f(a=2)]``: the calls of the next step not yet made go out together in one
  message (steps done = assistant messages with calls since that user message), then a text
  summary of the tool outputs. A hint without `` then `` is one step;
- ``[Hint]: miss function`` / ``miss param`` / ``irrelevant``: a text answer saying so;
- any other ``response_format`` with a JSON schema: a small JSON object valid for that schema;
- tools and no hint: call the first tool (or the one ``tool_choice`` names) with
  schema-valid placeholder arguments, then summarise its output;
- otherwise a short deterministic text.

A script (``sim:FILE.json``) can pin answers: a list of ``{"match": "substring of the last
user message", "content": ..., "tool_calls": [{"name": ..., "arguments": {...}}]}``, first
match wins, anything unmatched falls back to the rules above.
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import msgspec
import orjson

from engine.errors import UserInputError
from engine.records import FunctionSpec, Message, ToolCall
from engine.teacher import Completion, Usage
from engine.teachers import sim_user
from engine.teachers.sim_schema import WORDS, example_value
from engine.teachers.sim_values import digest

_HINT = re.compile(r"\[Hint\]\s*:?\s*(.*)\Z", re.S | re.I)
_MISS_FUNC = re.compile(r"^miss(?:ed|ing)?[\s_-]*func", re.I)
_MISS_PARAM = re.compile(r"^miss(?:ed|ing)?[\s_-]*param(?:eter)?s?\s*[:(]?\s*([\w\s,]*)", re.I)
_THEN = re.compile(r"\s+then\s+", re.I)


class Hint(msgspec.Struct, kw_only=True, frozen=True):
    """What a ``[Hint]`` block asks for: calls to make, or a labelled non-call answer."""

    label: str = "call"  # call | miss_func | miss_param | irrelevant
    steps: tuple[tuple[ToolCall, ...], ...] = ()  # calls of one step are independent: one message
    missing: tuple[str, ...] = ()

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(c for step in self.steps for c in step)


def parse_hint(text: str) -> Hint | None:
    """The hint at the end of a user message, or None. Parses with ``ast``, never evaluates."""
    m = _HINT.search(text)
    if m is None:
        return None
    body = m.group(1).strip()
    if _MISS_FUNC.match(body):
        return Hint(label="miss_func")
    if (mp := _MISS_PARAM.match(body)) is not None:
        names = tuple(n for n in re.split(r"[\s,]+", mp.group(1)) if n)
        return Hint(label="miss_param", missing=names)
    if body.lower().startswith(("irrelevan", "none", "no function")):
        return Hint(label="irrelevant")
    steps = (tuple(parse_calls(part)) for part in split_steps(body))
    return Hint(steps=tuple(step for step in steps if step))


def split_steps(body: str) -> list[str]:
    """``[f(a=1)] then [g(b=2)]`` -> its steps; a `` then `` inside a string or a list is no separator."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and (m := _THEN.match(body, i)) is not None:
            parts.append(body[start:i])
            i = start = m.end()
            continue
        i += 1
    return [p for p in (*parts, body[start:]) if p.strip()]


def parse_calls(text: str) -> list[ToolCall]:
    """``[f(a=1), mod.g(b=[1, 2])]`` -> ToolCalls. Non-literal values (``x=other(1)``, ``y=unknown``)
    are kept as their source text: a hint may be imperfect, the answer is still data."""
    text = text.strip()
    if not text.startswith("["):
        text = f"[{text}]"
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return []
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        args = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
        calls.append(ToolCall(name=name, arguments=args))
    return calls


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return ast.unparse(node)


# -- the teacher ------------------------------------------------------------------------------


class ScriptRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    match: str  # substring of the last user message
    content: str | None = None
    tool_calls: list[ToolCall] = []


def load_script(path: str | Path) -> list[ScriptRule]:
    path = Path(path)
    try:
        return msgspec.json.decode(path.read_bytes(), type=list[ScriptRule])
    except FileNotFoundError:
        raise UserInputError(f"sim script {str(path)!r} does not exist; pass a JSON file of [{{\"match\": ..., \"content\": ...}}] rules or a seed "
                             f"(sim:42)") from None
    except msgspec.ValidationError as err:
        raise UserInputError(f"sim script {str(path)!r} is invalid ({err}); "
                             "each rule needs \"match\" and \"content\" and/or \"tool_calls\"") from None
    except msgspec.DecodeError as err:
        raise UserInputError(f"sim script {str(path)!r} is not valid JSON ({err}); fix the file") from None


def count_tokens(text: str | None) -> int:
    """The simulator's token count: whitespace-separated words."""
    return len(text.split()) if text else 0


class SimTeacher:
    """Deterministic teacher; see the module docstring for its rules."""

    def __init__(self, *, seed: int = 0, latency_ms: float = 0.0, script: str | Path | list[ScriptRule] | None = None,
                 model: str = "sim"):
        self.seed = seed
        self.latency_s = latency_ms / 1000.0
        self.rules = load_script(script) if isinstance(script, (str, Path)) else list(script or [])
        self.model = model
        self.name = model if seed == 0 else f"{model}:{seed}"

    def __repr__(self) -> str:
        return f"SimTeacher(name={self.name!r}, latency_ms={self.latency_s * 1000:g}, rules={len(self.rules)})"

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
                   tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
                   temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self.answer(messages, tools, tool_choice=tool_choice, response_format=response_format, seed=seed)

    async def aclose(self) -> None:
        """Nothing to release; present because the Teacher protocol requires it."""

    def answer(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *,
               tool_choice: str | dict[str, Any] | None = None, response_format: dict[str, Any] | None = None,
               seed: int | None = None) -> Completion:
        """The synchronous core of ``chat`` (the loopback server calls it directly)."""
        salt = self.seed * 1_000_003 + (seed or 0)
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        query = (messages[last_user].content or "") if last_user >= 0 else ""
        since = messages[last_user + 1:]
        made = [c for m in since if m.role == "assistant" for c in m.tool_calls]
        msg = self._decide(messages, query, since, made, tools or [], tool_choice, response_format, salt, len(messages))
        prompt_tokens = sum(count_tokens(m.content) for m in messages)
        completion_tokens = count_tokens(msg.content) + sum(1 + len(c.arguments) for c in msg.tool_calls)
        return Completion(message=msg, finish_reason="tool_calls" if msg.tool_calls else "stop",
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens), model=self.model)

    def _decide(self, messages: list[Message], query: str, since: list[Message], made: list[ToolCall], tools: list[FunctionSpec],
                tool_choice: Any, response_format: dict[str, Any] | None, salt: int, step: int) -> Message:
        for rule in self.rules:
            if rule.match in query:
                return Message(role="assistant", content=rule.content, tool_calls=[_with_id(c, salt, step, i) for i, c in enumerate(rule.tool_calls)])
        if (task := sim_user.task_of(messages, response_format)) is not None:
            return Message(role="assistant", content=orjson.dumps(sim_user.answer(*task, response_format, salt)).decode())
        if response_format is not None:
            return Message(role="assistant", content=orjson.dumps(_format_value(response_format, query, salt)).decode())
        hint = parse_hint(query)
        if hint is not None and hint.label != "call":
            return Message(role="assistant", content=_label_text(hint))
        done = sum(1 for m in since if m.role == "assistant" and m.tool_calls)
        if hint is not None and done < len(hint.steps):
            return Message(role="assistant", tool_calls=[_with_id(c, salt, step, i) for i, c in enumerate(hint.steps[done])])
        forced = _forced_tool(tool_choice, tools)
        if tools and tool_choice != "none" and not made and hint is None:
            spec = forced or tools[0]
            call = ToolCall(name=spec.name, arguments=example_value(spec.parameters, "", salt) or {})
            return Message(role="assistant", tool_calls=[_with_id(call, salt, step, 0)])
        outputs = [m for m in since if m.role == "tool"]
        if outputs:
            return Message(role="assistant", content=_summary(outputs))
        words = " ".join(query.split()[:12])
        return Message(role="assistant", content=f"Here is my answer ({WORDS[digest(query, salt) % len(WORDS)]}): {words}".rstrip(": "))


def _with_id(call: ToolCall, salt: int, step: int, index: int) -> ToolCall:
    return ToolCall(name=call.name, arguments=dict(call.arguments), id=f"call_{digest(call.name, salt, step, index) % 16**12:012x}")


def _forced_tool(tool_choice: Any, tools: list[FunctionSpec]) -> FunctionSpec | None:
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        return next((t for t in tools if t.name == name), None)
    return None


def _format_value(response_format: dict[str, Any], query: str, salt: int) -> Any:
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return example_value(spec.get("schema") or {"type": "object"}, "", digest(query, salt))
    return example_value(response_format.get("schema") or {"type": "object"}, "", digest(query, salt))


def _label_text(hint: Hint) -> str:
    if hint.label == "miss_func":
        return "I can't do that: none of the available functions provides the functionality this request needs."
    if hint.label == "miss_param":
        what = f"the {', '.join(hint.missing)}" if hint.missing else "the value you left out"
        return f"I need more information to do this. Could you tell me {what}?"
    return "None of the available functions fits this request, so I can't call anything for it."


def _summary(outputs: list[Message]) -> str:
    """What the tool outputs said. The answer is training data, so a word the hints used must not
    leak into it even when an output happens to contain it."""
    parts = [f"{m.name or 'the call'}: {_gist(m.content or '')}" for m in outputs]
    return re.sub(r"(?i)\bhint", "tip", "Done. " + "; ".join(parts) + ".")


def _gist(content: str) -> str:
    """A few facts of one output, as a person would report them: up to three scalar fields, else its start."""
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return " ".join(content.split())[:80]
    if isinstance(value, dict):
        facts = [f"{k.replace('_', ' ')} {v}" for k, v in value.items() if isinstance(v, (str, int, float))][:3]
        lists = [f"{len(v)} {k.replace('_', ' ')}" for k, v in value.items() if isinstance(v, list)][:1]
        if facts or lists:
            return ", ".join(facts + lists)
    return " ".join(content.split())[:80]
