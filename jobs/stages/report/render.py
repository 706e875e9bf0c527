"""The daily report page: inline SVG charts and sections from the day's metrics, every value
HTML-escaped, no script and no external resource. Pure: same data, same bytes.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from jobs.core.config import MetricsSettings

ACTION_COLORS = {
    "challenge": "#e9b949",
    "limit": "#e8833a",
    "isolate": "#c8553d",
    "block": "#7b1e3a",
    "allow": "#8aa29e",
}
DECISION_COLORS = {"approve": "#3c8d5a", "override": "#e8833a", "reject": "#7b1e3a"}
LEVEL_COLORS = {"ok": "#3c8d5a", "warning": "#e9b949", "alert": "#c8553d"}
STATUS_COLORS = {"ok": "#3c8d5a", "degraded": "#e9b949", "missing": "#c8553d"}


@dataclass(frozen=True)
class MetricPoint:
    run_date: date
    metric: str
    dimensions: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class TopEntity:
    rank: int
    entity_type: str
    entity_id: str
    risk: int
    risk_today: int
    sessions: int
    reasons: tuple[str, ...]
    actions: tuple[str, ...]  # "block (pending_approval)" per recommendation that day


@dataclass(frozen=True)
class ReportData:
    run_date: date
    metrics: tuple[MetricPoint, ...]  # the date, plus HISTORY_METRICS of the history window
    top: tuple[TopEntity, ...]
    history_days: int


# --- escaping and small helpers ----------------------------------------------------------------


def _e(value: object) -> str:
    """Escape for HTML text and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 0) -> str:
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _of(data: ReportData, metric: str, day: date | None = None) -> list[MetricPoint]:
    wanted = data.run_date if day is None else day
    return [m for m in data.metrics if m.metric == metric and m.run_date == wanted]


def _value(data: ReportData, metric: str, **dims: str) -> float | None:
    for m in _of(data, metric):
        if all(m.dimensions.get(k) == v for k, v in dims.items()):
            return m.value
    return None


# --- charts (inline SVG) ------------------------------------------------------------------------


def stacked_bar_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    title: str,
    width: int = 920,
    height: int = 240,
) -> str:
    """Vertical stacked bars: one bar per label, one colored segment per series."""
    left, right, top, bottom = 44, 10, 28, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s[1][i] for s in series) for i in range(len(labels))]
    peak = max([*totals, 1.0])
    step = plot_w / max(len(labels), 1)
    bar_w = max(step * 0.7, 1.0)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        f'stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="axis">{_e(_num(peak))}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="axis">0</text>',
    ]
    for i, label in enumerate(labels):
        x = left + i * step + (step - bar_w) / 2
        y = float(top + plot_h)
        for name, values, color in series:
            v = values[i]
            if v <= 0:
                continue
            h = plot_h * v / peak
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{_e(color)}"><title>{_e(label)}: {_e(name)} {_e(_num(v))}</title></rect>'
            )
        if len(labels) <= 16 or i % max(1, len(labels) // 10) == 0 or i == len(labels) - 1:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'class="axis">{_e(label)}</text>'
            )
    lx = left
    for name, _, color in series:
        parts.append(
            f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{_e(color)}"/>'
            f'<text x="{lx + 14}" y="{height - 7}" class="legend">{_e(name)}</text>'
        )
        lx += 24 + 8 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    color: str = "#4f6d7a",
    log_scale: bool = False,
    width: int = 920,
    height: int = 220,
) -> str:
    """Vertical bars with their value on top; `log_scale` for counts spanning decades."""
    left, right, top, bottom = 20, 10, 24, 30
    plot_w, plot_h = width - left - right, height - top - bottom

    def scale(v: float) -> float:
        return math.log10(1 + v) if log_scale else v

    peak = max([scale(v) for v in values] + [1e-9])
    step = plot_w / max(len(labels), 1)
    bar_w = step * 0.7
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        f'stroke="#999"/>',
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * scale(v) / peak if v > 0 else 0.0
        x = left + i * step + (step - bar_w) / 2
        y = top + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{_e(color)}"><title>{_e(label)}: {_e(_num(v))}</title></rect>'
            f'<text x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
            f'class="value">{_e(_num(v))}</text>'
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
            f'class="axis">{_e(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def hbar_chart(
    items: Sequence[tuple[str, float, str]],
    title: str,
    max_value: float,
    markers: Sequence[tuple[float, str, str]] = (),
    value_format: str = "{:.2f}",
    width: int = 920,
) -> str:
    """Horizontal bars (label, value, color), with vertical marker lines (value, label, color)."""
    label_w, right, row_h, top = 260, 70, 20, 22
    plot_w = width - label_w - right
    height = top + row_h * max(len(items), 1) + 10
    peak = max([max_value, *[v for _, v, _ in items], *[m[0] for m in markers], 1e-9])
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
    ]
    for i, (label, value, color) in enumerate(items):
        y = top + i * row_h
        w = plot_w * max(value, 0.0) / peak
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end" class="axis">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{_e(color)}"><title>{_e(label)}: {_e(value_format.format(value))}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" class="value">'
            f"{_e(value_format.format(value))}</text>"
        )
    for value, label, color in markers:
        x = label_w + plot_w * value / peak
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 6}" stroke="{_e(color)}" '
            f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{top - 8}" class="legend">'
            f"{_e(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# --- sections -----------------------------------------------------------------------------------


