"""Remote execution on the host a network logon reached: lateral movement seen from its target.

A remote-services technique (ATT&CK TA0008: PsExec-like services, WMI, WinRM, DCOM, remote
scheduled tasks, copying tools to an admin share) always starts with a network logon on the
target (Security 4624, logon type 3) and then acts inside that logon session. Windows stamps
what happens in the session with its logon id (`TargetLogonId` of the 4624; `SubjectLogonId`
of a service install 4697, a task 4698/4702, a share access 5145; `LogonId` of a Sysmon process
creation, `TargetLogonId` of a 4688), so the correlation is exact: what the session did, not
what happened nearby. The System log's service install (7045) carries no logon id; it counts
when it follows a network logon on the same host within `remote_execution_window_minutes`.

What the session did, from Microsoft's event documentation and ATT&CK:

- *execution* (`remote_execution`, absolute): a process started in the session (the parent
  tells the technique: WmiPrvSE.exe is WMI, T1047; wsmprovhost.exe is WinRM, T1021.006; a COM
  server started with `-Embedding`/`/automation`, such as Office or MMC, is DCOM, T1021.003;
  else Remote Services, T1021), a service installed (T1021.002, T1569.002), a scheduled task
  created or changed (T1053.005), or a file written to an administrative share (`C$`, `ADMIN$`:
  T1021.002, T1570 lateral tool transfer);
- *access* (`remote_service_access`, absolute, fewer points): the session opened the service
  control manager's or the task scheduler's named pipe (`svcctl`, `atsvc` on `IPC$`) and did
  nothing of the above: remote administration reads services that way every day.

Only logons of an account count: not the host's own machine account (`name$`), not the
built-in identities, not a loopback address. The signal is on the host (and on the acting
account's sign-in sessions that day); the reason names the account, where it came from and
what the session did, with the ATT&CK techniques.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.core.config import ScoringSettings
from jobs.stages.score.detections import acting_account
from jobs.stages.score.sessions import view_session_id
from jobs.stages.score.signals import make_signal, strongest

__all__ = ["REMOTE_KINDS", "remote_execution"]

SECURITY = "security"
SYSMON = "microsoft-windows-sysmon/operational"
SYSTEM = "system"
# Logon types of a network logon (3) and of a network logon with clear-text credentials (8).
NETWORK_LOGON_TYPES = (3, 8)

# kind -> (what the session did, ATT&CK techniques, execution?)
REMOTE_KINDS: dict[str, tuple[str, str, bool]] = {
    "wmi_process": ("started a process through WMI", "T1047", True),
    "winrm_process": ("started a process through WinRM", "T1021.006", True),
    "dcom_process": ("started a COM server through DCOM", "T1021.003", True),
    "process": ("started a process", "T1021", True),
    "service_install": ("installed a service", "T1021.002, T1569.002", True),
    "scheduled_task": ("created or changed a scheduled task", "T1053.005", True),
    "admin_share_write": ("wrote a file to an admin share", "T1021.002, T1570", True),
    "service_control": ("opened the service control manager", "T1021.002, T1569.002", False),
    "task_scheduler_pipe": ("opened the task scheduler", "T1053.005", False),
}
_MACHINE_IDS = ("0x0", "0x3e7", "0x3e4", "0x3e5")  # none, SYSTEM, NETWORK / LOCAL SERVICE
_COM_SERVERS = (
    "excel.exe", "winword.exe", "powerpnt.exe", "outlook.exe", "mmc.exe", "visio.exe",
    "msaccess.exe", "mspub.exe",
)  # fmt: skip


def _data(name: str) -> Column:
    return F.try_element_at(F.col("event_data"), F.lit(name))


def _logon_id(text: Column) -> Column:
    """A logon id as Windows prints it (`0x1a2b`), lower-cased; none for the machine's own."""
    value = F.lower(F.trim(text))
    return F.when(value.rlike("^0x[0-9a-f]+$") & ~value.isin(*_MACHINE_IDS), value)


def _exe(path: Column) -> Column:
    return F.lower(F.regexp_extract(F.coalesce(path, F.lit("")), r"([^\\/]+)$", 1))


def _logging_host() -> Column:
    """The host that logged the event: the target of a logon or share access, else the device."""
    logon = F.col("event_id").isin(4624, 5140, 5145) & (F.lower("channel") == SECURITY)
    return F.when(logon, F.coalesce("dst_host", "device_id")).otherwise(
        F.coalesce("device_id", "dst_host")
    )


