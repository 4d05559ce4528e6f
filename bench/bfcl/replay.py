"""A ground-truth replay model: a Teacher that answers BFCL entries from BFCL's ground truth.

It recognises the entry from the opening messages of the conversation (the same messages
``runner.Conversation`` sends, so also over HTTP; in FC mode also from the tools offered, and for
multi-turn entries sharing a first turn from the user turns seen since), and answers:
- single-turn AST categories: the ground-truth calls with the first non-empty accepted value of
  each parameter ("" accepted alone means absent; a parameter the function doc lacks is left out
  when the answer allows its absence);
- relevance: a call of the first function with placeholder values (any call is correct);
- irrelevance, and a multi-turn step after its calls were executed: a text answer, no call;
- multi-turn: turn t (= number of no-call answers so far) gets all ground-truth calls of turn t
  at once, positional arguments turned into keywords by the API method's signature.
Prompt mode writes calls as BFCL's Python list text (Java/JavaScript literals for those
categories); FC mode returns native tool calls named as BFCL's ``convert_to_tool`` names them
('.' -> '_'). Categories that share questions (base / long_context) need one replay each.

``serve_replay`` serves any such Teacher as an OpenAI-compatible chat endpoint on loopback
(``engine.chat_server`` in its own thread and event loop, so synchronous clients such as BFCL's
own handler can use it too).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from bench.bfcl.data import Dataset, category_of, is_multi_turn, is_relevance, language_of
from bench.bfcl.runner import Conversation
from bench.bfcl.scoring import api_classes
from engine import wire
from engine.chat_server import chat_app, teacher_answer
from engine.errors import BadAnswer
from engine.loopback import serve_in_thread
from engine.records import FunctionSpec, Message, ToolCall
from engine.teacher import Completion, Usage

NO_CALL_TEXT = "I have no more function calls to make."
_PLACEHOLDER = {"string": "x", "integer": 1, "number": 1.0, "float": 1.0, "boolean": True, "array": [], "dict": {}, "object": {}}


def _key(messages: list[Message]) -> str:
    raw = orjson.dumps([[m.role, m.content or ""] for m in messages])
    return hashlib.sha1(raw).hexdigest()


def _tool_key(tool: FunctionSpec) -> bytes:
    """A tool as offered (name, description, schema): entries may share names but not schemas."""
    return orjson.dumps([tool.name, tool.description, tool.parameters], option=orjson.OPT_SORT_KEYS)


def _is_results(message: Message) -> bool:
    """A message carrying executed calls' outputs (FC: role tool; prompt: BFCL's user message)."""
    return message.role == "tool" or (message.role == "user" and (message.content or "").startswith("[{'role': 'tool'"))


def _first_accepted(options: list[Any], schema: dict[str, Any]) -> tuple[bool, Any]:
    """(present, value) for a parameter: the first accepted value, nested dict answers resolved."""
    for option in options:
        if option == "":
            continue
        if isinstance(option, dict) and schema.get("type") == "dict":
            return True, _pick_dict(option, schema.get("properties", {}))
        if isinstance(option, list) and option and all(isinstance(o, dict) for o in option) and schema.get("items", {}).get("type") == "dict":
            return True, [_pick_dict(o, schema["items"].get("properties", {})) for o in option]
        return True, option
    return False, None


def _pick_dict(answer: dict[str, list[Any]], properties: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, options in answer.items():
        if properties and key not in properties and "" in options:
            continue  # optional in the answer and unknown to the function doc: leaving it out is the answer
        present, value = _first_accepted(options if isinstance(options, list) else [options], properties.get(key, {}))
        if present:
            out[key] = value
    return out


def _ast_calls(entry: dict[str, Any], ground_truth: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    docs = {f["name"]: f for f in entry["function"]}
    calls = []
    for answer in ground_truth:
        name, params = next(iter(answer.items()))
        properties = docs.get(name, {}).get("parameters", {}).get("properties", {})
        calls.append((name, _pick_dict(params, properties)))
    return calls


def _relevance_call(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    doc = entry["function"][0]
    params = doc.get("parameters", {})
    props = params.get("properties", {})
    return [(doc["name"], {k: _PLACEHOLDER.get(props.get(k, {}).get("type", "string"), "x") for k in params.get("required", [])})]


def _multi_turn_calls(entry: dict[str, Any], turn: list[str]) -> list[tuple[str, dict[str, Any]]]:
    methods = {}
    for cls_name in entry["involved_classes"]:
        cls = api_classes()[cls_name]
        methods.update({n: f for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")})
    calls = []
    for text in turn:
        node = ast.parse(text, mode="eval").body
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        bound = inspect.signature(methods[node.func.id]).bind(None, *args, **kwargs)  # None stands for self
        calls.append((node.func.id, {k: v for k, v in list(bound.arguments.items())[1:]}))
    return calls


class ReplayTeacher:
    """Answers from BFCL's ground truth; ``categories`` limits which entries it recognises."""

    def __init__(self, dataset: Dataset, mode: str, *, categories: list[str] | None = None):
        self.name = f"replay:{dataset.version}:{mode}"
        self.mode = mode
        self.language = "Python"
        self.types: dict[tuple[str, str], str] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.ground_truth = dataset.ground_truth
        self.openings: dict[str, list[str]] = {}
        self.lengths: set[int] = set()
        self.turn_texts: dict[str, list[str | None]] = {}  # multi-turn: the user text opening turns 1..n
        self.tool_sets: dict[str, set[frozenset[bytes]]] = {}  # FC: every tool list the entry is offered
        for entry in dataset.entries:
            if categories is not None and category_of(entry["id"]) not in categories:
                continue
            convo = Conversation(entry, mode)
            convo.add_user(convo.entry["question"][0])
            key = entry["id"] if entry["id"] not in self.entries else f"{entry['id']}#{len(self.entries)}"  # BFCL repeats an id
            self.entries[key] = entry
            self.openings.setdefault(_key(convo.messages), []).append(key)
            self.lengths.add(len(convo.messages))
            if convo.tools is not None:  # FC: the functions are not in the messages; tell entries apart by them
                offers = {frozenset(map(_tool_key, convo.tools))}
                for turn in sorted(convo.entry.get("missed_function", {}), key=int):
                    convo.turn_messages(int(turn))  # adds the held-out functions to convo.tools, as the runner will
                    offers.add(frozenset(map(_tool_key, convo.tools or [])))
                self.tool_sets[key] = offers
            if is_multi_turn(category_of(entry["id"])):
                turns = range(1, len(entry["question"]))
                self.turn_texts[key] = [(convo.turn_messages(t) or [{}])[-1].get("content") for t in turns]

    def identify(self, messages: list[Message], tools: list[FunctionSpec] | None = None) -> dict[str, Any]:
        offered = frozenset(map(_tool_key, tools or []))
        for n in sorted(self.lengths, reverse=True):
            ids = self.openings.get(_key(messages[:n])) if n <= len(messages) else None
            if ids and self.tool_sets:
                ids = [i for i in ids if offered in self.tool_sets[i]]
            if ids:
                # Entries may share their first turn (same question, same files): the user
                # turns seen since tell them apart; if even those agree, the first one answers.
                later = [m.content for m in messages[n:] if m.role == "user" and not _is_results(m)]
                fitting = [i for i in ids if self.turn_texts.get(i, [])[: len(later)] == later]
                return self.entries[(fitting or ids)[0]]
        raise BadAnswer(f"replay: no BFCL entry opens with {wire.quote(messages[0].content or '') if messages else 'nothing'}")

    def answer(self, entry: dict[str, Any], messages: list[Message]) -> list[tuple[str, dict[str, Any]]]:
        category = category_of(entry["id"])
        if is_multi_turn(category):
            if _is_results(messages[-1]):
                return []
            turn = sum(1 for m in messages if m.role == "assistant" and not m.tool_calls and m.content == NO_CALL_TEXT)
            return _multi_turn_calls(entry, self.ground_truth[entry["id"]][turn])
        if "irrelevance" in category:
            return []
        if is_relevance(category):
            return _relevance_call(entry)
        return _ast_calls(entry, self.ground_truth[entry["id"]])

    def message_for(self, entry: dict[str, Any], calls: list[tuple[str, dict[str, Any]]]) -> Message:
        """``calls`` written as an answer to ``entry``: its language's literals, FC or prompt."""
        self.language = language_of(category_of(entry["id"]))
        self.types = {(f["name"], p): spec.get("type", "") for f in entry["function"]
                      for p, spec in f.get("parameters", {}).get("properties", {}).items()}
        return self._message(calls)

    def _message(self, calls: list[tuple[str, dict[str, Any]]]) -> Message:
        if not calls:
            return Message(role="assistant", content=NO_CALL_TEXT)
        if self.mode == "fc":
            if self.language != "Python":  # BFCL's FC schemas make every Java/JS parameter a string
                calls = [(name, {k: self.fc_string(v, self.types.get((name, k), "")) for k, v in args.items()}) for name, args in calls]
            return Message(role="assistant", tool_calls=[
                ToolCall(name=name.replace(".", "_"), arguments=args, id=f"call_{i}") for i, (name, args) in enumerate(calls)
            ])
        text = ", ".join(f"{name}({self.arguments(name, args)})" for name, args in calls)
        return Message(role="assistant", content=f"[{text}]")

    def arguments(self, name: str, args: dict[str, Any]) -> str:
        return ", ".join(f"{k}={self.render(v, self.types.get((name, k), ''))}" for k, v in args.items())

    def fc_string(self, value: Any, declared: str) -> str:
        """A Java/JS value "in string representation", as BFCL's FC function docs ask for it."""
        return value if isinstance(value, str) and declared.lower() in ("string", "char", "") else self.render(value, declared)

    def render(self, value: Any, declared: str) -> str:
        """A value as source text of the entry's language: Python repr; for Java/JavaScript a
        literal of the declared type (BFCL's ground truth holds non-string objects as source text)."""
        if self.language == "Python":
            return repr(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.language == "Java" and declared == "long" and isinstance(value, int):
            return f"{value}L"
        if self.language == "Java" and declared == "float" and isinstance(value, (int, float)):
            return f"{value}f"
        if isinstance(value, str) and declared.lower() not in ("string", "char", ""):
            return value
        return orjson.dumps(value).decode()

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, *, tool_choice: Any = None,
                   response_format: Any = None, temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None) -> Completion:
        entry = self.identify(messages, tools)
        message = self.message_for(entry, self.answer(entry, messages))
        return Completion(message=message, finish_reason="tool_calls" if message.tool_calls else "stop", usage=Usage(), model=self.name)

    async def aclose(self) -> None:
        return None


# -- serving a Teacher over loopback -------------------------------------------------------------


def serve_replay(teacher: Any, *, host: str = "127.0.0.1", port: int = 0) -> contextlib.AbstractContextManager[str]:
    """Serve ``teacher`` at ``http://host:port/v1`` from a background thread; yields the base URL."""
    return serve_app(lambda: chat_app(teacher_answer(teacher), model=teacher.name), host=host, port=port)


@contextlib.contextmanager
def serve_app(make_app: Callable[[], web.Application], *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the OpenAI-compatible app ``make_app()`` builds (in the server's own thread) at ``http://host:port/v1``."""
    with serve_in_thread(make_app, host=host, port=port, name="bfcl-replay-server") as root:
        yield root + "/v1"
