"""Shared pieces of the train/ tests: the tiny model (built once per session) and single-turn records."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from engine.records import Message, PreferencePair, ToolCall, Trajectory
from train.samples import SYSTEM, TOOLS
from train.tiny_model import build_tiny_model


def tiny_dir(base: Path) -> Path:
    out = base / "tiny-qwen2"
    with open(base / ".tiny.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").is_file():
            build_tiny_model(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return tiny_dir(tmp_path_factory.getbasetemp())


def single_turn_pairs(n: int) -> list[PreferencePair]:
    """System + user + one assistant message; rejected calls the wrong city / function."""
    cities = ["Paris", "Oslo", "Lima", "Tokyo", "Cairo", "Quito"]
    out = []
    for i in range(n):
        city, other = cities[i % 6], cities[(i + 2) % 6]
        ask = [Message(role="system", content=SYSTEM), Message(role="user", content=f"Weather in {city}?")]
        good = Message(role="assistant", tool_calls=[ToolCall(name="get_weather", arguments={"city": city})])
        bad = (Message(role="assistant", tool_calls=[ToolCall(name="get_weather", arguments={"city": other})]) if i % 2
               else Message(role="assistant", content=f"I cannot check {city}, sorry."))
        ep = f"ep{i}"
        chosen, rejected = (Trajectory(id=f"t{i}{pol}", episode_id=ep, polarity=pol, tools=TOOLS, messages=ask + [m], teacher="test")
                            for m, pol in ((good, "positive"), (bad, "negative")))
        out.append(PreferencePair(id=f"p{i}", episode_id=ep, chosen=chosen, rejected=rejected))
    return out
