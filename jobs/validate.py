"""Validate: Great Expectations suites over bronze -> `ops.dq_results`, `ops.source_status`.

The suites in `expectations/` (one per source, plus `silver_events` for the silver contract)
are the single definition of what "valid" means:

- Great Expectations runs each source's suite once over the whole date range (one Spark
  batch per source, not one per source and date: see docs/data_quality.md for why and the
  timings) and renders Data Docs;
- every expectation the platform supports is also translated into a per-row Spark
  predicate (`row_check`). Grouping those by `run_date` gives the per-date results in
  `ops.dq_results`, and the stage fails if their totals differ from what GX counted, so
  the per-date numbers and the quarantine (`jobs.normalize`) always match the suite;
- expectations marked `meta.row_level` drive quarantine; `meta.critical` ones mark the
  source `degraded` for a date they fail; `meta.dedup` names the de-duplication key.

Editing a suite file changes what is validated and quarantined with no code change.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.config import Settings, ValidationSettings
from jobs.event_time import event_offset_hours, host_timezones, parse_event_time
from jobs.lake import Lake, require_columns
from jobs.pipeline import PipelineError, RunContext, StageResult
from jobs.schemas import DQ_RESULTS, SOURCE_STATUS, bronze_schema
from jobs.spark import Checkpoints

__all__ = [
    "BRONZE_SUITES",
    "SILVER_SUITE",
    "SUPPORTED_TYPES",
    "GreatExpectationsRunner",
    "PhaseClock",
    "RowCheck",
    "Rule",
    "Suite",
    "SuiteError",
    "daily_counts",
    "default_suites_dir",
    "delivered_counts",
    "dq_result_rows",
    "load_suite",
    "prepare_rows",
    "row_check",
    "run_validate",
    "runner_for",
    "source_status_rows",
    "suite_parameters",
    "suites_dir",
    "volume_rows",
    "write_dq_results",
]

log = logging.getLogger(__name__)

BRONZE_SUITES = ("idp", "windows", "zeek_conn", "zeek_dns", "cloudtrail", "sshd")
SILVER_SUITE = "silver_events"

# Checks of ingest, not of content: every source gets them, ahead of its suite's rules.
PARSER_RULE = "parser"
TYPE_CHECK_RULE = "type_check"
# A date is degraded when more than this share of its rows could not be parsed or typed.
INGEST_MOSTLY = 0.98

PARSED = "parsed"
_MISSING_TEXT = ("", "-")


class SuiteError(ValueError):
    """A suite file that is missing, malformed or uses an expectation the platform cannot
    turn into a row predicate."""


# ---------------------------------------------------------------------------------------
# Suites: files -> rules
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite, with the platform's reading of its `meta`."""

    suite: str
    index: int
    type: str
    kwargs: Mapping[str, Any]
    critical: bool
    row_level: bool
    dedup: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        k = self.kwargs
        if "column" in k:
            return (str(k["column"]),)
        if "column_A" in k:
            return (str(k["column_A"]), str(k["column_B"]))
        if "column_list" in k:
            return tuple(str(c) for c in k["column_list"])
        return ()

    @property
    def name(self) -> str:
        """The quarantine `rule` and the `ops.dq_results.expectation`, e.g.
        `windows.expect_column_values_to_not_be_null(event_time)`."""
        suffix = f"[{self.meta['id']}]" if self.meta.get("id") else ""
        return f"{self.suite}.{self.type}({','.join(self.columns)}){suffix}"

    @property
    def mostly(self) -> float:
        return float(self.kwargs.get("mostly", 1.0))


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    document: Mapping[str, Any]
    rules: tuple[Rule, ...]

    @property
    def row_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.row_level)

    @property
    def dedup_key(self) -> tuple[str, ...]:
        """Columns of the `meta.dedup` expectation, without `run_date` (dedup is per date)."""
        for rule in self.rules:
            if rule.dedup:
                return tuple(c for c in rule.columns if c != "run_date")
        return ()


def default_suites_dir() -> Path:
    """The repository's `expectations/` folder, found next to the `jobs` package."""
    return Path(__file__).resolve().parent.parent / "expectations"


def suites_dir(settings: Settings) -> Path:
    configured = settings.validation.suites_dir
    return Path(configured) if configured else default_suites_dir()


