"""DuckDB reference implementation of four pipeline steps, and the checks that Spark agrees.

The same logic as the Spark stages, written as DuckDB SQL over the same files, so the
benchmark can say what the Spark overhead is (a ratio Spark / DuckDB per step) and that both
produce the same numbers:

| step | DuckDB reads | produces (compared with) |
| --- | --- | --- |
| `normalize_zeek_conn` | the raw Zeek conn files of the day (TSV + JSON), the suite file, the reference CSVs | silver rows of `zeek_conn` (`silver.events`), quarantine rows and the reconciliation counts |
| `entity_daily` | the day's `silver.events` (Delta files) and the reference CSVs | every `gold.entity_daily` column |
| `baselines` | the `gold.entity_daily` history before the day | `gold.baselines` of the day: every column (a full recompute, while Spark advances yesterday's state) |
| `signals` | the day's `silver.events`, `gold.baselines` and the asset inventory | the sessions `new_country`, `first_time_host_access` and `exfiltration_volume` fire on, with value and threshold (`gold.session_scores`) |

Each later step reads the Spark stage's *inputs* from the lake, so a difference in one step
never hides or causes a difference in the next. The comparison is exact (`EXCEPT ALL` both
ways over the compared columns: counts, sums, sets, maps in stored order, doubles bit for
bit) with two documented exceptions: `bronze_line` of silver rows (DuckDB's CSV reader
exposes no line numbers; the kept copy of a re-delivered line is chosen by file and line
text, which gives the same row, only its line number could differ), and the quarantine
`reason` text (the rule and the raw line are compared). Geolocation of the distinct source
addresses is the pipeline's own resolver function (`jobs.stages.normalize.enrichment.geo_partitions`), called
from Python on the distinct addresses, as Spark calls it from `mapInPandas`.

Run by `bench/run_bench.py` in its own process (2 threads, a memory limit like the Spark
driver heap); `python -m bench.duckdb_reference --help` for a manual run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from jobs.core.config import Settings, load_settings
from jobs.core.tables import BASELINE_ITEM_SETS

__all__ = ["Reference", "run_reference"]

SOURCE = "zeek_conn"
SIGNAL_NAMES = ("new_country", "first_time_host_access", "exfiltration_volume")
ITEM_SETS = BASELINE_ITEM_SETS  # the pipeline's own list, in the tables' order
HOURS = 168


# ---------------------------------------------------------------------------------------------
# Types and Delta files
# ---------------------------------------------------------------------------------------------


def duck_type(spark_type: Any) -> str:
    """A Spark SQL type (pyspark DataType) as the DuckDB type the comparison casts to."""
    from pyspark.sql import types as T

    simple = {
        T.StringType: "VARCHAR",
        T.IntegerType: "INTEGER",
        T.LongType: "BIGINT",
        T.DoubleType: "DOUBLE",
        T.BooleanType: "BOOLEAN",
        T.TimestampType: "TIMESTAMP",
        T.DateType: "DATE",
    }
    for cls, name in simple.items():
        if isinstance(spark_type, cls):
            return name
    if isinstance(spark_type, T.ArrayType):
        return f"{duck_type(spark_type.elementType)}[]"
    if isinstance(spark_type, T.MapType):
        return f"MAP({duck_type(spark_type.keyType)}, {duck_type(spark_type.valueType)})"
    if isinstance(spark_type, T.StructType):
        inner = ", ".join(f'"{f.name}" {duck_type(f.dataType)}' for f in spark_type.fields)
        return f"STRUCT({inner})"
    raise TypeError(f"no DuckDB type for {spark_type}")


def delta_files(lake_root: Path, table: str, dates: Sequence[date]) -> list[str]:
    """The Parquet files of `dates` in the Delta table's current snapshot (delta-rs)."""
    from deltalake import DeltaTable

    layer, _, name = table.partition(".")
    dt = DeltaTable(str(lake_root / layer / name))
    protocol = dt.protocol()
    features = set(protocol.reader_features or [])
    if features & {"deletionVectors", "columnMapping"}:
        raise RuntimeError(f"{table}: reader features {features} are not handled by the bench")
    if not dates:
        return []
    values = sorted({d.isoformat() for d in dates})
    return sorted(dt.file_uris(partition_filters=[("run_date", "in", values)]))


def _sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _q(value: Any) -> str:
    """A SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """Where the inputs are and where DuckDB writes; one day."""

    workdir: Path  # the scale's folder: raw/, reference/, lake/
    day: date
    out: Path  # DuckDB's outputs and spill folder
    settings: Settings
    threads: int = 2
    memory_limit: str = "2GB"

    @property
    def raw_root(self) -> Path:
        return Path(self.settings.paths.raw_root)

    @property
    def reference_root(self) -> Path:
        return Path(self.settings.paths.reference_root)

    @property
    def lake_root(self) -> Path:
        return Path(self.settings.paths.lake_root)

    def connect(self) -> duckdb.DuckDBPyConnection:
        self.out.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        con.execute(f"SET threads = {int(self.threads)}")
        con.execute(f"SET memory_limit = {_q(self.memory_limit)}")
        con.execute(f"SET temp_directory = {_q(str(self.out / 'spill'))}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")
        return con

    def parquet(self, table: str, dates: Sequence[date]) -> str:
        """A `read_parquet(...)` of the table's files for `dates`, with `run_date` from the path."""
        files = delta_files(self.lake_root, table, dates)
        if not files:
            raise RuntimeError(f"{table}: no files for {', '.join(map(str, dates))}")
        return (
            f"read_parquet({_sql_list(files)}, hive_partitioning = true, "
            "hive_types = {'run_date': 'DATE'})"
        )

    def reference_csv(self, name: str) -> str:
        path = self.reference_root / name
        return (
            f"read_csv({_q(str(path))}, header = true, all_varchar = true, auto_detect = true, "
            "quote = '\"', escape = '\"')"
        )


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


# ---------------------------------------------------------------------------------------------
# Step 1: normalization of zeek_conn, raw files -> silver rows
# ---------------------------------------------------------------------------------------------

# bronze column -> (type, JSON keys that may hold it); positions in TSV come from #fields
ZEEK_CONN_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "uid": ("VARCHAR", ("uid",)),
    "orig_h": ("VARCHAR", ("id.orig_h", "id_orig_h")),
    "orig_p": ("INTEGER", ("id.orig_p", "id_orig_p")),
    "resp_h": ("VARCHAR", ("id.resp_h", "id_resp_h")),
    "resp_p": ("INTEGER", ("id.resp_p", "id_resp_p")),
    "proto": ("VARCHAR", ("proto",)),
    "service": ("VARCHAR", ("service",)),
    "duration": ("DOUBLE", ("duration",)),
    "orig_bytes": ("BIGINT", ("orig_bytes",)),
    "resp_bytes": ("BIGINT", ("resp_bytes",)),
    "conn_state": ("VARCHAR", ("conn_state",)),
    "missed_bytes": ("BIGINT", ("missed_bytes",)),
    "history": ("VARCHAR", ("history",)),
    "orig_pkts": ("BIGINT", ("orig_pkts",)),
    "orig_ip_bytes": ("BIGINT", ("orig_ip_bytes",)),
    "resp_pkts": ("BIGINT", ("resp_pkts",)),
    "resp_ip_bytes": ("BIGINT", ("resp_ip_bytes",)),
    "label": ("VARCHAR", ("label",)),
    "detailed_label": ("VARCHAR", ("detailedlabel", "detailed-label", "detailed_label")),
    "event_time_raw": ("VARCHAR", ("ts",)),
}
_TS_NUMBER = r'"ts"\s*:\s*(-?[0-9][0-9.eE+-]*)'
_EPOCH = r"^\d{1,11}(\.\d{1,9})?$"
_ISO_ZONED = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|z|[+-]\d{2}:?\d{2})$"
_ISO_NAIVE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?$"


