"""Ingest: raw vendor files -> `bronze.<source>` (typed, with lineage) and `ops.ingest_log`.

Every line of every raw file becomes exactly one bronze row (CloudTrail S3-delivery lines
holding `{"Records": [...]}` become one row per record), parsed or marked `unparseable`
with a reason; nothing is dropped. Zeek TSV header lines are format metadata, not events:
they are counted in `ops.ingest_log.header_lines` instead. Parsers are Spark SQL
expressions only (no Python UDFs), and each source is read in one Spark job for the whole
date range, plus one small aggregate that gives every line its exact 1-based number.
docs/ingest.md describes the rules per format.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DateType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from jobs.lake import Lake, require_columns
from jobs.pipeline import PipelineError, RunContext, StageResult
from jobs.schemas import BRONZE_FIELDS, DQ_RESULTS, INGEST_LOG, bronze_schema

__all__ = [
    "INVALID_JSON",
    "NOT_AN_SSHD_LINE",
    "NOT_A_JSON_OBJECT",
    "NOT_A_SYSLOG_LINE",
    "PARSERS",
    "RawFile",
    "batch_id",
    "ingest_source",
    "late_deliveries",
    "number_lines",
    "parse_cloudtrail",
    "parse_idp",
    "parse_sshd",
    "parse_windows",
    "parse_zeek_conn",
    "parse_zeek_dns",
    "plan_files",
    "raw_listing",
    "read_raw_lines",
    "run_ingest",
    "schema_drift_rows",
    "sensor_of",
    "write_ingest_log",
    "zeek_layout",
]

PARSED = "parsed"
UNPARSEABLE = "unparseable"

# `_parse_error` vocabulary (docs/ingest.md). The TSV reason carries the two counts.
EMPTY_LINE = "empty line"
NUL_BYTES = "NUL bytes in line"
INVALID_JSON = "invalid JSON"
NOT_A_JSON_OBJECT = "not a JSON object"
EMPTY_RECORDS = "empty Records array"
NOT_A_SYSLOG_LINE = "not a syslog line"
NOT_AN_SSHD_LINE = "not an sshd syslog line"

# A value that is absent rather than wrong: Zeek's unset `-`, Windows' `-` placeholder.
UNSET_TOKENS = ("", "-")
_CORRUPT = "__corrupt_record"
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate", ".xz")
_ZEEK_HEADER_PREFIX = "#"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Zeek's default column order, for TSV files that arrive without their `#fields` header.
ZEEK_DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "zeek_conn": _words(
        "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes "
        "resp_bytes conn_state local_orig local_resp missed_bytes history orig_pkts "
        "orig_ip_bytes resp_pkts resp_ip_bytes tunnel_parents"
    ),
    "zeek_dns": _words(
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


def _zeek_keys(column: str) -> tuple[str, ...]:
    return _ZEEK_ALIASES.get(column, (column,))


# ---------------------------------------------------------------------------------------
# Files: listing, per-file plan (line offsets, batch ids, Zeek layout) and line numbers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawFile:
    """One raw file of one date folder, as the block aggregate saw it."""

    path: str  # as Spark's `_metadata.file_path` spells it (a URI)
    run_date: date
    size: int
    lines: int
    header_lines: int
    blocks: tuple[tuple[int, int, int], ...]  # (block start, first row id, line offset)
    zeek_fields: tuple[str, ...] | None = None  # the file's own `#fields`, if any

    @property
    def name(self) -> str:
        return unquote(urlsplit(self.path).path.rsplit("/", 1)[-1])


def batch_id(source: str, run_date: date, files: Sequence[tuple[str, int]]) -> str:
    """Deterministic id of one (source, date) delivery: same files and sizes, same id."""
    digest = hashlib.sha256(f"{source}\n{run_date.isoformat()}\n".encode())
    for name, size in sorted(files):
        digest.update(f"{name}\t{size}\n".encode())
    return digest.hexdigest()[:32]


def sensor_of(file_name: str) -> str:
    """`conn.sensor01.log` -> `sensor01`; `dns.json.gz` -> `dns`; else the file stem."""
    stem = file_name
    for suffix in _COMPRESSION_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    while True:
        base, dot, ext = stem.rpartition(".")
        if dot and base and ext in ("log", "json", "jsonl", "ndjson", "labeled", "tsv"):
            stem = base
        else:
            break
    for prefix in ("conn.", "dns."):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix) :]
    return stem


def _spark_path(uri: str) -> str:
    """`file:///a%20b` (inputFiles) -> `file:/a%20b` (the `_metadata.file_path` spelling)."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return uri
    if parts.netloc:
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    return f"{parts.scheme}:{parts.path}"


def _hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm: Any = spark._jvm  # type: ignore[attr-defined]
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark._jsc.hadoopConfiguration()), hpath  # type: ignore[attr-defined]


def list_date_dirs(
    spark: SparkSession, raw_root: str, source: str, dates: Sequence[date]
) -> dict[date, str]:
    """The `raw/<source>/<date>/` folders that exist, in one listing (local or object store)."""
    fs, base = _hadoop_fs(spark, f"{raw_root.rstrip('/')}/{source}")
    if not fs.exists(base):
        return {}
    present = {
        status.getPath().getName(): status.getPath().toString()
        for status in fs.listStatus(base)
        if status.isDirectory()
    }
    return {d: present[d.isoformat()] for d in dates if d.isoformat() in present}


def read_raw_lines(spark: SparkSession, folders: Sequence[str]) -> DataFrame:
    """Every line of every file under `folders`, with where it came from and a row id.

    Only `\\n` ends a line (a `\\r` before it stays in `raw`), so line numbers match what
    `wc -l`, editors and the generator's manifest count. `_row_id` numbers rows within each
    input split; `number_lines` turns it into the line number in the file.
    """
    return (
        spark.read.option("lineSep", "\n")
        .option("recursiveFileLookup", "true")
        .text(list(folders))
        .select(
            F.col("value"),
            F.col("_metadata.file_path").alias("_file"),
            F.col("_metadata.file_block_start").alias("_block_start"),
            F.col("_metadata.file_size").alias("_file_size"),
            F.monotonically_increasing_id().alias("_row_id"),
        )
    )


def file_blocks(raw: DataFrame, source: str) -> DataFrame:
    """One row per (file, input split): the split's first row id and line count.

    Rows of one split get consecutive ids, so `id - first id` is the position in the split
    and the counts of the earlier splits of the file give the offset. For Zeek it also
    counts header lines and picks the file's `#fields` line (both tiny to collect).
    """
    zeek = source.startswith("zeek_")
    aggregates = [
        F.min("_row_id").alias("first_row_id"),
        F.count(F.lit(1)).alias("lines"),
        F.max("_file_size").alias("size"),
        F.sum(F.col("value").startswith(_ZEEK_HEADER_PREFIX).cast("long")).alias("hash_lines")
        if zeek
        else F.lit(0).cast("long").alias("hash_lines"),
        F.min(F.when(F.col("value").startswith("#fields"), F.col("value"))).alias("fields_line")
        if zeek
        else F.lit(None).cast("string").alias("fields_line"),
    ]
    return raw.groupBy("_file", "_block_start").agg(*aggregates)


def _date_of(path: str, source: str) -> date | None:
    segments = unquote(urlsplit(path).path).split("/")
    for i in range(len(segments) - 2, -1, -1):
        if segments[i] == source:
            try:
                return date.fromisoformat(segments[i + 1])
            except ValueError:
                return None
    return None