def _bool_meta(meta: Mapping[str, Any], key: str, where: str) -> bool:
    value = meta.get(key, False)
    if not isinstance(value, bool):
        raise SuiteError(f"{where}: meta.{key} must be true or false, got {value!r}")
    return value


def load_suite(directory: Path, name: str) -> Suite:
    """Read `<directory>/<name>.json` (Great Expectations 1.x suite JSON) into rules."""
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise SuiteError(f"expectation suite not found: {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(document, dict) or not isinstance(document.get("expectations"), list):
        raise SuiteError(f"{path}: a suite is an object with an 'expectations' list")
    if document.get("name") != name:
        raise SuiteError(f"{path}: suite name {document.get('name')!r} must be {name!r}")
    rules: list[Rule] = []
    for i, item in enumerate(document["expectations"]):
        where = f"{path} expectation #{i + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise SuiteError(f"{where}: needs a 'type'")
        kwargs = item.get("kwargs") or {}
        meta = item.get("meta") or {}
        if not isinstance(kwargs, dict) or not isinstance(meta, dict):
            raise SuiteError(f"{where}: 'kwargs' and 'meta' must be objects")
        if item["type"] not in SUPPORTED_TYPES:
            raise SuiteError(
                f"{where}: {item['type']} has no row predicate; supported: {', '.join(sorted(SUPPORTED_TYPES))}"
            )
        if kwargs.get("row_condition") is not None:
            raise SuiteError(f"{where}: row_condition is not supported")
        rule = Rule(
            suite=name,
            index=i,
            type=item["type"],
            kwargs=kwargs,
            critical=_bool_meta(meta, "critical", where),
            row_level=_bool_meta(meta, "row_level", where),
            dedup=_bool_meta(meta, "dedup", where),
            meta=meta,
        )
        if rule.dedup and rule.type not in _UNIQUENESS:
            raise SuiteError(f"{where}: meta.dedup belongs on a uniqueness expectation")
        if rule.row_level and rule.type in _UNIQUENESS:
            raise SuiteError(
                f"{where}: a uniqueness expectation cannot be row_level (it would quarantine the "
                "first delivery too); mark it dedup instead"
            )
        rules.append(rule)
    names = [r.name for r in rules]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise SuiteError(
            f"{path}: two expectations named {clashes[0]}; tell them apart with meta.id"
        )
    if sum(r.dedup for r in rules) > 1:
        raise SuiteError(f"{path}: only one expectation may carry meta.dedup")
    return Suite(name=name, path=path, document=document, rules=tuple(rules))


def load_suites(directory: Path, names: Iterable[str]) -> dict[str, Suite]:
    return {n: load_suite(directory, n) for n in names}


def suite_parameters(validation: ValidationSettings) -> dict[str, float]:
    """Values for the suites' `{"$PARAMETER": ...}` placeholders, from configuration."""
    return {
        "earliest_offset_hours": -float(validation.late_tolerance_hours),
        "latest_offset_hours": 24.0 + validation.future_tolerance_minutes / 60.0,
        "volume_drop_ratio": float(validation.volume_drop_ratio),
    }


def resolve_kwargs(
    kwargs: Mapping[str, Any], params: Mapping[str, Any], where: str
) -> dict[str, Any]:
    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
            name = value["$PARAMETER"]
            if name not in params:
                raise SuiteError(
                    f"{where}: unknown suite parameter {name!r}; known: {', '.join(sorted(params))}"
                )
            return params[name]
        return value

    return {k: resolve(v) for k, v in kwargs.items()}


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
    return RowCheck(
        _pair_considered(k),
        ~F.coalesce(ok, F.lit(False)),
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


_UNIQUENESS = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")

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


def row_check(rule: Rule, params: Mapping[str, Any]) -> RowCheck:
    """The Spark predicate of one expectation (null-safe: never null)."""
    kwargs = resolve_kwargs(rule.kwargs, params, rule.name)
    check = SUPPORTED_TYPES[rule.type](kwargs)
    considered = F.coalesce(check.considered, F.lit(False))
    return RowCheck(
        considered, considered & F.coalesce(check.unexpected, F.lit(False)), check.reason
    )


def mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    """Great Expectations' rule: vacuously true on no rows, else the good share >= mostly."""
    if considered <= 0:
        return True
    return (considered - unexpected) / considered >= mostly


# ---------------------------------------------------------------------------------------
# Rows -> the frame the suites look at
# ---------------------------------------------------------------------------------------


def _text(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed.isin(*_MISSING_TEXT), F.lit(None).cast("string")).otherwise(trimmed)


def _host_column(source: str) -> Column | None:
    if source == "windows":
        return F.col("hostname")
    if source == "sshd":
        return F.col("host")
    return None


def prepare_rows(
    bronze: DataFrame,
    source: str,
    host_tz: DataFrame | None,
    volume: DataFrame | None = None,
) -> DataFrame:
    """Bronze rows plus what the suites need beyond bronze: `event_time` (UTC),
    `event_time_offset_hours`, `_event_time_text`, `_host_tz`, `_day_rows`, `_day_min_rows`,
    and `_candidate` (parsed and typed, so the suite applies).

    Windows reads `EventTime` (host local time) only when `@timestamp` is absent; a present
    but unparseable `@timestamp` stays unparseable (the record is suspect).
    """
    df = bronze
    host = _host_column(source)
    if host is not None and host_tz is not None:
        tz = host_tz.select(
            F.col("host_key").alias("_host_key"), F.col("host_tz").alias("_host_tz")
        )
        df = df.withColumn("_host_key", F.lower(F.trim(host))).join(
            F.broadcast(tz), "_host_key", "left"
        )
        df = df.drop("_host_key")
    else:
        df = df.withColumn("_host_tz", F.lit(None).cast("string"))
    text = _text(F.col("event_time_raw"))
    if source == "windows":
        text = F.coalesce(text, _text(F.col("event_time_local")))
    df = df.withColumn("_event_time_text", text)
    df = df.withColumn(
        "event_time",
        parse_event_time(F.col("_event_time_text"), F.col("run_date"), F.col("_host_tz")),
    )
    df = df.withColumn(
        "event_time_offset_hours", event_offset_hours(F.col("event_time"), F.col("run_date"))
    )
    if volume is not None:
        df = df.join(
            F.broadcast(volume.select("run_date", "_day_rows", "_day_min_rows")), "run_date", "left"
        )
    else:
        df = df.withColumn("_day_rows", F.lit(None).cast("long")).withColumn(
            "_day_min_rows", F.lit(None).cast("double")
        )
    cast_errors = F.coalesce(F.size(F.col("_cast_errors")), F.lit(0))
    return df.withColumn("_candidate", (F.col("_parse_status") == PARSED) & (cast_errors <= 0))


# ---------------------------------------------------------------------------------------
# Volume and per-date counts
# ---------------------------------------------------------------------------------------


def delivered_counts(bronze: DataFrame) -> dict[date, dict[str, int]]:
    """Per run date: bronze rows, unparseable rows and rows with cast errors."""
    rows = (
        bronze.groupBy("run_date")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((F.col("_parse_status") != PARSED).cast("long")).alias("unparseable"),
            F.sum(
                (
                    (F.col("_parse_status") == PARSED)
                    & (F.coalesce(F.size("_cast_errors"), F.lit(0)) > 0)
                ).cast("long")
            ).alias("cast_errors"),
        )
        .collect()
    )
    return {
        r["run_date"]: {
            "rows": int(r["rows"]),
            "unparseable": int(r["unparseable"] or 0),
            "cast_errors": int(r["cast_errors"] or 0),
        }
        for r in rows
    }


@dataclass(frozen=True)
class Volume:
    run_date: date
    rows: int
    history_median: float | None
    history_days: int
    min_rows: float | None
    basis: str = "days"  # what the history counts: weekdays, weekend days or days


def _day_type(d: date) -> str:
    return "weekend" if d.weekday() >= 5 else "weekday"


# How far back `same_day_type` looks for enough days of the same type (7 weekend days).
SAME_TYPE_LOOKBACK_DAYS = 35


def volume_lookback_days(validation: ValidationSettings) -> int:
    if validation.volume_compare == "same_day_type":
        return max(validation.volume_history_days, SAME_TYPE_LOOKBACK_DAYS)
    return validation.volume_history_days


def volume_rows(
    counts: Mapping[date, Mapping[str, int]], dates: Sequence[date], validation: ValidationSettings
) -> list[Volume]:
    """The volume gate's inputs per date: delivered rows vs the trailing median.

    The history is the last `volume_history_days` delivered days before the date, of the
    same day type (weekday / weekend: office telemetry drops by 80% at weekends) unless
    `volume_compare` is `all_days` (then: the calendar days of that window). Days with no
    delivery do not count (an outage is not normal volume). With fewer than
    `volume_min_history_days` days of history the gate is skipped (`min_rows` None).
    """
    out = []
    same_type = validation.volume_compare == "same_day_type"
    for d in dates:
        history: list[int] = []
        for i in range(1, volume_lookback_days(validation) + 1):
            h = d - timedelta(days=i)
            if len(history) >= validation.volume_history_days:
                break
            if same_type and _day_type(h) != _day_type(d):
                continue
            if h in counts and counts[h]["rows"] > 0:
                history.append(counts[h]["rows"])
        median = float(statistics.median(history)) if history else None
        enough = len(history) >= validation.volume_min_history_days
        min_rows = (
            validation.volume_drop_ratio * median if (median is not None and enough) else None
        )
        basis = (
            ("weekend days" if _day_type(d) == "weekend" else "weekdays") if same_type else "days"
        )
        out.append(
            Volume(d, counts.get(d, {}).get("rows", 0), median, len(history), min_rows, basis)
        )
    return out


def volume_frame(spark: SparkSession, volumes: Sequence[Volume]) -> DataFrame:
    return spark.createDataFrame(
        [(v.run_date, v.rows, v.min_rows) for v in volumes],
        "run_date date, _day_rows long, _day_min_rows double",
    )


def daily_counts(
    candidates: DataFrame,
    rules: Sequence[Rule],
    params: Mapping[str, Any],
    by: Sequence[str] = ("run_date",),
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """One aggregation: per group, rows and (considered, unexpected) per rule."""
    checks = {r.name: row_check(r, params) for r in rules}
    flagged = candidates
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for i, rule in enumerate(rules):
        check = checks[rule.name]
        flagged = flagged.withColumn(f"__c{i}", check.considered.cast("long")).withColumn(
            f"__u{i}", check.unexpected.cast("long")
        )
        aggs += [F.sum(f"__c{i}").alias(f"__c{i}"), F.sum(f"__u{i}").alias(f"__u{i}")]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in flagged.groupBy(*by).agg(*aggs).collect():
        key = tuple(row[c] for c in by)
        out[key] = {
            "rows": int(row["__rows"]),
            **{
                rule.name: (int(row[f"__c{i}"] or 0), int(row[f"__u{i}"] or 0))
                for i, rule in enumerate(rules)
            },
        }
    return out


# ---------------------------------------------------------------------------------------
# Great Expectations
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GxOutcome:
    success: bool
    unexpected_count: int | None
    element_count: int | None
    exception: str | None = None


class GreatExpectationsRunner:
    """One ephemeral Great Expectations context for a stage run.

    Validation results and suites are kept in `<docs_dir>/.gx/` so the Data Docs index in
    `<docs_dir>/index.html` lists every run and both stages (validate, normalize).
    """

    SITE = "policylake"

    def __init__(
        self, docs_dir: str | None, result_format: str = "SUMMARY", samples: int = 0
    ) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self._gx = gx
        # Counts without sample values: GX then skips one Spark job per expectation.
        self.result_format: dict[str, Any] = {
            "result_format": result_format,
            "partial_unexpected_count": samples,
        }
        self.docs_dir = Path(docs_dir) if docs_dir and "://" not in docs_dir else None
        if docs_dir and self.docs_dir is None:
            log.warning("Data Docs need a local folder; %s is not one, so none are built", docs_dir)
        defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
        stores = dict(defaults.stores)
        sites: dict[str, Any] = {}
        if self.docs_dir is not None:
            store_root = self.docs_dir / ".gx"
            for store, sub in (
                (defaults.expectations_store_name, "expectations"),
                (defaults.validation_results_store_name, "validations"),
            ):
                stores[store] = {
                    **stores[store],
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(store_root / sub),
                    },
                }
            sites[self.SITE] = {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(self.docs_dir),
                },
            }
        config = DataContextConfig(
            store_backend_defaults=defaults,
            stores=stores,
            data_docs_sites=sites,
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        # The stage checkpoints the frame itself; GX must not persist a second copy.
        self.datasource = self.context.data_sources.add_spark(
            name="policylake_spark", persist=False
        )
        self._validated: list[Any] = []

    def validate(
        self, suite: Suite, df: DataFrame, params: Mapping[str, Any], run_name: str
    ) -> dict[str, GxOutcome]:
        """Run `suite` on `df` (one batch); outcomes by rule name."""
        from great_expectations.core.run_identifier import RunIdentifier

        gx = self._gx
        expectations = []
        for rule in suite.rules:
            item = dict(suite.document["expectations"][rule.index])
            item["meta"] = {**rule.meta, "rule": rule.name}
            item.pop("id", None)
            expectations.append(item)
        gx_suite = gx.ExpectationSuite(
            name=suite.name, expectations=expectations, meta=dict(suite.document.get("meta") or {})
        )
        if len(gx_suite.expectations) != len(suite.rules):
            raise SuiteError(
                f"{suite.path}: Great Expectations rejected some expectations (see the log)"
            )
        gx_suite = self.context.suites.add_or_update(gx_suite)
        asset = self.datasource.add_dataframe_asset(name=suite.name)
        batch = asset.add_batch_definition_whole_dataframe("run_range")
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": df},
            expectation_parameters=dict(params),
            result_format=self.result_format,
            run_id=RunIdentifier(run_name=run_name),
        )
        self._validated.append(result)
        outcomes: dict[str, GxOutcome] = {}
        for r in result.results:
            config = r.expectation_config
            name = ((config.meta if config is not None else None) or {}).get("rule")
            info = r.result or {}
            exc = (r.exception_info or {}).get("exception_message") if r.exception_info else None
            if isinstance(r.exception_info, dict) and not r.exception_info.get("raised_exception"):
                exc = None
            outcomes[str(name)] = GxOutcome(
                success=bool(r.success),
                unexpected_count=info.get("unexpected_count"),
                element_count=info.get("element_count"),
                exception=exc,
            )
        return outcomes

    def build_docs(self) -> Path | None:
        """Render this run's validation results (and refresh the index)."""
        if self.docs_dir is None or not self._validated:
            return None
        self.context.build_data_docs(site_names=[self.SITE])
        return self.docs_dir / "index.html"