@dataclass(frozen=True)
class ZeekFile:
    local: str
    uri: str  # as Spark's `_metadata.file_path` spells it
    name: str
    size: int
    fmt: str  # tsv | json | sniff
    fields: tuple[str, ...]


def _zeek_files(ref: Reference) -> list[ZeekFile]:
    """Each raw file of the day with its layout: the leading `#` lines give TSV `#fields`."""
    from jobs.stages.ingest.files import is_json_file_name
    from jobs.stages.ingest.parsers.zeek import ZEEK_DEFAULT_FIELDS

    folder = ref.raw_root / SOURCE / ref.day.isoformat()
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fields: tuple[str, ...] | None = None
        with path.open("rb") as fh:
            for raw in fh:
                if not raw.startswith(b"#"):
                    break
                if raw.startswith(b"#fields"):
                    fields = tuple(raw.decode("utf-8").rstrip("\n").rstrip("\r").split("\t")[1:])
                    break
        resolved = path.resolve()
        if fields is not None:
            fmt = "tsv"
        elif is_json_file_name(str(resolved)):
            fmt = "json"
        else:
            fmt = "sniff"
        out.append(
            ZeekFile(
                local=str(path),
                uri=f"file:{resolved}",
                name=path.name,
                size=path.stat().st_size,
                fmt=fmt,
                fields=fields if fields is not None else ZEEK_DEFAULT_FIELDS[SOURCE],
            )
        )
    return out


def _row_rule_sql(rule: Any, params: dict[str, Any]) -> str:
    """The `unexpected` predicate of one row-level expectation, null-safe (never null)."""
    from jobs.quality.suites import resolve_kwargs

    k = resolve_kwargs(rule.kwargs, params, rule.name)
    col = f'"{k["column"]}"'
    if rule.type == "expect_column_values_to_not_be_null":
        return f"({col} IS NULL)"
    if rule.type == "expect_column_values_to_be_between":
        ok = []
        if k.get("min_value") is not None:
            ok.append(f"{col} {'>' if k.get('strict_min') else '>='} {_q(k['min_value'])}")
        if k.get("max_value") is not None:
            ok.append(f"{col} {'<' if k.get('strict_max') else '<='} {_q(k['max_value'])}")
        return f"({col} IS NOT NULL AND NOT coalesce({' AND '.join(ok)}, FALSE))"
    if rule.type == "expect_column_values_to_match_regex":
        return f"({col} IS NOT NULL AND NOT regexp_matches({col}, {_q(k['regex'])}))"
    if rule.type == "expect_column_values_to_be_in_set":
        values = ", ".join(_q(v) for v in k.get("value_set") or [])
        return f"({col} IS NOT NULL AND NOT coalesce({col} IN ({values}), FALSE))"
    raise NotImplementedError(f"{rule.name}: no DuckDB translation in the bench")


def _status_map() -> str:
    from jobs.stages.normalize.vocabulary import STATUS_VOCABULARY

    pairs = ", ".join(f"{_q(k)}: {_q(v)}" for k, v in sorted(STATUS_VOCABULARY.items()))
    return f"MAP {{{pairs}}}"


def _text_value(column: str) -> str:
    """The column's text: from the JSON struct or the TSV field (`-` unset, `(empty)` = '')."""
    _, keys = ZEEK_CONN_COLUMNS[column]
    js = [f'j."{key}"' for key in keys]
    from_json = js[0] if len(js) == 1 else f"coalesce({', '.join(js)})"
    tsv = f"cols[p_{column}]"
    tsv_text = f"CASE WHEN {tsv} = '-' THEN NULL WHEN {tsv} = '(empty)' THEN '' ELSE {tsv} END"
    if column == "event_time_raw":
        number = f"nullif(regexp_extract(ln, {_q(_TS_NUMBER)}, 1), '')"
        from_json = f"coalesce({number}, {from_json})"
    return f"CASE WHEN is_json THEN {from_json} ELSE {tsv_text} END"


def _typed(column: str, kind: str) -> str:
    t = f"t_{column}"
    if kind in ("INTEGER", "BIGINT"):
        return f"CASE WHEN regexp_full_match(trim({t}), '[+-]?[0-9]+') THEN TRY_CAST(trim({t}) AS {kind}) END"
    return f"TRY_CAST(trim({t}) AS {kind})"