def plan_files(
    source: str,
    blocks: Sequence[Mapping[str, Any]],
    empty_files: Mapping[str, int] | None = None,
) -> list[RawFile]:
    """Per-file line offsets, header counts and `#fields` from the collected block rows.

    `empty_files` maps files that produced no line at all (path -> size) so they still
    appear in `ops.ingest_log` and in the batch id.
    """
    per_file: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in blocks:
        per_file[row["_file"]].append(row)
    files: list[RawFile] = []
    for path, rows in sorted(per_file.items()):
        run_date = _date_of(path, source)
        if run_date is None:
            raise PipelineError(f"ingest {source}: cannot tell the date folder of {path}")
        rows = sorted(rows, key=lambda r: int(r["_block_start"]))
        offset, placed = 0, []
        for row in rows:
            placed.append((int(row["_block_start"]), int(row["first_row_id"]), offset))
            offset += int(row["lines"])
        fields_lines = [r["fields_line"] for r in rows if r["fields_line"]]
        fields = tuple(fields_lines[0].rstrip("\r").split("\t")[1:]) if fields_lines else None
        hash_lines = sum(int(r["hash_lines"] or 0) for r in rows)
        is_json = fields is None and _json_file_name(path)
        files.append(
            RawFile(
                path=path,
                run_date=run_date,
                size=max(int(r["size"]) for r in rows),
                lines=offset,
                header_lines=0 if is_json else hash_lines,
                blocks=tuple(placed),
                zeek_fields=fields,
            )
        )
    for path, size in sorted((empty_files or {}).items()):
        if path in per_file:
            continue
        run_date = _date_of(path, source)
        if run_date is not None:
            files.append(RawFile(path, run_date, size, 0, 0, ()))
    return files


def _json_file_name(path: str) -> bool:
    name = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.endswith((".json", ".jsonl", ".ndjson"))


def batch_ids(source: str, files: Sequence[RawFile]) -> dict[date, str]:
    by_date: dict[date, list[tuple[str, int]]] = defaultdict(list)
    for f in files:
        by_date[f.run_date].append((f.name, f.size))
    return {d: batch_id(source, d, named) for d, named in by_date.items()}


_ZEEK_COLUMNS: dict[str, list[str]] = {
    log: [f.name for f in BRONZE_FIELDS[log] if f.name != "sensor"] + ["event_time_raw"]
    for log in ("zeek_conn", "zeek_dns")
}


def zeek_layout(source: str, path: str, fields: Sequence[str] | None) -> dict[str, Any]:
    """How to read one Zeek file: format (tsv/json/sniff), column count, field positions.

    Positions come from the file's own `#fields` line (files differ: Stratosphere adds
    `label`, `detailedlabel`); a TSV file without one is read in Zeek's default order.
    """
    if fields is not None:
        fmt = "tsv"
    elif _json_file_name(path):
        fmt = "json"
    else:
        fmt = "sniff"
    order = list(fields) if fields is not None else list(ZEEK_DEFAULT_FIELDS[source])
    positions = {}
    for column in _ZEEK_COLUMNS[source]:
        found = [order.index(k) for k in _zeek_keys(column) if k in order]
        positions[f"_zpos_{column}"] = found[0] if found else -1
    return {"_zeek_fmt": fmt, "_zeek_ncols": len(order), **positions}


def _file_table_schema(source: str) -> StructType:
    fields = [
        StructField("_file", StringType(), False),
        StructField("_block_start", LongType(), False),
        StructField("_first_row_id", LongType(), False),
        StructField("_line_offset", LongType(), False),
        StructField("run_date", DateType(), False),
        StructField("_batch_id", StringType(), False),
    ]
    if source.startswith("zeek_"):
        fields += [
            StructField("_sensor", StringType(), True),
            StructField("_zeek_fmt", StringType(), False),
            StructField("_zeek_ncols", IntegerType(), False),
            *[StructField(f"_zpos_{c}", IntegerType(), False) for c in _ZEEK_COLUMNS[source]],
        ]
    return StructType(fields)


def file_table(
    spark: SparkSession, source: str, files: Sequence[RawFile], ids: Mapping[date, str]
) -> DataFrame:
    """The small per-(file, split) table that is broadcast to the lines."""
    rows = []
    for f in files:
        extra: dict[str, Any] = {}
        if source.startswith("zeek_"):
            extra = {"_sensor": sensor_of(f.name), **zeek_layout(source, f.path, f.zeek_fields)}
        for block_start, first_row_id, offset in f.blocks:
            rows.append(
                {
                    "_file": f.path,
                    "_block_start": block_start,
                    "_first_row_id": first_row_id,
                    "_line_offset": offset,
                    "run_date": f.run_date,
                    "_batch_id": ids[f.run_date],
                    **extra,
                }
            )
    schema = _file_table_schema(source)
    return spark.createDataFrame([tuple(r[n] for n in schema.names) for r in rows], schema)


def number_lines(raw: DataFrame, files: DataFrame, source: str) -> DataFrame:
    """Lines with lineage: run_date, source, _file, exact 1-based `_line`, `_batch_id`, raw.

    Zeek header lines (`#...` in TSV files) are removed here; `ops.ingest_log` counts them.
    """
    joined = raw.join(F.broadcast(files), ["_file", "_block_start"], "inner")
    line = F.col("_line_offset") + (F.col("_row_id") - F.col("_first_row_id")) + F.lit(1)
    columns = [
        F.col("run_date"),
        F.lit(source).alias("source"),
        F.col("_file"),
        line.alias("_line"),
        F.col("_batch_id"),
        F.col("value").alias("raw"),
    ]
    if source.startswith("zeek_"):
        extra = [c for c in files.columns if c.startswith(("_zpos_", "_zeek_")) or c == "_sensor"]
        joined = joined.where(
            ~((F.col("_zeek_fmt") != "json") & F.col("value").startswith(_ZEEK_HEADER_PREFIX))
        )
        columns += [F.col(c) for c in extra]
    return joined.select(*columns)


# ---------------------------------------------------------------------------------------
# Shared parsing machinery
# ---------------------------------------------------------------------------------------

Spec = Mapping[str, Any]  # key -> None (string leaf) | Spec (object) | [None] | [Spec] (array)


def _struct(spec: Spec) -> StructType:
    def leaf(sub: Any) -> DataType:
        if sub is None:
            return StringType()
        if isinstance(sub, list):
            return ArrayType(leaf(sub[0]))
        return _struct(sub)

    return StructType([StructField(name, leaf(sub), True) for name, sub in spec.items()])


def _line(raw: Column) -> Column:
    """The line without a Windows `\\r` before its `\\n` (raw keeps it)."""
    return F.when(raw.endswith("\r"), raw.substr(F.lit(1), F.length(raw) - 1)).otherwise(raw)


def _pre_reason() -> Column:
    """Reasons every format shares: nothing on the line, or NUL bytes in it."""
    line = F.col("__line")
    return (
        F.when(F.trim(line) == "", F.lit(EMPTY_LINE))
        # `contains` compares bytes; `instr` walks characters, and an invalid UTF-8 lead
        # byte makes it step over the NUL that follows it.
        .when(line.contains("\u0000"), F.lit(NUL_BYTES))
        .otherwise(F.lit(None).cast("string"))
    )


