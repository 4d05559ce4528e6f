"""Back-and-forth translation: a signature path becomes an episode of user queries and executed
reference calls (MAGNET_METHOD §5).

Per path turn: the teacher writes the user's query for the turn's functions (back), then
the calls that answer it from the query and the last outputs (forth); the calls run on the
episode's toolkit runtime and their outputs feed the next turn. A reference that names the
wrong functions, does not fit its schemas or fails to execute is retried with the problem
shown to the teacher, then the path is dead-lettered.

Split turns: miss_func asks for a function that is withheld that turn, then a follow-up turn
(function restored) asks again; miss_param leaves one required value out of the query, then
the follow-up turn supplies it. Irrelevance episodes offer only distractors and expect no call.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any

from distill.generate_config import GenerateConfig
from distill.grounding import Context, ungrounded
from distill.parsers import format_bfcl, quote, validate_call
from distill.prompts import Prompts
from distill.rollout import fresh_runtime
from distill.spend import Spend
from distill.user_facts import user_facts
from engine.bfcl_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC
from engine.errors import BadAnswer, JobFailed
from engine.records import Episode, EpisodeTurn, FunctionSpec, Message, SignaturePath, ToolCall
from engine.retry import with_reasks
from engine.structured import ask_json
from engine.teacher import Teacher
from graph.matcher import GENERIC
from graph.schema import ArgumentError
from graph.toolkit import ToolPool, ToolRuntime

# Queries a broken or placeholder author writes: they carry no request.
_PLACEHOLDER = re.compile(r"^\W*(the )?(user'?s? )?(message|query|request|question|text|input)\W*$|^\w+_query$", re.I)
QUERY_SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"], "additionalProperties": False}
_ENV_CHARS = 1200  # per toolkit: a turn over three toolkits shows each one's ids
_OUT_CHARS = 1500


def describe(spec: FunctionSpec) -> str:
    """One compact line per function: small models have short contexts."""
    props = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", []))
    params = ", ".join(
        f"{p}: {s.get('type', 'any')}{'' if p in required else ' (optional)'}"
        + (f" one of {s['enum']}" if "enum" in s else "")
        + (f" - {s['description']}" if s.get("description") else "")
        for p, s in props.items()
    )
    return f"- {spec.name}({params}): {spec.description}"


def clip(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def calls_schema(functions: list[FunctionSpec]) -> dict[str, Any]:
    """One fixed slot per expected call: the path fixes the functions, the model fills the values.
    (Fixed keys rather than an array of anyOf: simple for grammars and for small models.)"""
    slots = {
        f"call_{i + 1}": {
            "type": "object",
            "properties": {"name": {"type": "string", "enum": [spec.name]}, "arguments": spec.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for i, spec in enumerate(functions)
    }
    return {"type": "object", "properties": slots, "required": list(slots), "additionalProperties": False}


def answer_calls(obj: dict[str, Any], text: str) -> list[ToolCall]:
    """The calls in a forth-translation answer: ``call_N`` slots, or a ``calls`` list."""
    items = obj["calls"] if isinstance(obj.get("calls"), list) else [
        obj[k] for k in sorted((k for k in obj if k.startswith("call_")), key=lambda k: int(k[5:]) if k[5:].isdigit() else 0)
    ]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadAnswer(f"forth translation: a call without a name: {quote(text)!r}", text=text)
        args = item.get("arguments") or {}
        if not isinstance(args, dict):
            raise BadAnswer(f"forth translation: arguments of {item['name']} are not an object: {quote(text)!r}", text=text)
        calls.append(ToolCall(name=item["name"], arguments=args))
    return calls


def output_values(outputs: list[Any]) -> dict[str, list[Any]]:
    """Field name -> every scalar value under that name in the outputs (most recent first)."""
    found: dict[str, list[Any]] = {}

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif key is not None and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            found.setdefault(key, []).append(value)

    for out in reversed(outputs):
        walk(out, None)
    return found


def bind_outputs(call: ToolCall, earlier: list[Any], stated: str = "") -> ToolCall:
    """Take a parameter's value from an earlier output field of the same (specific) name when the
    model's value is none of that field's values: ids and tokens copied from outputs are where
    models slip, and the data flow is known exactly. A value the query ``stated`` is kept: the
    user asked for that one (a new device, 90 minutes), not the one an output showed."""
    values = output_values(earlier)
    said = Context([stated])
    args = dict(call.arguments)
    for name, value in call.arguments.items():
        if (value is None or isinstance(value, (list, dict)) or name in GENERIC or name not in values or value in values[name]
                or (value != "" and said.holds(value))):
            continue
        args[name] = values[name][0]
    return ToolCall(name=call.name, arguments=args)


def _correction(bad: BadAnswer | None) -> list[Message]:
    """What a re-ask adds after the prompt: the rejected answer, and its problem to fix."""
    if bad is None:
        return []
    return [Message(role="assistant", content=bad.text or "(empty)"),
            Message(role="user", content=f"That answer has a problem: {bad}. Answer again, fixing it.")]


class Translator:
    def __init__(self, teacher: Teacher, pool: ToolPool, prompts: Prompts, config: GenerateConfig):
        self.teacher, self.pool, self.prompts, self.cfg = teacher, pool, prompts, config

    # -- episode ---------------------------------------------------------------------------

    def episode_tools(self, path: SignaturePath) -> list[FunctionSpec]:
        """What the model is offered: the path's functions and its distractors (sized per kind by
        the path sampler, like BFCL's entries); an irrelevance episode offers only distractors."""
        needed = [] if path.kind == "irrelevance" else [f for t in path.turns for f in t.functions]
        return [self.pool.spec(n) for n in dict.fromkeys([*needed, *path.distractors])]

    async def translate(self, path: SignaturePath, spend: Spend) -> Episode:
        tools = self.episode_tools(path)
        needed = {f for t in path.turns for f in t.functions}
        kits = sorted({self.pool.toolkit_of(s.name) for s in tools} | {self.pool.toolkit_of(f) for f in needed})
        episode = Episode(id=f"ep-{path.id}", path_id=path.id, kind=path.kind, tools=tools, toolkits=kits, seed=path.seed)
        runtime = fresh_runtime(self.pool, episode)
        episode.initial_state = runtime.initial_state
        turns = path.turns
        index = 0
        while index < len(turns):
            turn = turns[index]
            stage = f"translate turn {index} ({turn.label})"
            if path.kind == "irrelevance":
                specs = [self.pool.spec(f) for f in turn.functions]
                query = await self._retry(stage, partial(self._back, episode, runtime, specs, spend))
                episode.turns.append(EpisodeTurn(query=query, label="miss_func", missing=list(turn.missing or turn.functions)))
                index += 1
                continue
            # A Split turn is empty and comes right before the turn that restores what it lacks:
            # both are written from the restoring turn's functions.
            split = turn if turn.label != "call" else None
            if split is not None:
                if index + 1 >= len(turns) or not turns[index + 1].functions:
                    raise JobFailed(f"{stage}: a split turn must be followed by the turn that restores it", stage="translate")
                index += 1
                turn = turns[index]
            specs = [self.pool.spec(f) for f in turn.functions]
            query = await self._retry(stage, partial(self._back, episode, runtime, specs, spend))
            calls, outputs, trial = await self._retry(stage, partial(self._forth, episode, query, specs, spend))
            if split is None:
                episode.turns.append(EpisodeTurn(query=query, calls=calls, outputs=outputs))
            elif split.label == "miss_func":
                # The restoring turn is BFCL's holdout turn: the functions come back with BFCL's own
                # follow-up, and the model must carry out the earlier request.
                missing = [m for m in split.missing if m in turn.functions] or turn.functions[:1]
                episode.turns.append(EpisodeTurn(query=query, label="miss_func", missing=missing))
                episode.turns.append(EpisodeTurn(query=DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC, calls=calls, outputs=outputs))
            else:
                param, value = self._missing_value(split.missing, calls, query)
                shown = clip(value, 200)
                miss_query = await self._retry(stage, partial(self._without, query, param, shown, spend))
                follow = await self._retry(stage, partial(
                    self._follow_up, miss_query, f"you left out the {param}; the assistant asked you for it.",
                    f"gives it: {shown}.", shown, spend))
                episode.turns.append(EpisodeTurn(query=miss_query, label="miss_param", missing=[param]))
                episode.turns.append(EpisodeTurn(query=follow, calls=calls, outputs=outputs))
            runtime = trial
            index += 1
        return episode

    # -- steps -----------------------------------------------------------------------------

    async def _retry(self, stage: str, step: Any) -> Any:
        """Run ``step(attempt, history)`` (bound with ``partial`` where it is made, so a loop's later
        values never leak in) under ``engine.retry.with_reasks``: a BadAnswer is re-asked
        at once, at the retry temperature, with the answer and its problem shown to the model."""
        try:
            return await with_reasks(lambda attempt, last: step(attempt, _correction(last)), attempts=self.cfg.translate_attempts)
        except BadAnswer as err:
            raise JobFailed(f"{stage}: {err}", stage="translate", attempts=self.cfg.translate_attempts) from err

    async def _ask(self, prompt: str, schema: dict[str, Any], name: str, spend: Spend, attempt: int,
                   history: list[Message], max_tokens: int | None = None) -> tuple[dict[str, Any], str]:
        return await ask_json(
            self.teacher, prompt, schema, name=name, on_usage=spend.add, structured=self.cfg.structured_outputs,
            temperature=self.cfg.temperature if attempt == 0 else self.cfg.retry_temperature,
            max_tokens=max_tokens or self.cfg.max_tokens, seed=self.cfg.seed + attempt, history=history)

    async def _query(self, prompt: str, name: str, spend: Spend, attempt: int, history: list[Message]) -> str:
        obj, text = await self._ask(prompt, QUERY_SCHEMA, name, spend, attempt, history, self.cfg.query_max_tokens)
        query = obj.get("query")
        if not isinstance(query, str) or len(query.strip()) < 3:
            raise BadAnswer(f"{name}: empty query: {quote(text)!r}", text=text)
        return query.strip()

    async def _back(self, episode: Episode, runtime: ToolRuntime, specs: list[FunctionSpec], spend: Spend,
                    attempt: int, history: list[Message]) -> str:
        done = episode.turns
        convo = "\n".join(f"User: {t.query}\nCalls: {format_bfcl(t.calls) if t.calls else '(none)'}" for t in done) or "(start of the conversation)"
        last = next((t for t in reversed(done) if t.calls), None)
        last_round = (f"Calls: {format_bfcl(last.calls)}\nOutputs: {clip(last.outputs, _OUT_CHARS)}" if last else "(none)")
        kits = {self.pool.toolkit_of(s.name) for s in specs}
        snapshot = runtime.snapshot()
        env = clip({k: v for k, v in snapshot.items() if k in kits}, _ENV_CHARS * len(kits))
        prompt = self.prompts.render(
            "back_translation", functions="\n".join(describe(s) for s in specs), history=convo,
            last_round=last_round, environment=env, facts=user_facts(snapshot, kits), extra_rules="")
        query = await self._query(prompt, "back_translation", spend, attempt, history)
        if _PLACEHOLDER.match(query) or len(query.split()) < 3:
            raise BadAnswer(f"back translation is a placeholder, not a request: {quote(query)!r}", text=query)
        named = next((s.name for s in specs if re.search(rf"(?<!\w){re.escape(s.name)}(?!\w)", query)), None)
        if named:
            raise BadAnswer(f"back translation names the function {named!r}: {quote(query)!r}", text=query)
        if any(query == t.query for t in done):
            raise BadAnswer(f"back translation repeats an earlier query: {quote(query)!r}", text=query)
        return query

    async def _forth(self, episode: Episode, query: str, specs: list[FunctionSpec], spend: Spend, attempt: int,
                     history: list[Message]) -> tuple[list[ToolCall], list[Any], ToolRuntime]:
        last = next((t for t in reversed(episode.turns) if t.calls), None)
        prompt = self.prompts.render(
            "forth_translation", functions="\n".join(describe(s) for s in specs),
            last_outputs=clip(last.outputs, _OUT_CHARS) if last else "(none)", query=query,
            expected=", ".join(s.name for s in specs))
        obj, text = await self._ask(prompt, calls_schema(specs), "forth_translation", spend, attempt, history)
        calls = answer_calls(obj, text)
        if sorted(c.name for c in calls) != sorted(s.name for s in specs):
            raise BadAnswer(f"forth translation calls {[c.name for c in calls]}, expected {[s.name for s in specs]}: {quote(text)!r}", text=text)
        # Try the calls on a replay of the episode so far: a failed attempt leaves no trace in the state.
        trial = fresh_runtime(self.pool, episode)
        earlier: list[Any] = []
        for t in episode.turns:
            for c in t.calls:
                trial.execute(c)
            earlier += t.outputs
        by_name = {s.name: s for s in specs}
        context = Context([t.query for t in episode.turns] + [query] + [json.dumps(o, ensure_ascii=False) for o in earlier])
        done, outputs = [], []
        for call in calls:
            try:
                call = validate_call(call, by_name)
            except ArgumentError as err:
                raise BadAnswer(f"forth translation: {err}: {quote(text)!r}", text=text) from None
            # Outputs of this turn's earlier calls of the same function are siblings of a parallel call, not its sources.
            call = bind_outputs(call, earlier + [o for c, o in zip(done, outputs) if c.name != call.name], query)
            if call in done:
                raise BadAnswer(f"forth translation repeats the call {call.name} with the same arguments; each call of "
                                f"a turn must differ: {quote(text)!r}", text=text)
            gaps = ungrounded(call, by_name[call.name], context)
            if gaps:
                raise BadAnswer(f"forth translation: value not in the query or earlier outputs: {gaps[0]}: {quote(text)!r}",
                                text=text)
            result = await trial.aexecute(call)
            if not result.ok:
                raise BadAnswer(f"forth translation: reference call fails: {result.error}: {quote(text)!r}", text=text)
            done.append(call)
            outputs.append(result.output)
            context = Context([context.text, json.dumps(result.output, ensure_ascii=False)])
        return done, outputs, trial

    def _missing_value(self, missing: list[str], calls: list[ToolCall], query: str) -> tuple[str, Any]:
        """The parameter a miss_param turn leaves out: the path's choice, else a required value the query states."""
        wanted = [tuple(m.rsplit(".", 1)) if "." in m else (None, m) for m in missing]
        for call in calls:
            for func, p in wanted:
                if func in (None, call.name) and call.arguments.get(p) is not None:
                    return p, call.arguments[p]
        for call in calls:
            for p in self.pool.spec(call.name).parameters.get("required", []):
                if call.arguments.get(p) is not None and str(call.arguments[p]) in query:
                    return p, call.arguments[p]
        raise JobFailed(f"miss_param: no required value stated in the query to leave out ({quote(query)!r})", stage="translate")

    async def _without(self, query: str, param: str, shown: str, spend: Spend, attempt: int, history: list[Message]) -> str:
        prompt = self.prompts.render("miss_param_query", param=param, value=shown, query=query)
        rewritten = await self._query(prompt, "miss_param_query", spend, attempt, history)
        if shown.lower() in rewritten.lower():
            raise BadAnswer(f"miss_param query still states the {param} ({shown}): {quote(rewritten)!r}", text=rewritten)
        return rewritten

    async def _follow_up(self, query: str, situation: str, goal: str, must_contain: str | None, spend: Spend,
                         attempt: int, history: list[Message]) -> str:
        prompt = self.prompts.render("follow_up", situation=situation, goal=goal, query=query)
        follow = await self._query(prompt, "follow_up", spend, attempt, history)
        if must_contain is not None and must_contain.lower() not in follow.lower():
            raise BadAnswer(f"follow-up does not supply the value {must_contain}: {quote(follow)!r}", text=follow)
        return follow
