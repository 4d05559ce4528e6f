"""Parsers: corpora of real-looking messy answers, fuzzing, and round trips through every syntax.

messy_answers.jsonl is the first corpus; messy_answers_attempts.jsonl holds one class per way a text
that attempts a call used to be misread (other JSON shapes, backticks, code after a call, duplicate
keys, stray braces in Hermes blocks, single-quoted dicts, broken JSON), each case with the functions
offered when the outcome depends on them."""

from __future__ import annotations

import json
import keyword
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from distill.parsers import (
    attempts_call,
    format_bfcl,
    format_call,
    format_hermes,
    parse_bfcl,
    parse_hermes,
    parse_json_calls,
    parse_message,
    parse_text,
    validate_call,
)
from engine.errors import BadAnswer
from engine.records import FunctionSpec, Message, ToolCall
from graph.schema import ArgumentError

_DATA = Path(__file__).parent / "data"
CORPUS = [json.loads(line) for line in (_DATA / "messy_answers.jsonl").read_text().splitlines()]
ATTEMPTS = [json.loads(line) for line in (_DATA / "messy_answers_attempts.jsonl").read_text().splitlines()]


def _specs(offered: dict[str, list[str]] | None) -> dict[str, FunctionSpec] | None:
    """Offered functions of a corpus case: name -> its parameters in order (for positional calls)."""
    if offered is None:
        return None
    return {n: FunctionSpec(name=n, description="", parameters={"type": "object", "properties": {p: {} for p in ps}})
            for n, ps in offered.items()}


@pytest.mark.parametrize("case", CORPUS + ATTEMPTS, ids=[c["note"] for c in CORPUS + ATTEMPTS])
def test_messy_corpus(case):
    specs = _specs(case.get("offered"))
    if case["expect"] == "bad":
        with pytest.raises(BadAnswer) as err:
            parse_text(case["text"], specs)
        assert err.value.text == case["text"]  # the dead letter can quote what the model wrote
        assert attempts_call(case["text"], specs)  # only an attempted call is ever re-asked
    else:
        got = [{"name": c.name, "arguments": c.arguments} for c in parse_text(case["text"], specs)]
        assert got == case["expect"]
        assert attempts_call(case["text"], specs) == bool(got)


def test_corpus_is_substantial():
    assert len(CORPUS) >= 30 and sum(c["expect"] == "bad" for c in CORPUS) >= 6
    classes = {"shape", "backticks", "code_after", "duplicate_keys", "hermes_stray", "single_quoted", "broken_json"}
    assert {c["class"] for c in ATTEMPTS} == classes and len(ATTEMPTS) >= 40
    for cls in classes:  # each class has cases on both sides of the line, or at least several bad ones
        cases = [c for c in ATTEMPTS if c["class"] == cls]
        assert len(cases) >= 5 and sum(c["expect"] == "bad" for c in cases) >= 3, cls


def test_positional_arguments_mapped_by_schema_order():
    spec = FunctionSpec(name="f", description="", parameters={"type": "object", "properties": {"a": {}, "b": {}}})
    assert parse_text('[f("x", b=2)]', {"f": spec})[0].arguments == {"a": "x", "b": 2}
    with pytest.raises(BadAnswer):
        parse_text("[f(1, 2, 3)]", {"f": spec})


def test_openai_tool_calls_win_over_content():
    msg = Message(role="assistant", content="[other(x=1)]", tool_calls=[ToolCall(name="f", arguments={"a": 1}, id="c1")])
    assert parse_message(msg) == [ToolCall(name="f", arguments={"a": 1}, id="c1")]


def test_validate_call_coerces_safely_and_rejects():
    spec = FunctionSpec(name="f", description="", parameters={
        "type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string", "enum": ["a", "b"]}},
        "required": ["n"]})
    assert validate_call(ToolCall(name="f", arguments={"n": "3"}), {"f": spec}).arguments == {"n": 3}
    for bad in ({"n": "three"}, {"s": "a"}, {"n": 1, "s": "c"}, {"n": 1, "zz": 0}):
        with pytest.raises(ArgumentError):
            validate_call(ToolCall(name="f", arguments=bad), {"f": spec})
    with pytest.raises(ArgumentError):
        validate_call(ToolCall(name="g", arguments={}), {"f": spec})


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_raises_anything_but_badanswer(text):
    try:
        calls = parse_text(text)
    except BadAnswer:
        return
    assert all(isinstance(c, ToolCall) and isinstance(c.arguments, dict) for c in calls)


