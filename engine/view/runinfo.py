"""What the viewer reads about a run besides its records: manifest, summary, liveness, graph, reports.

Everything here only reads. A file that is missing or malformed becomes a note on the page,
never an error page: a run being written, an interrupted one, or a folder of reports from a
newer version must still be viewable.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.store import LOCK, MANIFEST

SUMMARY = "generate_summary.json"  # distill/cli.py SUMMARY_FILE
GRAPH = "graph.json.gz"  # distill/cli.py GRAPH_FILE
_REPORT_NAMES = ("report.json", "rounds.json", "metrics.jsonl")
_ROUND_DIR = re.compile(r"round[-_]?(\d+)$")
_MAX_DEPTH = 3  # folders searched below each reports root
_MAX_FILES = 200  # reports listed at most (a huge folder must not stall the page)
_MAX_METRIC_ROWS = 200_000


def read_json(path: Path) -> tuple[Any, str | None]:
    """(data, None) or (None, why not)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"cannot be read ({err})"
    except json.JSONDecodeError as err:
        return None, f"is not valid JSON ({err.msg} at line {err.lineno}); a run still writing it, or a damaged file"


def is_live(run_dir: Path) -> bool:
    """Is a `magnet generate` (any store writer) holding the run's lock right now? The writer
    holds an exclusive flock for its whole life; a shared try-lock fails exactly then. Opened
    read-only and never created: looking must not change the run."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # also drops our shared lock
    return False


@dataclass
class RunFacts:
    manifest: Any
    manifest_note: str | None
    summary: Any
    summary_note: str | None
    live: bool


def run_facts(run_dir: Path) -> RunFacts:
    manifest, m_note = read_json(run_dir / MANIFEST)
    summary, s_note = read_json(run_dir / SUMMARY)
    if summary is None and isinstance(manifest, dict):  # an older run: the summary is also in the manifest
        summary = (manifest.get("extra") or {}).get("generate")
        s_note = None if summary else s_note
    return RunFacts(manifest if isinstance(manifest, dict) else None, m_note, summary if isinstance(summary, dict) else None,
                    s_note, is_live(run_dir))


class GraphCache:
    """The run's dependency graph, loaded on first use (a picture is asked for) and kept."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / GRAPH
        self._graph: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[Any, str | None]:
        with self._lock:
            if self._graph is None and self._error is None:
                from engine.errors import UserInputError
                from graph.depgraph import load_graph

                try:
                    self._graph = load_graph(self.path)
                except UserInputError as err:
                    self._error = str(err)
            return self._graph, self._error


# -- reports ---------------------------------------------------------------------------------------

@dataclass
class Report:
    """One report file: ``kind`` is bfcl (a `magnet eval bfcl` report.json), eval (another
    report.json), rounds (`magnet improve`'s rounds.json) or metrics (training metrics.jsonl)."""

    kind: str
    path: Path
    data: Any = None
    note: str | None = None  # why it could not be read
    round: int | None = None  # from a round-N folder name
    extra: dict[str, Any] = field(default_factory=dict)


def _walk(root: Path, depth: int = 0) -> list[Path]:
    if root.is_file():
        return [root] if root.name in _REPORT_NAMES else []
    found: list[Path] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.is_file() and entry.name in _REPORT_NAMES:
            found.append(entry)
        elif entry.is_dir() and depth < _MAX_DEPTH and not entry.name.startswith(".") and not _is_shard_dir(entry):
            found += _walk(entry, depth + 1)
    return found


def _is_shard_dir(path: Path) -> bool:
    # A run's record folders hold nothing but shards; skipping them keeps the walk cheap on huge runs.
    return path.name in ("paths", "episodes", "trajectories", "pairs", "dead_letters", "done", "dead_letters_requeued",
                         "checkpoints", "result", "score")


def find_reports(roots: list[Path]) -> list[Report]:
    reports, seen = [], set()
    for root in roots:
        for path in _walk(root):
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            reports.append(load_report(path))
            if len(reports) >= _MAX_FILES:
                return reports
    return reports


def _round_of(path: Path) -> int | None:
    for part in reversed(path.parent.parts[-2:]):
        m = _ROUND_DIR.search(part)
        if m:
            return int(m.group(1))
    return None


def load_report(path: Path) -> Report:
    if path.name == "metrics.jsonl":
        return _load_metrics(path)
    data, note = read_json(path)
    if path.name == "rounds.json":
        rounds = data.get("rounds") if isinstance(data, dict) else data
        if note is None and not isinstance(rounds, list):
            note = "holds neither a list of rounds nor {\"rounds\": [...]}"
        return Report("rounds", path, rounds if note is None else None, note)
    if note is None and not isinstance(data, dict):
        note = f"holds a JSON {type(data).__name__}, not a report object"
    kind = "bfcl" if isinstance(data, dict) and isinstance(data.get("columns"), dict) and "categories" in data else "eval"
    return Report(kind, path, data if note is None else None, note, round=_round_of(path))


def _load_metrics(path: Path) -> Report:
    rows, bad = [], 0
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1  # a line cut by a training run still writing
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                    rows.append(row)
                if len(rows) >= _MAX_METRIC_ROWS:
                    break
    except (OSError, UnicodeDecodeError) as err:
        return Report("metrics", path, None, f"cannot be read ({err})")
    note = f"{bad} unreadable line(s) skipped" if bad else None
    return Report("metrics", path, rows, note, round=_round_of(path))


def scores_of(entry: Any) -> dict[str, float]:
    """Category -> score of a round entry or a report: numbers, or {"accuracy": x} objects, under
    "categories", "scores", "by_kind" (`magnet eval paths`) or "columns" (the first that holds any)."""
    if not isinstance(entry, dict):
        return {}
    for key in ("categories", "scores", "by_kind", "columns"):
        block = entry.get(key)
        if isinstance(block, dict):
            out = {}
            for name, value in block.items():
                if isinstance(value, dict):
                    value = value.get("accuracy")
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[str(name)] = float(value)
            if out:
                return out
    return {}


def rounds_table(reports: list[Report]) -> list[tuple[str, dict[str, float]]]:
    """(round label, category -> score) per round: from a rounds.json when there is one, else
    from eval reports kept in round-N folders."""
    for r in reports:
        if r.kind == "rounds" and r.data:
            return [(str(e.get("round", i) if isinstance(e, dict) else i), scores_of(e)) for i, e in enumerate(r.data)]
    by_round = sorted((r.round, scores_of(r.data)) for r in reports if r.kind in ("bfcl", "eval") and r.round is not None)
    return [(str(n), s) for n, s in by_round if s]
