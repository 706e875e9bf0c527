"""Tamper evidence for gold.decision_log: a hash chain per run date, signed heads, `verify`.

Each recommend run chains the decision log of the dates it wrote (docs/audit.md):

    row_hash_i  = sha256(canonical JSON of row i, every DECISION_LOG column in schema order)
    seed        = sha256("policylake-decision-log-chain/v1|<run_date>|<head of the previous
                         chained date, or 64 zeros>")
    h_0 = seed,   h_i = sha256(h_{i-1} || row_hash_i)   (raw 32-byte digests concatenated)
    head        = h_N,  hmac = HMAC-SHA256($POLICYLAKE_AUDIT_KEY, the head record)

Rows are ordered by (rec_id, policy_id, row_hash), so re-running a date with the same
inputs gives the same chain. Row hashes are computed on the executors; only hashes and
their keys (rec_id, policy_id) reach the driver, never decision contents. Seeding every
day with the previous day's head links the days: deleting a day, or changing an earlier
one, breaks the next day's link. Without the key an attacker who can rewrite tables can
recompute a consistent chain; with the key set, the head's HMAC cannot be forged.

Tables: ops.decision_log_chain (one row per decision: position, rec_id, policy_id,
row_hash, chain_hash) and ops.audit_heads (one row per date: rows, head, previous_head,
previous_date, hmac, reason). Every head recorded is also appended to the *anchor*
(`paths.audit_anchor`), outside the lake: an append-only file, or one object per head under
an object-store prefix with object lock. `verify` compares the lake with it, so deleting a
day, or the most recent days, is detected even by someone who can rewrite every table;
re-chaining over a day the anchor knows but the lake lost is refused unless accepted
explicitly (`accept_gap`, logged in the anchor and the heads); days chained before the anchor
existed are added to it, once each passes `verify`, by `anchor_unanchored`. With
`environment: prod` the key is required. Only `record_chain`, `verify_dates` and the anchor functions do I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    DateType,
    MapType,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from jobs.core.errors import ConfigError, PipelineError, SchemaMismatchError
from jobs.core.lake import Lake
from jobs.core.locks import local_root
from jobs.core.tables import AUDIT_HEADS, DECISION_LOG, DECISION_LOG_CHAIN

__all__ = [
    "AUDIT_KEY_ENV",
    "AnchorBackfill",
    "AnchorRecord",
    "ChainedRow",
    "Head",
    "RowChange",
    "TrailResult",
    "VerifyResult",
    "accepted_gaps",
    "anchor_unanchored",
    "append_anchor",
    "audit_key",
    "audit_key_for",
    "build_chain",
    "canonical_json",
    "chain_gaps",
    "chain_seed",
    "chained_dates",
    "compare_rows",
    "fold_chain",
    "latest_anchored",
    "missing_days",
    "read_anchor",
    "record_chain",
    "refuse_chain_gaps",
    "row_hashes",
    "sign_head",
    "verify_chain",
    "verify_dates",
    "verify_trail",
]

AUDIT_KEY_ENV = "POLICYLAKE_AUDIT_KEY"
MIN_KEY_BYTES = 32
GENESIS = "0" * 64
CHAIN_VERSION = "policylake-decision-log-chain/v1"
ROW_ORDER = ("rec_id", "policy_id", "row_hash")
MAX_CHANGES_SHOWN = 20
log = logging.getLogger(__name__)


# --- keys -----------------------------------------------------------------------------------


def audit_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key from $POLICYLAKE_AUDIT_KEY, or None when unset. Never logged."""
    env = os.environ if environ is None else environ
    value = env.get(AUDIT_KEY_ENV)
    if not value:
        return None
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{AUDIT_KEY_ENV} is set but shorter than {MIN_KEY_BYTES} bytes; use e.g. "
            "`openssl rand -hex 32`"
        )
    return key


def audit_key_for(settings: Any, environ: Mapping[str, str] | None = None) -> bytes | None:
    """`audit_key`, required with `environment: prod` (a one-line ConfigError without it):
    production never records or checks a head it cannot sign."""
    key = audit_key(environ)
    if key is None and getattr(settings, "environment", None) == "prod":
        raise ConfigError(
            f"environment is prod but {AUDIT_KEY_ENV} is not set: the decision log's heads "
            "must be signed (docs/audit.md)"
        )
    return key


# --- the anchor: heads outside the lake ------------------------------------------------------


