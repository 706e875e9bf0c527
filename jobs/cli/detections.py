"""`policylake detections lint|test`: Sigma rules as code.

lint  compiles every rule (no Spark): exit 1 when a rule of the project's own `detections/`
      fails; community rules that fail are reported, one line each, with the reason.
test  without --events runs every rule's inline examples (exit 1 on a failing example);
      with --events (.evtx, or evtx_dump JSON: one document, several, or JSON lines) tells
      per rule whether it fires on them: exit 0 when every rule fires, 1 when one does not,
      2 for bad input (a missing or unreadable file, no rules).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from rich.markup import escape

from jobs.cli.common import ConfigOpt, WorkdirOpt, command_group, console, mapped, out, settings
from jobs.cli.json_output import JsonOpt, json_command, record
from jobs.core.config import DETECTION_SIGNAL_PREFIX
from jobs.core.errors import UsageError
from jobs.core.spark import build_spark
from jobs.detections.compiler import Compiled, CompiledRule, compile_rules
from jobs.detections.evaluate import MATCH_COLUMN, match_events, usable_rules
from jobs.detections.examples import run_examples
from jobs.detections.rules import LoadFailure, load_rules, resolve_rules_dirs
from jobs.stages.ingest.evtx_import import import_evtx_file
from jobs.stages.ingest.parsers.windows import parse_windows

detections_app = command_group(
    "detections", "Sigma detections: compile every rule, run the rules' examples or given events."
)

RulesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--rules",
        "-r",
        help="Rule file or folder (repeatable; default: detections.rules_dirs of the settings).",
    ),
]
# What the detections read of a Windows event (bronze.windows / silver.events columns).
DETECTION_COLUMNS = ("source", "channel", "event_id", "provider", "event_data", "hostname")
_LINES_DATE = date(2000, 1, 1)  # a parser needs a run date; these lines have none


def _load(rules: list[Path] | None, config: Path | None, workdir: Path | None) -> Compiled:
    cfg = settings(config, workdir)
    dirs = resolve_rules_dirs(cfg.detections.rules_dirs, rules)
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:
        raise UsageError(f"no such rule file or folder: {missing[0]}")
    loaded = load_rules(dirs)
    compiled = compile_rules(loaded.rules)
    compiled.failures = loaded.failures + compiled.failures
    return compiled


def _severity(failure: LoadFailure) -> str:
    """error: a rule of the project's own; warning: one for a source policylake ingests;
    skipped: one for a source it does not."""
    return "error" if failure.builtin else ("warning" if failure.ingested else "skipped")


def _print_failures(failures: Sequence[LoadFailure]) -> None:
    """One line per failing rule, and the `failures` of the JSON document."""
    ordered = sorted(failures, key=lambda f: (not f.builtin, not f.ingested, str(f.path)))
    record(
        failures=[
            {"severity": _severity(f), "path": f.path, "title": f.name, "reason": f.reason}
            for f in ordered
        ]
    )
    for f in ordered:
        out.print(
            f"{_severity(f)} {escape(str(f.path))}: {escape(f.name)}: {escape(f.reason)}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@detections_app.command("lint")
@mapped
@json_command("detections-lint")
def lint_command(
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Compile every rule; failures by name and reason (exit 1 for the project's own rules)."""
    compiled = _load(rules, config, workdir)
    _print_failures(compiled.failures)
    own = [f for f in compiled.failures if f.builtin]
    not_ours = sum(1 for f in compiled.failures if not f.ingested)
    record(
        counts={
            "compiled": len(compiled.rules),
            "failed": len(compiled.failures) - not_ours,
            "not_ingested": not_ours,
        },
        compiled=[_rule_fields(r) for r in compiled.rules],
    )
    summary = (
        f"{len(compiled.rules)} rule(s) compiled, "
        f"{len(compiled.failures) - not_ours} failed, {not_ours} for log sources not ingested"
    )
    if own:
        console.print(f"[bold red]detections lint failed:[/] {summary}")
        raise typer.Exit(1)
    out.print(f"detections lint passed: {summary}")