def alert_messages(data: ReportData, metrics_cfg: MetricsSettings) -> list[str]:
    """One plain-text line per `alert` row of the date (what the banner lists)."""
    lines = []
    for m in sorted(_of(data, "alert"), key=lambda m: sorted(m.dimensions.items())):
        d = m.dimensions
        condition = d.get("condition")
        if condition == "drift":
            family = "model feature" if d.get("family") == "model_feature" else "baseline statistic"
            lines.append(
                f"Drift alert: {family} {d.get('name')} has PSI {m.value:.2f} "
                f"(alert at {metrics_cfg.psi_alert:g}) against {d.get('reference')}"
            )
        elif condition == "source_gap":
            lines.append(f"Telemetry gap: source {d.get('source')} is {d.get('status')}")
        elif condition == "blast_radius":
            lines.append(
                f"Blast-radius limit: {m.value:.0f} isolate/block decision(s) in "
                f"{d.get('domain')} wait for approval (more than one run may enforce alone)"
            )
        elif condition == "decisions_refused":
            lines.append(
                f"Analyst decisions refused: {m.value:.0f} (unsigned, unknown analyst, out of "
                "time bounds or against a guardrail; see ops.refused_decisions)"
            )
        elif condition == "dq_gate_failed":
            lines.append(
                f"Data-quality gate failed: source {d.get('source')} failed "
                f"{m.value:.0f} critical expectation(s)"
            )
        else:
            lines.append(f"Alert: {', '.join(f'{k}={v}' for k, v in sorted(d.items()))}")
    return lines


def _banner(data: ReportData, metrics_cfg: MetricsSettings) -> str:
    lines = alert_messages(data, metrics_cfg)
    if not lines:
        return (
            '<p class="all-clear">No drift above the alert threshold, no telemetry gap and no '
            f"failed data-quality gate on {_e(data.run_date.isoformat())}.</p>"
        )
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return (
        '<section class="banner alert" id="alerts" role="alert">'
        f"<h2>Attention: {len(lines)} condition(s) need a look</h2><ul>{items}</ul></section>"
    )


def geo_notice(data: ReportData) -> str | None:
    """One plain-text line when the day's addresses were located with a stale database:
    the packaged GeoLite2 City (2018) or the user's own past `geo.max_age_days`."""
    for m in _of(data, "geo_database_age_days"):
        d = m.dimensions
        if d.get("stale") != "true":
            continue
        what = (
            f"the bundled {d.get('database_type')} database"
            if d.get("bundled") == "true"
            else f"the configured {d.get('database_type')} database"
        )
        return (
            f"Geolocation: {what} built {d.get('build_date')} ({m.value:,.0f} days before this "
            "date) placed today's addresses, so new_country and impossible_travel judge "
            "locations on old data. Set geo.database to a current GeoLite2/GeoIP2 or DB-IP Lite "
            "City database (docs/deployment.md, Geolocation)."
        )
    return None


