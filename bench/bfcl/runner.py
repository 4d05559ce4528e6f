"""Run a Teacher on BFCL entries the way BFCL's generator runs a chat model.

Prompt mode follows BFCL's ``OpenAIHandler`` in prompting mode: the function docs go into
BFCL's system prompt, the answer is text holding a Python list of calls, execution results
come back as one user message. FC mode follows it in function-calling mode: BFCL's
``convert_to_tool`` schemas, native tool calls, one ``tool`` message per result.

Multi-turn is BFCL's loop: per user turn, query, decode with BFCL's decoder, stop the turn
when the answer holds no call (or does not decode), else execute the calls on the entry's
own instances of BFCL's API classes and query again; more than ``MAXIMUM_STEP_LIMIT`` steps
force-quits the entry. A miss_func turn has no user text: the held-out functions are added
(FC: to the tools; prompt: listed in BFCL's user message) with BFCL's follow-up prompt.

Calls are executed by parsing them (``ast``) and invoking the named public method of the
entry's API instance with the literal arguments; nothing is ``eval``-ed. Outputs are rendered
as BFCL renders them, so the model sees what it would see under ``bfcl generate``.

Each finished entry is one line of BFCL's result format, appended to
``OUT/result/<prefix>_<category>_result.json``; a rerun skips the ids already there. An answer
is stored as BFCL's OpenAIHandler stores it, from the message the server sent: the content, or
in FC mode each tool call's arguments string unparsed ("" and invalid JSON included, the other
calls of the answer kept), and the history re-sends it as sent.
"""

from __future__ import annotations

import ast
import copy
import json
import time
from pathlib import Path
from typing import Any

import orjson

from bench.bfcl.data import Dataset, category_of, is_multi_turn
from bench.bfcl.scoring import api_classes, checked_call, forget_model, handler_class, register_model
from bench.results_io import loadavg, utc_now
from engine.atomic import write_atomic
from engine.errors import BadAnswer, TeacherError, UserInputError
from engine.records import FunctionSpec, Message, ToolCall
from engine.teacher import Completion, Teacher, Usage

BLOCKED_NAMES = ("kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run")  # BFCL's executor refuses these


# -- executing calls on BFCL's API classes ----------------------------------------------------


class ApiInstances:
    """One entry's instances of its involved API classes, loaded as BFCL loads them."""

    def __init__(self, entry: dict[str, Any]):
        from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import STATELESS_CLASSES

        long_context = "long_context" in entry["id"] or "composite" in entry["id"]
        self.instances: dict[str, Any] = {}
        self.owner: dict[str, Any] = {}  # method name -> instance; a later class wins, as in BFCL
        for name in entry["involved_classes"]:
            instance = api_classes()[name]()
            if name not in STATELESS_CLASSES:
                instance._load_scenario(copy.deepcopy(entry["initial_config"].get(name, {})), long_context=long_context)
            self.instances[name] = instance
            for method in dir(instance):
                if not method.startswith("_") and callable(getattr(instance, method)):
                    self.owner[method] = instance

    def _value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Call):
            return self._invoke(node)
        return ast.literal_eval(node)

    def _invoke(self, node: ast.Call) -> Any:
        name = node.func.id  # type: ignore[attr-defined]  # checked_call admits only bare names
        if name in BLOCKED_NAMES:
            raise RuntimeError(f"Function call {name} is not allowed.")
        if name not in self.owner:
            raise NameError(f"name '{name}' is not defined")
        args = [self._value(a) for a in node.args]
        kwargs = {k.arg: self._value(k.value) for k in node.keywords}
        return getattr(self.owner[name], name)(*args, **kwargs)

    def execute(self, call: str) -> str:
        """One decoded call string -> BFCL's rendering of its output (or of its error)."""
        node = checked_call(call)
        try:
            if node is None:
                raise NameError(f"name '{call.split('(')[0].strip()}' is not defined")
            result = self._invoke(node)
        except Exception as exc:  # noqa: BLE001 - BFCL reports any failure as the call's output
            return f"Error during execution: {exc}"
        if isinstance(result, str):
            return result
        if isinstance(result, dict):
            try:
                return json.dumps(result)
            except (TypeError, ValueError):
                return str(result)
        return str(result)


# -- BFCL's prompts -----------------------------------------------------------------------------


def _to_message(raw: dict[str, Any]) -> Message:
    return Message(role=raw["role"], content=raw.get("content"))


