"""Trajectories and preference pairs -> token ids with assistant-only, per-turn loss masks.

A record first becomes a chat in the training mode (engine/render.py): ``prompt`` (the
paper's, the default: BFCL's system prompt with the function list, calls as Python text) or
``fc`` (the template's tools block and tool_calls). Evaluate the model in the same mode. In fc
mode a trajectory whose tools grow (a miss_func function added back) renders as one segment
per tools epoch; each segment is its own Example, trained on that epoch's assistant turns
only, with the earlier turns as context. A pair is trained on the segment where its sides part
(the tools epoch of the first differing assistant message); later epochs are left out and
counted as truncated, since one pair example has one tools block per side.

Each chat is rendered once with the model's own chat template (tools included), and
the assistant spans are found by rendering prefixes: the conversation up to an assistant
message with the generation prompt (where the span starts) and up to and including it (where
it ends). Both must be token prefixes of the whole rendering; a template that rewrites
earlier turns breaks that, and we refuse instead of guessing a mask. Within a span the
tokens after the last end-of-turn token (the template's newline glue) are not trained: the
model never generates them.

Nothing here cuts inside an assistant turn: a too-long conversation either loses whole
trailing turns or is skipped, and every skip is counted by reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np

from engine.errors import UserInputError
from engine.records import Message, PreferencePair, Trajectory
from engine.render import Mode, RenderError, Segment, check_mode, parting_segments, render

Truncation = Literal["drop_turns", "skip"]


@dataclass(slots=True)
class Example:
    """One rendered conversation. ``turn[t] = h`` when token t belongs to assistant turn h
    (so it is a training target), ``-1`` otherwise."""

    id: str
    input_ids: np.ndarray  # int32 [T]
    turn: np.ndarray  # int16 [T]
    n_turns: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        return int((self.turn >= 0).sum())


@dataclass(slots=True)
class PairExample:
    id: str
    chosen: Example
    rejected: Example

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected)


@dataclass
class SkipReport:
    """What was read and why some records were not used."""

    seen: int = 0
    used: int = 0
    truncated: int = 0  # used, but with whole trailing turns dropped
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "used": self.used, "truncated": self.truncated, "skipped": dict(self.skipped)}

    def summary(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return f"{self.used}/{self.seen} used ({self.truncated} truncated by whole turns); skipped: {why}"


class TemplateError(UserInputError):
    """The chat template cannot give an assistant-only mask for a conversation."""


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Record messages -> the OpenAI-style dicts chat templates expect (calls with dict arguments)."""
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content if m.content is not None else ""}
        if m.tool_calls:
            d["tool_calls"] = [{"type": "function", "id": c.id or f"call_{i}",
                                "function": {"name": c.name, "arguments": c.arguments}}
                               for i, c in enumerate(m.tool_calls)]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            d["name"] = m.name
        out.append(d)
    return out


class ChatRenderer:
    """Renders conversations in one mode with a tokenizer's chat template and builds per-turn masks."""

    def __init__(self, tokenizer, *, source: str, max_length: int, truncation: Truncation = "drop_turns",
                 mode: Mode = "prompt"):
        if not getattr(tokenizer, "chat_template", None):
            raise UserInputError(
                f"the tokenizer of {source} has no chat template; pass --chat-template FILE "
                "(a Jinja chat template that renders tools and tool_calls)")
        self.tokenizer = tokenizer
        self.source = source
        self.max_length = max_length
        self.truncation = truncation
        self.mode = check_mode(mode)
        eot = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
        unk = tokenizer.unk_token_id
        self.end_of_turn = {i for i in eot if i is not None and i != unk}

    def _ids(self, messages: list[dict], tools: list[dict] | None, generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                  add_generation_prompt=generation_prompt)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prefix(self, full: list[int], part: list[int], record_id: str, upto: int) -> int:
        if full[: len(part)] != part:
            raise TemplateError(
                f"the chat template of {self.source} does not render conversation {record_id!r} up to message "
                f"{upto} as a token prefix of the whole conversation (it rewrites earlier turns), so an "
                "assistant-only mask cannot be built; pass --chat-template FILE with a prefix-stable template")
        return len(part)

    def encode(self, record_id: str, messages: Sequence[Message], tools: list[dict] | None,
               report: SkipReport | None = None, trained: Sequence[bool] | None = None) -> Example | None:
        """The example of already rendered messages, or None (counted in ``report``) when it has no
        trained assistant turn or is too long. ``trained`` picks the assistant messages that are
        targets (default: all); the others are context."""
        msgs = template_messages(messages)
        full = self._ids(msgs, tools, False)
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant" or (trained is not None and not trained[i]):
                continue
            start = self._prefix(full, self._ids(msgs[:i], tools, True), record_id, i)
            end = self._prefix(full, self._ids(msgs[: i + 1], tools, False), record_id, i + 1)
            ends = [t for t in range(start, end) if full[t] in self.end_of_turn]
            spans.append((start, ends[-1] + 1 if ends else end))
        if not spans:
            if report is not None:
                report.skip("no_assistant_turn")
            return None
        length = len(full)
        if length > self.max_length:
            fitting = [s for s in spans if s[1] <= self.max_length] if self.truncation == "drop_turns" else []
            if not fitting:
                if report is not None:
                    report.skip("too_long")
                return None
            spans, length = fitting, fitting[-1][1]
            if report is not None:
                report.truncated += 1
        turn = np.full(length, -1, dtype=np.int16)
        for h, (a, b) in enumerate(spans):
            turn[a:b] = h
        return Example(record_id, np.asarray(full[:length], dtype=np.int32), turn, len(spans))

    def encode_segment(self, record_id: str, seg: Segment, report: SkipReport | None = None) -> Example | None:
        tools = [t.to_openai_tool() for t in seg.tools] if self.mode == "fc" else None
        return self.encode(record_id, seg.messages, tools, report, seg.trained)

    def segments(self, traj: Trajectory, report: SkipReport | None = None) -> list[Segment] | None:
        """The trajectory rendered in this mode, or None (counted) when the mode cannot express it."""
        try:
            return render(traj, self.mode)
        except RenderError as err:
            if report is not None:
                report.skip(f"unrenderable: {err.reason}")
            return None

    def encode_trajectory(self, traj: Trajectory, report: SkipReport | None = None) -> list[Example]:
        """One example per segment (prompt mode: one); segment k > 0 of an fc trajectory is ``<id>#k``."""
        out = []
        for k, seg in enumerate(self.segments(traj, report) or []):
            ex = self.encode_segment(traj.id if k == 0 else f"{traj.id}#{k}", seg, report)
            if ex is not None:
                out.append(ex)
        return out