def _geo_section(data: ReportData) -> str:
    notice = geo_notice(data)
    if notice is None:
        return ""
    return (
        f'<section class="banner notice" id="geolocation" role="note"><p>{_e(notice)}</p></section>'
    )


def _tile(label: str, value: str, note: str = "") -> str:
    extra = f'<div class="note">{_e(note)}</div>' if note else ""
    return f'<div class="tile"><div class="label">{_e(label)}</div><div class="big">{_e(value)}</div>{extra}</div>'


def _tiles(data: ReportData) -> str:
    total = _value(data, "recommendations_total") or 0.0
    high = sum(
        m.value for m in _of(data, "entities_by_risk_band") if m.dimensions.get("band") == "high"
    )
    sessions = sum(m.value for m in _of(data, "sessions_scored"))
    versions = sorted((m for m in _of(data, "model_version_in_use")), key=lambda m: -m.value)
    model = (
        ", ".join(
            (
                "none"
                if m.dimensions.get("model_version") == "none"
                else f"v{m.dimensions.get('model_version')}"
            )
            + f" ({_num(m.value)} sessions)"
            for m in versions
        )
        or "n/a"
    )
    tiles = [
        _tile("Recommendations", _num(total), "non-allow actions for enforcement"),
        _tile("High-risk entities", _num(high)),
        _tile("Sessions scored", _num(sessions)),
        _tile("Model in use", model),
    ]
    for labels, title in (
        ("ground_truth", "vs ground truth"),
        ("analyst_verdicts", "vs analyst verdicts"),
    ):
        precision = _value(data, "detection_precision", labels=labels)
        recall = _value(data, "detection_recall", labels=labels)
        fpr = _value(data, "detection_false_positive_rate", labels=labels)
        if precision is None and recall is None and fpr is None:
            continue
        window = next(
            (m.dimensions.get("window_days") for m in _of(data, "detection_outcomes")), "?"
        )
        tiles.append(
            _tile(
                f"Precision / recall {title}",
                f"{_pct(precision)} / {_pct(recall)}",
                f"false-positive rate {_pct(fpr)}; last {window} days",
            )
        )
        mttd = _value(data, "mean_time_to_detect_hours", labels=labels)
        if mttd is not None:
            detected = _value(data, "incidents", labels=labels, state="detected") or 0
            missed = _value(data, "incidents", labels=labels, state="undetected") or 0
            tiles.append(
                _tile(
                    f"Mean time to detect ({title[3:]})",
                    f"{mttd:.1f} h",
                    f"{detected:.0f} incident(s) detected, {missed:.0f} not yet",
                )
            )
    for population, label in (
        ("critical_assets", "critical assets"),
        ("privileged_users", "privileged users"),
    ):
        share = _value(data, "policy_coverage", population=population)
        if share is not None:
            missing = _value(
                data, "policy_coverage_entities", population=population, state="uncovered"
            )
            tiles.append(
                _tile(
                    f"Coverage: {label}",
                    _pct(share),
                    f"{missing or 0:.0f} without telemetry today",
                )
            )
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _history_dates(data: ReportData) -> list[date]:
    return [data.run_date - timedelta(days=i) for i in range(data.history_days - 1, -1, -1)]