@dataclass(frozen=True)
class AnchorRecord:
    """One line (or object) of the anchor: a recorded head, or a gap accepted on purpose."""

    kind: Literal["head", "gap_accepted"]
    run_date: date | None
    recorded_at: str
    head: str | None = None
    rows: int | None = None
    previous_head: str | None = None
    previous_date: date | None = None
    hmac: str | None = None
    reason: str | None = None
    dates: tuple[date, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "run_date": self.run_date.isoformat() if self.run_date else None,
                "recorded_at": self.recorded_at,
                "head": self.head,
                "rows": self.rows,
                "previous_head": self.previous_head,
                "previous_date": self.previous_date.isoformat() if self.previous_date else None,
                "hmac": self.hmac,
                "reason": self.reason,
                "dates": [d.isoformat() for d in self.dates],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> AnchorRecord:
        v = json.loads(text)

        def day(x: Any) -> date | None:
            return date.fromisoformat(x) if x else None

        return cls(
            kind=v["kind"],
            run_date=day(v.get("run_date")),
            recorded_at=v.get("recorded_at") or "",
            head=v.get("head"),
            rows=v.get("rows"),
            previous_head=v.get("previous_head"),
            previous_date=day(v.get("previous_date")),
            hmac=v.get("hmac"),
            reason=v.get("reason"),
            dates=tuple(date.fromisoformat(d) for d in v.get("dates") or ()),
        )

    @classmethod
    def of(cls, head: Head, at: str) -> AnchorRecord:
        return cls("head", head.run_date, at, head.head, head.rows, head.previous_head,
                   head.previous_date, head.hmac, head.reason)  # fmt: skip

    def matches(self, head: Head) -> bool:
        return (self.head, self.rows, self.previous_head, self.previous_date, self.hmac) == (
            head.head, head.rows, head.previous_head, head.previous_date, head.hmac
        )  # fmt: skip


def _anchor_location(settings: Any) -> str:
    """`paths.audit_anchor`, refused when it is inside the lake (its point is to survive
    whoever can rewrite the lake)."""
    anchor = str(settings.paths.audit_anchor)
    root = str(settings.paths.lake_root).rstrip("/")
    inside = anchor.rstrip("/") == root or anchor.startswith(root + "/")
    lake, here = local_root(root), local_root(anchor.rstrip("/"))
    if lake is not None and here is not None:
        try:
            here.resolve().relative_to(lake.resolve())
            inside = True
        except ValueError:
            pass
    if inside:
        raise ConfigError(
            f"paths.audit_anchor ({anchor}) is inside the lake: it must live where the lake's "
            "administrators cannot rewrite it (docs/audit.md)"
        )
    return anchor


def _is_prefix(anchor: str) -> bool:
    """A prefix (ends with /): one object per record, for object stores with object lock."""
    return anchor.endswith("/")


def _hadoop(spark: Any, uri: str) -> tuple[Any, Any]:
    jvm: Any = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark._jsc.hadoopConfiguration()), path


