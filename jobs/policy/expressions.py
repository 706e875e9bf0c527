"""The condition language of policy tiers: small, typed, and evaluated without `eval`.

Policies are data written by people who are not reviewed like code, so a condition
must not be able to reach Python: a hand-written tokenizer and recursive-descent
parser build a tree of the node types below, a checker types it against the context
vocabulary, and an interpreter walks it over a plain dict. Names are looked up as
dict keys only (never attributes), names may not start with `_`, only whitelisted
functions exist, and length, token count, nesting depth and list size are bounded.

    risk >= 90 and (has_signal('impossible_travel') or has_signal('new_country'))
    has_signal('sigma.lsass_memory_access') or detection('critical')
    user_type in ['admin', 'service'] and not privileged
    signal.exfiltration_volume.value >= 5e9 or source_degraded('windows')

Precedence, loosest first: `or`, `and`, `not`, comparisons (`== != < <= > >= in`,
`not in`; not chainable). A comparison with a missing value is false (except
`== null` / `!= null`); a missing boolean counts as false.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from jobs.policy.vocabulary import (
    KNOWN_SIGNALS,
    KNOWN_SOURCES,
    LEVELS,
    is_detection_signal,
    is_known_signal,
    level_rank,
    variable_type,
)

MAX_LENGTH = 1000
MAX_TOKENS = 256
MAX_DEPTH = 16
MAX_LIST = 64
MAX_STRING = 200
MAX_NUMBER_CHARS = 24

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")


class ExpressionError(ValueError):
    """A condition that does not parse, does not type-check, or exceeds a limit."""


class UnknownSignalError(ExpressionError):
    """A condition names a signal the scoring stage never emits (a typo never fires)."""


# --- tokens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # name, number, string, op, kw, end
    text: str
    pos: int
    value: Any = None


_SPACE = re.compile(r"\s+")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_OPS = ("==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", ".", "-")
_HINTS = {
    "=": "use == to compare",
    "&": "use 'and'",
    "|": "use 'or'",
    "!": "use 'not' (or != to compare)",
    "_": "names may not start with '_'",
}


def tokenize(text: str) -> list[Token]:
    if not isinstance(text, str):
        raise ExpressionError("condition must be a string")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"condition is {len(text)} characters; the limit is {MAX_LENGTH}")
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        if len(tokens) > MAX_TOKENS:
            raise ExpressionError(f"condition has more than {MAX_TOKENS} tokens")
        m = _SPACE.match(text, i)
        if m:
            i = m.end()
            continue
        ch = text[i]
        if ch in "'\"":
            j = i + 1
            chars: list[str] = []
            while j < len(text) and text[j] != ch:
                if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in "'\"\\":
                    j += 1
                chars.append(text[j])
                j += 1
            if j >= len(text):
                raise ExpressionError(f"unterminated string at position {i}")
            if len(chars) > MAX_STRING:
                raise ExpressionError(f"string at position {i} is longer than {MAX_STRING}")
            tokens.append(Token("string", text[i : j + 1], i, "".join(chars)))
            i = j + 1
            continue
        m = _NUMBER.match(text, i)
        if m:
            raw = m.group()
            if len(raw) > MAX_NUMBER_CHARS:
                raise ExpressionError(f"number at position {i} is too long")
            value: float | int = float(raw) if any(c in raw for c in ".eE") else int(raw)
            if not math.isfinite(value):
                raise ExpressionError(f"number at position {i} is out of range")
            if _NAME.match(text, m.end()):
                raise ExpressionError(f"unexpected {text[m.end()]!r} after number at position {i}")
            tokens.append(Token("number", raw, i, value))
            i = m.end()
            continue
        m = _NAME.match(text, i)
        if m:
            word = m.group()
            tokens.append(Token("kw" if word in KEYWORDS else "name", word, i, word))
            i = m.end()
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(Token("op", op, i))
            i += len(op)
            continue
        hint = _HINTS.get(ch)
        raise ExpressionError(
            f"unexpected character {ch!r} at position {i}" + (f" ({hint})" if hint else "")
        )
    tokens.append(Token("end", "", len(text)))
    if len(tokens) > MAX_TOKENS:
        raise ExpressionError(f"condition has more than {MAX_TOKENS} tokens")
    return tokens


# --- tree -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any  # int | float | str | bool | None


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Name:
    path: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    argument: str


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # == != < <= > >= in not_in
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # and | or
    operands: tuple[Node, ...]


Node = Union[Literal, ListLiteral, Name, Call, Compare, Not, BoolOp]  # noqa: UP007

# Functions a condition may call: name -> the arguments it takes. has_signal() also takes any
# detection signal `sigma.<rule>`; detection('high') holds when a detection of that level or
# above fired (its signal's threshold is the level's rank).
FUNCTIONS: dict[str, frozenset[str]] = {
    "has_signal": KNOWN_SIGNALS,
    "source_degraded": KNOWN_SOURCES,
    "detection": frozenset(LEVELS),
}


def _argument_ok(function: str, argument: str) -> bool:
    if function == "has_signal":
        return is_known_signal(argument)
    return argument in FUNCTIONS[function]


# --- parser ---------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        return tok.kind == kind and (text is None or tok.text == text)

    def expect(self, kind: str, text: str, what: str) -> Token:
        if not self.at(kind, text):
            self.fail(f"expected {what}")
        return self.next()

    def fail(self, message: str) -> None:
        tok = self.peek()
        found = "end of condition" if tok.kind == "end" else repr(tok.text)
        raise ExpressionError(f"{message} at position {tok.pos}, found {found}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"condition is nested deeper than {MAX_DEPTH} levels")

    def parse(self) -> Node:
        if self.at("end"):
            raise ExpressionError("condition is empty")
        node = self.parse_or()
        if not self.at("end"):
            self.fail("expected 'and', 'or' or the end of the condition")
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.at("kw", "or"):
            self.next()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.at("kw", "and"):
            self.next()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def parse_not(self) -> Node:
        if self.at("kw", "not"):
            self.next()
            self.enter()
            node = Not(self.parse_not())
            self.depth -= 1
            return node
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        left = self.parse_operand()
        tok = self.peek()
        op: str | None = None
        if tok.kind == "op" and tok.text in COMPARISONS:
            op = self.next().text
        elif self.at("kw", "in"):
            self.next()
            op = "in"
        elif self.at("kw", "not") and self.tokens[self.i + 1].text == "in":
            self.next()
            self.next()
            op = "not_in"
        if op is None:
            return left
        right = self.parse_operand()
        nxt = self.peek()
        if (nxt.kind == "op" and nxt.text in COMPARISONS) or (
            nxt.kind == "kw" and nxt.text == "in"
        ):
            self.fail("comparisons cannot be chained; join them with 'and'")
        return Compare(op, left, right)

    def parse_operand(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "(":
            self.next()
            self.enter()
            if self.at("op", ")"):
                self.fail("expected a condition inside parentheses")
            node = self.parse_or()
            self.expect("op", ")", "')'")
            self.depth -= 1
            return node
        if tok.kind == "op" and tok.text == "[":
            return self.parse_list()
        if tok.kind == "op" and tok.text == "-":
            self.next()
            num = self.peek()
            if num.kind != "number":
                self.fail("expected a number after '-'")
            self.next()
            return Literal(-num.value)
        if tok.kind in ("number", "string"):
            self.next()
            return Literal(tok.value)
        if tok.kind == "kw" and tok.text in ("true", "false", "null"):
            self.next()
            return Literal({"true": True, "false": False, "null": None}[tok.text])
        if tok.kind == "name":
            return self.parse_name()
        self.fail("expected a value, a name or '('")
        raise AssertionError("unreachable")

    def parse_list(self) -> Node:
        self.expect("op", "[", "'['")
        items: list[Any] = []
        while not self.at("op", "]"):
            tok = self.peek()
            if tok.kind == "op" and tok.text == "-" and self.tokens[self.i + 1].kind == "number":
                self.next()
                items.append(-self.next().value)
            elif tok.kind in ("number", "string"):
                items.append(self.next().value)
            else:
                self.fail("lists hold only string or number literals")
            if len(items) > MAX_LIST:
                raise ExpressionError(f"list has more than {MAX_LIST} items")
            if not self.at("op", "]"):
                self.expect("op", ",", "',' or ']'")
        self.next()
        if not items:
            raise ExpressionError("empty list; a list needs at least one value")
        return ListLiteral(tuple(items))

    def parse_name(self) -> Node:
        first = self.next()
        if self.at("op", "("):
            if first.text not in FUNCTIONS:
                raise ExpressionError(
                    f"unknown function {first.text!r} at position {first.pos}; "
                    f"available: {', '.join(sorted(FUNCTIONS))}"
                )
            self.next()
            arg = self.peek()
            if arg.kind != "string":
                self.fail(f"{first.text}() takes one quoted name")
            self.next()
            self.expect("op", ")", f"')' closing {first.text}(")
            return Call(first.text, arg.value)
        path = [first.text]
        while self.at("op", "."):
            self.next()
            part = self.peek()
            if part.kind not in ("name", "kw"):
                self.fail("expected a name after '.'")
            path.append(self.next().text)
        if self.at("op", "("):
            self.fail("only has_signal(), source_degraded() and detection() can be called")
        return Name(tuple(path))


# --- type check -----------------------------------------------------------------------


def _literal_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def _type_of(node: Node, resolve: Callable[[str], str | None]) -> str:
    if isinstance(node, Literal):
        return _literal_type(node.value)
    if isinstance(node, ListLiteral):
        kinds = {_literal_type(v) for v in node.items}
        if len(kinds) > 1:
            raise ExpressionError("a list must hold only strings or only numbers")
        return f"list[{kinds.pop()}]"
    if isinstance(node, Name):
        if node.path[0] == "signal" and len(node.path) == 3 and node.path[1] not in KNOWN_SIGNALS:
            raise UnknownSignalError(
                f"unknown signal {node.path[1]!r} in {node.dotted!r}; "
                f"known: {', '.join(sorted(KNOWN_SIGNALS))}"
            )
        kind = resolve(node.dotted)
        if kind is None:
            raise ExpressionError(f"unknown name {node.dotted!r}")
        return "list[string]" if kind == "list" else kind
    if isinstance(node, Call):
        allowed = FUNCTIONS[node.function]
        if not _argument_ok(node.function, node.argument):
            what = {"has_signal": "signal", "source_degraded": "source"}.get(node.function, "level")
            error = UnknownSignalError if what == "signal" else ExpressionError
            known = ", ".join(sorted(allowed) if what != "level" else LEVELS)
            if what == "signal":
                known += ", or sigma.<rule> for a Sigma detection"
            raise error(f"unknown {what} {node.argument!r} in {node.function}(); known: {known}")
        return "bool"
    if isinstance(node, Not):
        _require_bool(node.operand, resolve, "'not'")
        return "bool"
    if isinstance(node, BoolOp):
        for operand in node.operands:
            _require_bool(operand, resolve, f"'{node.op}'")
        return "bool"
    left, right = _type_of(node.left, resolve), _type_of(node.right, resolve)
    if node.op in ("in", "not_in"):
        if not right.startswith("list["):
            raise ExpressionError("the right side of 'in' must be a list like ['a', 'b']")
        element = right[5:-1]
        if left != element:
            raise ExpressionError(f"cannot look for a {left} in a list of {element}s")
        return "bool"
    if node.op in ("<", "<=", ">", ">="):
        if left != "number" or right != "number":
            raise ExpressionError(f"'{node.op}' compares numbers, not {left} and {right}")
        return "bool"
    if "null" not in (left, right) and left != right:
        raise ExpressionError(f"cannot compare {left} with {right} using '{node.op}'")
    if left.startswith("list[") or right.startswith("list["):
        raise ExpressionError("lists can only be used with 'in'")
    return "bool"


def _require_bool(node: Node, resolve: Callable[[str], str | None], where: str) -> None:
    kind = _type_of(node, resolve)
    if kind != "bool":
        raise ExpressionError(f"{where} needs a condition, got a {kind}")


# --- compiled expression ----------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A parsed, type-checked condition: picklable, so it ships to Spark executors."""

    source: str
    tree: Node
    names: frozenset[str] = field(default_factory=frozenset)
    signals: frozenset[str] = field(default_factory=frozenset)
    sources: frozenset[str] = field(default_factory=frozenset)

    @property
    def unconditional(self) -> bool:
        return isinstance(self.tree, Literal) and self.tree.value is True

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        return _truth(_eval(self.tree, context))


def walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, Compare):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Not):
        yield from walk(node.operand)
    elif isinstance(node, BoolOp):
        for operand in node.operands:
            yield from walk(operand)


def compile_expression(
    text: str, resolve: Callable[[str], str | None] = variable_type
) -> Expression:
    """Parse and type-check `text`; raises ExpressionError with a position on any problem."""
    tree = _Parser(text).parse()
    _require_bool(tree, resolve, "a tier condition")
    names = {n.dotted for n in walk(tree) if isinstance(n, Name)}
    signals = {c.argument for c in walk(tree) if isinstance(c, Call) and c.function == "has_signal"}
    signals |= {n.split(".")[1] for n in names if n.startswith("signal.")}
    sources = {
        c.argument for c in walk(tree) if isinstance(c, Call) and c.function == "source_degraded"
    }
    return Expression(text, tree, frozenset(names), frozenset(signals), frozenset(sources))


# --- interpreter ------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    return value is True


def lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Follow `path` through nested dicts by key; anything else (or a miss) is None."""
    node: Any = context
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if isinstance(node, (str, int, float, bool, list, tuple, type(None))) else None


def _eval(node: Node, ctx: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, ListLiteral):
        return node.items
    if isinstance(node, Name):
        return lookup(ctx, node.path)
    if isinstance(node, Call):
        if node.function == "has_signal":
            return node.argument in (ctx.get("signals") or ())
        if node.function == "detection":
            return _detection_at_least(ctx, level_rank(node.argument))
        return node.argument in (ctx.get("degraded_sources") or ())
    if isinstance(node, Not):
        return not _truth(_eval(node.operand, ctx))
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_truth(_eval(o, ctx)) for o in node.operands)
        return any(_truth(_eval(o, ctx)) for o in node.operands)
    left, right = _eval(node.left, ctx), _eval(node.right, ctx)
    if node.op in ("in", "not_in"):
        if left is None or right is None:
            return False
        found = left in right
        return found if node.op == "in" else not found
    if node.op == "==":
        return left == right if (left is not None and right is not None) else left is right
    if node.op == "!=":
        if left is None or right is None:
            return (left is None) != (right is None) and _is_null_literal(node)
        return left != right
    if (
        left is None
        or right is None
        or isinstance(left, (bool, str))
        or isinstance(right, (bool, str))
    ):
        return False
    if node.op == "<":
        return left < right
    if node.op == "<=":
        return left <= right
    if node.op == ">":
        return left > right
    return left >= right


def _detection_at_least(ctx: Mapping[str, Any], rank: int) -> bool:
    """A detection signal whose level (its threshold, as a rank) is `rank` or above."""
    signals = ctx.get("signal")
    if not isinstance(signals, Mapping):
        return False
    for name, fields in signals.items():
        if not isinstance(name, str) or not is_detection_signal(name):
            continue
        threshold = fields.get("threshold") if isinstance(fields, Mapping) else None
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            continue
        if threshold >= rank:
            return True
    return False


def _is_null_literal(node: Compare) -> bool:
    return any(isinstance(n, Literal) and n.value is None for n in (node.left, node.right))
