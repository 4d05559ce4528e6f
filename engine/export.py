"""`magnet export RUN_DIR --format openai|sharegpt|hf|bfcl --mode prompt|fc --out PATH`: training files.

Every chat format renders records with engine/render.py in the named mode (default prompt,
the paper's): prompt mode has BFCL's system prompt with the function list and calls as
Python text, no tools field; fc mode has the tools field and native tool calls. Train and
evaluate in the mode you exported. A trajectory whose tools grow (a miss_func function added
back) is one row in prompt mode and one row per tools epoch in fc mode, with only that
epoch's assistant messages trained.

Every format streams: one record is read, converted and written at a time, into a temporary
file that replaces the target only when the export finished, so a failed export never leaves
a half-written file behind under the real name.

- ``openai``: chat fine-tuning JSONL (``messages``, plus ``tools`` in fc mode; tool calls in
  wire form with ``arguments`` as a JSON string; earlier epochs' assistant messages of an fc
  row carry ``"weight": 0``). Pairs become OpenAI's DPO JSONL (``input`` /
  ``preferred_output`` / ``non_preferred_output``); that API takes one assistant message per
  side, so a pair is cut at its first differing assistant message.
- ``sharegpt``: LLaMA-Factory's ShareGPT format (``conversations`` with system, human, gpt,
  and in fc mode function_call, observation and ``tools`` as a JSON string); pairs use its
  ranking form (``chosen`` / ``rejected`` messages after the shared ``conversations``). It
  cannot mark turns as context, so an fc trajectory whose tools grow is skipped (use prompt mode).
- ``hf``: a folder with ``train.jsonl`` that ``datasets.load_dataset("json", ...)`` reads and
  TRL's trainers take as is, plus ``chat_template.jinja`` (a ChatML tools template with
  ``{% generation %}`` markers, for ``assistant_only_loss=True``). Trajectories are TRL's
  conversational prompt-completion rows (``prompt`` = the messages before the first trained
  assistant message, ``completion`` = the rest; train with ``assistant_only_loss=True`` so
  only its assistant messages count); pairs are TRL's conversational preference rows
  (``prompt`` = the shared messages, ``chosen`` / ``rejected`` = each side's first differing
  assistant message). fc rows add ``tools`` (a JSON string, which TRL decodes); free-form JSON
  (call arguments) is kept as JSON strings so every row has one Arrow schema.
  ``--save-to-disk`` also writes an Arrow copy with ``datasets``.
- ``bfcl``: BFCL's multi-turn format as its generator holds an entry (``question`` per turn,
  ``function`` docs in BFCL's type names, a miss_func function moved to ``missed_function``
  under the turn that adds it back, whose question is empty) plus ``possible_answer/`` with
  the calls of each turn as BFCL call strings, keyword arguments only, values as Python
  literals (what BFCL parses with ast).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import msgspec
import orjson

from engine.atomic import atomic_output
from engine.bfcl_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC
from engine.chat_templates import template_path
from engine.config_cli import ConfigCLI, doc
from engine.errors import UserInputError
from engine.models import TOOLS_TEMPLATE
from engine.records import FunctionSpec, Message, PreferencePair, Trajectory
from engine.render import (
    MODE_HELP,
    Mode,
    PairRendering,
    RenderError,
    bfcl_function,
    call_text,
    check_mode,
    conversation,
    offered_per_turn,
    render,
    render_pair,
)
from engine.shards import Corruption, shard_files
from engine.store import MANIFEST, read_records_by_id

FORMATS = ("openai", "sharegpt", "hf", "bfcl")
BFCL_FILE = "BFCL_v3_magnet.json"
HF_TEMPLATE = "chat_template.jinja"
_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}
_NO_PART = "sides do not differ at an assistant turn"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _arguments(arguments: dict[str, Any]) -> str:
    """Call arguments as a JSON string written the way chat templates' ``tojson`` writes a dict,
    so a template renders the exported string exactly as our trainer renders the record."""
    return json.dumps(arguments, ensure_ascii=False)


def _tools_json(tools: list[FunctionSpec]) -> str:
    return _json([s.to_openai_tool() for s in tools])


def _pair(pair: PreferencePair, mode: Mode) -> PairRendering:
    cut = render_pair(pair, mode)
    if cut is None:
        raise RenderError(_NO_PART, pair.id)
    return cut


# -- OpenAI -----------------------------------------------------------------------------------


def openai_message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role}
    if msg.role == "assistant" and msg.tool_calls:
        if msg.content:
            out["content"] = msg.content
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}} for c in msg.tool_calls
        ]
    else:
        out["content"] = msg.content or ""
    if msg.role == "tool":
        out["tool_call_id"] = msg.tool_call_id
    return out


def openai_chat(traj: Trajectory, mode: Mode = "prompt") -> list[dict[str, Any]]:
    """One row per segment; assistant messages a segment only holds as context get ``weight`` 0."""
    rows = []
    for seg in render(traj, mode):
        if seg.first_trained is None:
            continue
        messages = [openai_message(m) | ({"weight": 0} if m.role == "assistant" and not t else {})
                    for m, t in zip(seg.messages, seg.trained)]
        rows.append({"messages": messages} | ({"tools": [s.to_openai_tool() for s in seg.tools]} if mode == "fc" else {}))
    return rows


def openai_preference(pair: PreferencePair, mode: Mode = "prompt") -> list[dict[str, Any]]:
    cut = _pair(pair, mode)
    tools = {"tools": [s.to_openai_tool() for s in cut.tools]} if mode == "fc" else {}
    return [{
        "input": {"messages": [openai_message(m) for m in cut.prompt]} | tools,
        "preferred_output": [openai_message(cut.chosen)],
        "non_preferred_output": [openai_message(cut.rejected)],
    }]


# -- ShareGPT ---------------------------------------------------------------------------------


def _sharegpt_tools(tools: list[FunctionSpec]) -> str:
    return _json([{"name": s.name, "description": s.description, "parameters": s.parameters} for s in tools])


def _sharegpt_turn(msg: Message) -> dict[str, str]:
    if msg.role == "assistant" and msg.tool_calls:  # its text, if any, is dropped: the format has one value per turn
        calls = [{"name": c.name, "arguments": c.arguments} for c in msg.tool_calls]
        return {"from": "function_call", "value": _json(calls[0] if len(calls) == 1 else calls)}
    return {"from": _SHAREGPT_ROLE[msg.role], "value": msg.content or ""}


def sharegpt_conversation(messages: list[Message]) -> list[dict[str, str]]:
    """Turns in ShareGPT form; the answers to one parallel call become one observation."""
    out: list[dict[str, str]] = []
    answers: list[str] = []
    for msg in messages:
        if msg.role == "tool":
            answers.append(msg.content or "")
            continue
        if answers:
            out.append({"from": "observation", "value": answers[0] if len(answers) == 1 else _json(answers)})
            answers = []
        out.append(_sharegpt_turn(msg))
    if answers:
        out.append({"from": "observation", "value": answers[0] if len(answers) == 1 else _json(answers)})
    return out


def sharegpt_chat(traj: Trajectory, mode: Mode = "prompt") -> list[dict[str, Any]]:
    segments = render(traj, mode)
    if len(segments) > 1:
        raise RenderError("ShareGPT cannot change tools mid-conversation (use --mode prompt)", traj.id)
    (seg,) = segments
    return [{"conversations": sharegpt_conversation(seg.messages)} | ({"tools": _sharegpt_tools(seg.tools)} if mode == "fc" else {})]


def sharegpt_preference(pair: PreferencePair, mode: Mode = "prompt") -> list[dict[str, Any]]:
    cut = _pair(pair, mode)
    return [{
        "conversations": sharegpt_conversation(cut.prompt),
        "chosen": _sharegpt_turn(cut.chosen),
        "rejected": _sharegpt_turn(cut.rejected),
    } | ({"tools": _sharegpt_tools(cut.tools)} if mode == "fc" else {})]


# -- Hugging Face datasets / TRL ----------------------------------------------------------------


def hf_message(msg: Message, mode: Mode = "fc") -> dict[str, Any]:
    """Every key on every message (fc), so Arrow infers one schema for the whole column;
    prompt mode's messages are role and content only."""
    if mode == "prompt":
        return {"role": msg.role, "content": msg.content or ""}
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}} for c in msg.tool_calls]
    return {"role": msg.role, "content": msg.content, "tool_calls": calls, "tool_call_id": msg.tool_call_id, "name": msg.name}


