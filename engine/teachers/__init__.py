"""Teacher backends behind one ``Teacher`` protocol, built from a spec string or TOML config.

Backends are imported only when named, so the core runs without torch or vLLM installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import UserInputError
from engine.teacher import Teacher
from engine.teachers.spec import TeacherConfig, load_config, parse_spec

__all__ = ["CLIENT_OPTIONS", "TeacherConfig", "client_options", "make_teacher"]

# Keyword options of OpenAIHTTPTeacher that a TeacherConfig carries (backends that wrap it forward these).
CLIENT_OPTIONS = ("rpm", "tpm", "tpm_in", "tpm_out", "max_concurrency", "price_in", "price_out", "api_key_env",
                  "timeout_s", "max_retries", "max_bad_answer_retries", "backoff_s", "probe_limits")


def client_options(config: TeacherConfig) -> dict[str, Any]:
    """The config fields an ``OpenAIHTTPTeacher`` takes as keyword arguments."""
    return {name: getattr(config, name) for name in CLIENT_OPTIONS}


def make_teacher(spec: str | dict[str, Any] | TeacherConfig | Path, **overrides: Any) -> Teacher:
    """Build a teacher: ``sim``, ``sim:SEED_OR_SCRIPT``, ``openai:MODEL@URL``, ``vllm:MODEL_OR_DIR``, ``vllm-inproc:MODEL_OR_DIR``,
    ``hf:DIR``, ``pool:SPEC1,SPEC2,...``, a config dict or a ``.toml`` path. ``overrides`` replace config fields."""
    config = load_config(str(spec) if isinstance(spec, Path) else spec, **overrides)
    parsed = parse_spec(config.spec)
    if parsed.backend == "sim":
        from engine.teachers.sim import SimTeacher

        seed, script = _sim_target(config.spec, parsed.target)
        return SimTeacher(seed=seed, script=script, latency_ms=config.latency_ms)
    if parsed.backend == "pool":
        from engine.teachers.pool import make_pool

        return make_pool(config)
    if parsed.backend == "openai":
        from engine.teachers.openai_http import OpenAIHTTPTeacher

        return OpenAIHTTPTeacher(parsed.target, parsed.base_url, **client_options(config))
    extra = {k: v for k, v in msgspec.structs.asdict(config).items()
             if k not in ("spec", "options") and v != getattr(_DEFAULTS, k)}
    extra.update(config.options)
    module, cls = {"vllm": ("engine.teachers.vllm_server", "VLLMServerTeacher"),
                   "vllm-inproc": ("engine.teachers.vllm_inproc", "VLLMInprocTeacher"),
                   "hf": ("engine.teachers.hf_local", "HFTeacher")}[parsed.backend]
    return getattr(importlib.import_module(module), cls)(parsed.target, **extra)


_DEFAULTS = TeacherConfig(spec="sim")


def _sim_target(spec: str, target: str) -> tuple[int, str | None]:
    if not target:
        return 0, None
    try:
        return int(target), None
    except ValueError:
        pass
    if not Path(target).is_file():
        raise UserInputError(f"teacher spec {spec!r}: {target!r} is neither a seed nor an existing script file; write sim:42 or "
                             f"sim:path/to/script.json")
    return 0, target