def _tools(functions: list[dict[str, Any]], category: str) -> list[FunctionSpec]:
    """BFCL's FC tool list: language hints, OpenAI types, '.' -> '_' in names (mutates like BFCL)."""
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.model_handler.model_style import ModelStyle
    from bfcl_eval.model_handler.utils import convert_to_tool, func_doc_language_specific_pre_processing

    docs = func_doc_language_specific_pre_processing(functions, category)
    tools = convert_to_tool(docs, GORILLA_TO_OPENAPI, ModelStyle.OpenAI)
    return [
        FunctionSpec(name=t["function"]["name"], description=t["function"].get("description", ""), parameters=t["function"]["parameters"])
        for t in tools
    ]


def result_as_stored(sent: dict[str, Any], mode: str) -> Any:
    """What BFCL's OpenAIHandler stores for an answer (``_parse_query_response_FC`` / ``_prompting``):
    in FC mode ``[{name: arguments}]`` with the arguments string as sent ("" and invalid JSON
    included), as soon as ``tool_calls`` is a list (an empty one too); otherwise the content."""
    if mode == "fc":
        try:
            return [{call["function"]["name"]: call["function"]["arguments"]} for call in sent["tool_calls"]]
        except (KeyError, TypeError):  # BFCL: any failure there (no or malformed tool_calls) -> content
            pass
    return sent.get("content")


def message_as_sent(sent: dict[str, Any]) -> Message:
    """The assistant message for the history, as BFCL re-sends the model's own message object:
    tool-call arguments travel as the exact text the model sent. ``orjson.Fragment`` holds that
    text; ``wire.call_to_wire`` serializes arguments with orjson, which writes a Fragment
    verbatim (so "" stays "" and invalid JSON stays as it was)."""
    calls = []
    for i, raw in enumerate(sent.get("tool_calls") or []):
        fn = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue  # nothing BFCL could decode either: its decoder fails on this answer
        args = fn.get("arguments")
        arguments = orjson.Fragment(args) if isinstance(args, str) else args if isinstance(args, dict) else {}
        calls.append(ToolCall(name=fn["name"], arguments=arguments, id=str(raw.get("id") or f"call_{i}")))
    content = sent.get("content")
    return Message(role="assistant", content=content if isinstance(content, str) else None, tool_calls=calls)


class Conversation:
    """The chat history of one entry in one mode, built as BFCL's OpenAIHandler builds it."""

    def __init__(self, entry: dict[str, Any], mode: str):
        from bfcl_eval.model_handler.utils import func_doc_language_specific_pre_processing, system_prompt_pre_processing_chat_model

        self.entry = copy.deepcopy(entry)  # BFCL mutates the entry (prompts, function docs)
        self.mode = mode
        self.category = category_of(entry["id"])
        self.messages: list[Message] = []
        self.tools: list[FunctionSpec] | None = None
        if mode == "fc":
            self.tools = _tools(self.entry["function"], self.category)
        else:
            functions = func_doc_language_specific_pre_processing(self.entry["function"], self.category)
            self.entry["question"][0] = system_prompt_pre_processing_chat_model(self.entry["question"][0], functions, self.category)

    def turn_messages(self, turn: int) -> list[dict[str, Any]]:
        """The user messages that open ``turn``; a miss_func holdout turn gets BFCL's follow-up."""
        from bfcl_eval.constants.default_prompts import (
            DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC,
            DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING,
        )

        held_out = self.entry.get("missed_function", {}).get(str(turn))
        if held_out is None:
            return self.entry["question"][turn]
        if self.mode == "fc":
            self.entry["function"].extend(held_out)
            self.tools = _tools(self.entry["function"], self.category)
            return [{"role": "user", "content": DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC}]
        return [{"role": "user", "content": DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING.format(functions=held_out)}]

    def add_user(self, raw_messages: list[dict[str, Any]]) -> None:
        self.messages.extend(_to_message(m) for m in raw_messages)

    def add_answer(self, message: Message, sent: dict[str, Any] | None = None) -> Any:
        """Append the assistant message; return BFCL's raw result for it (what its decoders take).

        ``sent`` is the message as the server sent it (HTTP teachers): the result is then what
        BFCL's OpenAIHandler stores, byte for byte; teachers without a wire format get the same
        shape built from the parsed message."""
        if sent is not None:
            self.messages.append(message_as_sent(sent))
            return result_as_stored(sent, self.mode)
        self.messages.append(message)
        if self.mode == "fc" and message.tool_calls:
            return [{c.name: json.dumps(c.arguments)} for c in message.tool_calls]
        return message.content or ""

    def add_results(self, calls: list[str], outputs: list[str]) -> None:
        if self.mode == "fc":
            # one tool message per call of the answer just added, answered by its id (BFCL zips them alike)
            for i, (call, output) in enumerate(zip(self.messages[-1].tool_calls, outputs)):
                # the wire format names an id-less call "call_<i>"; answer it under the same id
                self.messages.append(Message(role="tool", content=output, tool_call_id=call.id or f"call_{i}"))
        else:
            rendered = [{"role": "tool", "name": call, "content": output} for call, output in zip(calls, outputs)]
            self.messages.append(Message(role="user", content=repr(rendered)))


