"""A small, safe expression language for selecting catalog rows, and its evaluator.

A sample of the selection (``select.samples``, the presets of
:mod:`lensdask.catalog.presets`) is one expression over catalog columns, e.g.::

    refExtendedness == 1 and -2.5 * log10(r_cModelFlux) + 31.4 <= 21

The language: column names, numbers (``21``, ``0.18``, ``1e-3``), arithmetic ``+ - * /
**`` and unary ``-``, comparisons ``== != < <= > >=`` (chained as in Python: ``18 < m <=
20`` is ``18 < m and m <= 20``), ``and``, ``or``, ``not``, parentheses, and the functions
``abs``, ``log10``, ``sqrt`` (numbers) and ``isnan`` (a condition). Nothing else: no
attributes, subscripts, strings, calls of other functions, lambdas or comprehensions. The
text is parsed by Python's :mod:`ast` into a tree that is checked node by node against that
whitelist, and evaluated by walking the tree with NumPy; it is never compiled nor passed to
``eval``. Every error is an :class:`ExpressionError` that shows the expression with a caret
under the place that is wrong.

Types are checked when parsing: ``and``/``or``/``not`` take conditions, arithmetic and
comparisons take numbers, and a sample is a condition.

Values and missing values (the semantics of SQL's NULL)
-------------------------------------------------------
Columns are read as float64 (integers and booleans convert exactly up to 2**53). A null in
the catalog, and a NaN anywhere (stored, or made by the arithmetic: ``log10`` of a negative
flux, ``0/0``), is a *missing* value, as SQL's NULL. Arithmetic is IEEE's (``log10(0)`` is
``-inf``, ``1/0`` is ``inf``) and propagates missing values; ``log10`` and ``**`` are the C
library's (as DuckDB's), so a value on a cut is decided alike on every CPU. A comparison
with a missing value is *unknown*; ``and``, ``or`` and ``not`` follow SQL's three-valued
logic (``unknown and false`` is false, ``unknown or true`` is true, ``not unknown`` is
unknown), and a row is selected only where the whole expression is *true*. So neither
``x < 1`` nor ``not (x < 1)`` selects a row whose ``x`` is missing. ``isnan(x)`` is true
where ``x`` is missing (null or NaN) and false elsewhere, never unknown. This is DuckDB's
SQL on the same catalog once every NaN is NULL (DuckDB itself orders a NaN above every
number, so ``NaN > 1`` is true there): the tests compare the two that way.
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def _libm(function: Any, fallback: Any, *, arity: int) -> Any:
    """``function`` of :mod:`math` (the C library's, which SQL engines such as DuckDB call
    too) applied element by element. NumPy's vectorised ``log10`` and ``power`` differ from
    it by an ulp on about 2% of values, and between CPUs, which would move rows that sit on
    a cut. Inputs outside the domain get IEEE's value from ``fallback`` (``log10(0)`` is
    -inf, ``log10(-1)`` NaN); a NaN input gives NaN (a missing value stays missing)."""

    def scalar(*args: float) -> float:
        try:
            return function(*args)
        except (ValueError, OverflowError):
            return float(fallback(*args))

    ufunc = np.frompyfunc(scalar, arity, 1)

    def apply(*arrays: Any) -> np.ndarray:
        args = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
        result = np.full(args[0].shape, np.nan)
        known = ~np.logical_or.reduce([np.isnan(a) for a in args])
        result[known] = np.asarray(ufunc(*(a[known] for a in args)), dtype=np.float64)
        return result

    return apply


NUMBER_FUNCTIONS = {
    "abs": np.abs,
    "log10": _libm(math.log10, np.log10, arity=1),
    "sqrt": np.sqrt,  # IEEE rounds it exactly, as +, -, * and /
}
"""Functions of one number giving a number."""
CONDITION_FUNCTIONS = ("isnan",)
"""Functions of one number giving a condition."""
MAX_LENGTH = 4000
"""Characters an expression may have (the parser's recursion stays bounded)."""
SHOWN_COLUMNS = 12
"""Known columns listed by name in an error; beyond that, the closest names and a count."""

_COMPARE = {
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
}
_ARITHMETIC = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: _libm(math.pow, np.power, arity=2),
}
_REFUSED_OPERATORS = {
    ast.BitAnd: "`&` (write `and`)",
    ast.BitOr: "`|` (write `or`)",
    ast.BitXor: "`^` (write `**` for a power)",
    ast.Invert: "`~` (write `not`)",
    ast.FloorDiv: "`//`",
    ast.Mod: "`%`",
    ast.MatMult: "`@`",
    ast.LShift: "`<<`",
    ast.RShift: "`>>`",
    ast.Is: "`is`",
    ast.IsNot: "`is not`",
    ast.In: "`in`",
    ast.NotIn: "`not in`",
}
_SYNTAX_NAMES = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional expression",
    ast.Dict: "dict",
    ast.Set: "set",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.NamedExpr: "assignment",
    ast.JoinedStr: "string",
    ast.Starred: "starred argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}

