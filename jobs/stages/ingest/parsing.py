"""What every parser shares: parse outcomes and reasons, JSON parsing with per-key shape errors,
and typed bronze columns with cast errors (Spark SQL expressions only, no Python UDFs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from jobs.core.tables import PARSED, UNPARSEABLE, bronze_fields

# `_parse_error` vocabulary (docs/ingest.md). The TSV reason carries the two counts.
EMPTY_LINE = "empty line"
NUL_BYTES = "NUL bytes in line"
INVALID_JSON = "invalid JSON"
NOT_A_JSON_OBJECT = "not a JSON object"
EMPTY_RECORDS = "empty Records array"
NOT_A_SYSLOG_LINE = "not a syslog line"
NOT_AN_SSHD_LINE = "not an sshd syslog line"

# A value that is absent rather than wrong: Zeek's unset `-`, Windows' `-` placeholder.
UNSET_TOKENS = ("", "-")
_CORRUPT = "__corrupt_record"
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# ---------------------------------------------------------------------------------------
# Shared parsing machinery
# ---------------------------------------------------------------------------------------

Spec = Mapping[str, Any]  # key -> None (string leaf) | Spec (object) | [None] | [Spec] (array)


def _struct(spec: Spec) -> StructType:
    def leaf(sub: Any) -> DataType:
        if sub is None:
            return StringType()
        if isinstance(sub, list):
            return ArrayType(leaf(sub[0]))
        return _struct(sub)

    return StructType([StructField(name, leaf(sub), True) for name, sub in spec.items()])


def line_text(raw: Column) -> Column:
    """The line without a Windows `\\r` before its `\\n` (raw keeps it)."""
    return F.when(raw.endswith("\r"), raw.substr(F.lit(1), F.length(raw) - 1)).otherwise(raw)


def shared_reason() -> Column:
    """Reasons every format shares: nothing on the line, or NUL bytes in it."""
    line = F.col("__line")
    return (
        F.when(F.trim(line) == "", F.lit(EMPTY_LINE))
        # `contains` compares bytes; `instr` walks characters, and an invalid UTF-8 lead
        # byte makes it step over the NUL that follows it.
        .when(line.contains("\u0000"), F.lit(NUL_BYTES))
        .otherwise(F.lit(None).cast("string"))
    )


def quoted(text: Column) -> Column:
    return F.concat(F.lit("'"), F.substring(text, 1, 80), F.lit("'"))


def with_json(df: DataFrame, spec: Spec, line: str = "__line", prefix: str = "__") -> DataFrame:
    """Parse `line` as one JSON object: adds `{prefix}j` (struct), `{prefix}reason`, and
    `{prefix}shape_errors` (array of "key: '...' is not an object/array").

    Leaves are strings, so a number where text was expected (or the reverse) never nulls
    the record: `try_cast` later decides. Objects and arrays are declared, so Spark's
    partial results keep the rest of a record when one of them has the wrong JSON type;
    only then (rare) is the line parsed a second time, with every top-level key as text,
    to tell "valid JSON with a wrongly typed key" from "invalid JSON".
    """
    schema = _struct(spec)
    full = StructType([*schema.fields, StructField(_CORRUPT, StringType(), True)])
    flat = StructType(
        [StructField(f.name, StringType(), True) for f in schema.fields]
        + [StructField(_CORRUPT, StringType(), True)]
    )
    text = F.col(line)
    pre = F.col(f"{prefix}pre")
    j = F.col(f"{prefix}j")
    flat_col = F.col(f"{prefix}flat")
    pre_reason = shared_reason() if line == "__line" else F.lit(None).cast("string")
    df = df.select("*", pre_reason.alias(f"{prefix}pre"))
    parsed = F.when(pre.isNull() & text.isNotNull(), F.from_json(text, full, _JSON_OPTIONS))
    df = df.select("*", parsed.alias(f"{prefix}j"))
    reparsed = F.when(j[_CORRUPT].isNotNull(), F.from_json(text, flat, _JSON_OPTIONS))
    df = df.select("*", reparsed.alias(f"{prefix}flat"))
    looks_like_value = F.ltrim(text).rlike(r'^(\[|"|-?[0-9]|true\b|false\b|null\b)')
    reason = (
        F.when(pre.isNotNull(), pre)
        .when(text.isNull() | j.isNull(), F.lit(INVALID_JSON))
        .when(j[_CORRUPT].isNull(), F.lit(None).cast("string"))
        .when(flat_col[_CORRUPT].isNull(), F.lit(None).cast("string"))
        .when(looks_like_value, F.lit(NOT_A_JSON_OBJECT))
        .otherwise(F.lit(INVALID_JSON))
    )
    nested = [f for f in schema.fields if not isinstance(f.dataType, StringType)]
    shape = [
        F.when(
            flat_col[f.name].isNotNull() & j[f.name].isNull(),
            F.concat(
                F.lit(f"{f.name}: "),
                quoted(flat_col[f.name]),
                F.lit(
                    " is not an array" if isinstance(f.dataType, ArrayType) else " is not an object"
                ),
            ),
        )
        for f in nested
    ]
    found = F.array_compact(F.array(*shape)) if shape else F.array()
    # A wrongly typed key deeper down: Spark nulls it and keeps the rest; say so once.
    fallback = F.array(F.lit("record: a nested value has the wrong JSON type"))
    shape_errors = F.when(
        flat_col[_CORRUPT].isNull() & j[_CORRUPT].isNotNull(),
        F.when(F.size(found) > 0, found).otherwise(fallback),
    ).otherwise(F.array().cast("array<string>"))
    return df.select(
        "*", reason.alias(f"{prefix}reason"), shape_errors.alias(f"{prefix}shape_errors")
    )


def _type_name(data_type: DataType) -> str:
    return data_type.simpleString()


def finish_bronze(
    df: DataFrame,
    source: str,
    texts: Mapping[str, Column],
    event_time: Column,
    raw: Column | None = None,
) -> DataFrame:
    """Typed bronze columns from their text, with `_cast_errors`; null when unparseable.

    `texts` maps each bronze column to its text (or, for array and map columns, the value).
    A non-empty value that does not cast to the column's type is left null and recorded
    as "<column>: '<value>' is not <type>".
    """
    fields = bronze_fields(source)
    # Each text is computed once (regexes, JSON lookups), then cast once, then used.
    df = df.select(
        "*",
        *[texts.get(f.name, F.lit(None).cast("string")).alias(f"__t_{f.name}") for f in fields],
        (raw if raw is not None else F.col("raw")).alias("__raw"),
        event_time.cast("string").alias("__t_event_time_raw"),
    )
    scalar = [f for f in fields if not isinstance(f.dataType, StringType | ArrayType | MapType)]
    df = df.select(
        "*", *[F.col(f"__t_{f.name}").try_cast(f.dataType).alias(f"__v_{f.name}") for f in scalar]
    )
    ok = F.col("__reason").isNull()
    cast_errors = [
        F.when(
            F.col(f"__t_{f.name}").isNotNull()
            & ~F.col(f"__t_{f.name}").isin(*UNSET_TOKENS)
            & F.col(f"__v_{f.name}").isNull(),
            F.concat(
                F.lit(f"{f.name}: "),
                quoted(F.col(f"__t_{f.name}")),
                F.lit(f" is not {_type_name(f.dataType)}"),
            ),
        )
        for f in scalar
    ]
    found = F.array_compact(F.array(*cast_errors)) if cast_errors else F.array()
    all_errors = F.concat(F.col("__shape_errors"), found.cast("array<string>"))
    typed = [
        F.when(ok, F.col(f"__v_{f.name}" if f in scalar else f"__t_{f.name}"))
        .cast(f.dataType)
        .alias(f.name)
        for f in fields
    ]
    return df.select(
        F.col("run_date"),
        F.col("source"),
        F.col("_file"),
        F.col("_line"),
        F.col("_batch_id"),
        F.col("__raw").alias("raw"),
        F.when(ok, F.lit(PARSED)).otherwise(F.lit(UNPARSEABLE)).alias("_parse_status"),
        F.col("__reason").alias("_parse_error"),
        F.when(ok & (F.size(all_errors) > 0), all_errors).alias("_cast_errors"),
        F.when(ok, F.col("__t_event_time_raw")).alias("event_time_raw"),
        *typed,
    )


def start_json(df: DataFrame, spec: Spec) -> DataFrame:
    return with_json(df.select("*", line_text(F.col("raw")).alias("__line")), spec)


def first_of(*columns: Column) -> Column:
    return F.coalesce(*columns) if len(columns) > 1 else columns[0]
