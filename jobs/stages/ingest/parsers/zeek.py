"""Zeek conn.log and dns.log: TSV with the file's own `#fields`, or JSON lines."""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.core.tables import bronze_fields
from jobs.stages.ingest.parsing import (
    Spec,
    finish_bronze,
    first_of,
    line_text,
    shared_reason,
    with_json,
    words,
)

# Zeek's default column order, for TSV files that arrive without their `#fields` header.
ZEEK_DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "zeek_conn": words(
        "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes "
        "resp_bytes conn_state local_orig local_resp missed_bytes history orig_pkts "
        "orig_ip_bytes resp_pkts resp_ip_bytes tunnel_parents"
    ),
    "zeek_dns": words(
        "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto trans_id rtt query qclass "
        "qclass_name qtype qtype_name rcode rcode_name AA TC RD RA Z answers TTLs "
        "rejected"
    ),
}

# bronze column -> Zeek field names that may hold it (TSV `#fields` names or JSON keys;
# OTRF's APT29 export writes `id_orig_h`, Stratosphere writes `detailedlabel`).
_ZEEK_ALIASES: dict[str, tuple[str, ...]] = {
    "uid": ("uid",),
    "orig_h": ("id.orig_h", "id_orig_h"),
    "orig_p": ("id.orig_p", "id_orig_p"),
    "resp_h": ("id.resp_h", "id_resp_h"),
    "resp_p": ("id.resp_p", "id_resp_p"),
    "detailed_label": ("detailedlabel", "detailed-label", "detailed_label"),
    "event_time_raw": ("ts",),
}


def zeek_keys(column: str) -> tuple[str, ...]:
    return _ZEEK_ALIASES.get(column, (column,))


ZEEK_COLUMNS: dict[str, list[str]] = {
    log: [f.name for f in bronze_fields(log) if f.name != "sensor"] + ["event_time_raw"]
    for log in ("zeek_conn", "zeek_dns")
}


# ---------------------------------------------------------------------------------------
# zeek_conn / zeek_dns: TSV with the file's own #fields, or JSON lines
# ---------------------------------------------------------------------------------------


def zeek_spec(source: str) -> Spec:
    keys: dict[str, Any] = {}
    for column in ZEEK_COLUMNS[source]:
        for key in zeek_keys(column):
            keys[key] = [None] if column == "answers" else None
    return keys


# Zeek writes `ts` as a JSON number; Spark would re-spell it (1.6e9), so take its text.
_ZEEK_TS_NUMBER = r'"ts"\s*:\s*(-?[0-9][0-9.eE+-]*)'


def _parse_zeek(lines: DataFrame, source: str) -> DataFrame:
    fmt = F.col("_zeek_fmt")
    line = F.col("__line")
    df = lines.select("*", line_text(F.col("raw")).alias("__line"))
    is_json = (fmt == "json") | ((fmt == "sniff") & F.ltrim(line).startswith("{"))
    df = df.select("*", is_json.alias("__is_json"))
    df = df.select(
        "*",
        F.when(F.col("__is_json"), line).alias("__json_line"),
        F.when(~F.col("__is_json"), F.split(line, "\t", -1)).alias("__cols"),
    )
    df = with_json(df, zeek_spec(source), line="__json_line", prefix="__z")
    got = F.size(F.col("__cols"))
    tsv_reason = F.when(
        got != F.col("_zeek_ncols"),
        F.format_string(
            "wrong number of TSV columns (got %d, header has %d)", got, F.col("_zeek_ncols")
        ),
    )
    pre = shared_reason()
    df = df.select(
        "*",
        F.when(pre.isNotNull(), pre)
        .when(F.col("__is_json"), F.col("__zreason"))
        .otherwise(tsv_reason)
        .alias("__reason"),
        F.when(F.col("__is_json"), F.col("__zshape_errors"))
        .otherwise(F.array().cast("array<string>"))
        .alias("__shape_errors"),
    )
    j = F.col("__zj")

    def tsv_value(column: str) -> Column:
        return F.get(F.col("__cols"), F.col(f"_zpos_{column}"))

    def tsv(column: str) -> Column:
        value = tsv_value(column)
        return (
            F.when(value == "-", F.lit(None)).when(value == "(empty)", F.lit("")).otherwise(value)
        )

    texts: dict[str, Column] = {"sensor": F.col("_sensor")}
    for column in ZEEK_COLUMNS[source]:
        if column == "answers":
            value = tsv_value(column)
            tsv_set = (
                F.when(value == "-", F.lit(None).cast("array<string>"))
                .when(value == "(empty)", F.array().cast("array<string>"))
                .otherwise(F.split(value, ",", -1))
            )
            texts[column] = F.when(F.col("__is_json"), j["answers"]).otherwise(tsv_set)
        elif column != "event_time_raw":
            from_json = first_of(*[j[k] for k in zeek_keys(column)])
            texts[column] = F.when(F.col("__is_json"), from_json).otherwise(tsv(column))
    ts_number = F.regexp_extract(F.col("__json_line"), _ZEEK_TS_NUMBER, 1)
    # the first `"ts": <number>` of the line may be a nested object's: use its spelling only
    # when it is the same number as the top-level `ts` Spark parsed
    # (else Spark's spelling, `1.790841605755299E9`, back in Zeek's: seconds, microseconds)
    same = ts_number.try_cast("double") == j["ts"].try_cast("double")
    respelled = F.when(j["ts"].rlike("^-?[0-9.]+[eE]"), j["ts"].try_cast("decimal(24,6)"))
    event_time = F.when(
        F.col("__is_json"),
        F.coalesce(F.when(same, ts_number), respelled.cast("string"), j["ts"]),
    ).otherwise(tsv("event_time_raw"))
    return finish_bronze(df, source, texts, event_time)


def parse_zeek_conn(lines: DataFrame) -> DataFrame:
    """Zeek conn.log lines; needs the per-file columns `number_lines` joins (`_zeek_*`)."""
    return _parse_zeek(lines, "zeek_conn")


def parse_zeek_dns(lines: DataFrame) -> DataFrame:
    """Zeek dns.log lines; needs the per-file columns `number_lines` joins (`_zeek_*`)."""
    return _parse_zeek(lines, "zeek_dns")
