"""A dead letter's error reduced to a groupable reason, the one grouping of every report that
counts dead letters by reason (`magnet generate`'s summary, `magnet inspect`, `magnet view`, the
distill benchmark): no exception type, turn numbers, quotes or values, so the same failure on
different items lands in one row."""

from __future__ import annotations

import re


def reason_key(error: str) -> str:
    """The reason ``error`` (a dead letter's one-line error) is grouped under."""
    text = re.sub(r"https?://\S+", "URL", error)
    text = re.sub(r"^\w+(Error|Failed|Answer)?: ", "", text)
    text = re.sub(r"translate turn \d+ \(\w+\): ", "", text)
    text = re.sub(r"\bturn \d+( step \d+)?: ", "", text)
    text = text.split(" | ")[0].split(" (")[0]
    parts = [p.strip() for p in text.split(":")]
    key = ": ".join(parts[:2]) if len(parts) > 1 and len(parts[0]) < 40 else parts[0]
    key = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", key)
    return key[:90]
