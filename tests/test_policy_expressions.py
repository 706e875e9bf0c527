"""The policy condition language: precedence, types, null semantics, and hostile input."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.policy.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    BoolOp,
    Compare,
    ExpressionError,
    Not,
    UnknownSignalError,
    compile_expression,
)

CTX = {
    "risk": 92,
    "risk_today": None,
    "entity_type": "user",
    "user_type": "admin",
    "privileged": True,
    "asset_criticality": None,
    "signals": ["impossible_travel", "new_device"],
    "degraded_sources": ["windows"],
    "signal": {"impossible_travel": {"value": 1843.0, "threshold": 900.0, "source": "idp"}},
}


def ev(text: str, ctx: dict[str, object] | None = None) -> bool:
    return compile_expression(text).evaluate(CTX if ctx is None else ctx)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("risk >= 90", True),
        ("risk > 92", False),
        ("risk == 92 and user_type == 'admin'", True),
        ("risk < 50 or has_signal('impossible_travel')", True),
        ("has_signal('new_country')", False),
        ("not has_signal('new_country')", True),
        ("user_type in ['admin', 'service']", True),
        ("user_type not in ['admin', 'service']", False),
        ("'windows' in degraded_sources", True),
        ("source_degraded('idp')", False),
        ("source_degraded('windows')", True),
        ("privileged", True),
        ("signal.impossible_travel.value >= 1e3", True),
        ('signal.impossible_travel.source == "idp"', True),
        ("risk >= -1", True),
        ("true", True),
        ("false or (risk >= 90 and (privileged))", True),
    ],
)
def test_evaluates(text: str, expected: bool) -> None:
    assert ev(text) is expected


def test_precedence_not_binds_tighter_than_and_tighter_than_or() -> None:
    tree = compile_expression("not privileged and risk > 1 or has_signal('off_hours')").tree
    assert isinstance(tree, BoolOp) and tree.op == "or"
    left = tree.operands[0]
    assert isinstance(left, BoolOp) and left.op == "and"
    assert isinstance(left.operands[0], Not)
    assert isinstance(left.operands[1], Compare)
    # a or b and c == a or (b and c): true via `a` even though `c` is false
    assert ev("risk > 1 or risk > 1000 and false") is True
    assert ev("(risk > 1 or risk > 1000) and false") is False


def test_missing_values_make_comparisons_false_except_null_checks() -> None:
    assert ev("risk_today >= 0") is False
    assert ev("risk_today < 0") is False
    assert ev("asset_criticality != 'critical'") is False
    assert ev("asset_criticality == null") is True
    assert ev("asset_criticality != null") is False
    assert ev("user_type != null") is True
    assert ev("signal.new_country.value > 0") is False  # absent signal
    assert ev("privileged", {"privileged": None}) is False


def test_compiled_expression_pickles_for_executors() -> None:
    expr = compile_expression("risk >= 90 and has_signal('impossible_travel')")
    clone = pickle.loads(pickle.dumps(expr))
    assert clone.evaluate(CTX) is True
    assert clone.signals == {"impossible_travel"}
    assert clone.names == {"risk"}


def test_dotted_names_read_dict_keys_only() -> None:
    class Sneaky:
        value = 10**9

    ctx = {"risk": 1, "signal": {"impossible_travel": Sneaky()}}
    assert ev("signal.impossible_travel.value > 0", ctx) is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("risk >=", "expected a value"),
        ("risk = 90", "use =="),
        ("risk >= 90 && privileged", "use 'and'"),
        ("risk >= 90 || privileged", "use 'or'"),
        ("risk > 1 > 0", "cannot be chained"),
        ("(risk > 1", "expected ')'"),
        ("risk > 1)", "expected 'and', 'or' or the end"),
        ("'unterminated", "unterminated string"),
        ("rsk >= 90", "unknown name 'rsk'"),
        ("risk >= 'high'", "compares numbers"),
        ("user_type == 3", "cannot compare string with number"),
        ("risk", "needs a condition"),
        ("risk and privileged", "needs a condition"),
        ("user_type in ['a', 1]", "only strings or only numbers"),
        ("user_type in []", "empty list"),
        ("risk in degraded_sources", "cannot look for a number"),
        ("user_type in 'admin'", "must be a list"),
        ("lower(user_type) == 'admin'", "unknown function 'lower'"),
        ("has_signal(user_type)", "takes one quoted name"),
        ("source_degraded('splunk')", "unknown source 'splunk'"),
        ("90risk > 1", "after number"),
    ],
)
def test_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert message in str(info.value)


def test_unknown_signal_is_its_own_error() -> None:
    with pytest.raises(UnknownSignalError, match="impossible_travle"):
        compile_expression("has_signal('impossible_travle')")
    with pytest.raises(UnknownSignalError, match="exfil"):
        compile_expression("signal.exfil.value > 1")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('id')",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "risk.__class__",
        "signal.__dict__ == 1",
        "eval('1')",
        "exec('import os')",
        "open('/etc/passwd')",
        "getattr(risk, 'real') > 0",
        "lambda: 1",
        "[x for x in signals]",
        "risk if true else 0",
        "{'a': 1}",
        "risk ** 9999999 > 1",
        "f'{risk}' == '1'",
        "risk >= 90; import os",
        "`id`",
        "has_signal('impossible_travel').__class__",
    ],
)
def test_hostile_inputs_never_reach_python(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(text)


def test_huge_expression_is_refused_before_parsing() -> None:
    text = " or ".join(["risk > 1"] * 400)
    assert len(text) > MAX_LENGTH
    with pytest.raises(ExpressionError, match="characters; the limit"):
        compile_expression(text)


def test_too_many_tokens_is_refused() -> None:
    text = "risk in [" + ",".join("1" for _ in range(300)) + "]"
    with pytest.raises(ExpressionError, match=r"tokens|list has more"):
        compile_expression(text)


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1),
        "not " * (MAX_DEPTH + 1) + "true",
        "(" * 400,
    ],
)
def test_deep_nesting_is_a_clear_error_not_a_recursion_crash(text: str) -> None:
    with pytest.raises(ExpressionError, match=r"nested deeper|tokens"):
        compile_expression(text)


def test_nesting_within_the_limit_works() -> None:
    depth = MAX_DEPTH - 1
    assert ev("(" * depth + "risk > 1" + ")" * depth) is True


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=120))
def test_any_text_either_compiles_or_raises_expression_error(text: str) -> None:
    try:
        expr = compile_expression(text)
    except ExpressionError:
        return
    assert isinstance(expr.evaluate(CTX), bool)


TOKENS = st.sampled_from(
    [
        "risk",
        ">=",
        "90",
        "and",
        "or",
        "not",
        "(",
        ")",
        "privileged",
        "has_signal('new_device')",
        "user_type",
        "==",
        "'admin'",
        "in",
        "['a','b']",
        "[",
        "]",
        ",",
        "-",
        "1.5",
        "null",
        "true",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(TOKENS, max_size=40))
def test_token_soup_either_compiles_or_raises_expression_error(tokens: list[str]) -> None:
    try:
        expr = compile_expression(" ".join(tokens))
    except ExpressionError:
        return
    assert isinstance(expr.evaluate(CTX), bool)
