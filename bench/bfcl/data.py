"""Load BFCL entries and ground truth for a pinned BFCL version, and make ``bfcl_eval`` importable.

Versions: ``v3`` is the paper's BFCL-v3 (4,751 entries in 17 categories, file names
``BFCL_v3_*``, shipped by ``bfcl-eval==2025.6.8``); ``v4`` is the current release (file names
``BFCL_v4_*``), read from ``--bfcl-data DIR`` (the ``data/`` folder of a newer ``bfcl-eval``)
when the installed package only ships v3. Scoring always uses the installed package's checkers,
and the report names both the data version and the checker package version.

``bfcl_eval.constants.model_config`` imports every provider SDK (anthropic, cohere, google,
mistral, boto3, ...), none of which is installed, and the checkers import it only to read a
model's ``underscore_to_dot`` (and the leaderboard code its display name). ``ensure_bfcl``
registers a small stand-in module under that name holding just the ``ModelConfig`` shape and
an initially empty ``MODEL_CONFIG_MAPPING`` that ``scoring`` fills with the models it scores.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import types
from pathlib import Path
from typing import Any

from engine.errors import UserInputError
from graph.bfcl_tools import set_project_root

V3_PACKAGE = "2025.6.8"
PREFIXES = {"v3": "BFCL_v3", "v4": "BFCL_v4"}
# BFCL-v1's executable categories call live web APIs with keys: they cannot be reproduced
# offline, and bfcl-eval itself no longer scores them (they sit in data/unused_datasets).
EXEC_CATEGORIES = ("exec_simple", "exec_parallel", "exec_multiple", "exec_parallel_multiple", "rest")
# v4 categories whose checkers the pinned 2025.6.8 package does not have (web search needs the
# live web; memory and format sensitivity were added after it).
V4_UNSUPPORTED = ("web_search", "memory", "format_sensitivity")
_STANDIN = "bfcl_eval.constants.model_config"


@dataclasses.dataclass
class ModelConfig:
    """The fields of BFCL's ``ModelConfig`` that its checkers and leaderboard code read."""

    model_name: str
    display_name: str
    url: str
    org: str
    license: str
    model_handler: Any
    input_price: float | None = None
    output_price: float | None = None
    is_fc_model: bool = True
    underscore_to_dot: bool = False


def ensure_bfcl() -> str:
    """Set ``BFCL_PROJECT_ROOT`` (if unset), install the model_config stand-in, import bfcl_eval;
    return the installed package version."""
    set_project_root()
    if _STANDIN not in sys.modules:
        module = types.ModuleType(_STANDIN, "magnet stand-in: only ModelConfig and the models being scored")
        module.ModelConfig = ModelConfig  # type: ignore[attr-defined]
        module.MODEL_CONFIG_MAPPING = {}  # type: ignore[attr-defined]
        sys.modules[_STANDIN] = module
    try:
        import bfcl_eval  # noqa: F401
    except ImportError:
        raise UserInputError(
            f"bfcl-eval is not installed; run ./setup.sh or `pip install --no-deps bfcl-eval=={V3_PACKAGE}` "
            "plus its checker deps (pip install '.[bfcl]')"
        ) from None
    return importlib.metadata.version("bfcl_eval")


def model_config_mapping() -> dict[str, ModelConfig]:
    ensure_bfcl()
    return sys.modules[_STANDIN].MODEL_CONFIG_MAPPING  # type: ignore[attr-defined]


def package_data_dir() -> Path:
    ensure_bfcl()
    from bfcl_eval.constants.eval_config import PROMPT_PATH

    return Path(PROMPT_PATH)


def category_of(entry_id: str) -> str:
    return entry_id.rsplit("_", 1)[0]


def is_multi_turn(category: str) -> bool:
    return "multi_turn" in category


def is_relevance(category: str) -> bool:
    """relevance / irrelevance categories: scored on call-or-no-call, no ground truth file."""
    return "relevance" in category


def language_of(category: str) -> str:
    if "javascript" in category:
        return "JavaScript"
    return "Java" if "java" in category else "Python"


@dataclasses.dataclass
class Dataset:
    """Entries of one BFCL version in BFCL's own dict format, with their ground truth."""

    version: str  # "v3" | "v4"
    prefix: str  # file-name prefix, e.g. "BFCL_v3"
    package_version: str  # installed bfcl-eval (its checkers score the run)
    data_dir: Path
    categories: list[str]
    entries: list[dict[str, Any]]
    ground_truth: dict[str, Any]  # entry id -> BFCL ground truth (none for (ir)relevance)

    def describe(self) -> str:
        source = "bfcl-eval package data" if self.data_dir == package_data_dir() else str(self.data_dir)
        return f"BFCL-{self.version} ({self.prefix}_* files from {source}; checkers of bfcl-eval=={self.package_version})"


def _available(data_dir: Path, prefix: str) -> list[str]:
    names = sorted(p.name[len(prefix) + 1 : -len(".json")] for p in data_dir.glob(f"{prefix}_*.json"))
    return [n for n in names if n not in EXEC_CATEGORIES]