def runner_for(settings: Settings) -> GreatExpectationsRunner:
    v = settings.validation
    return GreatExpectationsRunner(
        settings.paths.data_docs_dir, v.result_format, v.unexpected_samples
    )


def cross_check(
    suite: Suite,
    outcomes: Mapping[str, GxOutcome],
    totals: Mapping[str, tuple[int, int]],
    rows: int,
) -> None:
    """Fail when a row predicate and Great Expectations disagree: then the quarantine and
    the per-date results would not be what the suite says."""
    for rule in suite.rules:
        gx = outcomes.get(rule.name)
        if gx is None:
            raise PipelineError(
                f"validate {suite.name}: Great Expectations returned no result for {rule.name}"
            )
        if gx.exception:
            raise PipelineError(
                f"validate {suite.name}: {rule.name} raised in Great Expectations: {gx.exception}"
            )
        considered, unexpected = totals.get(rule.name, (0, 0))
        ours = mostly_success(considered, unexpected, rule.mostly) if rows else True
        if gx.unexpected_count is not None and int(gx.unexpected_count) != unexpected:
            raise PipelineError(
                f"validate {suite.name}: Great Expectations counted {gx.unexpected_count} unexpected rows for "
                f"{rule.name}, the row predicate {unexpected}; fix the predicate before trusting the quarantine"
            )
        if gx.success != ours:
            raise PipelineError(
                f"validate {suite.name}: Great Expectations says {rule.name} "
                f"{'passed' if gx.success else 'failed'}, the row predicate the opposite"
            )


