"""Literal arithmetic evaluated as Python evaluates it, without running any model text.

BFCL's prompt decoder (``resolve_ast_by_type`` in ``bfcl_eval.model_handler.utils``) turns every
``BinOp`` argument value into ``eval(ast.unparse(node))``: ``"New " + "York"`` becomes
``"New York"``, ``10**-3`` becomes ``0.001``, ``[1] + [2]`` becomes ``[1, 2]``. ``evaluate`` gives
the value Python gives for such an expression when it is built from literals, containers
(list, tuple, set, dict) and operators (see below), by applying the ``operator`` module's
functions to the literal values; errors are Python's own (``1/0`` raises ZeroDivisionError, ``"a" + 1``
TypeError), so a decode that fails in BFCL fails here too.

Two kinds of expression raise ``Refused`` instead, and only there may a verdict differ from BFCL's:
- anything but literals, containers, operators, subscripts, comparisons, ``and``/``or`` and
  ``x if c else y`` (so: names, calls, attributes, f-strings, comprehensions, lambdas, ``is``):
  BFCL would run it -- a NameError for an unknown name, but a value for ``len('ab') + 1``, for
  ``f'{1}' + 'x'`` or for a module global of BFCL's utils;
- a value past ``MAX_ITEMS`` elements or ``MAX_INT_BITS`` bits: BFCL would build it, e.g.
  ``'a' * 10**9`` (a 1 GB string), ``2 ** 10**10`` or ``1 << 10**10`` (minutes of CPU and GBs of
  memory, or a MemoryError), ``'%999999999d' % 1``. The checks run before the operation whose
  result would be large, so nothing large is ever allocated.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Any

MAX_ITEMS = 1_000_000  # characters of a string, elements of a container
MAX_INT_BITS = 100_000  # ~30,000 decimal digits
_WIDTH = re.compile(rb"\d+")  # the numbers in a %-format string (widths, precisions)
_MAX_WIDTH = 10_000

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.MatMult: operator.matmul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
}
# ``is`` / ``is not`` are left out: on literals their result depends on how CPython shares constants
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
            ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}


class Refused(ValueError):
    """An expression that is not literal arithmetic, or whose value would be too large."""


def evaluate(node: ast.AST) -> Any:
    """The value of a literal expression (see the module docstring); raises Refused or Python's error."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](evaluate(node.operand))
    if isinstance(node, ast.BinOp):
        left, right = evaluate(node.left), evaluate(node.right)
        _check_operation(node.op, left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.List):
        return [evaluate(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(evaluate(e) for e in node.elts)
    if isinstance(node, ast.Set):
        return {evaluate(e) for e in node.elts}
    if isinstance(node, ast.Dict) and None not in node.keys:  # a None key is a ``**`` unpacking
        return {evaluate(k): evaluate(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, ast.Subscript):
        return evaluate(node.value)[evaluate(node.slice)]  # an element or a slice: never larger than its container
    if isinstance(node, ast.Slice):
        return slice(*(None if part is None else evaluate(part) for part in (node.lower, node.upper, node.step)))
    # The rest short-circuit as Python does: what Python would not evaluate is not evaluated here
    if isinstance(node, ast.BoolOp):
        value = None
        for operand in node.values:
            value = evaluate(operand)
            if bool(value) is isinstance(node.op, ast.Or):
                break
        return value
    if isinstance(node, ast.IfExp):
        return evaluate(node.body) if evaluate(node.test) else evaluate(node.orelse)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = evaluate(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            right = evaluate(comparator)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise Refused(f"refused: {ast.unparse(node)[:80]!r} is not literal arithmetic (BFCL's decoder would execute it)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int)  # bool included: True * "ab" is "ab" in Python


def _too_large(what: str) -> Refused:
    return Refused(f"refused: {what} exceeds {MAX_ITEMS:,} items / {MAX_INT_BITS:,} bits (BFCL's decoder would build it)")


def _check_operation(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse, before computing it, an operation whose result would be too large to build."""
    if isinstance(op, ast.Mult):
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and _is_int(times) and len(seq) * times > MAX_ITEMS:
                raise _too_large("a repetition")
    elif isinstance(op, ast.Pow) and _is_int(left) and _is_int(right):
        if right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
            raise _too_large("a power")
    elif isinstance(op, ast.LShift) and _is_int(left) and _is_int(right):
        if left and right > 0 and left.bit_length() + right > MAX_INT_BITS:
            raise _too_large("a shift")
    elif isinstance(op, ast.Mod) and isinstance(left, (str, bytes)):
        fmt = left.encode() if isinstance(left, str) else left
        # %-formatting pads to its widths: bound them; '*' takes a width from the arguments
        if b"*" in fmt or any(int(n) > _MAX_WIDTH for n in _WIDTH.findall(fmt)):
            raise _too_large("a %-format width")


def _bounded(value: Any) -> Any:
    if _is_int(value) and value.bit_length() > MAX_INT_BITS:
        raise _too_large("an integer")
    if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict)) and len(value) > MAX_ITEMS:
        raise _too_large("a value")
    return value