def _actions_section(data: ReportData) -> str:
    days = _history_dates(data)
    per: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for m in data.metrics:
        if m.metric == "recommendations":
            per[m.dimensions.get("action", "?")][m.run_date] += m.value
    order = [a for a in ACTION_COLORS if a in per] + sorted(
        a for a in per if a not in ACTION_COLORS
    )
    series = [(a, [per[a][d] for d in days], ACTION_COLORS.get(a, "#4f6d7a")) for a in order]
    chart = stacked_bar_chart(
        [d.strftime("%m-%d") for d in days],
        series or [("none", [0.0] * len(days), "#cccccc")],
        f"recommendations per day and action, last {len(days)} days",
    )
    rows = "".join(
        f"<tr><td>{_e(m.dimensions.get('action'))}</td><td>{_e(m.dimensions.get('domain'))}</td>"
        f"<td>{_e(m.dimensions.get('status'))}</td><td class='n'>{_e(_num(m.value))}</td></tr>"
        for m in sorted(
            _of(data, "recommendations"),
            key=lambda m: (
                m.dimensions.get("action", ""),
                m.dimensions.get("domain", ""),
                m.dimensions.get("status", ""),
            ),
        )
    )
    table = (
        "<table><thead><tr><th>action</th><th>domain</th><th>status</th><th>count</th></tr></thead>"
        f"<tbody>{rows or '<tr><td colspan=4>no recommendations today</td></tr>'}</tbody></table>"
    )
    return f"<section><h2>Actions over time</h2>{chart}<h3>Today</h3>{table}</section>"


def _risk_section(data: ReportData) -> str:
    buckets = [f"{lo:02d}-{lo + 9:02d}" if lo < 90 else "90-100" for lo in range(0, 100, 10)]
    counts = {m.dimensions.get("bucket"): m.value for m in _of(data, "entity_risk_histogram")}
    chart = bar_chart(
        buckets,
        [counts.get(b, 0.0) for b in buckets],
        "entities per risk bucket (bar height on a log scale)",
        log_scale=True,
    )
    bands = {m.dimensions.get("band"): m.value for m in _of(data, "sessions_by_risk_band")}
    note = ", ".join(f"{b}: {_num(bands.get(b, 0.0))}" for b in ("high", "medium", "low"))
    return (
        "<section><h2>Risk distribution</h2>"
        f"{chart}<p class='caption'>Entities per risk bucket (bar height on a log scale). "
        f"Sessions by band: {_e(note)}.</p></section>"
    )


def _risk_bar(risk: int) -> str:
    color = "#7b1e3a" if risk >= 80 else "#e8833a" if risk >= 50 else "#8aa29e"
    return (
        '<svg width="104" height="12" role="img" xmlns="http://www.w3.org/2000/svg">'
        f'<title>risk {risk}</title><rect x="0" y="1" width="100" height="10" fill="#eee"/>'
        f'<rect x="0" y="1" width="{max(0, min(100, risk))}" height="10" fill="{color}"/></svg>'
    )


def _top_section(data: ReportData) -> str:
    rows = []
    for t in data.top:
        reasons = "".join(f"<li>{_e(r)}</li>" for r in t.reasons) or "<li>-</li>"
        actions = "<br>".join(_e(a) for a in t.actions) or "-"
        rows.append(
            f'<tr class="entity"><td class="n">{t.rank}</td><td>{_e(t.entity_type)}</td>'
            f'<td class="id">{_e(t.entity_id)}</td><td class="n">{t.risk} {_risk_bar(t.risk)}</td>'
            f'<td class="n">{t.risk_today}</td><td class="n">{t.sessions}</td>'
            f"<td><ul class='reasons'>{reasons}</ul></td><td>{actions}</td></tr>"
        )
    body = "".join(rows) or "<tr><td colspan=8>no entity with risk today</td></tr>"
    return (
        f"<section><h2>Top {len(data.top)} entities by risk</h2>"
        '<table id="top-entities"><thead><tr><th>#</th><th>type</th><th>entity</th><th>risk</th>'
        "<th>today</th><th>sessions</th><th>reasons</th><th>recommended</th></tr></thead>"
        f"<tbody>{body}</tbody></table></section>"
    )


