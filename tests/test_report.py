"""The daily HTML report: banner iff a condition holds, hostile strings escaped, atomic
writes, the CLI, and end to end on the generated month (incidents among the top entities,
rendered by a headless Chromium)."""

from __future__ import annotations

import html
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from jobs.core.config import MetricsSettings
from jobs.core.context import RunContext
from jobs.core.errors import PipelineError
from jobs.core.tables import METRICS_DAILY
from jobs.stages.metrics import families
from jobs.stages.metrics import stage as metrics_stage
from jobs.stages.report.render import (
    MetricPoint,
    ReportData,
    TopEntity,
    alert_messages,
    render_report,
)
from jobs.stages.report.stage import run_report
from tests.conftest import test_settings

DAY = date(2026, 10, 6)
CFG = MetricsSettings()
BANNER = 'class="banner alert"'


def point(metric: str, value: float, day: date = DAY, **dims: str) -> MetricPoint:
    return MetricPoint(day, metric, dims, value)


def healthy_day() -> list[MetricPoint]:
    """A day with warnings below the alert level and every source ok."""
    return [
        point("recommendations", 2, action="block", domain="identity", status="approved"),
        point("recommendations", 1, DAY - timedelta(days=1), action="limit", domain="network", status="approved"),
        point("recommendations_total", 2),
        point("source_status", 1, source="idp", status="ok"),
        point("dq_pass_rate", 0.9, source="idp", suite="idp"),
        point("dq_gate_failed", 0, source="idp"),
        point("feature_psi", 0.2, feature="log_events", level="warning", reference="model_v1"),
        point("baseline_psi", 0.01, statistic="events_mad", level="ok", reference="model_v1"),
        point("entity_risk_histogram", 10, bucket="00-09"),
        point("analyst_decisions", 1, DAY - timedelta(days=2), decision="override"),
        point("alerts_total", 0),
    ]  # fmt: skip


def data(metrics: list[MetricPoint], top: tuple[TopEntity, ...] = ()) -> ReportData:
    return ReportData(run_date=DAY, metrics=tuple(metrics), top=top, history_days=7)


def alert_points(spark: SparkSession, base: list[MetricPoint]) -> list[MetricPoint]:
    """`base` plus the alert rows the metrics stage derives from it (jobs.stages.metrics.stage)."""
    frame = spark.createDataFrame(
        [(p.run_date, p.metric, dict(sorted(p.dimensions.items())), float(p.value)) for p in base],
        METRICS_DAILY.schema,
    )
    dates = spark.createDataFrame([(DAY,)], "run_date date")
    derived = families.alert_metrics(frame, dates).where("metric = 'alert'").collect()
    return base + [
        point(r["metric"], r["value"], r["run_date"], **r["dimensions"]) for r in derived
    ]


@pytest.mark.parametrize(
    ("condition", "extra", "message"),
    [
        (
            "drift",
            [
                point(
                    "feature_psi", 0.4, feature="log_bytes_out", level="alert", reference="model_v1"
                )
            ],
            "Drift alert: model feature log_bytes_out has PSI 0.40",
        ),
        (
            "source_gap",
            [point("telemetry_gap", 1, source="windows", status="missing")],
            "Telemetry gap: source windows is missing",
        ),
        (
            "dq_gate",
            [point("dq_gate_failed", 2, source="zeek_dns")],
            "Data-quality gate failed: source zeek_dns failed 2 critical expectation(s)",
        ),
    ],
)
def test_banner_appears_when_a_condition_holds(
    spark: SparkSession, condition: str, extra: list[MetricPoint], message: str
) -> None:
    page = render_report(data(alert_points(spark, healthy_day() + extra)), CFG)
    assert BANNER in page
    banner = page[page.index(BANNER) : page.index("</section>", page.index(BANNER))]
    assert html.escape(message) in banner
    assert page.index(BANNER) < page.index("<h2>Actions over time")  # at the top


def test_no_banner_when_nothing_crossed_a_threshold(spark: SparkSession) -> None:
    points = alert_points(spark, healthy_day())
    assert [p for p in points if p.metric == "alert"] == []
    page = render_report(data(points), CFG)
    assert BANNER not in page and 'class="all-clear"' in page
    assert alert_messages(data(points), CFG) == []