# ---------------------------------------------------------------------------------------
# Results, status
# ---------------------------------------------------------------------------------------


def dq_result_rows(
    suite: Suite,
    source: str,
    dates: Sequence[date],
    counts: Mapping[date, Mapping[str, Any]],
    params: Mapping[str, Any],
    delivered: Mapping[date, Mapping[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """`ops.dq_results` rows: per date, the ingest checks and every rule of the suite."""
    out: list[dict[str, Any]] = []
    for d in dates:
        day = counts.get(d, {})
        if delivered is not None:
            got = delivered.get(d, {"rows": 0, "unparseable": 0, "cast_errors": 0})
            for name, bad in (
                (PARSER_RULE, got["unparseable"]),
                (TYPE_CHECK_RULE, got["cast_errors"]),
            ):
                out.append(
                    {
                        "run_date": d,
                        "source": source,
                        "suite": suite.name,
                        "expectation": name,
                        "column": None,
                        "success": mostly_success(got["rows"], bad, INGEST_MOSTLY),
                        "unexpected_count": bad,
                        "element_count": got["rows"],
                        "critical": True,
                        "details": json.dumps(
                            {"mostly": INGEST_MOSTLY, "considered": got["rows"]}, sort_keys=True
                        ),
                    }
                )
        rows = int(day.get("rows", 0))
        for rule in suite.rules:
            considered, unexpected = day.get(rule.name, (0, 0))
            details = {
                "kwargs": resolve_kwargs(rule.kwargs, params, rule.name),
                "mostly": rule.mostly,
                "considered": considered,
                "unexpected_percent": round(100.0 * unexpected / considered, 4)
                if considered
                else 0.0,
                "row_level": rule.row_level,
            }
            out.append(
                {
                    "run_date": d,
                    "source": source,
                    "suite": suite.name,
                    "expectation": rule.name,
                    "column": ",".join(rule.columns) or None,
                    "success": mostly_success(considered, unexpected, rule.mostly),
                    "unexpected_count": unexpected,
                    "element_count": rows,
                    "critical": rule.critical,
                    "details": json.dumps(details, sort_keys=True, default=str),
                }
            )
    return out


def source_status_rows(
    source: str,
    dates: Sequence[date],
    results: Sequence[Mapping[str, Any]],
    volumes: Sequence[Volume],
) -> list[dict[str, Any]]:
    """`ok`, `degraded` (a critical expectation failed, volume included) or `missing`."""
    by_date: dict[date, list[Mapping[str, Any]]] = {}
    for r in results:
        by_date.setdefault(r["run_date"], []).append(r)
    vol = {v.run_date: v for v in volumes}
    out = []
    for d in dates:
        v = vol.get(d)
        if v is None or v.rows == 0:
            out.append(
                {
                    "run_date": d,
                    "source": source,
                    "status": "missing",
                    "reasons": [f"no {source} data delivered for {d.isoformat()}"],
                }
            )
            continue
        reasons = []
        for r in by_date.get(d, []):
            if not r["critical"] or r["success"]:
                continue
            if (
                r["expectation"].endswith("(_day_rows,_day_min_rows)")
                and v.history_median is not None
            ):
                reasons.append(
                    f"volume: {v.rows} rows < {v.min_rows:g} "
                    f"({v.history_median:g} median of the last {v.history_days} delivered {v.basis})"
                )
            else:
                share = (
                    100.0
                    * r["unexpected_count"]
                    / max(json.loads(r["details"]).get("considered", 0), 1)
                )
                reasons.append(
                    f"{r['expectation']}: {r['unexpected_count']} unexpected ({share:.2f}%)"
                )
        out.append(
            {
                "run_date": d,
                "source": source,
                "status": "degraded" if reasons else "ok",
                "reasons": reasons,
            }
        )
    return out


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


def read_bronze(
    lake: Lake, source: str, dates: Sequence[date], first: date | None = None
) -> DataFrame:
    """`bronze.<source>` for `dates` (or every date from `first` to the last of `dates`),
    or an empty frame of its schema if the table does not exist."""
    table = f"bronze.{source}"
    if not lake.exists(table):
        return lake.spark.createDataFrame([], bronze_schema(source))
    if first is None:
        df = lake.read_dates(table, dates)
    else:
        df = lake.read(table).where(F.col("run_date").between(F.lit(first), F.lit(max(dates))))
    return require_columns(df, bronze_schema(source), f"read {table}")


def reference_host_timezones(spark: SparkSession, settings: Settings) -> DataFrame:
    from jobs.reference import asset_inventory

    return host_timezones(asset_inventory(spark, settings))


def run_name(dates: Sequence[date]) -> str:
    first, last = min(dates), max(dates)
    return first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"


def write_dq_results(
    lake: Lake, rows: list[dict[str, Any]], dates: list[date], suites: Iterable[str]
) -> None:
    """Replace this stage's suites' rows for `dates`, keeping the other stage's rows."""
    spark = lake.spark
    mine = set(suites)
    kept: list[tuple[Any, ...]] = []
    if lake.exists("ops.dq_results"):
        kept = [
            tuple(r[n] for n in DQ_RESULTS.names)
            for r in lake.read_dates("ops.dq_results", dates).collect()
            if r["suite"] not in mine
        ]
    fresh = [tuple(r[n] for n in DQ_RESULTS.names) for r in rows]
    df = spark.createDataFrame(kept + fresh, DQ_RESULTS)
    lake.replace_dates(require_columns(df, DQ_RESULTS, "ops.dq_results"), "ops.dq_results", dates)


class PhaseClock:
    """Seconds per phase, for the stage result (where the time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 2)
        self._last = now


def validate_source(
    lake: Lake,
    suite: Suite,
    source: str,
    dates: list[date],
    settings: Settings,
    host_tz: DataFrame,
    gx: GreatExpectationsRunner | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """One source over `dates`: dq rows, status rows and a summary."""
    v = settings.validation
    params = suite_parameters(v)
    clock = PhaseClock()
    # one read (one Delta snapshot) for the volume history and the dates themselves
    window = read_bronze(lake, source, dates, min(dates) - timedelta(days=volume_lookback_days(v)))
    delivered = delivered_counts(window)
    volumes = volume_rows(delivered, dates, v)
    clock.mark("volume")
    bronze = window.where(F.col("run_date").isin(list(dates))).drop("raw")
    rows = prepare_rows(bronze, source, host_tz, volume_frame(lake.spark, volumes))
    with Checkpoints() as keep:
        candidates = keep(rows.where(F.col("_candidate")).drop("_candidate"))
        counts = daily_counts(candidates, suite.rules, params)
        clock.mark("row_predicates")
        per_date = {key[0]: value for key, value in counts.items()}
        totals = {
            rule.name: (
                sum(c[rule.name][0] for c in per_date.values()),
                sum(c[rule.name][1] for c in per_date.values()),
            )
            for rule in suite.rules
        }
        n_rows = sum(int(c["rows"]) for c in per_date.values())
        if gx is not None:
            outcomes = gx.validate(suite, candidates, params, f"{run_name(dates)} {source}")
            cross_check(suite, outcomes, totals, n_rows)
            clock.mark("great_expectations")
    results = dq_result_rows(suite, source, dates, per_date, params, delivered)
    status = source_status_rows(source, dates, results, volumes)
    summary = {
        "rows": n_rows,
        "seconds": clock.seconds,
        "failed_critical": sorted(
            {r["expectation"] for r in results if r["critical"] and not r["success"]}
        ),
    }
    return results, status, summary


def run_validate(ctx: RunContext, dates: list[date]) -> StageResult:
    """The `validate` stage: every configured source's suite over `dates`."""
    dates = sorted(set(dates))
    result = StageResult(stage="validate", dates=dates)
    if not dates:
        return result
    settings = ctx.settings
    lake = ctx.lake
    sources = list(settings.ingest.sources)
    suites = load_suites(suites_dir(settings), sources)
    gx = runner_for(settings)
    dq_rows: list[dict[str, Any]] = []
    status_rows: list[dict[str, Any]] = []
    with Checkpoints() as keep:
        host_tz = keep(reference_host_timezones(ctx.spark, settings))
        for source in sources:
            results, status, summary = validate_source(
                lake, suites[source], source, dates, settings, host_tz, gx
            )
            dq_rows += results
            status_rows += status
            result.details[source] = summary
    clock = PhaseClock()
    write_dq_results(lake, dq_rows, dates, sources)
    status_df = ctx.spark.createDataFrame(
        [tuple(r[n] for n in SOURCE_STATUS.names) for r in status_rows], SOURCE_STATUS
    )
    lake.replace_dates(
        require_columns(status_df, SOURCE_STATUS, "ops.source_status"), "ops.source_status", dates
    )
    clock.mark("write")
    docs = gx.build_docs()
    clock.mark("data_docs")
    result.details["seconds"] = clock.seconds
    result.rows = {"ops.dq_results": len(dq_rows), "ops.source_status": len(status_rows)}
    result.details["status"] = {
        s: {
            r["run_date"].isoformat(): r["status"]
            for r in status_rows
            if r["source"] == s and r["status"] != "ok"
        }
        for s in sources
    }
    result.details["data_docs"] = str(docs) if docs else None
    return result
