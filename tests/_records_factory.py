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
