"""engine/render.py: prompt mode equals BFCL's harness message for message; per-turn tools in
both modes; BFCL's call syntax and decoder mirrored; records a mode cannot express refused."""

from __future__ import annotations

import ast
import os
import tempfile

import pytest

os.environ.setdefault("BFCL_PROJECT_ROOT", tempfile.mkdtemp(prefix="bfcl_project_"))

import _records_factory as F  # noqa: E402

from bench.bfcl.data import ensure_bfcl, load_dataset  # noqa: E402
from engine import bfcl_prompts  # noqa: E402
from engine.errors import UserInputError  # noqa: E402
from engine.records import FunctionSpec, Message, ToolCall, Trajectory  # noqa: E402
from engine.render import (  # noqa: E402
    RenderError,
    call_text,
    calls_text,
    check_mode,
    decoded_call,
    render,
    render_pair,
    system_prompt,
)

ensure_bfcl()
from bfcl_eval.constants import default_prompts  # noqa: E402
from bfcl_eval.model_handler import utils as bfcl_utils  # noqa: E402

_FROM_BFCL = {"dict": "object", "float": "number"}


def test_prompt_texts_equal_bfcl_eval():
    for name in ("DEFAULT_SYSTEM_PROMPT", "DEFAULT_SYSTEM_PROMPT_WITHOUT_FUNC_DOC",
                 "DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC", "DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING"):
        assert getattr(bfcl_prompts, name) == getattr(default_prompts, name), name
    assert bfcl_prompts.PYTHON_HINT == bfcl_utils._get_language_specific_hint("multi_turn_miss_func")


# -- a BFCL entry as a record, rendered, against the harness's own conversation -----------------------


def _json_schema(doc):
    """BFCL's doc dialect -> JSON Schema (the inverse of render.bfcl_schema)."""
    if isinstance(doc, dict):
        out = {k: _json_schema(v) for k, v in doc.items()}
        if isinstance(out.get("type"), str):
            out["type"] = _FROM_BFCL.get(out["type"], out["type"])
        return out
    if isinstance(doc, list):
        return [_json_schema(v) for v in doc]
    return doc


def _spec(doc) -> FunctionSpec:
    return FunctionSpec(name=doc["name"], description=doc["description"], parameters=_json_schema(doc["parameters"]),
                        returns=_json_schema(doc.get("response", {})))


def _replay(entry, truth, mode):
    """Drive runner.Conversation through an entry with its ground truth (one step of calls per
    turn, then a text answer) and build the record of the same conversation."""
    from bench.bfcl.runner import ApiInstances, Conversation

    convo = Conversation(entry, mode)
    apis = ApiInstances(convo.entry)
    offered = [d["name"] for d in entry["function"]]
    missed = entry.get("missed_function", {})
    messages, turn_tools, tools_seen = [], [], []
    for turn, question in enumerate(entry["question"]):
        convo.add_user(convo.turn_messages(turn))
        offered = offered + [d["name"] for d in missed.get(str(turn), [])]
        turn_tools.append(offered)
        tools_seen.append(None if convo.tools is None else [t.name for t in convo.tools])
        messages.append(Message(role="user", content=question[0]["content"] if question else F.MISS_FUNC_FOLLOW_UP))
        if truth[turn]:
            decoded = bfcl_utils.default_decode_ast_prompting("[" + ", ".join(truth[turn]) + "]")
            calls = [ToolCall(name=n, arguments=a, id=f"call_{i}") for i, d in enumerate(decoded) for n, a in d.items()]
            text = calls_text(calls)
            answer = Message(role="assistant", content=text) if mode == "prompt" else Message(role="assistant", tool_calls=calls)
            convo.add_answer(answer)
            executed = bfcl_utils.default_decode_execute_prompting(text)  # what BFCL's loop executes and names
            assert executed == [decoded_call(c) for c in calls]
            outputs = [apis.execute(c) for c in executed]
            convo.add_results(executed, outputs)
            messages.append(Message(role="assistant", tool_calls=calls))
            messages.extend(Message(role="tool", content=o, tool_call_id=c.id) for c, o in zip(calls, outputs))
        convo.add_answer(Message(role="assistant", content="Done."))
        messages.append(Message(role="assistant", content="Done."))
    docs = entry["function"] + [d for turn in sorted(missed, key=int) for d in missed[turn]]
    traj = Trajectory(id=entry["id"], episode_id=entry["id"], polarity="positive", tools=[_spec(d) for d in docs],
                      turn_tools=turn_tools, messages=messages, teacher="ground-truth")
    return convo, traj, tools_seen