def _collections(available: list[str]) -> dict[str, list[str]]:
    usable = [c for c in available if not c.startswith(V4_UNSUPPORTED)]
    return {
        "all": usable,
        "multi_turn": [c for c in usable if is_multi_turn(c)],
        "single_turn": [c for c in usable if not is_multi_turn(c)],
        "live": [c for c in usable if c.startswith("live_")],
        "non_live": [c for c in usable if not c.startswith("live_") and not is_multi_turn(c)],
        "ast": [c for c in usable if not is_multi_turn(c)],
    }


def resolve_categories(requested: list[str], available: list[str]) -> list[str]:
    """Expand collections (all, multi_turn, live, ...) and check names; keep BFCL's file order."""
    collections = _collections(available)
    chosen: set[str] = set()
    for name in requested:
        if name in collections:
            chosen.update(collections[name])
        elif name in EXEC_CATEGORIES:
            raise UserInputError(
                f"category {name!r} calls live web APIs and cannot be reproduced offline; drop it "
                "(the report lists the exec categories as not reproducible)"
            )
        elif name.startswith(V4_UNSUPPORTED):
            raise UserInputError(f"category {name!r} needs checkers newer than the installed bfcl-eval; drop it")
        elif name in available:
            chosen.add(name)
        else:
            raise UserInputError(
                f"unknown BFCL category {name!r}; use one of {', '.join(sorted(collections))} or {', '.join(available)}"
            )
    return [c for c in available if c in chosen]


def _data_dir(version: str, data_dir: str | Path | None) -> Path:
    if version not in PREFIXES:
        raise UserInputError(f"--bfcl-version {version!r} is unknown; use v3 (BFCL-v3, the paper's) or v4 (current release)")
    prefix = PREFIXES[version]
    folder = Path(data_dir).expanduser() if data_dir else package_data_dir()
    if not folder.is_dir():
        raise UserInputError(f"--bfcl-data {str(folder)!r} is not a folder; give the data/ folder of a bfcl-eval release")
    if not _available(folder, prefix):
        if data_dir is None:
            raise UserInputError(
                f"the installed bfcl-eval=={ensure_bfcl()} ships no {prefix}_*.json files; pass --bfcl-data DIR "
                f"holding the {version} files (the data/ folder of a bfcl-eval release that has them)"
            )
        raise UserInputError(f"--bfcl-data {str(folder)!r} holds no {prefix}_*.json files; point it at a BFCL {version} data folder")
    return folder


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    from bfcl_eval.utils import load_file

    return load_file(path)


def _attach_multi_turn_functions(entry: dict[str, Any], doc_dir: Path) -> None:
    """What BFCL's generator does before inference (``process_multi_turn_test_case``, which
    lives in a module that imports model_config): give the entry the function docs of its
    classes, and move each held-out (miss_func) function from the list into ``missed_function``."""
    from bfcl_eval.constants.category_mapping import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    functions: list[dict[str, Any]] = []
    for cls in entry["involved_classes"]:
        functions.extend(_load_jsonl(doc_dir / MULTI_TURN_FUNC_DOC_FILE_MAPPING[cls]))
    missed: dict[str, list[dict[str, Any]]] = {}
    for turn, names in entry.get("missed_function", {}).items():
        missed[turn] = []
        for name in names:
            index = next(i for i, doc in enumerate(functions) if doc["name"] == name)
            missed[turn].append(functions.pop(index))
    entry["function"] = functions
    if "missed_function" in entry:
        entry["missed_function"] = missed


def load_dataset(
    version: str = "v3", categories: list[str] | None = None, *, data_dir: str | Path | None = None, limit: int | None = None,
    category_limits: dict[str, int] | None = None,
) -> Dataset:
    """Entries (sorted as BFCL sorts them) and ground truth; ``limit`` keeps the first N per category,
    ``category_limits`` the first N of the categories it names."""
    package_version = ensure_bfcl()
    from bfcl_eval.utils import sort_key

    folder = _data_dir(version, data_dir)
    prefix = PREFIXES[version]
    chosen = resolve_categories(categories or ["all"], _available(folder, prefix))
    stray = sorted(set(category_limits or {}) - set(chosen))
    if stray:
        raise UserInputError(f"--category-limit names {', '.join(stray)}, not among the categories asked ({', '.join(chosen)})")
    for flag, n in [("--limit", limit), *((f"--category-limit {c}=", n) for c, n in (category_limits or {}).items())]:
        if n is not None and n < 1:
            raise UserInputError(f"{flag}{'' if flag.endswith('=') else ' '}{n} must be at least 1")
    limits = {category: limit for category in chosen} | dict(category_limits or {})
    entries: list[dict[str, Any]] = []
    ground_truth: dict[str, Any] = {}
    for category in chosen:
        rows = sorted(_load_jsonl(folder / f"{prefix}_{category}.json"), key=sort_key)[: limits[category]]
        if is_multi_turn(category):
            for row in rows:
                _attach_multi_turn_functions(row, folder / "multi_turn_func_doc")
        entries.extend(rows)
        answer_file = folder / "possible_answer" / f"{prefix}_{category}.json"
        if not is_relevance(category):
            if not answer_file.is_file():
                raise UserInputError(f"{str(answer_file)!r} is missing; the BFCL data folder is incomplete")
            wanted = {row["id"] for row in rows}
            ground_truth.update({a["id"]: a["ground_truth"] for a in _load_jsonl(answer_file) if a["id"] in wanted})
    return Dataset(version, prefix, package_version, folder, chosen, entries, ground_truth)
