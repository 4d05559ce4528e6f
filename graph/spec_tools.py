"""OpenAI-style JSON tool specs -> a spec-only toolkit whose execution is simulated.

StableToolBench style: there is no implementation, so a call is validated against the spec
and answered by the teacher (a prompt asking for the plausible JSON response of the API given
its documentation and the arguments), through a response cache keyed by (spec, function,
canonical arguments) so a call is paid for once and replays identically. Without a teacher
the answer is a deterministic, schema-driven fake (tests, dry runs).

Teacher transport failures (``TeacherError``: 429, timeouts, unparsable answers) propagate
from ``aexecute``: they are not the tool's answer, so the engine's retry / dead-letter
machinery handles them and nothing wrong is cached.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar

from engine.atomic import write_atomic
from engine.errors import BadAnswer, UserInputError
from engine.records import FunctionSpec, Message, ToolCall
from engine.teacher import Teacher
from engine.teachers.sim import example_value
from graph.schema import ArgumentError, check_schema, validate_arguments
from graph.toolkit import Catalog, Entry, Toolkit, ToolResult, jsonable

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SYSTEM = (
    "You simulate a real API server. Given the API's documentation and one call, reply with only the JSON "
    "object the API would return: realistic values consistent with the arguments and the response schema. "
    "If the arguments are invalid for this API, reply {\"error\": \"<short message>\"}."
)


class SpecToolkit(Toolkit):
    """Functions known only by their JSON specs; subclasses are made by ``spec_toolkit``."""

    teacher: ClassVar[Teacher | None] = None
    cache_dir: ClassVar[Path | None] = None
    source = "openai-spec"

    def default_state(self, rng: Any) -> dict[str, Any]:
        return {"calls": []}  # the call log is the only state a simulated API has

    def _prepare(self, call: ToolCall) -> tuple[Entry, dict[str, Any], str, Any] | ToolResult:
        """Validated arguments, the cache key and the cached response (None when not cached)."""
        entry = self.catalog().entries.get(call.name)
        if entry is None:
            return ToolResult(ok=False, error=f"unknown function '{call.name}' in toolkit '{self.toolkit_name()}'")
        try:
            args = validate_arguments(entry.spec.parameters, call.arguments)
        except ArgumentError as exc:
            return ToolResult(ok=False, error=f"{call.name}: {exc}")
        spec_text = json.dumps([entry.spec.description, entry.spec.parameters, entry.spec.returns], sort_keys=True)
        canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        key = hashlib.sha256(f"{spec_text}\n{call.name}\n{canonical}".encode()).hexdigest()[:32]
        return entry, args, key, self._cache_get(key)

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / self.toolkit_name() / f"{key}.json" if self.cache_dir is not None else None

    def _cache_get(self, key: str) -> Any:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())["response"]
        except (ValueError, KeyError):  # a torn write: ask again and overwrite it
            return None

    def _cache_put(self, key: str, name: str, args: dict[str, Any], response: Any) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        write_atomic(path, json.dumps({"name": name, "arguments": args, "response": response}, sort_keys=True))

    def _finish(self, call: ToolCall, args: dict[str, Any], response: Any) -> ToolResult:
        self.state["calls"].append({"name": call.name, "arguments": args})
        if isinstance(response, dict) and "error" in response:
            return ToolResult(ok=False, output=response, error=f"{call.name}: {response['error']}")
        return ToolResult(ok=True, output=jsonable(response))

    def execute(self, call: ToolCall) -> ToolResult:
        prep = self._prepare(call)
        if isinstance(prep, ToolResult):
            return prep
        entry, args, key, response = prep
        if response is None and self.teacher is not None:
            return ToolResult(ok=False, error=f"{call.name}: simulated by a teacher and not cached; use aexecute")
        return self._finish(call, args, response if response is not None else fake_response(entry.spec, key))

    async def aexecute(self, call: ToolCall) -> ToolResult:
        prep = self._prepare(call)
        if isinstance(prep, ToolResult):
            return prep
        entry, args, key, response = prep
        if response is None and self.teacher is not None:
            response = await simulate(self.teacher, entry.spec, args, seed=int(key[:8], 16))
            self._cache_put(key, call.name, args, response)
        return self._finish(call, args, response if response is not None else fake_response(entry.spec, key))


def fake_response(spec: FunctionSpec, key: str) -> Any:
    """A deterministic response valid for the spec's response schema (or a generic success)."""
    salt = int(key[:8], 16)
    if isinstance(spec.returns, dict) and spec.returns:
        schema = spec.returns
        value = example_value(schema, "", salt)
        if isinstance(value, dict) and schema.get("properties"):
            # example_value fills required keys only; a response names every documented field.
            value.update({k: example_value(v, k, salt) for k, v in schema["properties"].items() if k not in value})
        return value
    return {"status": "success", "result": example_value({"type": "string"}, spec.name, salt)}


