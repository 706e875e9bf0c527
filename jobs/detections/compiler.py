"""Sigma rules -> Spark SQL boolean conditions, with pySigma and the Databricks backend.

`SparkSqlBackend` is pySigma's Databricks (Spark SQL) backend with four changes for how our
events are laid out and how Sigma reads:

- field names are our column tokens (jobs.detections.mapping): `col:x` is column x, `ed:Name`
  the Windows event data field `Name`, read once per row into a column `ed__Name` by the
  evaluation (a map lookup per rule would scan the map thousands of times);
- every field comparison is null-safe (`coalesce(..., false)`): in Sigma, `not filter`
  holds when the filtered field is absent, while in SQL `NOT (NULL)` is NULL and drops the row;
- numbers compared with event data (strings) are compared as text, or cast with `try_cast`
  for `gt`/`lt`, so one odd value never fails the night's job (ANSI casts raise);
- CIDR values expand into prefix matches (open-source Spark has no `ip_cidr_contains`).

`compile_rules` converts each rule on its own: a rule that does not convert is a
`LoadFailure` by name with the reason, and the others go on.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sigma.backends.databricks.databricks import DatabricksBackend
from sigma.conditions import ConditionOR
from sigma.conversion.state import ConversionState
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldFunctionTransformation
from sigma.types import SigmaString, SpecialChars

from jobs.detections.mapping import (
    FIELD_TABLES,
    RAW_COLUMNS,
    RAW_TOKEN,
    SQL_TOKEN_COLUMNS,
    Slot,
    Target,
    field_token,
)
from jobs.detections.rules import LoadFailure, RuleFile

__all__ = ["CompiledRule", "SparkSqlBackend", "compile_rules", "event_data_column", "slot_sql"]

EVENT_DATA_ALL = "ed__raw"
LOWER_SUFFIX = "__lc"
_LOWER_COLUMN = re.compile(r"lower\((ed__\w+)\)")
_LOWER_COALESCE = re.compile(r"lower\(coalesce\((ed__\w+(?:, ed__\w+)*)\)\)")


def fold_lower(condition: str) -> tuple[str, frozenset[str]]:
    """`lower(ed__X)` -> `ed__X__lc`, a column the evaluation lower-cases once per row instead
    of once per rule that reads it; returns the condition and the columns to lower-case."""
    lowered: set[str] = set()

    def one(m: re.Match[str]) -> str:
        lowered.add(m.group(1))
        return m.group(1) + LOWER_SUFFIX

    def several(m: re.Match[str]) -> str:
        names = m.group(1).split(", ")
        lowered.update(names)
        return "coalesce(" + ", ".join(n + LOWER_SUFFIX for n in names) + ")"

    folded = _LOWER_COLUMN.sub(one, _LOWER_COALESCE.sub(several, condition))
    return folded, frozenset(lowered)


def event_data_column(name: str) -> str:
    """The column an event data field is read into: `ed__<name>_<crc32>`. Event data names are
    case-sensitive and Spark column names are not (`Payload`, `payload`): the checksum of the
    exact name keeps them apart."""
    safe = re.sub(r"[^A-Za-z0-9]", "_", name)[:60]
    return f"ed__{safe}_{zlib.crc32(name.encode('utf-8')):08x}"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def slot_sql(slot: Slot) -> str:
    """The rows of one slot as a Spark SQL condition."""
    parts = [f"source = {_quote(slot.source)}"]
    if slot.channel is not None:
        parts.append(f"lower(channel) = {_quote(slot.channel.lower())}")
    if slot.event_ids:
        parts.append(f"event_id IN ({', '.join(str(i) for i in slot.event_ids)})")
    return "(" + " AND ".join(parts) + ")"


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: its condition on the rows of its slots, and what it reads."""

    rule: RuleFile
    condition: str  # the detection, Spark SQL; true/false/null per row of its slots
    columns: frozenset[str]  # event columns the condition reads (besides event data)
    event_data: frozenset[str] = field(default_factory=frozenset)  # Windows field names
    lowered: frozenset[str] = field(default_factory=frozenset)  # ed__ columns read lower-cased

    @property
    def slug(self) -> str:
        return self.rule.slug

    @property
    def slots(self) -> tuple[Slot, ...]:
        assert isinstance(self.rule.target, Target)
        return self.rule.target.slots

    @property
    def sql(self) -> str:
        """The whole rule on any row: its slots and its detection."""
        where = " OR ".join(slot_sql(s) for s in self.slots)
        return f"(({where}) AND ({self.condition}))"


