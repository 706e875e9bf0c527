"""Every rule of a day in one pass over its events.

`match_events` adds no Spark job per rule: one projection reads the event data fields the
rules use (each once per row), then one select computes, per row, the array of the rules that
match it, and an `explode` turns that into one row per (event, rule). Rows are dispatched on
their source, Windows channel and event id with nested `CASE`s, so a Sysmon process-access
event is only tested against the rules of that slot, not against all of them: the cost grows
with the rules of an event's own slot, not with the whole rule set.

Rules whose columns the events do not have (silver.events before it carries Windows event
data, sshd keyword rules on silver, ...) are set aside with a note, never a failure of the run;
rules whose SQL Spark rejects are reported by name (`usable_rules`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce

from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType

from jobs.detections.compiler import (
    EVENT_DATA_ALL,
    LOWER_SUFFIX,
    CompiledRule,
    event_data_column,
)
from jobs.detections.rules import LoadFailure

__all__ = ["MATCH_COLUMN", "Usable", "match_events", "match_events_per_rule", "usable_rules"]

MATCH_COLUMN = "rule"


def _empty() -> Column:
    return F.array().cast(ArrayType(StringType()))


@dataclass
class Usable:
    rules: list[CompiledRule] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # notes: rules set aside for missing columns
    failures: list[LoadFailure] = field(default_factory=list)  # SQL Spark does not accept


def required_columns(rule: CompiledRule) -> set[str]:
    """Columns of the events a rule reads: its fields, and those its slots are found by."""
    need = set(rule.columns) | {"source"}
    if any(s.channel is not None for s in rule.slots):
        need.add("channel")
    if any(s.event_ids for s in rule.slots):
        need.add("event_id")
    return need


def _prepared(events: DataFrame, rules: Sequence[CompiledRule]) -> DataFrame:
    """`events` plus one `ed__<Name>` column per event data field the rules read."""
    names = sorted({n for r in rules for n in r.event_data})
    if not names and not any("event_data" in r.columns for r in rules):
        return events
    data = F.col("event_data")
    cols = [F.try_element_at(data, F.lit(n)).alias(event_data_column(n)) for n in names]
    cols.append(F.concat_ws(" ", F.map_values(data)).alias(EVENT_DATA_ALL))
    lowered = sorted({c for r in rules for c in r.lowered})
    return events.select("*", *cols).select(
        "*", *[F.lower(F.col(c)).alias(c + LOWER_SUFFIX) for c in lowered]
    )


def usable_rules(events: DataFrame, rules: Sequence[CompiledRule]) -> Usable:
    """The rules `events` can be evaluated with: columns present and SQL Spark accepts.

    Spark analyses all conditions at once; only when that fails does it bisect to name the
    rules at fault, so a clean rule set costs one analysis.
    """
    out = Usable()
    have = set(events.columns)
    candidates = []
    for r in rules:
        missing = sorted(required_columns(r) - have)
        if missing:
            out.skipped.append(f"{r.rule.signal}: the events have no {', '.join(missing)}")
        else:
            candidates.append(r)
    frame = _prepared(events.limit(0), candidates)

    def analyse(group: list[CompiledRule]) -> None:
        if not group:
            return
        try:
            frame.select(*[F.expr(r.condition).alias(f"r{i}") for i, r in enumerate(group)]).schema  # noqa: B018
            out.rules.extend(group)
        except (PySparkException, ValueError) as exc:
            if len(group) == 1:
                reason = str(exc).strip().splitlines()[0][:300]
                r = group[0]
                out.failures.append(
                    LoadFailure(
                        r.rule.path, r.rule.title, f"Spark SQL: {reason}", True, r.rule.builtin
                    )
                )
                return
            half = len(group) // 2
            analyse(group[:half])
            analyse(group[half:])

    analyse(candidates)
    out.rules.sort(key=lambda r: r.slug)
    return out


def _hits(rules: Sequence[CompiledRule]) -> Column:
    """array(rule slug when its condition holds, else null) for `rules`."""
    if not rules:
        return _empty()
    return F.array(*[F.when(F.expr(r.condition), F.lit(r.slug)) for r in rules])


def _dispatch(rules: Sequence[CompiledRule]) -> Column:
    """Nested CASE on source, then Windows channel, then event id: each row meets only the
    rules of its own slot."""
    tree: dict[str, dict[str | None, dict[int | None, list[CompiledRule]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in rules:
        for slot in r.slots:
            channel = slot.channel.lower() if slot.channel is not None else None
            for eid in slot.event_ids or (None,):
                bucket = tree[slot.source][channel][eid]
                if r not in bucket:
                    bucket.append(r)

    def by_event_id(ids: dict[int | None, list[CompiledRule]]) -> Column:
        specific = [
            (eid, rs)
            for eid, rs in sorted(ids.items(), key=lambda kv: str(kv[0]))
            if eid is not None
        ]
        case: Column = _empty()
        if specific:
            chain = F.when(F.col("event_id") == specific[0][0], _hits(specific[0][1]))
            for eid, rs in specific[1:]:
                chain = chain.when(F.col("event_id") == eid, _hits(rs))
            case = chain.otherwise(_empty())
        return F.concat(_hits(ids.get(None, [])), case)

    def by_channel(channels: dict[str | None, dict[int | None, list[CompiledRule]]]) -> Column:
        named = [
            (c, ids)
            for c, ids in sorted(channels.items(), key=lambda kv: str(kv[0]))
            if c is not None
        ]
        anywhere = by_event_id(channels[None]) if None in channels else _empty()
        if not named:
            return anywhere
        lowered = F.lower(F.col("channel"))
        chain = F.when(lowered == named[0][0], by_event_id(named[0][1]))
        for c, ids in named[1:]:
            chain = chain.when(lowered == c, by_event_id(ids))
        return F.concat(anywhere, chain.otherwise(_empty()))

    sources = sorted(tree.items())
    if not sources:
        return _empty()
    top = F.when(F.col("source") == sources[0][0], by_channel(sources[0][1]))
    for source, channels in sources[1:]:
        top = top.when(F.col("source") == source, by_channel(channels))
    return top.otherwise(_empty())


def match_events(
    events: DataFrame, rules: Sequence[CompiledRule], keep: Sequence[str] | None = None
) -> DataFrame:
    """One row per (event, matching rule): the `keep` columns of the event (default: all of
    `events`' columns) and `rule` (the rule's slug). One pass; no job per rule."""
    keep = list(keep if keep is not None else events.columns)
    if not rules:
        return events.select(*keep, F.lit(None).cast("string").alias(MATCH_COLUMN)).limit(0)
    prepared = _prepared(events, rules)
    found = F.array_distinct(F.filter(_dispatch(rules), lambda x: x.isNotNull()))
    return (
        prepared.select(*keep, found.alias("_rules"))
        .where(F.size("_rules") > 0)
        .select(*keep, F.explode("_rules").alias(MATCH_COLUMN))
    )


def match_events_per_rule(
    events: DataFrame, rules: Sequence[CompiledRule], keep: Sequence[str] | None = None
) -> DataFrame:
    """The same result rule by rule (each rule's whole SQL, slots included): the reference
    `match_events` is checked against, and how a naive runner would do it."""
    keep = list(keep if keep is not None else events.columns)
    prepared = _prepared(events, rules)
    parts = [
        prepared.where(F.expr(r.sql)).select(*keep, F.lit(r.slug).alias(MATCH_COLUMN))
        for r in rules
    ]
    if not parts:
        return events.select(*keep, F.lit(None).cast("string").alias(MATCH_COLUMN)).limit(0)
    return reduce(DataFrame.unionByName, parts)
