"""Validate: suites as files, their row predicates, volume, gates, GX results and Data Docs."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import SOURCES, ValidationSettings
from jobs.core.context import RunContext
from jobs.core.errors import PipelineError
from jobs.core.lake import Lake
from jobs.quality.errors import SuiteError
from jobs.quality.gx import GxOutcome, cross_check
from jobs.quality.suites import (
    SILVER_SUITE,
    Rule,
    default_suites_dir,
    load_suite,
    row_check,
    suite_parameters,
)
from jobs.stages.validate.stage import run_validate, source_status_rows
from jobs.stages.validate.volume import volume_rows
from tests.bronze_frames import bronze_frame, idp_row, sshd_row, write_reference
from tests.conftest import test_settings


def _write_suite(directory: Path, name: str, expectations: list[dict[str, object]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "expectations": expectations, "meta": {}}
    (directory / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")


# ---- suites as files -------------------------------------------------------------------


def test_repository_suites_load_and_great_expectations_accepts_them() -> None:
    import great_expectations as gx

    for name in (*SOURCES, SILVER_SUITE):
        suite = load_suite(default_suites_dir(), name)
        assert suite.rules, name
        doc = json.loads((default_suites_dir() / f"{name}.json").read_text())
        assert {"name", "expectations", "meta"} <= set(doc)
        # GX drops (and only logs) expectations it cannot build; every one must survive.
        assert len(
            gx.ExpectationSuite(name=name, expectations=doc["expectations"]).expectations
        ) == len(suite.rules)
        if name != SILVER_SUITE:
            assert suite.dedup_key, f"{name} names no de-duplication key"
            assert any(r.critical and r.row_level for r in suite.rules)
            assert suite.rules[0].name == f"{name}.expect_column_values_to_not_be_null(event_time)"


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ({"type": "expect_column_mean_to_be_between", "kwargs": {"column": "x"}}, "has no row predicate"),
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}, "meta": {"critical": "yes"}},
         "meta.critical must be true or false"),
        ({"type": "expect_column_values_to_be_unique", "kwargs": {"column": "x"}, "meta": {"row_level": True}},
         "cannot be row_level"),
        ({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "x", "value_set": [1]}, "meta": {"dedup": True}},
         "meta.dedup belongs on a uniqueness expectation"),
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x", "row_condition": "y > 1"}},
         "row_condition is not supported"),
    ],
)  # fmt: skip
def test_load_suite_rejects_what_the_platform_cannot_enforce(
    tmp_path: Path, expectation: dict[str, object], message: str
) -> None:
    _write_suite(tmp_path, "idp", [expectation])
    with pytest.raises(SuiteError, match=message):
        load_suite(tmp_path, "idp")


def test_load_suite_needs_matching_name_and_unique_rule_names(tmp_path: Path) -> None:
    (tmp_path / "idp.json").write_text(json.dumps({"name": "okta", "expectations": []}))
    with pytest.raises(SuiteError, match="must be 'idp'"):
        load_suite(tmp_path, "idp")
    twice = {
        "type": "expect_column_values_to_match_regex",
        "kwargs": {"column": "uuid", "regex": "a"},
    }
    _write_suite(tmp_path, "idp", [twice, {**twice, "kwargs": {"column": "uuid", "regex": "b"}}])
    with pytest.raises(SuiteError, match=r"meta\.id"):
        load_suite(tmp_path, "idp")
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path, "windows")


def test_suite_parameters_come_from_configuration() -> None:
    params = suite_parameters(
        ValidationSettings(late_tolerance_hours=36, future_tolerance_minutes=30)
    )
    assert params["earliest_offset_hours"] == -36.0
    assert params["latest_offset_hours"] == 24.5


# ---- row predicates --------------------------------------------------------------------


def _rule(type_: str, **kwargs: object) -> Rule:
    return Rule(suite="t", index=0, type=type_, kwargs=kwargs, critical=False, row_level=True)


def test_row_predicates_follow_great_expectations_semantics(spark) -> None:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame(
        [(1, "a", 5, "10.0.0.1", 3, 1), (2, None, 70000, "10.0.0.999", 3, None), (3, "z", -1, None, 0, 1),
         (4, "a", None, "::1", 1, 1)],
        "id int, s string, port int, ip string, a long, b long",
    )  # fmt: skip
    rules = {
        "not_null": _rule("expect_column_values_to_not_be_null", column="s"),
        "in_set": _rule("expect_column_values_to_be_in_set", column="s", value_set=["a"]),
        "between": _rule("expect_column_values_to_be_between", column="port", min_value=0, max_value=65535),
        "regex": _rule("expect_column_values_to_match_regex", column="ip", regex=r"^(\d+\.){3}\d{1,2}$|:"),
        "unique": _rule("expect_compound_columns_to_be_unique", column_list=["s", "b"]),
        "pair": _rule("expect_column_pair_values_a_to_be_greater_than_b", column_A="a", column_B="b",
                      or_equal=True, ignore_row_if="either_value_is_missing"),
    }  # fmt: skip
    cols = []
    for name, rule in rules.items():
        check = row_check(rule, {})
        cols += [check.considered.alias(f"{name}_c"), check.unexpected.alias(f"{name}_u")]
    actual = df.select("id", *cols)
    # nulls are not considered (except by not_null); (s, b) = (a, 1) appears twice; a >= b
    expected = spark.createDataFrame(
        [
            (1, True, False, True, False, True, False, True, False, True, True, True, False),
            (2, True, True, False, False, True, True, True, True, False, False, False, False),
            (3, True, False, True, True, True, True, False, False, True, False, True, True),
            (4, True, False, True, False, False, False, True, False, True, True, True, False),
        ],
        "id int, not_null_c boolean, not_null_u boolean, in_set_c boolean, in_set_u boolean, "
        "between_c boolean, between_u boolean, regex_c boolean, regex_u boolean, "
        "unique_c boolean, unique_u boolean, pair_c boolean, pair_u boolean",
    )
    assertDataFrameEqual(actual, expected)


def test_row_predicate_resolves_suite_parameters(spark) -> None:  # type: ignore[no-untyped-def]
    rule = _rule(
        "expect_column_values_to_be_between",
        column="h",
        min_value={"$PARAMETER": "earliest_offset_hours"},
        max_value={"$PARAMETER": "latest_offset_hours"},
    )
    params = suite_parameters(ValidationSettings())
    df = spark.createDataFrame([(-49.0,), (-47.0,), (24.2,), (24.3,)], "h double")
    assert [r[0] for r in df.select(row_check(rule, params).unexpected).collect()] == [
        True,
        False,
        False,
        True,
    ]
    with pytest.raises(SuiteError, match="unknown suite parameter"):
        row_check(rule, {})


def test_cross_check_fails_loudly_when_predicate_and_gx_disagree() -> None:
    suite = load_suite(default_suites_dir(), "sshd")
    rule = suite.rules[0]
    agree = {r.name: GxOutcome(True, 0, 10) for r in suite.rules}
    cross_check(suite, agree, {r.name: (10, 0) for r in suite.rules}, 10)
    with pytest.raises(PipelineError, match="counted 0 unexpected rows"):
        cross_check(
            suite, agree, {**{r.name: (10, 0) for r in suite.rules}, rule.name: (10, 3)}, 10
        )


# ---- volume and status -----------------------------------------------------------------


def test_volume_rows_use_the_trailing_median_of_delivered_days() -> None:
    d = date(2026, 10, 10)  # a Saturday
    counts = {
        d - timedelta(days=i): {"rows": n} for i, n in ((1, 100), (2, 0), (3, 90), (4, 110), (9, 5))
    }
    counts[d] = {"rows": 40}
    (vol,) = volume_rows(counts, [d], ValidationSettings(volume_compare="all_days"))
    # day -2 delivered nothing (an outage, not volume) and day -9 is outside the 7-day window
    assert (vol.rows, vol.history_days, vol.history_median, vol.min_rows) == (40, 3, 100.0, 50.0)
    (short,) = volume_rows({d - timedelta(days=1): {"rows": 100}}, [d], ValidationSettings())
    assert short.min_rows is None and short.rows == 0


def test_volume_compares_weekends_with_weekends() -> None:
    start = date(2026, 9, 7)  # a Monday; five weeks of 1000 rows a weekday, 150 a weekend day
    counts = {
        start + timedelta(days=i): {
            "rows": 150 if (start + timedelta(days=i)).weekday() >= 5 else 1000
        }
        for i in range(36)
    }
    sat, mon = date(2026, 10, 10), date(2026, 10, 12)
    weekend, weekday = volume_rows(counts, [sat, mon], ValidationSettings())
    assert (weekend.rows, weekend.history_median, weekend.history_days, weekend.basis) == (
        150,
        150.0,
        7,
        "weekend days",
    )
    assert (
        weekend.min_rows is not None and weekend.rows >= weekend.min_rows
    )  # a quiet Saturday is normal
    assert (weekday.history_median, weekday.history_days, weekday.basis) == (1000.0, 7, "weekdays")
    (plain,) = volume_rows(counts, [sat], ValidationSettings(volume_compare="all_days"))
    assert (
        plain.min_rows == 500.0 and plain.rows < plain.min_rows
    )  # the naive window flags every weekend


def test_source_status_missing_degraded_ok() -> None:
    d1, d2, d3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)
    v = ValidationSettings()
    vols = volume_rows(
        {d1 - timedelta(days=i): {"rows": 100} for i in range(1, 4)}
        | {d1: {"rows": 10}, d3: {"rows": 100}},
        [d1, d2, d3],
        v,
    )
    results = [
        {"run_date": d1, "expectation": "idp.expect_column_pair_values_a_to_be_greater_than_b(_day_rows,_day_min_rows)",
         "critical": True, "success": False, "unexpected_count": 10, "details": json.dumps({"considered": 10})},
        {"run_date": d3, "expectation": "idp.expect_column_values_to_match_regex(actor_id)",
         "critical": False, "success": False, "unexpected_count": 1, "details": json.dumps({"considered": 100})},
    ]  # fmt: skip
    rows = source_status_rows("idp", [d1, d2, d3], results, vols)
    assert [(r["status"], r["reasons"]) for r in rows] == [
        ("degraded", ["volume: 10 rows < 50 (100 median of the last 3 delivered weekdays)"]),
        ("missing", ["no idp data delivered for 2026-10-02"]),
        ("ok", []),
    ]


# ---- the stage: GX over the range, results per date, gates, Data Docs --------------------


def test_run_validate_gates_each_date_and_builds_data_docs(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = test_settings(tmp_path, ingest={"sources": ["idp", "sshd"]})
    write_reference(settings.paths.reference_root)
    lake = Lake(spark, settings.paths.lake_root)
    d5, d6, d7 = date(2026, 10, 5), date(2026, 10, 6), date(2026, 10, 7)
    history = [
        idp_row(i, d) for d in (date(2026, 10, k) for k in (1, 2, 3, 4)) for i in range(1, 11)
    ]
    idp = (
        history
        + [idp_row(i, d5) for i in range(1, 11)]
        + [idp_row(i, d6) for i in range(1, 4)]  # volume drop: 3 < 0.5 x 10
        + [idp_row(i, d7) for i in range(1, 9)]
        + [idp_row(9, d7, event_time_raw=None), idp_row(10, d7, event_time_raw="not-a-date")]
    )
    lake.replace_dates(
        bronze_frame(spark, "idp", idp), "bronze.idp", sorted({r["run_date"] for r in idp})
    )
    sshd = [sshd_row(i, d) for d in (d5, d7) for i in range(1, 6)]  # nothing delivered on d6
    lake.replace_dates(bronze_frame(spark, "sshd", sshd), "bronze.sshd", [d5, d6, d7])

    ctx = RunContext(spark, settings)
    run_validate(ctx, [d5, d6, d7])
    run_validate(ctx, [d5, d6, d7])  # idempotent: replaces, never appends

    status = lake.read("ops.source_status")
    not_null = "idp.expect_column_values_to_not_be_null(event_time)"
    expected = spark.createDataFrame(
        [
            (d5, "idp", "ok", []),
            (
                d6,
                "idp",
                "degraded",
                ["volume: 3 rows < 5 (10 median of the last 3 delivered weekdays)"],
            ),
            (d7, "idp", "degraded", [f"{not_null}: 2 unexpected (20.00%)"]),
            (d5, "sshd", "ok", []),
            (d6, "sshd", "missing", ["no sshd data delivered for 2026-10-06"]),
            (d7, "sshd", "ok", []),
        ],
        status.schema,
    )
    assertDataFrameEqual(status, expected)

    dq = lake.read("ops.dq_results")
    per_day = dq.groupBy("source", "run_date").count().collect()
    idp_rules = len(load_suite(default_suites_dir(), "idp").rules)
    sshd_rules = len(load_suite(default_suites_dir(), "sshd").rules)
    assert {(r["source"], r["run_date"]): r["count"] for r in per_day} == {
        **{("idp", d): idp_rules + 2 for d in (d5, d6, d7)},
        **{("sshd", d): sshd_rules + 2 for d in (d5, d6, d7)},
    }
    row = dq.where((F.col("run_date") == d7) & (F.col("expectation") == not_null)).first()
    assert row is not None
    assert (row["success"], row["unexpected_count"], row["element_count"], row["critical"]) == (
        False,
        2,
        10,
        True,
    )

    index = Path(settings.paths.data_docs_dir) / "index.html"
    assert index.is_file()
    pages = list((Path(settings.paths.data_docs_dir) / "validations").rglob("*.html"))
    assert any("idp" in p.as_posix() for p in pages) and any("sshd" in p.as_posix() for p in pages)
    html = index.read_text(encoding="utf-8")
    assert "idp" in html and "sshd" in html
    page = next(p for p in pages if "/idp/" in p.as_posix()).read_text(encoding="utf-8")
    assert "event_time_offset_hours" in page
