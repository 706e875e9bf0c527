"""Protected data: pseudonymized BI tables, credentials kept out of config/logs/tables, and
data-subject erasure (`policylake forget`).

One scored-and-recommended day is built twice per module, plain (A) and pseudonymized (B),
from the score stage's hand-built inputs; B is copied for the credential and erasure tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from typer.testing import CliRunner

from jobs.core.config import PrivacySettings, Settings, load_settings
from jobs.core.context import RunContext
from jobs.core.errors import ConfigError
from jobs.core.tables import (
    ANALYST_DECISIONS,
    AUDIT_HEADS,
    BRONZE,
    ENTITY_DAILY,
    PSEUDONYMS,
    SESSION_SCORES,
    SILVER_QUARANTINE,
)
from jobs.governance.audit import AUDIT_KEY_ENV, verify_chain
from jobs.governance.erasure import list_tables, mention_pattern
from jobs.governance.privacy import (
    PROTECTED_TABLES,
    PseudonymKeyError,
    pseudonym_key,
    pseudonym_rows,
    pseudonymize,
    resolve_identifiers,
    resolve_pseudonyms,
    resolve_text,
    token_of,
)
from jobs.stages.recommend.stage import run_recommend
from jobs.stages.score.stage import run_score
from tests.conftest import test_settings
from tests.scoring_frames import DAY, baseline, baselines_df, events_df, history, peer
from tests.test_recommend import INVENTORY_HEADER, POLICIES, consumer_example
from tests.test_score import _lake_inputs

KEY_ENV = "POLICYLAKE_PSEUDONYM_KEY"
KEY = "pseudonym-key-for-tests-0123456789abcdef"
AUDIT_KEY = "audit-key-for-privacy-tests-0123456789"
SCORES, RISK = "gold.session_scores", "gold.entity_risk"
RECS, LOG = "gold.policy_recommendations", "gold.decision_log"
ERASED = re.compile(r"\[erased:[0-9a-f]{12}\]")  # the erasure's pseudonym in redacted text
U1_ALIASES = ("u1@x", "user.one", "user.one@x.example", "corp\\user.one")
DIRECTORY = (
    "user_id,display_name,upn,sam_account,email,aliases,department,role,peer_group,"
    "account_type,privileged,home_country,home_city,timezone,work_start_hour,work_end_hour,"
    "devices,manager,created\n"
    + "".join(
        f"u{i}@x,User {i},u{i}@x,user.{n},user.{n}@x.example,{alias},sales,account_executive,"
        f"sales/account_executive,human,false,US,New York,America/New_York,9,18,d{i},,2025-01-01\n"
        for i, n, alias in [
            (0, "zero", ""),
            (1, "one", "CORP\\user.one"),
            (2, "two", ""),
            (3, "three", ""),
        ]
    )
)


def key_bytes() -> bytes:
    return KEY.encode()


def as_json(df: DataFrame) -> DataFrame:
    return df.select(F.to_json(F.struct(*[F.col(c) for c in df.columns])).alias("j"))


def naming(df: DataFrame, needles: list[str]) -> int:
    """Rows of `df` naming any needle as a whole identifier (case-insensitive)."""
    return as_json(df).where(F.col("j").rlike(mention_pattern(needles))).count()


# --- configuration: credentials never come from the config ------------------------------------


def test_credentials_in_the_config_file_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "policylake.yaml"
    file.write_text("spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: hunter2-very-secret\n")
    with pytest.raises(ConfigError) as err:
        load_settings(file, environ={})
    message = str(err.value)
    assert message.startswith(f"{file}: 'spark.conf.spark.hadoop.fs.s3a.secret.key' looks like")
    assert "hunter2" not in message and "\n" not in message
    file.write_text("paths:\n  mlflow_uri: https://bob:pw0rd@mlflow.corp:5000\n")
    with pytest.raises(ConfigError, match=r"'paths\.mlflow_uri' looks like a credential"):
        load_settings(file, environ={})
    for key in ("fs.s3a.access.key", "spark.hadoop.fs.azure.account.oauth2.client.secret",
                "spark.hadoop.fs.s3a.session.token", "spark.some.password",
                "spark.hadoop.fs.azure.account.key.corp.dfs.core.windows.net"):  # fmt: skip
        file.write_text(f"spark:\n  conf:\n    {key}: x\n")
        with pytest.raises(ConfigError, match="looks like a credential"):
            load_settings(file, environ={})
    # a URI with a password is refused in spark.conf values too
    file.write_text("spark:\n  conf:\n    spark.hadoop.fs.defaultFS: s3a://k:s3cr3t@bucket\n")
    with pytest.raises(ConfigError, match=r"'spark\.conf\.spark\.hadoop\.fs\.defaultFS' looks"):
        load_settings(file, environ={})
    env = {"POLICYLAKE__SPARK__CONF__spark.hadoop.fs.s3a.secret.key": "hunter2"}
    with pytest.raises(ConfigError, match=r"^environment override .*looks like a credential"):
        load_settings(None, environ=env)
    # naming a provider chain is how credentials are configured: allowed
    provider = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    file.write_text(
        f"spark:\n  conf:\n    spark.hadoop.fs.s3a.aws.credentials.provider: {provider}\n"
    )
    assert load_settings(file, environ={}).spark.conf == {
        "spark.hadoop.fs.s3a.aws.credentials.provider": provider
    }
    with pytest.raises(ValueError, match="looks like a credential"):
        Settings.model_validate({"spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "x"}}})


def test_pseudonym_key_must_be_set_and_long_enough() -> None:
    privacy = PrivacySettings(pseudonymize=True)
    with pytest.raises(PseudonymKeyError, match="POLICYLAKE_PSEUDONYM_KEY is not set"):
        pseudonym_key(privacy, {})
    with pytest.raises(PseudonymKeyError, match="shorter than 32 bytes") as err:
        pseudonym_key(privacy, {KEY_ENV: "short-key-value"})
    assert "short-key-value" not in str(err.value)
    assert pseudonym_key(privacy, {KEY_ENV: KEY}) == key_bytes()
    assert token_of(key_bytes(), "u1@x", "user").startswith("u_")
    assert len(token_of(key_bytes(), "u1@x", "user")) == 26
    assert token_of(key_bytes(), "u1@x", "user")[2:] == token_of(key_bytes(), "u1@x", "host")[2:]
    assert token_of(b"another-key-0123456789abcdef-0123", "u1@x", "user") != token_of(
        key_bytes(), "u1@x", "user"
    )


# --- the transform, pure ---------------------------------------------------------------------


def _scores(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    full = [
        {**{f.name: None for f in SESSION_SCORES.schema.fields}, "session_id": "-", **r}
        for r in rows
    ]
    return spark.createDataFrame(full, SESSION_SCORES.schema)


def _signal(detail: str) -> dict[str, Any]:
    return {"name": "new_device", "value": 1.0, "threshold": 1.0, "contribution": 30.0,
            "detail": detail, "source": "idp"}  # fmt: skip


def test_pseudonymize_tokenizes_ids_and_text_and_resolves_back(spark: SparkSession) -> None:
    k = key_bytes()
    original = _scores(
        spark,
        [
            {
                "run_date": DAY,
                "session_id": "s1",
                "user_id": "ann@x",
                "device_id": "d9",
                "entity_type": "user",
                "entity_id": "ann@x",
                "risk": 30,
                "reasons": ["new device d9 for ann@x."],
                "signals": [_signal("first logon to ws-9")],
            },
            {
                "run_date": DAY,
                "session_id": "s2",
                "entity_type": "host",
                "entity_id": "ws-9",
                "risk": 0,
                "reasons": ["ws-9 reached by ann@x-old"],
                "signals": [],
            },
            {
                "run_date": DAY,
                "session_id": "s3",
                "entity_type": "ip",
                "entity_id": "1.2.3.4",
                "risk": 5,
                "reasons": [],
                "signals": [],
            },
        ],
    )
    vocabulary = {"ann@x": "user", "d9": "device", "ws-9": "host"}
    got = pseudonymize(original, PROTECTED_TABLES[SCORES], k, vocabulary)
    u, d, host = (
        token_of(k, "ann@x", "user"),
        token_of(k, "d9", "device"),
        token_of(k, "ws-9", "host"),
    )
    rekey = {r["session_id"]: r["session_id"] for r in got.collect()}
    assert all(len(s) == 32 and s not in ("s1", "s2", "s3") for s in rekey)
    expected = _scores(
        spark,
        [
            {
                "run_date": DAY,
                "user_id": u,
                "device_id": d,
                "entity_type": "user",
                "entity_id": u,
                "risk": 30,
                "reasons": [f"new device {d} for {u}."],
                "signals": [_signal(f"first logon to {host}")],
            },
            {
                "run_date": DAY,
                "entity_type": "host",
                "entity_id": host,
                "risk": 0,
                "reasons": [f"{host} reached by ann@x-old"],
                "signals": [],
            },  # not an identifier
            {
                "run_date": DAY,
                "entity_type": "ip",
                "entity_id": "1.2.3.4",
                "risk": 5,
                "reasons": [],
                "signals": [],
            },
        ],
    ).drop("session_id")
    assertDataFrameEqual(got.drop("session_id"), expected)

    vocab_df = spark.createDataFrame(
        [(kind, ident) for ident, kind in vocabulary.items()], "kind string, identifier string"
    )
    mapping = pseudonym_rows(original, got, PROTECTED_TABLES[SCORES], k, vocab_df)
    assertDataFrameEqual(
        mapping,
        spark.createDataFrame(
            [(DAY, "user", u, "ann@x"), (DAY, "device", d, "d9"), (DAY, "host", host, "ws-9")],
            PSEUDONYMS.schema,
        ),
    )
    columns = PROTECTED_TABLES[SCORES].id_columns
    back = resolve_text(
        resolve_identifiers(got, mapping, columns),
        ["reasons", "signals"],
        {r["token"]: r["identifier"] for r in mapping.collect()},
    )
    assertDataFrameEqual(back.drop("session_id"), original.drop("session_id"))


# --- the score and recommend stages, plain and pseudonymized ----------------------------------


@dataclass
class Lakes:
    plain: RunContext
    protected: RunContext
    identifiers: list[str]  # every user, device and host id of the inputs


def _inputs(spark: SparkSession, ctx: RunContext) -> None:
    _lake_inputs(spark, ctx)
    folder = Path(ctx.settings.paths.reference_root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "identity_directory.csv").write_text(DIRECTORY)
    (folder / "asset_inventory.csv").write_text(INVENTORY_HEADER)


@pytest.fixture(scope="module")
def lakes(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Lakes:
    plain = RunContext(spark, test_settings(tmp_path_factory.mktemp("plain")))
    protected = RunContext(
        spark,
        test_settings(tmp_path_factory.mktemp("protected"), privacy={"pseudonymize": True}),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        mp.setenv(AUDIT_KEY_ENV, AUDIT_KEY)
        for ctx in (plain, protected):
            _inputs(spark, ctx)
            run_score(ctx, [DAY])
            run_recommend(ctx, [DAY], policies_dir=POLICIES)
    events = plain.lake.read("silver.events")
    ids = {
        r[0]
        for c in ("user_id", "device_id", "dst_host")
        for r in events.select(c).where(F.col(c).isNotNull()).distinct().collect()
    }
    ids |= {f"u{i}@x" for i in range(4)} | {f"d{i}" for i in range(4)}  # the directory
    return Lakes(plain, protected, sorted(ids))


def test_bi_tables_hold_no_real_identifier(lakes: Lakes) -> None:
    for table in (SCORES, RISK):
        assert naming(lakes.plain.lake.read(table), lakes.identifiers) > 0  # the check can fail
        assert naming(lakes.protected.lake.read(table), lakes.identifiers) == 0, table
    tokens = lakes.protected.lake.read(SCORES).where("entity_type = 'user'").select("entity_id")
    assert {r[0][:2] for r in tokens.collect()} == {"u_"}
    assert naming(lakes.protected.lake.read(PSEUDONYMS.name), lakes.identifiers) > 0  # restricted


def test_resolving_the_tokens_gives_the_plain_tables(lakes: Lakes) -> None:
    for table in (SCORES, RISK):
        plain = lakes.plain.lake.read(table)
        back = resolve_pseudonyms(lakes.protected.lake, lakes.protected.lake.read(table), table)
        if table == SCORES:  # session ids are re-keyed, not mapped
            plain, back = plain.drop("session_id"), back.drop("session_id")
        assertDataFrameEqual(back, plain)


def test_recommendations_and_decision_log_keep_real_ids(lakes: Lakes) -> None:
    for table in (RECS, LOG):
        plain = lakes.plain.lake.read(table)
        assert plain.where("target_id = 'u1@x'").count() > 0
        assertDataFrameEqual(lakes.protected.lake.read(table), plain)


def test_score_stops_before_writing_when_the_key_is_missing(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    ctx = RunContext(spark, test_settings(tmp_path, privacy={"pseudonymize": True}))
    ctx.lake.replace_dates(events_df(spark, []), "silver.events", [DAY])
    with pytest.raises(PseudonymKeyError, match="POLICYLAKE_PSEUDONYM_KEY is not set"):
        run_score(ctx, [DAY])
    assert not ctx.lake.exists(SCORES) and not ctx.lake.exists(PSEUDONYMS.name)


def test_cli_pseudonym_resolve_and_of(lakes: Lakes, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.cli.app import app

    runner = CliRunner()
    work = str(Path(lakes.protected.settings.paths.lake_root).parent)
    token = token_of(key_bytes(), "u1@x", "user")
    resolved = runner.invoke(app, ["pseudonym", "resolve", token, "--workdir", work])
    assert resolved.exit_code == 0, resolved.output
    assert resolved.output.splitlines() == [f"{token} -> u1@x (user; {DAY} .. {DAY})"]
    unknown = runner.invoke(app, ["pseudonym", "resolve", "u_" + "0" * 24, "--workdir", work])
    assert unknown.exit_code == 1
    monkeypatch.setenv(KEY_ENV, KEY)
    of = runner.invoke(app, ["pseudonym", "of", "u1@x", "--kind", "user"])
    assert of.exit_code == 0 and of.output.strip() == f"u1@x -> {token} (user)"
    monkeypatch.delenv(KEY_ENV)
    missing = runner.invoke(app, ["pseudonym", "of", "u1@x"])
    assert missing.exit_code == 2


# --- credentials never reach logs or tables --------------------------------------------------

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAPOLICYLAKETEST77",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-8f1c2b7d9e0a4c6b",
    "MLFLOW_TRACKING_USERNAME": "mlflow-user-3c9d1e",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-7a2e4f9b",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-5d8c1a3e",
    KEY_ENV: KEY,
    AUDIT_KEY_ENV: AUDIT_KEY,
}


def test_credentials_and_keys_never_reach_tables_or_logs(
    lakes: Lakes,
    spark: SparkSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from jobs.cli.app import app

    work = Path(lakes.protected.settings.paths.lake_root).parent
    shutil.copytree(work / "lake", tmp_path / "lake")
    shutil.copytree(work / "reference", tmp_path / "reference")
    config = tmp_path / "policylake.yaml"
    config.write_text("privacy:\n  pseudonymize: true\n")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    args = ["run", "--date", DAY.isoformat(), "--stage", "score,recommend"]
    result = runner.invoke(app, [*args, "--workdir", str(tmp_path), "--config", str(config)])
    assert result.exit_code == 0, result.output
    refused = tmp_path / "refused.yaml"
    refused.write_text(
        f"spark:\n  conf:\n    fs.s3a.secret.key: {SECRETS['AWS_SECRET_ACCESS_KEY']}\n"
    )
    bad = runner.invoke(app, ["verify", "--date", DAY.isoformat(), "--config", str(refused)])
    assert bad.exit_code == 2
    captured = capfd.readouterr()
    logs = "\n".join([result.output, bad.output, captured.out, captured.err, caplog.text])
    ctx = RunContext(spark, test_settings(tmp_path))
    tables = list_tables(ctx.lake)
    assert {SCORES, RISK, RECS, LOG, PSEUDONYMS.name, AUDIT_HEADS.name} <= set(tables)
    dumped = "\n".join(r["j"] for t in tables for r in as_json(ctx.lake.read(t)).collect())
    files = "\n".join(_file_text(p) for p in (tmp_path / "lake").rglob("*") if p.is_file())
    for name, value in SECRETS.items():
        assert value not in logs, name
        assert value not in dumped, name
        assert value not in files, name


# --- data-subject erasure -------------------------------------------------------------------


@dataclass
class Forgotten:
    ctx: RunContext
    before: dict[str, list[Row]]
    versions: dict[str, int]
    bronze_had_user: bool
    aborted: Any
    result: Any


RAW_FILE = "raw/idp/2026-10-20/okta.jsonl"


def _bronze_and_lineage(spark: SparkSession, ctx: RunContext) -> None:
    """bronze.idp lines for the day's silver events (lineage set), one unparseable line naming
    user.one, and a quarantined line naming CORP\\user.one."""
    lake = ctx.lake
    events = lake.read("silver.events").orderBy("run_date", "event_uid").collect()
    schema = BRONZE["idp"].schema
    bronze = []
    silver = []
    for line, e in enumerate(events, start=1):
        raw = json.dumps(
            {"actor": {"alternateId": e["user_id"]}, "client": {"ipAddress": e["src_ip"]}}
        )
        row: dict[str, Any] = {f.name: None for f in schema.fields}
        row.update(run_date=e["run_date"], source="idp", _file=RAW_FILE, _line=line, _batch_id="b1",
                   raw=raw, _parse_status="parsed", actor_alternate_id=e["user_id"])  # fmt: skip
        bronze.append(row)
        silver.append({**e.asDict(), "bronze_file": RAW_FILE, "bronze_line": line})
    extra: dict[str, Any] = {f.name: None for f in schema.fields}
    n = len(events)
    bronze.append({**extra, "run_date": DAY, "source": "idp", "_file": RAW_FILE, "_line": n + 1,
                   "_batch_id": "b1", "raw": '{"actor": {"alternateId": "USER.ONE@x.example"',
                   "_parse_status": "unparseable"})  # fmt: skip
    bronze.append({**extra, "run_date": DAY, "source": "idp", "_file": RAW_FILE, "_line": n + 2,
                   "_batch_id": "b1", "raw": '{"actor": {"alternateId": "CORP\\\\user.one"}}',
                   "_parse_status": "parsed"})  # fmt: skip
    days = sorted({e["run_date"] for e in events})
    lake.replace_dates(spark.createDataFrame(bronze, schema), "bronze.idp", days)
    lake.replace_dates(
        spark.createDataFrame(silver, lake.read("silver.events").schema), "silver.events", days
    )
    quarantine = [(DAY, "idp", "user_known", "unknown user", bronze[-1]["raw"], RAW_FILE, n + 2, "b1"),
                  (DAY, "idp", "user_known", "unknown user", '{"x": 1}', RAW_FILE, 1000, "b1")]  # fmt: skip
    lake.replace_dates(
        spark.createDataFrame(quarantine, SILVER_QUARANTINE.schema), "silver.quarantine", [DAY]
    )


def _gold_extras(spark: SparkSession, ctx: RunContext) -> None:
    lake = ctx.lake
    daily = [{**{f.name: None for f in ENTITY_DAILY.schema.fields}, **r} for r in [
        {"run_date": DAY, "entity_type": "user", "entity_id": "u1@x", "events": 3},
        {"run_date": DAY, "entity_type": "host", "entity_id": "ws-1", "events": 4,
         "users": {"u1@x": 3, "u2@x": 1}},
    ]]  # fmt: skip
    lake.replace_dates(
        spark.createDataFrame(daily, ENTITY_DAILY.schema), "gold.entity_daily", [DAY]
    )
    members = [
        {"day": DAY - timedelta(days=1), "member": m, "events": 5, "failures": 0, "bytes_in": 1,
         "bytes_out": 1, "privileged_actions": 0}
        for m in ("u1@x", "u2@x")
    ]  # fmt: skip
    extra = [
        baseline("ws-1", "host", users=history("u1@x", "u2@x")),
        peer("sales/managers", daily_values=members),
    ]
    current = lake.read("gold.baselines")
    lake.replace_dates(current.unionByName(baselines_df(spark, extra)), "gold.baselines", [DAY])
    recs = {r["target_id"]: r for r in lake.read(RECS).collect()}
    decided = datetime(2026, 10, 21, 8, 0)
    rows = [
        (decision_id, recs[target]["rec_id"], DAY, "approve", None, None, analyst, None, decided,
         target_type, target, recs[target]["action"], recs[target]["policy_id"], "decisions.csv")
        for decision_id, target, target_type, analyst in (
            ("d-1", "u1@x", "user", "ana@x"),  # on the user: deleted
            ("d-2", "9.9.9.9", "ip", "user.one@x.example"),  # by the user: redacted
        )
    ]  # fmt: skip
    lake.replace_dates(
        spark.createDataFrame(rows, ANALYST_DECISIONS.schema), "ops.analyst_decisions", [DAY]
    )


def _file_text(path: Path) -> str:
    """What a lake file holds, as text: a Parquet file decoded (its pages are compressed, so a
    value need not appear in its bytes), any other file as it is."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return "\n".join(_strings(pq.read_table(path).to_pylist()))
    return path.read_bytes().decode("utf-8", "replace")


