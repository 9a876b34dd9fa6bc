"""Safe arithmetic evaluation of model output (never ``eval``).

Only number literals, + - * / // % ** (with small exponents), unary +/- and parentheses are allowed;
anything else (names, calls, attributes, subscripts, huge powers, overly long input) raises
:class:`UnsafeExpression`. Used to score equation answers (SVAMP) by value.
"""

from __future__ import annotations

import ast
import math
import operator
import re

MAX_LENGTH = 512
MAX_DEPTH = 64
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e100


class UnsafeExpression(ValueError):
    """The text is not a small, plain arithmetic expression."""


_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _normalise(text: str) -> str:
    text = text.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    text = text.replace("^", "**")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    return text


def _eval(node: ast.AST, depth: int) -> float:
    if depth > MAX_DEPTH:
        raise UnsafeExpression("expression nests too deeply")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # an int of 310+ digits overflows float(); 1e999 parses as inf: the cap holds for literals too
        if not abs(node.value) <= MAX_MAGNITUDE:
            raise UnsafeExpression("number too large")
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _eval(node.left, depth + 1)
        right = _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT or (abs(left) > 1e6 and right > 8):
                raise UnsafeExpression("exponent too large")
        try:
            value = _BINOPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise UnsafeExpression("division by zero") from None
        except OverflowError:
            raise UnsafeExpression("result too large") from None
        if isinstance(value, complex):
            raise UnsafeExpression("complex result")
        if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            raise UnsafeExpression("result too large")
        return value
    raise UnsafeExpression(f"not allowed in an arithmetic expression: {type(node).__name__}")


def safe_eval(text: str) -> float:
    """Evaluate a plain arithmetic expression such as ``"( 84.0 / 2.0 )"`` to a float.

    Raises :class:`UnsafeExpression` for anything that is not plain, small arithmetic.
    """
    if not isinstance(text, str):
        raise UnsafeExpression("expression must be a string")
    text = _normalise(text)
    if not text:
        raise UnsafeExpression("empty expression")
    if len(text) > MAX_LENGTH:
        raise UnsafeExpression(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise UnsafeExpression("not an arithmetic expression") from None
    try:
        return _eval(tree, 0)
    except RecursionError:
        raise UnsafeExpression("expression nests too deeply") from None


def try_eval(text: str) -> float | None:
    """Like :func:`safe_eval` but returns ``None`` instead of raising."""
    try:
        return safe_eval(text)
    except UnsafeExpression:
        return None


def same_value(a: float | None, b: float | None, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
    """Numeric equality with a small tolerance; ``None`` never equals anything."""
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