def evtx_documents(path: Path) -> Iterator[dict[str, Any]]:
    """The records of an .evtx file as evtx_dump JSON documents, converted by the same code
    as `policylake import-evtx` (into a scratch raw folder, read back)."""
    with tempfile.TemporaryDirectory(prefix="policylake-evtx-") as scratch:
        result = import_evtx_file(path, Path(scratch))
        if result.failed:
            problems = "; ".join(p.line() for p in result.problems) or "unreadable"
            raise UsageError(f"{path}: not a readable .evtx file: {problems}")
        for problem in result.problems:
            print(f"warning: {problem.line()}", file=sys.stderr)
        for output in sorted(result.outputs.values()):
            with output.open(encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        yield json.loads(line)


def json_documents(path: Path) -> Iterator[dict[str, Any]]:
    """evtx_dump JSON documents: one per file, several back to back, or one per line."""
    text = path.read_text(encoding="utf-8-sig")
    decoder = json.JSONDecoder()
    i = 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not JSON at character {exc.pos}: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: a JSON document is not an object")
        yield doc


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise UsageError(f"no such events file: {path}")
    if path.suffix.lower() == ".evtx":
        yield from evtx_documents(path)
        return
    if path.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        yield from json_documents(path)
        return
    raise UsageError(f"{path}: events must be .evtx or evtx_dump JSON (.json, .jsonl)")


def windows_events(
    spark: SparkSession, paths: Sequence[Path], keep_file: bool = False
) -> DataFrame:
    """The given event files as the rows detections read, through the Windows parser
    (`keep_file`: with `_file`, the path each event came from)."""
    lines = []
    for path in paths:
        for n, doc in enumerate(_documents(path), start=1):
            lines.append((_LINES_DATE, "windows", str(path), n, "detections-test", json.dumps(doc)))
    if not lines:
        raise UsageError("the events files hold no events")
    frame = spark.createDataFrame(
        lines,
        "run_date date, source string, _file string, _line long, _batch_id string, raw string",
    )
    bronze = parse_windows(frame)
    have = [c for c in DETECTION_COLUMNS if c in bronze.columns] + (["_file"] if keep_file else [])
    return bronze.where(F.col("_parse_status") == "parsed").select(*have)


def _rule_fields(rule: CompiledRule) -> dict[str, Any]:
    return {
        "signal": rule.rule.signal,
        "title": rule.rule.title,
        "path": rule.rule.path,
        "examples": len(rule.rule.examples),
    }


@detections_app.command("test")
@mapped
@json_command("detections-test")
def test_command(
    rules: RulesOpt = None,
    events: Annotated[
        list[Path] | None,
        typer.Option("--events", "-e", help="Event file: .evtx or evtx_dump JSON (repeatable)."),
    ] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run the rules' inline examples, or tell per rule whether it fires on --events."""
    compiled = _load(rules, config, workdir)
    if not compiled.rules and not compiled.failures:
        raise UsageError("no rule to test: no Sigma rule file found")
    spark = build_spark(settings(config, workdir))
    if events:
        _fire_on_events(spark, compiled, events)
        return
    results, failures = run_examples(spark, compiled.rules)
    _print_failures([*compiled.failures, *failures])
    failed = sum(1 for r in results if not r.passed)
    untested = [r.slug for r in compiled.rules if not r.rule.examples]
    record(
        mode="examples",
        counts={"passed": len(results) - failed, "failed": failed, "untested": len(untested)},
        examples=[
            {
                "signal": f"{DETECTION_SIGNAL_PREFIX}{r.rule}",
                "example": r.example,
                "expect_match": r.expect_match,
                "matched": r.matched,
                "passed": r.passed,
            }
            for r in results
        ],
        untested=[f"{DETECTION_SIGNAL_PREFIX}{slug}" for slug in untested],
    )
    for r in results:
        verdict = "pass" if r.passed else "FAIL"
        want = "match" if r.expect_match else "no match"
        out.print(
            f"{verdict} sigma.{r.rule}: {r.example} (expected {want})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    summary = f"{len(results) - failed} passed, {failed} failed"
    if untested:
        summary += f"; {len(untested)} rule(s) without examples"
    if failed or failures:
        console.print(f"[bold red]detections test failed:[/] {summary}")
        raise typer.Exit(1)
    out.print(f"detections test: {summary}")


def fire_tally(
    compiled: Sequence[str], not_compiled: int, counts: Mapping[str, int]
) -> dict[str, int]:
    """`given`, `fire` and `missed` rules of `detections test --events`: each compiled rule
    (by slug) fires when it matched an event; a rule that does not compile misses. A rule
    Spark rejects is one of the compiled rules and has no count: it misses once."""
    given = len(compiled) + not_compiled
    missed = sum(counts.get(slug, 0) == 0 for slug in compiled) + not_compiled
    return {"given": given, "fire": given - missed, "missed": missed}


def _fire_on_events(spark: SparkSession, compiled: Compiled, paths: Sequence[Path]) -> None:
    frame = windows_events(spark, paths)
    usable = usable_rules(frame, compiled.rules)
    for note in usable.skipped:
        console.print(f"note: {escape(note)}", highlight=False)
    _print_failures([*compiled.failures, *usable.failures])
    # one row per fired rule with its count: a handful of rows
    counts = {
        r[MATCH_COLUMN]: int(r["n"])
        for r in match_events(frame, usable.rules, keep=[])
        .groupBy(MATCH_COLUMN)
        .count()
        .withColumnRenamed("count", "n")
        .collect()
    }
    tally = fire_tally([r.slug for r in compiled.rules], len(compiled.failures), counts)
    given, missed = tally["given"], tally["missed"]
    record(
        mode="events",
        event_files=paths,
        counts=tally,
        rules=[{**_rule_fields(r), "events": counts.get(r.slug, 0)} for r in compiled.rules],
        notes=usable.skipped,
    )
    for rule in compiled.rules:
        n = counts.get(rule.slug, 0)
        word = "fires" if n else "MISSED"
        out.print(
            f"{word} {rule.rule.signal}: {n} event(s) ({rule.rule.title})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    summary = f"{given - missed} of {given} rule(s) fire"
    if missed:
        console.print(f"[bold red]detections test:[/] {summary}")
        raise typer.Exit(1)
    out.print(f"detections test: {summary}")