# Texts that look like calls: random text spliced into call-shaped templates reaches deeper code paths.
_SHAPES = ["[{}]", "<tool_call>{}</tool_call>", "```json\n{}\n```", '{{"name": "f", "arguments": {}}}', "f({})", "[f(a={})]"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_SHAPES), st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_call_shaped_garbage_never_raises_anything_but_badanswer(shape, text):
    try:
        parse_text(shape.format(text))
    except BadAnswer:
        pass


_names = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s not in ("true", "false", "null", "none"))
_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)
_calls = st.lists(st.builds(lambda n, a: ToolCall(name=n, arguments=a), _names, st.dictionaries(_names, _values, max_size=4)),
                  min_size=1, max_size=3)


def _plain(calls):
    return [(c.name, c.arguments) for c in calls]


@settings(max_examples=100, deadline=None)
@given(_calls)
def test_round_trip_every_syntax(calls):
    as_json = json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls])
    texts = {
        "bfcl": format_bfcl(calls),
        "hermes": format_hermes(calls),
        "json_fence": f"```json\n{as_json}\n```",
        "json_prose": f"Calling now: {as_json} ok",
    }
    for syntax, text in texts.items():
        assert _plain(parse_text(text)) == _plain(calls), syntax
    msg = Message(role="assistant", tool_calls=calls)
    assert _plain(parse_message(msg)) == _plain(calls)


# ---------------------------------------------------------------- the auto parser is never more lenient

_FLAT = [("name", "arguments"), ("name", "parameters"), ("function", "parameters"), ("tool", "args"),
         ("tool_name", "tool_input"), ("action", "action_input"), ("function_name", "arguments"), ("name", "input")]
_STRUCTURAL = list("{}[]()\"',:=;` \n")


def _as_json(calls, shape):
    name_key, arg_key = shape
    objs = [{name_key: c.name, arg_key: c.arguments} for c in calls]
    return json.dumps(objs if len(objs) > 1 else objs[0])


def _outcome(parse, text, specs=None):
    try:
        return _plain(parse(text, specs))
    except BadAnswer:
        return "bad"


def _mutate(data, text):
    """One structural edit strictly inside ``text`` (its first and last characters stay, so the unit
    still starts and ends where it did): the kind of slip a model makes in a call."""
    i = data.draw(st.integers(1, len(text) - 2), label="at")
    kind = data.draw(st.sampled_from(["insert", "delete", "replace", "none"]), label="edit")
    ch = data.draw(st.sampled_from(_STRUCTURAL), label="char")
    return {"insert": text[:i] + ch + text[i:], "delete": text[:i] + text[i + 1 :],
            "replace": text[:i] + ch + text[i + 1 :], "none": text}[kind]


@settings(max_examples=400, deadline=None)
@given(_calls, st.sampled_from(["bfcl", "json", "hermes"]), st.sampled_from(_FLAT), st.sampled_from(["whole", "fence", "prose"]), st.data())
def test_auto_never_more_lenient_than_the_specific_format(calls, syntax, shape, wrap, data):
    specific, unit = {"bfcl": (parse_bfcl, format_bfcl(calls)), "json": (parse_json_calls, _as_json(calls, shape)),
                      "hermes": (parse_hermes, format_hermes(calls))}[syntax]
    unit = _mutate(data, unit)
    if wrap == "prose":  # a known limit: in prose, code spans and fences inside string values are misread
        assume("`" not in unit)
    text = {"whole": unit, "fence": f"```{'json' if syntax == 'json' else 'python'}\n{unit}\n```",
            "prose": f"Let me do that: {unit}\nI will report back."}[wrap]
    auto = _outcome(parse_text, text)
    strict = _outcome(specific, unit if syntax != "hermes" else text)
    if auto not in ("bad", []):
        assert strict == auto, (text, strict)  # whatever auto accepts, the format's own parser accepts alike
    if strict != "bad":
        assert auto == strict, (text, auto)
    if auto == []:
        assert not attempts_call(text), text  # an attempted call is never silently "no call"


