"""`magnet generate --ray ADDRESS`: the same paths, run by Ray actors, stored by the driver.

The driver keeps everything that decides *which* paths run and *what is stored*: the stratified
source (targets, yields, draws), the scheduler and the one ``RunStore``. Actors only turn a path
into records: each builds its own teachers from the specs (its own HTTP clients, or its own
local vLLM on the GPU Ray gave it) and its own ``Distiller``, exactly as a single process would,
so a path's records do not depend on which actor ran it. See ``engine.ray_leases`` for leases,
actor deaths and re-runs, ``engine.ray_limit`` for a key's rate limits (configured or learned) shared by all actors.
"""

from __future__ import annotations

from typing import Any

import msgspec

from distill.generate_config import GenerateConfig
from engine import ray_leases
from engine.ray_worker import work_counters


def _roles(config: GenerateConfig) -> list[str]:
    return [spec for spec in dict.fromkeys((config.teacher, config.student, config.judge, config.author)) if spec]


class GenerateWork:
    """Built inside each actor: one path -> its records, as ``Distiller.run_path`` in one process."""

    def __init__(self, config_data: dict[str, Any], keys: dict[str, Any], actors: int):
        from distill.pipeline import Distiller
        from engine.ray_limit import actor_teacher
        from graph.pool import tool_pool

        config = msgspec.convert(config_data, GenerateConfig)
        built = {spec: actor_teacher(spec, config.teacher_options, keys, actors) for spec in _roles(config)}
        self.teachers = list(built.values())
        role = built.get
        self.distiller = Distiller(tool_pool(config.toolkits or ["builtin"]), built[config.teacher], config,
                                   student=role(config.student), judge=role(config.judge), author=role(config.author))

    async def run(self, path: Any) -> list[tuple[str, Any]]:
        return await self.distiller.run_path(path)

    def counters(self) -> dict[str, float]:
        return work_counters(self.distiller.spend)

    async def aclose(self) -> None:
        for teacher in self.teachers:
            await teacher.aclose()


def start_pool(config: GenerateConfig, distiller: Any) -> ray_leases.LeasePool:
    """The actors of a generation; their spend adds up in ``distiller.spend`` (the final table)."""
    return ray_leases.start_pool(config, GenerateWork, (msgspec.to_builtins(config),), concurrency=config.concurrency,
                                 specs=_roles(config), options=config.teacher_options, spend=distiller.spend)