def test_a_stale_geolocation_database_is_named_with_its_build_date() -> None:
    stale = point(
        "geo_database_age_days", 3017, database_type="GeoLite2-City", build_date="2018-07-03",
        bundled="true", stale="true",
    )  # fmt: skip
    page = render_report(data([*healthy_day(), stale]), CFG)
    notice = page[
        page.index('id="geolocation"') : page.index("</section>", page.index('id="geolocation"'))
    ]
    assert (
        "the bundled GeoLite2-City database built 2018-07-03 (3,017 days before this date)"
        in notice
    )
    assert "geo.database" in notice
    current = point(
        "geo_database_age_days", 3, database_type="GeoIP2-City", build_date="2026-10-03",
        bundled="false", stale="false",
    )  # fmt: skip
    assert 'id="geolocation"' not in render_report(data([*healthy_day(), current]), CFG)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {name for name, _ in attrs}

    def handle_data(self, data: str) -> None:
        self.text.append(data)


HOSTILE_ID = '<script>alert("id")</script>'
HOSTILE_REASON = "\"'><img src=x onerror=alert(1)>"


def test_hostile_strings_are_escaped_everywhere() -> None:
    top = (
        TopEntity(1, "user", HOSTILE_ID, 99, 99, 3, (HOSTILE_REASON, "</td></tr><svg onload=x>"),
                  ("block (pending_approval, <b>identity</b>)",)),
    )  # fmt: skip
    metrics = [
        *healthy_day(),
        point("source_status", 1, source="<i>idp</i>", status="missing"),
        point("dq_pass_rate", 0.5, source="<i>idp</i>", suite='"><script>x</script>'),
        point("feature_psi", 0.9, feature="</svg><script>y</script>", level="alert", reference="r&d"),
        point("alert", 1, condition="source_gap", source="<i>idp</i>", status="missing"),
        point("recommendations", 1, action="<u>block</u>", domain="d", status="s"),
    ]  # fmt: skip
    page = render_report(data(metrics, top), CFG)
    parsed = Tags()
    parsed.feed(page)
    assert parsed.tags <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "div",
        "p", "section", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "span", "br",
        "svg", "rect", "line", "text", "footer",
    }  # fmt: skip
    assert not any(a.startswith("on") for a in parsed.attrs)
    for raw in ("<script", "<img", "<i>", "<b>", "<u>", "<svg onload"):
        assert raw not in page
    text = "".join(parsed.text)
    for value in (HOSTILE_ID, HOSTILE_REASON, "<i>idp</i>", "</svg><script>y</script>"):
        assert value in text  # shown to the reader as text, exactly
    assert "default-src 'none'" in page  # and a CSP forbids scripts anyway


# --- the stage on a tiny lake --------------------------------------------------------------


@pytest.fixture(scope="module")
def report_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    work = tmp_path_factory.mktemp("report")
    ctx = RunContext(spark, test_settings(work, report={"top_entities": 2, "history_days": 3}))
    metric_rows = [
        (d, "recommendations", {"action": "block", "domain": "identity", "status": "approved"}, 1.0)
        for d in (DAY - timedelta(days=1), DAY)
    ] + [(d, "alerts_total", {}, 0.0) for d in (DAY - timedelta(days=1), DAY)]
    ctx.lake.replace_dates(
        spark.createDataFrame(metric_rows, METRICS_DAILY.schema),
        METRICS_DAILY.name,
        [DAY - timedelta(days=1), DAY],
    )
    ctx.lake.replace_dates(
        spark.createDataFrame(
            [
                (DAY, "user", "mallory@x", 95, 95, 4, ["brute force: 40 failures"]),
                (DAY, "ip", "203.0.113.9", 90, 90, 1, ["password spray"]),
                (DAY, "user", "carol@x", 20, 0, 0, ["carried over"]),
                (DAY, "host", "quiet", 0, 0, 1, []),
            ],
            "run_date date, entity_type string, entity_id string, risk int, risk_today int, "
            "sessions long, reasons array<string>",
        ),
        "gold.entity_risk",
        [DAY],
    )
    ctx.lake.replace_dates(
        spark.createDataFrame(
            [(DAY, "user", "mallory@x", "block", "pending_approval", "identity")],
            "run_date date, target_type string, target_id string, action string, status string, "
            "domain string",
        ),
        "gold.policy_recommendations",
        [DAY],
    )
    return ctx


