"""sshd syslog lines (BSD or RFC 3339 timestamps), one message kind per regex."""

from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.stages.ingest.parsing import (
    NOT_A_SYSLOG_LINE,
    NOT_AN_SSHD_LINE,
    finish_bronze,
    line_text,
    shared_reason,
)

# ---------------------------------------------------------------------------------------
# sshd: BSD syslog or RFC 3339 syslog lines
# ---------------------------------------------------------------------------------------

# [<PRI>] [timestamp] host program[pid]: message. The timestamp is optional so a line whose
# stamp was lost still parses (event_time_raw null, for validation to flag); anything that
# looks like a stamp is kept as text, valid or not.
# (?s): a CR, NEL or U+2028 inside a line is an ordinary character (Java's `.` would stop at
# it, and a user name carrying one would turn a failed login into "not a syslog line").
SYSLOG_LINE = (
    r"(?s)^(?:<\d{1,3}>)?"
    r"(?:([A-Z][a-z]{2} +\d{1,2} +\d{1,2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}T\S+) +)?"
    r"(\S+) +([^\s\[\]:]+)(?:\[(\d+)\])?: ?(.*)$"
)
# sshd itself, OpenSSH >= 9.8's per-session binaries, and old PAM-tagged lines.
SSHD_PROGRAM = r"^(?:\S*/)?sshd(?:-session|-auth)?(?:\(pam_unix\))?$"

# rsyslog's "message repeated 5 times: [ Failed password for ...]" stands for the inner message.
_REPEATED = r"(?s)^message repeated \d+ times: \[ ?(.*?)\]?$"

# One regex per message kind, rewritten to the same group layout so one `regexp_replace`
# and a `split` give every field: user, src_ip, src_port, auth_method, invalid marker.
_SEP = "\x01"
SSHD_MESSAGES: dict[str, tuple[str, str]] = {
    "accepted": (r"^Accepted (\S+) for (.+?) from (\S+) port (\d+).*$", "$2|$3|$4|$1|"),
    "failed": (
        r"^Failed (\S+) for (invalid user )?(.*?) from (\S+) port (\d+).*$",
        "$3|$4|$5|$1|$2",
    ),
    "invalid_user": (r"^Invalid user (.*?) from (\S+)(?: port (\d+))?.*$", "$1|$2|$3||invalid"),
    "pam_auth_failure": (
        r"^(?:(?=.*?\buser=(\S+)))?(?:(?=.*?\brhost=(\S+)))?.*$",
        "$1|$2|||",
    ),
    "session_opened": (r"^.*?session opened for user ([^\s(]+).*$", "$1||||"),
    "session_closed": (r"^.*?session closed for user ([^\s(]+).*$", "$1||||"),
    "connection_closed": (
        r"^Connection (?:closed|reset) by (?:(invalid|authenticating) user (.*?) )?(\S+)"
        r"(?: port (\d+))?.*$",
        "$2|$3|$4||$1",
    ),
    "received_disconnect": (r"^Received disconnect from (\S+?)(?: port (\d+))?:.*$", "|$1|$2||"),
    "disconnected": (
        r"^Disconnected from (?:(invalid |authenticating )?user (\S+) )?(\S+) port (\d+).*$",
        "$2|$3|$4||$1",
    ),
    "break_in_attempt": (
        r"^(?:.*?\[([0-9A-Fa-f.:]+)\]|Address (\S+) maps to).*$",
        "|$1$2|||",
    ),
}


SSHD_MESSAGES = {
    kind: ("(?s)" + pattern, layout) for kind, (pattern, layout) in SSHD_MESSAGES.items()
}


def _split_groups(text: Column, pattern: str, layout: str, limit: int) -> Column:
    """[""] + the layout's fields when `pattern` matches `text`, else [text].

    One `regexp_replace` and a `split` on `_SEP`; for the rare text that itself contains
    `_SEP` (a control character an attacker can put in a user name), one `regexp_extract`
    per group instead, so the text cannot shift the fields (user into address).
    """
    fast = F.split(F.regexp_replace(text, pattern, _SEP + layout.replace("|", _SEP)), _SEP, limit)
    fields = [
        F.concat(
            F.lit(""), *[F.regexp_extract(text, pattern, int(g)) for g in re.findall(r"\$(\d)", f)]
        )
        for f in layout.split("|")
    ]
    safe = F.when(text.rlike(pattern), F.array(F.lit(""), *fields)).otherwise(F.array(text))
    return F.when(text.contains(_SEP), safe).otherwise(fast)


