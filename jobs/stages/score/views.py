"""What the signals read: sessions and entity-day views of the scored dates, and every signal's
rows in one frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.core.config import ScoringSettings
from jobs.core.lake import dates_predicate
from jobs.model import estimators as risk_model
from jobs.stages.score import lateral, sessions, signals


@dataclass
class Views:
    """Everything the signals read, for the scored dates (`sessionized` also has the lookback day)."""

    sessionized: DataFrame
    auth: DataFrame
    auth_sources: DataFrame
    host: DataFrame
    network: DataFrame
    dns: DataFrame
    cloud: DataFrame


def build_views(
    events: DataFrame,
    dates: Sequence[date],
    cfg: ScoringSettings,
    keep: Callable[[DataFrame], DataFrame] | None = None,
) -> Views:
    """Sessions and entity-day views of `dates`; `events` may hold earlier days for lookback.

    `keep` is applied to each view as it is built (the sessions before the views read them),
    e.g. `jobs.core.spark.checkpoint` so that each is computed once.
    """
    kept = keep or (lambda df: df)
    in_dates = F.expr(dates_predicate("run_date", dates))
    sessionized = kept(sessions.sessionize(events, cfg.session_gap_minutes))
    current = sessionized.where(in_dates)
    today = events.where(in_dates)
    return Views(
        sessionized=sessionized,
        auth=kept(sessions.auth_sessions(current)),
        auth_sources=kept(sessions.auth_sources(current)),
        host=kept(sessions.host_days(today)),
        network=kept(sessions.network_days(today, cfg.internet_facing_tag)),
        dns=kept(sessions.dns_days(today)),
        cloud=kept(sessions.cloud_days(today, cfg.iam_write_actions)),
    )


def signal_rows(
    views: Views,
    events: DataFrame,
    baselines: DataFrame,
    dates: Sequence[date],
    cfg: ScoringSettings,
    office_egress: Sequence[str] | None = None,
    host_groups: DataFrame | None = None,
) -> DataFrame:
    """Every fired signal of the scored dates as `(run_date, session_id, signal)`.

    `office_egress`: CIDRs of offices' corporate egress (impossible travel anchors on them);
    `host_groups` (asset_id, peer_group): the peer group of each host (exfiltration peers).
    """
    in_dates = F.expr(dates_predicate("run_date", dates))
    current = views.sessionized.where(in_dates)
    today = events.where(in_dates)
    network = views.network
    if host_groups is not None:
        baselines = baselines.unionByName(signals.host_peer_baselines(baselines, host_groups))
        network = network.join(
            host_groups.select(F.col("asset_id").alias("entity_id"), "peer_group"),
            "entity_id",
            "left",
        )
    parts = [
        signals.impossible_travel(views.sessionized, cfg, office_egress).where(in_dates),
        signals.new_country(current, baselines, cfg),
        signals.new_device(views.auth, baselines, cfg),
        signals.off_hours(views.auth, baselines, cfg),
        signals.privileged_anomaly(views.auth, baselines, cfg),
        signals.password_spray(current, views.auth_sources, cfg),
        signals.brute_force(current, views.auth_sources, cfg),
        signals.first_time_host_access(current, baselines, cfg),
        signals.lateral_fan_out(current, baselines, cfg),
        signals.exfiltration_volume(network, baselines, cfg),
        signals.inbound_scan(views.network, cfg),
        signals.unsolicited_inbound(network, cfg),
        signals.rare_process_pair(today, baselines, cfg),
        signals.risky_iam_change(today, baselines, cfg),
        lateral.remote_execution(today, views.auth, cfg),
    ]
    return reduce(DataFrame.unionByName, parts)


_VIEW_EXTRA = ("user_type", "peer_group")


def session_frame(views: Views) -> DataFrame:
    """All views stacked in one layout, each with its `features` map."""
    kinds = {
        "auth": views.auth,
        "auth_source": views.auth_sources,
        "host": views.host,
        "network": views.network,
        "dns": views.dns,
        "cloud": views.cloud,
    }
    frames = [
        sessions.common_view(
            view.withColumn("features", risk_model.feature_columns(view, kind)), ("features",)
        )
        for kind, view in kinds.items()
    ]
    return reduce(DataFrame.unionByName, frames)
