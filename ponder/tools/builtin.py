"""Small safe tools every agent may use."""

from __future__ import annotations

import ast
import math
import operator
from datetime import UTC, datetime

from langchain_core.tools import tool

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    name: getattr(math, name)
    for name in ("sqrt", "log", "log10", "log2", "exp", "sin", "cos", "tan", "floor", "ceil",
                 "factorial", "gcd")
} | {"abs": abs, "round": round, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 10_000
_MAX_LENGTH = 500


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression without ``eval``: numbers, + - * / // % **, parentheses,
    and a few math functions. Raises ValueError for anything else."""
    if len(expression) > _MAX_LENGTH:
        raise ValueError(f"the expression is longer than {_MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ValueError(f"{expression!r} is not an arithmetic expression") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ValueError(f"exponent {right} is too large (limit {_MAX_EXPONENT})")
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS and not node.keywords):
        if node.func.id == "factorial" and _eval(node.args[0]) > 1000:
            raise ValueError("factorial argument is too large (limit 1000)")
        return _FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    raise ValueError(f"{ast.unparse(node)!r} is not allowed: use numbers, + - * / // % ** "
                     f"and {', '.join(sorted(_FUNCTIONS))}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '3 * 12.5 + 4.9' or 'sqrt(2) ** 2'."""
    result = evaluate(expression)
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        result = int(result)
    return str(round(result, 10) if isinstance(result, float) else result)


@tool
def current_time() -> str:
    """The current date and time in UTC, in ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


BUILTIN_TOOLS = {t.name: t for t in (calculator, current_time)}
