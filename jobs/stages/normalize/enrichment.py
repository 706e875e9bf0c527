"""Enrichment: canonical user ids and directory attributes, assets and their criticality,
geolocation of the distinct source addresses, network ranges.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from jobs.core.config import Settings
from jobs.core.tables import SILVER_EVENTS
from jobs.reference.geo import GeoDatabase, GeoResolver, default_resolver, is_private

# ---------------------------------------------------------------------------------------
# Enrichment
# ---------------------------------------------------------------------------------------

GEO_SCHEMA = StructType(
    [
        StructField("_geo_ip", StringType(), False),
        StructField("src_country", StringType(), True),
        StructField("src_city", StringType(), True),
        StructField("src_lat", DoubleType(), True),
        StructField("src_lon", DoubleType(), True),
        StructField("src_asn", LongType(), True),
        StructField("src_as_org", StringType(), True),
        StructField("src_is_internal", BooleanType(), True),
        StructField("src_is_known_egress", BooleanType(), True),
    ]
)
EGRESS_KINDS = ("corporate_egress", "vpn", "egress")
INTERNAL_KINDS = ("internal", "corporate_internal", "site", "datacenter")


def geo_resolver(database: str | None, asn_database: str | None) -> GeoResolver:
    """The packaged databases' shared resolver, or one on the configured files."""
    if database is None and asn_database is None:
        return default_resolver()
    return GeoResolver(database, asn_database)


def geo_database(settings: Settings) -> GeoDatabase:
    """The location database the settings select (opened, described, closed again)."""
    geo = settings.geo
    if geo.database is None and geo.asn_database is None:
        return default_resolver().database
    resolver = GeoResolver(geo.database, geo.asn_database)
    try:
        return resolver.database
    finally:
        resolver.close()


