"""Data gates on what is stored: grounded argument values, no hint traces, hint steps."""

from __future__ import annotations

from distill.grounding import Context, conversation_gaps, ungrounded
from distill.rollout import STEP_SEPARATOR, Rollout, call_steps, reference_hint
from distill.spend import Spend
from distill.verify import leaked_hint
from engine.records import EpisodeTurn, FunctionSpec, Message, ToolCall

SPEC = FunctionSpec(name="transfer", description="", parameters={"type": "object", "properties": {
    "account_id": {"type": "string"}, "amount": {"type": "number"},
    "currency": {"type": "string", "enum": ["USD", "EUR"]}, "memo": {"type": "string", "default": ""},
    "note": {"type": "string"}}})


def test_values_from_the_user_or_earlier_outputs_are_grounded_invented_ones_are_not() -> None:
    context = Context(["Send 250 to account ACC-1001 please, note: rent for March", '{"balance": 1200.5}'])
    ok = ToolCall(name="transfer", arguments={"account_id": "acc-1001", "amount": 250.0, "currency": "EUR",
                                               "memo": "", "note": "rent for march"})
    assert ungrounded(ok, SPEC, context) == []
    assert ungrounded(ToolCall(name="transfer", arguments={"amount": 1200.5}), SPEC, context) == []
    bad = ToolCall(name="transfer", arguments={"account_id": "ACC-9999", "amount": 300})
    assert ungrounded(bad, SPEC, context) == ['transfer.account_id="ACC-9999"', "transfer.amount=300"]


def test_number_words_and_loose_free_text_count_nested_values_are_checked() -> None:
    context = Context(["Book two rooms and tell Dana the trip to Lisbon is confirmed"])
    call = ToolCall(name="book", arguments={"rooms": 2, "message": "Trip to Lisbon confirmed", "guests": [{"name": "Bob"}]})
    assert ungrounded(call, None, context) == ['book.guests[0].name="Bob"']


def test_conversation_gaps_only_count_what_came_before_the_call() -> None:
    messages = [Message(role="user", content="Find the cheapest flight to Oslo"),
                Message(role="assistant", tool_calls=[ToolCall(name="book", arguments={"flight_id": "FL-7"})]),
                Message(role="tool", content='{"flight_id": "FL-7"}')]
    assert conversation_gaps(messages, {}) == ['book.flight_id="FL-7"']  # the output came after the call


def test_hint_leaks_are_found_in_any_stored_message() -> None:
    def rollout(*texts: str, hint: str = "[transfer(amount=5)]") -> Rollout:
        msgs = [Message(role="user", content="Send 5 dollars")] + [Message(role="assistant", content=t) for t in texts]
        return Rollout(messages=msgs, tools=[], turn_tools=[], hints=[hint], turns=[], spend=Spend())

    assert leaked_hint(rollout("Done, I sent 5 dollars.")) is None
    assert "mentions the hint" in leaked_hint(rollout("As the hint says, I sent it."))
    assert "quotes its hint" in leaked_hint(rollout("I will run [transfer(amount=5)] now."))


def test_hint_steps_group_independent_calls_and_order_dependent_ones() -> None:
    a = ToolCall(name="get_rate", arguments={"pair": "USDEUR"})
    b = ToolCall(name="get_rate", arguments={"pair": "USDGBP"})
    c = ToolCall(name="convert", arguments={"rate": 0.9134, "amount": 100})
    turn = EpisodeTurn(query="q", calls=[a, b, c], outputs=[{"rate": 0.9134}, {"rate": 0.7891}, {"value": 91.34}])
    assert call_steps(turn, "multi_turn") == [[a, b], [c]]
    assert reference_hint(turn, "multi_turn").count(STEP_SEPARATOR) == 1
    assert call_steps(turn, "parallel_multiple") == [[a, b, c]]  # independent by construction
    assert reference_hint(EpisodeTurn(query="q", label="miss_param"), "multi_turn") == "miss param"
