"""Sigma detections: loading and compiling rules (a broken rule is reported and skipped), the
one-pass evaluation against rule-by-rule evaluation, the shipped rules' inline examples, the
CLI's exit codes, the SigmaHQ regression samples, and detections as day-one risk."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType
from pyspark.testing import assertDataFrameEqual

from jobs.cli.detections import fire_tally, windows_events
from jobs.core.config import DETECTION_LEVELS, DetectionSettings, ScoringSettings, Settings
from jobs.core.tables import SILVER_EVENTS
from jobs.detections.compiler import CompiledRule, compile_rules
from jobs.detections.evaluate import match_events, match_events_per_rule, usable_rules
from jobs.detections.examples import run_examples
from jobs.detections.rules import load_rules
from jobs.policy.expressions import ExpressionError, UnknownSignalError, compile_expression
from jobs.stages.score import risk as risk_mod
from jobs.stages.score import signals as signal_mod
from jobs.stages.score.detections import detection_matches, detection_signals, rule_catalogue
from jobs.stages.score.views import build_views, session_frame
from tests.conftest import DATASETS, REPO_ROOT, run_command, run_json_command
from tests.scoring_frames import DAY, at, baseline, baselines_df, event

SHIPPED = REPO_ROOT / "detections"
# ../shared/sigma beside the checkout (POLICYLAKE_DATASETS/../sigma when that is set)
SIGMA = DATASETS.parent / "sigma"
SYSMON = "Microsoft-Windows-Sysmon/Operational"
CFG = ScoringSettings()
DCFG = DetectionSettings()

WINDOWS_COLUMNS = ("channel", "event_id", "provider", "event_data")


def silver_schema() -> StructType:
    return SILVER_EVENTS.schema


def windows_event(
    host: str, channel: str, event_id: int, data: dict[str, str], **kw: Any
) -> dict[str, Any]:
    """A silver.events row of a Windows event, as normalize writes it, with its event data."""
    row = event(source="windows", class_name="process", activity_name="other", device_id=host, **kw)
    row.update(channel=channel, event_id=event_id, provider=kw.get("provider"), event_data=data)
    return row


def silver_df(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    schema = silver_schema()
    return spark.createDataFrame(
        [tuple(r.get(f.name) for f in schema.fields) for r in rows], schema
    )


def write_rule(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yml"
    path.write_text(body, encoding="utf-8")
    return path


RULE = """title: {title}
id: 11111111-2222-4333-8444-{n:012d}
status: test
logsource:
{logsource}
detection:
{detection}
level: {level}
tags: [attack.execution, attack.t1059]
"""


def rule_text(detection: str, logsource: str = "  product: windows\n  category: process_creation",
              title: str = "test rule", level: str = "high", n: int = 1) -> str:  # fmt: skip
    return RULE.format(title=title, n=n, logsource=logsource, detection=detection, level=level)


@pytest.fixture(scope="module")
def shipped() -> list[CompiledRule]:
    loaded = load_rules([SHIPPED])
    compiled = compile_rules(loaded.rules)
    assert not loaded.failures and not compiled.failures, loaded.failures + compiled.failures
    return compiled.rules


# --- loading and compiling -----------------------------------------------------------------


def test_a_rule_that_does_not_compile_is_reported_by_name_and_skipped(tmp_path: Path) -> None:
    good = "  sel:\n    CommandLine|contains: 'whoami'\n  condition: sel"
    write_rule(tmp_path, "good", rule_text(good, title="Good"))
    # a CloudTrail field policylake has no column for
    write_rule(
        tmp_path, "no_column",
        rule_text("  sel:\n    userAgent: 'x'\n  condition: sel",
                  "  product: aws\n  service: cloudtrail", title="Needs userAgent", n=2),
    )  # fmt: skip
    write_rule(
        tmp_path, "not_ingested",
        rule_text("  sel:\n    uri: '/x'\n  condition: sel",
                  "  product: zeek\n  service: http", title="Zeek HTTP", n=3),
    )  # fmt: skip
    write_rule(tmp_path, "broken_yaml", "title: [unclosed\n")
    write_rule(tmp_path, "bad_condition", rule_text("  sel:\n    a: b\n  condition: nope", n=4))
    (tmp_path / "sub").mkdir()
    write_rule(tmp_path / "sub", "Good", rule_text(good, title="Same name", n=5))
    loaded = load_rules([tmp_path])
    compiled = compile_rules(loaded.rules)
    assert [r.slug for r in compiled.rules] == ["good"]
    failures = {f.path.name: f for f in [*loaded.failures, *compiled.failures]}
    assert set(failures) == {
        "no_column.yml", "not_ingested.yml", "broken_yaml.yml", "bad_condition.yml", "Good.yml",
    }  # fmt: skip
    assert failures["no_column.yml"].name == "Needs userAgent"
    assert "userAgent" in failures["no_column.yml"].reason
    assert failures["not_ingested.yml"].ingested is False
    assert failures["no_column.yml"].ingested is True
    assert "already used" in failures["Good.yml"].reason
    assert "not readable YAML" in failures["broken_yaml.yml"].reason


def test_every_shipped_rule_has_attack_tags_a_level_and_examples_both_ways(
    shipped: list[CompiledRule],
) -> None:
    assert len(shipped) >= 15
    for r in shipped:
        assert r.rule.builtin, r.slug
        assert r.rule.techniques, f"{r.slug}: no ATT&CK technique tag"
        assert r.rule.level in DETECTION_LEVELS
        expects = {e.expect_match for e in r.rule.examples}
        assert expects == {True, False}, f"{r.slug}: needs a positive and a negative example"
    signals = {r.rule.signal for r in shipped}
    for needed in (
        "sigma.lsass_memory_access", "sigma.security_log_cleared", "sigma.system_log_cleared",
        "sigma.privileged_group_member_added", "sigma.dcsync_replication_request",
    ):  # fmt: skip
        assert needed in signals


def test_windows_fields_map_to_event_data_and_process_creation_reads_both_logs(
    shipped: list[CompiledRule],
) -> None:
    by_slug = {r.slug: r for r in shipped}
    wmi = by_slug["wmi_remote_process_spawn"]
    assert {"ParentImage", "ParentProcessName", "Image", "NewProcessName"} <= wmi.event_data
    assert "(source = 'windows' AND lower(channel) = 'security' AND event_id IN (4688))" in wmi.sql
    dcsync = by_slug["dcsync_replication_request"]
    assert "event_id = 4662" in dcsync.condition


# --- evaluation ----------------------------------------------------------------------------


def test_inline_examples_of_every_shipped_rule_pass(
    spark: SparkSession, shipped: list[CompiledRule]
) -> None:
    results, failures = run_examples(spark, shipped)
    assert not failures
    assert len(results) >= 2 * len(shipped)
    failed = [(r.rule, r.example) for r in results if not r.passed]
    assert failed == []


def test_examples_can_fail(spark: SparkSession, tmp_path: Path) -> None:
    body = rule_text("  sel:\n    CommandLine|contains: 'whoami'\n  condition: sel") + (
        "tests:\n  - name: wrong on purpose\n    expect: no_match\n"
        "    event: {EventID: 1, CommandLine: 'cmd /c whoami'}\n"
    )
    write_rule(tmp_path, "wrong", body)
    compiled = compile_rules(load_rules([tmp_path]).rules)
    results, _ = run_examples(spark, compiled.rules)
    assert [(r.example, r.matched, r.passed) for r in results] == [
        ("wrong on purpose", True, False)
    ]


def _mixed_rules(tmp_path: Path) -> list[CompiledRule]:
    rules = {
        "proc": rule_text("  sel:\n    Image|endswith: '\\cmd.exe'\n  condition: sel", n=1),
        "proc_not": rule_text(
            "  sel:\n    Image|endswith: '.exe'\n  flt:\n    ParentImage|contains: 'explorer'\n"
            "  condition: sel and not flt",
            n=2,
        ),
        "access": rule_text(
            "  sel:\n    TargetImage|endswith: 'lsass.exe'\n  condition: sel",
            "  product: windows\n  category: process_access",
            n=3,
        ),
        "security": rule_text(
            "  sel:\n    EventID: 1102\n  condition: sel",
            "  product: windows\n  service: security",
            n=4,
        ),
        "anywhere": rule_text(
            "  keywords:\n    - 'mimikatz'\n  condition: keywords", "  product: windows", n=5
        ),
        "cloud": rule_text(
            "  sel:\n    eventName: DeleteTrail\n  condition: sel",
            "  product: aws\n  service: cloudtrail",
            n=6,
        ),
    }
    for name, body in rules.items():
        write_rule(tmp_path, name, body)
    compiled = compile_rules(load_rules([tmp_path]).rules)
    assert not compiled.failures
    return compiled.rules


def _mixed_events(spark: SparkSession) -> DataFrame:
    rows = [
        windows_event("ws-1", SYSMON, 1, {"Image": r"C:\Windows\System32\cmd.exe", "ParentImage": r"C:\Windows\explorer.exe"}),
        windows_event("ws-1", SYSMON, 1, {"Image": r"C:\x\tool.exe"}),  # no ParentImage: `not flt` holds
        windows_event("ws-2", "Security", 4688, {"NewProcessName": r"C:\Windows\System32\CMD.EXE"}),
        windows_event("ws-2", SYSMON, 10, {"TargetImage": r"C:\Windows\system32\lsass.exe", "CommandLine": "mimikatz"}),
        windows_event("ws-3", "Security", 1102, {}),
        windows_event("ws-3", "System", 7045, {"ImagePath": "c:\\mimikatz.exe"}),
        windows_event("ws-3", SYSMON, 10, {"TargetImage": r"C:\Windows\explorer.exe"}),
        event(source="cloudtrail", class_name="api", cloud_action="DeleteTrail", cloud_service="cloudtrail"),
        event(source="cloudtrail", class_name="api", cloud_action="ListBuckets", cloud_service="s3"),
    ]  # fmt: skip
    return silver_df(spark, rows)


def test_one_pass_evaluation_equals_rule_by_rule_evaluation(
    spark: SparkSession, tmp_path: Path
) -> None:
    rules = _mixed_rules(tmp_path)
    events = _mixed_events(spark)
    keep = ["event_uid"]
    one_pass = match_events(events, rules, keep)
    per_rule = match_events_per_rule(events, rules, keep)
    assertDataFrameEqual(one_pass, per_rule)
    got = {(r.event_uid, r.rule) for r in one_pass.collect()}
    uid = {i: r.event_uid for i, r in enumerate(events.select("event_uid").collect())}
    assert got == {
        (uid[0], "proc"),
        (uid[1], "proc_not"),  # the filter's field is absent: Sigma's `not filter` holds
        (uid[2], "proc"), (uid[2], "proc_not"),  # 4688 names the image NewProcessName
        (uid[3], "access"), (uid[3], "anywhere"),
        (uid[4], "security"),
        (uid[5], "anywhere"),
        (uid[7], "cloud"),
    }  # fmt: skip


def test_rules_whose_columns_are_absent_are_set_aside_with_a_note(
    spark: SparkSession, tmp_path: Path
) -> None:
    rules = _mixed_rules(tmp_path)
    # events without the Windows columns (a silver table of a lake that ingests no Windows)
    silver_today = spark.createDataFrame(
        [tuple(event(source="cloudtrail", class_name="api", cloud_action="DeleteTrail").get(f.name)
               for f in SILVER_EVENTS.schema.fields)],
        SILVER_EVENTS.schema,
    ).drop(*WINDOWS_COLUMNS)  # fmt: skip
    usable = usable_rules(silver_today, rules)
    assert [r.slug for r in usable.rules] == ["cloud"]
    assert len(usable.skipped) == 5
    assert all("the events have no" in note for note in usable.skipped)
    assert match_events(silver_today, usable.rules, ["event_uid"]).count() == 1


def test_sql_spark_rejects_is_reported_by_name(spark: SparkSession, tmp_path: Path) -> None:
    rules = _mixed_rules(tmp_path)
    broken = CompiledRule(rules[0].rule, "no_such_function(event_id)", frozenset())
    usable = usable_rules(_mixed_events(spark), [*rules, broken])
    assert [f.name for f in usable.failures] == [rules[0].rule.title]
    assert "Spark SQL" in usable.failures[0].reason
    assert len(usable.rules) == len(rules)


def test_a_rule_spark_rejects_misses_once_in_the_events_tally() -> None:
    """`detections test --events`: three compiled rules (one fired, one did not, one Spark
    rejected, which has no count) and one that did not compile: 4 given, 1 fires, 3 miss."""
    tally = fire_tally(["fired", "quiet", "rejected"], 1, {"fired": 3})
    assert tally == {"given": 4, "fire": 1, "missed": 3}
    assert fire_tally(["fired"], 0, {"fired": 1}) == {"given": 1, "fire": 1, "missed": 0}


# --- the command line ----------------------------------------------------------------------


_cli = run_command


@pytest.fixture()
def cli_dir(cli_workdir: Path) -> Path:
    return cli_workdir


def test_lint_exit_codes(
    cli_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _cli(capsys, "detections", "lint")
    shipped = len(list(SHIPPED.glob("*.yml")))
    assert code == 0 and f"detections lint passed: {shipped} rule(s) compiled, 0 failed" in out
    community = cli_dir / "community"
    write_rule(community, "needs_user_agent", rule_text(
        "  sel:\n    userAgent: x\n  condition: sel", "  product: aws\n  service: cloudtrail"))  # fmt: skip
    code, out, _ = _cli(capsys, "detections", "lint", "--rules", str(community))
    assert code == 0 and "warning" in out and "needs_user_agent" in out
    # the same failure in the project's own folder fails the lint
    monkeypatch.setattr("jobs.detections.rules.REPOSITORY_ROOT", cli_dir)
    own = cli_dir / "detections"
    write_rule(own, "needs_user_agent", rule_text(
        "  sel:\n    userAgent: x\n  condition: sel", "  product: aws\n  service: cloudtrail"))  # fmt: skip
    code, out, err = _cli(capsys, "detections", "lint", "--rules", str(own))
    assert code == 1 and "error" in out and "detections lint failed" in err
    code, _, err = _cli(capsys, "detections", "lint", "--rules", str(cli_dir / "nowhere"))
    assert code == 2 and "no such rule file or folder" in err


def test_test_command_runs_examples_and_rejects_bad_input(
    cli_dir: Path, capsys: pytest.CaptureFixture[str], spark: SparkSession
) -> None:
    code, out, _ = _cli(capsys, "detections", "test")
    assert code == 0, out
    assert "detections test: " in out and " 0 failed" in out
    wrong = cli_dir / "wrong"
    write_rule(wrong, "wrong", rule_text("  sel:\n    CommandLine|contains: x\n  condition: sel") + (
        "tests:\n  - name: expects a match that cannot happen\n"
        "    event: {EventID: 1, CommandLine: 'y'}\n"))  # fmt: skip
    code, out, _ = _cli(capsys, "detections", "test", "--rules", str(wrong))
    assert code == 1 and "FAIL sigma.wrong" in out
    code, _, err = _cli(capsys, "detections", "test", "--events", str(cli_dir / "missing.json"))
    assert code == 2 and "no such events file" in err
    bad = cli_dir / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    code, _, err = _cli(capsys, "detections", "test", "--events", str(bad))
    assert code == 2 and "not JSON" in err
    other = cli_dir / "events.txt"
    other.write_text("x", encoding="utf-8")
    code, _, err = _cli(capsys, "detections", "test", "--events", str(other))
    assert code == 2 and "must be .evtx or evtx_dump JSON" in err


def _evtx_dump_doc(channel: str, event_id: int, data: dict[str, str]) -> dict[str, Any]:
    return {
        "Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}},
                "EventID": event_id,
                "TimeCreated": {"#attributes": {"SystemTime": "2026-10-20T10:00:00.000000Z"}},
                "EventRecordID": 7,
                "Channel": channel,
                "Computer": "ws-9.corp.example",
            },
            "EventData": data,
        }
    }


def test_test_command_with_events_exit_0_when_every_rule_fires_1_when_one_does_not(
    cli_dir: Path, capsys: pytest.CaptureFixture[str], spark: SparkSession
) -> None:
    doc = _evtx_dump_doc(
        SYSMON, 1, {"Image": r"C:\Windows\System32\cmd.exe", "CommandLine": "cmd /c whoami"}
    )
    events = cli_dir / "one.json"
    events.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    rules = cli_dir / "rules"
    write_rule(
        rules, "whoami", rule_text("  sel:\n    CommandLine|contains: whoami\n  condition: sel")
    )
    code, out, _ = _cli(
        capsys, "detections", "test", "--rules", str(rules), "--events", str(events)
    )
    assert code == 0 and "fires sigma.whoami: 1 event(s)" in out
    write_rule(
        rules,
        "net_user",
        rule_text("  sel:\n    CommandLine|contains: 'net user'\n  condition: sel", n=2),
    )
    code, out, err = _cli(
        capsys, "detections", "test", "--rules", str(rules), "--events", str(events)
    )
    assert code == 1 and "MISSED sigma.net_user" in out and "1 of 2 rule(s) fire" in err  # fmt: skip


def test_sigmahq_regression_samples_fire_their_rule(spark: SparkSession) -> None:
    """>= 90% of the SigmaHQ regression samples fire their own rule, read as
    `detections test --events` reads them: the evtx_dump JSON and the .evtx (converted by
    import-evtx's code) through the Windows parser, all in one batch."""
    samples = SIGMA / "regression_data" / "rules" / "windows"
    if not samples.is_dir():
        pytest.skip(f"{samples} is absent")
    expected: dict[str, str] = {}
    for info in sorted(samples.rglob("info.yml")):
        meta = yaml.safe_load(info.read_text(encoding="utf-8"))
        for sample in [*info.parent.glob("*.json"), *info.parent.glob("*.evtx")]:
            expected[str(sample)] = str(meta["rule_metadata"][0]["id"])
    loaded = load_rules([SIGMA / "rules" / "windows"])
    wanted = set(expected.values())
    rules = [r for r in loaded.rules if r.sigma_id in wanted]
    compiled = compile_rules(rules)
    frame = windows_events(spark, [Path(p) for p in expected], keep_file=True)
    usable = usable_rules(frame, compiled.rules)
    slug_of_id = {r.rule.sigma_id: r.slug for r in usable.rules}
    hits = {(r["_file"], r["rule"]) for r in match_events(frame, usable.rules, ["_file"]).collect()}
    for kind in (".json", ".evtx"):
        mine = {p: rid for p, rid in expected.items() if p.endswith(kind)}
        fired = [p for p, rid in mine.items() if (p, slug_of_id.get(rid)) in hits]
        assert mine, f"no {kind} regression sample"
        missed = sorted(Path(p).parent.name for p in set(mine) - set(fired))
        assert len(fired) >= 0.9 * len(mine), (
            f"{kind}: {len(fired)} of {len(mine)} samples fire their rule; missed {missed}"
        )


# --- scoring: detections as signals, day-one risk ------------------------------------------


def _lsass_day(hosts: list[str]) -> list[dict[str, Any]]:
    data = {"SourceImage": r"C:\Users\Public\t.exe", "TargetImage": r"C:\Windows\system32\lsass.exe",
            "GrantedAccess": "0x1010"}  # fmt: skip
    return [
        windows_event(h, SYSMON, 10, data, user_name_raw="CORP\\mallory", event_time=at(10, i))
        for i, h in enumerate(hosts)
    ]


def _score_day(
    spark: SparkSession,
    rows: list[dict[str, Any]],
    shipped: list[CompiledRule],
    baselines: DataFrame,
) -> DataFrame:
    events = silver_df(spark, rows)
    views = build_views(events, [DAY], CFG)
    matches = detection_matches(events, shipped)
    rows_df = detection_signals(matches, rule_catalogue(spark, shipped, DCFG), views.auth, DCFG)
    degraded = spark.createDataFrame([], "run_date date, degraded_sources array<string>")
    scored = risk_mod.score_sessions(session_frame(views), rows_df, degraded, CFG)
    history = baselines.select(
        "run_date", "entity_type", "entity_id",
        F.datediff(F.col("run_date"), F.col("first_seen")).alias("history_days"),
    )  # fmt: skip
    return risk_mod.entity_day_risk(scored, None, CFG, history)


def test_a_detection_gives_a_new_host_day_one_risk_with_the_technique_in_the_reason(
    spark: SparkSession, shipped: list[CompiledRule]
) -> None:
    empty = baselines_df(spark, [])
    risk = _score_day(spark, _lsass_day(["ws-new"]), shipped, empty)
    host = risk.where((F.col("entity_type") == "host") & (F.col("entity_id") == "ws-new")).first()
    assert host is not None
    assert host.risk_today >= CFG.band_high
    assert [s.name for s in host.signals] == ["sigma.lsass_memory_access"]
    assert host.signals[0].threshold == DETECTION_LEVELS.index("high") + 1
    reason = host.reasons[0]
    assert "T1003.001" in reason and "LSASS" in reason
    assert reason.endswith("[absolute; 0 days of history]")


def test_a_noisy_rule_raises_attention_but_never_reaches_the_block_band(
    spark: SparkSession, shipped: list[CompiledRule]
) -> None:
    hosts = [f"ws-{i}" for i in range(DCFG.noisy_hosts + 3)]
    base = baselines_df(
        spark, [baseline(h, "host", first_seen=DAY - timedelta(days=30)) for h in hosts]
    )
    risk = _score_day(spark, _lsass_day(hosts), shipped, base)
    got = {
        r.entity_id: (r.risk_today, r.reasons[0])
        for r in risk.where(F.col("entity_type") == "host").collect()
    }
    assert set(got) == set(hosts)
    for points, reason in got.values():
        assert points == DCFG.noisy_max_points < CFG.band_high
        assert (
            f"fired on {len(hosts)} hosts of the fleet (noisy above {DCFG.noisy_hosts})" in reason
        )
        assert reason.endswith("[absolute; 30 days of history]")


def test_the_acting_account_is_credited_through_its_sessions(
    spark: SparkSession, shipped: list[CompiledRule]
) -> None:
    logon = event(source="windows", class_name="authentication", user_id="mallory@corp.example",
                  user_name_raw="CORP\\mallory", dst_host="ws-1", event_time=at(9))  # fmt: skip
    rows = [logon, *_lsass_day(["ws-1"])]
    rows[1]["user_id"] = "mallory@corp.example"
    risk = _score_day(spark, rows, shipped, baselines_df(spark, []))
    user = risk.where(F.col("entity_id") == "mallory@corp.example").first()
    assert user is not None and "sigma.lsass_memory_access" in [s.name for s in user.signals]
    # the machine itself (SYSTEM, name$) is no acting account
    system = _lsass_day(["ws-2"])
    system[0]["user_name_raw"] = "NT AUTHORITY\\SYSTEM"
    matches = detection_matches(silver_df(spark, system), shipped)
    assert [r.account for r in matches.collect()] == [None]


def test_rare_process_pair_on_day_one_compares_with_todays_fleet(spark: SparkSession) -> None:
    def proc(host: str, child: str) -> dict[str, Any]:
        return event(source="windows", class_name="process", device_id=host,
                     parent_process_name=r"C:\Windows\System32\wbem\WmiPrvSE.exe", process_name=child)  # fmt: skip

    common = [proc(f"ws-{i}", r"C:\Windows\System32\svchost.exe") for i in range(5)]
    odd = proc("ws-0", r"C:\Windows\System32\cmd.exe")
    empty = baselines_df(spark, [])
    out = signal_mod.rare_process_pair(silver_df(spark, [*common, odd]), empty, CFG).collect()
    assert [r.signal.detail for r in out] == [
        "wmiprvse.exe started cmd.exe on ws-0: on 1 of 5 hosts today "
        "(no fleet history yet: today's fleet stands in)"
    ]
    # with fewer hosts than rare_pair_min_fleet_hosts, rare means nothing
    few = signal_mod.rare_process_pair(silver_df(spark, [*common[:3], odd]), empty, CFG)
    assert few.count() == 0


# --- policies name detections --------------------------------------------------------------


def test_policies_can_name_detections_and_still_catch_typos_in_built_in_signals() -> None:
    expr = compile_expression(
        "risk >= 80 and (has_signal('sigma.lsass_memory_access') or detection('high'))"
    )
    assert expr.signals == frozenset({"sigma.lsass_memory_access"})
    high = {"risk": 85, "signals": ["sigma.x"], "signal": {"sigma.x": {"threshold": 4.0}}}
    assert expr.evaluate(high)
    assert not compile_expression("detection('critical')").evaluate(high)
    assert compile_expression("detection('medium')").evaluate(high)
    with pytest.raises(UnknownSignalError, match="impossible_travle"):
        compile_expression("has_signal('impossible_travle')")
    with pytest.raises(UnknownSignalError):
        compile_expression("has_signal('sigma.Not A Slug')")
    with pytest.raises(ExpressionError, match="unknown level"):
        compile_expression("detection('severe')")


def test_noisy_rules_cannot_be_configured_to_block() -> None:
    with pytest.raises(ValueError, match="noisy_max_points"):
        Settings.model_validate({"detections": {"noisy_max_points": 85}})


# --- --json (issue 26) ---------------------------------------------------------------------


def test_lint_json_lists_the_compiled_rules_and_the_failures(
    cli_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    shipped: list[CompiledRule],
) -> None:
    code, doc, _ = run_json_command(capsys, "detections", "lint")
    assert code == 0 and doc["schema"] == "policylake.cli/detections-lint/v1" and doc["ok"]
    assert sorted(r["signal"] for r in doc["compiled"]) == sorted(r.rule.signal for r in shipped)
    assert doc["counts"] == {"compiled": len(shipped), "failed": 0, "not_ingested": 0}
    assert doc["failures"] == []
    monkeypatch.setattr("jobs.detections.rules.REPOSITORY_ROOT", cli_dir)
    own = cli_dir / "detections"
    path = write_rule(own, "needs_user_agent", rule_text(
        "  sel:\n    userAgent: x\n  condition: sel", "  product: aws\n  service: cloudtrail",
        title="needs a user agent"))  # fmt: skip
    code, doc, err = run_json_command(capsys, "detections", "lint", "--rules", str(own))
    assert code == 1 and doc["exit_code"] == 1 and doc["ok"] is False
    assert "detections lint failed" in err
    assert doc["compiled"] == [] and doc["counts"]["failed"] == 1
    (failure,) = doc["failures"]
    assert (failure["severity"], failure["path"], failure["title"]) == (
        "error",
        str(path),
        "needs a user agent",
    )


def test_test_json_gives_each_example_and_each_rule_on_events_its_verdict(
    cli_dir: Path, capsys: pytest.CaptureFixture[str], spark: SparkSession
) -> None:
    rules = cli_dir / "rules"
    write_rule(rules, "whoami", rule_text(
        "  sel:\n    CommandLine|contains: whoami\n  condition: sel", title="whoami") + (
        "tests:\n  - name: whoami runs\n    event: {EventID: 1, CommandLine: 'whoami /all'}\n"
        "  - name: expects a match that cannot happen\n"
        "    event: {EventID: 1, CommandLine: 'hostname'}\n"))  # fmt: skip
    code, doc, _ = run_json_command(capsys, "detections", "test", "--rules", str(rules))
    assert code == 1 and doc["schema"] == "policylake.cli/detections-test/v1"
    assert doc["mode"] == "examples" and doc["ok"] is False
    assert sorted(
        (e["signal"], e["example"], e["matched"], e["passed"]) for e in doc["examples"]
    ) == [
        ("sigma.whoami", "expects a match that cannot happen", False, False),
        ("sigma.whoami", "whoami runs", True, True),
    ]
    assert doc["counts"] == {"passed": 1, "failed": 1, "untested": 0}

    events = cli_dir / "one.json"
    events.write_text(json.dumps(_evtx_dump_doc(
        SYSMON, 1, {"Image": r"C:\Windows\System32\cmd.exe", "CommandLine": "cmd /c whoami"})))  # fmt: skip
    write_rule(rules, "net_user", rule_text(
        "  sel:\n    CommandLine|contains: 'net user'\n  condition: sel", title="net user", n=2))  # fmt: skip
    argv = ["detections", "test", "--rules", str(rules), "--events", str(events)]
    code, doc, err = run_json_command(capsys, *argv)
    assert code == 1 and doc["mode"] == "events" and doc["event_files"] == [str(events)]
    assert "MISSED sigma.net_user" in err
    assert sorted((r["signal"], r["title"], r["events"]) for r in doc["rules"]) == [
        ("sigma.net_user", "net user", 0),
        ("sigma.whoami", "whoami", 1),
    ]
    assert doc["counts"] == {"given": 2, "fire": 1, "missed": 1}