def parse_json_reply(text: str) -> Any:
    """The JSON object in a model reply (code fences and chatter around it tolerated)."""
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        return json.loads(body)
    except ValueError:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(body[start:end + 1])
            except ValueError:
                pass
    raise BadAnswer("simulated API response is not JSON", text=text[:200])


async def simulate(teacher: Teacher, spec: FunctionSpec, args: dict[str, Any], *, seed: int) -> Any:
    doc = {"name": spec.name, "description": spec.description, "parameters": spec.parameters, "response": spec.returns}
    prompt = f"API documentation:\n{json.dumps(doc, indent=1)}\n\nCall arguments:\n{json.dumps(args, sort_keys=True)}"
    schema = spec.returns if isinstance(spec.returns, dict) and spec.returns.get("type") == "object" else None
    response_format = ({"type": "json_schema", "json_schema": {"name": "api_response", "schema": schema}}
                       if schema else {"type": "json_object"})
    reply = await teacher.chat([Message(role="system", content=_SYSTEM), Message(role="user", content=prompt)],
                               response_format=response_format, temperature=0.0, max_tokens=512, seed=seed)
    return parse_json_reply(reply.message.content or "")


def _load_tools(source: Any) -> tuple[list[Any], str]:
    if isinstance(source, (str, Path)) and not str(source).lstrip().startswith(("[", "{")):
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"tool spec file '{path}' does not exist; give a JSON file of OpenAI tool specs")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise UserInputError(f"tool spec file '{path}' is not valid JSON ({exc}); fix the file") from exc
        stem = path.stem
    elif isinstance(source, str):
        try:
            data = json.loads(source)
        except ValueError as exc:
            raise UserInputError(f"tool specs are not valid JSON ({exc})") from exc
        stem = "openai_spec"
    else:
        data, stem = source, "openai_spec"
    if isinstance(data, dict):
        data = data.get("tools", [data])
    if not isinstance(data, list) or not data:
        raise UserInputError("tool specs must be a non-empty JSON list of OpenAI tools ({\"type\": \"function\", ...})")
    return data, stem


def parse_specs(tools: list[Any], toolkit: str) -> list[FunctionSpec]:
    """Validate OpenAI tool specs; every error names the tool (index or function) and field."""
    specs: list[FunctionSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(tools):
        where = f"tool #{i}"
        if not isinstance(item, dict):
            raise UserInputError(f"{where}: must be a JSON object, got {type(item).__name__}")
        fn = item.get("function") if item.get("type") == "function" or "function" in item else item
        if not isinstance(fn, dict):
            raise UserInputError(f"{where}.function: must be an object with name, description, parameters")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise UserInputError(f"{where}.name: missing function name; add \"name\": \"...\"")
        if not _NAME_RE.match(name):
            raise UserInputError(f"{name}.name: invalid function name; use 1-64 letters, digits, _ . -")
        if name in seen:
            raise UserInputError(f"{name}.name: duplicate function name (tools #{seen[name]} and #{i}); names must be unique")
        seen[name] = i
        description = fn.get("description", "")
        if not isinstance(description, str):
            raise UserInputError(f"{name}.description: must be a string")
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        check_schema(parameters, f"{name}.parameters")
        if parameters.get("type") != "object":
            raise UserInputError(f"{name}.parameters.type: must be \"object\" (keyword arguments)")
        parameters = {"properties": {}, "required": [], **parameters}
        returns = fn.get("response", fn.get("returns", ""))
        if isinstance(returns, dict):
            check_schema(returns, f"{name}.response")
        elif not isinstance(returns, str):
            raise UserInputError(f"{name}.response: must be a JSON Schema object or a description string")
        category = fn.get("category", toolkit)
        specs.append(FunctionSpec(name=name, description=description, parameters=parameters, returns=returns,
                                  category=category if isinstance(category, str) else toolkit, toolkit=toolkit,
                                  source=f"openai-spec:{toolkit}"))
    return specs


def spec_toolkit(openai_tools_json: Any, teacher: Teacher | None = None, cache_dir: str | Path | None = None,
                 name: str | None = None) -> type[SpecToolkit]:
    """A spec-only toolkit from OpenAI tool specs (a file path, JSON text or the parsed list)."""
    tools, stem = _load_tools(openai_tools_json)
    toolkit = name or stem
    specs = parse_specs(tools, toolkit)
    cls = type(f"SpecToolkit_{re.sub(r'[^0-9A-Za-z_]', '_', toolkit)}", (SpecToolkit,), {
        "name": toolkit, "category": toolkit, "teacher": teacher,
        "cache_dir": Path(cache_dir) if cache_dir is not None else None, "__module__": __name__,
    })
    cls._catalog_cache = Catalog(specs, {s.name: Entry(s, s.name) for s in specs})
    return cls