NUMBER = "number"
CONDITION = "condition"


class ExpressionError(ValueError):
    """An expression that does not parse, leaves the language, has the wrong type or names
    an unknown column; the message shows the expression and a caret under the place."""


@dataclass(frozen=True)
class Expression:
    """A parsed and checked expression (:func:`parse`)."""

    text: str
    """The expression as written."""
    tree: ast.expr
    """Its checked syntax tree."""
    columns: tuple[str, ...]
    """The column names it reads, in order of first use."""
    kind: str
    """``condition`` or ``number``."""


def parse(
    text: str,
    *,
    where: str = "expression",
    columns: Collection[str] | None = None,
    kind: str = CONDITION,
) -> Expression:
    """Parse and check ``text``.

    Parameters
    ----------
    text : str
        The expression.
    where : str
        What the expression is (``select.samples.LRG``), to start error messages with.
    columns : collection of str, optional
        The known column names; None: any name is taken for a column.
    kind : {'condition', 'number'}
        What the whole expression must be.

    Returns
    -------
    Expression

    Raises
    ------
    ExpressionError
        Bad syntax, syntax outside the language, a type mismatch or an unknown column; the
        message shows the expression with a caret under the place.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"{where}: an expression is text, got {text!r}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{where}: longer than {MAX_LENGTH} characters")
    # one line, so that a position is a column; leading blanks would not parse
    line = text.translate(str.maketrans("\n\r\t", "   "))
    start = len(line) - len(line.lstrip())
    if not line.strip():
        raise ExpressionError(f"{where}: the expression is empty")
    try:
        tree = ast.parse(line[start:], mode="eval").body
    except SyntaxError as err:
        body = line[start:]
        # an expression that ends too early has no offset: point past its end
        offset = start + min(err.offset - 1, len(body)) if err.offset else len(line.rstrip())
        raise ExpressionError(_shown(f"{where}: bad syntax: {err.msg}", text, offset)) from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"{where}: nested too deeply") from None
    checker = _Checker(text, line[start:], start, where=where, columns=columns)
    found = checker.kind_of(tree)
    if found != kind:
        raise checker.error(tree, f"expected a {kind}, this is a {found}")
    return Expression(text=text, tree=tree, columns=tuple(checker.names), kind=kind)


def columns_of(text: str, *, where: str = "expression") -> tuple[str, ...]:
    """The column names ``text`` reads, in order of first use (to project reads)."""
    return parse(text, where=where).columns


class _Checker:
    """Walks a tree, refusing what is outside the language; gives each node's type."""

    def __init__(
        self, text: str, body: str, start: int, *, where: str, columns: Collection[str] | None
    ):
        self.text, self.body, self.start, self.where = text, body, start, where
        self.known = None if columns is None else set(columns)
        self.names: dict[str, None] = {}

    def error(self, node: ast.AST, what: str) -> ExpressionError:
        # col_offset counts UTF-8 bytes of the parsed line
        offset = len(self.body.encode()[: node.col_offset].decode(errors="ignore"))
        return ExpressionError(_shown(f"{self.where}: {what}", self.text, self.start + offset))

    def operator_error(self, left: ast.expr, right: ast.expr, what: str) -> ExpressionError:
        """An error pointing at the operator between ``left`` and ``right``."""
        raw = self.body.encode()
        gap = raw[left.end_col_offset : right.col_offset].decode(errors="ignore")
        gap = gap.replace("(", " ").replace(")", " ")  # parentheses around an operand
        offset = len(raw[: left.end_col_offset].decode(errors="ignore"))
        offset += len(gap) - len(gap.lstrip())
        return ExpressionError(_shown(f"{self.where}: {what}", self.text, self.start + offset))

    def segment(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.body, node) or type(node).__name__

    def expect(self, node: ast.expr, kind: str, role: str) -> None:
        found = self.kind_of(node)
        if found != kind:
            raise self.error(node, f"{role} takes a {kind}, `{self.segment(node)}` is a {found}")

    def kind_of(self, node: ast.expr) -> str:
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            for value in node.values:
                self.expect(value, CONDITION, f"`{word}`")
            return CONDITION
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                self.expect(node.operand, CONDITION, "`not`")
                return CONDITION
            if isinstance(node.op, ast.USub | ast.UAdd):
                self.expect(node.operand, NUMBER, "a sign")
                return NUMBER
            raise self.error(node, f"unsupported operator {_REFUSED_OPERATORS[type(node.op)]}")
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _ARITHMETIC:
                what = f"unsupported operator {_REFUSED_OPERATORS[type(node.op)]}"
                raise self.operator_error(node.left, node.right, what)
            self.expect(node.left, NUMBER, "arithmetic")
            self.expect(node.right, NUMBER, "arithmetic")
            return NUMBER
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                if type(op) not in _COMPARE:
                    what = f"unsupported comparison {_REFUSED_OPERATORS[type(op)]}"
                    raise self.operator_error(left, right, what)
            for operand in operands:
                self.expect(operand, NUMBER, "a comparison")
            return CONDITION
        if isinstance(node, ast.Name):
            if self.known is not None and node.id not in self.known:
                raise self.error(node, f"unknown column `{node.id}` ({self.hint(node.id)})")
            self.names.setdefault(node.id)
            return NUMBER
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.error(node, f"unsupported constant `{self.segment(node)}`: numbers only")
            return NUMBER
        if isinstance(node, ast.Call):
            return self.call(node)
        what = _SYNTAX_NAMES.get(type(node), type(node).__name__)
        raise self.error(node, f"unsupported syntax: {what} `{self.segment(node)}`")

    def call(self, node: ast.Call) -> str:
        functions = sorted([*NUMBER_FUNCTIONS, *CONDITION_FUNCTIONS])
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in functions:
            raise self.error(
                node,
                f"unsupported function `{self.segment(node.func)}` (there are "
                f"{', '.join(functions)})",
            )
        if node.keywords or len(node.args) != 1:
            raise self.error(node, f"`{name}` takes one number")
        self.expect(node.args[0], NUMBER, f"`{name}`")
        return CONDITION if name in CONDITION_FUNCTIONS else NUMBER

    def hint(self, name: str) -> str:
        known = sorted(self.known or ())
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        if len(known) <= SHOWN_COLUMNS:
            return f"{hint}known: {', '.join(known)}" if known else "no columns are known"
        return f"{hint}the catalog has {len(known)} columns"