# Call-shaped texts that cannot parse: each holds a sign of an attempted call (module docstring).
_ATTEMPT_SHAPES = ["[f({}", "<tool_call>{}", '{{"name": "f", "arguments": {}', "```json\n{{'name': 'f', 'arguments': {}}}\n```",
                   "- `f(a=1, b={}`", "{{\"tool\": \"f\", \"args\": {}", "f(a=1, b={})\nx = 1", '{{"name": "f", "arguments": {{"a": 1, "a": {}}}}}']


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_ATTEMPT_SHAPES), st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_attempted_but_unparsable_is_a_bad_answer(shape, junk):
    text = shape.format(junk)
    assert attempts_call(text)
    outcome = _outcome(parse_text, text)
    assert outcome != []  # a call or a BadAnswer to re-ask, never a plain answer


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("fgab(){}[]\"':=,` \n-<>/_") + ["tool_call", "arguments", "args", "```json\n"]), max_size=40))
def test_no_call_exactly_when_no_attempt(pieces):
    text = "".join(pieces)  # call-ish characters and words, shuffled: deep paths of every stage
    outcome = _outcome(parse_text, text)
    if outcome != "bad":
        assert bool(outcome) == attempts_call(text), text


# ---------------------------------------------------------------- one generator per class that used to fail


@settings(max_examples=100, deadline=None)
@given(_calls, st.sampled_from(_FLAT), st.sampled_from(["{}", "```json\n{}\n```", "Calling: {} now.", "<tool_call>{}</tool_call>"]))
def test_other_json_shapes_are_calls(calls, shape, wrap):
    if wrap.startswith("<tool_call>"):  # Hermes holds one JSON value per block
        text = "\n".join(wrap.format(_as_json([c], shape)) for c in calls)
    else:
        text = wrap.format(_as_json(calls, shape))
    assert _plain(parse_text(text)) == _plain(calls)


@settings(max_examples=100, deadline=None)
@given(_calls, st.sampled_from(["Calling {}.", "- {}", "1. {}", "{}"]))
def test_calls_in_backticks_in_prose_and_bullets(calls, line):
    text = "Here is the plan:\n" + "\n".join(line.format(f"`{format_call(c)}`") for c in calls)
    assume("`" not in "".join(json.dumps(c.arguments) for c in calls))
    assert _plain(parse_text(text)) == _plain(calls)


@settings(max_examples=100, deadline=None)
@given(_calls, st.sampled_from(["bfcl", "json", "hermes"]),
       st.sampled_from(["print(result)", "x = 1", "import os", "for c in cities:", "result = f(a=1)"]),
       st.sampled_from(["\n{}", "\n```python\n{}\n```", "\n\n{}\n"]))
def test_code_after_a_call_is_a_bad_answer(calls, syntax, code, where):
    call_text = {"bfcl": format_bfcl(calls), "json": _as_json(calls, ("name", "arguments")), "hermes": format_hermes(calls)}[syntax]
    with pytest.raises(BadAnswer):
        parse_text(call_text + where.format(code))
    with pytest.raises(BadAnswer):
        parse_text(f"```python\n{call_text}\n{code}\n```")


@settings(max_examples=100, deadline=None)
@given(_calls, st.data(), st.sampled_from(["{}", "```json\n{}\n```", "<tool_call>{}</tool_call>", "Calling {} now"]))
def test_duplicate_json_keys_are_a_bad_answer(calls, data, wrap):
    call = data.draw(st.sampled_from(calls))
    assume(call.arguments)
    key = data.draw(st.sampled_from(sorted(call.arguments)))
    body = json.dumps(call.arguments)[1:-1]  # duplicate one argument: JSON would keep the last silently
    text = wrap.format(f'{{"name": "{call.name}", "arguments": {{{body}, {json.dumps(key)}: {json.dumps(call.arguments[key])}}}}}')
    with pytest.raises(BadAnswer):
        parse_text(text)
    with pytest.raises(BadAnswer):  # and in python syntax: {"k": 1, "k": 1} is a dict literal too
        parse_text(f"[{call.name}(d={{{json.dumps(key)}: 1, {json.dumps(key)}: 2}})]")