def _strings(value: Any) -> list[str]:
    """Every scalar in a decoded value (rows, structs, maps, lists) as text."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [] if value is None else [str(value)]


def _table_files(ctx: RunContext, table: str) -> list[Path]:
    folder = Path(ctx.lake.path(table))
    return [p for p in folder.rglob("*") if p.is_file() and "_delta_log" not in p.parts]


def _version(ctx: RunContext, table: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(ctx.spark, ctx.lake.path(table)).history(1).first()["version"])  # type: ignore[index]


@pytest.fixture(scope="module")
def forgotten(
    lakes: Lakes, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Forgotten:
    from jobs.cli.app import app

    work = tmp_path_factory.mktemp("forget")
    source = Path(lakes.protected.settings.paths.lake_root).parent
    for folder in ("lake", "reference"):
        shutil.copytree(source / folder, work / folder)
    ctx = RunContext(spark, test_settings(work, privacy={"pseudonymize": True}))
    config = work / "policylake.yaml"
    config.write_text("privacy:\n  pseudonymize: true\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        mp.setenv(AUDIT_KEY_ENV, AUDIT_KEY)
        _bronze_and_lineage(spark, ctx)
        _gold_extras(spark, ctx)
        tables = list_tables(ctx.lake)
        before = {t: ctx.lake.read(t).collect() for t in tables}
        versions = {t: _version(ctx, t) for t in tables}
        had_user = any("u1@x" in _file_text(p) for p in _table_files(ctx, "bronze.idp"))
        runner = CliRunner()
        args = [
            "forget",
            "--user",
            "USER.ONE@x.example",
            "--workdir",
            str(work),
            "--config",
            str(config),
        ]
        aborted = runner.invoke(app, args, input="n\n")
        result = runner.invoke(app, [*args, "--yes", "--by", "dpo@corp.example"])
    return Forgotten(ctx, before, versions, had_user, aborted, result)


def _needles() -> list[str]:
    return [*U1_ALIASES, token_of(key_bytes(), "u1@x", "user")]


def test_forget_asks_first_and_then_reports(forgotten: Forgotten) -> None:
    assert forgotten.aborted.exit_code != 0 and "Aborted" in forgotten.aborted.output
    assert forgotten.result.exit_code == 0, forgotten.result.output
    out = forgotten.result.output
    assert "subject: 4 spelling(s), 1 pseudonym token(s) (identity directory)" in out
    assert "audit chain re-recorded for 1 date(s)" in out


def test_a_plan_is_applied_only_to_its_own_user() -> None:
    from jobs.governance.erasure import ErasureError, ErasureResult, Subject, erase_user

    plan = ErasureResult(Subject("u1@x", ("u1@x", "user.one@x.example"), (), True))
    with pytest.raises(ErasureError, match="another user"):
        erase_user(None, "u2@x", "dpo@x", planned=plan)  # refused before touching the lake
    done = erase_user(None, " USER.ONE@x.example", "dpo@x", planned=plan)  # an empty plan
    assert done.subject is plan.subject and not done.dry_run and done.tables == []


def test_no_table_names_the_user_any_more(forgotten: Forgotten) -> None:
    ctx = forgotten.ctx
    for table in list_tables(ctx.lake):
        assert naming(ctx.lake.read(table), _needles()) == 0, table
    unreadable = 0
    for table in forgotten.before:
        try:
            old = naming(ctx.lake.read(table, version=0), _needles())
        except Exception:  # its files were vacuumed: time travel fails
            unreadable += 1
            continue
        assert old == 0, table
    assert unreadable > 0


def test_table_files_no_longer_hold_the_user_bytes(forgotten: Forgotten) -> None:
    assert forgotten.bronze_had_user  # the byte check below can fail
    needles = [n.lower() for n in _needles()]
    for table in list_tables(forgotten.ctx.lake):
        for path in _table_files(forgotten.ctx, table):
            data = _file_text(path).lower()
            assert not any(n in data for n in needles), path


def _others(rows: list[Row], column: str, keep: Any) -> list[Row]:
    return sorted((r for r in rows if keep(r[column])), key=lambda r: tuple(str(v) for v in r))


def test_other_users_rows_are_untouched(forgotten: Forgotten, spark: SparkSession) -> None:
    ctx = forgotten.ctx
    before = forgotten.before
    now = {t: ctx.lake.read(t).collect() for t in before}

    def not_u1(v: Any) -> bool:
        return v not in (None, "u1@x") and not str(v).startswith(
            token_of(key_bytes(), "u1@x", "user")
        )

    assert _others(now["silver.events"], "user_id", lambda v: True) == _others(
        before["silver.events"], "user_id", lambda v: v != "u1@x"
    )
    for table in (RECS, LOG):
        assert _others(now[table], "target_id", lambda v: True) == _others(
            before[table], "target_id", not_u1
        )
    for table in (SCORES, RISK):
        assert _others(now[table], "entity_id", lambda v: True) == _others(
            before[table], "entity_id", not_u1
        )

    # issue 24, finding 6: raw evidence is redacted (the erasure's pseudonym), never deleted
    def names_u1(raw: str | None) -> bool:
        return "u1@x" in (raw or "") or "user.one" in (raw or "").lower()

    lines = {r["_line"]: r["raw"] for r in now["bronze.idp"]}
    was = {r["_line"]: r["raw"] for r in before["bronze.idp"]}
    assert sorted(lines) == sorted(was)
    named = [n for n, raw in was.items() if names_u1(raw)]
    assert len(named) > 2 and not any(names_u1(lines[n]) for n in named)
    assert all(ERASED.search(lines[n]) for n in named)
    assert {n: raw for n, raw in lines.items() if n not in named} == {
        n: raw for n, raw in was.items() if n not in named
    }
    quarantined = sorted(r["raw"] for r in now["silver.quarantine"])
    assert len(quarantined) == 2 and quarantined[1] == '{"x": 1}'
    assert ERASED.search(quarantined[0]) and not names_u1(quarantined[0])
    host = {r["entity_id"]: r for r in now["gold.entity_daily"]}
    assert set(host) == {"ws-1"} and host["ws-1"]["users"] == {"u2@x": 1}
    baselines = {r["entity_id"]: r for r in now["gold.baselines"]}
    assert "u1@x" not in baselines and "u2@x" in baselines
    assert set(baselines["ws-1"]["users"]) == {"u2@x"}
    assert [m["member"] for m in baselines["sales/managers"]["daily_values"]] == ["u2@x"]
    was = {r["entity_id"]: r for r in before["gold.baselines"]}
    assert baselines["u2@x"] == was["u2@x"]
    decisions = {r["decision_id"]: r for r in now["ops.analyst_decisions"]}
    assert set(decisions) == {"d-2"} and ERASED.fullmatch(decisions["d-2"]["analyst"])
    mapped = {r["identifier"] for r in now[PSEUDONYMS.name]}
    assert "u1@x" not in mapped and "u2@x" in mapped


def test_erasure_is_recorded_without_the_user_id_and_the_chain_verifies(
    forgotten: Forgotten, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = forgotten.ctx
    (erasure,) = ctx.lake.read("ops.erasures").collect()
    assert erasure["requested_by"] == "dpo@corp.example"
    assert erasure["subject_ref_kind"] == f"hmac-sha256:{KEY_ENV}"
    assert erasure["rows_deleted"][LOG] == 2  # identity-sessions and cloud-iam on u1@x
    assert "bronze.idp" not in erasure["rows_deleted"]  # redacted, never deleted
    named = [r for r in forgotten.before["bronze.idp"]
             if "u1@x" in (r["raw"] or "") or "user.one" in (r["raw"] or "").lower()]  # fmt: skip
    assert erasure["rows_redacted"] == {
        "gold.baselines": 2, "gold.entity_daily": 1, "ops.analyst_decisions": 1,
        "bronze.idp": len(named), "silver.quarantine": 1,
    }  # fmt: skip
    assert erasure["rechained_dates"] == [DAY]
    assert {LOG, RECS, SCORES, RISK, PSEUDONYMS.name, "bronze.idp"} <= set(erasure["tables"])
    assert naming(ctx.lake.read("ops.erasures"), _needles()) == 0
    monkeypatch.setenv(AUDIT_KEY_ENV, AUDIT_KEY)
    result = verify_chain(ctx, DAY)
    assert result.ok, result.summary()
    (head,) = ctx.lake.read_dates(AUDIT_HEADS.name, [DAY]).collect()
    assert head["reason"].startswith(f"erasure {erasure['erasure_id'][:16]}: 2 decision(s)")


# --- issue 24, finding 6: forget cannot destroy evidence ---------------------------------------


def test_shared_and_system_accounts_are_never_a_subject() -> None:
    from jobs.governance.erasure import ErasureError, Subject, check_subject, shared_account

    for name in ("root", "Administrator", "CORP\\Administrator", "SYSTEM", "nobody@x"):
        assert shared_account(name.lower(), [name.lower()], None), name
    assert shared_account("svc-backup@x", ["svc-backup@x"], "service") == (
        "'svc-backup@x' is a service account in the identity directory"
    )
    assert shared_account("u1@x", ["u1@x", "user.one"], "human") is None
    with pytest.raises(ErasureError, match="shared or system account"):
        check_subject(Subject("root", ("root",), (), True, "'root' is a shared or system account"))
    stranger = Subject("jdoe2", ("jdoe2",), (), False)
    with pytest.raises(ErasureError, match="not in the identity directory"):
        check_subject(stranger)
    check_subject(stranger, allow_unknown=True)


def test_forget_refuses_root_a_stranger_and_a_locked_date(
    forgotten: Forgotten, tmp_path: Path
) -> None:
    """`forget --user root --yes` used to delete every sshd/Windows line naming root; a typo
    was accepted; nothing stopped a pipeline run writing the same dates."""
    from jobs.cli.app import app
    from jobs.core.locks import lock_dates

    ctx = forgotten.ctx
    work = Path(ctx.settings.paths.lake_root).parent
    config = work / "policylake.yaml"
    before = {t: ctx.lake.version(t) for t in list_tables(ctx.lake)}
    runner = CliRunner()

    def forget(*args: str) -> Any:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(KEY_ENV, KEY)
            mp.setenv(AUDIT_KEY_ENV, AUDIT_KEY)
            return runner.invoke(
                app, ["forget", *args, "--yes", "--workdir", str(work), "--config", str(config)]
            )

    root = forget("--user", "root")
    assert root.exit_code == 1 and "'root' is a shared or system account" in root.output
    typo = forget("--user", "user.onee@x.example")
    assert typo.exit_code == 1 and "is not in the identity directory" in typo.output
    with lock_dates(ctx.settings.paths.lake_root, [DAY], "a nightly run"):
        locked = forget("--user", "u2@x")
    assert locked.exit_code == 1 and "is being processed by another run" in locked.output
    assert {t: ctx.lake.version(t) for t in list_tables(ctx.lake)} == before  # nothing written


def test_cdf_consumers_resync_after_an_erasure(forgotten: Forgotten, tmp_path: Path) -> None:
    """The zero-retention vacuum removes the change data of older versions: the consumer
    example (docs/policies.md) notices and resyncs from the snapshot, as forget tells."""
    assert "must resync from a snapshot" in forgotten.result.output
    script = tmp_path / "consumer.py"
    script.write_text(consumer_example())
    env = {**os.environ, "POLICYLAKE_LAKE": forgotten.ctx.settings.paths.lake_root,
           "POLICYLAKE_LAST_SEEN_VERSION": "0", "JAVA_HOME": "/nonexistent"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resynced"] is True and summary["change_rows"] == 0
    assert summary["cursor"] == forgotten.ctx.lake.version(RECS)
