"""The simulator as user and translator: requests that state the values of their reference calls,
parallel calls that differ, dependent values left to earlier outputs, hints followed step by step,
and a run over the real built-in toolkits with no placeholder query in it."""

from __future__ import annotations

import json
import re

import pytest

from distill.generate_config import GenerateConfig
from distill.prompts import Prompts
from distill.spend import Spend
from distill.structured import response_format
from distill.translate import QUERY_SCHEMA, Translator, calls_schema, clip, describe
from engine.errors import JobFailed
from engine.records import Message, ToolCall
from engine.teachers.sim import SimTeacher, parse_hint
from engine.teachers.sim_user import render
from graph.depgraph import build_graph
from graph.paths import PathSampler
from graph.paths_config import path_config
from graph.toolkit import ToolPool
from graph.toolkits import builtin_toolkits

PROMPTS = Prompts()


@pytest.fixture(scope="module")
def pool():
    return ToolPool(builtin_toolkits().values())


def user(text: str) -> Message:
    return Message(role="user", content=text)


def back(pool, names, *, seed=0, last_round="(none)", state_seed=0, structured=True):
    """The sim's request for ``names`` on fresh toolkits, and the runtime it was written against."""
    specs = [pool.spec(n) for n in names]
    runtime = pool.instantiate(seed=state_seed, only={pool.toolkit_of(n) for n in names})
    prompt = PROMPTS.render("back_translation", functions="\n".join(describe(s) for s in specs),
                            history="(start of the conversation)", last_round=last_round,
                            environment=clip(runtime.snapshot(), 1200), extra_rules="")
    rf = response_format("back_translation", QUERY_SCHEMA) if structured else None
    done = SimTeacher().answer([user(prompt)], response_format=rf, seed=seed)
    return json.loads(done.message.content)["query"], runtime


def forth(pool, names, query, *, last_outputs="(none)", structured=True):
    specs = [pool.spec(n) for n in names]
    prompt = PROMPTS.render("forth_translation", functions="\n".join(describe(s) for s in specs),
                            last_outputs=last_outputs, query=query, expected=", ".join(names))
    rf = response_format("forth_translation", calls_schema(specs)) if structured else None
    obj = json.loads(SimTeacher().answer([user(prompt)], response_format=rf).message.content)
    return [ToolCall(name=obj[k]["name"], arguments=obj[k]["arguments"]) for k in sorted(obj)]


def stated(value) -> list[str]:
    """How a value must appear in the request: each scalar as the simulator writes it."""
    if isinstance(value, list):
        return [s for v in value for s in stated(v)]
    return [render(value)]


@pytest.mark.parametrize("names", [
    ["get_note", "add_tag"], ["set_light"], ["get_product_details", "add_to_cart"], ["convert_currency"],
    ["search_flights"], ["cat", "grep"], ["create_event", "check_conflicts"], ["get_distance", "convert_distance"],
    ["create_scene"], ["store_result", "mean"], ["list_events"],
])
def test_requests_state_every_value_of_their_calls_and_the_calls_execute(pool, names):
    query, runtime = back(pool, names)
    for name in names:
        assert not re.search(rf"(?<!\w){name}(?!\w)", query), f"the request names {name}: {query}"
    assert not re.search(r"\bparam", query, re.I) and not re.search(r"^\w+_query$", query)
    calls = forth(pool, names, query)
    assert [c.name for c in calls] == names
    for call in calls:
        for param in pool.spec(call.name).parameters.get("required", []):
            assert param in call.arguments, (call, query)
        for value in call.arguments.values():
            for text in stated(value):
                assert text in query, f"{call.name}: {text} is not in {query!r}"
        result = runtime.execute(call)
        assert result.ok, (result.error, query)


def test_parallel_requests_give_one_clause_and_distinct_values_per_call(pool):
    names = ["get_product_details"] * 3 + ["convert_currency"] * 2
    query, runtime = back(pool, names)
    calls = forth(pool, names, query)
    assert len({json.dumps(c.arguments, sort_keys=True) for c in calls[:3]}) == 3
    assert calls[3].arguments != calls[4].arguments
    assert all(runtime.execute(c).ok for c in calls)
    # Every call's values sit in its own sentence, in order.
    positions = [query.index(render(c.arguments["product_id"])) for c in calls[:3]]
    assert positions == sorted(positions)