# -- one entry --------------------------------------------------------------------------------


class EntryRunner:
    """Runs entries on a Teacher; ``decoder`` is BFCL's handler used for the loop's decisions."""

    def __init__(self, teacher: Teacher, mode: str, *, max_tokens: int = 1024, temperature: float = 0.0):
        if mode not in ("prompt", "fc"):
            raise UserInputError(f"--mode {mode!r} is unknown; use prompt (calls as Python text) or fc (native tool calls)")
        self.teacher, self.mode = teacher, mode
        self.max_tokens, self.temperature = max_tokens, temperature
        self.decoder_name = register_model(mode, "magnet-loop")
        self.decoder = handler_class()(self.decoder_name)

    def close(self) -> None:
        forget_model(self.decoder_name)

    async def _ask(self, convo: Conversation, usage: dict[str, list[Any]]) -> Any:
        """Ask the model; add its answer to ``convo``; return BFCL's raw result for it."""
        started = time.monotonic()
        try:
            completion: Completion = await self.teacher.chat(
                convo.messages, convo.tools, temperature=self.temperature, max_tokens=self.max_tokens
            )
            message, sent, spent = completion.message, completion.wire_message, completion.usage
        except BadAnswer as err:
            # A truncated or unparsable reply (tool-call arguments that are not JSON) is still the
            # model's answer to BFCL (its decoder then fails and the turn ends), not an inference
            # error; its tokens were still spent.
            message, sent, spent = Message(role="assistant", content=err.text), err.wire_message, err.usage or Usage()
        usage["input"].append(spent.prompt_tokens)
        usage["output"].append(spent.completion_tokens)
        usage["latency"].append(round(time.monotonic() - started, 4))
        return convo.add_answer(message, sent)

    async def single_turn(self, entry: dict[str, Any]) -> dict[str, Any]:
        convo = Conversation(entry, self.mode)
        convo.add_user(convo.entry["question"][0])
        usage: dict[str, list[Any]] = {"input": [], "output": [], "latency": []}
        raw = await self._ask(convo, usage)
        return {"id": entry["id"], "result": raw, "input_token_count": usage["input"][0],
                "output_token_count": usage["output"][0], "latency": usage["latency"][0]}

    def _decode(self, raw: Any) -> list[str]:
        """BFCL's decode_execute; an empty list when the answer holds no call or does not decode."""
        from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import is_empty_execute_response

        try:
            calls = self.decoder.decode_execute(raw)
        except Exception:  # noqa: BLE001 - BFCL: any decode failure ends the turn
            return []
        return [] if is_empty_execute_response(calls) else calls

    async def multi_turn(self, entry: dict[str, Any]) -> dict[str, Any]:
        from bfcl_eval.constants.default_prompts import MAXIMUM_STEP_LIMIT

        convo = Conversation(entry, self.mode)
        apis = ApiInstances(convo.entry)
        turns: list[list[Any]] = []
        per_turn: dict[str, list[list[Any]]] = {"input": [], "output": [], "latency": []}
        for turn in range(len(convo.entry["question"])):
            convo.add_user(convo.turn_messages(turn))
            responses: list[Any] = []
            step_usage: dict[str, list[Any]] = {"input": [], "output": [], "latency": []}
            force_quit = False
            while True:
                raw = await self._ask(convo, step_usage)
                responses.append(raw)
                calls = self._decode(raw)
                if not calls:
                    break
                outputs = [apis.execute(c) for c in calls]
                convo.add_results(calls, outputs)
                if len(responses) > MAXIMUM_STEP_LIMIT:
                    force_quit = True
                    break
            turns.append(responses)
            for key in per_turn:
                per_turn[key].append(step_usage[key])
            if force_quit:
                break
        return {"id": entry["id"], "result": turns, "input_token_count": per_turn["input"],
                "output_token_count": per_turn["output"], "latency": per_turn["latency"]}

    async def run(self, entry: dict[str, Any]) -> dict[str, Any]:
        """BFCL's result row for ``entry``; a teacher failure becomes BFCL's inference-error row."""
        try:
            if is_multi_turn(category_of(entry["id"])):
                return await self.multi_turn(entry)
            return await self.single_turn(entry)
        except TeacherError as err:
            return {"id": entry["id"], "result": f"Error during inference: {type(err).__name__}: {err}"}