class SparkSqlBackend(DatabricksBackend):
    """The Databricks backend, resolving our column tokens and null-safe (module docstring)."""

    cidr_expression: ClassVar[str | None] = None  # expand CIDRs into prefixes

    def __init__(self, table: str) -> None:
        pipeline = ProcessingPipeline(
            name=f"policylake {table} fields",
            priority=20,
            items=[
                ProcessingItem(
                    identifier=f"policylake_{table}_fields",
                    transformation=FieldFunctionTransformation(
                        transform_func=lambda f: field_token(table, f), mapping={}
                    ),
                )
            ],
        )
        super().__init__(processing_pipeline=pipeline, raw_log_field=RAW_TOKEN)
        self.table = table
        self.columns: set[str] = set()
        self.event_data: set[str] = set()

    # Spark's `rlike` finds a match anywhere, so a leading or trailing `.*` adds nothing but
    # backtracking: `.*(a|b).*` on a 100 kB script block is quadratic per row (it stalled a run
    # on real PowerShell logs). These two build the same matches without them.
    def _build_regex_pattern(self, pattern_type: str, values: list[str]) -> str:
        if pattern_type != "contains":
            return str(super()._build_regex_pattern(pattern_type, values))
        alternatives = "|".join(re.escape(str(v)) for v in values)
        return str(self.sql_quote_regex(f"(?iu)({alternatives})"))

    def make_wildcard_regex(self, s: SigmaString) -> str:
        parts = list(s.s)
        anchor_start = not (parts and parts[0] == SpecialChars.WILDCARD_MULTI)
        anchor_end = not (parts and parts[-1] == SpecialChars.WILDCARD_MULTI)
        while parts and parts[0] == SpecialChars.WILDCARD_MULTI:
            parts.pop(0)
        while parts and parts[-1] == SpecialChars.WILDCARD_MULTI:
            parts.pop()
        body = []
        for part in parts:
            if isinstance(part, str):
                body.append(re.escape(part))
            elif part == SpecialChars.WILDCARD_MULTI:
                body.append(".*?")
            elif part == SpecialChars.WILDCARD_SINGLE:
                body.append(".")
            else:
                raise NotImplementedError(f"unsupported part in a wildcard string: {part!r}")
        pattern = ("^" if anchor_start else "") + "".join(body) + ("$" if anchor_end else "")
        return str(self.quote_string(self.sql_quote_regex("(?isu)" + pattern)))

    def reset(self) -> None:
        self.columns = set()
        self.event_data = set()

    def escape_and_quote_field(self, field_name: str) -> str:
        token = RAW_COLUMNS.get(self.table) if field_name == RAW_TOKEN else field_name
        if token is None:
            raise ValueError(f"keyword search: policylake's {self.table} events keep no log line")
        if token == "ed:*":
            self.columns.add("event_data")
            return EVENT_DATA_ALL
        if token.startswith("ed:"):
            names = token[3:].split("|")
            self.columns.add("event_data")
            self.event_data.update(names)
            cols = [event_data_column(n) for n in names]
            return cols[0] if len(cols) == 1 else f"coalesce({', '.join(cols)})"
        if token.startswith("col:"):
            self.columns.add(token[4:])
            return token[4:]
        if token.startswith("sql:"):
            self.columns.update(SQL_TOKEN_COLUMNS.get(token, ()))
            return token[4:]
        raise ValueError(f"unmapped field {field_name!r}")

    @staticmethod
    def _safe(expr: Any) -> Any:
        return f"coalesce({expr}, false)" if isinstance(expr, str) else expr

    def convert_condition_field_eq_val(self, cond: Any, state: ConversionState) -> Any:
        return self._safe(super().convert_condition_field_eq_val(cond, state))

    def convert_condition_val(self, cond: Any, state: ConversionState) -> Any:
        return self._safe(super().convert_condition_val(cond, state))

    def convert_condition_as_in_expression(self, cond: Any, state: ConversionState) -> Any:
        return self._safe(super().convert_condition_as_in_expression(cond, state))

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> Any:
        expr = super().convert_condition_or(cond, state)
        optimized = self._analyze_or_for_regex_optimization(cond) is not None
        return self._safe(expr) if optimized else expr

    def _is_text(self, field_name: str) -> bool:
        return field_name.startswith("ed:") or field_name == RAW_TOKEN

    def convert_condition_field_eq_val_num(self, cond: Any, state: ConversionState) -> Any:
        field_sql = self.escape_and_quote_field(cond.field)
        if self._is_text(cond.field):
            return f"{field_sql} = {_quote(str(cond.value))}"
        return f"{field_sql} = {cond.value}"

    def convert_condition_field_compare_op_val(self, cond: Any, state: ConversionState) -> Any:
        expr = super().convert_condition_field_compare_op_val(cond, state)
        if self._is_text(cond.field) and isinstance(expr, str):
            column = self.escape_and_quote_field(cond.field)
            return expr.replace(column, f"try_cast({column} AS double)", 1)
        return expr


@dataclass
class Compiled:
    rules: list[CompiledRule] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"\s*\(while [a-z ]+ rule .*\)$", "", text)


def compile_rules(rules: Sequence[RuleFile]) -> Compiled:
    """Each rule converted on its own; failures by name with the reason, never raised."""
    backends: dict[str, SparkSqlBackend] = {}
    out = Compiled()
    for rule in rules:
        assert isinstance(rule.target, Target)
        table = rule.target.fields
        if table not in FIELD_TABLES:
            out.failures.append(LoadFailure(rule.path, rule.title, f"no field table {table}"))
            continue
        backend = backends.setdefault(table, SparkSqlBackend(table))
        backend.reset()
        try:
            queries = backend.convert_rule(rule.sigma_rule())
            if not queries:
                raise ValueError("the rule converts to no query")
            if any(not isinstance(q, str) for q in queries):
                raise ValueError("the rule needs a deferred (non-SQL) expression")
        except Exception as exc:  # any conversion problem is this rule's, not the run's
            out.failures.append(
                LoadFailure(rule.path, rule.title, _reason(exc), True, rule.builtin)
            )
            continue
        condition = queries[0] if len(queries) == 1 else " OR ".join(f"({q})" for q in queries)
        condition, lowered = fold_lower(condition)
        out.rules.append(
            CompiledRule(
                rule, condition, frozenset(backend.columns), frozenset(backend.event_data), lowered
            )
        )
    return out
