"""Small, realistic records of every kind for tests (built from engine.records, nothing faked).

The trajectory is a two-turn travel conversation: turn 1 makes two parallel calls whose
outputs feed turn 2's call, so exports see parallel tool calls, tool answers matched by id,
nested arguments and a final text answer.
"""

from __future__ import annotations

import orjson

from engine.records import (
    DeadLetter,
    Episode,
    EpisodeTurn,
    FunctionSpec,
    Message,
    PathTurn,
    PreferencePair,
    SignaturePath,
    ToolCall,
    Trajectory,
    Verification,
    WorkDone,
)


def tools() -> list[FunctionSpec]:
    return [
        FunctionSpec(
            name="search_flights",
            description="Find flights between two airports on a date.",
            parameters={
                "type": "object",
                "properties": {
                    "origin": {"type": "string", "description": "IATA code"},
                    "destination": {"type": "string", "description": "IATA code"},
                    "date": {"type": "string", "description": "YYYY-MM-DD"},
                    "max_price": {"type": "number", "description": "USD"},
                },
                "required": ["origin", "destination", "date"],
            },
            returns={"type": "array", "items": {"type": "object"}},
            category="travel",
            toolkit="TravelAPI",
            source="builtin",
        ),
        FunctionSpec(
            name="get_weather",
            description="Current weather for a city.",
            parameters={
                "type": "object",
                "properties": {"city": {"type": "string"}, "units": {"type": "string", "enum": ["C", "F"]}},
                "required": ["city"],
            },
            category="travel",
            toolkit="WeatherAPI",
            source="builtin",
        ),
        FunctionSpec(
            name="book_flight",
            description="Book a flight by id for passengers.",
            parameters={
                "type": "object",
                "properties": {
                    "flight_id": {"type": "string"},
                    "passengers": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}},
                    },
                    "insurance": {"type": "boolean"},
                },
                "required": ["flight_id", "passengers"],
            },
            category="travel",
            toolkit="TravelAPI",
            source="builtin",
        ),
    ]


def turn_calls(variant: str = "good") -> list[list[ToolCall]]:
    """The calls of each user turn; ``variant="bad"`` books the wrong flight (a negative)."""
    flight = "UA12" if variant == "good" else "UA99"
    return [
        [
            ToolCall(name="search_flights", arguments={"origin": "SFO", "destination": "JFK", "date": "2025-03-01", "max_price": 450.5}),
            ToolCall(name="get_weather", arguments={"city": "New York", "units": "C"}),
        ],
        [
            ToolCall(
                name="book_flight",
                arguments={"flight_id": flight, "passengers": [{"name": "Ana O'Neil", "age": 34}], "insurance": True},
            )
        ],
    ]


QUERIES = [
    "Find me a flight from SFO to JFK on March 1st under $450.50 and tell me the weather in New York.",
    "Book the cheapest one for Ana O'Neil, 34, with insurance.",
]


def messages(variant: str = "good", *, with_ids: bool = True) -> list[Message]:
    """A full conversation; ``with_ids=False`` leaves call ids empty (as some teachers return)."""
    out = [Message(role="system", content="You are a travel assistant.")]
    for turn, (query, calls) in enumerate(zip(QUERIES, turn_calls(variant))):
        out.append(Message(role="user", content=query))
        calls = [ToolCall(name=c.name, arguments=c.arguments, id=f"call_{turn}_{j}" if with_ids else "") for j, c in enumerate(calls)]
        out.append(Message(role="assistant", content=None, tool_calls=calls))
        for call in calls:
            output = orjson.dumps({"ok": True, "function": call.name}).decode()
            out.append(Message(role="tool", content=output, tool_call_id=call.id or None, name=call.name))
        out.append(Message(role="assistant", content=f"Done with step {turn + 1}."))
    return out


def path(i: int = 0) -> SignaturePath:
    return SignaturePath(
        id=f"path-{i}",
        kind="multi_turn",
        turns=[PathTurn(functions=["search_flights", "get_weather"]), PathTurn(functions=["book_flight"])],
        ops=["walk", "merge"],
        seed=i,
        toolkits=["TravelAPI", "WeatherAPI"],
    )


def episode(i: int = 0) -> Episode:
    calls = turn_calls()
    return Episode(
        id=f"ep-{i}",
        path_id=f"path-{i}",
        kind="multi_turn",
        tools=tools(),
        toolkits=["TravelAPI", "WeatherAPI"],
        initial_state={"TravelAPI": {"balance": 1000}},
        seed=i,
        turns=[
            EpisodeTurn(query=q, calls=c, outputs=[{"ok": True}] * len(c)) for q, c in zip(QUERIES, calls)
        ],
    )


