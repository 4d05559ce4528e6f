"""A regular expression a prompt-mode answer must match: a BFCL call list over the offered
functions, or plain text.

Served by vLLM's structured outputs (``structured_outputs.regex``), it keeps a small model's
answer in a form the parser reads: a call names an offered function with that function's own
parameter names and literal values, or the answer is text that does not start with ``[``. It
constrains the form only; whether the calls are right is still decided by execution and
verification against the reference, exactly as without it.

The values are a fixed-depth subset of Python literals (a regular language cannot nest
without bound): strings, numbers, True/False/None, lists of scalars or of flat objects, and
objects whose values are scalars or lists of scalars. That covers every toolkit's schema.
"""

from __future__ import annotations

import re

from engine.records import FunctionSpec

_STR = r'"([^"\\\n]|\\.)*"'
_NUM = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?"
_SCALAR = rf"({_STR}|{_NUM}|True|False|None)"
_LIST = rf"\[({_SCALAR}(, {_SCALAR})*)?\]"
_MEMBER = rf"{_STR}: ({_SCALAR}|{_LIST})"
_DICT = rf"\{{({_MEMBER}(, {_MEMBER})*)?\}}"
_ITEM = rf"({_SCALAR}|{_DICT})"
_VALUE = rf"({_SCALAR}|\[({_ITEM}(, {_ITEM})*)?\]|{_DICT})"
# Text that is not a call list: anything not opening with "[" (nor with blanks before one).
_TEXT = r"[^\[\s][\s\S]*"


def _call(spec: FunctionSpec) -> str:
    params = list(spec.parameters.get("properties", {}))
    name = re.escape(spec.name)
    if not params:
        return rf"{name}\(\)"
    arg = "(" + "|".join(re.escape(p) for p in params) + ")=" + _VALUE
    return rf"{name}\(({arg}(, {arg})*)?\)"


def answer_regex(tools: list[FunctionSpec]) -> str:
    """``[f(a=1), g(b="x")]`` over ``tools``, or plain text."""
    if not tools:
        return _TEXT
    call = "(" + "|".join(_call(t) for t in tools) + ")"
    return rf"\[{call}(, {call})*\]|{_TEXT}"
