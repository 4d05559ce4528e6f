"""`magnet export RUN_DIR --format openai|sharegpt|hf|bfcl --out PATH`: training files from a run.

Every format streams: one record is read, converted and written at a time, into a temporary
file that replaces the target only when the export finished, so a failed export never leaves
a half-written file behind under the real name.

- ``openai``: chat fine-tuning JSONL (``messages`` + ``tools``, tool calls in wire form with
  ``arguments`` as a JSON string). Pairs become OpenAI's DPO JSONL (``input`` /
  ``preferred_output`` / ``non_preferred_output``); that API takes one assistant message per
  side, so a pair is cut at its first differing assistant message.
- ``sharegpt``: LLaMA-Factory's ShareGPT tool format (``conversations`` with system, human,
  gpt, function_call, observation; ``tools`` as a JSON string); pairs use its ranking form
  (``chosen`` / ``rejected`` messages after the shared ``conversations``).
- ``hf``: a folder with ``train.jsonl`` that ``datasets.load_dataset("json", ...)`` reads, in
  TRL's conversational layout (pairs: ``prompt`` / ``chosen`` / ``rejected``). Free-form
  JSON (call arguments, tool schemas) is kept as JSON strings so every row has one Arrow
  schema. ``--save-to-disk`` also writes an Arrow copy with ``datasets``.
- ``bfcl``: BFCL's multi-turn prompt format (``question`` per turn, ``function`` docs in
  BFCL's type names) plus ``possible_answer/`` with the calls of each turn as BFCL call
  strings, keyword arguments only, values as Python literals (what BFCL parses with ast).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from engine.errors import UserInputError
from engine.records import FunctionSpec, Message, PreferencePair, ToolCall, Trajectory
from engine.shards import Corruption, shard_files
from engine.store import MANIFEST, read_records

FORMATS = ("openai", "sharegpt", "hf", "bfcl")
BFCL_FILE = "BFCL_v3_magnet.json"
_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}
_BFCL_TYPES = {"object": "dict", "number": "float"}


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def with_call_ids(messages: list[Message]) -> list[Message]:
    """Give every tool call an id and every tool answer the id of the call it answers.

    Calls without an id get ``call_<message>_<index>``; a tool message without
    ``tool_call_id`` answers the next unanswered call of the latest assistant message.
    """
    out: list[Message] = []
    pending: list[ToolCall] = []
    for i, msg in enumerate(messages):
        if msg.role == "assistant" and msg.tool_calls:
            calls = [c if c.id else msgspec.structs.replace(c, id=f"call_{i}_{j}") for j, c in enumerate(msg.tool_calls)]
            msg = msgspec.structs.replace(msg, tool_calls=calls)
            pending = list(calls)
        elif msg.role == "tool":
            if msg.tool_call_id:
                pending = [c for c in pending if c.id != msg.tool_call_id]
            elif pending:
                call = pending.pop(0)
                msg = msgspec.structs.replace(msg, tool_call_id=call.id, name=msg.name or call.name)
        out.append(msg)
    return out


# -- OpenAI -----------------------------------------------------------------------------------


def openai_message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role}
    if msg.role == "assistant" and msg.tool_calls:
        if msg.content:
            out["content"] = msg.content
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _json(c.arguments)}} for c in msg.tool_calls
        ]
    else:
        out["content"] = msg.content or ""
    if msg.role == "tool":
        out["tool_call_id"] = msg.tool_call_id
    return out


def openai_chat(traj: Trajectory) -> dict[str, Any]:
    return {
        "messages": [openai_message(m) for m in with_call_ids(traj.messages)],
        "tools": [spec.to_openai_tool() for spec in traj.tools],
    }


def _same(a: Message, b: Message) -> bool:
    """Equal as a model sees them: call ids are bookkeeping, not content."""
    return (a.role, a.content, [(c.name, c.arguments) for c in a.tool_calls]) == (
        b.role,
        b.content,
        [(c.name, c.arguments) for c in b.tool_calls],
    )


def split_pair(pair: PreferencePair) -> tuple[list[Message], list[Message], list[Message]] | None:
    """(shared prefix, chosen rest, rejected rest), or None when they do not diverge at an assistant message."""
    chosen, rejected = with_call_ids(pair.chosen.messages), with_call_ids(pair.rejected.messages)
    k = 0
    while k < min(len(chosen), len(rejected)) and _same(chosen[k], rejected[k]):
        k += 1
    if k >= len(chosen) or k >= len(rejected) or chosen[k].role != "assistant" or rejected[k].role != "assistant":
        return None
    return chosen[:k], chosen[k:], rejected[k:]


def openai_preference(pair: PreferencePair) -> dict[str, Any] | None:
    split = split_pair(pair)
    if split is None:
        return None
    prefix, chosen, rejected = split
    return {
        "input": {"messages": [openai_message(m) for m in prefix], "tools": [s.to_openai_tool() for s in pair.chosen.tools]},
        "preferred_output": [openai_message(chosen[0])],
        "non_preferred_output": [openai_message(rejected[0])],
    }


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


def sharegpt_chat(traj: Trajectory) -> dict[str, Any]:
    return {"conversations": sharegpt_conversation(traj.messages), "tools": _sharegpt_tools(traj.tools)}


def sharegpt_preference(pair: PreferencePair) -> dict[str, Any] | None:
    split = split_pair(pair)
    if split is None:
        return None
    prefix, chosen, rejected = split
    return {
        "conversations": sharegpt_conversation(prefix),
        "chosen": _sharegpt_turn(chosen[0]),
        "rejected": _sharegpt_turn(rejected[0]),
        "tools": _sharegpt_tools(pair.chosen.tools),
    }


# -- Hugging Face datasets ----------------------------------------------------------------------


def hf_message(msg: Message) -> dict[str, Any]:
    """Every key on every message, so Arrow infers one schema for the whole column."""
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _json(c.arguments)}} for c in msg.tool_calls]
    return {"role": msg.role, "content": msg.content, "tool_calls": calls, "tool_call_id": msg.tool_call_id, "name": msg.name}


def hf_chat(traj: Trajectory) -> dict[str, Any]:
    return {
        "id": traj.id,
        "episode_id": traj.episode_id,
        "polarity": traj.polarity,
        "source": traj.source,
        "teacher": traj.teacher,
        "messages": [hf_message(m) for m in with_call_ids(traj.messages)],
        "tools": _json([s.to_openai_tool() for s in traj.tools]),
    }


def hf_preference(pair: PreferencePair) -> dict[str, Any] | None:
    split = split_pair(pair)
    if split is None:
        return None
    prefix, chosen, rejected = split
    return {
        "id": pair.id,
        "episode_id": pair.episode_id,
        "prompt": [hf_message(m) for m in prefix],
        "chosen": [hf_message(m) for m in chosen],
        "rejected": [hf_message(m) for m in rejected],
        "tools": _json([s.to_openai_tool() for s in pair.chosen.tools]),
    }


# -- BFCL -------------------------------------------------------------------------------------


def bfcl_schema(schema: Any) -> Any:
    """JSON Schema -> BFCL's dialect ("dict" for object, "float" for number), recursively."""
    if isinstance(schema, dict):
        out = {k: bfcl_schema(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = _BFCL_TYPES.get(out["type"], out["type"])
        return out
    if isinstance(schema, list):
        return [bfcl_schema(v) for v in schema]
    return schema


def bfcl_function(spec: FunctionSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": spec.name, "description": spec.description, "parameters": bfcl_schema(spec.parameters)}
    if isinstance(spec.returns, dict) and spec.returns:
        doc["response"] = bfcl_schema(spec.returns)
    return doc


def bfcl_call(call: ToolCall) -> str | None:
    """``name(a=1, b='x')``: keyword arguments, values as Python literals (ast.literal_eval-able).
    None when the names cannot be written as a Python call (BFCL parses these with ast)."""
    if not all(part.isidentifier() for part in call.name.split(".")) or not all(k.isidentifier() for k in call.arguments):
        return None
    return f"{call.name}({', '.join(f'{k}={v!r}' for k, v in call.arguments.items())})"


def bfcl_entry(traj: Trajectory) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(prompt entry, ground-truth entry): one question and one list of calls per user turn;
    None when a call has a name BFCL's call syntax cannot express."""
    questions: list[list[dict[str, str]]] = []
    answers: list[list[str]] = []
    system: list[dict[str, str]] = []
    for msg in traj.messages:
        if msg.role == "system" and not questions:
            system.append({"role": "system", "content": msg.content or ""})
        elif msg.role == "user":
            questions.append([*system, {"role": "user", "content": msg.content or ""}])
            answers.append([])
            system = []
        elif msg.role == "assistant" and questions:
            calls = [bfcl_call(c) for c in msg.tool_calls]
            if None in calls:
                return None
            answers[-1].extend(calls)
    prompt = {"id": traj.id, "question": questions, "function": [bfcl_function(s) for s in traj.tools]}
    return prompt, {"id": traj.id, "ground_truth": answers}


# -- writing ----------------------------------------------------------------------------------


@contextmanager
def _atomic_output(path: Path) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb", buffering=1 << 20) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _records(run_dir: Path, kind: str, polarity: str, damaged: list[Corruption]) -> Iterator[Trajectory | PreferencePair]:
    for rec in read_records(run_dir, kind, on_corrupt=damaged.append):
        if kind == "trajectories" and polarity != "all" and rec.polarity != polarity:
            continue
        yield rec


def _write_jsonl(path: Path, records: Iterator[Any], convert: Callable[[Any], dict | None]) -> tuple[int, int]:
    """Convert and write each record; a None from ``convert`` is counted as skipped."""
    written = skipped = 0
    with _atomic_output(path) as f:
        for rec in records:
            row = convert(rec)
            if row is None:
                skipped += 1
                continue
            f.write(orjson.dumps(row) + b"\n")
            written += 1
    return written, skipped


def _export_bfcl(out: Path, records: Iterator[Trajectory]) -> tuple[int, int]:
    written = skipped = 0
    with _atomic_output(out / BFCL_FILE) as prompts, _atomic_output(out / "possible_answer" / BFCL_FILE) as truths:
        for traj in records:
            entry = bfcl_entry(traj)
            if entry is None:
                skipped += 1
                continue
            prompts.write(orjson.dumps(entry[0]) + b"\n")
            truths.write(orjson.dumps(entry[1]) + b"\n")
            written += 1
    return written, skipped


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
           save_to_disk: bool = False) -> dict[str, Any]:
    """Export one kind of a run; returns a summary (rows written, rows skipped, damaged spans).

    Skipped: pairs without an assistant turn where they differ (preference formats), and for
    BFCL trajectories whose call or argument names are not Python identifiers."""
    if not (run_dir / MANIFEST).is_file() and not shard_files(run_dir / kind):
        raise UserInputError(f"{run_dir} is not a magnet run directory (no {MANIFEST}); pass the --out of a generate run")
    if fmt not in FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
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
    records = _records(run_dir, kind, polarity, damaged)
    if fmt == "bfcl":
        if kind != "trajectories":
            raise UserInputError("--format bfcl exports trajectories (BFCL has no preference pairs); drop --kind pairs")
        written, skipped = _export_bfcl(out, records)
        files = [out / BFCL_FILE, out / "possible_answer" / BFCL_FILE]
    else:
        pairs = kind == "pairs"
        convert = {
            "openai": openai_preference if pairs else openai_chat,
            "sharegpt": sharegpt_preference if pairs else sharegpt_chat,
            "hf": hf_preference if pairs else hf_chat,
        }[fmt]
        target = out / "train.jsonl" if fmt == "hf" else out
        written, skipped = _write_jsonl(target, records, convert)
        files = [target]
        if save_to_disk:
            files.append(_save_to_disk(out))
    return {
        "format": fmt,
        "kind": kind,
        "written": written,
        "skipped": skipped,
        "damaged_spans": [c.describe() for c in damaged],
        "files": [str(p) for p in files],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="magnet export", description="Export a run's trajectories or pairs as training files.")
    parser.add_argument("run_dir", type=Path, help="a run directory (the --out of `magnet generate`)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="openai | sharegpt | hf | bfcl")
    parser.add_argument("--out", required=True, type=Path, help="output file (openai, sharegpt) or folder (hf, bfcl)")
    parser.add_argument("--kind", default="trajectories", choices=("trajectories", "pairs"), help="what to export")
    parser.add_argument("--polarity", choices=("positive", "negative", "all"), default=None,
                        help="trajectories to keep (default positive: negatives are not SFT data)")
    parser.add_argument("--save-to-disk", action="store_true", help="hf only: also write an Arrow copy (needs `datasets`)")
    args = parser.parse_args(argv)
    if args.polarity is not None and args.kind == "pairs":
        raise UserInputError("--polarity applies to trajectories; a pair holds one of each: drop --polarity")
    summary = export(args.run_dir, args.format, args.out, kind=args.kind, polarity=args.polarity or "positive",
                     save_to_disk=args.save_to_disk)
    for line in summary["damaged_spans"]:
        print(f"magnet export: warning: skipped {line}", file=sys.stderr)
    why = "BFCL cannot name their calls" if args.format == "bfcl" else "they do not differ at an assistant turn"
    extra = f", skipped {summary['skipped']} ({why})" if summary["skipped"] else ""
    print(f"wrote {summary['written']} {args.kind} to {', '.join(summary['files'])}{extra}")
    return 0