def _quote(text: Column) -> Column:
    return F.concat(F.lit("'"), F.substring(text, 1, 80), F.lit("'"))


def with_json(df: DataFrame, spec: Spec, line: str = "__line", prefix: str = "__") -> DataFrame:
    """Parse `line` as one JSON object: adds `{prefix}j` (struct), `{prefix}reason`, and
    `{prefix}shape_errors` (array of "key: '...' is not an object/array").

    Leaves are strings, so a number where text was expected (or the reverse) never nulls
    the record: `try_cast` later decides. Objects and arrays are declared, so Spark's
    partial results keep the rest of a record when one of them has the wrong JSON type;
    only then (rare) is the line parsed a second time, with every top-level key as text,
    to tell "valid JSON with a wrongly typed key" from "invalid JSON".
    """
    schema = _struct(spec)
    full = StructType([*schema.fields, StructField(_CORRUPT, StringType(), True)])
    flat = StructType(
        [StructField(f.name, StringType(), True) for f in schema.fields]
        + [StructField(_CORRUPT, StringType(), True)]
    )
    text = F.col(line)
    pre = F.col(f"{prefix}pre")
    j = F.col(f"{prefix}j")
    flat_col = F.col(f"{prefix}flat")
    pre_reason = _pre_reason() if line == "__line" else F.lit(None).cast("string")
    df = df.select("*", pre_reason.alias(f"{prefix}pre"))
    parsed = F.when(pre.isNull() & text.isNotNull(), F.from_json(text, full, _JSON_OPTIONS))
    df = df.select("*", parsed.alias(f"{prefix}j"))
    reparsed = F.when(j[_CORRUPT].isNotNull(), F.from_json(text, flat, _JSON_OPTIONS))
    df = df.select("*", reparsed.alias(f"{prefix}flat"))
    looks_like_value = F.ltrim(text).rlike(r'^(\[|"|-?[0-9]|true\b|false\b|null\b)')
    reason = (
        F.when(pre.isNotNull(), pre)
        .when(text.isNull() | j.isNull(), F.lit(INVALID_JSON))
        .when(j[_CORRUPT].isNull(), F.lit(None).cast("string"))
        .when(flat_col[_CORRUPT].isNull(), F.lit(None).cast("string"))
        .when(looks_like_value, F.lit(NOT_A_JSON_OBJECT))
        .otherwise(F.lit(INVALID_JSON))
    )
    nested = [f for f in schema.fields if not isinstance(f.dataType, StringType)]
    shape = [
        F.when(
            flat_col[f.name].isNotNull() & j[f.name].isNull(),
            F.concat(
                F.lit(f"{f.name}: "),
                _quote(flat_col[f.name]),
                F.lit(
                    " is not an array" if isinstance(f.dataType, ArrayType) else " is not an object"
                ),
            ),
        )
        for f in nested
    ]
    found = F.filter(F.array(*shape), lambda x: x.isNotNull()) if shape else F.array()
    # A wrongly typed key deeper down: Spark nulls it and keeps the rest; say so once.
    fallback = F.array(F.lit("record: a nested value has the wrong JSON type"))
    shape_errors = F.when(
        flat_col[_CORRUPT].isNull() & j[_CORRUPT].isNotNull(),
        F.when(F.size(found) > 0, found).otherwise(fallback),
    ).otherwise(F.array().cast("array<string>"))
    return df.select(
        "*", reason.alias(f"{prefix}reason"), shape_errors.alias(f"{prefix}shape_errors")
    )


def _type_name(data_type: DataType) -> str:
    return data_type.simpleString()


def finish_bronze(
    df: DataFrame,
    source: str,
    texts: Mapping[str, Column],
    event_time: Column,
    raw: Column | None = None,
) -> DataFrame:
    """Typed bronze columns from their text, with `_cast_errors`; null when unparseable.

    `texts` maps each bronze column to its text (or, for array columns, the array).
    A non-empty value that does not cast to the column's type is left null and recorded
    as "<column>: '<value>' is not <type>".
    """
    fields = BRONZE_FIELDS[source]
    # Each text is computed once (regexes, JSON lookups), then cast once, then used.
    df = df.select(
        "*",
        *[texts.get(f.name, F.lit(None).cast("string")).alias(f"__t_{f.name}") for f in fields],
        (raw if raw is not None else F.col("raw")).alias("__raw"),
        event_time.cast("string").alias("__t_event_time_raw"),
    )
    scalar = [f for f in fields if not isinstance(f.dataType, StringType | ArrayType)]
    df = df.select(
        "*", *[F.col(f"__t_{f.name}").try_cast(f.dataType).alias(f"__v_{f.name}") for f in scalar]
    )
    ok = F.col("__reason").isNull()
    cast_errors = [
        F.when(
            F.col(f"__t_{f.name}").isNotNull()
            & ~F.col(f"__t_{f.name}").isin(*UNSET_TOKENS)
            & F.col(f"__v_{f.name}").isNull(),
            F.concat(
                F.lit(f"{f.name}: "),
                _quote(F.col(f"__t_{f.name}")),
                F.lit(f" is not {_type_name(f.dataType)}"),
            ),
        )
        for f in scalar
    ]
    found = F.filter(F.array(*cast_errors), lambda x: x.isNotNull()) if cast_errors else F.array()
    all_errors = F.concat(F.col("__shape_errors"), found.cast("array<string>"))
    typed = [
        F.when(ok, F.col(f"__v_{f.name}" if f in scalar else f"__t_{f.name}"))
        .cast(f.dataType)
        .alias(f.name)
        for f in fields
    ]
    return df.select(
        F.col("run_date"),
        F.col("source"),
        F.col("_file"),
        F.col("_line"),
        F.col("_batch_id"),
        F.col("__raw").alias("raw"),
        F.when(ok, F.lit(PARSED)).otherwise(F.lit(UNPARSEABLE)).alias("_parse_status"),
        F.col("__reason").alias("_parse_error"),
        F.when(ok & (F.size(all_errors) > 0), all_errors).alias("_cast_errors"),
        F.when(ok, F.col("__t_event_time_raw")).alias("event_time_raw"),
        *typed,
    )


def _start_json(df: DataFrame, spec: Spec) -> DataFrame:
    return with_json(df.select("*", _line(F.col("raw")).alias("__line")), spec)


def _first(*columns: Column) -> Column:
    return F.coalesce(*columns) if len(columns) > 1 else columns[0]


# ---------------------------------------------------------------------------------------
# idp: Okta System Log
# ---------------------------------------------------------------------------------------

_OKTA_REF = {"id": None, "type": None, "alternateId": None, "displayName": None}
OKTA_SPEC: Spec = {
    "uuid": None,
    "published": None,
    "eventType": None,
    "severity": None,
    "displayMessage": None,
    "actor": _OKTA_REF,
    "client": {
        "ipAddress": None,
        "device": None,
        "zone": None,
        "userAgent": {"rawUserAgent": None, "os": None, "browser": None},
    },
    "device": {"id": None, "name": None, "os_platform": None},
    "outcome": {"result": None, "reason": None},
    "target": [_OKTA_REF],
    "authenticationContext": {"externalSessionId": None, "authenticationStep": None},
    "transaction": {"id": None, "type": None},
}


