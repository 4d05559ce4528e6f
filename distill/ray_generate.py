"""`magnet generate --ray ADDRESS`: the same paths, run by Ray actors, stored by the driver.

The driver keeps everything that decides *which* paths run and *what is stored*: the stratified
source (targets, yields, draws), the scheduler and the one ``RunStore``. Actors only turn a path
into records: each builds its own teachers from the specs (its own HTTP clients, or its own
local vLLM on the GPU Ray gave it) and its own ``Distiller``, exactly as a single process would,
so a path's records do not depend on which actor ran it. See ``engine.ray_leases`` for leases,
actor deaths and re-runs, ``engine.ray_limit`` for a key's rate shared by all actors.
"""

from __future__ import annotations

from typing import Any

import msgspec

from distill.generate_config import GenerateConfig
from engine import metrics
from engine.ray_leases import LeasePool, connect

# Counters each actor reports, added up by the driver: its METRICS (progress, run_jobs' summary)
# and its Distiller's spend (the final table's calls and tokens).
METRIC_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "rate_limited", "retries", "cost_usd")
SPEND_FIELDS = ("calls", "prompt_tokens", "completion_tokens")
TOKEN_LIMITS = ("tpm", "tpm_in", "tpm_out")


def _roles(config: GenerateConfig) -> list[str]:
    return [spec for spec in dict.fromkeys((config.teacher, config.student, config.judge, config.author)) if spec]


class GenerateWork:
    """Built inside each actor: one path -> its records, as ``Distiller.run_path`` in one process."""

    def __init__(self, config_data: dict[str, Any], keys: dict[str, Any], actors: int):
        from distill.pipeline import Distiller
        from engine.ray_limit import share_key
        from engine.teachers import make_teacher
        from graph.pool import tool_pool

        config = msgspec.convert(config_data, GenerateConfig)
        options = dict(config.teacher_options)
        for name in TOKEN_LIMITS:  # an even share of the key's token budget (engine.ray_limit says why)
            if options.get(name):
                options[name] = max(1, options[name] // actors)
        built = {spec: make_teacher(spec, **options) for spec in _roles(config)}
        for spec, teacher in built.items():
            if spec in keys:
                share_key(teacher, keys[spec])
        self.teachers = list(built.values())
        role = built.get
        self.distiller = Distiller(tool_pool(config.toolkits or ["builtin"]), built[config.teacher], config,
                                   student=role(config.student), judge=role(config.judge), author=role(config.author))

    async def run(self, path: Any) -> list[tuple[str, Any]]:
        return await self.distiller.run_path(path)

    def counters(self) -> dict[str, float]:
        m, spend = metrics.METRICS, self.distiller.spend
        return {**{f"m.{k}": getattr(m, k) for k in METRIC_FIELDS}, **{f"s.{k}": getattr(spend, k) for k in SPEND_FIELDS}}

    async def aclose(self) -> None:
        for teacher in self.teachers:
            await teacher.aclose()


def actor_count(ray: Any, config: GenerateConfig) -> int:
    """``ray_actors``, or when 0: one per ``ray_gpus`` GPUs when actors take GPUs, else one per CPU."""
    if config.ray_actors:
        return config.ray_actors
    resources = ray.cluster_resources()
    if config.ray_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // config.ray_gpus))
    return max(1, int(resources.get("CPU", 1)))


def start_pool(config: GenerateConfig, distiller: Any) -> LeasePool:
    """Join (or start) the Ray cluster and start the actors; their counters feed this process's
    METRICS and ``distiller.spend``, so progress and the final table cover every actor."""
    from engine.ray_limit import KeyLimiter

    ray = connect(config.ray)
    actors = actor_count(ray, config)
    rpm = config.teacher_options.get("rpm")
    limiter = ray.remote(KeyLimiter).options(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    keys = {spec: limiter.remote(rpm) for spec in _roles(config)} if rpm else {}

    def add(delta: dict[str, float]) -> None:
        for key, value in delta.items():
            where, name = key.split(".", 1)
            target = metrics.METRICS if where == "m" else distiller.spend
            setattr(target, name, getattr(target, name) + value)

    return LeasePool(GenerateWork, (msgspec.to_builtins(config), keys, actors), actors=actors, concurrency=config.concurrency,
                     block=config.ray_block, gpus=config.ray_gpus, on_counters=add, companions=tuple(keys.values()))