def geo_partitions(
    database: str | None, asn_database: str | None, ranges: Sequence[tuple[str, str]]
) -> Any:
    """A mapInPandas function: distinct IPs -> geolocation and range membership."""

    def lookup(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        resolver = geo_resolver(database, asn_database)
        nets = []
        for cidr, kind in ranges:
            try:
                nets.append((ipaddress.ip_network(cidr, strict=False), kind))
            except ValueError:
                continue
        for batch in batches:
            ips = batch["_geo_ip"].tolist()
            found = resolver.lookup_many(ips)
            rows = []
            for ip in ips:
                rec = found.get(ip)
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError:
                    addr = None
                kinds = {
                    k
                    for n, k in nets
                    if addr is not None and addr.version == n.version and addr in n
                }
                rows.append(
                    {
                        "_geo_ip": ip,
                        "src_country": rec.country if rec else None,
                        "src_city": rec.city if rec else None,
                        "src_lat": rec.latitude if rec else None,
                        "src_lon": rec.longitude if rec else None,
                        "src_asn": rec.asn if rec else None,
                        "src_as_org": rec.as_org if rec else None,
                        "src_is_internal": addr is not None
                        and (is_private(ip) or bool(kinds & set(INTERNAL_KINDS))),
                        "src_is_known_egress": bool(kinds & set(EGRESS_KINDS)),
                    }
                )
            out = pd.DataFrame(rows, columns=GEO_SCHEMA.names)
            out["src_asn"] = out["src_asn"].astype("Int64")
            yield out

    return lookup


def geo_table(
    events: DataFrame, settings: Settings, ranges: Sequence[tuple[str, str]]
) -> DataFrame:
    """Geolocation of the distinct source addresses, computed on the executors."""
    ips = (
        events.select(F.col("src_ip").alias("_geo_ip"))
        .where(F.col("_geo_ip").isNotNull())
        .distinct()
    )
    return ips.mapInPandas(
        geo_partitions(settings.geo.database, settings.geo.asn_database, ranges), GEO_SCHEMA
    )


def asset_lookup(assets: DataFrame) -> DataFrame:
    """(key, asset_id): `n:<name>` for asset id, FQDN and short name; `i:<ip>` for its address."""
    asset_id = F.lower(F.trim(F.col("asset_id")))
    keys = F.array(
        F.concat(F.lit("n:"), asset_id),
        F.concat(F.lit("n:"), F.lower(F.trim(F.col("fqdn")))),
        F.concat(F.lit("n:"), F.lower(F.split(F.trim(F.col("fqdn")), r"\.").getItem(0))),
        F.concat(F.lit("i:"), F.trim(F.col("ip"))),
    )
    return (
        assets.where(asset_id.isNotNull())
        .select(F.explode(keys).alias("key"), asset_id.alias("asset_id"))
        .where(F.col("key").isNotNull())
        .groupBy("key")
        .agg(F.min("asset_id").alias("asset_id"))
    )


def _join_asset(df: DataFrame, lookup: DataFrame, key: Column, out: str) -> DataFrame:
    side = lookup.select(F.col("key").alias(f"_{out}_key"), F.col("asset_id").alias(out))
    return (
        df.withColumn(f"_{out}_key", key)
        .join(F.broadcast(side), f"_{out}_key", "left")
        .drop(f"_{out}_key")
    )


def enrich(
    mapped: DataFrame,
    aliases: DataFrame,
    directory: DataFrame,
    assets: DataFrame,
    geo: DataFrame,
) -> DataFrame:
    """MAPPED rows -> SILVER_EVENTS: canonical user, directory attributes, assets, geo."""
    raw = F.lower(F.trim(F.col("user_name_raw")))
    bare = F.when(raw.contains("\\"), F.regexp_extract(raw, r"(?s)^[^\\]*\\(.+)$", 1))
    # an alias two accounts claim resolves to the smallest id, the same on every run
    alias_side = aliases.groupBy("alias_key").agg(F.min("user_id").alias("user_id"))
    df = (
        mapped.withColumn("_alias_full", raw)
        .withColumn("_alias_bare", bare)
        .join(
            alias_side.select(
                F.col("alias_key").alias("_alias_full"), F.col("user_id").alias("_uid_full")
            ),
            "_alias_full",
            "left",
        )
        .join(
            alias_side.select(
                F.col("alias_key").alias("_alias_bare"), F.col("user_id").alias("_uid_bare")
            ),
            "_alias_bare",
            "left",
        )
        .withColumn("user_id", F.coalesce("_uid_full", "_uid_bare"))
    )
    people = directory.groupBy("user_id").agg(
        F.min("account_type").alias("_account_type"),
        F.min("peer_group").alias("_peer_group"),
        F.max("privileged").alias("_dir_privileged"),
    )
    df = df.join(people, "user_id", "left")
    lookup = asset_lookup(assets)
    df = _join_asset(df, lookup, F.concat(F.lit("n:"), F.col("device_name_key")), "_dev_by_name")
    df = _join_asset(df, lookup, F.concat(F.lit("i:"), F.col("device_ip_key")), "_dev_by_ip")
    df = _join_asset(df, lookup, F.concat(F.lit("n:"), F.col("dst_name_key")), "_dst_by_name")
    df = _join_asset(df, lookup, F.concat(F.lit("i:"), F.col("dst_ip")), "_dst_by_ip")
    device_asset = F.coalesce("_dev_by_name", "_dev_by_ip")
    dst_asset = F.coalesce("_dst_by_name", "_dst_by_ip")
    short = F.split(F.col("dst_name_key"), r"\.").getItem(0)
    df = (
        df.withColumn(
            "device_id",
            F.coalesce(
                device_asset,
                F.col("device_ref"),
                F.split(F.col("device_name_key"), r"\.").getItem(0),
            ),
        )
        .withColumn("dst_host", F.coalesce(dst_asset, short))
        .withColumn("_crit_asset", F.coalesce(dst_asset, device_asset))
    )
    attrs = assets.select(
        F.lower(F.trim(F.col("asset_id"))).alias("_crit_asset"),
        F.lower(F.trim(F.col("criticality"))).alias("asset_criticality"),
        F.filter(F.col("tags"), lambda t: t != "").alias("asset_tags"),
    ).dropDuplicates(["_crit_asset"])
    df = df.join(F.broadcast(attrs), "_crit_asset", "left")
    df = df.join(geo, F.col("src_ip") == F.col("_geo_ip"), "left")
    event_uid = F.substring(
        F.sha2(F.concat_ws("|", F.col("source"), F.col("event_key")), 256), 1, 32
    )
    out = df.select(
        F.col("run_date"),
        event_uid.alias("event_uid"),
        F.col("source"),
        F.col("event_time"),
        "class_name",
        "activity_name",
        "status",
        "status_detail",
        "user_id",
        "user_name_raw",
        F.when(F.col("user_id").isNull(), F.lit("unknown"))
        .otherwise(F.coalesce(F.lower("_account_type"), F.lit("unknown")))
        .alias("user_type"),
        F.col("_peer_group").alias("peer_group"),
        "device_id",
        "src_ip",
        "src_port",
        "src_country",
        "src_city",
        "src_lat",
        "src_lon",
        "src_asn",
        "src_as_org",
        "src_is_internal",
        "src_is_known_egress",
        "dst_host",
        "dst_ip",
        "dst_port",
        "protocol",
        "bytes_in",
        "bytes_out",
        "process_name",
        "parent_process_name",
        "command_line",
        "app_name",
        "dns_query",
        "dns_rcode",
        "cloud_action",
        "cloud_service",
        "cloud_resource",
        "cloud_region",
        "logon_type",
        "session_hint",
        (
            F.coalesce(F.col("event_privileged"), F.lit(False))
            | F.coalesce(F.col("_dir_privileged"), F.lit(False))
        ).alias("is_privileged"),
        "asset_criticality",
        "asset_tags",
        F.to_date(F.col("event_time")).alias("event_date"),  # the session time zone is UTC
        "channel",
        "event_id",
        "provider",
        "event_data",
        "bronze_file",
        "bronze_line",
        "bronze_batch_id",
    )
    return out.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_EVENTS.schema.fields]
    )