def parse_idp(lines: DataFrame) -> DataFrame:
    """Okta System Log events; `target_app` is the first target of type AppInstance."""
    df = _start_json(lines, OKTA_SPEC)
    j = F.col("__j")
    app = F.get(F.filter(j["target"], lambda t: t["type"] == "AppInstance"), 0)
    texts = {
        "uuid": j["uuid"],
        "event_type": j["eventType"],
        "severity": j["severity"],
        "display_message": j["displayMessage"],
        "actor_id": j["actor"]["id"],
        "actor_type": j["actor"]["type"],
        "actor_alternate_id": j["actor"]["alternateId"],
        "actor_display_name": j["actor"]["displayName"],
        "client_ip": j["client"]["ipAddress"],
        "user_agent": j["client"]["userAgent"]["rawUserAgent"],
        "client_os": j["client"]["userAgent"]["os"],
        "client_browser": j["client"]["userAgent"]["browser"],
        "client_device": j["client"]["device"],
        "device_id": j["device"]["id"],
        "device_name": j["device"]["name"],
        "outcome_result": j["outcome"]["result"],
        "outcome_reason": j["outcome"]["reason"],
        "target_app": app["displayName"],
        "target_app_id": app["id"],
        "external_session_id": j["authenticationContext"]["externalSessionId"],
        "transaction_id": j["transaction"]["id"],
    }
    return finish_bronze(df, "idp", texts, j["published"])


# ---------------------------------------------------------------------------------------
# windows: NXLog-flattened Security/Sysmon (OTRF), or Winlogbeat's nested shape
# ---------------------------------------------------------------------------------------

# bronze column -> event field name (flat key in NXLog, `winlog.event_data.<name>` in Winlogbeat)
WINDOWS_EVENT_DATA: dict[str, str] = {
    "target_user_name": "TargetUserName",
    "target_domain_name": "TargetDomainName",
    "subject_user_name": "SubjectUserName",
    "subject_domain_name": "SubjectDomainName",
    "logon_type": "LogonType",
    "ip_address": "IpAddress",
    "ip_port": "IpPort",
    "workstation_name": "WorkstationName",
    "status": "Status",
    "sub_status": "SubStatus",
    "process_name": "ProcessName",
    "new_process_name": "NewProcessName",
    "parent_process_name": "ParentProcessName",
    "command_line": "CommandLine",
    "image": "Image",
    "parent_image": "ParentImage",
    "sysmon_user": "User",
    "share_name": "ShareName",
    "privilege_list": "PrivilegeList",
    "source_ip": "SourceIp",
    "destination_ip": "DestinationIp",
    "destination_port": "DestinationPort",
}
_WINDOWS_SYSTEM = _words(
    "@timestamp EventTime Hostname Channel EventID EventType EventTypeOrignal RecordNumber"
)
WINDOWS_SPEC: Spec = {
    **dict.fromkeys(_WINDOWS_SYSTEM),
    **dict.fromkeys(WINDOWS_EVENT_DATA.values()),
    "winlog": {
        "event_id": None,
        "channel": None,
        "computer_name": None,
        "record_id": None,
        "event_data": dict.fromkeys(WINDOWS_EVENT_DATA.values()),
    },
}


def parse_windows(lines: DataFrame) -> DataFrame:
    """Flat NXLog keys first; Winlogbeat's `winlog.*` fills what they leave empty."""
    df = _start_json(lines, WINDOWS_SPEC)
    j = F.col("__j")
    w = j["winlog"]
    texts = {
        "event_time_local": j["EventTime"],
        "hostname": _first(j["Hostname"], w["computer_name"]),
        "channel": _first(j["Channel"], w["channel"]),
        "event_id": _first(j["EventID"], w["event_id"]),
        # OTRF's Logstash kept NXLog's EventType as `EventTypeOrignal` on some records.
        "event_type": _first(j["EventType"], j["EventTypeOrignal"]),
        "record_number": _first(j["RecordNumber"], w["record_id"]),
    }
    for column, key in WINDOWS_EVENT_DATA.items():
        texts[column] = _first(j[key], w["event_data"][key])
    return finish_bronze(df, "windows", texts, j["@timestamp"])


# ---------------------------------------------------------------------------------------
# cloudtrail: one record per line, or an S3-delivery line {"Records": [...]}
# ---------------------------------------------------------------------------------------

CLOUDTRAIL_SPEC: Spec = {
    "eventVersion": None,
    "eventTime": None,
    "@timestamp": None,
    "eventSource": None,
    "eventName": None,
    "awsRegion": None,
    "sourceIPAddress": None,
    "userAgent": None,
    "userIdentity": {
        "type": None,
        "principalId": None,
        "arn": None,
        "accountId": None,
        "accessKeyId": None,
        "userName": None,
    },
    "requestParameters": None,
    "responseElements": None,
    "errorCode": None,
    "errorMessage": None,
    "requestID": None,
    "eventID": None,
    "eventType": None,
    "readOnly": None,
    "recipientAccountId": None,
}


def parse_cloudtrail(lines: DataFrame) -> DataFrame:
    """CloudTrail records. A `{"Records": [...]}` line yields one row per record: the rows
    share the line's `_line`, and `raw` holds that record's JSON."""
    df = lines.withColumn("__line", _line(F.col("raw")))
    df = with_json(df, {**CLOUDTRAIL_SPEC, "Records": [None]}, prefix="__l")
    records = F.col("__lj")["Records"]
    is_delivery = F.col("__lreason").isNull() & records.isNotNull()
    df = df.withColumn(
        "__record",
        F.explode_outer(
            F.when(is_delivery & (F.size(records) > 0), records).otherwise(
                F.array(F.lit(None).cast("string"))
            )
        ),
    )
    # Records of a delivery line are parsed as lines of their own.
    df = with_json(df, CLOUDTRAIL_SPEC, line="__record", prefix="__r")
    df = df.select(
        "*",
        F.when(F.col("__record").isNotNull(), F.col("__rj"))
        .otherwise(F.col("__lj").dropFields("Records"))
        .alias("__j"),
        F.when(F.col("__record").isNotNull(), F.col("__rreason"))
        .when(is_delivery, F.lit(EMPTY_RECORDS))
        .otherwise(F.col("__lreason"))
        .alias("__reason"),
        F.when(F.col("__record").isNotNull(), F.col("__rshape_errors"))
        .otherwise(F.col("__lshape_errors"))
        .alias("__shape_errors"),
    )
    j = F.col("__j")
    u = j["userIdentity"]
    texts = {
        "event_id": j["eventID"],
        "event_name": j["eventName"],
        "event_source": j["eventSource"],
        "event_type": j["eventType"],
        "aws_region": j["awsRegion"],
        "source_ip": j["sourceIPAddress"],
        "user_agent": j["userAgent"],
        "identity_type": u["type"],
        "principal_id": u["principalId"],
        "identity_arn": u["arn"],
        "account_id": u["accountId"],
        "access_key_id": u["accessKeyId"],
        "user_name": u["userName"],
        "error_code": j["errorCode"],
        "error_message": j["errorMessage"],
        "request_parameters": j["requestParameters"],
        "response_elements": j["responseElements"],
        "read_only": j["readOnly"],
        "recipient_account_id": j["recipientAccountId"],
    }
    return finish_bronze(
        df,
        "cloudtrail",
        texts,
        _first(j["eventTime"], j["@timestamp"]),
        raw=F.coalesce(F.col("__record"), F.col("raw")),
    )