def normalize_zeek_conn(ref: Reference, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Raw zeek_conn lines of the day -> silver rows, quarantine rows, route counts (parquet)."""
    from jobs.quality.suites import load_suite, suite_parameters, suites_dir
    from jobs.stages.ingest.files import batch_id, sensor_of
    from jobs.stages.normalize.enrichment import geo_partitions

    files = _zeek_files(ref)
    if not files:
        raise RuntimeError(f"no {SOURCE} files for {ref.day}")
    suite = load_suite(suites_dir(ref.settings), SOURCE)
    params = suite_parameters(ref.settings.validation)
    bid = batch_id(SOURCE, ref.day, [(f.name, f.size) for f in files])
    positions = {}
    for column, (_, keys) in ZEEK_CONN_COLUMNS.items():
        positions[column] = [
            next((f.fields.index(k) + 1 for k in keys if k in f.fields), None) for f in files
        ]
    layout = pd.DataFrame(
        {
            "filename": [f.local for f in files],
            "fpath": [f.uri for f in files],
            "fmt": [f.fmt for f in files],
            "ncols": [len(f.fields) for f in files],
            "sensor": [sensor_of(f.name) for f in files],
            **{f"p_{c}": pd.array(v, dtype="Int32") for c, v in positions.items()},
        }
    )
    con.register("zc_layout", layout)
    con.execute("CREATE OR REPLACE TEMP TABLE zc_files AS SELECT * FROM zc_layout")
    con.unregister("zc_layout")

    struct = (
        "{"
        + ", ".join(f'"{key}": "VARCHAR"' for _, keys in ZEEK_CONN_COLUMNS.values() for key in keys)
        + "}"
    )
    texts = ",\n".join(f"{_text_value(c)} AS t_{c}" for c in ZEEK_CONN_COLUMNS)
    scalar = {c: k for c, (k, _) in ZEEK_CONN_COLUMNS.items() if k != "VARCHAR"}
    typed = ",\n".join(
        (_typed(c, k) if c in scalar else f"t_{c}") + f" AS v_{c}"
        for c, (k, _) in ZEEK_CONN_COLUMNS.items()
    )
    cast_error = " OR ".join(
        f"(t_{c} IS NOT NULL AND t_{c} NOT IN ('', '-') AND v_{c} IS NULL)" for c in scalar
    )
    bronze_cols = ",\n".join(
        f'CASE WHEN parse_error IS NULL THEN v_{c} END AS "{c}"' for c in ZEEK_CONN_COLUMNS
    )
    rule_sql = (
        "CASE WHEN parse_error IS NOT NULL THEN 'parser' WHEN NOT candidate THEN 'type_check'"
    )
    for rule in suite.row_rules:
        rule_sql += f" WHEN {_row_rule_sql(rule, params)} THEN {_q(rule.name)}"
    rule_sql += " END"
    dedup = list(suite.dedup_key)
    lines = (
        f"read_csv({_sql_list([f.local for f in files])}, columns = {{'line': 'VARCHAR'}}, "
        "delim = '\x1e', quote = '', escape = '', header = false, auto_detect = false, "
        "filename = true, strict_mode = false)"
    )
    event_time = (
        f"CASE WHEN regexp_matches(et, {_q(_EPOCH)}) THEN make_timestamp(CAST(trunc(TRY_CAST(et AS DECIMAL(21, 9)) * 1000000) AS BIGINT)) "
        f"WHEN regexp_matches(et, {_q(_ISO_ZONED)}) THEN CAST(TRY_CAST(et AS TIMESTAMPTZ) AS TIMESTAMP) "
        f"WHEN regexp_matches(et, {_q(_ISO_NAIVE)}) THEN TRY_CAST(et AS TIMESTAMP) END"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE zc_routed AS
        WITH l AS (
            SELECT f.*, coalesce(r.line, '') AS raw,
                   CASE WHEN ends_with(coalesce(r.line, ''), chr(13))
                        THEN left(r.line, length(r.line) - 1) ELSE coalesce(r.line, '') END AS ln
            FROM {lines} r JOIN zc_files f USING (filename)
            WHERE NOT (f.fmt <> 'json' AND starts_with(coalesce(r.line, ''), '#'))
        ), p AS (
            SELECT *, (fmt = 'json' OR (fmt = 'sniff' AND starts_with(ltrim(ln), '{{'))) AS is_json
            FROM l
        ), q AS (
            SELECT *,
                CASE WHEN is_json THEN json_valid(ln) END AS _valid,
                CASE WHEN NOT is_json THEN string_split(ln, chr(9)) END AS cols
            FROM p
        ), r AS (
            SELECT *,
                CASE WHEN trim(ln) = '' THEN 'empty line'
                     WHEN contains(ln, chr(0)) THEN 'NUL bytes in line'
                     WHEN is_json AND NOT _valid THEN 'invalid JSON'
                     WHEN is_json AND json_type(ln) <> 'OBJECT' THEN 'not a JSON object'
                     WHEN NOT is_json AND len(cols) <> ncols THEN
                          format('wrong number of TSV columns (got {{}}, header has {{}})', len(cols), ncols)
                END AS parse_error,
                CASE WHEN is_json AND _valid THEN json_transform(ln, {_q(struct)}) END AS j
            FROM q
        ), t AS (
            SELECT *, {texts} FROM r
        ), v AS (
            SELECT *, {typed}, coalesce({cast_error}, FALSE) AS _cast_error FROM t
        ), b AS (
            SELECT fpath, raw, run_date, sensor, parse_error,
                   parse_error IS NULL AND NOT _cast_error AS candidate,
                   {bronze_cols}
            FROM (SELECT *, {_q(ref.day)} AS run_date FROM v)
        ), e AS (
            SELECT *, {event_time} AS event_time
            FROM (SELECT *, CASE WHEN trim(event_time_raw) IN ('', '-') THEN NULL
                                 ELSE trim(event_time_raw) END AS et FROM b)
        ), o AS (
            SELECT *, (epoch_us(event_time) - epoch_us(CAST(run_date AS TIMESTAMP))) / 3600000000.0
                      AS event_time_offset_hours
            FROM e
        ), ruled AS (
            SELECT *, {rule_sql} AS rule FROM o
        )
        SELECT *,
            CASE WHEN rule IS NOT NULL THEN 'quarantine'
                 WHEN row_number() OVER (
                      PARTITION BY run_date, rule IS NULL, {", ".join(f'"{c}"' for c in dedup)}
                      ORDER BY fpath, raw) > 1 THEN 'duplicate'
                 ELSE 'event' END AS route
        FROM ruled
        """
    )

    # Geolocation of the distinct source addresses with the pipeline's own resolver.

    ranges = [
        (str(r[0]), (r[1] or "").strip().lower())
        for r in con.execute(
            f"SELECT cidr, kind FROM {ref.reference_csv('network_ranges.csv')}"
        ).fetchall()
    ]
    ips = con.execute(
        "SELECT DISTINCT orig_h AS _geo_ip FROM zc_routed WHERE route = 'event' AND orig_h IS NOT NULL"
    ).df()
    lookup = geo_partitions(ref.settings.geo.database, ref.settings.geo.asn_database, ranges)
    chunks = [ips.iloc[i : i + 10_000] for i in range(0, len(ips), 10_000)] or [ips]
    geo = pd.concat(list(lookup(iter(chunks))), ignore_index=True)
    con.register("zc_geo_df", geo)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE zc_geo AS SELECT _geo_ip, src_country, src_city,
           CAST(src_lat AS DOUBLE) AS src_lat, CAST(src_lon AS DOUBLE) AS src_lon,
           CAST(src_asn AS BIGINT) AS src_asn, src_as_org,
           CAST(src_is_internal AS BOOLEAN) AS src_is_internal,
           CAST(src_is_known_egress AS BOOLEAN) AS src_is_known_egress FROM zc_geo_df"""
    )
    con.unregister("zc_geo_df")

    assets = ref.reference_csv("asset_inventory.csv")
    silver = silver_select(
        {
            "run_date": "run_date",
            "event_uid": f"substr(sha256({_q(SOURCE + '|')} || coalesce(uid, '')), 1, 32)",
            "source": _q(SOURCE),
            "event_time": "event_time",
            "class_name": "'network'",
            "activity_name": "'connection'",
            "status": (
                "coalesce(CASE WHEN regexp_matches(lower(trim(conn_state)), '^0x0+$') THEN 'success' "
                "WHEN regexp_matches(lower(trim(conn_state)), '^0x[0-9a-f]+$') THEN 'failure' END, "
                f"map_extract_value({_status_map()}, lower(trim(conn_state))), 'unknown')"
            ),
            "status_detail": "conn_state",
            "user_type": "'unknown'",
            "device_id": "dev.asset_id",
            "src_ip": "orig_h",
            "src_port": "orig_p",
            "src_country": "g.src_country",
            "src_city": "g.src_city",
            "src_lat": "g.src_lat",
            "src_lon": "g.src_lon",
            "src_asn": "g.src_asn",
            "src_as_org": "g.src_as_org",
            "src_is_internal": "g.src_is_internal",
            "src_is_known_egress": "g.src_is_known_egress",
            "dst_host": "dst.asset_id",
            "dst_ip": "resp_h",
            "dst_port": "resp_p",
            "protocol": "proto",
            "bytes_in": "resp_bytes",
            "bytes_out": "orig_bytes",
            "is_privileged": "FALSE",
            "asset_criticality": "attrs.asset_criticality",
            "asset_tags": "attrs.asset_tags",
            "bronze_file": "fpath",
            "bronze_line": "NULL",
            "bronze_batch_id": _q(bid),
        }
    )
    silver_path = ref.out / "zeek_conn_silver.parquet"
    con.execute(
        f"""
        COPY (
            WITH a AS (SELECT * FROM {assets}),
            lookup AS (
                SELECT key, min(asset_id) AS asset_id FROM (
                    SELECT lower(trim(asset_id)) AS asset_id,
                           unnest(['n:' || lower(trim(asset_id)), 'n:' || lower(trim(fqdn)),
                                   'n:' || lower(split_part(trim(fqdn), '.', 1)), 'i:' || trim(ip)]) AS key
                    FROM a WHERE lower(trim(asset_id)) IS NOT NULL)
                WHERE key IS NOT NULL GROUP BY key
            ),
            attrs AS (
                SELECT lower(trim(asset_id)) AS crit_asset,
                       any_value(lower(trim(criticality))) AS asset_criticality,
                       any_value(list_filter(string_split(coalesce(tags, ''), '|'), lambda t: t <> '')) AS asset_tags
                FROM a GROUP BY 1
            )
            SELECT {silver}
            FROM zc_routed z
            LEFT JOIN lookup dev ON dev.key = 'i:' || z.orig_h
            LEFT JOIN lookup dst ON dst.key = 'i:' || z.resp_h
            LEFT JOIN attrs ON attrs.crit_asset = coalesce(dst.asset_id, dev.asset_id)
            LEFT JOIN zc_geo g ON g._geo_ip = z.orig_h
            WHERE z.route = 'event'
        ) TO {_q(str(silver_path))} (FORMAT parquet)
        """
    )
    quarantine_path = ref.out / "zeek_conn_quarantine.parquet"
    con.execute(
        f"""COPY (SELECT run_date, {_q(SOURCE)} AS source, rule, raw, fpath AS bronze_file,
                  {_q(bid)} AS bronze_batch_id FROM zc_routed WHERE route = 'quarantine')
            TO {_q(str(quarantine_path))} (FORMAT parquet)"""
    )
    counts = dict(con.execute("SELECT route, count(*) FROM zc_routed GROUP BY route").fetchall())
    con.execute("DROP TABLE zc_routed")
    return {
        "silver": str(silver_path),
        "quarantine": str(quarantine_path),
        "files": len(files),
        "raw_rows": int(sum(counts.values())),
        "events": int(counts.get("event", 0)),
        "quarantined": int(counts.get("quarantine", 0)),
        "duplicates": int(counts.get("duplicate", 0)),
        "distinct_source_ips": len(ips),
    }


def silver_select(values: dict[str, str]) -> str:
    """Every silver.events column, cast to its declared type (null where the source has none)."""
    from jobs.core.tables import SILVER_EVENTS

    return ",\n".join(
        f'CAST({values.get(f.name, "NULL")} AS {duck_type(f.dataType)}) AS "{f.name}"'
        for f in SILVER_EVENTS.schema.fields
    )


# ---------------------------------------------------------------------------------------------
# Step 2: gold.entity_daily from the day's silver.events
# ---------------------------------------------------------------------------------------------


def _zones(con: duckdb.DuckDBPyConnection) -> None:
    from jobs.stages.baselines.stage import known_zones

    con.register("zones_df", pd.DataFrame({"zone": known_zones()}))
    con.execute("CREATE OR REPLACE TEMP TABLE known_zones AS SELECT zone FROM zones_df")
    con.unregister("zones_df")


def _item_structs() -> str:
    basename = "lower(regexp_extract(coalesce({p}, ''), '([^\\\\/]+)$', 1))"
    items = {
        "src_countries": "src_country",
        "src_cities": "CASE WHEN src_city IS NOT NULL THEN concat_ws('/', src_country, src_city) END",
        "src_asns": "CAST(src_asn AS VARCHAR)",
        "src_ips": "src_ip",
        "devices": "CASE WHEN device_id IS DISTINCT FROM entity_id THEN device_id END",
        "dst_hosts": "CASE WHEN dst_host IS DISTINCT FROM entity_id THEN dst_host END",
        "apps": "app_name",
        "cloud_actions": "CASE WHEN cloud_action IS NOT NULL THEN concat_ws(':', cloud_service, cloud_action) END",
        "process_pairs": (
            "CASE WHEN process_name IS NOT NULL THEN concat_ws('>', "
            f"{basename.format(p='parent_process_name')}, {basename.format(p='process_name')}) END"
        ),
        "users": "CASE WHEN kind = 'host' THEN user_id END",
    }
    parts = [f"{{'s': {_q(name)}, 'i': nullif({expr}, '')}}" for name, expr in items.items()]
    parts.append("{'s': '_how', 'i': CAST(how AS VARCHAR)}")
    return "[" + ", ".join(parts) + "]"


def entity_daily(ref: Reference, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """silver.events of the day -> every gold.entity_daily column (parquet)."""
    _zones(con)
    events = ref.parquet("silver.events", [ref.day])
    directory = ref.reference_csv("identity_directory.csv")
    assets = ref.reference_csv("asset_inventory.csv")
    maps = ",\n".join(
        f"coalesce(map_from_entries(list_sort(list({{'key': i, 'value': n}}) FILTER (WHERE s = {_q(name)}))), "
        f"CAST(MAP {{}} AS MAP(VARCHAR, BIGINT))) AS {name}"
        for name in ITEM_SETS
    )
    out = ref.out / "entity_daily.parquet"
    con.execute(
        f"""
        COPY (
        WITH ev AS (
            SELECT run_date, event_time, status, class_name, activity_name, is_privileged,
                   bytes_in, bytes_out, user_type, peer_group, user_id, device_id, dst_host,
                   src_country, src_city, src_asn, src_ip, app_name, cloud_action, cloud_service,
                   parent_process_name, process_name
            FROM {events}
        ), rows AS (
            SELECT *, 'account' AS kind, user_id AS entity_id, 'actor' AS role
            FROM ev WHERE user_id IS NOT NULL
            UNION ALL
            SELECT * EXCLUDE (h), 'host' AS kind, h AS entity_id,
                   CASE WHEN h = dst_host THEN 'target' ELSE 'source' END AS role
            FROM (SELECT *, unnest(list_distinct(list_filter([dst_host, device_id],
                                   lambda x: x IS NOT NULL AND x <> ''))) AS h FROM ev)
        ), lookup AS (
            SELECT 'account' AS kind, user_id AS entity_id, max(account_type) AS dir_type,
                   max(peer_group) AS dir_peer,
                   max(CASE WHEN timezone IN (SELECT zone FROM known_zones) THEN timezone END) AS tz
            FROM {directory} GROUP BY user_id
            UNION ALL
            SELECT 'host', asset_id, NULL, NULL,
                   max(CASE WHEN timezone IN (SELECT zone FROM known_zones) THEN timezone END)
            FROM {assets} GROUP BY asset_id
        ), x AS (
            SELECT *,
                   (isodow(local) - 1) * 24 + hour(local) AS how,
                   coalesce(CASE WHEN role = 'target' THEN bytes_out ELSE bytes_in END, 0) AS b_in,
                   coalesce(CASE WHEN role = 'target' THEN bytes_in ELSE bytes_out END, 0) AS b_out
            FROM (SELECT r.*, l.dir_type, l.dir_peer, l.tz,
                         timezone(coalesce(l.tz, 'UTC'), CAST(r.event_time AS TIMESTAMPTZ)) AS local
                  FROM rows r LEFT JOIN lookup l USING (kind, entity_id))
        ), counters AS (
            SELECT run_date, kind, entity_id,
                max(dir_type) AS dir_type, max(dir_peer) AS dir_peer,
                max(coalesce(tz, 'UTC')) AS tz,
                max(user_type = 'service') AS silver_service, max(peer_group) AS silver_peer,
                count(*) AS events,
                sum(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) AS failures,
                sum(CASE WHEN class_name = 'authentication' AND activity_name IN ('logon')
                          AND role <> 'source' AND status = 'success' THEN 1 ELSE 0 END) AS signins,
                sum(CASE WHEN class_name = 'authentication' AND activity_name IN ('logon')
                          AND role <> 'source' AND status = 'failure' THEN 1 ELSE 0 END) AS signin_failures,
                sum(CASE WHEN is_privileged THEN 1 ELSE 0 END) AS privileged_actions,
                sum(b_in) AS bytes_in, sum(b_out) AS bytes_out,
                min(event_time) AS first_event_time, max(event_time) AS last_event_time
            FROM x GROUP BY ALL
        ), triples AS (
            SELECT run_date, kind, entity_id, t.s AS s, t.i AS i, count(*) AS n
            FROM (SELECT run_date, kind, entity_id,
                         unnest(list_filter({_item_structs()}, lambda z: z.i IS NOT NULL)) AS t FROM x)
            GROUP BY ALL
        ), maps AS (
            SELECT run_date, kind, entity_id, {maps},
                   map_from_entries(list({{'key': TRY_CAST(i AS INTEGER), 'value': n}})
                                    FILTER (WHERE s = '_how')) AS how_map
            FROM triples GROUP BY ALL
        )
        SELECT c.run_date,
            CASE WHEN c.kind = 'host' THEN 'host'
                 WHEN coalesce(c.dir_type = 'service', c.silver_service) THEN 'service_account'
                 ELSE 'user' END AS entity_type,
            c.entity_id,
            CASE WHEN c.kind = 'account' THEN coalesce(c.dir_peer, c.silver_peer) END AS peer_group,
            c.tz,
            CAST(c.events AS BIGINT) AS events, CAST(c.failures AS BIGINT) AS failures,
            CAST(c.signins AS BIGINT) AS signins, CAST(c.signin_failures AS BIGINT) AS signin_failures,
            CAST(c.privileged_actions AS BIGINT) AS privileged_actions,
            CAST(c.bytes_in AS BIGINT) AS bytes_in, CAST(c.bytes_out AS BIGINT) AS bytes_out,
            c.first_event_time, c.last_event_time,
            list_transform(range({HOURS}), lambda h: coalesce(m.how_map[CAST(h AS INTEGER)], 0)) AS hour_of_week,
            {", ".join(f"m.{s}" for s in ITEM_SETS)}
        FROM counters c JOIN maps m USING (run_date, kind, entity_id)
        ) TO {_q(str(out))} (FORMAT parquet)
        """
    )
    rows = con.execute(f"SELECT count(*) FROM read_parquet({_q(str(out))})").fetchone()
    return {"entity_daily": str(out), "rows": int(rows[0]) if rows else 0}


# ---------------------------------------------------------------------------------------------
# Step 3: gold.baselines of the day, a full recompute from the entity_daily history
# ---------------------------------------------------------------------------------------------


def _set_windows(settings: Settings) -> dict[str, int]:
    from jobs.stages.baselines.profiles import set_windows

    return set_windows(settings.baselines)


_HISTORY_TYPE = "STRUCT(first_seen DATE, last_seen DATE, days INTEGER, events BIGINT)"
_COUNTS_TYPE = "MAP(VARCHAR, BIGINT)"
_METRICS = ("events", "failures", "bytes_in", "bytes_out")


def _median(values: str) -> str:
    """Median of a sorted list; the mean of the two middle values when the count is even."""
    n = f"len({values})"
    mid = f"({n} // 2)"
    return (
        f"CASE WHEN {n} = 0 THEN NULL WHEN {n} % 2 = 1 THEN {values}[{mid} + 1] "
        f"ELSE ({values}[{mid}] + {values}[{mid} + 1]) / 2 END"
    )


def _daily_value(member: str) -> str:
    return (
        f"{{'day': run_date, 'member': {member}, 'events': events, 'failures': failures, "
        "'bytes_in': bytes_in, 'bytes_out': bytes_out, 'privileged_actions': privileged_actions}"
    )


def baselines(ref: Reference, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """gold.entity_daily before the day -> gold.baselines of the day (every column).

    A full recompute over each set's window (and the whole history for streaks and to-date
    counters), which is what Spark's incremental step must equal.
    """
    b = ref.settings.baselines
    d = ref.day
    windows = _set_windows(ref.settings)
    # every day a window or a streak can reach (the generated history is short)
    history = [d - timedelta(days=i) for i in range(1, max(windows.values()) + 2)]
    daily = ref.parquet("gold.entity_daily", history)
    habit_start = d - timedelta(days=b.habit_window_days)
    member = "entity_type IN ('user', 'service_account') AND peer_group IS NOT NULL"
    zeros = f"list_transform(range({HOURS}), lambda h: CAST(0 AS BIGINT))"
    add_hours = f"lambda acc, a: list_transform(range({HOURS}), lambda i: acc[i + 1] + a[i + 1])"

    con.execute(
        f"CREATE OR REPLACE TEMP TABLE bl_daily AS SELECT * FROM {daily} WHERE run_date < {_q(d)}"
    )
    peer_sets = " UNION ALL ".join(
        f"""SELECT run_date, peer_group AS entity_id, {_q(s)} AS s, e.key AS k, e.value AS v
            FROM (SELECT run_date, peer_group, unnest(map_entries({s})) AS e FROM bl_daily WHERE {member})"""
        for s in ITEM_SETS
    )
    pivot = ",\n".join(
        f"coalesce(any_value(m) FILTER (WHERE s = {_q(s)}), CAST(MAP {{}} AS {_COUNTS_TYPE})) AS {s}"
        for s in ITEM_SETS
    )
    # observations: each entity-day, plus each peer group-day (members summed)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE bl_obs AS
        WITH summed AS (
            SELECT run_date, entity_id, s,
                   map_from_entries(list_sort(list({{'key': k, 'value': CAST(v AS BIGINT)}}))) AS m
            FROM (SELECT run_date, entity_id, s, k, sum(v) AS v FROM ({peer_sets}) GROUP BY ALL)
            GROUP BY ALL
        ), peer_maps AS (
            SELECT run_date, entity_id, {pivot} FROM summed GROUP BY ALL
        ), peers AS (
            SELECT run_date, peer_group AS entity_id, CAST(sum(signins) AS BIGINT) AS signins,
                   list_reduce(list(hour_of_week), {add_hours}, {zeros}) AS hour_of_week,
                   list_sort(list({_daily_value("entity_id")})) AS daily_values
            FROM bl_daily WHERE {member} GROUP BY ALL
        )
        SELECT run_date, entity_type, entity_id, peer_group, tz, signins, hour_of_week,
               {", ".join(ITEM_SETS)}, [{_daily_value("CAST(NULL AS VARCHAR)")}] AS daily_values
        FROM bl_daily
        UNION ALL
        SELECT p.run_date, 'peer_group', p.entity_id, NULL, NULL, p.signins, p.hour_of_week,
               {", ".join(f"coalesce(m.{s}, CAST(MAP {{}} AS {_COUNTS_TYPE}))" for s in ITEM_SETS)},
               p.daily_values
        FROM peers p LEFT JOIN peer_maps m USING (run_date, entity_id)
        """
    )
    exploded = "\nUNION ALL\n".join(
        f"SELECT entity_type, entity_id, run_date, {_q(s)} AS s, {windows[s]} AS w, "
        f"unnest(map_entries({s})) AS e FROM bl_obs"
        for s in ITEM_SETS
    )
    set_maps = ",\n".join(
        f"coalesce(map_from_entries(list_sort(list({{'key': item, 'value': {{'first_seen': first_seen, "
        f"'last_seen': last_seen, 'days': days, 'events': events}}}}) FILTER (WHERE s = {_q(s)}))), "
        f"CAST(MAP {{}} AS MAP(VARCHAR, {_HISTORY_TYPE}))) AS {s}"
        for s in ITEM_SETS
    )
    state_sets = ",\n".join(
        f"coalesce(s.{x}, CAST(MAP {{}} AS MAP(VARCHAR, {_HISTORY_TYPE}))) AS {x}"
        for x in ITEM_SETS
    )
    sorted_values = ",\n".join(
        f"list_sort(list_transform(daily_values, lambda v: CAST(coalesce(v.{m}, 0) AS DOUBLE))) AS _v_{m}"
        for m in _METRICS
    )
    medians = ",\n".join(f"{_median(f'_v_{m}')} AS {m}_median" for m in _METRICS)
    devs = ",\n".join(
        f"list_sort(list_transform(_v_{m}, lambda x: abs(x - {m}_median))) AS _dev_{m}"
        for m in _METRICS
    )
    mads = ",\n".join(f"{_median(f'_dev_{m}')} AS {m}_mad" for m in _METRICS)
    to_peers = (
        "in_learning AND entity_type IN ('user', 'service_account') AND peer_group IS NOT NULL"
    )
    out = ref.out / "baselines.parquet"
    con.execute(
        f"""
        COPY (
        WITH entities AS (
            SELECT entity_type, entity_id,
                arg_max(peer_group, CASE WHEN peer_group IS NOT NULL THEN run_date END) AS peer_group,
                arg_max(tz, CASE WHEN tz IS NOT NULL THEN run_date END) AS tz,
                min(run_date) AS first_seen, max(run_date) AS last_seen,
                CAST(count(*) AS INTEGER) AS days_active_to_date,
                CAST(sum(signins) AS BIGINT) AS signins_to_date,
                list_reduce(coalesce(list(hour_of_week) FILTER (WHERE run_date >= {_q(habit_start)}), []),
                            {add_hours}, {zeros}) AS hour_of_week,
                list_sort(flatten(coalesce(list(daily_values) FILTER (WHERE run_date >= {_q(habit_start)}), []))) AS daily_values
            FROM bl_obs GROUP BY ALL
        ), exploded AS ({exploded}
        ), streaks AS (
            SELECT entity_type, entity_id, run_date, s, w, e.key AS item, e.value AS n,
                lag(run_date) OVER (PARTITION BY entity_type, entity_id, s, e.key ORDER BY run_date) AS prev
            FROM exploded
        ), per_item AS (
            SELECT entity_type, entity_id, s, item,
                max(CASE WHEN prev IS NULL OR date_diff('day', prev, run_date) > w THEN run_date END) AS first_seen,
                max(run_date) AS last_seen,
                CAST(count(*) FILTER (WHERE run_date >= {_q(d)} - w) AS INTEGER) AS days,
                CAST(sum(n) FILTER (WHERE run_date >= {_q(d)} - w) AS BIGINT) AS events
            FROM streaks GROUP BY entity_type, entity_id, s, item, w
            HAVING max(run_date) >= {_q(d)} - w
        ), sets AS (
            SELECT entity_type, entity_id, {set_maps} FROM per_item GROUP BY ALL
        ), state AS (
            SELECT e.*, {state_sets}
            FROM entities e LEFT JOIN sets s USING (entity_type, entity_id)
        ), f1 AS (
            SELECT *,
                coalesce(date_diff('day', first_seen, {_q(d)}) < {b.learning_period_days}, TRUE)
                  OR (entity_type IN ('user', 'service_account') AND signins_to_date < {b.learning_min_signins})
                  AS in_learning,
                {sorted_values}
            FROM state
        ), f2 AS (SELECT *, {medians} FROM f1
        ), f3 AS (SELECT *, {devs} FROM f2
        ), f4 AS (SELECT *, {mads} FROM f3)
        SELECT {_q(d)} AS run_date, entity_type, entity_id, peer_group, tz, in_learning,
            CASE WHEN {to_peers} THEN 'peer_group' ELSE entity_type END AS compare_to_type,
            CASE WHEN {to_peers} THEN peer_group ELSE entity_id END AS compare_to,
            first_seen, last_seen, days_active_to_date, signins_to_date,
            {b.habit_window_days} AS habit_window_days,
            {b.country_device_window_days} AS country_device_window_days,
            {b.host_window_days} AS host_window_days,
            hour_of_week, {", ".join(ITEM_SETS)},
            CAST(len(daily_values) AS INTEGER) AS days_observed,
            CASE WHEN entity_type = 'peer_group' THEN
                 CAST(len(list_distinct(list_transform(daily_values, lambda v: v.member))) AS INTEGER)
            END AS members_observed,
            {", ".join(f"{m}_median, {m}_mad" for m in _METRICS)},
            CAST(coalesce(list_sum(list_transform(daily_values, lambda v: coalesce(v.privileged_actions, 0))), 0) AS BIGINT)
                AS privileged_actions_total,
            CAST(len(list_filter(daily_values, lambda v: v.privileged_actions > 0)) AS INTEGER) AS privileged_days,
            daily_values
        FROM f4
        ) TO {_q(str(out))} (FORMAT parquet)
        """
    )
    history_days = con.execute("SELECT count(DISTINCT run_date) FROM bl_daily").fetchone()
    con.execute("DROP TABLE bl_obs")
    con.execute("DROP TABLE bl_daily")
    rows = con.execute(f"SELECT count(*) FROM read_parquet({_q(str(out))})").fetchone()
    return {
        "baselines": str(out),
        "rows": int(rows[0]) if rows else 0,
        "history_days": int(history_days[0]) if history_days else 0,
    }