def test_dependent_values_are_left_to_the_outputs_they_come_from(pool):
    last = ('Calls: [bank_login(customer_id="CUST-2048", pin="4321")]\n'
            'Outputs: [{"auth_token": "AUTH-77C1D0", "customer_id": "CUST-2048"}]')
    query, _ = back(pool, ["list_accounts"], last_round=last)
    assert "AUTH-77C1D0" not in query and "you just found" in query
    call, = forth(pool, ["list_accounts"], query, last_outputs='[{"auth_token": "AUTH-77C1D0", "customer_id": "CUST-2048"}]')
    assert call.arguments == {"auth_token": "AUTH-77C1D0"}
    # Within one round: the login's token is not stated (only the login's own values are).
    query, _ = back(pool, ["bank_login", "list_accounts"])
    assert '"CUST-2048"' in query and '"4321"' in query and "token" in query and "AUTH-" not in query
    # Two calls that both depend on a list of outputs take one output each.
    outputs = '[{"products": [{"product_id": "P1003", "name": "running shoes"}, {"product_id": "P1004", "name": "yoga mat"}]}]'
    query, _ = back(pool, ["check_stock", "check_stock"], last_round=f"Calls: [search_products(query=\"s\")]\nOutputs: {outputs}")
    assert "P100" not in query
    calls = forth(pool, ["check_stock", "check_stock"], query, last_outputs=outputs)
    assert [c.arguments["product_id"] for c in calls] == ["P1003", "P1004"]


def test_leaving_out_a_value_and_giving_it_back(pool):
    query, _ = back(pool, ["convert_currency", "get_exchange_rate"])
    amount = render(forth(pool, ["convert_currency", "get_exchange_rate"], query)[0].arguments["amount"])
    rf = response_format("miss_param_query", QUERY_SCHEMA)
    prompt = PROMPTS.render("miss_param_query", param="amount", value=amount, query=query)
    without = json.loads(SimTeacher().answer([user(prompt)], response_format=rf).message.content)["query"]
    assert amount not in without and len(without.split()) >= 5
    rest = forth(pool, ["convert_currency", "get_exchange_rate"], without)
    assert rest[1].arguments == forth(pool, ["convert_currency", "get_exchange_rate"], query)[1].arguments
    prompt = PROMPTS.render("follow_up", situation="you left out the amount; the assistant asked you for it.",
                            goal=f"gives it: {amount}.", query=without)
    reply = json.loads(SimTeacher().answer([user(prompt)], response_format=response_format("follow_up", QUERY_SCHEMA))
                       .message.content)["query"]
    assert amount in reply


def test_prompts_are_recognised_without_structured_outputs_and_answers_are_deterministic(pool):
    query, runtime = back(pool, ["deposit"], structured=False)
    assert query == back(pool, ["deposit"], structured=False)[0]
    assert any(back(pool, ["deposit"], seed=s)[0] != query for s in range(1, 4))  # a retry seed writes anew
    call, = forth(pool, ["deposit"], query, structured=False)
    assert call.arguments["account_id"] in runtime.snapshot()["banking"]["accounts"]


async def test_multi_step_hints_go_out_one_step_per_message_with_parallel_calls():
    teacher = SimTeacher()
    hint = '[f(a=1), f(a=2)] then [g(b="x then y")] then [h()]'
    assert [len(s) for s in parse_hint(f"q\n\n[Hint]: {hint}").steps] == [2, 1, 1]
    msgs = [user(f"Do the things.\n\n[Hint]: {hint}")]
    for want in ([("f", {"a": 1}), ("f", {"a": 2})], [("g", {"b": "x then y"})], [("h", {})]):
        done = await teacher.chat(msgs)
        assert [(c.name, c.arguments) for c in done.message.tool_calls] == want
        assert len({c.id for c in done.message.tool_calls}) == len(want)
        msgs.append(done.message)
        msgs += [Message(role="tool", content=f'{{"out": "{c.name}{i}"}}', tool_call_id=c.id, name=c.name)
                 for i, c in enumerate(done.message.tool_calls)]
    final = await teacher.chat(msgs)
    assert not final.message.tool_calls and "h0" in final.message.content and "f1" in final.message.content
    assert "hint" not in final.message.content.lower() and hint not in final.message.content
    # A hint without " then " is one step: all its calls in one message.
    one = await teacher.chat([user("Both. [Hint]: [f(a=1), g(b=2)]")])
    assert [c.name for c in one.message.tool_calls] == ["f", "g"]


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


async def test_a_run_over_the_builtin_toolkits_has_no_placeholder_query(pool):
    specs = pool.specs()
    sampler = PathSampler(build_graph(specs), specs, path_config({}))
    translator = Translator(SimTeacher(), pool, PROMPTS, GenerateConfig())
    queries, calls, episodes = [], 0, 0
    for path in sampler.stream(0, n=40):
        try:
            episode = await translator.translate(path, Spend())
        except JobFailed:
            continue
        episodes += 1
        context = ""
        for turn in episode.turns:
            queries.append(turn.query)
            context += " " + turn.query
            for call, output in zip(turn.calls, turn.outputs):
                calls += 1
                props = pool.spec(call.name).parameters["properties"]
                for name, value in call.arguments.items():
                    said = [v for v in strings(value) if v not in props[name].get("enum", [])]
                    assert all(v in context for v in said), f"{call.name}.{name}={value!r} unsaid in {context!r}"
                context += " " + json.dumps(output, ensure_ascii=False)
    assert episodes >= 15 and calls >= 20
    assert not [q for q in queries if re.fullmatch(r"\w+_query", q) or len(q.split()) < 4]
    assert len(set(queries)) >= 0.9 * len(queries)
