"""Chat templates shipped with the engine (Jinja files, read with ``template_path``)."""

from __future__ import annotations

from pathlib import Path


def template_path(name: str) -> Path:
    """Path of a shipped template, e.g. ``template_path("smollm2_tools.jinja")``."""
    return Path(__file__).with_name(name)
