"""`magnet inspect RUN_DIR`: what a run holds, read from the shards themselves.

Counts come from streaming every frame (not from the manifest, which a killed run may not
have updated), so inspect also reports damaged frames and torn tails with file and offset.
It only reads: running it beside a live `magnet generate` is safe (the writer's unfinished
last frame shows up as a torn tail). It also lists finished items whose done marker names
records the shards no longer hold (a truncated or damaged shard): the next generate run
regenerates them.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson

from engine.config_cli import ConfigCLI, doc
from engine.errors import UserInputError
from engine.reasons import reason_key
from engine.records import RECORD_KINDS
from engine.shards import Corruption, iter_frames, shard_files
from engine.store import MANIFEST, read_manifest

_SAMPLE_CHARS = 4000  # a sample longer than this is cut in the table view (never in --json)


class _Polarity(msgspec.Struct):
    polarity: str


class _DeadLetterReason(msgspec.Struct):
    stage: str
    error: str
    item_id: str = ""


class _IdOutputs(msgspec.Struct):
    id: str
    outputs: list[str] = []  # WorkDone only; other kinds decode with it empty


def inspect_run(run_dir: Path, *, samples: int = 1, kind: str | None = None) -> dict[str, Any]:
    """Everything `magnet inspect` shows, as JSON-able data."""
    if not run_dir.is_dir():
        raise UserInputError(f"run directory {run_dir} does not exist; pass the --out of a generate run")
    manifest = read_manifest(run_dir)
    kinds = [kind] if kind else list(RECORD_KINDS)
    if kind and kind not in RECORD_KINDS:
        raise UserInputError(f"unknown --kind {kind!r}; choose one of: {', '.join(RECORD_KINDS)}")
    if manifest is None and not any(shard_files(run_dir / k) for k in RECORD_KINDS):
        raise UserInputError(f"{run_dir} is not a magnet run directory (no {MANIFEST}, no shards); pass the --out of a generate run")
    damaged: list[Corruption] = []
    report: dict[str, Any] = {"run_dir": str(run_dir), "manifest": manifest, "kinds": {}, "samples": {}}
    polarity: Counter[str] = Counter()
    dead: Counter[tuple[str, str]] = Counter()
    pol_decode = msgspec.msgpack.Decoder(_Polarity).decode
    dl_decode = msgspec.msgpack.Decoder(_DeadLetterReason).decode
    id_decode = msgspec.msgpack.Decoder(_IdOutputs).decode
    data_ids: set[str] = set()  # every record id outside "done"
    markers: dict[str, list[str]] = {}  # done marker id -> the records it lists (the last marker wins)
    dead_items: set[str] = set()
    for k in kinds:
        decode = msgspec.msgpack.Decoder(RECORD_KINDS[k]).decode
        files, frames, picked = [], 0, []
        seen: set[str] = set()
        for path in shard_files(run_dir / k):
            files.append({"file": path.name, "bytes": path.stat().st_size})
            for offset, payload in iter_frames(path, damaged.append):
                frames += 1
                try:
                    rec = id_decode(payload)
                    seen.add(rec.id)
                    if k == "done":
                        markers[rec.id] = rec.outputs
                    else:
                        data_ids.add(rec.id)
                    if len(picked) < samples:
                        picked.append(msgspec.to_builtins(decode(payload)))
                    if k == "trajectories":
                        polarity[pol_decode(payload).polarity] += 1
                    elif k == "dead_letters":
                        dl = dl_decode(payload)
                        dead[(dl.stage, reason_key(dl.error))] += 1
                        dead_items.add(dl.item_id)
                except msgspec.DecodeError as err:
                    damaged.append(Corruption(path=str(path), offset=offset, length=len(payload), reason=f"undecodable {k} record: {err}"))
        # Records are counted by id: a rerun of a damaged item may append a second done marker.
        report["kinds"][k] = {"records": len(seen), "frames": frames, "bytes": sum(f["bytes"] for f in files), "files": files}
        report["samples"][k] = picked
    if kind is None:
        missing = sorted(i for i, outputs in markers.items() if i not in dead_items and not all(o in data_ids for o in outputs))
        report["finished_missing_records"] = missing
    if polarity:
        report["trajectories_by_polarity"] = dict(polarity)
    report["dead_letters_by_reason"] = [{"stage": s, "reason": r, "count": n} for (s, r), n in dead.most_common()]
    report["damaged"] = [msgspec.to_builtins(c) for c in damaged]
    summary = run_dir / "generate_summary.json"
    if summary.exists():
        report["data_card"] = orjson.loads(summary.read_bytes()).get("data_card")
    return report


def _print_rich(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    manifest = report["manifest"] or {}
    info = Table(title=f"run {report['run_dir']}", show_header=False)
    code = manifest.get("code_version") or {}
    for key, value in [
        ("config fingerprint", manifest.get("config_fingerprint", "(no manifest)")),
        ("created", manifest.get("created", "")),
        ("updated", manifest.get("updated", "")),
        ("code", f"{code.get('package', '')} {code.get('version') or ''} {(code.get('git_commit') or '')[:12]}".strip()),
    ]:
        info.add_row(key, str(value))
    console.print(info)

    kinds = Table(title="records")
    for col in ("kind", "records", "manifest count", "shard files", "bytes"):
        kinds.add_column(col, justify="left" if col == "kind" else "right")
    for kind, data in report["kinds"].items():
        listed = (manifest.get("counts") or {}).get(kind, "")
        kinds.add_row(kind, str(data["records"]), str(listed), str(len(data["files"])), f"{data['bytes']:,}")
    console.print(kinds)
    if report.get("trajectories_by_polarity"):
        console.print("trajectories by polarity: " + ", ".join(f"{k} {v}" for k, v in report["trajectories_by_polarity"].items()))

    if report["dead_letters_by_reason"]:
        dl = Table(title="dead letters")
        for col in ("stage", "reason", "count"):
            dl.add_column(col)
        for row in report["dead_letters_by_reason"]:
            dl.add_row(row["stage"], row["reason"], str(row["count"]))
        console.print(dl)

    if report.get("finished_missing_records"):
        missing = report["finished_missing_records"]
        console.print(f"{len(missing)} finished work items have records missing from the shards "
                      f"(e.g. {', '.join(missing[:3])}); the next `magnet generate` on this run regenerates them",
                      style="red", markup=False, highlight=False)

    if report["damaged"]:
        bad = Table(title="damaged spans (skipped by readers)", style="red")
        for col in ("file", "offset", "bytes", "kind", "reason"):
            bad.add_column(col)
        for c in report["damaged"]:
            bad.add_row(c["path"], str(c["offset"]), str(c["length"]), "torn tail" if c["torn_tail"] else "corruption", c["reason"])
        console.print(bad)

    if report.get("data_card"):
        from distill.data_card import print_card  # the command sees every stage; engine/ itself does not

        print_card(report["data_card"])

    for kind, picked in report["samples"].items():
        for i, sample in enumerate(picked):
            text = orjson.dumps(sample, option=orjson.OPT_INDENT_2).decode()
            if len(text) > _SAMPLE_CHARS:
                text = text[:_SAMPLE_CHARS] + f"\n... ({len(text) - _SAMPLE_CHARS} more characters; --json shows all)"
            console.rule(f"{kind} sample {i + 1}")
            console.print(text, markup=False, highlight=False)


class InspectConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What `magnet inspect` shows."""

    run_dir: Annotated[str, doc("a run directory (the --out of `magnet generate`)")]
    samples: Annotated[int, doc("records to show per kind", ge=0)] = 1
    kind: Annotated[Literal[tuple(RECORD_KINDS)] | None, doc("only this record kind")] = None  # type: ignore[valid-type]
    json: Annotated[bool, doc("print one JSON document instead of tables")] = False


INSPECT_CLI = ConfigCLI(InspectConfig, positional=("run_dir",), config_file=False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="magnet inspect", description="Counts, sizes, damage and samples of a run directory.")
    INSPECT_CLI.add_arguments(parser)
    args = INSPECT_CLI.load(parser.parse_args(argv))
    report = inspect_run(Path(args.run_dir), samples=args.samples, kind=args.kind)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_rich(report)
    return 0
