"""Analyst decisions: approvals, rejections, overrides and verdicts on recommendations.

Analysts export their decisions as CSV or JSON lines (one decision a row), each row signed
with the analyst's own Ed25519 key (`signature`). The file is validated as a whole (any
malformed row: nothing is ingested, every problem is listed with its line). Then each
decision is checked on its own, and refused (recorded in `ops.refused_decisions` with the
rule it broke, never applied) when:

    unknown_analyst / key_expired / not_permitted / unsigned / bad_signature
        the analyst is not in the operator's registry of public keys
        (`paths.analyst_keys`), the key has expired, the registry does not let the analyst
        make that kind of decision, the row is unsigned, or the signature does not verify;
    future / before_recommendation
        `decided_at` is later than now plus `feedback.max_clock_skew_minutes`, or earlier
        than the recommendation's `valid_from` (a decision cannot predate what it decides);
    shadow / above_ceiling
        an override of a shadow policy's recommendation (never enforced), or to an action
        above what the guardrails allow for the target (the break-glass or allowlist cap,
        an active exception, the domain ceiling: `ceiling` in the decision log).

Accepted decisions are merged into `ops.analyst_decisions` (keyed by a deterministic
decision_id, so re-ingesting a file changes nothing; this module writes both tables), and
the latest accepted decision per recommendation sets its status (the feedback job,
`jobs.governance.feedback`, and the recommend stage both apply these rules):

    approve   pending_approval -> approved (other statuses unchanged: an approval never
              turns an alert or a shadow decision into enforcement)
    reject    any -> rejected (never enforced)
    override  -> overridden, with `override_action` the action to enforce instead, only while
              the policy enforces and the action is within the target's ceiling; otherwise
              the engine's status stands (and the recommend stage records the refusal)

The status is always computed from the engine's status (gold.decision_log) plus the
latest decision, so the recommend stage re-running a date gives the same status, and a
guardrail added later (a new break-glass account) overrules an older override.
Verdicts (true_positive | false_positive) stay in ops.analyst_decisions as labels.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.core.errors import ConfigError, PipelineError
from jobs.core.lake import Lake
from jobs.core.locks import local_root
from jobs.core.tables import ANALYST_DECISIONS, REFUSED_DECISIONS
from jobs.policy.vocabulary import ACTIONS, SEVERITY, Action

INPUT_COLUMNS = (
    "rec_id",
    "decision",
    "override_action",
    "verdict",
    "analyst",
    "reason",
    "decided_at",
    "signature",
)
MAX_ERRORS_SHOWN = 5
SIGNATURE_VERSION = "policylake-analyst-decision/v1"
DECISION_KINDS: tuple[str, ...] = ("approve", "reject", "override")
Decision = Literal["approve", "reject", "override"]


class FeedbackError(PipelineError):
    """An analyst decisions file that cannot be ingested; the message lists the bad lines."""


class AnalystDecisionIn(BaseModel):
    """One row of the analyst's file."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    rec_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    decision: Literal["approve", "reject", "override"]
    override_action: Action | None = None
    verdict: Literal["true_positive", "false_positive"] | None = None
    analyst: str = Field(min_length=2, max_length=200)
    reason: str | None = Field(default=None, max_length=2000)
    decided_at: datetime
    # base64 Ed25519 signature of `signing_message()` by the analyst's key
    signature: str | None = Field(default=None, max_length=200)

    @field_validator("override_action", "verdict", "reason", "signature", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("decided_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-10-02T08:15:00Z")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _override_needs_action(self) -> AnalystDecisionIn:
        if self.decision == "override" and self.override_action is None:
            raise ValueError("override_action is required when decision is override")
        if self.decision != "override" and self.override_action is not None:
            raise ValueError("override_action is only allowed when decision is override")
        if self.decision in ("reject", "override") and not self.reason:
            raise ValueError(f"reason is required when decision is {self.decision}")
        return self

    @property
    def decision_id(self) -> str:
        key = f"{self.rec_id}|{self.decision}|{self.analyst}|{self.decided_at.isoformat()}"
        return hashlib.sha256(key.encode()).hexdigest()

    def signing_message(self) -> bytes:
        """What the analyst signs: every field that changes what the decision does, in a JSON
        array (no separator a reason text could fake), decided_at in UTC."""
        fields = [
            SIGNATURE_VERSION,
            self.rec_id,
            self.decision,
            self.override_action,
            self.verdict,
            self.analyst,
            self.reason,
            self.decided_at.astimezone(UTC).isoformat(),
        ]
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_decisions(decisions: Sequence[AnalystDecisionIn], suffix: str) -> str:
    """Decisions as a file `_rows` reads back to the same decisions (CSV, else JSON lines)."""

    def value(d: AnalystDecisionIn, column: str) -> str | None:
        v = getattr(d, column)
        return v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v

    if suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(INPUT_COLUMNS)
        for d in decisions:
            writer.writerow([value(d, c) or "" for c in INPUT_COLUMNS])
        return buffer.getvalue()
    return "".join(
        json.dumps({c: value(d, c) for c in INPUT_COLUMNS if value(d, c) is not None}) + "\n"
        for d in decisions
    )


def sign_decision(key: Ed25519PrivateKey, decision: AnalystDecisionIn) -> str:
    """The `signature` value for `decision` (base64), as `policylake analyst sign` writes it."""
    return base64.b64encode(key.sign(decision.signing_message())).decode("ascii")


# --- the operator's registry of analyst keys ---------------------------------------------------


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes, or a PEM block."""
    value = text.strip()
    if value.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(value.encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (32 raw bytes) nor a PEM public key") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def _every_decision() -> list[Decision]:
    return ["approve", "reject", "override"]


class AnalystKey(BaseModel):
    """One analyst the operator lets decide: who, their public key, what they may decide."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=2, max_length=200)
    public_key: str = Field(min_length=40, max_length=2000)
    decisions: list[Decision] = Field(default_factory=_every_decision)
    expires: date | None = Field(default=None, description="Last day (UTC) the key is valid.")

    @field_validator("public_key")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_public_key(value)
        return value


class AnalystRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    analysts: list[AnalystKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> AnalystRegistry:
        ids = [a.id.lower() for a in self.analysts]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"analyst ids must be unique: {', '.join(dupes)}")
        return self

    def find(self, analyst: str) -> AnalystKey | None:
        wanted = analyst.strip().lower()
        return next((a for a in self.analysts if a.id.lower() == wanted), None)


def _inside(path: Path, folder: str) -> bool:
    root = local_root(folder)
    if root is None:
        return False
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def check_decision_folders(paths: Any) -> None:
    """The key registry and the drop folder stay out of the raw landing area (log shippers
    write there), and the registry out of the drop folder: whoever can drop a file must not
    be able to add a key. A one-line ConfigError otherwise."""
    keys = local_root(paths.analyst_keys)
    drop = local_root(paths.analyst_decisions)
    if keys is not None and (
        _inside(keys, paths.raw_root) or _inside(keys, paths.analyst_decisions)
    ):
        raise ConfigError(
            f"paths.analyst_keys ({paths.analyst_keys}) must not be inside paths.raw_root or "
            "paths.analyst_decisions: whoever writes there could register a key"
        )
    if drop is not None and _inside(drop, paths.raw_root):
        raise ConfigError(
            f"paths.analyst_decisions ({paths.analyst_decisions}) must not be inside "
            "paths.raw_root, which log shippers write to"
        )


def load_analyst_registry(paths: Any) -> AnalystRegistry:
    """The registry at `paths.analyst_keys` (YAML: `analysts: [{id, public_key, decisions,
    expires}]`); missing or invalid is a one-line ConfigError: nothing can be authenticated."""
    check_decision_folders(paths)
    path = local_root(paths.analyst_keys)
    if path is None:
        raise ConfigError(f"paths.analyst_keys must be a local file, got {paths.analyst_keys}")
    if not path.is_file():
        raise ConfigError(
            f"analyst key registry not found: {path}; analyst decisions cannot be "
            "authenticated without it (docs/policies.md, Analyst decisions)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return AnalystRegistry.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


# --- why a decision is refused -------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    rule: str
    reason: str


def authenticate(decision: AnalystDecisionIn, registry: AnalystRegistry) -> Refusal | None:
    """None when the registry knows the analyst, lets them make this kind of decision on its
    date, and the signature verifies; else why not."""
    known = registry.find(decision.analyst)
    if known is None:
        return Refusal("unknown_analyst", f"{decision.analyst!r} is not in the key registry")
    if known.expires is not None and decision.decided_at.date() > known.expires:
        return Refusal("key_expired", f"the key of {known.id} expired on {known.expires}")
    if decision.decision not in known.decisions:
        return Refusal("not_permitted", f"{known.id} may not {decision.decision} (registry)")
    if not decision.signature:
        return Refusal("unsigned", "the decision is not signed")
    try:
        signature = base64.b64decode(decision.signature, validate=True)
        parse_public_key(known.public_key).verify(signature, decision.signing_message())
    except (binascii.Error, ValueError, InvalidSignature):
        return Refusal("bad_signature", f"the signature does not verify with {known.id}'s key")
    return None


def time_refusal(
    decision: AnalystDecisionIn, now: datetime, skew: timedelta, valid_from: datetime | None
) -> Refusal | None:
    """A decision dated in the future (beyond the clock skew) or before the recommendation
    it decides existed (`valid_from`, the end of its run date; naive values are UTC)."""
    at = decision.decided_at.astimezone(UTC)
    if at > now.astimezone(UTC) + skew:
        return Refusal("future", f"decided_at {at.isoformat()} is in the future")
    if valid_from is not None:
        start = valid_from if valid_from.tzinfo else valid_from.replace(tzinfo=UTC)
        if at < start:
            return Refusal(
                "before_recommendation",
                f"decided_at {at.isoformat()} is before the recommendation existed "
                f"({start.isoformat()})",
            )
    return None


def guardrail_refusal(
    decision: str, override_action: str | None, status: str, mode: str | None, ceiling: str | None
) -> Refusal | None:
    """Whether a decision may take effect on a recommendation whose engine status is `status`,
    policy mode `mode`, and the most severe action the guardrails allow its target `ceiling`
    (None: unknown, e.g. a decision log written before ceilings were recorded).

    Approvals and rejections never raise an action (an approval only turns pending_approval
    into approved), so only overrides are checked. `override_allowed` is the same rule for
    Spark."""
    if decision != "override":
        return None
    if mode == "shadow" or status == "shadow":
        return Refusal("shadow", "the policy runs in shadow mode: its decisions are never enforced")
    if ceiling is None:
        return Refusal("above_ceiling", "the target's ceiling is unknown: re-run recommend first")
    if SEVERITY[str(override_action)] > SEVERITY[ceiling]:
        return Refusal(
            "above_ceiling",
            f"override to {override_action} is above what the guardrails allow for the target "
            f"({ceiling}: break-glass or allowlist cap, exception or domain ceiling)",
        )
    return None


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown column"
    elif first["type"] == "missing":
        message = "required"
    return f"{key}: {message}" if key else message


def read_no_follow(path: Path) -> str:
    """The file's text, refusing a symbolic link (O_NOFOLLOW: no window between a check and
    the open). A decision file is read where it was dropped, never through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if path.is_symlink():
            raise FeedbackError(f"{path} is a symbolic link: refused") from None
        raise FeedbackError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode("utf-8-sig")


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any] | str]]:
    """(line number, row or a parse problem) from CSV or JSON lines, by file extension."""
    text = read_no_follow(path)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [
            c
            for c in ("rec_id", "decision", "analyst", "decided_at")
            if c not in (reader.fieldnames or [])
        ]
        if missing:
            yield 1, f"header lacks column(s) {', '.join(missing)}"
            return
        for row in reader:
            if None in row:
                yield reader.line_num, "more values than header columns"
                continue
            yield reader.line_num, {k: v for k, v in row.items() if k is not None}
        return
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        yield 0, f"unsupported file type {path.suffix!r}; use .csv or .jsonl"
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON ({exc.msg})"
            continue
        yield number, value if isinstance(value, dict) else "each line must be a JSON object"


def parse_decisions(path: Path) -> list[AnalystDecisionIn]:
    """Validate the whole file; raise FeedbackError listing the bad lines (nothing partial)."""
    return [d for _, d in parse_decision_lines(path)]


def parse_decision_lines(path: Path) -> list[tuple[int, AnalystDecisionIn]]:
    """`parse_decisions` with each decision's line number."""
    if path.is_symlink():
        raise FeedbackError(f"{path} is a symbolic link: refused")
    if not path.is_file():
        raise FeedbackError(f"analyst decisions file not found: {path}")
    good: list[tuple[int, AnalystDecisionIn]] = []
    errors: list[str] = []
    for number, row in _rows(path):
        if isinstance(row, str):
            errors.append(f"line {number}: {row}")
            continue
        try:
            good.append((number, AnalystDecisionIn.model_validate(row)))
        except ValidationError as exc:
            errors.append(f"line {number}: {_describe(exc)}")
    if not good and not errors:
        errors.append("no decisions in the file")
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = (
            f" (+{len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        )
        raise FeedbackError(f"{path}: {len(errors)} bad row(s): {shown}{more}")
    return good


# --- status from decisions (shared with the recommend stage) ----------------------------


def latest_decisions(decisions: DataFrame) -> DataFrame:
    """The latest decision per rec_id (ties broken by decision_id, so the choice is stable)."""
    order = Window.partitionBy("rec_id").orderBy(
        F.col("decided_at").desc(), F.col("decision_id").desc()
    )
    return (
        decisions.withColumn("_n", F.row_number().over(order))
        .where("_n = 1")
        .select(
            "rec_id",
            F.col("decision").alias("analyst_decision"),
            F.col("override_action").alias("analyst_override_action"),
            F.col("decision_id").alias("analyst_decision_id"),
            F.col("analyst").alias("analyst_name"),
            F.col("decided_at").alias("analyst_decided_at"),
            F.col("source_file").alias("analyst_source_file"),
        )
    )


def severity(action: Column) -> Column:
    """1 (allow) .. 5 (block); 0 for null or an unknown word."""
    return F.array_position(F.array(*[F.lit(a) for a in ACTIONS]), action)


def action_of(severity_value: Column) -> Column:
    return F.element_at(F.array(*[F.lit(a) for a in ACTIONS]), severity_value.cast("int"))


def override_allowed(mode: Column, status: Column, ceiling: Column, action: Column) -> Column:
    """`guardrail_refusal` for Spark: an override takes effect only while the policy enforces
    and the action is within the target's ceiling (a null ceiling allows nothing)."""
    return (
        (F.coalesce(mode, F.lit("")) != "shadow")
        & (status != "shadow")
        & ceiling.isNotNull()
        & (severity(action) > 0)
        & (severity(action) <= severity(ceiling))
    )


def resolved_status(base: Column, decision: Column, override_ok: Column) -> Column:
    return (
        F.when(decision == "reject", F.lit("rejected"))
        .when((decision == "override") & override_ok, F.lit("overridden"))
        .when((decision == "approve") & (base == "pending_approval"), F.lit("approved"))
        .otherwise(base)
    )


def apply_analyst_decisions(recommendations: DataFrame, latest: DataFrame | None) -> DataFrame:
    """Set status / override_action from the latest decisions (`status` is the engine's;
    `policy_mode` and `ceiling` say whether an override may take effect). `_refused` marks
    an override the guardrails overrule now (the recommend stage records it)."""
    if latest is None:
        return recommendations.withColumn("override_action", F.lit(None).cast("string")).withColumn(
            "_refused", F.lit(False)
        )
    joined = recommendations.join(latest, "rec_id", "left")
    ok = override_allowed(
        F.col("policy_mode"), F.col("status"), F.col("ceiling"), F.col("analyst_override_action")
    )
    override = F.col("analyst_decision") == "override"
    return (
        joined.withColumn("_refused", F.coalesce(override & ~ok, F.lit(False)))
        .withColumn("status", resolved_status(F.col("status"), F.col("analyst_decision"), ok))
        .withColumn(
            "override_action",
            F.when(override & ok, F.col("analyst_override_action")).cast("string"),
        )
    )


# --- ops.analyst_decisions and ops.refused_decisions -----------------------------------------


def record_decisions(lake: Lake, rows: DataFrame) -> None:
    """MERGE decision rows (ANALYST_DECISIONS columns) on decision_id: new ones inserted,
    changed ones (verdict, reason, override, file) updated, the same file twice changes
    nothing."""
    (
        lake.for_update(ANALYST_DECISIONS)
        .alias("t")
        .merge(rows.alias("s"), "t.decision_id = s.decision_id AND t.run_date = s.run_date")
        .whenMatchedUpdateAll(
            condition=" OR ".join(
                f"NOT (t.{c} <=> s.{c})"
                for c in ("override_action", "verdict", "reason", "source_file")
            )
        )
        .whenNotMatchedInsertAll()
        .execute()
    )


@dataclass(frozen=True)
class RefusedDecision:
    """One refusal, as ops.refused_decisions records it."""

    run_date: date
    stage: str  # feedback | recommend
    rule: str
    reason: str
    rec_id: str | None = None
    decision: str | None = None
    override_action: str | None = None
    analyst: str | None = None
    decided_at: datetime | None = None
    source_file: str | None = None
    line: int | None = None

    @property
    def refusal_id(self) -> str:
        key = [self.stage, self.rule, self.rec_id, self.decision, self.override_action,
               self.analyst, self.decided_at.isoformat() if self.decided_at else None,
               self.source_file, self.line, self.run_date.isoformat()]  # fmt: skip
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def as_row(self, refused_at: datetime) -> tuple[Any, ...]:
        at = self.decided_at.astimezone(UTC).replace(tzinfo=None) if self.decided_at else None
        return (self.refusal_id, self.run_date, refused_at, self.stage, self.rule, self.reason,
                self.rec_id, self.decision, self.override_action, self.analyst, at,
                self.source_file, self.line)  # fmt: skip


def refused(
    line: int | None,
    decision: AnalystDecisionIn,
    why: Refusal,
    run_date: date,
    source: str,
    stage: str = "feedback",
) -> RefusedDecision:
    return RefusedDecision(
        run_date, stage, why.rule, why.reason, decision.rec_id, decision.decision,
        decision.override_action, decision.analyst, decision.decided_at, source, line,
    )  # fmt: skip


def record_refusals(
    lake: Lake, refusals: Sequence[RefusedDecision], refused_at: datetime | None = None
) -> int:
    """Insert refusals not recorded yet (keyed by refusal_id: re-processing a file, or
    re-running recommend, adds nothing). Returns how many were given."""
    if not refusals:
        return 0
    at = (refused_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    rows = lake.spark.createDataFrame([r.as_row(at) for r in refusals], REFUSED_DECISIONS.schema)
    (
        lake.for_update(REFUSED_DECISIONS)
        .alias("t")
        .merge(rows.alias("s"), "t.refusal_id = s.refusal_id AND t.run_date = s.run_date")
        .whenNotMatchedInsertAll()
        .execute()
    )
    return len(refusals)


def refusals_from_frame(rows: Iterable[Any], run_stage: str) -> list[RefusedDecision]:
    """RefusedDecision of recommendations whose latest override the guardrails now overrule
    (rows of `apply_analyst_decisions` with `_refused`)."""
    out = []
    for r in rows:
        why = guardrail_refusal(
            "override", r["analyst_override_action"], r["status"], r["policy_mode"], r["ceiling"]
        ) or Refusal("above_ceiling", "the guardrails overrule this override")
        decided = r["analyst_decided_at"]
        out.append(
            RefusedDecision(
                run_date=r["run_date"],
                stage=run_stage,
                rule=why.rule,
                reason=why.reason,
                rec_id=r["rec_id"],
                decision="override",
                override_action=r["analyst_override_action"],
                analyst=r["analyst_name"],
                decided_at=decided.replace(tzinfo=UTC) if decided else None,
                source_file=r["analyst_source_file"],
            )
        )
    return out
