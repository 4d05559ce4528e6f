"""The prompt texts of every distillation role, loaded from files a user can read and override.

Prompts are ``string.Template`` files (``$name`` placeholders) because they quote JSON, whose
braces would fight ``str.format``. A user override folder holds files with the same names;
any file found there replaces the packaged one, the rest stay packaged.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from engine.errors import UserInputError

PACKAGED = Path(__file__).with_name("prompts")
ENV_VAR = "MAGNET_PROMPTS_DIR"


class Prompts:
    """Prompt templates by name (file stem): packaged files, overridden by ``override_dir``."""

    def __init__(self, override_dir: str | os.PathLike[str] | None = None):
        override_dir = override_dir or os.environ.get(ENV_VAR) or None
        self.override_dir = Path(override_dir) if override_dir else None
        if self.override_dir is not None and not self.override_dir.is_dir():
            raise UserInputError(
                f"prompts folder {str(self.override_dir)!r} does not exist; "
                f"point --prompts-dir (or ${ENV_VAR}) at a folder of .txt prompt files"
            )
        self._texts: dict[str, str] = {p.stem: p.read_text() for p in sorted(PACKAGED.glob("*.txt"))}
        if self.override_dir is not None:
            for p in sorted(self.override_dir.glob("*.txt")):
                if p.stem not in self._texts:
                    raise UserInputError(
                        f"prompt file {str(p)!r} overrides no known prompt; name it one of: {', '.join(self._texts)}"
                    )
                self._texts[p.stem] = p.read_text()

    def names(self) -> list[str]:
        return list(self._texts)

    def text(self, name: str) -> str:
        return self._texts[name]

    def render(self, name: str, **values: object) -> str:
        """Fill a template; a placeholder without a value is a bug in an overriding file -> UserInputError."""
        try:
            return string.Template(self._texts[name]).substitute({k: str(v) for k, v in values.items()})
        except (KeyError, ValueError) as err:
            raise UserInputError(
                f"prompt {name!r} uses an unknown placeholder ({err}); allowed: {', '.join('$' + k for k in values)}"
            ) from None