def _shown(message: str, text: str, offset: int) -> str:
    """``message``, then the expression and a caret under character ``offset``."""
    line = text.translate(str.maketrans("\n\r\t", "   "))
    return f"{message}\n    {line}\n    {' ' * offset}^"


def evaluate(expression: Expression, columns: Mapping[str, Any], *, rows: int) -> np.ndarray:
    """The rows where a condition is true.

    Parameters
    ----------
    expression : Expression
        A condition (:func:`parse`).
    columns : mapping
        Column name -> values (array-like of numbers or booleans, missing as NaN), for at
        least ``expression.columns``.
    rows : int
        The number of rows (the length of every column).

    Returns
    -------
    ndarray of bool, shape (rows,)
        True where the expression is true; false where it is false or unknown (a missing
        value decided it).
    """
    true, _ = truth(expression, columns, rows=rows)
    return true


def truth(
    expression: Expression, columns: Mapping[str, Any], *, rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """A condition's three-valued result: the rows where it is true, and those where it is
    false (neither: unknown). Arguments as :func:`evaluate`."""
    if expression.kind != CONDITION:
        raise ExpressionError(f"`{expression.text}` is a number, not a condition")
    data = {}
    for name in expression.columns:
        values = np.asarray(columns[name], dtype=np.float64)
        if values.shape != (rows,):
            raise ValueError(f"column {name}: {values.shape[0]} values for {rows} rows")
        data[name] = values
    with np.errstate(all="ignore"):
        true, false = _Evaluator(data).condition(expression.tree)
    return np.broadcast_to(true, (rows,)).copy(), np.broadcast_to(false, (rows,)).copy()


class _Evaluator:
    """Evaluates a checked tree: numbers as float64 arrays (NaN: missing), conditions as
    (true, false) pairs of boolean arrays."""

    def __init__(self, data: dict[str, np.ndarray]):
        self.data = data

    def number(self, node: ast.expr) -> np.ndarray:
        if isinstance(node, ast.Name):
            return self.data[node.id]
        if isinstance(node, ast.Constant):
            return np.float64(node.value)
        if isinstance(node, ast.UnaryOp):
            operand = self.number(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return _ARITHMETIC[type(node.op)](self.number(node.left), self.number(node.right))
        if isinstance(node, ast.Call):
            return NUMBER_FUNCTIONS[node.func.id](self.number(node.args[0]))
        raise AssertionError(f"not a number: {ast.dump(node)}")  # the checker refused it

    def condition(self, node: ast.expr) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(value) for value in node.values]
            trues, falses = [p[0] for p in parts], [p[1] for p in parts]
            if isinstance(node.op, ast.And):
                return np.logical_and.reduce(trues), np.logical_or.reduce(falses)
            return np.logical_or.reduce(trues), np.logical_and.reduce(falses)
        if isinstance(node, ast.UnaryOp):  # not
            true, false = self.condition(node.operand)
            return false, true
        if isinstance(node, ast.Compare):
            operands = [self.number(node.left), *(self.number(c) for c in node.comparators)]
            true, false = np.True_, np.False_
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                known = ~(np.isnan(left) | np.isnan(right))
                holds = _COMPARE[type(op)](left, right)
                true = true & known & holds
                false = false | (known & ~holds)
            return true, false
        if isinstance(node, ast.Call):  # isnan
            missing = np.isnan(self.number(node.args[0]))
            return missing, ~missing
        raise AssertionError(f"not a condition: {ast.dump(node)}")  # the checker refused it