def _process_kind() -> Column:
    parent = _exe(F.col("parent_process_name"))
    image = _exe(F.col("process_name"))
    line = F.lower(F.coalesce(F.col("command_line"), F.lit("")))
    com = line.contains("-embedding") | line.contains("/automation")
    return (
        F.when(parent == "wmiprvse.exe", F.lit("wmi_process"))
        .when((image == "wsmprovhost.exe") | (parent == "wsmprovhost.exe"), F.lit("winrm_process"))
        .when(image.isin(*_COM_SERVERS) & com, F.lit("dcom_process"))
        .when(parent.isin(*_COM_SERVERS), F.lit("dcom_process"))
        .otherwise(F.lit("process"))
    )


def _followups(windows: DataFrame) -> DataFrame:
    """What a logon session may have done: (run_date, host, event_time, logon_id, kind, what)."""
    channel = F.lower("channel")
    eid = F.col("event_id")
    security = channel == SECURITY
    share = F.lower(F.coalesce(_data("ShareName"), F.lit("")))
    target = F.coalesce(_data("RelativeTargetName"), F.lit(""))
    access = F.coalesce(_data("AccessList"), F.lit(""))
    writes = access.contains("%%4417") | access.contains("%%4418")  # WriteData, AppendData
    admin_share = share.rlike(r"\\(admin|[a-z])\$$")
    pipe = F.lower(F.trim(target))
    is_process = ((channel == SYSMON) & (eid == 1)) | (security & (eid == 4688))
    kind = (
        F.when(is_process, _process_kind())
        .when(security & (eid == 4697), F.lit("service_install"))
        .when((channel == SYSTEM) & (eid == 7045), F.lit("service_install"))
        .when(security & eid.isin(4698, 4702), F.lit("scheduled_task"))
        .when(security & (eid == 5145) & admin_share & writes & (target != ""), F.lit("admin_share_write"))
        .when(security & (eid == 5145) & share.endswith("\\ipc$") & (pipe == "svcctl"), F.lit("service_control"))
        .when(security & (eid == 5145) & share.endswith("\\ipc$") & (pipe == "atsvc"), F.lit("task_scheduler_pipe"))
    )  # fmt: skip
    logon_id = (
        F.when((channel == SYSMON) & (eid == 1), _logon_id(_data("LogonId")))
        .when(eid == 4688, F.coalesce(_logon_id(_data("TargetLogonId")), _logon_id(_data("SubjectLogonId"))))
        .when(security, _logon_id(_data("SubjectLogonId")))
    )  # fmt: skip
    what = F.coalesce(
        F.when(is_process, F.col("process_name")),
        _data("ServiceName"),
        _data("TaskName"),
        F.when(eid == 5145, F.concat_ws("\\", _data("ShareName"), target)),
    )
    return (
        windows.select(
            "run_date",
            _logging_host().alias("host"),
            "event_time",
            logon_id.alias("logon_id"),
            kind.alias("kind"),
            F.substring(what, 1, 120).alias("what"),
        )
        .where(F.col("kind").isNotNull() & F.col("host").isNotNull())
        # an event without a logon id is matched by time (the System log's 7045) only
        .where(F.col("logon_id").isNotNull() | (F.col("kind") == "service_install"))
    )


def _network_logons(windows: DataFrame) -> DataFrame:
    """Network logons of an account from another address: (run_date, host, logon_time, logon_id,
    account, src)."""
    src = F.coalesce(F.col("src_ip"), F.col("device_id"))
    logons = windows.where(
        (F.lower("channel") == SECURITY)
        & (F.col("event_id") == 4624)
        & F.col("logon_type").isin(*NETWORK_LOGON_TYPES)
        & ~F.coalesce(F.col("src_ip").startswith("127.") | (F.col("src_ip") == "::1"), F.lit(False))
    )
    return logons.select(
        "run_date",
        _logging_host().alias("host"),
        F.col("event_time").alias("logon_time"),
        _logon_id(_data("TargetLogonId")).alias("session_logon_id"),
        acting_account(logons).alias("account"),
        F.col("user_name_raw").alias("account_name"),
        src.alias("src"),
    ).where(F.col("account").isNotNull() & F.col("host").isNotNull())


