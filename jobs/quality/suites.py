"""Suites: Great Expectations suite files (`expectations/<name>.json`) read into rules, with the
platform's `meta` (row_level, critical, dedup) and `$PARAMETER` values from configuration,
and the per-group counts of every rule in one aggregation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.config import REPOSITORY_ROOT, Settings, ValidationSettings
from jobs.quality.errors import SuiteError
from jobs.quality.rules import SUPPORTED_TYPES, UNIQUENESS_TYPES, RowCheck

SILVER_SUITE = "silver_events"
# Reference data the pipeline judges events with (not a telemetry source): the suite, the
# `source` its rows carry, and the geolocation database check (normalize writes it).
REFERENCE_SUITE = "reference"
GEOLOCATION = "geolocation"
GEO_DATABASE_CURRENT = "geo_database_current"

# Checks of ingest, not of content: every source gets them, ahead of its suite's rules.
PARSER_RULE = "parser"
TYPE_CHECK_RULE = "type_check"
# A date is degraded when more than this share of its rows could not be parsed or typed.
INGEST_MOSTLY = 0.98
# Per date: the share of the delivered rows normalize quarantines (parser, type check and
# the row-level expectations together), against `validation.max_quarantine_share`.
QUARANTINE_SHARE_RULE = "quarantine_share"
# Per date: the source's clock against the other sources' (informational).
CLOCK_SKEW_RULE = "clock_skew"


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
    def columns(self) -> tuple[str, ...]:
        """Every column an expectation of the suite looks at, in file order."""
        return tuple(dict.fromkeys(c for rule in self.rules for c in rule.columns))

    @property
    def dedup_key(self) -> tuple[str, ...]:
        """Columns of the `meta.dedup` expectation, without `run_date` (dedup is per date)."""
        for rule in self.rules:
            if rule.dedup:
                return tuple(c for c in rule.columns if c != "run_date")
        return ()


def default_suites_dir() -> Path:
    """The repository's `expectations/` folder, found next to the `jobs` package."""
    return REPOSITORY_ROOT / "expectations"


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
        if rule.dedup and rule.type not in UNIQUENESS_TYPES:
            raise SuiteError(f"{where}: meta.dedup belongs on a uniqueness expectation")
        if rule.row_level and rule.type in UNIQUENESS_TYPES:
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


def row_check(rule: Rule, params: Mapping[str, Any]) -> RowCheck:
    """The Spark predicate of one expectation (null-safe: never null)."""
    kwargs = resolve_kwargs(rule.kwargs, params, rule.name)
    check = SUPPORTED_TYPES[rule.type](kwargs)
    considered = F.coalesce(check.considered, F.lit(False))
    return RowCheck(
        considered, considered & F.coalesce(check.unexpected, F.lit(False)), check.reason
    )


# `daily_counts` key: rows failing at least one row-level rule (what normalize quarantines)
QUARANTINED = "__quarantined__"


def daily_counts(
    candidates: DataFrame,
    rules: Sequence[Rule],
    params: Mapping[str, Any],
    by: Sequence[str] = ("run_date",),
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per group: rows, (considered, unexpected) per rule, and the rows failing any row-level
    rule (`QUARANTINED`).

    One aggregation for every rule, except a uniqueness rule whose key holds the groups' columns
    (a source suite's key includes `run_date`): that one is a hash count of its key
    (`uniqueness_counts`) instead of the row predicate's window, which sorts every row by the
    key. A key that does not hold the groups (the silver suite, reported per source) may span
    groups, and its window stays in the one aggregation (measured: cheaper than hash counts
    per key and group joined back to the key's total).
    """
    hashed = [r for r in rules if r.type in UNIQUENESS_TYPES and set(by) <= set(r.columns)]
    in_pass = [r for r in rules if r not in hashed]
    checks = {r.name: row_check(r, params) for r in in_pass}
    flags = []
    for i, rule in enumerate(in_pass):
        check = checks[rule.name]
        flags += [
            check.considered.cast("long").alias(f"__c{i}"),
            check.unexpected.cast("long").alias(f"__u{i}"),
        ]
    any_failing = F.lit(False)
    for rule in in_pass:
        if rule.row_level:
            any_failing = any_failing | checks[rule.name].unexpected
    # the flags are columns first: a window (uniqueness) cannot sit inside an aggregate
    flagged = candidates.select(*by, *flags, any_failing.cast("long").alias("__q"))
    aggs = [F.count(F.lit(1)).alias("__rows"), F.sum("__q").alias("__q")]
    for i in range(len(in_pass)):
        aggs += [F.sum(f"__c{i}").alias(f"__c{i}"), F.sum(f"__u{i}").alias(f"__u{i}")]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in flagged.groupBy(*by).agg(*aggs).collect():
        key = tuple(row[c] for c in by)
        out[key] = {
            "rows": int(row["__rows"]),
            QUARANTINED: int(row["__q"] or 0),
            **{
                rule.name: (int(row[f"__c{i}"] or 0), int(row[f"__u{i}"] or 0))
                for i, rule in enumerate(in_pass)
            },
        }
    for rule in hashed:
        found = uniqueness_counts(candidates, rule, params, by)
        for key, value in out.items():
            value[rule.name] = found.get(key, (0, 0))
    return out


def uniqueness_counts(
    frame: DataFrame, rule: Rule, params: Mapping[str, Any], by: Sequence[str]
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Per group of `by` (columns of the rule's key): (considered, unexpected) of a uniqueness
    rule by two hash aggregates, copies per key then rows per group. A considered row is
    unexpected when its key (null equal to null, as Great Expectations sees it) occurs more
    than once."""
    key = list(dict.fromkeys(rule.columns))
    counted = (
        frame.where(row_check(rule, params).considered)
        .groupBy(*key)
        .agg(F.count(F.lit(1)).alias("__n"))
        .groupBy(*by)
        .agg(
            F.sum("__n").alias("__c"),
            F.sum(F.when(F.col("__n") > 1, F.col("__n")).otherwise(F.lit(0))).alias("__u"),
        )
    )
    return {
        tuple(row[c] for c in by): (int(row["__c"] or 0), int(row["__u"] or 0))
        for row in counted.collect()
    }
