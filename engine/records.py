"""The record contract: every piece of data that moves between stages or lands in a shard.

Records are msgspec Structs so they encode to msgpack (shards) and JSON (exports) without
hand-written conversion, and so a malformed shard fails loudly at decode time instead of
producing half-filled objects. Every stored record has a string ``id``; the shard store
refuses to write an id twice.

Flow: FunctionSpec -> SignaturePath -> Episode -> Trajectory -> PreferencePair
(and DeadLetter for any work item that could not be finished).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]
PathKind = Literal["single", "parallel", "multiple", "parallel_multiple", "multi_turn", "irrelevance"]
TurnLabel = Literal["call", "miss_func", "miss_param"]
Polarity = Literal["positive", "negative"]


class Record(msgspec.Struct, kw_only=True):
    """Base of every stored record: addressable by ``id``."""

    id: str


class FunctionSpec(msgspec.Struct, kw_only=True):
    """One callable function as a model sees it (OpenAI/BFCL style JSON Schema)."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema object: {"type": "object", "properties": ..., "required": [...]}
    returns: dict[str, Any] | str = ""  # JSON Schema of the output, or prose
    category: str = ""  # e.g. "travel"; used by the graph matcher to pick candidates
    toolkit: str = ""  # the toolkit (class) the function belongs to
    source: str = ""  # "builtin", "python:<module>", "bfcl", "openai-spec:<file>"

    def to_openai_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolCall(msgspec.Struct, kw_only=True):
    """A call: always keyword arguments (BFCL's decoders keep keyword arguments only)."""

    name: str
    arguments: dict[str, Any] = {}
    id: str = ""  # the OpenAI tool_call id, when the call came from / goes to a chat API


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None  # set on role == "tool": which call this output answers
    name: str | None = None  # on role == "tool": the function name


class PathTurn(msgspec.Struct, kw_only=True):
    """One turn of a signature path: the functions the turn should call, in order."""

    functions: list[str]
    label: TurnLabel = "call"
    # For a Split turn: the function withheld (miss_func) or the parameter left out (miss_param).
    missing: list[str] = []


class SignaturePath(Record, kw_only=True):
    kind: PathKind
    turns: list[PathTurn]
    ops: list[str] = []  # operations applied, in order: "walk", "merge", "insert_nested", "insert_long", "split"
    seed: int = 0
    toolkits: list[str] = []  # toolkits whose functions the episode must expose
    distractors: list[str] = []  # extra function names offered to the model (irrelevance: the only ones)


class EpisodeTurn(msgspec.Struct, kw_only=True):
    query: str
    calls: list[ToolCall] = []  # reference calls, in execution order
    outputs: list[Any] = []  # one execution output per reference call
    label: TurnLabel = "call"
    missing: list[str] = []  # withheld function names (miss_func) or parameter names (miss_param)


class Episode(Record, kw_only=True):
    """A path translated into user queries and executed reference calls."""

    path_id: str
    kind: PathKind
    tools: list[FunctionSpec]  # what the model is offered (before any miss_func withholding)
    toolkits: list[str] = []
    initial_state: dict[str, Any] = {}  # per toolkit: the state dict it was built from
    seed: int = 0
    turns: list[EpisodeTurn] = []


class Verification(msgspec.Struct, kw_only=True):
    """Result of replaying a trajectory's calls against a fresh toolkit and the reference."""

    ok: bool
    parsed: bool = True
    schema_valid: bool = True
    executed: bool = True
    state_match: bool = True
    outputs_match: bool = True
    errors: list[str] = []


class Trajectory(Record, kw_only=True):
    """One conversation. ``messages`` hold user, assistant and tool messages only: the system
    prompt belongs to the rendering mode (engine/render.py), so one record renders in prompt
    mode and FC mode alike. (Records written before this carry a leading system message;
    renderers drop it.)"""

    episode_id: str
    polarity: Polarity
    tools: list[FunctionSpec]  # every function offered at some turn, in the (shuffled) order offered
    messages: list[Message]  # hints are never stored here
    # Names offered at each user turn (index = user turn): a miss_func function is absent until the
    # turn that adds it back, as in BFCL. Empty = every tool at every turn.
    turn_tools: list[list[str]] = []
    teacher: str  # teacher spec / model name that produced it (never a key)
    hints: list[str] = []  # the hints it was given, one per user turn, kept apart from messages
    source: str = "teacher_hinted"  # "teacher_hinted", "student_mined", "perturbed:<rule>"
    error_types: list[str] = []  # for negatives: the judge's (or rule's) error types
    verification: Verification | None = None
    usage: dict[str, int] = {}  # prompt_tokens / completion_tokens spent to make it


class PreferencePair(Record, kw_only=True):
    episode_id: str
    chosen: Trajectory
    rejected: Trajectory


class DeadLetter(Record, kw_only=True):
    """A work item that ended without output: why, where, after how many attempts."""

    item_id: str
    stage: str  # "translate", "rollout", "judge", "negative", "eval", ...
    error: str  # one line; quotes the bad model text where that was the cause
    attempts: int = 1
    item: Any = None  # the work item itself (msgpack-able), so it can be re-run


class WorkDone(Record, kw_only=True):
    """Marker written after all records of a work item are stored: resume skips ``id``."""

    outputs: list[str] = []  # ids of the records the item produced


# Folder name in a run directory -> record type stored there.
RECORD_KINDS: dict[str, type[Record]] = {
    "paths": SignaturePath,
    "episodes": Episode,
    "trajectories": Trajectory,
    "pairs": PreferencePair,
    "dead_letters": DeadLetter,
    "done": WorkDone,
}