@pytest.fixture(scope="module")
def bfcl_entries():
    data = load_dataset("v3", ["multi_turn_base", "multi_turn_miss_func"], limit=3)
    return [(e, data.ground_truth[e["id"]]) for e in data.entries]


def test_prompt_mode_equals_the_bfcl_harness(bfcl_entries):
    restored = 0
    for entry, truth in bfcl_entries:
        convo, traj, _ = _replay(entry, truth, "prompt")
        (segment,) = render(traj, "prompt")
        assert segment.messages == convo.messages, entry["id"]
        assert segment.tools == [] and segment.trained == [m.role == "assistant" for m in convo.messages]
        restored += "missed_function" in entry
    assert restored == 3  # the miss_func entries, whose restoring turn lists the added functions


def test_fc_mode_follows_the_harness_tools_turn_by_turn(bfcl_entries):
    for entry, truth in bfcl_entries:
        convo, traj, tools_seen = _replay(entry, truth, "fc")
        segments = render(traj, "fc")
        assert len(segments) == 1 + len(entry.get("missed_function", {}))
        # the harness's tools at each turn are the tools block of the segment that turn belongs to
        users = [m for m in segments[-1].messages if m.role == "user"]
        per_turn, k = [], 0
        for turn in range(len(users)):
            if turn and str(turn) in entry.get("missed_function", {}):
                k += 1
            per_turn.append([s.name for s in segments[k].tools])
        assert per_turn == tools_seen
        assert [m.content for m in convo.messages if m.role == "user"] == [m.content for m in users]
        assert [(m.role, m.content) for m in segments[-1].messages] == [(m.role, m.content) for m in convo.messages]


# -- per-turn tools --------------------------------------------------------------------------------


def test_miss_func_in_prompt_mode():
    (seg,) = render(F.miss_func_trajectory(), "prompt")
    system, users = seg.messages[0], [m.content for m in seg.messages if m.role == "user"]
    assert system.role == "system" and system.content == system_prompt(F.tools()[:2])
    assert "'name': 'search_flights'" in system.content and "book_flight" not in system.content
    assert "Note that the provided function is in Python 3 syntax." in system.content
    assert all("book_flight" not in m.content for m in seg.messages[:7])  # absent until it is added back
    restoring = users[3]  # turn 0, its results, turn 1, then the restoring turn
    assert restoring.startswith("[{'name': 'book_flight', 'description': 'Book a flight by id for passengers.', "
                                "'parameters': {'type': 'dict'")
    assert restoring.endswith("}]\n" + F.MISS_FUNC_FOLLOW_UP)
    assert seg.messages[-3].content.startswith("[book_flight(flight_id='UA12', ")
    assert seg.trained == [m.role == "assistant" for m in seg.messages]


def test_miss_func_in_fc_mode_is_one_segment_per_tools_epoch():
    first, second = render(F.miss_func_trajectory(), "fc")
    assert [s.name for s in first.tools] == ["search_flights", "get_weather"]
    assert [s.name for s in second.tools] == ["search_flights", "get_weather", "book_flight"]
    assert first.messages == second.messages[:len(first.messages)]  # segment 0 is the conversation up to the restoring turn
    restoring = second.messages[len(first.messages)]
    assert restoring == Message(role="user", content=F.MISS_FUNC_FOLLOW_UP)
    assert not any(m.role == "system" for m in second.messages)
    trained = lambda seg: [i for i, t in enumerate(seg.trained) if t]  # noqa: E731
    assert [first.messages[i].role for i in trained(first)] == ["assistant"] * 3
    assert trained(second) == [i for i in range(len(first.messages), len(second.messages)) if second.messages[i].role == "assistant"]
    assert second.messages[trained(second)[0]].tool_calls[0].name == "book_flight"


def test_pairs_cut_at_the_first_differing_assistant_message():
    for part_first, tools in [(False, 3), (True, 2)]:
        pair = F.miss_func_pair(part_first=part_first)
        for mode in ("prompt", "fc"):
            cut = render_pair(pair, mode)
            assert cut.prompt[-1].role in ("user", "tool") and cut.chosen.role == cut.rejected.role == "assistant"
            assert (cut.prompt[0].role == "system") == (mode == "prompt")
            assert len(cut.tools) == (tools if mode == "fc" else 0)  # fc: the tools of the epoch where they part
            assert cut.chosen != cut.rejected