def _quality_section(data: ReportData) -> str:
    status = {
        m.dimensions.get("source", "?"): m.dimensions.get("status", "?")
        for m in _of(data, "source_status")
    }
    rates = sorted(
        (
            (m.dimensions.get("source", "?"), m.dimensions.get("suite", "?"), m.value)
            for m in _of(data, "dq_pass_rate")
        ),
    )
    failed = {m.dimensions.get("source", "?"): m.value for m in _of(data, "dq_gate_failed")}

    def color(source: str, rate: float) -> str:
        # red: a critical check failed (the gate) or the source is not ok; amber: only
        # non-critical checks failed; green: everything passed
        if failed.get(source, 0) > 0 or status.get(source, "ok") != "ok":
            return STATUS_COLORS["missing"]
        return STATUS_COLORS["ok"] if rate >= 1 else STATUS_COLORS["degraded"]

    items = [(f"{src} ({suite})", rate, color(src, rate)) for src, suite, rate in rates]
    chart = (
        hbar_chart(
            items,
            "share of expectations passed per source and suite",
            1.0,
            value_format="{:.0%}",
        )
        + "<p class='caption'>Share of expectations passed; red: a critical check (the gate) "
        "failed or the source is not ok, amber: only non-critical checks failed.</p>"
        if items
        else "<p>no data-quality results for this date</p>"
    )
    volume: dict[str, dict[str, float]] = defaultdict(dict)
    for m in _of(data, "telemetry_rows"):
        volume[m.dimensions.get("source", "?")][m.dimensions.get("kind", "?")] = m.value
    sources = sorted(set(status) | set(failed) | set(volume))
    rows = "".join(
        f"<tr><td>{_e(s)}</td><td><span class='status' style='background:{_e(STATUS_COLORS.get(status.get(s, ''), '#999'))}'>"
        f"{_e(status.get(s, 'unknown'))}</span></td><td class='n'>{_e(_num(failed.get(s, 0.0)))}</td>"
        + "".join(
            f"<td class='n'>{_e(_num(volume[s][k])) if k in volume[s] else '-'}</td>"
            for k in ("raw_rows", "events", "quarantined", "duplicates")
        )
        + "</tr>"
        for s in sources
    )
    table = (
        "<table><thead><tr><th>source</th><th>status</th><th>failed critical checks</th>"
        "<th>raw rows</th><th>events</th><th>quarantined</th><th>duplicates</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    return f"<section><h2>Data quality per source</h2>{chart}{table}</section>"


def _drift_section(data: ReportData, cfg: MetricsSettings) -> str:
    parts = ["<section><h2>Drift (population stability index)</h2>"]
    references = {
        m.dimensions.get("family"): m.dimensions.get("reference")
        for m in _of(data, "drift_reference")
    }
    for metric, dim, family, title in (
        ("feature_psi", "feature", "model_feature", "Model features"),
        ("baseline_psi", "statistic", "baseline_statistic", "Baseline statistics"),
    ):
        rows = sorted(_of(data, metric), key=lambda m: -m.value)
        reference = references.get(family, "none")
        if not rows:
            parts.append(
                f"<h3>{_e(title)}</h3><p>no comparison today (reference: {_e(reference)})</p>"
            )
            continue
        items = [
            (
                m.dimensions.get(dim, "?"),
                m.value,
                LEVEL_COLORS.get(m.dimensions.get("level", "ok"), "#4f6d7a"),
            )
            for m in rows
        ]
        markers = [
            (cfg.psi_warning, f"warning {cfg.psi_warning:g}", LEVEL_COLORS["warning"]),
            (cfg.psi_alert, f"alert {cfg.psi_alert:g}", LEVEL_COLORS["alert"]),
        ]
        parts.append(
            f"<h3>{_e(title)} <span class='caption'>against {_e(reference)}</span></h3>"
            + hbar_chart(items, f"PSI per {dim} against {reference}", cfg.psi_alert * 1.2, markers)
        )
    parts.append("</section>")
    return "".join(parts)


def _decisions_section(data: ReportData) -> str:
    days = _history_dates(data)
    per: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for m in data.metrics:
        if m.metric == "analyst_decisions":
            per[m.dimensions.get("decision", "?")][m.run_date] += m.value
    order = [k for k in DECISION_COLORS if k in per] + sorted(
        k for k in per if k not in DECISION_COLORS
    )
    pending = sum(
        m.value
        for m in _of(data, "recommendations")
        if m.dimensions.get("status") == "pending_approval"
    )
    overridden = sum(
        m.value for m in _of(data, "recommendations") if m.dimensions.get("status") == "overridden"
    )
    refused = _value(data, "analyst_decisions_refused_total")
    facts = [
        f"pending approval today: {_num(pending)}",
        f"overridden today: {_num(overridden)}",
        f"analyst decisions refused today: {_num(refused or 0.0)}",
    ]
    for name in ("approval", "override", "rejection"):
        rate = _value(data, f"{name}_rate")
        if rate is not None:
            facts.append(f"{name} rate: {_pct(rate)}")
    latency = _value(data, "approval_latency_hours", decision="approve", stat="median")
    if latency is not None:
        facts.append(f"median approval latency: {latency:.1f} h")
    if not order:
        chart = f"<p>no analyst decisions in the last {len(days)} days</p>"
    else:
        chart = stacked_bar_chart(
            [d.strftime("%m-%d") for d in days],
            [(k, [per[k][d] for d in days], DECISION_COLORS.get(k, "#4f6d7a")) for k in order],
            f"analyst decisions per day, last {len(days)} days",
        )
    items = "".join(f"<li>{_e(f)}</li>" for f in facts)
    return (
        f"<section><h2>Overrides and approvals</h2>{chart}<ul class='facts'>{items}</ul></section>"
    )


STYLE = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff;max-width:1180px}
h1{margin:0 0 4px 0;font-size:24px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:14px 0 4px}.sub{color:#555;margin-bottom:12px}
.banner{background:#fbe9e7;border:2px solid #c8553d;border-radius:6px;padding:8px 16px;margin:12px 0}
.banner.notice{background:#fdf6e3;border-color:#e9b949}
.banner h2{color:#8b1e1e;border:none;margin:4px 0}.all-clear{background:#e8f3ec;border:1px solid #3c8d5a;
border-radius:6px;padding:8px 16px}.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.tile{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:200px;flex:1}
.tile .label{font-size:12px;color:#555}.tile .big{font-size:20px;font-weight:bold}
.tile .note{font-size:11px;color:#666}table{border-collapse:collapse;width:100%;font-size:12px}
th,td{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;white-space:nowrap}td.id{font-family:DejaVu Sans Mono,monospace;overflow-wrap:anywhere;min-width:17em}
ul.reasons{margin:0;padding-left:16px}.chart{max-width:100%;height:auto}
.axis,.legend,.value{font-size:11px;fill:#444}.caption{font-size:12px;color:#666;font-weight:normal}
.status{color:#fff;border-radius:3px;padding:1px 6px}footer{margin-top:32px;font-size:11px;color:#777}
"""


def render_report(data: ReportData, metrics_cfg: MetricsSettings) -> str:
    """The whole page. Pure: same data, same bytes; no script, no external resource."""
    day = data.run_date.isoformat()
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>policylake daily report {_e(day)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>policylake daily report: {_e(day)}</h1>"
        "<div class='sub'>Adaptive security policy: what was recommended, how well it worked, "
        "and whether the data behind it can be trusted.</div></header>"
        + _banner(data, metrics_cfg)
        + _geo_section(data)
        + _tiles(data)
        + _actions_section(data)
        + _risk_section(data)
        + _top_section(data)
        + _quality_section(data)
        + _drift_section(data, metrics_cfg)
        + _decisions_section(data)
        + "<footer>Generated by policylake from gold.metrics_daily, gold.entity_risk and "
        "gold.policy_recommendations (docs/metrics.md). Self-contained: no scripts, no network.</footer>"
        "</body></html>\n"
    )
