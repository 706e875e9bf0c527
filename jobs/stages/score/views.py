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
from jobs.stages.score import sessions as S
from jobs.stages.score import signals as sig


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
    sessionized = kept(S.sessionize(events, cfg.session_gap_minutes))
    current = sessionized.where(in_dates)
    today = events.where(in_dates)
    return Views(
        sessionized=sessionized,
        auth=kept(S.auth_sessions(current)),
        auth_sources=kept(S.auth_sources(current)),
        host=kept(S.host_days(today)),
        network=kept(S.network_days(today, cfg.internet_facing_tag)),
        dns=kept(S.dns_days(today)),
        cloud=kept(S.cloud_days(today, cfg.iam_write_actions)),
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
        baselines = baselines.unionByName(sig.host_peer_baselines(baselines, host_groups))
        network = network.join(
            host_groups.select(F.col("asset_id").alias("entity_id"), "peer_group"),
            "entity_id",
            "left",
        )
    parts = [
        sig.impossible_travel(views.sessionized, cfg, office_egress).where(in_dates),
        sig.new_country(current, baselines, cfg),
        sig.new_device(views.auth, baselines, cfg),
        sig.off_hours(views.auth, baselines, cfg),
        sig.privileged_anomaly(views.auth, baselines, cfg),
        sig.password_spray(current, views.auth_sources, cfg),
        sig.brute_force(current, views.auth_sources, cfg),
        sig.first_time_host_access(current, baselines, cfg),
        sig.lateral_fan_out(current, baselines, cfg),
        sig.exfiltration_volume(network, baselines, cfg),
        sig.inbound_scan(views.network, cfg),
        sig.unsolicited_inbound(network, cfg),
        sig.rare_process_pair(today, baselines, cfg),
        sig.risky_iam_change(today, baselines, cfg),
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
        S.common_view(
            view.withColumn("features", risk_model.feature_columns(view, kind)), ("features",)
        )
        for kind, view in kinds.items()
    ]
    return reduce(DataFrame.unionByName, frames)
