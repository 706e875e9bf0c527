"""Configuration: one YAML file (`policylake.yaml`) plus `POLICYLAKE__...` environment overrides.

Every setting has an embedded default so the demo runs with no file at all. Invalid
settings fail with a one-line error naming the bad key (``ConfigError``).
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jobs.core.errors import ConfigError

# The checkout the package runs from: bundled suites (`expectations/`) and policies live here.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "POLICYLAKE__"
# Relative paths are rooted here when set (Airflow workers have no meaningful working directory).
WORKDIR_ENV = "POLICYLAKE_WORKDIR"
DEFAULT_CONFIG_FILE = "policylake.yaml"
# The telemetry sources, in pipeline order: one bronze table and one suite each.
SOURCES = ("idp", "windows", "zeek_conn", "zeek_dns", "cloudtrail", "sshd")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkSettings(_Section):
    master: str = "local[*]"
    app_name: str = "policylake"
    shuffle_partitions: int = Field(default=8, ge=1)
    # Adaptive execution sizes each shuffle from its input: it starts with
    # `max_shuffle_partitions` and coalesces them to about `advisory_partition_mb` each
    # (one partition for a small night, hundreds for a large backfill).
    max_shuffle_partitions: int = Field(default=200, ge=1)
    advisory_partition_mb: int = Field(default=64, ge=1)
    # A run whose raw input (the dates' raw files, all sources) is smaller than this runs
    # with interpreted expressions and no adaptive re-planning: on a small organisation's
    # night, compiling code for each query costs more than running it. 0: never.
    small_input_mb: int = Field(default=64, ge=0)
    driver_memory: str = "4g"
    ui_enabled: bool = False
    # Extra Maven packages (e.g. org.apache.hadoop:hadoop-aws:<hadoop version> for s3a://).
    packages: tuple[str, ...] = ()
    # Any further spark.* settings, e.g. object-store credentials providers.
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("driver_memory")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if not re.fullmatch(r"\d+[kmgt]?", value.strip().lower()):
            raise ValueError("must look like 512m, 2g or 4g")
        return value.strip().lower()

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not k.startswith(("spark.", "fs.", "hadoop."))]
        if bad:
            raise ValueError(f"keys must start with spark., fs. or hadoop.: {', '.join(bad)}")
        secrets = credential_settings({"spark": {"conf": value}})  # privacy: see refuse_credentials
        if secrets:
            raise ValueError(f"{secrets[0]} looks like a credential; set it in the environment")
        return {k: str(v) for k, v in value.items()}


class PathSettings(_Section):
    # Local folders or object-store URIs (s3a://, abfss://, gs://).
    lake_root: str = "lake"
    raw_root: str = "raw"
    reference_root: str = "reference"
    mlflow_uri: str = "mlruns"
    reports_dir: str = "reports"
    exports_dir: str = "exports"
    # Great Expectations Data Docs (HTML) and the validation results they render; a local folder.
    data_docs_dir: str = "data_docs"
    # A generator's injected scenarios (demo and evaluation only); metrics score the
    # recommendations against it when the file exists.
    ground_truth: str = "ground_truth.jsonl"
    # The analysts' drop folder, one sub-folder per day (<analyst_decisions>/<YYYY-MM-DD>/); a
    # local folder of its own, never under raw_root (log shippers write there).
    analyst_decisions: str = "analyst_decisions"
    # The operator's registry of analyst public keys (Ed25519, YAML); a local file outside
    # raw_root and the drop folder (docs/policies.md, Analyst decisions).
    analyst_keys: str = "analyst_keys.yaml"
    # Every audit-chain head is appended here too, outside the lake: a local file (make it
    # append-only) or an object-store prefix ending in / under object lock (docs/audit.md).
    audit_anchor: str = "audit_anchor.jsonl"


class GeoSettings(_Section):
    # Your own location database: a City (or Country) MMDB, e.g. MaxMind GeoLite2-City or
    # GeoIP2-City, or DB-IP's IP-to-City Lite. None: the packaged GeoLite2 City (built
    # 2018-07-03), flagged as stale in ops.dq_results and the daily report.
    database: str | None = None
    # Your own ASN MMDB (GeoLite2-ASN, DB-IP ASN Lite); None: AS names from geoip2fast.
    asn_database: str | None = None
    # A location database built longer ago than this is flagged (MaxMind rebuilds GeoLite2
    # twice a week, DB-IP Lite monthly; refresh with geoipupdate or a monthly download).
    max_age_days: int = Field(default=45, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        renamed = {"city_db": "database", "asn_db": "asn_database"}
        if isinstance(value, dict):
            old = sorted(set(value) & set(renamed))
            if old:
                raise ValueError(f"'{old[0]}' is now '{renamed[old[0]]}'")
        return value


class IngestSettings(_Section):
    sources: tuple[str, ...] = SOURCES
    # late deliveries: running date D first re-runs the dates D-1 .. D-N whose raw files
    # (names and sizes) changed since they were ingested; 0 turns this off
    reprocess_days: int = Field(default=1, ge=0, le=31)

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
        return value


class ValidationSettings(_Section):
    # how far before 00:00 UTC of the run date an event's time may be (a late delivery) ...
    late_tolerance_hours: int = Field(default=48, ge=0)
    # ... and how far after its end (a source clock running ahead): inside this window an
    # event is kept (silver.events.event_date says its date); outside, its time is not usable
    future_tolerance_minutes: int = Field(default=1440, ge=0)
    # a day whose quarantined share of a source's rows is above this marks the source degraded
    max_quarantine_share: float = Field(default=0.05, ge=0, le=1)
    # a source's clock against the other sources' (ops.dq_results `clock_skew`, informational)
    clock_skew_tolerance_minutes: int = Field(default=30, ge=0)
    volume_drop_ratio: float = Field(default=0.5, gt=0, lt=1)
    volume_history_days: int = Field(default=7, ge=1)
    # the volume gate needs this many delivered days in the history window (else it is skipped)
    volume_min_history_days: int = Field(default=3, ge=1)
    # same_day_type: compare weekdays with weekdays and weekends with weekends (the last
    # `volume_history_days` such days); all_days: the plain trailing calendar window
    volume_compare: Literal["same_day_type", "all_days"] = "same_day_type"
    # folder of the Great Expectations suites; None = the repository's `expectations/`
    suites_dir: str | None = None
    # how much GX keeps per expectation: BOOLEAN_ONLY < BASIC < SUMMARY (docs/data_quality.md)
    result_format: Literal["BOOLEAN_ONLY", "BASIC", "SUMMARY"] = "SUMMARY"
    # sample unexpected values per expectation in Data Docs; each costs a Spark job per
    # expectation and puts raw values (addresses, account names) in the HTML
    unexpected_samples: int = Field(default=0, ge=0, le=200)
    # record: GX's validation results are built from the row predicates' counts (one
    # aggregation); recompute: GX also computes every expectation from the data and the two
    # must agree (~13 Spark jobs and ~2 s more per suite and run; needed for samples)
    great_expectations: Literal["record", "recompute"] = "record"


class BaselineSettings(_Section):
    habit_window_days: int = Field(default=30, ge=1)
    country_device_window_days: int = Field(default=90, ge=1)
    host_window_days: int = Field(default=180, ge=1)
    learning_period_days: int = Field(default=14, ge=0)
    learning_min_signins: int = Field(default=20, ge=0)


# Risk points a signal adds when it just reaches its threshold (it grows with how far past
# the threshold the measured value is, up to `signal_max_factor` times). docs/scoring.md
# explains the calibration: points are chosen so one high-precision signal on its own lands
# in the high band, and weak, common ones need corroboration.
DEFAULT_SIGNAL_POINTS: dict[str, float] = {
    "impossible_travel": 60.0,
    "new_country": 50.0,
    "new_device": 30.0,
    "off_hours": 10.0,
    "first_time_host_access": 15.0,
    "lateral_fan_out": 70.0,
    "password_spray": 85.0,
    "brute_force": 70.0,
    "privileged_anomaly": 50.0,
    "exfiltration_volume": 80.0,
    "rare_process_pair": 45.0,
    "risky_iam_change": 70.0,
    "inbound_scan": 40.0,
    "unsolicited_inbound": 30.0,
    "remote_execution": 80.0,
    "remote_service_access": 40.0,
}

# The explainable signals scoring emits, in the order they are computed.
SIGNAL_NAMES: tuple[str, ...] = tuple(DEFAULT_SIGNAL_POINTS)

# Signals that carry risk without any history of the entity (docs/scoring.md, "Risk on day
# one"): what they measure is wrong in itself, not unusual for someone. The others are
# behavioural: they compare with a baseline and stay silent until one exists. Every
# detection (`sigma.<rule>`) is absolute too.
ABSOLUTE_SIGNALS: frozenset[str] = frozenset(
    {
        "impossible_travel",
        "password_spray",
        "brute_force",
        "inbound_scan",
        "unsolicited_inbound",
        "remote_execution",
        "remote_service_access",
    }
)
# Signals of Sigma detections are named `sigma.<rule file stem>` (jobs/detections/rules.py).
DETECTION_SIGNAL_PREFIX = "sigma."
# A detection signal's name after the prefix: the rule's file stem, lower-cased, [a-z0-9_].
DETECTION_SLUG = re.compile(r"[a-z0-9][a-z0-9_]{0,119}")
# Sigma rule levels, least to most severe (a detection signal's `threshold` is the rank, 1..5).
DETECTION_LEVELS: tuple[str, ...] = ("informational", "low", "medium", "high", "critical")
DEFAULT_LEVEL_POINTS: dict[str, float] = {
    "informational": 5.0,
    "low": 20.0,
    "medium": 45.0,
    "high": 80.0,
    "critical": 95.0,
}

DEFAULT_IAM_WRITE_ACTIONS: tuple[str, ...] = (
    "CreateAccessKey",
    "CreateUser",
    "CreateLoginProfile",
    "UpdateLoginProfile",
    "AttachUserPolicy",
    "AttachRolePolicy",
    "AttachGroupPolicy",
    "PutUserPolicy",
    "PutRolePolicy",
    "PutGroupPolicy",
    "AddUserToGroup",
    "UpdateAssumeRolePolicy",
    "CreateRole",
    "CreatePolicyVersion",
    "SetDefaultPolicyVersion",
    "DeactivateMFADevice",
)


class ScoringSettings(_Section):
    """Thresholds of the explainable signals, the risk calibration and the model registry."""

    session_gap_minutes: int = Field(default=30, ge=1)
    # impossible travel: speed between consecutive successful sign-ins
    travel_speed_kmh: float = Field(default=900.0, gt=0)
    travel_min_distance_km: float = Field(default=50.0, ge=0)
    new_device_window_days: int = Field(default=30, ge=1)
    # off hours: the hour of week (with the hours either side) holds less than this share of
    # the account's AND its peers' activity in the habit window
    off_hours_max_share: float = Field(default=0.002, ge=0, lt=1)
    # novelty and habit signals stay silent until the comparator has this many days of history
    min_history_days: int = Field(default=7, ge=0)
    # lateral movement: first-time hosts a user reaches in one day
    lateral_new_hosts: int = Field(default=3, ge=1)
    # password spray: one source failing against many distinct users within the window
    spray_window_minutes: int = Field(default=60, ge=1)
    spray_min_users: int = Field(default=10, ge=2)
    # ... and those failures are most of what the source did (a NAT'd office is not a spray)
    spray_min_failed_share: float = Field(default=0.5, gt=0, le=1)
    # brute force: many failures against one user within the window
    brute_force_window_minutes: int = Field(default=30, ge=1)
    brute_force_min_failures: int = Field(default=15, ge=2)
    # exfiltration: bytes out > median + k * MAD of the entity AND of its peers, and > the floor
    exfil_mad_multiplier: float = Field(default=8.0, gt=0)
    exfil_min_bytes: int = Field(default=25_000_000, ge=0)
    # rare process pair: seen on at most this many hosts of the fleet in the baseline window
    rare_pair_max_hosts: int = Field(default=1, ge=0)
    # ... and before the fleet has history (day one), a pair run today on at most
    # rare_pair_max_hosts of at least this many hosts: today's fleet stands in for the past
    rare_pair_min_fleet_hosts: int = Field(default=5, ge=2)
    iam_write_actions: tuple[str, ...] = DEFAULT_IAM_WRITE_ACTIONS
    # remote execution: a service install without a logon id (System 7045) counts for a network
    # logon on the same host this many minutes before it (what carries a logon id is matched
    # to its session exactly: jobs/stages/score/lateral.py)
    remote_execution_window_minutes: int = Field(default=10, ge=1)
    # inbound scan: an outside source probing many ports/hosts, mostly unanswered
    scan_min_targets: int = Field(default=20, ge=2)
    scan_min_failed_ratio: float = Field(default=0.8, gt=0, le=1)
    # unsolicited inbound: connections opened from outside to hosts not tagged internet-facing
    inbound_min_attempts: int = Field(default=1, ge=1)
    internet_facing_tag: str = "internet-facing"
    signal_points: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SIGNAL_POINTS))
    signal_max_factor: float = Field(default=1.5, ge=1)
    # model: points added by the champion's anomaly score above `model_floor` (0..1)
    model_points: float = Field(default=25.0, ge=0, le=100)
    model_floor: float = Field(default=0.6, ge=0, lt=1)
    model_name: str = "policylake-session-risk"
    experiment: str = "policylake-session-risk"
    # a model registry that cannot be reached: fail the score stage (exit 1), or score on the
    # signals alone and record the day's model evidence as degraded (ops.model_evidence)
    registry_unavailable: Literal["fail", "signals_only"] = "fail"
    # risk bands (lower bounds): high >= band_high, medium >= band_medium, else low
    band_high: int = Field(default=80, ge=1, le=100)
    band_medium: int = Field(default=50, ge=1, le=100)
    # entity risk: yesterday's risk counts half after `decay_half_life_days`
    decay_half_life_days: float = Field(default=3.0, gt=0)
    top_reasons: int = Field(default=3, ge=1)

    @field_validator("signal_points")
    @classmethod
    def _points(cls, value: dict[str, float]) -> dict[str, float]:
        merged = {**DEFAULT_SIGNAL_POINTS, **value}
        unknown = sorted(set(value) - set(DEFAULT_SIGNAL_POINTS))
        if unknown:
            raise ValueError(f"unknown signal(s) {', '.join(unknown)}")
        if any(v < 0 or v > 100 for v in merged.values()):
            raise ValueError("points must be within 0..100")
        return merged


class DetectionSettings(_Section):
    """Sigma rules run by the score stage (docs/detections.md)."""

    enabled: bool = True
    # Folders of Sigma rules (YAML), searched recursively; a relative path resolves against
    # the working directory, then the repository (its own `detections/`). Community rule
    # folders can be added here.
    rules_dirs: tuple[str, ...] = ("detections",)
    # Risk points of a detection by the rule's level
    level_points: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_LEVEL_POINTS))
    # A rule that fires on more hosts than this in one day is noisy across the fleet ...
    noisy_hosts: int = Field(default=5, ge=1)
    # ... and then adds at most these points: it raises attention, never blocks on its own
    # (must stay below scoring.band_high)
    noisy_max_points: float = Field(default=50.0, ge=0, le=100)

    @field_validator("level_points")
    @classmethod
    def _levels(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(DETECTION_LEVELS))
        if unknown:
            raise ValueError(
                f"unknown level(s) {', '.join(unknown)}; known: {', '.join(DETECTION_LEVELS)}"
            )
        merged = {**DEFAULT_LEVEL_POINTS, **value}
        if any(v < 0 or v > 100 for v in merged.values()):
            raise ValueError("points must be within 0..100")
        return merged


# What the recommend stage may run without when the configuration says so by name (it fails
# closed otherwise, docs/policies.md "Missing inputs fail closed").
MissingInput = Literal["identity_directory", "asset_inventory", "guardrails", "policies_dir"]


class PolicySettings(_Section):
    # Folder of policy YAML, guardrails.yaml and exceptions.yaml; a relative path resolves
    # against the working directory. Left at its default, a missing ./policies falls back to
    # the repository's own policies/; set explicitly, a missing folder stops recommend.
    policies_dir: str = "policies"
    # Inputs recommend may do without (each named on purpose; default: none, it refuses):
    # identity_directory, asset_inventory (privileged users, asset criticality), guardrails
    # (guardrails.yaml: built-in defaults instead), policies_dir (the bundled policies instead)
    allow_missing: tuple[MissingInput, ...] = ()


class MetricsSettings(_Section):
    """Thresholds of gold.metrics_daily (docs/metrics.md)."""

    # population stability index of a model feature / baseline statistic vs the reference
    psi_warning: float = Field(default=0.1, gt=0)
    psi_alert: float = Field(default=0.25, gt=0)
    psi_bins: int = Field(default=10, ge=2, le=100)
    # verdicts and incidents of this many days before the run date count in precision/recall
    verdict_window_days: int = Field(default=30, ge=1)
    # recommendations on an incident's entities up to this many days after it ended are
    # follow-up, neither true nor false positives (entity risk decays over days)
    incident_followup_days: int = Field(default=7, ge=0)
    # drift reference when no champion logged one: the trailing days before the run date
    drift_reference_days: int = Field(default=14, ge=1, le=366)
    # same_day_type: weekdays are compared with weekdays and weekend days with weekend days
    # (office activity falls ~80% at weekends); all_days: with every day of the reference
    drift_compare: Literal["same_day_type", "all_days"] = "same_day_type"

    @field_validator("psi_alert")
    @classmethod
    def _alert_above_warning(cls, value: float, info: Any) -> float:
        warning = info.data.get("psi_warning")
        if warning is not None and value < warning:
            raise ValueError(f"must be >= psi_warning ({warning})")
        return value


class ReportSettings(_Section):
    """The daily HTML report (`policylake report`)."""

    top_entities: int = Field(default=15, ge=1, le=500)
    history_days: int = Field(default=30, ge=1, le=366)


class FeedbackSettings(_Section):
    """Analyst decisions (docs/policies.md)."""

    # a decision dated later than now plus this is refused (clock skew between machines)
    max_clock_skew_minutes: int = Field(default=5, ge=0, le=60)


class PrivacySettings(_Section):
    """Pseudonymized BI tables (docs/privacy.md)."""

    # replace user, device and host ids in gold.session_scores and gold.entity_risk by keyed
    # HMAC-SHA256 tokens (u_..., h_..., d_...); the restricted ops.pseudonyms maps them back
    pseudonymize: bool = False
    # the environment variable holding the key (at least 32 bytes); never put the key in a file
    key_env: str = Field(default="POLICYLAKE_PSEUDONYM_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class AirflowSettings(_Section):
    """What the DAG files read when Airflow parses them (docs/airflow.md): dates, limits,
    deadline and notifications. Parse time reads this file ($POLICYLAKE_CONFIG) and the
    POLICYLAKE__AIRFLOW__... overrides, nothing else."""

    # first logical date of the daily and feedback DAGs (a backfill cannot reach earlier)
    start_date: date = date(2026, 10, 1)
    # true: unpausing creates one run per missed day since start_date (or the last run);
    # false: a new deployment runs only the latest day, earlier days by `backfill create`
    catchup: bool = False
    # the Airflow pool every Spark task runs in (its slots: how many JVMs at once)
    spark_pool: str = "policylake_spark"
    # per-source ingest tasks of one run at once (max_active_tis_per_dagrun)
    max_parallel_ingest: int = Field(default=2, ge=1, le=32)
    # a day's recommendations must be published by this UTC time of the next day, e.g. "06:00"
    # (a Deadline Alert on the daily run); null (the default): no deadline. Airflow 3.3.2's
    # `dags test` / dag.test() fails a successful run of a DAG with a deadline, hence opt-in
    publish_deadline: str | None = None
    # the daily run starts once every configured source delivered files for the day and this
    # long after the day ended (late files) ...
    late_files_grace_minutes: int = Field(default=120, ge=0)
    # ... or, if a source is still missing, this long after the day ended (validate marks it)
    late_files_max_wait_hours: int = Field(default=8, ge=1, le=48)
    # how the daily DAG runs a night: per_stage (the default: a Spark application per stage and
    # per source's ingest, each its own task to retry and to see; what a cluster wants) or
    # one_application (the whole night in one task and one Spark application: no JVM start
    # per stage, for small volumes; the stage journal still records every stage)
    daily_tasks: Literal["per_stage", "one_application"] = "per_stage"
    # notifications of failed tasks and missed deadlines: e-mail through the SMTP connection
    # (host, port, login, from_email in its extra); no recipients: log lines only
    notify_emails: tuple[str, ...] = ()
    smtp_conn_id: str = "smtp_default"

    @field_validator("publish_deadline")
    @classmethod
    def _hh_mm(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError("must be a UTC time like 06:00 (or null)")
        return value.strip() if value is not None else None


# A Delta interval as the table properties take it, without the word `interval`.
DURATION = re.compile(r"^(\d+) (second|minute|hour|day|week)s?$")
DURATION_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def duration_seconds(value: str) -> int:
    found = DURATION.match(value.strip().lower())
    if found is None:
        raise ValueError("must look like 30 days, 12 hours or 2 weeks")
    return int(found.group(1)) * DURATION_SECONDS[found.group(2)]


class MaintenanceSettings(_Section):
    """Delta table upkeep (`policylake maintain`, the weekly policylake_maintenance DAG)."""

    # how long each table's transaction log keeps a version (time travel, Change Data Feed
    # versions): the table property delta.logRetentionDuration
    log_retention: str = "30 days"
    # how long VACUUM keeps files a newer version replaced (delta.deletedFileRetentionDuration):
    # the Change Data Feed window consumers can rely on (docs/policies.md)
    deleted_file_retention: str = "7 days"
    # when the policylake_maintenance DAG runs (cron, UTC): Saturdays 03:00, after the night's run
    schedule: str = "0 3 * * 6"

    @field_validator("log_retention", "deleted_file_retention")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value.strip().lower()

    @field_validator("deleted_file_retention")
    @classmethod
    def _within_log(cls, value: str, info: Any) -> str:
        log_retention = info.data.get("log_retention")
        if log_retention is not None and duration_seconds(value) > duration_seconds(log_retention):
            raise ValueError(
                f"must not exceed log_retention ({log_retention}): a change feed version needs "
                "both its log entry and its files"
            )
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a five-field cron expression, e.g. 0 3 * * 6")
        return value.strip()

    def table_properties(self) -> dict[str, str]:
        """The retention properties every table gets."""
        return {
            "delta.logRetentionDuration": f"interval {self.log_retention}",
            "delta.deletedFileRetentionDuration": f"interval {self.deleted_file_retention}",
        }


# Credentials come from the environment or the standard provider chains, never from the config:
# a spark.conf key like these (Spark's own redaction pattern, plus the object stores' key and
# token settings) or a value that carries a secret (a URI with user:password@, a signed or
# token-bearing query string).
CREDENTIAL_KEY = re.compile(
    r"secret|password|token|access.key|account\.key"
    # GCS service-account private key (fs.gs.auth.service.account.private.key[.id])
    r"|private.key"
    # Azure SAS keys: fs.azure.sas.<container>.<account>..., fs.azure.sas.fixed.token
    r"|(?:^|\.)sas(?:\.|$)"
    # client-side / SSE-C encryption keys: fs.s3a.encryption.key, ...server-side-encryption.key
    r"|encryption[.-]key",
    re.IGNORECASE,
)
# ... except settings that name a mechanism, not a secret (a provider class, a token binding)
CREDENTIAL_KEY_EXEMPT = (".provider", ".provider.type", ".binding", ".enabled")
# scheme://user:password@ where the password may hold any character but `@` and spaces
# (a `/` in it is common in generated secrets, though RFC 3986 wants it percent-encoded)
URI_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^@\s]*@", re.IGNORECASE)
# a query string that carries a bearer token, a signature or a key (?token=..., SAS sig=...)
QUERY_SECRET = re.compile(
    r"[?&](?:token|access_token|id_token|refresh_token|sig|signature|x-amz-signature|"
    r"x-amz-security-token|x-amz-credential|x-goog-signature|x-goog-credential|"
    r"api[_-]?key|password|secret|client_secret)=",
    re.IGNORECASE,
)


def _secret_value(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(URI_WITH_PASSWORD.match(text) or QUERY_SECRET.search(text))


def _secret_values(tree: Any, prefix: str) -> list[str]:
    """Dotted keys of every string under `tree` that carries a secret (any depth)."""
    if isinstance(tree, dict):
        return [
            key
            for name, value in tree.items()
            for key in _secret_values(value, f"{prefix}.{name}" if prefix else str(name))
        ]
    if isinstance(tree, list | tuple):
        return [key for value in tree for key in _secret_values(value, prefix)]
    return [prefix] if _secret_value(tree) else []


def credential_settings(tree: dict[str, Any]) -> list[str]:
    """Keys of a raw config tree that hold credentials: spark.conf keys named like secrets,
    and values anywhere that carry one (a URI with a password, a token in a query string)."""
    found = []
    spark = tree.get("spark")
    conf = spark.get("conf") if isinstance(spark, dict) else None
    if isinstance(conf, dict):
        found += [
            f"spark.conf.{key}"
            for key in conf
            if CREDENTIAL_KEY.search(str(key))
            and not str(key).lower().endswith(CREDENTIAL_KEY_EXEMPT)
        ]
    found += _secret_values(tree, "")
    return sorted(set(found))


def refuse_credentials(tree: dict[str, Any], origin: str) -> None:
    """One-line ConfigError when `tree` (a config file or the overrides) carries a credential."""
    found = credential_settings(tree)
    if found:
        raise ConfigError(
            f"{origin}: '{found[0]}' looks like a credential; credentials are never read from "
            "the configuration: set them in the environment (AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, ...) or use a "
            "provider chain (spark.hadoop.fs.s3a.aws.credentials.provider)"
        )


class Settings(_Section):
    """The whole configuration; sections mirror `policylake.example.yaml`."""

    environment: Literal["dev", "test", "prod"] = "dev"
    spark: SparkSettings = SparkSettings()
    paths: PathSettings = PathSettings()
    geo: GeoSettings = GeoSettings()
    ingest: IngestSettings = IngestSettings()
    validation: ValidationSettings = ValidationSettings()
    baselines: BaselineSettings = BaselineSettings()
    scoring: ScoringSettings = ScoringSettings()
    detections: DetectionSettings = DetectionSettings()
    policy: PolicySettings = PolicySettings()
    feedback: FeedbackSettings = FeedbackSettings()
    metrics: MetricsSettings = MetricsSettings()
    report: ReportSettings = ReportSettings()
    privacy: PrivacySettings = PrivacySettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    airflow: AirflowSettings = AirflowSettings()

    @model_validator(mode="after")
    def _noisy_rules_never_block(self) -> Settings:
        if self.detections.noisy_max_points >= self.scoring.band_high:
            raise ValueError(
                f"detections.noisy_max_points ({self.detections.noisy_max_points:g}) must be "
                f"below scoring.band_high ({self.scoring.band_high}): a noisy rule alone must "
                "not reach the band that blocks"
            )
        return self

    def with_workdir(self, workdir: Path) -> Settings:
        """Root every relative path at `workdir` (the demo's layout): the `paths` and the
        geolocation databases."""

        def rooted(value: str) -> str:
            if "://" in value or Path(value).is_absolute():
                return value
            return str((workdir / value).resolve())

        paths = {key: rooted(value) for key, value in self.paths.model_dump().items()}
        geo = self.geo.model_copy(
            update={
                key: rooted(value)
                for key in ("database", "asn_database")
                if (value := getattr(self.geo, key)) is not None
            }
        )
        return self.model_copy(update={"paths": PathSettings(**paths), "geo": geo})


def _set_nested(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"environment override {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """`POLICYLAKE__SPARK__MASTER=spark://h:7077` -> {"spark": {"master": "spark://h:7077"}}.

    Values are parsed as YAML scalars so numbers and booleans keep their types.
    """
    env = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        if keys[:2] == ["spark", "conf"] and len(keys) > 2:
            # Spark keys contain dots and case: POLICYLAKE__SPARK__CONF__spark.x.y keeps its case.
            original = name[len(ENV_PREFIX) :].split("__", 2)[2]
            _set_nested(tree, ["spark", "conf", original], raw)
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_nested(tree, keys, value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(root)"
    if first["type"] == "extra_forbidden":
        return f"{origin}: unknown key '{key}'"
    return f"{origin}: invalid value for '{key}': {first['msg']}"


def load_settings(
    path: Path | str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Load `path` (else $POLICYLAKE_CONFIG, else ./policylake.yaml if present), apply env overrides.

    Uses `yaml.safe_load`, so YAML object tags (`!!python/...`) are rejected.
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    env = os.environ if environ is None else environ
    if path is None and env.get("POLICYLAKE_CONFIG"):
        path = env["POLICYLAKE_CONFIG"]
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        file = Path(path)
        origin = str(file)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(
                f"{file}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: top level must be a mapping of sections")
        refuse_credentials(loaded, str(file))
        data = loaded
    overrides = env_overrides(environ)
    refuse_credentials(overrides, "environment override (POLICYLAKE__...)")
    if overrides:
        origin = f"{origin} + environment"
    try:
        return Settings.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def load_rooted(
    path: Path | str | None = None,
    workdir: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """`load_settings`, with relative paths rooted at `workdir`, else at $POLICYLAKE_WORKDIR
    when it is set, else left relative to the current directory."""
    env = os.environ if environ is None else environ
    settings = load_settings(path, environ)
    root = (
        workdir
        if workdir is not None
        else (Path(env[WORKDIR_ENV]) if env.get(WORKDIR_ENV) else None)
    )
    return settings.with_workdir(root) if root is not None else settings