def _groups(message: Column, kind: str) -> Column:
    pattern, layout = SSHD_MESSAGES[kind]
    return _split_groups(message, pattern, layout, 6)


def parse_sshd(lines: DataFrame) -> DataFrame:
    """sshd syslog lines; lines of other programs are `unparseable` ("not an sshd syslog line")."""
    line = F.col("__line")
    df = lines.select("*", line_text(F.col("raw")).alias("__line"))
    # One regex pass splits the header: [marker, ts, host, program, pid, message].
    header = "|".join(f"${i}" for i in range(1, 6))
    df = df.select(
        "*",
        F.when(line.rlike(SYSLOG_LINE), _split_groups(line, SYSLOG_LINE, header, 6)).alias("__h"),
    )
    h = F.col("__h")
    program = F.get(h, 3)
    raw_msg = F.get(h, 5)
    pre = shared_reason()
    df = df.select(
        "*",
        F.when(pre.isNotNull(), pre)
        .when(h.isNull(), F.lit(NOT_A_SYSLOG_LINE))
        .when(~program.rlike(SSHD_PROGRAM), F.lit(NOT_AN_SSHD_LINE))
        .alias("__reason"),
        F.array().cast("array<string>").alias("__shape_errors"),
        F.when(raw_msg.startswith("error: "), F.substring(raw_msg, 8, 1 << 30))
        .when(raw_msg.startswith("message repeated "), F.regexp_extract(raw_msg, _REPEATED, 1))
        .otherwise(raw_msg)
        .alias("__msg"),
    )
    m = F.col("__msg")
    pam = program.contains("pam_unix") | m.startswith("pam_unix(sshd:")
    kind = (
        F.when(F.col("__reason").isNotNull(), F.lit(None))
        .when(m.startswith("Accepted "), "accepted")
        .when(m.startswith("Failed "), "failed")
        .when(m.startswith("Invalid user "), "invalid_user")
        .when(pam & m.contains("authentication failure;"), "pam_auth_failure")
        .when(pam & m.contains("session opened for user "), "session_opened")
        .when(pam & m.contains("session closed for user "), "session_closed")
        .when(
            m.startswith("Connection closed by ") | m.startswith("Connection reset by "),
            "connection_closed",
        )
        .when(m.startswith("Received disconnect from "), "received_disconnect")
        .when(m.startswith("Disconnected from "), "disconnected")
        .when(m.contains("POSSIBLE BREAK-IN ATTEMPT"), "break_in_attempt")
        .otherwise("other")
    )
    df = df.select("*", kind.alias("__kind"))
    k = F.col("__kind")
    groups = F.lit(None).cast("array<string>")
    for name in SSHD_MESSAGES:
        groups = F.when(k == name, _groups(m, name)).otherwise(groups)
    df = df.select("*", groups.alias("__g"))
    g = F.col("__g")

    def group(i: int) -> Column:
        # Element 0 is empty when the kind's regex matched (the replacement starts with _SEP).
        value = F.get(g, i)
        return F.when((F.get(g, 0) == "") & (value != ""), value)

    event = F.when(k.isin("received_disconnect", "disconnected"), F.lit("disconnect")).otherwise(k)
    user = F.when(k == "invalid_user", F.get(g, 1)).otherwise(group(1))
    marker = group(5)
    invalid_user = (
        F.when(k == "accepted", F.lit(False))
        .when(k.isin("invalid_user"), F.lit(True))
        .when(k == "failed", marker.isNotNull())
        .when(
            k.isin("connection_closed", "disconnected") & user.isNotNull(),
            F.coalesce(marker.startswith("invalid"), F.lit(False)),
        )
    )
    texts = {
        "host": F.get(h, 2),
        "pid": F.nullif(F.get(h, 4), F.lit("")),
        "message": raw_msg,
        "ssh_event": event,
        "auth_method": group(4),
        "user": user,
        "src_ip": group(2),
        "src_port": group(3),
        "invalid_user": invalid_user.cast("string"),
    }
    return finish_bronze(df, "sshd", texts, F.nullif(F.get(h, 1), F.lit("")))