def append_anchor(settings: Any, spark: Any, records: Sequence[AnchorRecord]) -> None:
    """Append `records` to the anchor: lines of a local file opened for appending (make it
    append-only: `chattr +a`), or new objects under a prefix (never overwritten)."""
    if not records:
        return
    anchor = _anchor_location(settings)
    if not _is_prefix(anchor):
        path = local_root(anchor)
        if path is None:
            raise ConfigError(
                f"paths.audit_anchor {anchor!r}: an object-store anchor is a prefix ending in /"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, "".join(r.to_json() + "\n" for r in records).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    for r in records:
        name = hashlib.sha256(r.to_json().encode("utf-8")).hexdigest()[:16]
        day = r.run_date.isoformat() if r.run_date else "gap"
        fs, path = _hadoop(spark, f"{anchor}{r.recorded_at.replace(':', '')}-{day}-{name}.json")
        stream = fs.create(path, False)  # never overwrite: the store's object lock backs this
        try:
            stream.write(bytearray((r.to_json() + "\n").encode("utf-8")))
        finally:
            stream.close()


def read_anchor(settings: Any, spark: Any) -> list[AnchorRecord] | None:
    """Every record of the anchor in the order written; None when there is no anchor yet."""
    anchor = _anchor_location(settings)
    if not _is_prefix(anchor):
        path = local_root(anchor)
        if path is None or not path.is_file():
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
        return [AnchorRecord.from_json(line) for line in lines if line.strip()]
    fs, folder = _hadoop(spark, anchor)
    if not fs.exists(folder):
        return None
    jvm: Any = spark._jvm
    texts = []
    for status in sorted(fs.listStatus(folder), key=lambda st: str(st.getPath().getName())):
        stream = fs.open(status.getPath())
        try:
            texts.append(str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")))
        finally:
            stream.close()
    return [AnchorRecord.from_json(t) for t in texts if t.strip()]


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def latest_anchored(records: Sequence[AnchorRecord]) -> dict[date, AnchorRecord]:
    """The last head recorded for each date."""
    out: dict[date, AnchorRecord] = {}
    for r in records:
        if r.kind == "head" and r.run_date is not None:
            out[r.run_date] = r
    return out


def accepted_gaps(records: Sequence[AnchorRecord]) -> dict[date, str]:
    out: dict[date, str] = {}
    for r in records:
        if r.kind == "gap_accepted":
            for d in r.dates:
                out[d] = f"{r.reason} (accepted {r.recorded_at})"
    return out


def missing_days(
    heads: Mapping[date, Head], anchored: Mapping[date, AnchorRecord], accepted: Mapping[date, str]
) -> list[date]:
    """Dates the anchor, or a surviving head's link, says were chained, that the lake lost
    (and no one accepted as gone)."""
    known = set(anchored) | {h.previous_date for h in heads.values() if h.previous_date}
    return sorted(d for d in known if d not in heads and d not in accepted)


# --- canonical row content (pure, on the executors) -------------------------------------------


def _canonical(col: Column, dtype: DataType) -> Column:
    """A value in a form whose JSON text does not depend on map order, time zone or engine."""
    if isinstance(dtype, StructType):
        inner = F.struct(*[_canonical(col[f.name], f.dataType).alias(f.name) for f in dtype.fields])
        return F.when(col.isNull(), F.lit(None)).otherwise(inner)
    if isinstance(dtype, ArrayType):
        element = dtype.elementType
        return F.transform(col, lambda x: _canonical(x, element))
    if isinstance(dtype, MapType):
        key_type, value_type = dtype.keyType, dtype.valueType
        entries = F.transform(
            F.map_entries(col),
            lambda e: F.struct(
                _canonical(e["key"], key_type).alias("key"),
                _canonical(e["value"], value_type).alias("value"),
            ),
        )
        return F.array_sort(entries)  # map keys are unique: sorted by key
    if isinstance(dtype, TimestampType):
        return F.unix_micros(col)  # an instant, whatever the session time zone
    if isinstance(dtype, (TimestampNTZType, DateType)):
        return col.cast("string")
    if isinstance(dtype, BinaryType):
        return F.base64(col)
    return col


def canonical_json(schema: StructType) -> Column:
    """The row as JSON text: every column of `schema`, in schema order, nulls written out."""
    row = F.struct(*[_canonical(F.col(f.name), f.dataType).alias(f.name) for f in schema.fields])
    return F.to_json(row, {"ignoreNullFields": "false"})


def row_hashes(decision_log: DataFrame, schema: StructType = DECISION_LOG.schema) -> DataFrame:
    """(run_date, rec_id, policy_id, row_hash) per row: sha256 of its canonical JSON."""
    missing = [f.name for f in schema.fields if f.name not in decision_log.columns]
    if missing:
        raise SchemaMismatchError(f"audit: {DECISION_LOG} lacks {', '.join(missing)}")
    return decision_log.select(
        "run_date", "rec_id", "policy_id", F.sha2(canonical_json(schema), 256).alias("row_hash")
    )


# --- the chain (pure, on the driver: hashes only) -------------------------------------------


@dataclass(frozen=True)
class ChainedRow:
    rec_id: str
    policy_id: str
    row_hash: str


@dataclass(frozen=True)
class Head:
    run_date: date
    rows: int
    head: str
    previous_head: str | None
    previous_date: date | None
    hmac: str | None
    reason: str | None

    def message(self) -> bytes:
        """What the HMAC covers: every other column."""
        return "|".join(
            [
                CHAIN_VERSION,
                self.run_date.isoformat(),
                str(self.rows),
                self.head,
                self.previous_head or "",
                self.previous_date.isoformat() if self.previous_date else "",
                self.reason or "",
            ]
        ).encode("utf-8")

    def as_row(self) -> tuple[Any, ...]:
        return (
            self.run_date,
            self.rows,
            self.head,
            self.previous_head,
            self.previous_date,
            self.hmac,
            self.reason,
        )


def chain_seed(run_date: date, previous_head: str | None) -> str:
    """h_0: binds the chain to its date and to the previous chained date's head."""
    text = f"{CHAIN_VERSION}|{run_date.isoformat()}|{previous_head or GENESIS}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fold_chain(seed: str, hashes: Iterable[str]) -> list[str]:
    """[h_1 .. h_N] with h_i = sha256(h_{i-1} || row_hash_i)."""
    current = bytes.fromhex(seed)
    out = []
    for row_hash in hashes:
        current = hashlib.sha256(current + bytes.fromhex(row_hash)).digest()
        out.append(current.hex())
    return out


def sign_head(key: bytes, head: Head) -> str:
    return hmac.new(key, head.message(), hashlib.sha256).hexdigest()


def ordered(rows: Iterable[ChainedRow]) -> list[ChainedRow]:
    return sorted(rows, key=lambda r: (r.rec_id, r.policy_id, r.row_hash))


@dataclass(frozen=True)
class Chain:
    head: Head
    rows: list[tuple[date, int, str, str, str, str]]  # DECISION_LOG_CHAIN rows


def build_chain(
    run_date: date,
    rows: Sequence[ChainedRow],
    previous: Head | None,
    reason: str,
    key: bytes | None,
) -> Chain:
    """The chain of one date seeded with `previous` (the last chained date before it)."""
    rows = ordered(rows)
    previous_head = previous.head if previous else None
    seed = chain_seed(run_date, previous_head)
    hashes = fold_chain(seed, [r.row_hash for r in rows])
    head = Head(
        run_date=run_date,
        rows=len(rows),
        head=hashes[-1] if hashes else seed,
        previous_head=previous_head,
        previous_date=previous.run_date if previous else None,
        hmac=None,
        reason=reason,
    )
    if key is not None:
        head = replace(head, hmac=sign_head(key, head))
    chained = [
        (run_date, i + 1, r.rec_id, r.policy_id, r.row_hash, h)
        for i, (r, h) in enumerate(zip(rows, hashes, strict=True))
    ]
    return Chain(head, chained)


@dataclass(frozen=True)
class RowChange:
    kind: Literal["changed", "deleted", "inserted"]
    position: int  # in the recorded chain (changed, deleted) or where it now sorts (inserted)
    rec_id: str
    policy_id: str

    def describe(self) -> str:
        return (
            f"{self.kind} row at position {self.position}: "
            f"rec_id {self.rec_id} policy_id {self.policy_id}"
        )


def compare_rows(
    recorded: Sequence[tuple[int, str, str, str]], current: Sequence[ChainedRow]
) -> list[RowChange]:
    """What differs between the recorded chain (position, rec_id, policy_id, row_hash) and the
    table now: a key whose hash differs is `changed`, a key gone `deleted`, a new one `inserted`."""
    now = ordered(current)
    available = Counter((r.rec_id, r.policy_id, r.row_hash) for r in now)
    lost = []
    for position, rec_id, policy_id, row_hash in recorded:
        if available[(rec_id, policy_id, row_hash)] > 0:
            available[(rec_id, policy_id, row_hash)] -= 1
        else:
            lost.append((position, rec_id, policy_id))
    new: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, r in enumerate(now, start=1):
        if available[(r.rec_id, r.policy_id, r.row_hash)] > 0:
            available[(r.rec_id, r.policy_id, r.row_hash)] -= 1
            new[(r.rec_id, r.policy_id)].append(position)
    changes = []
    for position, rec_id, policy_id in lost:
        kind: Literal["changed", "deleted"] = "deleted"
        if new.get((rec_id, policy_id)):
            new[(rec_id, policy_id)].pop(0)
            kind = "changed"
        changes.append(RowChange(kind, position, rec_id, policy_id))
    changes += [
        RowChange("inserted", position, rec_id, policy_id)
        for (rec_id, policy_id), positions in new.items()
        for position in positions
    ]
    return sorted(changes, key=lambda c: (c.position, c.kind, c.rec_id))


# --- I/O --------------------------------------------------------------------------------------


def _heads(lake: Lake) -> dict[date, Head]:
    """Every date's head (one small row per date)."""
    if not lake.exists(AUDIT_HEADS):
        return {}
    return {
        r["run_date"]: Head(
            r["run_date"],
            int(r["rows"]),
            r["head"],
            r["previous_head"],
            r["previous_date"],
            r["hmac"],
            r["reason"],
        )
        for r in lake.read(AUDIT_HEADS).collect()
    }


def _current_rows(lake: Lake, dates: Sequence[date]) -> dict[date, list[ChainedRow]]:
    """Row hashes of the decision log now, per date (computed on the executors)."""
    out: dict[date, list[ChainedRow]] = {d: [] for d in dates}
    if not dates or not lake.exists(DECISION_LOG):
        return out
    hashed = row_hashes(lake.read_dates(DECISION_LOG, dates))
    for r in hashed.orderBy("run_date", *ROW_ORDER).toLocalIterator():
        out[r["run_date"]].append(ChainedRow(r["rec_id"], r["policy_id"], r["row_hash"]))
    return out


def _recorded_rows(lake: Lake, dates: Sequence[date]) -> dict[date, list[tuple[Any, ...]]]:
    """The chain table's rows per date, in position order."""
    out: dict[date, list[tuple[Any, ...]]] = {d: [] for d in dates}
    if not dates or not lake.exists(DECISION_LOG_CHAIN):
        return out
    rows = lake.read_dates(DECISION_LOG_CHAIN, dates).orderBy("run_date", "position")
    for r in rows.toLocalIterator():
        out[r["run_date"]].append(
            (r["position"], r["rec_id"], r["policy_id"], r["row_hash"], r["chain_hash"])
        )
    return out


def _previous(heads: Mapping[date, Head], day: date) -> Head | None:
    earlier = [d for d in heads if d < day]
    return heads[max(earlier)] if earlier else None


def chain_gaps(ctx: Any, dates: Sequence[date]) -> list[date]:
    """Days the lake lost (the anchor, or a surviving head's link, says they were chained)
    that chaining `dates` would link over: a later date relinked past them, or a new date
    chained onto a head older than them (a truncated tail). Recommend checks this before it
    writes anything; `record_chain` refuses unless the gap is accepted."""
    lake: Lake = ctx.lake
    dates = sorted(set(dates))
    if not dates:
        return []
    heads = _heads(lake)
    records = read_anchor(ctx.settings, lake.spark) or []
    missing = missing_days(heads, latest_anchored(records), accepted_gaps(records))
    last = max([*dates, *(d for d in heads if d > dates[0])])
    previous = _previous(heads, dates[0])
    floor = previous.run_date if previous else date.min
    return [d for d in missing if d not in dates and floor < d < last]


def refuse_chain_gaps(ctx: Any, dates: Sequence[date], accept_gap: str | None) -> list[date]:
    """`chain_gaps`, as a one-line PipelineError unless `accept_gap` gives a reason (then the
    gaps, to be logged)."""
    gaps = chain_gaps(ctx, dates)
    if gaps and not accept_gap:
        days = ", ".join(d.isoformat() for d in gaps)
        raise PipelineError(
            f"audit: chaining {', '.join(d.isoformat() for d in sorted(set(dates)))} would link "
            f"over day(s) the lake lost: {days} (the audit anchor or a later day's link records "
            "them); restore them, or accept the gap with --accept-gap REASON (logged)"
        )
    return gaps


def record_chain(
    ctx: Any, dates: Sequence[date], reason: str = "recommend", accept_gap: str | None = None
) -> dict[str, Any]:
    """Chain the decision log of `dates`; relink later chained dates whose seed changed;
    append every head written to the anchor.

    A later date is relinked only when its rows still match its recorded chain: a date
    whose log was altered keeps its old chain (and so keeps failing `verify`), so
    re-recording never launders tampering. Chaining over a day the lake lost is refused
    unless `accept_gap` (or `ctx.accept_audit_gap`) gives a reason, which is logged in the
    anchor and the heads. Returns a summary for the stage result.
    """
    key = audit_key_for(getattr(ctx, "settings", None))
    lake: Lake = ctx.lake
    dates = sorted(set(dates))
    if not dates:
        return {"chained": []}
    accept_gap = accept_gap or getattr(ctx, "accept_audit_gap", None)
    gaps = refuse_chain_gaps(ctx, dates, accept_gap)
    spark = lake.spark
    note = ""
    if gaps:
        log.warning(
            "audit: chaining over lost day(s) %s, accepted: %s",
            ", ".join(d.isoformat() for d in gaps),
            accept_gap,
        )
        append_anchor(
            ctx.settings,
            spark,
            [AnchorRecord("gap_accepted", None, _now_text(), reason=accept_gap,
                          dates=tuple(gaps))],
        )  # fmt: skip
        note = f" (gap over {', '.join(d.isoformat() for d in gaps)} accepted: {accept_gap})"
        reason += note
    heads = _heads(lake)
    later = sorted(d for d in heads if d > dates[0] and d not in dates)
    todo = sorted({*dates, *later})
    current = _current_rows(lake, todo)
    recorded = _recorded_rows(lake, later)
    previous = _previous(heads, todo[0])
    chains: list[Chain] = []
    relinked, kept = [], []
    relink_reason = f"relinked after {dates[0]} was re-chained{note}"
    for day in todo:
        if day in later:
            old = heads[day]
            same_rows = [(p, r, q, h) for p, r, q, h, _ in recorded[day]] == [
                (i + 1, c.rec_id, c.policy_id, c.row_hash) for i, c in enumerate(current[day])
            ]
            linked = (old.previous_date, old.previous_head) == (
                previous.run_date if previous else None,
                previous.head if previous else None,
            )
            if linked or not same_rows:
                if not linked:
                    kept.append(day)  # altered since it was chained: its evidence stays
                previous = old
                continue
            chain = build_chain(day, current[day], previous, relink_reason, key)
            relinked.append(day)
        else:
            chain = build_chain(day, current[day], previous, reason, key)
        chains.append(chain)
        previous = chain.head
    written = [c.head.run_date for c in chains]
    rows = [row for c in chains for row in c.rows]
    lake.replace_dates(
        spark.createDataFrame(rows, DECISION_LOG_CHAIN.schema), DECISION_LOG_CHAIN, written
    )
    lake.replace_dates(
        spark.createDataFrame([c.head.as_row() for c in chains], AUDIT_HEADS.schema),
        AUDIT_HEADS,
        written,
    )
    at = _now_text()
    append_anchor(ctx.settings, spark, [AnchorRecord.of(c.head, at) for c in chains])
    return {
        "chained": [d.isoformat() for d in written],
        "relinked": [d.isoformat() for d in relinked],
        "not_relinked": [d.isoformat() for d in kept],
        "signed": key is not None,
        "gaps_accepted": [d.isoformat() for d in gaps],
        "heads": {c.head.run_date.isoformat(): c.head.head for c in chains},
    }


@dataclass
class VerifyResult:
    run_date: date
    rows: int = 0  # decision log rows now
    head: str | None = None  # the recorded head
    hmac: str = "unsigned"  # verified | unsigned | not checked (no key) | bad | missing
    changes: list[RowChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # evidence of tampering
    unchecked: list[str] = field(default_factory=list)  # what could not be checked

    @property
    def intact(self) -> bool:
        """Nothing differs from what was recorded (the signature may be unchecked)."""
        return not self.changes and not self.problems

    @property
    def ok(self) -> bool:
        """Intact, signed, HMAC verified and the head equal to the anchor's copy."""
        return self.intact and not self.unchecked

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.rows} rows, head {self.head} ({self.run_date}; HMAC {self.hmac})"
        counts = Counter(c.kind for c in self.changes)
        parts = [
            f"{counts.get('changed', 0)} changed, {counts.get('deleted', 0)} deleted, "
            f"{counts.get('inserted', 0)} inserted row(s)",
            *self.problems,
            *self.unchecked,
        ]
        return f"FAILED {self.run_date}: " + "; ".join(parts)

    def details(self) -> list[str]:
        shown = [c.describe() for c in self.changes[:MAX_CHANGES_SHOWN]]
        if len(self.changes) > MAX_CHANGES_SHOWN:
            shown.append(f"... and {len(self.changes) - MAX_CHANGES_SHOWN} more")
        return shown


def verify_chain(ctx: Any, day: date) -> VerifyResult:
    """Check `day`'s decision log against its recorded chain, head, HMAC, previous-day link
    and the anchor's copy of its head."""
    return verify_dates(ctx, [day])[day]


def verify_dates(ctx: Any, days: Sequence[date]) -> dict[date, VerifyResult]:
    """`verify_chain` for several dates with one read of each table."""
    key = audit_key_for(getattr(ctx, "settings", None))
    lake: Lake = ctx.lake
    days = sorted(set(days))
    heads = _heads(lake)
    current = _current_rows(lake, days)
    recorded = _recorded_rows(lake, days)
    missing = "does not exist" if not lake.exists(AUDIT_HEADS) else None
    records = read_anchor(ctx.settings, lake.spark)
    anchored = latest_anchored(records) if records is not None else None
    where = str(ctx.settings.paths.audit_anchor)
    return {
        d: _verify(d, heads, current[d], recorded[d], key, missing, anchored, where) for d in days
    }


def chained_dates(ctx: Any) -> set[date]:
    """Every date the lake has a head for, and every date the anchor recorded."""
    lake: Lake = ctx.lake
    records = read_anchor(ctx.settings, lake.spark) or []
    return set(_heads(lake)) | set(latest_anchored(records))


@dataclass
class TrailResult:
    """The whole trail against the anchor: days the lake lost, a truncated tail."""

    days: int = 0  # heads in the lake
    anchored: int = 0  # dates in the anchor
    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unchecked

    def summary(self) -> str:
        if self.ok:
            extra = f"; {'; '.join(self.notes)}" if self.notes else ""
            return f"trail ok: {self.days} chained day(s), {self.anchored} in the anchor{extra}"
        return "FAILED trail: " + "; ".join([*self.problems, *self.unchecked, *self.notes])


def verify_trail(ctx: Any) -> TrailResult:
    """Compare the chained days of the lake with the anchor: a day the anchor (or a later
    day's link) records that the lake no longer holds is a deleted day, the most recent
    ones a truncated tail; gaps accepted with a reason are listed, not failed."""
    lake: Lake = ctx.lake
    heads = _heads(lake)
    records = read_anchor(ctx.settings, lake.spark)
    result = TrailResult(days=len(heads))
    if records is None:
        result.unchecked.append(
            f"no audit anchor at {ctx.settings.paths.audit_anchor}: deleted days cannot be told"
        )
        return result
    anchored = latest_anchored(records)
    accepted = accepted_gaps(records)
    result.anchored = len(anchored)
    gone = missing_days(heads, anchored, accepted)
    tail = [d for d in gone if not heads or d > max(heads)]
    middle = [d for d in gone if d not in tail]
    if middle:
        result.problems.append(
            "day(s) chained but gone from the lake: " + ", ".join(d.isoformat() for d in middle)
        )
    if tail:
        result.problems.append(
            f"tail truncated: the anchor records {', '.join(d.isoformat() for d in tail)} "
            f"after the lake's last chained day "
            f"({max(heads).isoformat() if heads else 'none'})"
        )
    if accepted:
        result.notes.append(
            "gap(s) accepted: "
            + ", ".join(f"{d.isoformat()} ({why})" for d, why in sorted(accepted.items()))
        )
    return result


@dataclass
class AnchorBackfill:
    """What `anchor_unanchored` did: the dates it anchored, and those it refused (why)."""

    anchored: list[date] = field(default_factory=list)
    refused: dict[date, str] = field(default_factory=dict)


def _not_anchored_only(result: VerifyResult, keyless: bool) -> list[str]:
    """What, besides the day's absence from the anchor, stops `result` from verifying; a
    head that is unsigned or unchecked passes only without a key (dev: unsigned nights)."""
    day = result.run_date
    return [
        *(p for p in result.problems if not p.startswith(f"{day} is not in the audit anchor")),
        *(
            u
            for u in result.unchecked
            if not u.startswith("no audit anchor at")
            and not (keyless and u.startswith(("HMAC not checked", "head is not signed")))
        ),
        *(
            [f"{len(result.changes)} row(s) differ from the recorded chain"]
            if result.changes
            else []
        ),
    ]


def anchor_unanchored(ctx: Any, reason: str) -> AnchorBackfill:
    """Append to the anchor the heads of the chained days it does not hold (a lake chained
    before `paths.audit_anchor` was configured), each only when it passes every other check
    of `verify`: intact rows and order, its head, the link to the previous day, and the
    HMAC when the key is set. `reason` (who and why) goes with each record. A day that
    fails is refused with what failed, and not anchored: the anchor never vouches for a day
    the chain does not."""
    if not reason.strip():
        raise ValueError("give the reason for anchoring the days after the fact")
    lake: Lake = ctx.lake
    heads = _heads(lake)
    anchored = latest_anchored(read_anchor(ctx.settings, lake.spark) or [])
    todo = sorted(d for d in heads if d not in anchored)
    out = AnchorBackfill()
    if not todo:
        return out
    keyless = audit_key_for(ctx.settings) is None
    for day, result in sorted(verify_dates(ctx, todo).items()):
        failed = _not_anchored_only(result, keyless)
        if failed:
            out.refused[day] = "; ".join(failed)
        else:
            out.anchored.append(day)
    at = _now_text()
    why = f"anchored after the fact: {reason.strip()}"
    append_anchor(
        ctx.settings,
        lake.spark,
        [replace(AnchorRecord.of(heads[d], at), reason=why) for d in out.anchored],
    )
    for day in out.anchored:
        log.warning("audit: %s anchored after the fact (%s)", day, reason.strip())
    return out


def _first_out_of_order(recorded: Sequence[tuple[Any, ...]]) -> int | None:
    keys = [(r[1], r[2], r[3]) for r in recorded]
    return next((i for i in range(1, len(keys)) if keys[i] < keys[i - 1]), None)


def _verify(
    day: date,
    heads: Mapping[date, Head],
    current: Sequence[ChainedRow],
    recorded: Sequence[tuple[Any, ...]],
    key: bytes | None,
    heads_missing: str | None,
    anchored: Mapping[date, AnchorRecord] | None = None,
    anchor: str = "",
) -> VerifyResult:
    result = VerifyResult(day)
    result.rows = len(current)
    head = heads.get(day)
    copy = anchored.get(day) if anchored is not None else None
    if head is None:
        what = heads_missing or f"has no row for {day}"
        result.problems.append(
            f"no chain recorded: {AUDIT_HEADS} {what} (head deleted, or recommend never ran)"
        )
        if copy is not None:
            result.problems.append(
                f"the audit anchor recorded head {copy.head} for {day} at {copy.recorded_at}: "
                "the day was deleted"
            )
        result.changes = compare_rows([], current)
        return result
    result.head = head.head

    # 1. the recorded chain is consistent with itself and with its head
    positions = [r[0] for r in recorded]
    if positions != list(range(1, len(recorded) + 1)):
        result.problems.append(f"{DECISION_LOG_CHAIN} positions are not 1..{len(recorded)}")
    out_of_order = _first_out_of_order(recorded)
    if out_of_order is not None:
        result.problems.append(
            f"{DECISION_LOG_CHAIN} rows reordered at position {recorded[out_of_order][0]} "
            "(the chain is ordered by rec_id, policy_id, row_hash)"
        )
    if len(recorded) != head.rows:
        result.problems.append(
            f"{AUDIT_HEADS} records {head.rows} rows but {DECISION_LOG_CHAIN} holds {len(recorded)}"
        )
    seed = chain_seed(day, head.previous_head)
    recomputed = fold_chain(seed, [r[3] for r in recorded])
    broken = next((i for i, r in enumerate(recorded) if recomputed[i] != r[4]), None)
    if broken is not None:
        r = recorded[broken]
        result.problems.append(
            f"{DECISION_LOG_CHAIN} altered at position {r[0]} (rec_id {r[1]} policy_id {r[2]})"
        )
    if (recomputed[-1] if recomputed else seed) != head.head:
        result.problems.append("head does not match the recorded chain")

    # 2. the link to the previous chained date
    previous = _previous(heads, day)
    if head.previous_date is None and previous is not None:
        result.problems.append(
            f"link to the previous day broken: {previous.run_date} has a chain but {day} "
            "was chained as the first date"
        )
    elif head.previous_date is not None:
        if head.previous_date not in heads:
            result.problems.append(
                f"link to the previous day broken: the chain head of {head.previous_date} "
                f"is missing from {AUDIT_HEADS} (day deleted?)"
            )
        elif previous is not None and previous.run_date != head.previous_date:
            result.problems.append(
                f"link to the previous day broken: {previous.run_date} was chained between "
                f"{head.previous_date} and {day} without relinking {day}"
            )
        elif heads[head.previous_date].head != head.previous_head:
            result.problems.append(
                f"link to the previous day broken: the head of {head.previous_date} changed "
                f"after {day} was chained"
            )

    # 3. the head's signature: unsigned or unchecked never passes
    if key is None:
        result.hmac = f"not checked: {AUDIT_KEY_ENV} unset" if head.hmac else "unsigned"
        result.unchecked.append(
            f"HMAC not checked: {AUDIT_KEY_ENV} is not set"
            if head.hmac
            else f"head is not signed (and {AUDIT_KEY_ENV} is not set to check one)"
        )
    elif head.hmac is None:
        result.hmac = "missing"
        result.problems.append(
            f"head is not signed although {AUDIT_KEY_ENV} is set (recorded without the key, "
            "or its HMAC was removed)"
        )
    elif not hmac.compare_digest(sign_head(key, head), head.hmac):
        result.hmac = "bad"
        result.problems.append(
            "HMAC of the head does not match: head forged or rewritten without the key "
            f"(or {AUDIT_KEY_ENV} differs from the recording key)"
        )
    else:
        result.hmac = "verified"

    # 4. the head against the anchor's copy, outside the lake
    if anchored is None:
        result.unchecked.append(f"no audit anchor at {anchor}: the head is not compared")
    elif copy is None:
        result.problems.append(
            f"{day} is not in the audit anchor (chained without it, or its record was removed)"
        )
    elif not copy.matches(head):
        result.problems.append(
            f"the head differs from the audit anchor's (recorded {copy.recorded_at}): "
            "rewritten after it was chained"
        )

    # 5. the rows themselves
    result.changes = compare_rows([(r[0], r[1], r[2], r[3]) for r in recorded], current)
    return result