def sft_examples(records: Iterable[Trajectory], renderer: ChatRenderer, *, polarity: str = "positive",
                 require_verified: bool = False) -> tuple[list[Example], SkipReport]:
    """Examples and what was used: ``used`` counts trajectories (an fc one can give several examples)."""
    report = SkipReport()
    out = []
    for traj in records:
        report.seen += 1
        if polarity != "any" and traj.polarity != polarity:
            report.skip(f"polarity_{traj.polarity}")
            continue
        if require_verified and not (traj.verification and traj.verification.ok):
            report.skip("unverified")
            continue
        examples = renderer.encode_trajectory(traj, report)
        if examples:
            out.extend(examples)
            report.used += 1
    return out, report


def pair_examples(records: Iterable[PreferencePair], renderer: ChatRenderer) -> tuple[list[PairExample], SkipReport]:
    """Pairs are all-or-nothing: truncating one side could drop the very turn that makes it worse,
    so a pair with either side over the limit is skipped whatever the truncation policy."""
    report = SkipReport()
    whole = ChatRenderer(renderer.tokenizer, source=renderer.source, max_length=renderer.max_length, truncation="skip",
                         mode=renderer.mode)
    out = []
    for pair in records:
        report.seen += 1
        if not (pair.chosen.episode_id == pair.rejected.episode_id == pair.episode_id):
            report.skip("episode_mismatch")
            continue
        try:
            parted = parting_segments(pair, renderer.mode)
        except RenderError as err:
            report.skip(f"unrenderable: {err.reason}")
            continue
        if parted is None:
            report.skip("identical_sides")  # (or parting at a non-assistant message, which no trainer can score)
            continue
        good, bad, later_left_out = parted
        chosen = whole.encode_segment(pair.chosen.id, good, report)
        rejected = whole.encode_segment(pair.rejected.id, bad, report) if chosen is not None else None
        if chosen is None or rejected is None:
            continue
        if np.array_equal(chosen.input_ids, rejected.input_ids):
            report.skip("identical_sides")
            continue
        report.truncated += later_left_out
        out.append(PairExample(pair.id, chosen, rejected))
        report.used += 1
    return out, report


def read_run(run_dir: str | Path, kind: str) -> Iterator[Any]:
    """Stream ``kind`` records of a run directory, with a clear error for a wrong path."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise UserInputError(f"--data {run_dir}: no such run directory; pass the --out folder of `magnet generate`")
    from engine.store import read_records

    return read_records(folder, kind)


class NoExamples(UserInputError):
    """Nothing to train on: no record of the data survived the filters (length, polarity). `magnet improve`
    skips a round's mDPO on it (a few pairs, all longer than max_length) instead of ending the loop."""

    def __init__(self, message: str, skipped: str):
        super().__init__(message)
        self.skipped = skipped  # what the filters left out, e.g. "0/2 used; skipped: 2 too_long"


def require_examples(examples: Sequence, report: SkipReport, what: str, where: str) -> None:
    if not examples:
        raise NoExamples(
            f"no usable {what} in {where} ({report.summary()}); generate data first with `magnet generate` "
            "or check --data, --max-length and the polarity filter", report.summary())


def fingerprint(examples: Iterable[Example | PairExample]) -> str:
    """Hash of exactly what is trained on (ids, tokens, masks): any change to data, tokenizer,
    template or truncation gives a new fingerprint."""
    h = hashlib.sha256()
    for ex in examples:
        parts = (ex.chosen, ex.rejected) if isinstance(ex, PairExample) else (ex,)
        h.update(ex.id.encode() + b"\0")
        for p in parts:
            h.update(p.input_ids.tobytes())
            h.update(p.turn.tobytes())
    return h.hexdigest()