def hf_chat(traj: Trajectory, mode: Mode = "prompt") -> list[dict[str, Any]]:
    """TRL prompt-completion rows, one per segment: the completion starts at the segment's first trained message."""
    rows = []
    for k, seg in enumerate(render(traj, mode)):
        first = seg.first_trained
        if first is None:
            continue
        rows.append({
            "id": traj.id, "segment": k, "episode_id": traj.episode_id, "polarity": traj.polarity,
            "source": traj.source, "teacher": traj.teacher,
            "prompt": [hf_message(m, mode) for m in seg.messages[:first]],
            "completion": [hf_message(m, mode) for m in seg.messages[first:]],
        } | ({"tools": _tools_json(seg.tools)} if mode == "fc" else {}))
    return rows


def hf_preference(pair: PreferencePair, mode: Mode = "prompt") -> list[dict[str, Any]]:
    cut = _pair(pair, mode)
    return [{
        "id": pair.id,
        "episode_id": pair.episode_id,
        "prompt": [hf_message(m, mode) for m in cut.prompt],
        "chosen": [hf_message(cut.chosen, mode)],
        "rejected": [hf_message(cut.rejected, mode)],
    } | ({"tools": _tools_json(cut.tools)} if mode == "fc" else {})]


# -- BFCL -------------------------------------------------------------------------------------