def test_old_records_with_a_system_message_render_the_same():
    old = F.trajectory(0)
    assert old.messages[0].role == "system"
    new = Trajectory(**{f: getattr(old, f) for f in old.__struct_fields__} | {"messages": old.messages[1:]})
    for mode in ("prompt", "fc"):
        assert render(old, mode) == render(new, mode)
    assert "travel assistant" not in str(render(old, "prompt"))


# -- BFCL's call syntax -------------------------------------------------------------------------------


TRICKY = [
    ToolCall(name="f", arguments={}),
    ToolCall(name="math.factorial", arguments={"n": -3, "x": -0.5, "big": 1e22, "flag": False, "none": None}),
    ToolCall(name="g", arguments={"s": "it's \"quoted\"\n\\ é 中", "nested": {"a": [1, {"b": "c"}]}, "l": [[], {}]}),
    ToolCall(name="h", arguments={"call_like": {"inner": {"k": 1}}, "mixed": {"p": {"q": 2}, "r": 3}}),
]


def test_call_text_parses_back_and_matches_bfcl_decoder():
    for call in TRICKY:
        node = ast.parse(call_text(call), mode="eval").body
        assert not node.args and {k.arg: ast.literal_eval(k.value) for k in node.keywords} == call.arguments
        # BFCL's decoder reads our answer back to the same calls, and names them as decoded_call does
        assert bfcl_utils.default_decode_ast_prompting(calls_text([call])) == [{call.name: call.arguments}]
        assert bfcl_utils.default_decode_execute_prompting(calls_text([call])) == [decoded_call(call)]
    assert bfcl_utils.default_decode_execute_prompting(calls_text(TRICKY)) == [decoded_call(c) for c in TRICKY]
    assert decoded_call(TRICKY[3]).startswith("h(call_like=inner(k=1), ")  # BFCL reads a dict of dicts as a call


def test_tool_results_are_named_as_bfcl_decodes_the_answer():
    calls = [ToolCall(name=c.name, arguments=c.arguments, id=f"c{i}") for i, c in enumerate(TRICKY[1:])]
    traj = Trajectory(id="t", episode_id="e", polarity="positive", teacher="t", tools=[], messages=[
        Message(role="user", content="go"), Message(role="assistant", tool_calls=calls),
        *[Message(role="tool", content=f"out {i}", tool_call_id=c.id) for i, c in reversed(list(enumerate(calls)))]])
    _, _, answer, results = render(traj, "prompt")[0].messages
    assert results.role == "user"
    names = bfcl_utils.default_decode_execute_prompting(answer.content)
    # one user message, repr of BFCL's list, in the order the outputs came, each under its own call
    assert results.content == repr([{"role": "tool", "name": names[i], "content": f"out {i}"} for i in (2, 1, 0)])


@pytest.mark.parametrize("call, fragment", [
    (ToolCall(name="search", arguments={"max-price": 3}), "argument 'max-price' is not a Python keyword argument"),
    (ToolCall(name="search", arguments={"class": 3}), "argument 'class' is not a Python keyword argument"),
    (ToolCall(name="my-tool", arguments={}), "function name 'my-tool' is not a Python name"),
    (ToolCall(name="f", arguments={"x": float("inf")}), "f argument x is inf, which has no Python literal"),
])
def test_calls_prompt_mode_cannot_write_are_refused(call, fragment):
    traj = F.miss_func_trajectory()
    traj.messages[1] = Message(role="assistant", tool_calls=[call])
    with pytest.raises(RenderError, match="call not writable as Python") as err:
        render(traj, "prompt")
    assert fragment in str(err.value)
    render(traj, "fc")  # native tool calls carry any name


@pytest.mark.parametrize("turn_tools, fragment", [
    ([["search_flights"], ["search_flights"]], "has 3 user turns but turn_tools for 2"),
    ([["search_flights"], ["nope"], ["search_flights"]], "turn 1 offers ['nope'], which are not in its tools"),
    ([["search_flights", "get_weather"], ["search_flights"], ["search_flights"]], "turn 1 takes back ['get_weather']"),
])
def test_inconsistent_turn_tools_are_refused(turn_tools, fragment):
    traj = F.miss_func_trajectory()
    traj.turn_tools = turn_tools
    for mode in ("prompt", "fc"):
        with pytest.raises(RenderError, match="turn_tools inconsistent") as err:
            render(traj, mode)
        assert fragment in str(err.value)


def test_unknown_mode_is_one_clear_line():
    with pytest.raises(UserInputError, match=r"--mode 'xml' is unknown; use prompt .* or fc"):
        check_mode("xml")
