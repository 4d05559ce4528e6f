"""What the user of an episode knows about their own data, stated as facts for the back-translation.

A real user knows their customer id, PIN, user name and password, their account and device ids
and their working folder; a small model asked to write a request from a raw state snapshot
often invents them instead, and the reference then fails to execute. The facts are read from
the toolkit state the episode starts from (top-level strings, credential tables, and the ids of
id-keyed collections with a short label each).

The facts reach only the user's prompt. The forth-translation's grounding gate
(distill/grounding.py) still checks every reference value against the user's words and earlier
outputs, so a fact becomes a call argument only when the user states it in the query.
"""

from __future__ import annotations

from typing import Any

_CREDENTIALS = ("password", "credential", "pin")
_LABELS = ("name", "title", "account_type", "device_type", "cardholder_name", "currency")
_PER_COLLECTION = 6
_LABEL_CHARS = 40  # a label names an item; a file's whole text is not one


def _label(item: Any) -> str:
    if isinstance(item, dict):
        item = next((item[k] for k in _LABELS if isinstance(item.get(k), str)), "")
    return item if isinstance(item, str) and len(item) <= _LABEL_CHARS and "\n" not in item else ""


def toolkit_facts(state: dict[str, Any]) -> list[str]:
    """One line per fact of one toolkit's state."""
    lines = []
    for key, value in state.items():
        if isinstance(value, str) and value:
            lines.append(f"{key}: {value}")
        elif isinstance(value, dict) and value and any(c in key for c in _CREDENTIALS):
            lines.append(f"{key}: " + ", ".join(f"{k} / {v}" for k, v in list(value.items())[:_PER_COLLECTION]))
        elif isinstance(value, dict) and value and all(isinstance(v, (dict, str)) for v in value.values()):
            shown = [f"{k} ({_label(v)})" if _label(v) else str(k) for k, v in list(value.items())[:_PER_COLLECTION]]
            lines.append(f"{key}: " + ", ".join(shown) + (", ..." if len(value) > _PER_COLLECTION else ""))
    return lines


def user_facts(snapshot: dict[str, Any], toolkits: set[str]) -> str:
    """The facts of ``toolkits`` (a turn's), one ``- toolkit: fact`` line each, or ``(none)``."""
    lines = [f"- {kit}: {fact}" for kit in sorted(toolkits) if isinstance(snapshot.get(kit), dict)
             for fact in toolkit_facts(snapshot[kit])]
    return "\n".join(lines) or "(none)"