@settings(max_examples=100, deadline=None)
@given(_calls, st.sampled_from(["{", "}", "[", "]"]), st.sampled_from(["before", "after", "line"]))
def test_stray_brace_in_a_hermes_block_is_a_bad_answer(calls, brace, where):
    body = json.dumps({"name": calls[0].name, "arguments": calls[0].arguments})
    body = {"before": brace + body, "after": body + brace, "line": body + "\n" + brace}[where]
    with pytest.raises(BadAnswer):
        parse_text(f"<tool_call>\n{body}\n</tool_call>")


@settings(max_examples=100, deadline=None)
@given(_calls, st.sampled_from(["```json\n{}\n```", "{}", "<tool_call>{}</tool_call>", "Sure: {}"]))
def test_single_quoted_dict_is_a_bad_answer(calls, wrap):
    obj = [{"name": c.name, "arguments": c.arguments} for c in calls]
    with pytest.raises(BadAnswer):
        parse_text(wrap.format(repr(obj if len(obj) > 1 else obj[0])))  # python's repr: single-quoted keys


def test_offered_names_decide_bare_and_name_only_calls():
    specs = {"get_weather": FunctionSpec(name="get_weather", description="", parameters={
        "type": "object", "properties": {"city": {"type": "string"}}})}
    assert _plain(parse_text('get_weather("Paris")', specs)) == [("get_weather", {"city": "Paris"})]
    assert parse_text('get_weather("Paris")') == []  # without specs a positional call is no sign of one
    assert _plain(parse_text('{"name": "get_weather"}', specs)) == [("get_weather", {})]
    assert parse_text('{"name": "get_weather"}') == []
    with pytest.raises(BadAnswer, match="beside its name"):
        parse_text('{"name": "get_weather", "city": "Paris"}', specs)


@pytest.mark.parametrize(("parse", "text", "match"), [
    (parse_bfcl, "I will call [f(a=1)]", "not valid python"),
    (parse_json_calls, 'Calling {"name": "f", "arguments": {}}', "not valid JSON"),
    (parse_json_calls, '{"name": "Alice", "age": 3}', "not a function call"),
    (parse_hermes, '{"name": "f", "arguments": {}}', "no <tool_call> block"),
])
def test_specific_parsers_take_only_their_format(parse, text, match):
    with pytest.raises(BadAnswer, match=match) as err:
        parse(text)
    assert err.value.text == text


# ---------------------------------------------------------------- validation stores what the model said

_NUMBERS = FunctionSpec(name="f", description="", parameters={
    "type": "object", "required": ["x"],
    "properties": {"x": {"type": "number"}, "note": {"type": "string"}, "tags": {"type": "array", "items": {"type": "number"}},
                   "n": {"type": "integer"}, "opt": {"type": ["string", "null"]}}})


def test_validate_call_keeps_integers_for_numbers_and_explicit_nulls():
    call = ToolCall(name="f", arguments={"x": 3, "tags": [1, 2.5], "note": None, "opt": None}, id="c1")
    out = validate_call(call, {"f": _NUMBERS})
    assert out == call and type(out.arguments["x"]) is int and type(out.arguments["tags"][0]) is int
    assert list(out.arguments) == ["x", "tags", "note", "opt"]  # nothing dropped, order kept
    assert validate_call(ToolCall(name="f", arguments={"x": "2.5", "n": "4"}), {"f": _NUMBERS}).arguments == {"x": 2.5, "n": 4}
    for bad in ({"x": None}, {"x": 1, "zz": None}, {"x": True}, {"x": float("nan")}):  # null for a required one is reported
        with pytest.raises(ArgumentError):
            validate_call(ToolCall(name="f", arguments=bad), {"f": _NUMBERS})


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**15, 10**15) | st.floats(allow_nan=False, allow_infinity=False), st.booleans())
def test_a_fitting_number_is_never_rewritten(x, with_null):
    args = {"x": x, **({"note": None} if with_null else {})}
    out = validate_call(ToolCall(name="f", arguments=args), {"f": _NUMBERS}).arguments
    assert out == args and type(out["x"]) is type(x)