def remote_execution(
    events: DataFrame, auth_sessions: DataFrame, cfg: ScoringSettings
) -> DataFrame:
    """`remote_execution` and `remote_service_access` signals: (run_date, session_id, signal) on
    the host a network logon reached, and on the logged-on account's sign-in sessions."""
    windows = events.where(F.col("source") == "windows")
    logons = _network_logons(windows)
    done = _followups(windows)
    window = int(cfg.remote_execution_window_minutes) * 60
    seconds = F.col("event_time").cast("long") - F.col("logon_time").cast("long")
    # what the logon session did: an equi-join on its logon id; an event without one (7045)
    # by time, so the host's many logons meet only its few such events
    by_session = logons.join(
        done.withColumnRenamed("logon_id", "session_logon_id"),
        ["run_date", "host", "session_logon_id"],
    )
    by_time = (
        logons.join(done.where(F.col("logon_id").isNull()), ["run_date", "host"])
        .where(seconds.between(-60, window))
        .drop("logon_id")
    )
    matched = by_session.unionByName(by_time)
    kinds = F.create_map(
        *[x for k, (text, _, _) in REMOTE_KINDS.items() for x in (F.lit(k), F.lit(text))]
    )
    attack = F.create_map(
        *[x for k, (_, tech, _) in REMOTE_KINDS.items() for x in (F.lit(k), F.lit(tech))]
    )
    executes = F.col("kind").isin(*[k for k, (_, _, e) in REMOTE_KINDS.items() if e])
    described = matched.select(
        "run_date", "host", "account", "account_name", "src", "logon_time",
        F.when(executes, F.lit(1)).otherwise(F.lit(0)).alias("_exec"),
        F.concat(kinds[F.col("kind")], F.lit(" ("), F.coalesce("what", F.lit("?")), F.lit(")")).alias("_did"),
        attack[F.col("kind")].alias("_attack"),
    )  # fmt: skip
    per_host = described.groupBy("run_date", "host").agg(
        F.max("_exec").alias("_exec"),
        F.sort_array(F.collect_set("_did")).alias("_did"),
        F.sort_array(F.collect_set("_attack")).alias("_attack"),
        F.sort_array(F.collect_set("account_name")).alias("_accounts"),
        F.sort_array(F.collect_set("account")).alias("_account_keys"),
        F.sort_array(F.collect_set(F.coalesce("src", F.lit("an unrecorded address")))).alias("_srcs"),
        F.min("logon_time").alias("_first"),
    )  # fmt: skip
    techniques = F.array_join(
        F.array_sort(F.array_distinct(F.split(F.array_join("_attack", ", "), ", "))), ", "
    )
    detail = F.concat(
        F.lit("network logon by "), F.array_join(F.slice("_accounts", 1, 3), ", "),
        F.lit(" from "), F.array_join(F.slice("_srcs", 1, 3), ", "),
        F.lit(" (first at "), F.date_format("_first", "HH:mm"), F.lit(" UTC), then the session "),
        F.array_join(F.slice("_did", 1, 4), "; "),
        F.when(F.size("_did") > 4, F.concat(F.lit(" and "), (F.size("_did") - 4).cast("string"), F.lit(" more"))).otherwise(F.lit("")),
        F.lit(" on "), F.col("host"), F.lit(" (ATT&CK "), techniques, F.lit(")"),
    )  # fmt: skip

    count = F.size("_did")
    windows_source = F.lit("windows")

    fired = per_host.select(
        "run_date",
        "host",
        "_account_keys",
        F.when(
            F.col("_exec") == 1,
            make_signal("remote_execution", count, F.lit(1), cfg, detail, windows_source, False),
        )
        .otherwise(
            make_signal(
                "remote_service_access", count, F.lit(1), cfg, detail, windows_source, False
            )
        )
        .alias("signal"),
    )
    on_host = fired.select(
        "run_date",
        view_session_id(F.col("run_date"), "host", F.col("host")).alias("session_id"),
        "signal",
    )
    sessions = auth_sessions.select("run_date", F.col("user_key").alias("account"), "session_id")
    on_account = (
        fired.select("run_date", F.explode("_account_keys").alias("account"), "signal")
        .join(sessions, ["run_date", "account"])
        .select("run_date", "session_id", "signal")
    )
    return on_host.unionByName(strongest(on_account))
