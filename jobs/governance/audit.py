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
previous_date, hmac, reason). Only `record_chain` and `verify_chain` do I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
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

from jobs.core.errors import ConfigError, SchemaMismatchError
from jobs.core.lake import Lake
from jobs.core.tables import AUDIT_HEADS, DECISION_LOG, DECISION_LOG_CHAIN

__all__ = [
    "AUDIT_KEY_ENV",
    "ChainedRow",
    "Head",
    "RowChange",
    "VerifyResult",
    "audit_key",
    "build_chain",
    "canonical_json",
    "chain_seed",
    "compare_rows",
    "fold_chain",
    "record_chain",
    "row_hashes",
    "sign_head",
    "verify_chain",
    "verify_dates",
]

AUDIT_KEY_ENV = "POLICYLAKE_AUDIT_KEY"
MIN_KEY_BYTES = 32
GENESIS = "0" * 64
CHAIN_VERSION = "policylake-decision-log-chain/v1"
ROW_ORDER = ("rec_id", "policy_id", "row_hash")
MAX_CHANGES_SHOWN = 20


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


def record_chain(ctx: Any, dates: Sequence[date], reason: str = "recommend") -> dict[str, Any]:
    """Chain the decision log of `dates`; relink later chained dates whose seed changed.

    A later date is relinked only when its rows still match its recorded chain: a date
    whose log was altered keeps its old chain (and so keeps failing `verify`), so
    re-recording never launders tampering. Returns a summary for the stage result.
    """
    key = audit_key()
    lake: Lake = ctx.lake
    dates = sorted(set(dates))
    if not dates:
        return {"chained": []}
    heads = _heads(lake)
    later = sorted(d for d in heads if d > dates[0] and d not in dates)
    todo = sorted({*dates, *later})
    current = _current_rows(lake, todo)
    recorded = _recorded_rows(lake, later)
    previous = _previous(heads, todo[0])
    chains: list[Chain] = []
    relinked, kept = [], []
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
            chain = build_chain(
                day, current[day], previous, f"relinked after {dates[0]} was re-chained", key
            )
            relinked.append(day)
        else:
            chain = build_chain(day, current[day], previous, reason, key)
        chains.append(chain)
        previous = chain.head
    spark = lake.spark
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
    return {
        "chained": [d.isoformat() for d in written],
        "relinked": [d.isoformat() for d in relinked],
        "not_relinked": [d.isoformat() for d in kept],
        "signed": key is not None,
        "heads": {c.head.run_date.isoformat(): c.head.head for c in chains},
    }


@dataclass
class VerifyResult:
    run_date: date
    rows: int = 0  # decision log rows now
    head: str | None = None  # the recorded head
    hmac: str = "unsigned"  # verified | unsigned | not checked (no key) | bad
    changes: list[RowChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.changes and not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.rows} rows, head {self.head} ({self.run_date}; HMAC {self.hmac})"
        counts = Counter(c.kind for c in self.changes)
        parts = [
            f"{counts.get('changed', 0)} changed, {counts.get('deleted', 0)} deleted, "
            f"{counts.get('inserted', 0)} inserted row(s)",
            *self.problems,
        ]
        return f"FAILED {self.run_date}: " + "; ".join(parts)

    def details(self) -> list[str]:
        shown = [c.describe() for c in self.changes[:MAX_CHANGES_SHOWN]]
        if len(self.changes) > MAX_CHANGES_SHOWN:
            shown.append(f"... and {len(self.changes) - MAX_CHANGES_SHOWN} more")
        return shown


def verify_chain(ctx: Any, day: date) -> VerifyResult:
    """Check `day`'s decision log against its recorded chain, head, HMAC and previous-day link."""
    return verify_dates(ctx, [day])[day]


def verify_dates(ctx: Any, days: Sequence[date]) -> dict[date, VerifyResult]:
    """`verify_chain` for several dates with one read of each table."""
    key = audit_key()
    lake: Lake = ctx.lake
    days = sorted(set(days))
    heads = _heads(lake)
    current = _current_rows(lake, days)
    recorded = _recorded_rows(lake, days)
    missing = "does not exist" if not lake.exists(AUDIT_HEADS) else None
    return {d: _verify(d, heads, current[d], recorded[d], key, missing) for d in days}


def _verify(
    day: date,
    heads: Mapping[date, Head],
    current: Sequence[ChainedRow],
    recorded: Sequence[tuple[Any, ...]],
    key: bytes | None,
    heads_missing: str | None,
) -> VerifyResult:
    result = VerifyResult(day)
    result.rows = len(current)
    head = heads.get(day)
    if head is None:
        what = heads_missing or f"has no row for {day}"
        result.problems.append(
            f"no chain recorded: {AUDIT_HEADS} {what} (head deleted, or recommend never ran)"
        )
        result.changes = compare_rows([], current)
        return result
    result.head = head.head

    # 1. the recorded chain is consistent with itself and with its head
    positions = [r[0] for r in recorded]
    if positions != list(range(1, len(recorded) + 1)):
        result.problems.append(f"{DECISION_LOG_CHAIN} positions are not 1..{len(recorded)}")
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

    # 3. the head's signature
    if key is None:
        result.hmac = f"not checked: {AUDIT_KEY_ENV} unset" if head.hmac else "unsigned"
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

    # 4. the rows themselves
    result.changes = compare_rows([(r[0], r[1], r[2], r[3]) for r in recorded], current)
    return result