def test_report_written_atomically_with_top_entities(report_lake: RunContext) -> None:
    result = run_report(report_lake, [DAY - timedelta(days=1), DAY])
    path = Path(report_lake.settings.paths.reports_dir) / DAY.isoformat() / "report.html"
    assert result.details["report"] == str(path) and result.rows == {"reports": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # no temp file left
    page = path.read_text(encoding="utf-8")
    ids = [html.unescape(i) for i in _top_ids(page)]
    assert ids == ["mallory@x", "203.0.113.9"]  # top 2 by risk
    assert "block (pending_approval, identity)" in page
    first = path.read_bytes()
    run_report(report_lake, [DAY])
    assert path.read_bytes() == first  # same inputs, same bytes


def test_report_refuses_a_date_without_metrics(report_lake: RunContext) -> None:
    with pytest.raises(PipelineError, match="no metrics for 2026-10-09"):
        run_report(report_lake, [date(2026, 10, 9)])


def test_cli_report_command(report_lake: RunContext, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli.app import app

    workdir = Path(report_lake.settings.paths.lake_root).parent
    runner = CliRunner()
    ok = runner.invoke(app, ["report", "--date", DAY.isoformat(), "--workdir", str(workdir)])
    assert ok.exit_code == 0, ok.output
    assert str(workdir / "reports" / DAY.isoformat() / "report.html") in ok.output.replace("\n", "")
    bad = runner.invoke(app, ["report", "--date", "2026-13-01", "--workdir", str(workdir)])
    assert bad.exit_code == 2 and "--date must be a date" in bad.output


def _top_ids(page: str) -> list[str]:
    table = page[page.index('id="top-entities"') :]
    table = table[: table.index("</table>")]
    return [cell.split("</td>")[0] for cell in table.split('<td class="id">')[1:]]


# --- end to end on the generated month ------------------------------------------------------


@pytest.fixture(scope="module")
def month_reports(pipeline_month: Any) -> dict[str, Any]:
    """Metrics and reports for every date of the shared month (they write only their own
    table and files, so the other modules' expectations do not depend on the order)."""
    ctx, dates = pipeline_month.ctx, pipeline_month.dates
    metrics = metrics_stage.run_metrics(ctx, dates)
    reports = run_report(ctx, dates)
    return {"metrics": metrics, "reports": reports, "month": pipeline_month}


def _day(value: str) -> date:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).date()


@pytest.mark.slow
def test_injected_incidents_are_among_the_reports_top_entities(
    month_reports: dict[str, Any],
) -> None:
    month = month_reports["month"]
    reports_dir = Path(month.ctx.settings.paths.reports_dir)
    missing = []
    for scenario in month.truth:
        first, last = _day(scenario["start"]), _day(scenario["end"])
        shown = set()
        for offset in range((last - first).days + 1):
            page = reports_dir / (first + timedelta(days=offset)).isoformat() / "report.html"
            shown |= {html.unescape(i) for i in _top_ids(page.read_text(encoding="utf-8"))}
        if scenario["entity_id"] not in shown:
            missing.append((scenario["scenario"], scenario["entity_id"], str(first)))
    assert month.truth and not missing
    assert month_reports["reports"].details["report"] == str(
        reports_dir / month.dates[-1].isoformat() / "report.html"
    )
    assert month_reports["metrics"].details["ground_truth"] is True


CHROMIUM = "/usr/bin/chromium"


def _png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """(width, height, distinct pixels of a sample of rows): a small PNG decoder (8-bit RGB/RGBA)."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(blob):
        length, kind = struct.unpack(">I4s", blob[pos : pos + 8])
        chunk = blob[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), f"unsupported PNG (depth {depth}, color {color})"
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), set()
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 7 == 0:
            colours |= {bytes(line[i : i + bpp]) for i in range(0, stride, bpp * 3)}
        prev = line
    return width, height, colours


@pytest.mark.slow
def test_report_renders_in_headless_chromium(month_reports: dict[str, Any], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if browser is None:
        pytest.skip(
            "Chromium not installed (Debian package `chromium`; scripts/install-chromium.sh)"
        )
    month = month_reports["month"]
    incident_day = _day(month.truth[0]["start"])
    page = Path(month.ctx.settings.paths.reports_dir) / incident_day.isoformat() / "report.html"
    png = tmp_path / "report.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000",
         page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert png.is_file() and png.stat().st_size > 20_000
    width, height, colours = _png_pixels(png)
    assert (width, height) == (1280, 2000)
    assert len(colours) > 20  # text, bars and tiles, not a blank page


def test_png_decoder_sees_colours(tmp_path: Path) -> None:
    """The screenshot check itself: a two-colour image decodes to two colours."""
    rows = b"".join(b"\x00" + (b"\xff\x00\x00" * 2 + b"\x00\x00\xff" * 2) for _ in range(3))
    ihdr = struct.pack(">IIBBBBB", 4, 3, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = tmp_path / "two.png"
    png.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    assert _png_pixels(png)[2] == {b"\xff\x00\x00", b"\x00\x00\xff"}


def test_report_data_is_plain_values() -> None:
    """ReportData is frozen: the renderer cannot change what it was given."""
    d = data(healthy_day())
    with pytest.raises(AttributeError):
        d.history_days = 1  # type: ignore[misc]
    assert replace(d, history_days=1).history_days == 1
