"""Deterministic synthetic tool-use trajectories and preference pairs in the record contract.

Used by the trainer's tests and benchmark when no generated run is at hand: multi-turn
conversations with a system prompt, tools, tool calls, tool outputs and final answers. The
rejected side of a pair differs from the chosen side in one assistant turn (a wrong argument
or a wrong function), the way the paper's negatives do.
"""

from __future__ import annotations

import random

from engine.records import FunctionSpec, Message, PreferencePair, ToolCall, Trajectory

CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Dakar"]
TOOLS = [
    FunctionSpec(name="get_weather", description="Current weather of a city.",
                 parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    FunctionSpec(name="book_flight", description="Book a flight between two cities on a date.",
                 parameters={"type": "object", "properties": {"origin": {"type": "string"},
                             "destination": {"type": "string"}, "date": {"type": "string"}},
                             "required": ["origin", "destination", "date"]}),
]
SYSTEM = "You are an assistant that calls functions to answer. Use keyword arguments."


def _conversation(rng: random.Random, turns: int, wrong_turn: int | None) -> list[Message]:
    msgs = [Message(role="system", content=SYSTEM)]
    for h in range(turns):
        a, b = rng.sample(CITIES, 2)
        day = f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        if h % 2 == 0:
            msgs.append(Message(role="user", content=f"What is the weather in {a} today?"))
            call = ToolCall(name="get_weather", arguments={"city": a}, id=f"c{h}")
            output, answer = f'{{"city": "{a}", "temp_c": {rng.randint(-5, 35)}}}', f"It is mild in {a}."
        else:
            msgs.append(Message(role="user", content=f"Book me a flight from {a} to {b} on {day}."))
            call = ToolCall(name="book_flight", arguments={"origin": a, "destination": b, "date": day}, id=f"c{h}")
            output, answer = f'{{"booking": "BK{rng.randint(100, 999)}"}}', f"Your flight from {a} to {b} is booked."
        if h == wrong_turn:
            call = ToolCall(name=call.name, arguments={k: rng.choice(CITIES) for k in call.arguments}, id=call.id)
        msgs.append(Message(role="assistant", content=None, tool_calls=[call]))
        msgs.append(Message(role="tool", content=output, tool_call_id=call.id, name=call.name))
        msgs.append(Message(role="assistant", content=answer))
    return msgs


def trajectory(i: int, *, turns: int = 2, seed: int = 0, polarity: str = "positive",
               wrong_turn: int | None = None) -> Trajectory:
    rng = random.Random(seed * 100_003 + i)
    return Trajectory(id=f"traj-{seed}-{i}-{polarity}", episode_id=f"ep-{seed}-{i}", polarity=polarity,
                      tools=TOOLS, messages=_conversation(rng, turns, wrong_turn), teacher="synthetic")


def trajectories(n: int, *, turns: int = 2, seed: int = 0) -> list[Trajectory]:
    return [trajectory(i, turns=turns, seed=seed) for i in range(n)]


def pairs(n: int, *, turns: int = 2, seed: int = 0) -> list[PreferencePair]:
    out = []
    for i in range(n):
        wrong = random.Random(seed + i).randrange(turns)
        chosen = trajectory(i, turns=turns, seed=seed)
        rejected = trajectory(i, turns=turns, seed=seed, polarity="negative", wrong_turn=wrong)
        out.append(PreferencePair(id=f"pair-{seed}-{i}", episode_id=chosen.episode_id, chosen=chosen, rejected=rejected))
    return out
