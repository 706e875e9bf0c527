"""The outcome vocabulary: every feed's success/failure token -> success | failure | unknown."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# ---------------------------------------------------------------------------------------
# Outcome vocabulary: every feed's token (lower-cased) -> success | failure | unknown
# ---------------------------------------------------------------------------------------

STATUS_VOCABULARY: dict[str, str] = {
    # Okta outcome.result and the spellings feeds use
    **dict.fromkeys(
        [
            "success",
            "successful",
            "succeeded",
            "allow",
            "allowed",
            "granted",
            "ok",
            "pass",
            "passed",
        ],
        "success",
    ),
    **dict.fromkeys(
        ["failure", "failed", "fail", "deny", "denied", "blocked", "rejected", "reject", "error"],
        "failure",
    ),
    **dict.fromkeys(["challenge", "skipped", "unknown", "pending"], "unknown"),
    # Windows EventType (NXLog); Status/SubStatus codes are read by `_hex_status`
    "audit_success": "success",
    "audit_failure": "failure",
    # sshd message kinds (jobs.stages.ingest.stage)
    "accepted": "success",
    "session_opened": "success",
    "session_closed": "success",
    "invalid_user": "failure",
    "pam_auth_failure": "failure",
    "connection_closed": "unknown",
    "disconnect": "unknown",
    "break_in_attempt": "unknown",
    "other": "unknown",
    # Zeek conn_state: a handshake completed (data could flow) vs never answered / refused
    **dict.fromkeys(["sf", "s1", "s2", "s3", "rsto", "rstr"], "success"),
    **dict.fromkeys(["s0", "rej", "rstos0", "rstrh", "sh", "shr"], "failure"),
    "oth": "unknown",
    # DNS rcode_name
    "noerror": "success",
    **dict.fromkeys(
        [
            "formerr",
            "servfail",
            "nxdomain",
            "notimp",
            "refused",
            "yxdomain",
            "yxrrset",
            "nxrrset",
            "notauth",
            "notzone",
        ],
        "failure",
    ),
}


def _hex_status(token: Column) -> Column:
    """NTSTATUS / Kerberos codes: 0x0 is success, any other code a failure."""
    t = F.lower(F.trim(token))
    return F.when(t.rlike(r"^0x0+$"), F.lit("success")).when(
        t.rlike(r"^0x[0-9a-f]+$"), F.lit("failure")
    )


def normalize_status(token: Column) -> Column:
    """success | failure | unknown for any vendor token (null token: unknown)."""
    vocabulary = F.create_map(*[F.lit(x) for kv in sorted(STATUS_VOCABULARY.items()) for x in kv])
    return F.coalesce(_hex_status(token), vocabulary[F.lower(F.trim(token))], F.lit("unknown"))


# ---------------------------------------------------------------------------------------
# Routing: quarantine, duplicates, events
# ---------------------------------------------------------------------------------------


def dash_null(col: Column) -> Column:
    t = F.trim(col)
    return F.when(t.isin("", "-"), F.lit(None).cast("string")).otherwise(t)
