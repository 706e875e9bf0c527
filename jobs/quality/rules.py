"""Expectations as row predicates: for every expectation type the platform supports, which rows
it considers, which fail, and why (the same semantics as Great Expectations, checked against it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.quality.errors import SuiteError

# ---------------------------------------------------------------------------------------
# Rules -> row predicates
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowCheck:
    """Per row: whether the expectation looks at it, whether it fails, and why (text)."""

    considered: Column
    unexpected: Column
    reason: Column


def _c(name: str) -> Column:
    return F.col(f"`{name}`")


def _shown(value: Column) -> Column:
    text = value.cast("string")
    return F.concat(F.lit("'"), F.substring(F.coalesce(text, F.lit("null")), 1, 120), F.lit("'"))


def _not_null(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    if col == "event_time":
        reason = F.when(
            F.col("_event_time_text").isNull(), F.lit("event_time: timestamp missing")
        ).otherwise(
            F.concat(F.lit("event_time: timestamp unparseable "), _shown(F.col("_event_time_text")))
        )
    else:
        reason = F.lit(f"{col} is missing")
    return RowCheck(F.lit(True), _c(col).isNull(), reason)


def _null(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    return RowCheck(
        F.lit(True),
        _c(col).isNotNull(),
        F.concat(F.lit(f"{col}="), _shown(_c(col)), F.lit(" should be empty")),
    )


def _in_set(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    values = list(k.get("value_set") or [])
    ok = _c(col).isin(values) if values else F.lit(False)
    return RowCheck(
        _c(col).isNotNull(),
        ~ok,
        F.concat(F.lit(f"{col}="), _shown(_c(col)), F.lit(" is not one of the expected values")),
    )


def _not_in_set(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    values = list(k.get("value_set") or [])
    bad = _c(col).isin(values) if values else F.lit(False)
    return RowCheck(
        _c(col).isNotNull(),
        bad,
        F.concat(F.lit(f"{col}="), _shown(_c(col)), F.lit(" is a forbidden value")),
    )


def _between(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    lo, hi = k.get("min_value"), k.get("max_value")
    if lo is None and hi is None:
        raise SuiteError(f"expect_column_values_to_be_between({col}): needs min_value or max_value")
    v = _c(col)
    ok = F.lit(True)
    if lo is not None:
        ok = ok & ((v > F.lit(lo)) if k.get("strict_min") else (v >= F.lit(lo)))
    if hi is not None:
        ok = ok & ((v < F.lit(hi)) if k.get("strict_max") else (v <= F.lit(hi)))
    bounds = f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
    return RowCheck(
        v.isNotNull(), ~ok, F.concat(F.lit(f"{col}="), _shown(v), F.lit(f" is outside {bounds}"))
    )


def _match_regex(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    return RowCheck(
        _c(col).isNotNull(),
        ~_c(col).rlike(str(k["regex"])),
        F.concat(F.lit(f"{col}="), _shown(_c(col)), F.lit(" does not have the expected format")),
    )


def _not_match_regex(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    return RowCheck(
        _c(col).isNotNull(),
        _c(col).rlike(str(k["regex"])),
        F.concat(F.lit(f"{col}="), _shown(_c(col)), F.lit(" has a forbidden format")),
    )


def _match_regex_list(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    matches = [_c(col).rlike(str(rx)) for rx in k["regex_list"]]
    combined = matches[0]
    for m in matches[1:]:
        combined = (combined & m) if k.get("match_on", "any") == "all" else (combined | m)
    return RowCheck(
        _c(col).isNotNull(),
        ~combined,
        F.concat(F.lit(f"{col}="), _shown(_c(col)), F.lit(" does not have an expected format")),
    )


def _lengths_between(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    n = F.length(_c(col))
    ok = F.lit(True)
    if k.get("min_value") is not None:
        ok = ok & (n >= F.lit(k["min_value"]))
    if k.get("max_value") is not None:
        ok = ok & (n <= F.lit(k["max_value"]))
    return RowCheck(
        _c(col).isNotNull(),
        ~ok,
        F.concat(F.lit(f"{col} has an unexpected length "), n.cast("string")),
    )


def _unique(k: Mapping[str, Any]) -> RowCheck:
    col = str(k["column"])
    copies = F.count(F.lit(1)).over(Window.partitionBy(_c(col)))
    return RowCheck(
        _c(col).isNotNull(),
        copies > 1,
        F.concat(F.lit(f"{col}="), _shown(_c(col)), F.lit(" is repeated")),
    )


def _compound_unique(k: Mapping[str, Any]) -> RowCheck:
    cols = [str(c) for c in k["column_list"]]
    copies = F.count(F.lit(1)).over(Window.partitionBy(F.struct(*[_c(c) for c in cols])))
    ignore = k.get("ignore_row_if", "all_values_are_missing")
    nulls = [_c(c).isNull() for c in cols]
    all_missing, any_missing = nulls[0], nulls[0]
    for n in nulls[1:]:
        all_missing, any_missing = all_missing & n, any_missing | n
    considered = {"all_values_are_missing": ~all_missing, "any_value_is_missing": ~any_missing}.get(
        ignore, F.lit(True)
    )
    return RowCheck(considered, copies > 1, F.lit(f"({', '.join(cols)}) is repeated"))


def _pair_considered(k: Mapping[str, Any]) -> Column:
    a, b = _c(str(k["column_A"])), _c(str(k["column_B"]))
    ignore = k.get("ignore_row_if", "both_values_are_missing")
    if ignore == "either_value_is_missing":
        return a.isNotNull() & b.isNotNull()
    if ignore == "both_values_are_missing":
        return a.isNotNull() | b.isNotNull()
    return F.lit(True)


def _pair_greater(k: Mapping[str, Any]) -> RowCheck:
    a_name, b_name = str(k["column_A"]), str(k["column_B"])
    a, b = _c(a_name), _c(b_name)
    ok = ((a >= b) | a.eqNullSafe(b)) if k.get("or_equal") else (a > b)
    # a comparison with a missing side is not a failure here, while it is for equality: what
    # Great Expectations on Spark counts (tests/test_validate.py runs both on the same frame)
    return RowCheck(
        _pair_considered(k),
        ~F.coalesce(ok, F.lit(True)),
        F.concat(F.lit(f"{a_name}="), _shown(a), F.lit(f" is below {b_name}="), _shown(b)),
    )


def _pair_equal(k: Mapping[str, Any]) -> RowCheck:
    a_name, b_name = str(k["column_A"]), str(k["column_B"])
    a, b = _c(a_name), _c(b_name)
    return RowCheck(
        _pair_considered(k),
        ~F.coalesce(a == b, F.lit(False)),
        F.concat(F.lit(f"{a_name}="), _shown(a), F.lit(f" differs from {b_name}="), _shown(b)),
    )


UNIQUENESS_TYPES = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")

SUPPORTED_TYPES: dict[str, Callable[[Mapping[str, Any]], RowCheck]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _null,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_match_regex": _match_regex,
    "expect_column_values_to_not_match_regex": _not_match_regex,
    "expect_column_values_to_match_regex_list": _match_regex_list,
    "expect_column_value_lengths_to_be_between": _lengths_between,
    "expect_column_values_to_be_unique": _unique,
    "expect_compound_columns_to_be_unique": _compound_unique,
    "expect_column_pair_values_a_to_be_greater_than_b": _pair_greater,
    "expect_column_pair_values_to_be_equal": _pair_equal,
}


def mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    """Great Expectations' rule: vacuously true on no rows, else the good share >= mostly."""
    if considered <= 0:
        return True
    return (considered - unexpected) / considered >= mostly