# ---------------------------------------------------------------------------------------
# zeek_conn / zeek_dns: TSV with the file's own #fields, or JSON lines
# ---------------------------------------------------------------------------------------


def _zeek_spec(source: str) -> Spec:
    keys: dict[str, Any] = {}
    for column in _ZEEK_COLUMNS[source]:
        for key in _zeek_keys(column):
            keys[key] = [None] if column == "answers" else None
    return keys


# Zeek writes `ts` as a JSON number; Spark would re-spell it (1.6e9), so take its text.
_ZEEK_TS_NUMBER = r'"ts"\s*:\s*(-?[0-9][0-9.eE+-]*)'


def _parse_zeek(lines: DataFrame, source: str) -> DataFrame:
    fmt = F.col("_zeek_fmt")
    line = F.col("__line")
    df = lines.select("*", _line(F.col("raw")).alias("__line"))
    is_json = (fmt == "json") | ((fmt == "sniff") & F.ltrim(line).startswith("{"))
    df = df.select("*", is_json.alias("__is_json"))
    df = df.select(
        "*",
        F.when(F.col("__is_json"), line).alias("__json_line"),
        F.when(~F.col("__is_json"), F.split(line, "\t", -1)).alias("__cols"),
    )
    df = with_json(df, _zeek_spec(source), line="__json_line", prefix="__z")
    got = F.size(F.col("__cols"))
    tsv_reason = F.when(
        got != F.col("_zeek_ncols"),
        F.format_string(
            "wrong number of TSV columns (got %d, header has %d)", got, F.col("_zeek_ncols")
        ),
    )
    pre = _pre_reason()
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
    for column in _ZEEK_COLUMNS[source]:
        if column == "answers":
            value = tsv_value(column)
            tsv_set = (
                F.when(value == "-", F.lit(None).cast("array<string>"))
                .when(value == "(empty)", F.array().cast("array<string>"))
                .otherwise(F.split(value, ",", -1))
            )
            texts[column] = F.when(F.col("__is_json"), j["answers"]).otherwise(tsv_set)
        elif column != "event_time_raw":
            from_json = _first(*[j[k] for k in _zeek_keys(column)])
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


# ---------------------------------------------------------------------------------------
# sshd: BSD syslog or RFC 3339 syslog lines
# ---------------------------------------------------------------------------------------

# [<PRI>] [timestamp] host program[pid]: message. The timestamp is optional so a line whose
# stamp was lost still parses (event_time_raw null, for validation to flag); anything that
# looks like a stamp is kept as text, valid or not.
# (?s): a CR, NEL or U+2028 inside a line is an ordinary character (Java's `.` would stop at
# it, and a user name carrying one would turn a failed login into "not a syslog line").
SYSLOG_LINE = (
    r"(?s)^(?:<\d{1,3}>)?"
    r"(?:([A-Z][a-z]{2} +\d{1,2} +\d{1,2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}T\S+) +)?"
    r"(\S+) +([^\s\[\]:]+)(?:\[(\d+)\])?: ?(.*)$"
)
# sshd itself, OpenSSH >= 9.8's per-session binaries, and old PAM-tagged lines.
SSHD_PROGRAM = r"^(?:\S*/)?sshd(?:-session|-auth)?(?:\(pam_unix\))?$"

# rsyslog's "message repeated 5 times: [ Failed password for ...]" stands for the inner message.
_REPEATED = r"(?s)^message repeated \d+ times: \[ ?(.*?)\]?$"

# One regex per message kind, rewritten to the same group layout so one `regexp_replace`
# and a `split` give every field: user, src_ip, src_port, auth_method, invalid marker.
_SEP = "\x01"
SSHD_MESSAGES: dict[str, tuple[str, str]] = {
    "accepted": (r"^Accepted (\S+) for (.+?) from (\S+) port (\d+).*$", "$2|$3|$4|$1|"),
    "failed": (
        r"^Failed (\S+) for (invalid user )?(.*?) from (\S+) port (\d+).*$",
        "$3|$4|$5|$1|$2",
    ),
    "invalid_user": (r"^Invalid user (.*?) from (\S+)(?: port (\d+))?.*$", "$1|$2|$3||invalid"),
    "pam_auth_failure": (
        r"^(?:(?=.*?\buser=(\S+)))?(?:(?=.*?\brhost=(\S+)))?.*$",
        "$1|$2|||",
    ),
    "session_opened": (r"^.*?session opened for user ([^\s(]+).*$", "$1||||"),
    "session_closed": (r"^.*?session closed for user ([^\s(]+).*$", "$1||||"),
    "connection_closed": (
        r"^Connection (?:closed|reset) by (?:(invalid|authenticating) user (.*?) )?(\S+)"
        r"(?: port (\d+))?.*$",
        "$2|$3|$4||$1",
    ),
    "received_disconnect": (r"^Received disconnect from (\S+?)(?: port (\d+))?:.*$", "|$1|$2||"),
    "disconnected": (
        r"^Disconnected from (?:(invalid |authenticating )?user (\S+) )?(\S+) port (\d+).*$",
        "$2|$3|$4||$1",
    ),
    "break_in_attempt": (
        r"^(?:.*?\[([0-9A-Fa-f.:]+)\]|Address (\S+) maps to).*$",
        "|$1$2|||",
    ),
}


SSHD_MESSAGES = {
    kind: ("(?s)" + pattern, layout) for kind, (pattern, layout) in SSHD_MESSAGES.items()
}


def _split_groups(text: Column, pattern: str, layout: str, limit: int) -> Column:
    """[""] + the layout's fields when `pattern` matches `text`, else [text].

    One `regexp_replace` and a `split` on `_SEP`; for the rare text that itself contains
    `_SEP` (a control character an attacker can put in a user name), one `regexp_extract`
    per group instead, so the text cannot shift the fields (user into address).
    """
    fast = F.split(F.regexp_replace(text, pattern, _SEP + layout.replace("|", _SEP)), _SEP, limit)
    fields = [
        F.concat(
            F.lit(""), *[F.regexp_extract(text, pattern, int(g)) for g in re.findall(r"\$(\d)", f)]
        )
        for f in layout.split("|")
    ]
    safe = F.when(text.rlike(pattern), F.array(F.lit(""), *fields)).otherwise(F.array(text))
    return F.when(text.contains(_SEP), safe).otherwise(fast)


def _groups(message: Column, kind: str) -> Column:
    pattern, layout = SSHD_MESSAGES[kind]
    return _split_groups(message, pattern, layout, 6)