def bfcl_entry(traj: Trajectory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(prompt entry, ground-truth entry): one question and one list of calls per user turn.
    Raises RenderError when a call has a name BFCL's call syntax cannot express."""
    messages = conversation(traj.messages)
    offered = offered_per_turn(traj.tools, traj.turn_tools, sum(m.role == "user" for m in messages), traj.id)
    questions: list[list[dict[str, str]]] = []
    answers: list[list[str]] = []
    missed: dict[str, list[dict[str, Any]]] = {}
    for msg in messages:
        if msg.role == "user":
            turn = len(questions)
            known = {s.name for s in offered[turn - 1]} if turn else {s.name for s in offered[0]}
            added = [bfcl_function(s) for s in offered[turn] if s.name not in known]
            if added:
                missed[str(turn)] = added
            # BFCL's holdout turn has no user message: its generator sends the follow-up itself.
            bfcl_follow_up = added and msg.content in (None, "", DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC)
            questions.append([] if bfcl_follow_up else [{"role": "user", "content": msg.content or ""}])
            answers.append([])
        elif msg.role == "assistant" and questions:
            answers[-1].extend(call_text(c) for c in msg.tool_calls)
    prompt: dict[str, Any] = {"id": traj.id, "question": questions, "function": [bfcl_function(s) for s in offered[0]]}
    if missed:
        prompt["missed_function"] = missed
    return prompt, {"id": traj.id, "ground_truth": answers}


# -- writing ----------------------------------------------------------------------------------


@contextmanager
def _atomic_output(path: Path) -> Iterator[IO[bytes]]:
    try:
        with atomic_output(path) as f:
            yield f
    except OSError as err:  # read-only target, disk full, file size limit: the user's to fix
        raise UserInputError(f"cannot write the export to {path} ({err.strerror or err}); "
                             "choose a writable --out with free space (nothing was written there)") from None


def _records(run_dir: Path, kind: str, polarity: str, damaged: list[Corruption]) -> Iterator[Trajectory | PreferencePair]:
    # In id order, not write order: items finish in whatever order the teacher answers, and two
    # runs of the same config must export byte-identical files.
    for rec in read_records_by_id(run_dir, kind, on_corrupt=damaged.append):
        if kind == "trajectories" and polarity != "all" and rec.polarity != polarity:
            continue
        yield rec


def _write_jsonl(path: Path, records: Iterator[Any], convert: Callable[[Any], list[dict]],
                 skipped: Counter) -> int:
    """Convert and write each record (one or more rows); a record that renders to no row is
    counted in ``skipped`` under its reason."""
    written = 0
    with _atomic_output(path) as f:
        for rec in records:
            try:
                rows = convert(rec)
            except RenderError as err:
                skipped[err.reason] += 1
                continue
            if not rows:
                skipped["no assistant turn to train"] += 1
            for row in rows:
                f.write(orjson.dumps(row) + b"\n")
            written += bool(rows)
    return written


def _export_bfcl(out: Path, records: Iterator[Trajectory], skipped: Counter) -> int:
    written = 0
    with _atomic_output(out / BFCL_FILE) as prompts, _atomic_output(out / "possible_answer" / BFCL_FILE) as truths:
        for traj in records:
            try:
                entry = bfcl_entry(traj)
            except RenderError as err:
                skipped[err.reason] += 1
                continue
            prompts.write(orjson.dumps(entry[0]) + b"\n")
            truths.write(orjson.dumps(entry[1]) + b"\n")
            written += 1
    return written


def _datasets_module():
    try:
        import datasets
    except ImportError:
        raise UserInputError("--save-to-disk needs the `datasets` package: pip install datasets (or drop --save-to-disk)") from None
    return datasets


def _save_to_disk(out: Path) -> Path:
    target = out / "arrow"
    _datasets_module().Dataset.from_json(str(out / "train.jsonl")).save_to_disk(str(target))
    return target


def export(run_dir: Path, fmt: str, out: Path, *, kind: str = "trajectories", polarity: str = "positive",
           save_to_disk: bool = False, mode: str = "prompt") -> dict[str, Any]:
    """Export one kind of a run in ``mode``; returns a summary (records written, records skipped
    by reason, damaged spans). ``written`` counts records; an fc trajectory can be several rows.

    Skipped: records the mode or format cannot express (call or argument names that are not
    Python names in prompt mode and BFCL, inconsistent per-turn tools) and pairs without an
    assistant turn where they differ."""
    if not (run_dir / MANIFEST).is_file() and not shard_files(run_dir / kind):
        raise UserInputError(f"{run_dir} is not a magnet run directory (no {MANIFEST}); pass the --out of a generate run")
    if fmt not in FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    mode = check_mode(mode)
    if kind not in ("trajectories", "pairs"):
        raise UserInputError(f"--kind {kind!r} cannot be exported; choose trajectories or pairs")
    if save_to_disk and fmt != "hf":
        raise UserInputError("--save-to-disk only applies to --format hf")
    if save_to_disk:
        _datasets_module()  # fail before writing anything
    if fmt in ("hf", "bfcl") and out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; --format {fmt} writes a folder: pass a folder path")
    if fmt in ("openai", "sharegpt") and out.is_dir():
        raise UserInputError(f"--out {out} is a folder; --format {fmt} writes one JSONL file: pass a file path")
    damaged: list[Corruption] = []
    skipped: Counter = Counter()
    records = _records(run_dir, kind, polarity, damaged)
    if fmt == "bfcl":
        if kind != "trajectories":
            raise UserInputError("--format bfcl exports trajectories (BFCL has no preference pairs); drop --kind pairs")
        written = _export_bfcl(out, records, skipped)
        files = [out / BFCL_FILE, out / "possible_answer" / BFCL_FILE]
    else:
        pairs = kind == "pairs"
        convert = {
            "openai": openai_preference if pairs else openai_chat,
            "sharegpt": sharegpt_preference if pairs else sharegpt_chat,
            "hf": hf_preference if pairs else hf_chat,
        }[fmt]
        target = out / "train.jsonl" if fmt == "hf" else out
        written = _write_jsonl(target, records, lambda rec: convert(rec, mode), skipped)
        files = [target]
        if fmt == "hf":  # the template TRL's assistant_only_loss needs, for ChatML models without one
            shutil.copyfile(template_path(TOOLS_TEMPLATE), out / HF_TEMPLATE)
            files.append(out / HF_TEMPLATE)
        if save_to_disk:
            files.append(_save_to_disk(out))
    return {
        "format": fmt,
        "kind": kind,
        "mode": None if fmt == "bfcl" else mode,
        "written": written,
        "skipped": sum(skipped.values()),
        "skip_reasons": dict(skipped),
        "damaged_spans": [c.describe() for c in damaged],
        "files": [str(p) for p in files],
    }


class ExportConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What `magnet export` writes."""

    run_dir: Annotated[str, doc("a run directory (the --out of `magnet generate`)")]
    format: Annotated[Literal["openai", "sharegpt", "hf", "bfcl"], doc("openai | sharegpt | hf | bfcl")]
    out: Annotated[str, doc("output file (openai, sharegpt) or folder (hf, bfcl)")]
    kind: Annotated[Literal["trajectories", "pairs"], doc("what to export")] = "trajectories"
    mode: Annotated[Mode | None, doc(f"{MODE_HELP} (default prompt; not for --format bfcl, which is BFCL's own data format)")] = None
    polarity: Annotated[Literal["positive", "negative", "all"] | None, doc(
        "trajectories to keep (default positive: negatives are not SFT data)")] = None
    save_to_disk: Annotated[bool, doc("hf only: also write an Arrow copy (needs `datasets`)")] = False


EXPORT_CLI = ConfigCLI(ExportConfig, positional=("run_dir",), config_file=False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="magnet export", description="Export a run's trajectories or pairs as training files.")
    EXPORT_CLI.add_arguments(parser)
    args = EXPORT_CLI.load(parser.parse_args(argv))
    if args.polarity is not None and args.kind == "pairs":
        raise UserInputError("--polarity applies to trajectories; a pair holds one of each: drop --polarity")
    if args.mode is not None and args.format == "bfcl":
        raise UserInputError("--mode does not apply to --format bfcl (BFCL's harness renders its data in either mode); drop --mode")
    summary = export(Path(args.run_dir), args.format, Path(args.out), kind=args.kind, polarity=args.polarity or "positive",
                     save_to_disk=args.save_to_disk, mode=args.mode or "prompt")
    for line in summary["damaged_spans"]:
        print(f"magnet export: warning: skipped {line}", file=sys.stderr)
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(summary["skip_reasons"].items()))
    extra = f", skipped {summary['skipped']} ({why})" if summary["skipped"] else ""
    in_mode = f" in {summary['mode']} mode" if summary["mode"] else ""
    print(f"wrote {summary['written']} {args.kind} to {', '.join(summary['files'])}{in_mode}{extra}")
    return 0
