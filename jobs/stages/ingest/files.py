"""Raw files: listing the date folders, reading every line once, and giving each line its file,
exact 1-based line number, batch id and (Zeek) column layout.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import unquote, urlsplit

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from jobs.core.errors import PipelineError
from jobs.stages.ingest.parsers.zeek import ZEEK_COLUMNS, ZEEK_DEFAULT_FIELDS, zeek_keys

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate", ".xz")
ZEEK_HEADER_PREFIX = "#"


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
    for suffix in COMPRESSION_SUFFIXES:
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


def spark_path(uri: str) -> str:
    """`file:///a%20b` (inputFiles) -> `file:/a%20b` (the `_metadata.file_path` spelling)."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return uri
    if parts.netloc:
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    return f"{parts.scheme}:{parts.path}"


def hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm: Any = spark._jvm  # type: ignore[attr-defined]
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark._jsc.hadoopConfiguration()), hpath  # type: ignore[attr-defined]


def list_date_dirs(
    spark: SparkSession, raw_root: str, source: str, dates: Sequence[date]
) -> dict[date, str]:
    """The `raw/<source>/<date>/` folders that exist, in one listing (local or object store)."""
    fs, base = hadoop_fs(spark, f"{raw_root.rstrip('/')}/{source}")
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
        F.sum(F.col("value").startswith(ZEEK_HEADER_PREFIX).cast("long")).alias("hash_lines")
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
        is_json = fields is None and is_json_file_name(path)
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


def is_json_file_name(path: str) -> bool:
    name = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.endswith((".json", ".jsonl", ".ndjson"))


def batch_ids(source: str, files: Sequence[RawFile]) -> dict[date, str]:
    by_date: dict[date, list[tuple[str, int]]] = defaultdict(list)
    for f in files:
        by_date[f.run_date].append((f.name, f.size))
    return {d: batch_id(source, d, named) for d, named in by_date.items()}


def zeek_layout(source: str, path: str, fields: Sequence[str] | None) -> dict[str, Any]:
    """How to read one Zeek file: format (tsv/json/sniff), column count, field positions.

    Positions come from the file's own `#fields` line (files differ: Stratosphere adds
    `label`, `detailedlabel`); a TSV file without one is read in Zeek's default order.
    """
    if fields is not None:
        fmt = "tsv"
    elif is_json_file_name(path):
        fmt = "json"
    else:
        fmt = "sniff"
    order = list(fields) if fields is not None else list(ZEEK_DEFAULT_FIELDS[source])
    positions = {}
    for column in ZEEK_COLUMNS[source]:
        found = [order.index(k) for k in zeek_keys(column) if k in order]
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
            *[StructField(f"_zpos_{c}", IntegerType(), False) for c in ZEEK_COLUMNS[source]],
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
            ~((F.col("_zeek_fmt") != "json") & F.col("value").startswith(ZEEK_HEADER_PREFIX))
        )
        columns += [F.col(c) for c in extra]
    return joined.select(*columns)


def empty_file_sizes(spark: SparkSession, raw: DataFrame, seen: set[str]) -> dict[str, int]:
    """Files the listing found but that gave no line (empty, or an empty .gz)."""
    sizes: dict[str, int] = {}
    for uri in raw.inputFiles():
        path = spark_path(uri)
        if path in seen:
            continue
        jvm: Any = spark._jvm  # type: ignore[attr-defined]
        hpath = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))  # already URI-encoded
        fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
        sizes[path] = int(fs.getFileStatus(hpath).getLen())
    return sizes


# ---------------------------------------------------------------------------------------
# Late deliveries: raw folders that changed since they were ingested
# ---------------------------------------------------------------------------------------


def raw_listing(
    spark: SparkSession, raw_root: str, source: str, dates: Sequence[date]
) -> dict[date, list[tuple[str, int]]]:
    """(file name, size) of every file Spark would read under `raw/<source>/<date>/`."""
    out: dict[date, list[tuple[str, int]]] = {}
    for day, folder in list_date_dirs(spark, raw_root, source, dates).items():
        fs, path = hadoop_fs(spark, folder)
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
