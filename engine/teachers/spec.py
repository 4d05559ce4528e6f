"""Teacher spec strings and TOML configs -> one typed ``TeacherConfig``.

A spec names the backend and the model: ``sim``, ``sim:SEED_OR_SCRIPT``, ``openai:MODEL@URL``
(URL optional), ``vllm:MODEL_OR_DIR``, ``vllm-inproc:MODEL_OR_DIR`` (vLLM's engine in this process,
no server), ``hf:DIR``, or a pool of those (``pool:SPEC1,SPEC2``,
see ``engine.teachers.pool``). A TOML file holds the same spec plus
limits, prices and timeouts in a ``[teacher]`` table. Keys are never part of a config: the
config names the environment variable that holds one (``api_key_env``), so configs can be
stored in run manifests safely.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec

from engine.config_cli import doc
from engine.errors import UserInputError

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
BACKENDS_HELP = ("sim, sim:SEED, pool:SPEC1,SPEC2,..., vllm-inproc:MODEL_OR_DIR, openai:MODEL@URL, vllm:MODEL_OR_DIR, "
                 "hf:DIR or a .toml file")


class TeacherConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """How to reach a teacher and how hard to push it. ``None`` limits are unknown (learned from headers)."""

    spec: Annotated[str, doc("backend and model: " + BACKENDS_HELP)]
    rpm: Annotated[float | None, doc("requests per minute allowed; None = learn from x-ratelimit-* headers")] = None
    tpm: Annotated[float | None, doc("input+output tokens per minute (OpenAI's single token limit)")] = None
    tpm_in: Annotated[float | None, doc("input (prompt) tokens per minute")] = None
    tpm_out: Annotated[float | None, doc("output (completion) tokens per minute")] = None
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, description="most requests in flight; adaptive concurrency stays within [1, this]")] = 64
    price_in: Annotated[float, msgspec.Meta(ge=0, description="USD per 1M input tokens, for the cost estimate")] = 0.0
    price_out: Annotated[float, msgspec.Meta(ge=0, description="USD per 1M output tokens, for the cost estimate")] = 0.0
    api_key_env: Annotated[str, doc("environment variable holding the API key (never the key itself)")] = "OPENAI_API_KEY"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, description="seconds before one request counts as timed out")] = 120.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, description="retries after the first attempt for 429, 5xx, timeouts, connection errors")] = 6
    max_bad_answer_retries: Annotated[int, msgspec.Meta(ge=0, description="retries of unparsable, truncated or filtered answers")] = 2
    backoff_s: Annotated[float, msgspec.Meta(ge=0, description="base of the exponential backoff (full jitter) between retries")] = 0.5
    probe_limits: Annotated[bool | None, doc("send the first request alone, to learn rate limits from its reply's headers "
                                             "before a burst; default: on for openai:, off for vllm: (our own server has none)")] = None
    latency_ms: Annotated[float, msgspec.Meta(ge=0, description="sim only: added delay per answer")] = 0.0
    options: Annotated[dict[str, Any], doc("backend-specific settings passed through (vllm / hf), e.g. max_model_len; "
                                           "for a pool: eject_after, probe_s, max_probe_s")] = {}
    endpoints: Annotated[list[dict[str, Any]], doc("pool only: one table per member (its spec and its own limits; "
                                                   "unset keys are the pool's), after any members named in spec")] = []


class ParsedSpec(msgspec.Struct, frozen=True):
    backend: str  # sim | openai | vllm | hf
    target: str = ""  # model name, directory, seed or script
    base_url: str = ""  # openai only


def parse_spec(spec: str) -> ParsedSpec:
    """Split and check a spec string; errors name the spec and the accepted forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError(f"teacher spec {spec!r} is empty; use one of {BACKENDS_HELP}")
    spec = spec.strip()
    backend, _, rest = spec.partition(":")
    if backend == "sim":
        return ParsedSpec("sim", rest)
    if backend in ("vllm", "vllm-inproc", "hf"):
        if not rest:
            form = "hf:DIR" if backend == "hf" else f"{backend}:MODEL_OR_DIR"
            raise UserInputError(f"teacher spec {spec!r} names no model; write {form}")
        return ParsedSpec(backend, rest)
    if backend == "pool":
        for member in filter(None, (m.strip() for m in rest.split(","))):
            if parse_spec(member).backend == "pool":
                raise UserInputError(f"teacher spec {spec!r} nests a pool; list the endpoints directly: pool:SPEC1,SPEC2")
        return ParsedSpec("pool", rest)
    if backend == "openai":
        model, at, url = rest.partition("@")
        if not model:
            raise UserInputError(f"teacher spec {spec!r} names no model; write openai:MODEL or openai:MODEL@https://HOST/v1")
        if at and not url.startswith(("http://", "https://")):
            raise UserInputError(f"teacher spec {spec!r} has base URL {url!r} without http:// or https://; write openai:MODEL@http://HOST:PORT/v1")
        return ParsedSpec("openai", model, (url or DEFAULT_OPENAI_URL).rstrip("/"))
    raise UserInputError(f"teacher spec {spec!r} has unknown backend {backend!r}; use one of {BACKENDS_HELP}")


def load_config(source: str | dict[str, Any] | TeacherConfig, **overrides: Any) -> TeacherConfig:
    """A spec string, a config dict, a TOML path or a config -> a checked ``TeacherConfig``."""
    if isinstance(source, TeacherConfig):
        raw: dict[str, Any] = msgspec.structs.asdict(source)
        where = f"teacher config for {source.spec!r}"
    elif isinstance(source, dict):
        raw, where = dict(source), "teacher config"
    elif isinstance(source, (str, Path)) and str(source).endswith(".toml"):
        raw, where = _read_toml(Path(source)), f"teacher config {str(source)!r}"
    elif isinstance(source, str):
        raw, where = {"spec": source}, f"teacher spec {source!r}"
    else:
        raise UserInputError(f"teacher {source!r} is a {type(source).__name__}; pass a spec string ({BACKENDS_HELP}) or a dict")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if "api_key" in raw:
        raise UserInputError(f"{where} contains api_key; put the key in an environment variable and name it with api_key_env")
    if "spec" not in raw:
        raise UserInputError(f"{where} has no spec; add spec = \"openai:MODEL@URL\" (or {BACKENDS_HELP})")
    try:
        config = msgspec.convert(raw, TeacherConfig)
    except msgspec.ValidationError as err:
        fields = ", ".join(TeacherConfig.__struct_fields__)
        raise UserInputError(f"{where} is invalid: {err}; valid keys are {fields}") from None
    parse_spec(config.spec)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"teacher config {str(path)!r} does not exist; give an existing .toml file or a spec ({BACKENDS_HELP})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"teacher config {str(path)!r} is not valid TOML ({err}); fix the file") from None
    table = doc.get("teacher")
    if not isinstance(table, dict):
        raise UserInputError(f"teacher config {str(path)!r} has no [teacher] table; add [teacher] with spec = \"...\"")
    return table
