"""Resumable stages: a stage's marker is written atomically when, and only when, the stage finished.

A marker (``<folder>/stages/<name>.json``) holds the stage's result and its wall time. A rerun
skips every stage with a marker and re-enters the first without one; that stage resumes its
own work (the run store skips stored ids; training continues from its last checkpoint), so
nothing that finished is redone and nothing is stored twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Stages:
    def __init__(self, folder: Path):
        self.folder = folder
        self.markers = folder / "stages"

    def result(self, name: str) -> dict[str, Any] | None:
        path = self.markers / f"{name}.json"
        return json.loads(path.read_text())["result"] if path.exists() else None

    def wall_s(self) -> dict[str, float]:
        """Stage -> seconds of the run that finished it, in the order the stages finished."""
        found = [json.loads(p.read_text()) for p in self.markers.glob("*.json")] if self.markers.is_dir() else []
        return {m["stage"]: m["wall_s"] for m in sorted(found, key=lambda m: m["finished_at"])}

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        done = self.result(name)
        if done is not None:
            return done
        from engine.store import write_json_atomic

        self.markers.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        result = fn()
        write_json_atomic(self.markers / f"{name}.json", {"stage": name, "result": result, "finished_at": time.time(),
                                                          "wall_s": round(time.monotonic() - started, 2)})
        return result