def parse_sshd(lines: DataFrame) -> DataFrame:
    """sshd syslog lines; lines of other programs are `unparseable` ("not an sshd syslog line")."""
    line = F.col("__line")
    df = lines.select("*", _line(F.col("raw")).alias("__line"))
    # One regex pass splits the header: [marker, ts, host, program, pid, message].
    header = "|".join(f"${i}" for i in range(1, 6))
    df = df.select(
        "*",
        F.when(line.rlike(SYSLOG_LINE), _split_groups(line, SYSLOG_LINE, header, 6)).alias("__h"),
    )
    h = F.col("__h")
    program = F.get(h, 3)
    raw_msg = F.get(h, 5)
    pre = _pre_reason()
    df = df.select(
        "*",
        F.when(pre.isNotNull(), pre)
        .when(h.isNull(), F.lit(NOT_A_SYSLOG_LINE))
        .when(~program.rlike(SSHD_PROGRAM), F.lit(NOT_AN_SSHD_LINE))
        .alias("__reason"),
        F.array().cast("array<string>").alias("__shape_errors"),
        F.when(raw_msg.startswith("error: "), F.substring(raw_msg, 8, 1 << 30))
        .when(raw_msg.startswith("message repeated "), F.regexp_extract(raw_msg, _REPEATED, 1))
        .otherwise(raw_msg)
        .alias("__msg"),
    )
    m = F.col("__msg")
    pam = program.contains("pam_unix") | m.startswith("pam_unix(sshd:")
    kind = (
        F.when(F.col("__reason").isNotNull(), F.lit(None))
        .when(m.startswith("Accepted "), "accepted")
        .when(m.startswith("Failed "), "failed")
        .when(m.startswith("Invalid user "), "invalid_user")
        .when(pam & m.contains("authentication failure;"), "pam_auth_failure")
        .when(pam & m.contains("session opened for user "), "session_opened")
        .when(pam & m.contains("session closed for user "), "session_closed")
        .when(
            m.startswith("Connection closed by ") | m.startswith("Connection reset by "),
            "connection_closed",
        )
        .when(m.startswith("Received disconnect from "), "received_disconnect")
        .when(m.startswith("Disconnected from "), "disconnected")
        .when(m.contains("POSSIBLE BREAK-IN ATTEMPT"), "break_in_attempt")
        .otherwise("other")
    )
    df = df.select("*", kind.alias("__kind"))
    k = F.col("__kind")
    groups = F.lit(None).cast("array<string>")
    for name in SSHD_MESSAGES:
        groups = F.when(k == name, _groups(m, name)).otherwise(groups)
    df = df.select("*", groups.alias("__g"))
    g = F.col("__g")

    def group(i: int) -> Column:
        # Element 0 is empty when the kind's regex matched (the replacement starts with _SEP).
        value = F.get(g, i)
        return F.when((F.get(g, 0) == "") & (value != ""), value)

    event = F.when(k.isin("received_disconnect", "disconnected"), F.lit("disconnect")).otherwise(k)
    user = F.when(k == "invalid_user", F.get(g, 1)).otherwise(group(1))
    marker = group(5)
    invalid_user = (
        F.when(k == "accepted", F.lit(False))
        .when(k.isin("invalid_user"), F.lit(True))
        .when(k == "failed", marker.isNotNull())
        .when(
            k.isin("connection_closed", "disconnected") & user.isNotNull(),
            F.coalesce(marker.startswith("invalid"), F.lit(False)),
        )
    )
    texts = {
        "host": F.get(h, 2),
        "pid": F.nullif(F.get(h, 4), F.lit("")),
        "message": raw_msg,
        "ssh_event": event,
        "auth_method": group(4),
        "user": user,
        "src_ip": group(2),
        "src_port": group(3),
        "invalid_user": invalid_user.cast("string"),
    }
    return finish_bronze(df, "sshd", texts, F.nullif(F.get(h, 1), F.lit("")))


PARSERS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "idp": parse_idp,
    "windows": parse_windows,
    "zeek_conn": parse_zeek_conn,
    "zeek_dns": parse_zeek_dns,
    "cloudtrail": parse_cloudtrail,
    "sshd": parse_sshd,
}


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


@dataclass
class SourceIngest:
    """What one source's ingest wrote, for the stage result and `ops.ingest_log`."""

    source: str
    rows: int = 0
    unparseable: int = 0
    missing: list[date] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)  # ops.dq_results, suite `ingest`


def _empty_file_sizes(spark: SparkSession, raw: DataFrame, seen: set[str]) -> dict[str, int]:
    """Files the listing found but that gave no line (empty, or an empty .gz)."""
    sizes: dict[str, int] = {}
    for uri in raw.inputFiles():
        path = _spark_path(uri)
        if path in seen:
            continue
        jvm: Any = spark._jvm  # type: ignore[attr-defined]
        hpath = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))  # already URI-encoded
        fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
        sizes[path] = int(fs.getFileStatus(hpath).getLen())
    return sizes


def ingest_source(
    spark: SparkSession, lake: Lake, raw_root: str, source: str, dates: Sequence[date]
) -> SourceIngest:
    """Read `raw/<source>/<date>/` for all `dates` in one job and replace those dates in
    `bronze.<source>` (dates without files are cleared, and reported missing)."""
    table = f"bronze.{source}"
    result = SourceIngest(source)
    folders = list_date_dirs(spark, raw_root, source, dates)
    files: list[RawFile] = []
    bronze = spark.createDataFrame([], bronze_schema(source))
    if folders:
        raw = read_raw_lines(spark, list(folders.values()))
        blocks = [row.asDict() for row in file_blocks(raw, source).collect()]
        empty = _empty_file_sizes(spark, raw, {b["_file"] for b in blocks})
        files = plan_files(source, blocks, empty)
    ids = batch_ids(source, files)
    with_lines = [f for f in files if f.blocks]
    if with_lines:
        lines = number_lines(raw, file_table(spark, source, with_lines, ids), source)
        bronze = PARSERS[source](lines)
    bronze = require_columns(bronze, bronze_schema(source), f"ingest {table}")
    lake.replace_dates(bronze, table, dates)

    delivered = {f.run_date for f in files}
    result.missing = [d for d in dates if d not in delivered]
    counts = _written_counts(lake, table, dates, source) if with_lines else {}
    for f in files:
        rows, unparseable, distinct_lines = counts.get(f.path, (0, 0, 0))
        events = f.lines - f.header_lines
        lines_with_rows = distinct_lines if source == "cloudtrail" else rows
        if lines_with_rows != events:
            raise PipelineError(
                f"ingest {table}: {f.path} has {events} event lines but {lines_with_rows} "
                "made it into bronze (was the file changed while it was read?)"
            )
        result.rows += rows
        result.unparseable += unparseable
        result.log.append(
            {
                "run_date": f.run_date,
                "source": source,
                "_file": f.path,
                "lines_read": f.lines,
                "header_lines": f.header_lines,
                "rows": rows,
                "unparseable": unparseable,
                "_batch_id": ids[f.run_date],
            }
        )
    fields = _written_fields(lake, table, source, dates, files) if with_lines else {}
    result.checks = delivery_rows(source, dates, files, result.log) + schema_drift_rows(
        source, fields
    )
    return result


def _written_counts(
    lake: Lake, table: str, dates: Sequence[date], source: str
) -> dict[str, tuple[int, int, int]]:
    """Per file: bronze rows, unparseable rows, distinct lines (read back from the table)."""
    written = lake.read_dates(table, dates)
    distinct = (F.count_distinct("_line") if source == "cloudtrail" else F.count(F.lit(1))).alias(
        "lines"
    )
    rows = (
        written.groupBy("_file")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((F.col("_parse_status") == UNPARSEABLE).cast("long")).alias("unparseable"),
            distinct,
        )
        .collect()
    )
    return {r["_file"]: (int(r["rows"]), int(r["unparseable"] or 0), int(r["lines"])) for r in rows}


# ---------------------------------------------------------------------------------------
# Ingest checks in ops.dq_results (suite `ingest`): delivery and schema drift
# ---------------------------------------------------------------------------------------

INGEST_SUITE = "ingest"
DELIVERY = "delivery"
SCHEMA_DRIFT = "schema_drift"