def trajectory(i: int = 0, polarity: str = "positive", *, with_ids: bool = True) -> Trajectory:
    good = polarity == "positive"
    return Trajectory(
        id=f"traj-{i}-{polarity}",
        episode_id=f"ep-{i}",
        polarity=polarity,
        tools=tools(),
        messages=messages("good" if good else "bad", with_ids=with_ids),
        teacher="sim",
        hints=["search_flights(...) get_weather(...)", "book_flight(...)"],
        error_types=[] if good else ["wrong_argument_value"],
        verification=Verification(ok=good, state_match=good, errors=[] if good else ["flight_id differs"]),
        usage={"prompt_tokens": 120, "completion_tokens": 40},
    )


def pair(i: int = 0) -> PreferencePair:
    return PreferencePair(id=f"pair-{i}", episode_id=f"ep-{i}", chosen=trajectory(i, "positive"), rejected=trajectory(i, "negative"))


def dead_letter(i: int = 0, stage: str = "rollout", error: str = "BadAnswer: unparsable tool call 'f(('") -> DeadLetter:
    return DeadLetter(id=f"dl-{i}", item_id=f"item-{i}", stage=stage, error=error, attempts=3, item={"path_id": f"path-{i}"})


def one_of_each(i: int = 0) -> dict[str, object]:
    """kind folder -> a record of that kind."""
    return {
        "paths": path(i),
        "episodes": episode(i),
        "trajectories": trajectory(i),
        "pairs": pair(i),
        "dead_letters": dead_letter(i),
        "done": WorkDone(id=f"item-done-{i}", outputs=[f"traj-{i}-positive"]),
    }


# -- per-turn tools: a miss_func episode --------------------------------------------------------

MISS_FUNC_FOLLOW_UP = "I have updated some more functions you can choose from. What about now?"  # BFCL's FC follow-up
MISS_QUERIES = [QUERIES[0], QUERIES[1], MISS_FUNC_FOLLOW_UP]


def miss_func_messages(variant: str = "good") -> list[Message]:
    """Turn 0 searches, turn 1 asks to book while book_flight is withheld (the assistant says it
    cannot), turn 2 is BFCL's follow-up after book_flight was added back and books.
    ``variant="bad"`` books the wrong flight; ``"bad_first"`` also gets turn 0's weather city wrong."""
    first = turn_calls()[0]
    if variant == "bad_first":
        first = [first[0], ToolCall(name="get_weather", arguments={"city": "Boston", "units": "C"})]
    book = turn_calls("good" if variant == "good" else "bad")[1]
    out: list[Message] = []
    for turn, (query, calls, answer) in enumerate(
        zip(MISS_QUERIES, [first, [], book], ["Found flights; it is 5 C in New York.", "I cannot book flights with the functions I have.", "Booked."])
    ):
        out.append(Message(role="user", content=query))
        if calls:
            calls = [ToolCall(name=c.name, arguments=c.arguments, id=f"call_{turn}_{j}") for j, c in enumerate(calls)]
            out.append(Message(role="assistant", tool_calls=calls))
            out.extend(Message(role="tool", content=orjson.dumps({"ok": True, "function": c.name}).decode(), tool_call_id=c.id, name=c.name)
                       for c in calls)
        out.append(Message(role="assistant", content=answer))
    return out


def miss_func_trajectory(i: int = 0, polarity: str = "positive", variant: str | None = None) -> Trajectory:
    """A record in the current contract: no system message, ``turn_tools`` withholding book_flight
    on turns 0-1 and adding it back on turn 2."""
    offered = ["search_flights", "get_weather"]
    return Trajectory(
        id=f"miss-{i}-{polarity}",
        episode_id=f"miss-ep-{i}",
        polarity=polarity,
        tools=tools(),
        turn_tools=[offered, offered, offered + ["book_flight"]],
        messages=miss_func_messages(variant or ("good" if polarity == "positive" else "bad")),
        teacher="sim",
        hints=["search_flights(...) get_weather(...)", "miss function", "book_flight(...)"],
    )


def miss_func_pair(i: int = 0, *, part_first: bool = False) -> PreferencePair:
    """Sides part at turn 2 (after book_flight is back), or at turn 0 with ``part_first``."""
    return PreferencePair(id=f"miss-pair-{i}", episode_id=f"miss-ep-{i}", chosen=miss_func_trajectory(i),
                          rejected=miss_func_trajectory(i, "negative", "bad_first" if part_first else "bad"))
