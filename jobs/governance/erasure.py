"""Data-subject erasure (`policylake forget --user U`): one user out of every table, for good.

1. The subject: the canonical id and every spelling of it (identity directory,
   `jobs.reference.files.user_aliases`), plus its pseudonym tokens (ops.pseudonyms, and the
   token computed with the pseudonym key when it is set).
   The subject must be in the directory (or `allow_unknown`, `forget --not-in-directory`),
   and never a shared or system account (`root`, `Administrator`, `SYSTEM`, ... and the
   directory's service accounts): their names appear in everyone's evidence.
2. Every Delta table under the lake root is scanned. A row is **deleted** when it is the
   user's: `user_id`, `user_name_raw`, `identifier` is one of the spellings, `entity_id` /
   `target_id` of an account entity is, `token` is one of the tokens. Raw evidence
   (bronze lines, `silver.quarantine`) is never deleted: a line naming the subject may be
   someone else's evidence (an sshd line, a Windows event about them), so it is
   **redacted** like every other row that merely **mentions** the user (a host's `users`
   set, a peer group's member days, a reason text naming the account): map entries and
   array elements that are the user are dropped, mentions in text become the erasure's
   pseudonym `[erased:<first 12 hex of subject_ref>]`, the same in every line, so the
   lines still correlate and ops.erasures says which erasure made them.
3. Rewrites replace only the affected dates (`replaceWhere` on run_date, so no user id is
   ever written into a commit predicate); gold.policy_recommendations is MERGEd on rec_id
   so Change Data Feed consumers see only the withdrawn rows.
4. The audit chain of the affected decision-log dates is re-recorded with the erasure as
   its reason (dates whose chain already failed `verify` are left as they are).
5. Every touched table is vacuumed with zero retention (`VACUUM_RETENTION_HOURS`; the
   retention check is disabled for that session only, then restored): older versions,
   CDF files and their parquet files are physically gone, and time travel to them fails.
   CDF consumers whose cursor is older than the erasure's version must resync from a
   snapshot (docs/privacy.md; the consumer example does).
The rewrite holds the date locks of every date it touches (and of today for tables
without dates), so no pipeline run writes those dates meanwhile.
6. ops.erasures records who, when, which tables and how many rows, never the user's id:
   only a keyed HMAC of it (or a plain sha256 when no key is configured).

Not touched (reported): files outside the lake (raw/ landing files, reports, exports,
Data Docs); re-ingesting raw files that still hold the user would bring the rows back.
Delta commit files keep per-file min/max statistics of old versions until log cleanup
(`delta.logRetentionDuration`); docs/privacy.md explains.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StringType, StructType

from jobs.core.errors import PipelineError, ReferenceDataError
from jobs.core.lake import Lake
from jobs.core.locks import lock_dates
from jobs.core.tables import (
    AUDIT_HEADS,
    CATALOGUE,
    DECISION_LOG,
    DECISION_LOG_CHAIN,
    ERASURES,
    LAYERS,
    POLICY_RECOMMENDATIONS,
    PSEUDONYMS,
    SILVER_QUARANTINE,
)
from jobs.governance.audit import (
    AUDIT_KEY_ENV,
    audit_key,
    record_chain,
    refuse_chain_gaps,
    verify_dates,
)
from jobs.governance.privacy import token_of
from jobs.reference.files import identity_directory, user_aliases
from jobs.stages.recommend.recommendations import withdraw_and_redact

__all__ = [
    "VACUUM_RETENTION_HOURS",
    "ErasureResult",
    "Subject",
    "check_subject",
    "erase_user",
    "mention_pattern",
    "owned_rows",
    "plan_erasure",
    "redact",
    "resolve_subject",
    "shared_account",
]

REDACTED = "[erased]"  # a mention when no pseudonym is given (a dry run's count)
VACUUM_RETENTION_HOURS = 0.0  # erasure means the bytes go; CDF consumers resync (docs/privacy.md)
# shared and system accounts: their names are in everyone's evidence, never one person's
SYSTEM_ACCOUNTS = frozenset({
    "root", "administrator", "admin", "system", "nt authority\\system", "local service",
    "network service", "localsystem", "guest", "nobody", "daemon", "krbtgt",
    "defaultaccount", "wdagutilityaccount", "sshd", "www-data", "ubuntu", "ec2-user",
    "anonymous", "anonymous logon", "dwm-1", "umfd-0", "umfd-1",
})  # fmt: skip
ACCOUNT_TYPES = ("user", "service_account")
# hashes only, or rewritten by re-chaining the audit log
SKIPPED_TABLES = (ERASURES.name, DECISION_LOG_CHAIN.name, AUDIT_HEADS.name)
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
COMMIT_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# characters that continue an identifier: a mention must not touch one on either side
_ID_CHAR = r"[\w@%+\-]"


class ErasureError(PipelineError):
    """The erasure could not start (no such user, nothing to erase); one line."""


@dataclass(frozen=True)
class Subject:
    user_id: str  # canonical id (lower case)
    aliases: tuple[str, ...]  # every spelling, lower case, the canonical id included
    tokens: tuple[str, ...]  # pseudonym tokens of the user
    in_directory: bool
    shared: str | None = None  # why it is a shared or system account, or None

    @property
    def needles(self) -> tuple[str, ...]:
        return (*self.aliases, *self.tokens)


# --- transforms (pure) -----------------------------------------------------------------------


def mention_pattern(needles: Sequence[str]) -> str:
    """Java regex matching any needle as a whole identifier, case-insensitively.

    `jdoe` does not match inside `jdoe2` or `a.jdoe@x`; a sentence's final dot is allowed.
    """
    body = "|".join(re.escape(n) for n in sorted(set(needles), key=len, reverse=True))
    return rf"(?i)(?<!{_ID_CHAR}|\.)(?:{body})(?!{_ID_CHAR}|\.{_ID_CHAR})"


def _is_needle(col: Column, needles: Sequence[str]) -> Column:
    return F.lower(F.trim(col)).isin(list(needles))


def redact(
    col: Column,
    dtype: DataType,
    pattern: str,
    needles: Sequence[str],
    pseudonym: str = REDACTED,
) -> Column:
    """`col` without the subject: elements/keys that are the subject dropped, text mentions
    replaced by `pseudonym`. A value without a mention comes out unchanged."""
    if isinstance(dtype, StringType):
        return F.regexp_replace(col, pattern, pseudonym.replace("\\", "\\\\").replace("$", "\\$"))
    if isinstance(dtype, ArrayType):
        element = dtype.elementType
        if isinstance(element, StringType):
            kept = F.filter(col, lambda x: ~F.coalesce(_is_needle(x, needles), F.lit(False)))
        elif isinstance(element, StructType):
            strings = [f.name for f in element.fields if isinstance(f.dataType, StringType)]

            def is_subject(x: Column) -> Column:
                hits = [F.coalesce(_is_needle(x[n], needles), F.lit(False)) for n in strings]
                out = F.lit(False)
                for hit in hits:
                    out = out | hit
                return out

            kept = F.filter(col, lambda x: ~is_subject(x)) if strings else col
        else:
            kept = col
        return F.transform(kept, lambda x: redact(x, element, pattern, needles, pseudonym))
    if isinstance(dtype, MapType):
        value_type = dtype.valueType
        kept = (
            F.map_filter(col, lambda k, _v: ~F.coalesce(_is_needle(k, needles), F.lit(False)))
            if isinstance(dtype.keyType, StringType)
            else col
        )
        return F.transform_values(
            kept, lambda _k, v: redact(v, value_type, pattern, needles, pseudonym)
        )
    if isinstance(dtype, StructType):
        inner = F.struct(
            *[
                redact(col[f.name], f.dataType, pattern, needles, pseudonym).alias(f.name)
                for f in dtype.fields
            ]
        )
        return F.when(col.isNull(), F.lit(None)).otherwise(inner)
    return col


def mentions(df: DataFrame, pattern: str) -> Column:
    """The row names the subject somewhere (any column, nested values included)."""
    return F.coalesce(
        F.to_json(F.struct(*[F.col(c) for c in df.columns])).rlike(pattern), F.lit(False)
    )


def is_raw_evidence(table: str) -> bool:
    """Bronze lines and quarantined raw text: redacted, never deleted (other people's
    evidence may be in the same line)."""
    return table.startswith("bronze.") or table == SILVER_QUARANTINE.name


def owned_rows(table: str, df: DataFrame, subject: Subject, pattern: str) -> Column:
    """The row is the subject's own (deleted rather than redacted); never null. Raw
    evidence never is."""
    if is_raw_evidence(table):
        return F.lit(False)
    columns = set(df.columns)
    accounts = list(ACCOUNT_TYPES)
    conds: list[Column] = []
    for column in ("user_id", "user_name_raw", "identifier"):
        if column in columns:
            conds.append(_is_needle(F.col(column), subject.needles))
    for id_column, type_column in (("entity_id", "entity_type"), ("target_id", "target_type")):
        if id_column in columns:
            cond = _is_needle(F.col(id_column), subject.needles)
            if type_column in columns:
                cond = cond & F.col(type_column).isin(accounts)
            conds.append(cond)
    if "token" in columns and subject.tokens:
        conds.append(F.col("token").isin(list(subject.tokens)))
    out = F.lit(False)
    for cond in conds:
        out = out | F.coalesce(cond, F.lit(False))
    return out


# --- I/O ------------------------------------------------------------------------------------


def list_tables(lake: Lake) -> list[str]:
    """Every Delta table under the lake root, `<layer>.<name>`, sorted; a table the catalogue
    does not know stops the erasure (whose rows it holds cannot be told)."""
    spark = lake.spark
    jvm: Any = spark._jvm  # type: ignore[attr-defined]
    conf = spark._jsc.hadoopConfiguration()  # type: ignore[attr-defined]
    found = []
    for layer in LAYERS:
        path = jvm.org.apache.hadoop.fs.Path(f"{lake.root.rstrip('/')}/{layer}")
        fs = path.getFileSystem(conf)
        if not fs.exists(path):
            continue
        for status in fs.listStatus(path):
            name = str(status.getPath().getName())
            if status.isDirectory() and not name.startswith(("_", ".")):
                table = f"{layer}.{name}"
                if table not in CATALOGUE:
                    if DeltaTable.isDeltaTable(spark, f"{lake.root.rstrip('/')}/{layer}/{name}"):
                        raise ErasureError(
                            f"forget: {lake.root}/{layer}/{name} is a Delta table the catalogue "
                            "(jobs/core/tables.py) does not know; declare it or move it away"
                        )
                    continue
                if lake.exists(table):
                    found.append(table)
    return sorted(found)


def _subject_ref(settings: Any, user_id: str) -> tuple[str, str]:
    """A keyed hash of the user id for ops.erasures (never the id itself)."""
    env_name = settings.privacy.key_env
    value = os.environ.get(env_name)
    key, name = (value.encode("utf-8"), env_name) if value else (audit_key(), AUDIT_KEY_ENV)
    message = f"erasure|{user_id}".encode()
    if key:
        return hmac.new(key, message, hashlib.sha256).hexdigest(), f"hmac-sha256:{name}"
    return hashlib.sha256(message).hexdigest(), "sha256"


def shared_account(user_id: str, aliases: Sequence[str], account_type: str | None) -> str | None:
    """Why `user` is a shared or system account (refused by `forget`), or None."""
    for name in (user_id, *aliases):
        bare = name.split("\\")[-1].split("@")[0].strip().lower()
        if name.strip().lower() in SYSTEM_ACCOUNTS or bare in SYSTEM_ACCOUNTS:
            return f"{name!r} is a shared or system account"
    if (account_type or "").strip().lower() in ("service", "service_account", "shared", "system"):
        return f"{user_id!r} is a {account_type} account in the identity directory"
    return None


def resolve_subject(ctx: Any, user: str) -> Subject:
    """The canonical id, every spelling and every pseudonym token of `user`."""
    wanted = user.strip().lower()
    if not wanted:
        raise ErasureError("forget: --user is empty")
    lake: Lake = ctx.lake
    aliases = {wanted}
    user_id, in_directory, account_type = wanted, False, None
    try:
        spellings = user_aliases(ctx.spark, ctx.settings)
        match = spellings.where(F.col("alias_key") == wanted).select("user_id").first()
        if match is not None:
            user_id, in_directory = str(match["user_id"]).lower(), True
            aliases |= {
                str(r["alias_key"])
                for r in spellings.where(F.lower("user_id") == user_id).collect()
            }
            aliases.add(user_id)
            entry = (
                identity_directory(ctx.spark, ctx.settings)
                .where(F.lower("user_id") == user_id)
                .select("account_type")
                .first()
            )
            account_type = entry["account_type"] if entry is not None else None
    except ReferenceDataError:
        pass
    tokens: set[str] = set()
    if lake.exists(PSEUDONYMS):
        tokens |= {
            str(r["token"])
            for r in lake.read(PSEUDONYMS)
            .where(F.lower("identifier").isin(sorted(aliases)))
            .select("token")
            .distinct()
            .collect()
        }
    key_value = os.environ.get(ctx.settings.privacy.key_env)
    if key_value:
        tokens.add(token_of(key_value.encode("utf-8"), user_id, "user"))
    shared = shared_account(user_id, sorted(aliases), account_type)
    return Subject(user_id, tuple(sorted(aliases)), tuple(sorted(tokens)), in_directory, shared)


def check_subject(subject: Subject, allow_unknown: bool = False) -> None:
    """Refuse a shared or system account always, a subject the directory does not know
    unless `allow_unknown` (a typo would otherwise erase a stranger's mentions)."""
    if subject.shared:
        raise ErasureError(
            f"forget: {subject.shared}: its name is in everyone's evidence; erase a person"
        )
    if not subject.in_directory and not allow_unknown:
        raise ErasureError(
            f"forget: {subject.user_id!r} is not in the identity directory; check the spelling, "
            "or pass --not-in-directory to erase an identifier the directory never had"
        )


@dataclass
class ErasureResult:
    subject: Subject
    erasure_id: str = ""
    dry_run: bool = True
    deleted: dict[str, int] = field(default_factory=dict)
    redacted: dict[str, int] = field(default_factory=dict)
    rechained: list[date] = field(default_factory=list)
    chain_left_broken: list[date] = field(default_factory=list)
    vacuumed: list[str] = field(default_factory=list)
    # table -> its version after the erasure: a CDF cursor below it must resync (snapshot)
    resync_below: dict[str, int] = field(default_factory=dict)
    outside_files: list[str] = field(default_factory=list)
    # what the scan found, so a plan applied at once is not scanned twice (not for display)
    plan: dict[str, dict[date | None, tuple[int, int]]] = field(default_factory=dict, repr=False)

    @property
    def tables(self) -> list[str]:
        return sorted(
            {t for t, n in self.deleted.items() if n} | {t for t, n in self.redacted.items() if n}
        )


def _affected(
    table: str, df: DataFrame, subject: Subject, pattern: str
) -> dict[date | None, tuple[int, int]]:
    """run_date -> (rows deleted, rows redacted) for one table (a small aggregate)."""
    owned = owned_rows(table, df, subject, pattern)
    named = mentions(df, pattern)
    date_col = F.col("run_date") if "run_date" in df.columns else F.lit(None).cast("date")
    rows = (
        df.where(owned | named)
        .groupBy(date_col.alias("d"))
        .agg(
            F.sum(owned.cast("long")).alias("deleted"),
            F.sum((~owned & named).cast("long")).alias("redacted"),
        )
        .collect()
    )
    return {r["d"]: (int(r["deleted"]), int(r["redacted"])) for r in rows}


def _rewritten(
    df: DataFrame,
    columns: Sequence[str],
    subject: Subject,
    pattern: str,
    table: str,
    pseudonym: str,
) -> DataFrame:
    """The table's rows of the affected dates without the subject (same columns)."""
    owned = owned_rows(table, df, subject, pattern)
    named = mentions(df, pattern)
    types = {f.name: f.dataType for f in df.schema.fields}
    return df.where(~owned).select(
        *[
            F.when(named, redact(F.col(c), types[c], pattern, subject.needles, pseudonym))
            .otherwise(F.col(c))
            .alias(c)
            for c in columns
        ]
    )


def _rewrite(
    lake: Lake,
    table: str,
    subject: Subject,
    pattern: str,
    days: Sequence[date | None],
    pseudonym: str,
) -> None:
    columns = lake.read(table).columns
    if table == POLICY_RECOMMENDATIONS.name:
        # MERGE on rec_id: CDF consumers see the withdrawn rows as deletes, nothing else
        df = lake.read(table)
        owned = owned_rows(table, df, subject, pattern)
        named = mentions(df, pattern)
        types = {f.name: f.dataType for f in df.schema.fields}
        source = df.where(owned | named).select(
            *[
                redact(F.col(c), types[c], pattern, subject.needles, pseudonym).alias(c)
                for c in columns
            ],
            owned.alias("_erase"),
        )
        withdraw_and_redact(lake, source)
        return
    dated = [d for d in days if d is not None]
    if "run_date" in columns and len(dated) == len(days):
        df = lake.read_dates(table, dated)
        lake.replace_dates(
            _rewritten(df, columns, subject, pattern, table, pseudonym), table, dated
        )
        return
    # not partitioned by run_date: rewrite the whole table in one overwrite commit
    df = lake.read(table)
    lake.overwrite(_rewritten(df, columns, subject, pattern, table, pseudonym), table)


def _vacuum(spark: SparkSession, lake: Lake, tables: Sequence[str]) -> list[str]:
    """Zero-retention VACUUM (deletion vectors purged first); the check off for this session only."""
    previous = spark.conf.get(RETENTION_CHECK, None)
    spark.conf.set(RETENTION_CHECK, "false")
    try:
        for table in tables:
            path = lake.path(table)
            detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
            props = dict(detail["properties"]) if detail is not None else {}
            if props.get("delta.enableDeletionVectors") == "true":
                spark.sql(f"REORG TABLE delta.`{path}` APPLY (PURGE)")
            DeltaTable.forPath(spark, path).vacuum(VACUUM_RETENTION_HOURS)
    finally:
        if previous is None:
            spark.conf.unset(RETENTION_CHECK)
        else:
            spark.conf.set(RETENTION_CHECK, previous)
    return list(tables)


def _outside_files(settings: Any, needles: Sequence[str]) -> Iterator[str]:
    """Local files outside the lake (reports, exports, Data Docs) that still name the subject."""
    lowered = [n.lower().encode("utf-8") for n in needles]
    for folder in (
        settings.paths.reports_dir,
        settings.paths.exports_dir,
        settings.paths.data_docs_dir,
    ):
        root = Path(folder)
        if "://" in folder or not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.stat().st_size < 256 * 1024 * 1024:
                text = path.read_bytes().lower()
                if any(n in text for n in lowered):
                    yield str(path)


def _record(lake: Lake, result: ErasureResult, ref: tuple[str, str], by: str, at: datetime) -> None:
    spark = lake.spark
    row = spark.createDataFrame(
        [
            (
                result.erasure_id,
                at,
                by,
                ref[0],
                ref[1],
                len(result.subject.aliases),
                result.tables,
                {t: int(n) for t, n in result.deleted.items() if n},
                {t: int(n) for t, n in result.redacted.items() if n},
                result.rechained,
            )
        ],
        ERASURES.schema,
    )
    (
        lake.for_update(ERASURES)
        .alias("t")
        .merge(row.alias("s"), "t.erasure_id = s.erasure_id")
        .whenNotMatchedInsertAll()
        .execute()
    )


def plan_erasure(ctx: Any, user: str, allow_unknown: bool = False) -> ErasureResult:
    """Scan every table for `user`: what `erase_user` would delete and redact (a dry run).
    Refuses shared and system accounts, and subjects the directory does not know unless
    `allow_unknown`."""
    lake: Lake = ctx.lake
    subject = resolve_subject(ctx, user)
    check_subject(subject, allow_unknown)
    pattern = mention_pattern(subject.needles)
    result = ErasureResult(subject, dry_run=True)
    tables = [t for t in list_tables(lake) if t not in SKIPPED_TABLES]
    for table in tables:
        df = lake.read(table)
        affected = _affected(table, df, subject, pattern)
        result.deleted[table] = sum(n for n, _ in affected.values())
        result.redacted[table] = sum(n for _, n in affected.values())
        if affected:
            result.plan[table] = affected
    result.outside_files = list(_outside_files(ctx.settings, subject.needles))
    return result


def erase_user(
    ctx: Any,
    user: str,
    requested_by: str,
    dry_run: bool = False,
    now: datetime | None = None,
    planned: ErasureResult | None = None,
    allow_unknown: bool = False,
) -> ErasureResult:
    """Remove `user` from every table (or, with `dry_run`, count what would be removed).

    `planned`, a `plan_erasure` of the same user taken just before (nothing written to the
    lake since), is applied without scanning every table again; after a pause (a human
    reading the plan) scan again instead, so rows written meanwhile are not missed.
    """
    if planned is not None and user.strip().lower() not in planned.subject.aliases:
        raise ErasureError(f"the plan given is for another user than {user!r}")
    if planned is not None:
        check_subject(planned.subject, allow_unknown)
    scanned = planned if planned is not None else plan_erasure(ctx, user, allow_unknown)
    result = replace(scanned, dry_run=dry_run)
    subject, plan = result.subject, result.plan
    pattern = mention_pattern(subject.needles)
    if dry_run or not plan:
        return result

    lake: Lake = ctx.lake
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    # the pipeline never writes a date while its rewrite runs; tables without dates are
    # covered by today's lock (what a nightly run of today would take)
    dated = {d for days in plan.values() for d in days if d is not None}
    undated = any(d is None for days in plan.values() for d in days)
    with lock_dates(
        lake.root, sorted(dated | ({at.date()} if undated else set())), "forget (erasure)"
    ):
        return _erase_planned(ctx, result, pattern, at, requested_by)


def _erase_planned(
    ctx: Any, result: ErasureResult, pattern: str, at: datetime, requested_by: str
) -> ErasureResult:
    lake: Lake = ctx.lake
    subject, plan = result.subject, result.plan
    ref = _subject_ref(ctx.settings, subject.user_id)
    pseudonym = f"[erased:{ref[0][:12]}]"
    result.erasure_id = hashlib.sha256(f"{ref[0]}|{at.isoformat()}".encode()).hexdigest()
    log_dates = sorted(d for d in plan.get(DECISION_LOG.name, {}) if d is not None)
    verified = verify_dates(ctx, log_dates) if lake.exists(AUDIT_HEADS) else {}
    rechain = [d for d in log_dates if d in verified and verified[d].intact]
    # re-chaining must not link over a lost day: refuse before any table is rewritten
    refuse_chain_gaps(ctx, rechain, getattr(ctx, "accept_audit_gap", None))
    spark = lake.spark
    spark.conf.set(
        COMMIT_METADATA_CONF, json.dumps({"stage": "forget", "erasure_id": result.erasure_id})
    )
    try:
        for table, days in plan.items():
            _rewrite(lake, table, subject, pattern, list(days), pseudonym)
    finally:
        spark.conf.unset(COMMIT_METADATA_CONF)
    touched = list(plan)
    if log_dates and lake.exists(AUDIT_HEADS):
        # intact: nothing differs from the recorded chain (its HMAC may be unchecked)
        result.rechained = [d for d in log_dates if verified[d].intact]
        result.chain_left_broken = [d for d in log_dates if not verified[d].intact]
        if result.rechained:
            n = result.deleted.get(DECISION_LOG.name, 0)
            record_chain(
                ctx,
                result.rechained,
                reason=f"erasure {result.erasure_id[:16]}: {n} decision(s) of a data subject removed",
            )
            touched += [DECISION_LOG_CHAIN.name, AUDIT_HEADS.name]
    result.vacuumed = _vacuum(lake.spark, lake, sorted(set(touched)))
    result.resync_below = {t: lake.version(t) for t in result.vacuumed}
    _record(lake, result, ref, requested_by, at)
    return result


def summary_rows(result: ErasureResult) -> list[tuple[str, int, int]]:
    """(table, rows deleted, rows redacted) of every table that names the subject."""
    return [(t, result.deleted.get(t, 0), result.redacted.get(t, 0)) for t in result.tables]