# Top-level fields the vendor formats carry that bronze does not keep as columns (they stay
# in `raw`): not drift. Windows event data fields (CamelCase, NXLog flattens them to the top
# level) are an open set by design; only other spellings count as new there.
VENDOR_FIELDS: dict[str, frozenset[str]] = {
    "idp": frozenset(_words("version legacyEventType debugContext securityContext request")),
    "windows": frozenset(
        _words("@version host port tags type message event log agent ecs beat fields")
    ),
    "cloudtrail": frozenset(
        _words(
            "additionalEventData apiVersion managementEvent resources serviceEventDetails "
            "sharedEventID vpcEndpointId vpcEndpointAccountId eventCategory addendum "
            "sessionCredentialFromConsole edgeDeviceDetails tlsDetails insightDetails"
        )
    ),
    "zeek_conn": frozenset(
        _words(
            "_path _write_ts _node local_orig local_resp tunnel_parents orig_l2_addr "
            "resp_l2_addr vlan inner_vlan community_id ip_proto label detailedlabel"
        )
    ),
    "zeek_dns": frozenset(
        _words(
            "_path _write_ts _node qclass qclass_name qtype rcode AA TC RD RA Z TTLs rejected "
            "auth addl detailedlabel"
        )
    ),
}
_WINDOWS_EVENT_DATA_NAME = r"^[A-Z][A-Za-z0-9]*$"

# Fields a source's rows cannot do without (each group: any one spelling). A group that no
# parsed row of a date carries is a missing field: the vendor dropped or renamed it.
CORE_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "idp": (("uuid",), ("published",), ("eventType",), ("actor",), ("outcome",)),
    "windows": (
        ("@timestamp", "EventTime"),
        ("Hostname", "winlog"),
        ("EventID", "winlog"),
        ("Channel", "winlog"),
    ),
    "cloudtrail": (
        ("eventTime", "@timestamp"),
        ("eventID",),
        ("eventName",),
        ("eventSource",),
        ("userIdentity",),
    ),
    "zeek_conn": (
        ("ts",),
        ("uid",),
        ("id.orig_h", "id_orig_h"),
        ("id.resp_h", "id_resp_h"),
        ("proto",),
    ),
    "zeek_dns": (("ts",), ("uid",), ("id.orig_h", "id_orig_h"), ("query",)),
}


def declared_fields(source: str) -> frozenset[str]:
    """Top-level field names the parser reads, plus the vendor's known extras."""
    specs: dict[str, Spec] = {
        "idp": OKTA_SPEC,
        "windows": WINDOWS_SPEC,
        "cloudtrail": {**CLOUDTRAIL_SPEC, "Records": None},
    }
    if source in specs:
        names = set(specs[source])
    elif source.startswith("zeek_"):
        names = set(_zeek_spec(source)) | set(ZEEK_DEFAULT_FIELDS[source])
    else:
        return frozenset()
    return frozenset(names | VENDOR_FIELDS.get(source, frozenset()))


@dataclass
class FieldCounts:
    """Per date: parsed rows that carry field names, how many carry each, and cast errors."""

    rows: int = 0
    fields: dict[str, int] = field(default_factory=dict)
    cast_errors: dict[str, int] = field(default_factory=dict)


def _written_fields(
    lake: Lake, table: str, source: str, dates: Sequence[date], files: Sequence[RawFile]
) -> dict[date, FieldCounts]:
    """Top-level field names of the parsed rows: JSON keys; a Zeek TSV file's own `#fields`
    (Zeek's default order for TSV lines of a file without one)."""
    tsv = {f.path: f.zeek_fields for f in files if f.zeek_fields is not None}
    written = lake.read_dates(table, dates).where(F.col("_parse_status") == PARSED)
    is_tsv = F.col("_file").isin(list(tsv)) if tsv else F.lit(False)
    text = F.ltrim(F.col("raw"))
    keys = F.when(~is_tsv & text.startswith("{"), F.json_object_keys(text))
    if source in ZEEK_DEFAULT_FIELDS:
        default = F.array(*[F.lit(n) for n in ZEEK_DEFAULT_FIELDS[source]])
        keys = keys.when(~is_tsv, default)
    cast_columns = F.transform(
        F.coalesce(F.col("_cast_errors"), F.array().cast("array<string>")),
        lambda e: F.split(e, ":", 2).getItem(0),
    )
    per_row = written.select(
        "run_date",
        "_file",
        F.coalesce(keys, F.array().cast("array<string>")).alias("keys"),
        F.array_distinct(cast_columns).alias("cast"),
    )
    # one job: rows per file, and rows per field name / cast-error column, tagged by kind
    counted = per_row.select(
        "run_date",
        "_file",
        F.explode(
            F.array_union(
                F.array(F.lit("rows\x00")),
                F.array_union(
                    F.transform("keys", lambda k: F.concat(F.lit("fields\x00"), k)),
                    F.transform("cast", lambda k: F.concat(F.lit("cast_errors\x00"), k)),
                ),
            )
        ).alias("tagged"),
    )
    totals = counted.groupBy("run_date", "_file", "tagged").count().collect()
    out: dict[date, FieldCounts] = defaultdict(FieldCounts)
    for r in totals:
        counts = out[r["run_date"]]
        kind, name = str(r["tagged"]).split("\x00", 1)
        n = int(r["count"])
        if kind == "rows":
            counts.rows += n
            for column in tsv.get(r["_file"]) or ():
                counts.fields[column] = counts.fields.get(column, 0) + n
            continue
        bucket: dict[str, int] = getattr(counts, kind)
        bucket[name] = bucket.get(name, 0) + n
    return dict(out)


def _check_row(
    source: str,
    day: date,
    expectation: str,
    success: bool,
    unexpected: int,
    elements: int,
    critical: bool,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "run_date": day,
        "source": source,
        "suite": INGEST_SUITE,
        "expectation": expectation,
        "column": None,
        "success": success,
        "unexpected_count": unexpected,
        "element_count": elements,
        "critical": critical,
        "details": json.dumps(details, sort_keys=True),
    }