# ---------------------------------------------------------------------------------------------
# Step 4: three signals from the day's silver.events and gold.baselines
# ---------------------------------------------------------------------------------------------


def _session_id(kind: str, *parts: str) -> str:
    """jobs.stages.score.sessions.view_session_id: sha256 of date, kind and key parts, 32 hex characters."""
    keys = ", ".join(f"coalesce(CAST({p} AS VARCHAR), '-')" for p in parts)
    return f"substr(sha256(concat_ws('|', CAST(run_date AS VARCHAR), {_q(kind)}, {keys})), 1, 32)"


def signals(ref: Reference, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """new_country, first_time_host_access and exfiltration_volume of the day (parquet)."""
    cfg = ref.settings.scoring
    d = ref.day
    events = ref.parquet("silver.events", [d])
    bl = ref.parquet("gold.baselines", [d])
    assets = ref.reference_csv("asset_inventory.csv")
    gap_us = cfg.session_gap_minutes * 60 * 1_000_000
    k = float(cfg.exfil_mad_multiplier)
    min_days = int(cfg.min_history_days)
    part = "run_date, user_key, coalesce(device_id, '-'), coalesce(src_ip, '-')"
    start = "strftime(session_start, '%Y-%m-%dT%H:%M:%S.%f')"

    def history_ok(prefix: str) -> str:
        return f"coalesce(date_diff('day', {prefix}_first_seen, run_date) >= {min_days}, FALSE)"

    def with_comparator(frame: str, etype: str, eid: str, columns: Sequence[str], peer: str) -> str:
        """jobs.stages.score.signals.with_comparator: own_<c>, peer_<c>, cmp_<c> and in_learning."""
        cols = list(dict.fromkeys([*columns, "first_seen"]))
        own = ", ".join(f"o.{c} AS own_{c}" for c in cols)
        peers = ", ".join(f"p.{c} AS peer_{c}" for c in cols)
        cmp = ", ".join(
            f"CASE WHEN coalesce(o.in_learning, TRUE) THEN p.{c} ELSE o.{c} END AS cmp_{c}"
            for c in cols
        )
        return f"""
            SELECT f.*, coalesce(o.in_learning, TRUE) AS in_learning, {own}, {peers}, {cmp}
            FROM {frame} f
            LEFT JOIN bl o ON o.run_date = f.run_date AND o.entity_type = {etype} AND o.entity_id = {eid}
            LEFT JOIN bl p ON p.run_date = f.run_date AND p.entity_type = 'peer_group'
                AND p.entity_id = coalesce(CASE WHEN o.compare_to_type = 'peer_group' THEN o.compare_to END, {peer})
        """

    account_type = "CASE WHEN f.user_type = 'service' THEN 'service_account' ELSE 'user' END"
    out = ref.out / "signals.parquet"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE sg_groups AS
        SELECT asset_id, 'hosts/' || coalesce(asset_type, 'unknown') AS peer_group FROM {assets}
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE bl AS
        WITH b AS (SELECT * FROM {bl}),
        hosts AS (
            SELECT b.*, g.peer_group AS _group FROM b JOIN sg_groups g ON g.asset_id = b.entity_id
            WHERE b.entity_type = 'host'
        ), days AS (
            SELECT run_date, _group, entity_id, unnest(daily_values) AS v FROM hosts
        ), per AS (
            SELECT run_date, _group,
                   list_sort(list(CAST(coalesce(v.bytes_out, 0) AS DOUBLE))) AS _bo,
                   CAST(count(DISTINCT entity_id) AS INTEGER) AS members_observed
            FROM days GROUP BY ALL
        ), firsts AS (SELECT run_date, _group, min(first_seen) AS first_seen FROM hosts GROUP BY ALL
        ), med AS (
            SELECT p.*, f.first_seen, {_median("_bo")} AS bytes_out_median
            FROM per p JOIN firsts f USING (run_date, _group)
        )
        SELECT run_date, entity_type, entity_id, in_learning, compare_to_type, compare_to,
               first_seen, days_observed, bytes_out_median, bytes_out_mad, src_countries, dst_hosts
        FROM b
        UNION ALL
        SELECT run_date, 'peer_group', _group, FALSE, 'peer_group', _group, first_seen,
               CAST(len(_bo) AS INTEGER), bytes_out_median,
               {_median("list_sort(list_transform(_bo, lambda x: abs(x - bytes_out_median)))")},
               NULL, NULL
        FROM med
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE sg_events AS
        SELECT run_date, event_uid, event_time, class_name, status, user_id, user_name_raw,
               user_type, peer_group, device_id, src_ip, src_country, src_is_known_egress,
               dst_host, dst_ip, bytes_out, source
        FROM {events}
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE sg_sessionized AS
        WITH auth AS (
            SELECT *, coalesce(user_id, 'unknown:' || lower(user_name_raw), '-') AS user_key
            FROM sg_events WHERE class_name = 'authentication'
        ), ordered AS (
            SELECT *, CASE WHEN prev IS NULL OR epoch_us(event_time) - epoch_us(prev) > {gap_us}
                      THEN 1 ELSE 0 END AS _new
            FROM (SELECT *, lag(event_time) OVER (PARTITION BY {part} ORDER BY event_time, event_uid) AS prev
                  FROM auth)
        ), seq AS (
            SELECT *, sum(_new) OVER (PARTITION BY {part} ORDER BY event_time, event_uid
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _seq
            FROM ordered
        ), started AS (
            SELECT *, min(event_time) OVER (PARTITION BY {part}, _seq) AS session_start FROM seq
        )
        SELECT *, {_session_id("auth", "user_key", "device_id", "src_ip", start)} AS session_id
        FROM started
        """
    )
    new_country_frame = """(
        SELECT run_date, session_id, user_id, user_type, peer_group, src_country
        FROM sg_sessionized
        WHERE status = 'success' AND src_country IS NOT NULL AND user_id IS NOT NULL
          AND NOT coalesce(src_is_known_egress, FALSE)
        GROUP BY ALL)"""
    hosts_frame = """(
        SELECT run_date, session_id, user_id, user_type, peer_group, dst_host
        FROM sg_sessionized
        WHERE status = 'success' AND dst_host IS NOT NULL AND user_id IS NOT NULL
        GROUP BY ALL)"""
    private = (
        "(starts_with(ip, '10.') OR starts_with(ip, '192.168.') "
        "OR regexp_matches(ip, '^172\\.(1[6-9]|2[0-9]|3[01])\\.') OR starts_with(ip, '127.') "
        "OR starts_with(ip, 'fd') OR starts_with(ip, 'fe80:'))"
    )
    network_frame = f"""(
        SELECT n.*, g.peer_group
        FROM (
            SELECT run_date, entity_id, 'host' AS entity_type,
                   CAST(sum(CASE WHEN NOT internal THEN coalesce(bytes_out, 0) ELSE 0 END) AS BIGINT)
                       AS bytes_out_external,
                   {_session_id("network", "entity_id")} AS session_id
            FROM (SELECT *, coalesce(device_id, src_ip) AS entity_id,
                         (dst_host IS NOT NULL OR {private.replace("ip", "coalesce(dst_ip, '')")}) AS internal
                  FROM sg_events WHERE class_name = 'network' AND device_id IS NOT NULL)
            GROUP BY run_date, entity_id
        ) n LEFT JOIN sg_groups g ON g.asset_id = n.entity_id
        WHERE n.bytes_out_external > 0)"""
    own_ok = f"(NOT in_learning AND {history_ok('own')} AND coalesce(own_days_observed, 0) > 0)"
    own_thr = (
        f"CASE WHEN {own_ok} THEN own_bytes_out_median + {k} * coalesce(own_bytes_out_mad, 0.0) END"
    )
    peer_thr = (
        f"CASE WHEN {history_ok('peer')} THEN peer_bytes_out_median + {k} * "
        "coalesce(peer_bytes_out_mad, 0.0) END"
    )
    con.execute(
        f"""
        COPY (
        WITH nc AS ({with_comparator(new_country_frame, account_type, "f.user_id", ["src_countries"], "f.peer_group")}),
        ft AS ({with_comparator(hosts_frame, account_type, "f.user_id", ["dst_hosts"], "f.peer_group")}),
        ex AS ({with_comparator(network_frame, "f.entity_type", "f.entity_id", ["bytes_out_median", "bytes_out_mad", "days_observed"], "f.peer_group")}),
        thr AS (
            SELECT *, {own_thr} AS own_thr, {peer_thr} AS peer_thr FROM ex
        )
        SELECT DISTINCT run_date, session_id, 'new_country' AS name, 0.0 AS value, 1.0 AS threshold
        FROM nc
        WHERE {history_ok("cmp")} AND coalesce(cardinality(cmp_src_countries), 0) > 0
          AND cmp_src_countries[src_country] IS NULL
        UNION ALL
        SELECT run_date, session_id, 'first_time_host_access', CAST(count(DISTINCT dst_host) AS DOUBLE), 1.0
        FROM ft
        WHERE {history_ok("cmp")} AND coalesce(cardinality(cmp_dst_hosts), 0) > 0
          AND cmp_dst_hosts[dst_host] IS NULL
        GROUP BY run_date, session_id
        UNION ALL
        SELECT run_date, session_id, 'exfiltration_volume', CAST(bytes_out_external AS DOUBLE),
               greatest(coalesce(own_thr, 0.0), coalesce(peer_thr, 0.0), {float(cfg.exfil_min_bytes)})
        FROM thr
        WHERE (own_thr IS NOT NULL OR peer_thr IS NOT NULL)
          AND bytes_out_external > greatest(coalesce(own_thr, 0.0), coalesce(peer_thr, 0.0), {float(cfg.exfil_min_bytes)})
        ) TO {_q(str(out))} (FORMAT parquet)
        """
    )
    fired = dict(
        con.execute(
            f"SELECT name, count(*) FROM read_parquet({_q(str(out))}) GROUP BY name"
        ).fetchall()
    )
    sessions = con.execute("SELECT count(DISTINCT session_id) FROM sg_sessionized").fetchone()
    for table in ("sg_sessionized", "sg_events", "bl", "sg_groups"):
        con.execute(f"DROP TABLE {table}")
    return {
        "signals": str(out),
        "fired": {n: int(fired.get(n, 0)) for n in SIGNAL_NAMES},
        "auth_sessions": int(sessions[0]) if sessions else 0,
    }


# ---------------------------------------------------------------------------------------------
# Agreement checks: exact, both ways
# ---------------------------------------------------------------------------------------------


def _columns(schema: Any, skip: Sequence[str] = ()) -> list[str]:
    """Comparable expressions for a Spark schema: each column cast to its declared type, maps
    as their entry lists (so the stored key order is compared too)."""
    from pyspark.sql import types as T

    out = []
    for f in schema.fields:
        if f.name in skip:
            continue
        expr = f'CAST("{f.name}" AS {duck_type(f.dataType)})'
        if isinstance(f.dataType, T.MapType):
            expr = f"map_entries({expr})"
        out.append(f'{expr} AS "{f.name}"')
    return out


def compare(
    con: duckdb.DuckDBPyConnection, what: str, spark_sql: str, duck_sql: str, columns: Sequence[str]
) -> dict[str, Any]:
    """Rows only in Spark's output / only in DuckDB's (multisets, every listed column)."""
    cols = ", ".join(columns)
    left = f"SELECT {cols} FROM ({spark_sql})"
    right = f"SELECT {cols} FROM ({duck_sql})"
    counts = con.execute(
        f"SELECT (SELECT count(*) FROM ({left})), (SELECT count(*) FROM ({right}))"
    ).fetchone()
    assert counts is not None
    only_spark = con.execute(f"SELECT * FROM (({left}) EXCEPT ALL ({right})) LIMIT 3").fetchall()
    only_duck = con.execute(f"SELECT * FROM (({right}) EXCEPT ALL ({left})) LIMIT 3").fetchall()
    n_spark = con.execute(f"SELECT count(*) FROM (({left}) EXCEPT ALL ({right}))").fetchone()
    n_duck = con.execute(f"SELECT count(*) FROM (({right}) EXCEPT ALL ({left}))").fetchone()
    missing = int(n_spark[0]) if n_spark else -1
    extra = int(n_duck[0]) if n_duck else -1
    return {
        "what": what,
        "spark_rows": int(counts[0]),
        "duckdb_rows": int(counts[1]),
        "only_in_spark": missing,
        "only_in_duckdb": extra,
        "agree": missing == 0 and extra == 0 and counts[0] == counts[1],
        "examples_only_in_spark": [repr(r)[:600] for r in only_spark],
        "examples_only_in_duckdb": [repr(r)[:600] for r in only_duck],
    }


def check_all(
    ref: Reference,
    con: duckdb.DuckDBPyConnection,
    outputs: dict[str, dict[str, Any]],
    spark_signals: Path | None,
) -> list[dict[str, Any]]:
    from jobs.core.tables import BASELINES, ENTITY_DAILY, SILVER_EVENTS

    d = ref.day
    checks = []
    norm = outputs["normalize_zeek_conn"]
    silver = ref.parquet("silver.events", [d])
    checks.append(
        compare(
            con,
            "silver.events (zeek_conn rows; all columns but bronze_line)",
            f"SELECT * FROM {silver} WHERE source = {_q(SOURCE)}",
            f"SELECT * FROM read_parquet({_q(norm['silver'])})",
            _columns(SILVER_EVENTS.schema, skip=("bronze_line",)),
        )
    )
    quarantine = ref.parquet("silver.quarantine", [d])
    checks.append(
        compare(
            con,
            "silver.quarantine (zeek_conn rows; rule, raw line, file, batch)",
            f"SELECT * FROM {quarantine} WHERE source = {_q(SOURCE)}",
            f"SELECT * FROM read_parquet({_q(norm['quarantine'])})",
            ["run_date", "source", "rule", "raw", "bronze_file", "bronze_batch_id"],
        )
    )
    recon = ref.parquet("ops.reconciliation", [d])
    checks.append(
        compare(
            con,
            "ops.reconciliation (zeek_conn: raw rows, events, quarantined, duplicates)",
            f"SELECT raw_rows, events, quarantined, duplicates FROM {recon} WHERE source = {_q(SOURCE)}",
            f"SELECT {norm['raw_rows']} AS raw_rows, {norm['events']} AS events, "
            f"{norm['quarantined']} AS quarantined, {norm['duplicates']} AS duplicates",
            [
                "CAST(raw_rows AS BIGINT)",
                "CAST(events AS BIGINT)",
                "CAST(quarantined AS BIGINT)",
                "CAST(duplicates AS BIGINT)",
            ],
        )
    )
    checks.append(
        compare(
            con,
            "gold.entity_daily (every column)",
            f"SELECT * FROM {ref.parquet('gold.entity_daily', [d])}",
            f"SELECT * FROM read_parquet({_q(outputs['entity_daily']['entity_daily'])})",
            _columns(ENTITY_DAILY.schema),
        )
    )
    checks.append(
        compare(
            con,
            "gold.baselines (every column)",
            f"SELECT * FROM {ref.parquet('gold.baselines', [d])}",
            f"SELECT * FROM read_parquet({_q(outputs['baselines']['baselines'])})",
            _columns(BASELINES.schema),
        )
    )
    fired = f"SELECT * FROM read_parquet({_q(outputs['signals']['signals'])})"
    cols = [
        "run_date",
        "session_id",
        "name",
        "CAST(value AS DOUBLE) AS value",
        "CAST(threshold AS DOUBLE) AS threshold",
    ]
    names = ", ".join(_q(n) for n in SIGNAL_NAMES)
    scores = ref.parquet("gold.session_scores", [d])
    checks.append(
        compare(
            con,
            "gold.session_scores signals (the three: session, name, value, threshold)",
            f"""SELECT run_date, session_id, s.name AS name, s.value AS value, s.threshold AS threshold
                FROM (SELECT run_date, session_id, unnest(signals) AS s FROM {scores})
                WHERE s.name IN ({names})""",
            fired,
            cols,
        )
    )
    if spark_signals is not None and spark_signals.exists():
        checks.append(
            compare(
                con,
                "the three signals computed alone by Spark (timed run)",
                f"SELECT * FROM read_parquet({_q(str(spark_signals / '*.parquet'))})",
                fired,
                cols,
            )
        )
    return checks


STEPS: dict[str, Callable[[Reference, duckdb.DuckDBPyConnection], dict[str, Any]]] = {
    "normalize_zeek_conn": normalize_zeek_conn,
    "entity_daily": entity_daily,
    "baselines": baselines,
    "signals": signals,
}


def run_reference(ref: Reference, spark_signals: Path | None = None) -> dict[str, Any]:
    """Run the four steps (each timed, each on a fresh connection), then the checks."""
    steps: dict[str, dict[str, Any]] = {}
    for name, step in STEPS.items():
        con = ref.connect()
        seconds, info = _timed(lambda step=step, con=con: step(ref, con))  # type: ignore[misc]
        con.close()
        steps[name] = {"seconds": round(seconds, 3), **info}
    con = ref.connect()
    checks = check_all(ref, con, steps, spark_signals)
    con.close()
    return {
        "engine": f"duckdb {duckdb.__version__}",
        "threads": ref.threads,
        "memory_limit": ref.memory_limit,
        "steps": steps,
        "checks": checks,
        "agree": all(c["agree"] for c in checks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="raw/, reference/, lake/")
    parser.add_argument("--day", type=date.fromisoformat, required=True)
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--scratch", type=Path, help="DuckDB outputs (default: next to --out)")
    parser.add_argument("--spark-signals", type=Path, help="Spark's timed signal rows (parquet)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GB")
    args = parser.parse_args()
    settings = load_settings(None).with_workdir(args.workdir.resolve())
    ref = Reference(
        workdir=args.workdir.resolve(),
        day=args.day,
        out=(args.scratch or args.out.parent / "duckdb").resolve(),
        settings=settings,
        threads=args.threads,
        memory_limit=args.memory_limit,
    )
    result = run_reference(ref, args.spark_signals)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    for c in result["checks"]:
        mark = "agree" if c["agree"] else "DISAGREE"
        print(
            f"{mark:>8}  {c['what']}: spark {c['spark_rows']} rows, duckdb {c['duckdb_rows']} rows, "
            f"only spark {c['only_in_spark']}, only duckdb {c['only_in_duckdb']}"
        )
    for name, s in result["steps"].items():
        print(f"duckdb {name}: {s['seconds']:.2f} s")
    if not result["agree"]:
        raise SystemExit("DuckDB reference and Spark disagree (details in the result file)")


if __name__ == "__main__":
    main()
