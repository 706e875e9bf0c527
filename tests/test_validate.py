"""Validate: suites as files, their row predicates, volume, gates, GX results and Data Docs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import SOURCES, ValidationSettings
from jobs.core.context import RunContext
from jobs.core.errors import PipelineError
from jobs.core.lake import Lake
from jobs.quality.errors import SuiteError
from jobs.quality.gx import GreatExpectationsRunner, GxOutcome, cross_check
from jobs.quality.rules import SUPPORTED_TYPES
from jobs.quality.suites import (
    SILVER_SUITE,
    Rule,
    daily_counts,
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


def test_uniqueness_is_counted_by_hash_as_the_row_window_counts_it(spark) -> None:  # type: ignore[no-untyped-def]
    d1, d2 = date(2026, 10, 1), date(2026, 10, 2)
    df = spark.createDataFrame(
        [(d1, "a", 1), (d1, "a", 1), (d1, "b", None), (d1, None, None), (d2, "a", 1),
         (d2, None, None), (d2, "c", 2), (d2, "c", 3), (d1, None, 5)],
        "run_date date, s string, b long",
    )  # fmt: skip
    rules = [
        _rule("expect_column_values_to_be_unique", column="s"),
        _rule("expect_compound_columns_to_be_unique", column_list=["s", "b"]),
        _rule("expect_compound_columns_to_be_unique", column_list=["run_date", "s", "b"],
              ignore_row_if="any_value_is_missing"),
        _rule("expect_compound_columns_to_be_unique", column_list=["s", "b"],
              ignore_row_if="never"),
    ]  # fmt: skip
    rules = [
        Rule(**{**r.__dict__, "index": i, "meta": {"id": str(i)}}) for i, r in enumerate(rules)
    ]
    counted = daily_counts(df, rules, {})
    # the reference: the row predicate (a window over the whole frame), summed per date
    for rule in rules:
        check = row_check(rule, {})
        window = {
            r["run_date"]: (int(r["c"]), int(r["u"]))
            for r in df.select("run_date", check.considered.cast("long").alias("c"),
                               check.unexpected.cast("long").alias("u"))
            .groupBy("run_date").agg(F.sum("c").alias("c"), F.sum("u").alias("u"))
            .collect()
        }  # fmt: skip
        assert {k[0]: v[rule.name] for k, v in counted.items()} == window, rule.name
    # s repeats: 'a' three times across both dates, 'c' twice on d2
    assert {k[0]: v[rules[0].name] for k, v in counted.items()} == {d1: (3, 2), d2: (3, 3)}


def test_row_predicate_resolves_suite_parameters(spark) -> None:  # type: ignore[no-untyped-def]
    rule = _rule(
        "expect_column_values_to_be_between",
        column="h",
        min_value={"$PARAMETER": "earliest_offset_hours"},
        max_value={"$PARAMETER": "latest_offset_hours"},
    )
    # by default an event may be up to a day past the end of the run date (a clock ahead)
    params = suite_parameters(ValidationSettings())
    df = spark.createDataFrame([(-49.0,), (-47.0,), (47.9,), (48.1,)], "h double")
    assert [r[0] for r in df.select(row_check(rule, params).unexpected).collect()] == [
        True,
        False,
        False,
        True,
    ]
    with pytest.raises(SuiteError, match="unknown suite parameter"):
        row_check(rule, {})


def test_recorded_results_are_what_great_expectations_computes(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """GX computes a suite covering every supported expectation type on a frame; the result
    `record` builds from the row predicates' counts of the same frame is the same result."""
    expectations = [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}},
        {"type": "expect_column_values_to_be_null", "kwargs": {"column": "z"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "y", "value_set": ["a"], "mostly": 0.5}},
        {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "y", "value_set": ["b"]}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": {"$PARAMETER": "lo"}, "max_value": 2}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "y", "regex": "^a$"}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "y", "regex": "b"}},
        {"type": "expect_column_values_to_match_regex_list", "kwargs": {"column": "y", "regex_list": ["^a", "^c"]}},
        {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "y", "min_value": 1, "max_value": 1}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "y"}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["x", "y"]}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "x", "column_B": "z"}},
        {"type": "expect_column_pair_values_to_be_equal", "kwargs": {"column_A": "x", "column_B": "z"}},
    ]  # fmt: skip
    assert {e["type"] for e in expectations} == set(SUPPORTED_TYPES)
    _write_suite(tmp_path / "suites", "t", expectations)
    suite = load_suite(tmp_path / "suites", "t")
    df = spark.createDataFrame(
        [(1, "a", 0), (None, "b", 1), (1, "a", 2), (3, None, 3), (2, "cc", None)],
        "x long, y string, z long",
    )
    params = {"lo": 0}
    counts = daily_counts(df, suite.rules, params, by=())[()]
    totals = {r.name: counts[r.name] for r in suite.rules}
    computed = GreatExpectationsRunner(None)
    cross_check(suite, computed.validate(suite, df, params, "computed"), totals, 5)
    recorder = GreatExpectationsRunner(str(tmp_path / "docs"))
    recorder.record(suite, totals, 5, params, "recorded")
    by_rule = {r.expectation_config.meta["rule"]: r for r in recorder.validated[-1].results}
    for real in computed.validated[-1].results:
        ours = by_rule[real.expectation_config.meta["rule"]]
        assert (ours.success, ours.result) == (real.success, real.result), (
            real.expectation_config.type
        )
    assert recorder.validated[-1].statistics == computed.validated[-1].statistics
    assert recorder.build_docs() == tmp_path / "docs" / "index.html"
    # the recorded run has its validation page, like a computed one
    assert list((tmp_path / "docs" / "validations" / "t").rglob("policylake_spark-t.html"))


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

    # GX computes every expectation from the data and must agree with the row predicates;
    # then the default: GX's results recorded from the predicates' counts (same rows)
    recompute = settings.validation.model_copy(update={"great_expectations": "recompute"})
    run_validate(
        RunContext(spark, settings.model_copy(update={"validation": recompute})), [d5, d6, d7]
    )
    first = lake.read("ops.dq_results").drop("details").collect()
    ctx = RunContext(spark, settings)
    run_validate(ctx, [d5, d6, d7])  # idempotent: replaces, never appends
    assert sorted(map(tuple, lake.read("ops.dq_results").drop("details").collect())) == sorted(
        map(tuple, first)
    )

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
            (
                d7,
                "idp",
                "degraded",
                [
                    f"{not_null}: 2 unexpected (20.00%)",
                    # what normalize quarantines, above validation.max_quarantine_share
                    "quarantine: 2 of 10 rows (20.00%) quarantined, above the 5% limit",
                ],
            ),
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
    # the suite's rules, parser, type_check, quarantine_share and clock_skew
    assert {(r["source"], r["run_date"]): r["count"] for r in per_day} == {
        **{("idp", d): idp_rules + 4 for d in (d5, d6, d7)},
        **{("sshd", d): sshd_rules + 4 for d in (d5, d6, d7)},
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


# ---- what is quarantined must show: the quarantine share ---------------------------------


def test_a_day_mostly_quarantined_marks_the_source_degraded(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The case of the issue: a row-level rule that is not critical (the old Windows event-id
    list) quarantined 99% of a real recording while the source reported ok. Whatever the
    rule, a day whose quarantined share passes `validation.max_quarantine_share` is degraded."""
    suites = tmp_path / "suites"
    suites.mkdir()
    doc = json.loads((default_suites_dir() / "sshd.json").read_text())
    doc["expectations"].append(
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "user", "value_set": ["deploy"]},
         "meta": {"critical": False, "row_level": True}}
    )  # fmt: skip
    (suites / "sshd.json").write_text(json.dumps(doc))
    settings = test_settings(
        tmp_path,
        ingest={"sources": ["sshd"]},
        validation={"suites_dir": str(suites), "max_quarantine_share": 0.05},
    )
    write_reference(settings.paths.reference_root)
    lake = Lake(spark, settings.paths.lake_root)
    d1, d2, d3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)
    rows = (
        [sshd_row(i, d1, user="root") for i in range(1, 20)] + [sshd_row(20, d1)]  # 95% out
        + [sshd_row(i, d2) for i in range(1, 20)] + [sshd_row(20, d2, user="root")]  # 5%: at the limit
        + [sshd_row(i, d3) for i in range(1, 18)]
        + [sshd_row(18, d3, user="root"), sshd_row(19, d3, _parse_status="unparseable"),
           sshd_row(20, d3, _cast_errors=["pid: 'x' is not int"])]  # 15%: 1 rule + parser + type
    )  # fmt: skip
    lake.replace_dates(bronze_frame(spark, "sshd", rows), "bronze.sshd", [d1, d2, d3])
    run_validate(RunContext(spark, settings), [d1, d2, d3])
    status = lake.read("ops.source_status").select("run_date", "status", "reasons")
    assertDataFrameEqual(
        status,
        spark.createDataFrame(
            [
                (d1, "degraded", ["quarantine: 19 of 20 rows (95.00%) quarantined, above the 5% limit"]),
                (d2, "ok", []),
                (d3, "degraded", ["parser: 1 unexpected (5.00%)", "type_check: 1 unexpected (5.00%)",
                                  "quarantine: 3 of 20 rows (15.00%) quarantined, above the 5% limit"]),
            ],
            status.schema,
        ),
    )  # fmt: skip
    share = (
        lake.read("ops.dq_results")
        .where(F.col("expectation") == "quarantine_share")
        .select("run_date", "success", "unexpected_count", "element_count", "critical")
    )
    assertDataFrameEqual(
        share,
        spark.createDataFrame(
            [(d1, False, 19, 20, True), (d2, True, 1, 20, True), (d3, False, 3, 20, True)],
            share.schema,
        ),
    )


# ---- clocks: measured against the other sources, never a reason to drop an event --------


def test_clock_skew_lines_up_a_source_with_the_others() -> None:
    import numpy as np

    from jobs.stages.validate import skew

    rng = np.random.default_rng(7)
    bins = np.arange(skew._BINS)
    hours = bins * skew.BIN_MINUTES / 60 + skew._FIRST_HOUR
    office = np.exp(-((hours - 13.0) ** 2) / 8) + 0.02

    def histogram(shift_hours: float, n: int) -> dict[date, dict[int, int]]:
        shifted = np.roll(office, int(shift_hours * 60 / skew.BIN_MINUTES))
        counts = rng.poisson(shifted / shifted.sum() * n)
        return {date(2026, 10, 1): {int(b): int(c) for b, c in enumerate(counts) if c}}

    flat = {date(2026, 10, 1): {int(b): 3 for b in bins}}
    rows = skew.clock_skew_rows(
        {"idp": histogram(0, 4000), "sshd": histogram(5, 800), "zeek_dns": histogram(0, 6000),
         "zeek_conn": histogram(0, 9000), "windows": {}, "cloudtrail": flat},
        [date(2026, 10, 1)],
        30.0,
    )  # fmt: skip
    got = {r["source"]: (json.loads(r["details"])["skew_minutes"], r["success"]) for r in rows}
    assert got["sshd"][0] is not None and abs(got["sshd"][0] - 300) <= 20 and not got["sshd"][1]
    for source in ("idp", "zeek_dns", "zeek_conn"):  # one bad clock leaves the others alone
        assert got[source][0] is not None and abs(got[source][0]) <= 10 and got[source][1]
    assert got["windows"] == (None, True)  # no events: nothing measured
    assert got["cloudtrail"] == (None, True)  # no rhythm to line up
    assert all(r["expectation"] == "clock_skew" and not r["critical"] for r in rows)


def test_a_source_clock_hours_ahead_lands_on_its_event_date(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """sshd's clock runs 6 h ahead of the IdP's: validate measures the skew (informational),
    nothing is quarantined, and silver keeps each event on its own date (`event_date`), in
    the run of the day it was delivered (`run_date`)."""
    from jobs.stages.normalize.stage import run_normalize

    settings = test_settings(tmp_path, ingest={"sources": ["idp", "sshd"]})
    write_reference(settings.paths.reference_root)
    lake = Lake(spark, settings.paths.lake_root)
    day = date(2026, 10, 1)

    def stamp(minute: int, shift_hours: int) -> str:
        t = datetime(2026, 10, 1, 10, tzinfo=UTC) + timedelta(minutes=minute, hours=shift_hours)
        return t.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")

    minutes = [(i * 37) % 600 for i in range(1, 241)]  # spread over 10:00-20:00 UTC
    idp = [idp_row(i, day, event_time_raw=stamp(m, 0)) for i, m in enumerate(minutes, 1)]
    ssh = [sshd_row(i, day, event_time_raw=stamp(m, 6)) for i, m in enumerate(minutes, 1)]
    lake.replace_dates(bronze_frame(spark, "idp", idp), "bronze.idp", [day])
    lake.replace_dates(bronze_frame(spark, "sshd", ssh), "bronze.sshd", [day])
    ctx = RunContext(spark, settings)
    run_validate(ctx, [day])
    run_normalize(ctx, [day])

    skews = {
        r["source"]: (json.loads(r["details"])["skew_minutes"], r["success"], r["critical"])
        for r in lake.read("ops.dq_results").where(F.col("expectation") == "clock_skew").collect()
    }
    assert abs(skews["sshd"][0] - 360) <= 20 and skews["sshd"][1:] == (False, False)
    assert abs(skews["idp"][0] + 360) <= 20 and skews["idp"][1:] == (False, False)
    status = lake.read("ops.source_status").select("source", "status").collect()
    assert sorted((r["source"], r["status"]) for r in status) == [("idp", "ok"), ("sshd", "ok")]
    assert not lake.exists("silver.quarantine") or lake.read("silver.quarantine").count() == 0
    by_date = (
        lake.read("silver.events")
        .groupBy("source", "run_date", "event_date")
        .count()
        .select("source", "run_date", "event_date", "count")
    )
    after_midnight = sum(1 for m in minutes if m >= 480)  # 18:00 + 6 h
    assertDataFrameEqual(
        by_date,
        spark.createDataFrame(
            [("idp", day, day, 240), ("sshd", day, day, 240 - after_midnight),
             ("sshd", day, date(2026, 10, 2), after_midnight)],
            by_date.schema,
        ),
    )  # fmt: skip