def delivery_rows(
    source: str,
    dates: Sequence[date],
    files: Sequence[RawFile],
    log: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One `delivery` row per date: did the source deliver any row? (critical)"""
    out = []
    for day in sorted(set(dates)):
        n_files = sum(1 for f in files if f.run_date == day)
        rows = sum(int(r["rows"]) for r in log if r["run_date"] == day)
        if rows:
            reason = None
        elif n_files:
            reason = f"{n_files} {source} file(s) for {day.isoformat()} hold no event lines"
        else:
            reason = f"no {source} data delivered for {day.isoformat()}"
        details = {"files": n_files, "rows": rows, **({"reason": reason} if reason else {})}
        out.append(
            _check_row(source, day, DELIVERY, rows > 0, 0 if rows else 1, rows, True, details)
        )
    return out


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def schema_drift_rows(source: str, fields: Mapping[date, FieldCounts]) -> list[dict[str, Any]]:
    """One `schema_drift` row per delivered date: top-level fields that are new (not
    declared), missing (a core field no row carries) or changed type (cast errors).
    Informational (not critical): the row-level checks decide what is quarantined."""
    if source not in CORE_FIELDS:
        return []  # sshd: syslog lines have no field names
    declared = declared_fields(source)
    out = []
    for day, counts in sorted(fields.items()):
        new = {
            name: n
            for name, n in counts.fields.items()
            if name not in declared
            and not (source == "windows" and re.match(_WINDOWS_EVENT_DATA_NAME, name))
        }
        missing = [
            "|".join(group)
            for group in CORE_FIELDS[source]
            if counts.rows and not any(counts.fields.get(g) for g in group)
        ]
        parts = []
        if new:
            parts.append(
                "new field(s) " + ", ".join(f"{k} ({_rows(v)})" for k, v in sorted(new.items()))
            )
        if missing:
            parts.append(f"missing field(s) {', '.join(missing)} (in none of {_rows(counts.rows)})")
        if counts.cast_errors:
            parts.append(
                "changed type "
                + ", ".join(f"{k} ({_rows(v)})" for k, v in sorted(counts.cast_errors.items()))
            )
        details = {
            "new_fields": dict(sorted(new.items())),
            "missing_fields": missing,
            "type_changes": dict(sorted(counts.cast_errors.items())),
            "rows": counts.rows,
            "message": f"{source} {day.isoformat()}: {'; '.join(parts)}" if parts else None,
        }
        drifted = len(new) + len(missing) + len(counts.cast_errors)
        out.append(
            _check_row(
                source, day, SCHEMA_DRIFT, drifted == 0, drifted, counts.rows, False, details
            )
        )
    return out


def write_ingest_checks(
    lake: Lake,
    sources: Sequence[str],
    dates: Sequence[date],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Replace the `ingest` suite rows of `sources` and `dates` in ops.dq_results in one
    commit (other suites' rows, and other sources', are left alone)."""
    frame = lake.spark.createDataFrame(
        [tuple(r[n] for n in DQ_RESULTS.names) for r in rows], DQ_RESULTS
    )
    names = ", ".join(repr(s) for s in sources)  # from jobs.config.SOURCES, not user text
    lake.replace_dates(
        require_columns(frame, DQ_RESULTS, "ingest checks"),
        "ops.dq_results",
        dates,
        where=f"suite = '{INGEST_SUITE}' AND source IN ({names})",
    )


def drift_messages(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        str(json.loads(r["details"])["message"])
        for r in checks
        if r["expectation"] == SCHEMA_DRIFT and not r["success"]
    ]


# ---------------------------------------------------------------------------------------
# Late deliveries: raw folders that changed since they were ingested
# ---------------------------------------------------------------------------------------


def raw_listing(
    spark: SparkSession, raw_root: str, source: str, dates: Sequence[date]
) -> dict[date, list[tuple[str, int]]]:
    """(file name, size) of every file Spark would read under `raw/<source>/<date>/`."""
    out: dict[date, list[tuple[str, int]]] = {}
    for day, folder in list_date_dirs(spark, raw_root, source, dates).items():
        fs, path = _hadoop_fs(spark, folder)
        files = fs.listFiles(path, True)
        found = []
        prefix = path.toUri().getPath().rstrip("/") + "/"
        while files.hasNext():
            status = files.next()
            relative = str(status.getPath().toUri().getPath())[len(prefix) :]
            if any(part.startswith(("_", ".")) for part in relative.split("/")):
                continue  # hidden files Spark's reader skips (.crc, _SUCCESS)
            found.append((str(status.getPath().getName()), int(status.getLen())))
        out[day] = sorted(found)
    return out


def late_deliveries(
    ctx: RunContext, candidates: Sequence[date], ingested: Sequence[date] = ()
) -> dict[date, list[str]]:
    """Dates among `candidates` that were ingested before and whose raw files changed since
    (a file added, resized or withdrawn), with one reason per source. The delivery's
    `_batch_id` in ops.ingest_log is a hash of the file names and sizes, so comparing the
    current listing's batch id with the logged one tells a changed delivery exactly."""
    lake, spark = ctx.lake, ctx.spark
    if not candidates:
        return {}
    logged: dict[tuple[str, date], tuple[set[str], set[str]]] = {}
    if lake.exists("ops.ingest_log"):
        for r in (
            lake.read_dates("ops.ingest_log", candidates)
            .select("run_date", "source", "_file", "_batch_id")
            .collect()
        ):
            names, ids = logged.setdefault((r["source"], r["run_date"]), (set(), set()))
            names.add(unquote(urlsplit(r["_file"]).path.rsplit("/", 1)[-1]))
            ids.add(r["_batch_id"])
    known = sorted(set(ingested) | {d for _, d in logged})
    out: dict[date, list[str]] = {}
    for source in ctx.settings.ingest.sources:
        listing = raw_listing(spark, ctx.settings.paths.raw_root, source, known)
        for day in known:
            now = listing.get(day, [])
            names, ids = logged.get((source, day), (set(), set()))
            current = batch_id(source, day, now) if now else None
            if (current is None and not ids) or (current is not None and ids == {current}):
                continue
            have = {n for n, _ in now}
            what = [f"new file {n}" for n in sorted(have - names)]
            what += [f"withdrawn file {n}" for n in sorted(names - have)]
            if not what:
                what = ["file sizes changed"]
            out.setdefault(day, []).append(f"{source}: {', '.join(what)}")
    return out


def write_ingest_log(
    lake: Lake,
    log: Sequence[Mapping[str, Any]],
    dates: Sequence[date],
    sources: Sequence[str] | None = None,
) -> None:
    """Replace the `ops.ingest_log` rows of `dates` (of `sources` only, when given: the
    Airflow DAG's mapped ingest tasks, one per source, add up to one full ingest). A commit
    racing another task's is retried by `Lake.replace_dates`."""
    frame = lake.spark.createDataFrame(
        [tuple(r[n] for n in INGEST_LOG.names) for r in log], INGEST_LOG
    )
    where = None
    if sources is not None:  # names from jobs.config.SOURCES (validated), not user text
        where = f"source IN ({', '.join(repr(s) for s in sources)})"
    lake.replace_dates(
        require_columns(frame, INGEST_LOG, "ingest ops.ingest_log"),
        "ops.ingest_log",
        dates,
        where=where,
    )


def run_ingest(ctx: RunContext, dates: list[date]) -> StageResult:
    """The `ingest` stage: every configured source over `dates`, then `ops.ingest_log`."""
    dates = sorted(set(dates))
    result = StageResult(stage="ingest", dates=dates)
    if not dates:
        return result
    lake = ctx.lake
    log: list[dict[str, Any]] = []
    missing: list[str] = []
    unparseable: dict[str, int] = {}
    drift: list[str] = []
    checks: list[dict[str, Any]] = []
    for source in ctx.settings.ingest.sources:
        outcome = ingest_source(ctx.spark, lake, ctx.settings.paths.raw_root, source, dates)
        result.rows[f"bronze.{source}"] = outcome.rows
        unparseable[source] = outcome.unparseable
        missing += [f"{source}@{d.isoformat()}" for d in outcome.missing]
        log += outcome.log
        checks += outcome.checks
        drift += drift_messages(outcome.checks)
    write_ingest_checks(lake, ctx.settings.ingest.sources, dates, checks)
    write_ingest_log(lake, log, dates)
    result.rows["ops.ingest_log"] = len(log)
    result.details = {
        "unparseable": unparseable,
        "missing": missing,
        "files": len(log),
        "header_lines": sum(int(r["header_lines"]) for r in log),
        "schema_drift": "; ".join(drift) or "none",
    }
    return result
