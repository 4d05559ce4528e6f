"""A reference replay model: a Teacher that answers a test set's episodes with their reference calls.

It exists to check the evaluation itself (a model that does exactly what the reference did must
score 100% on every kind) and, given episodes whose references were altered, to produce a
known mistake. It sees only what any model under test sees (the conversation and the tools),
in either mode:

- the episode is recognised by its first user query and the functions offered at that turn
  (FC: the tools passed; prompt: the names in BFCL's system prompt);
- the current turn is the number of its own text answers so far (every turn ends with one),
  and the step within the turn the number of its answers since;
- a call turn gets its reference calls step by step (``distill.rollout.call_steps``: a call
  waits for the step whose output it uses), native tool calls when tools were passed, BFCL's
  Python call list otherwise; then a text answer. A miss / irrelevance turn gets a text answer.
"""

from __future__ import annotations

import re

from distill.rollout import call_steps, offered_per_turn
from engine.errors import FatalTeacherError
from engine.records import Episode, FunctionSpec, Message, ToolCall
from engine.render import calls_text
from engine.teacher import Completion, Usage

DONE_TEXT = "Done: every requested call has been made."
NO_CALL_TEXT = {"miss_func": "None of the functions I have can do that, so I made no call.",
                "miss_param": "I need one more value from you before I can do that; which one should I use?"}
_OFFERED = re.compile(r"'name': '([^']+)'")


class ReplayModel:
    """The Teacher protocol over a test set's references; ``name`` is what reports show."""

    def __init__(self, episodes: list[Episode], name: str = "replay"):
        self.name = name
        self._texts = {DONE_TEXT, *NO_CALL_TEXT.values()}
        # first query -> (names offered at each turn, episode): episodes may share a first query
        self._by_query: dict[str, list[tuple[list[frozenset[str]], Episode]]] = {}
        for ep in episodes:
            if ep.turns:
                offered = [frozenset(names) for names in offered_per_turn(ep, ep.tools)]
                self._by_query.setdefault(ep.turns[0].query, []).append((offered, ep))

    def _episode(self, messages: list[Message], tools: list[FunctionSpec] | None, turn: int) -> Episode:
        first = next((m.content or "" for m in messages if m.role == "user"), "")
        candidates = self._by_query.get(first, [])
        if tools:  # FC: the tools of this turn
            offered, at = frozenset(t.name for t in tools), turn
        else:  # prompt: BFCL's system prompt lists the functions of the first turn
            system = next((m.content or "" for m in messages if m.role == "system"), "")
            offered, at = frozenset(_OFFERED.findall(system)), 0
        match = [ep for names, ep in candidates if names[min(at, len(names) - 1)] == offered] or [ep for _, ep in candidates]
        if not match:
            # Not a data error of one episode: the replay was built from another test set.
            raise FatalTeacherError(f"replay: no episode starts with the query {first[:80]!r}; build the replay from this test set",
                                    status=400)
        return match[0]

    async def chat(self, messages: list[Message], tools: list[FunctionSpec] | None = None, **_: object) -> Completion:
        turn, step = 0, 0
        for m in messages:
            if m.role != "assistant":
                continue
            if not m.tool_calls and (m.content or "") in self._texts:
                turn, step = turn + 1, 0
            else:
                step += 1
        episode = self._episode(messages, tools, turn)
        message = Message(role="assistant", content=DONE_TEXT)
        if turn < len(episode.turns):
            current = episode.turns[turn]
            steps = call_steps(current, episode.kind)
            if current.label != "call":
                message = Message(role="assistant", content=NO_CALL_TEXT[current.label])
            elif step < len(steps):
                calls = [ToolCall(name=c.name, arguments=dict(c.arguments), id=f"replay_{turn}_{step}_{i}")
                         for i, c in enumerate(steps[step])]
                message = (Message(role="assistant", tool_calls=calls) if tools
                           else Message(role="assistant", content=calls_text(calls)))
        return Completion(message=message, finish_reason="tool_calls" if message.tool_calls else "stop",
                          usage=Usage(), model=self.name)

    async def aclose(self) -> None:
        """Nothing to release; present because the Teacher protocol requires it."""