# -- results on disk --------------------------------------------------------------------------


class ResultFiles:
    """BFCL result files of one run, appended one line per finished entry; the store that
    ``engine.scheduler.run_jobs`` commits to (a finished entry is a line in its category file)."""

    def __init__(self, out: Path, dataset: Dataset, config: dict[str, Any]):
        self.folder = out / "result"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = dataset.prefix
        self.config_path = out / "run.json"
        self.segments_path = out / "segments.jsonl"  # one line per invocation of the command
        self._check_config(config)
        self.rows: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob(f"{self.prefix}_*_result.json")):
            self._load(path)
        self.handles: dict[str, Any] = {}

    def _check_config(self, config: dict[str, Any]) -> None:
        if self.config_path.exists():
            old = json.loads(self.config_path.read_text())
            diff = {k for k in config if old.get(k) != config[k]}
            if diff:
                raise UserInputError(
                    f"--out {str(self.config_path.parent)!r} holds a run with different {', '.join(sorted(diff))} "
                    f"({', '.join(f'{k}={old.get(k)!r}' for k in sorted(diff))}); use a new --out to start another run"
                )
        else:
            write_atomic(self.config_path, json.dumps(config, indent=1))

    def _load(self, path: Path) -> None:
        data = path.read_bytes()
        good = data.rfind(b"\n") + 1 if not data.endswith(b"\n") else len(data)
        if good < len(data):  # a torn last line from an interrupted run: drop it, the entry reruns
            with path.open("r+b") as f:
                f.truncate(good)
        for line in data[:good].splitlines():
            if line.strip():
                row = orjson.loads(line)
                self.rows[row["id"]] = row

    def add(self, row: dict[str, Any]) -> None:
        category = category_of(row["id"])
        handle = self.handles.get(category)
        if handle is None:
            handle = self.handles[category] = (self.folder / f"{self.prefix}_{category}_result.json").open("ab")
        handle.write(orjson.dumps(row) + b"\n")
        handle.flush()
        self.rows[row["id"]] = row

    # the store interface run_jobs uses
    def is_finished(self, item_id: str) -> bool:
        return item_id in self.rows

    def commit(self, item_id: str, records: list[Any]) -> None:
        """Rows are added by the job itself (BFCL's format is not a record kind)."""

    def dead_letter(self, dl: Any) -> None:
        self.add({"id": dl.item_id, "result": f"Error during inference: {dl.error}"})

    def flush(self) -> None:
        for handle in self.handles.values():
            handle.flush()

    def add_segment(self, wall_s: float, entries_done: int, interrupted: bool, host: dict[str, Any]) -> None:
        """Record one invocation (its wall time and host): a resumed run's wall time is the sum of its segments."""
        line = {"ended": utc_now(), "wall_s": round(wall_s, 3), "entries_done": entries_done, "interrupted": interrupted,
                "machine": host, "loadavg_end": loadavg()}
        with self.segments_path.open("ab") as f:
            f.write(orjson.dumps(line) + b"\n")

    def segments(self) -> list[dict[str, Any]]:
        if not self.segments_path.exists():
            return []
        segments = []
        for line in self.segments_path.read_bytes().splitlines():
            try:
                segments.append(orjson.loads(line))
            except orjson.JSONDecodeError:  # a torn line of a killed run: its time is lost, not the run
                continue
        return segments

    def write_manifest(self, extra: dict[str, Any] | None = None) -> None:
        if extra:
            write_atomic(self.config_path.parent / "last_run.json", json.dumps(extra, indent=1, default=str))

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


async def run_entries(
    entries: list[dict[str, Any]], runner: EntryRunner, store: ResultFiles, *, concurrency: int = 16, progress: bool = True
) -> dict[str, Any]:
    """Run every entry not yet in ``store``, ``concurrency`` at a time, through the engine's scheduler."""
    from engine.scheduler import run_jobs

    async def job(entry: dict[str, Any]) -> list[Any]:
        store.add(await runner.run(entry))
        return []

    return await run_jobs(
        entries, job, store, item_id=lambda e: e["id"], stage="bfcl", max_in_flight=concurrency,
        total=len(entries), progress=progress, item_payload=lambda e: e["id"],
    )
