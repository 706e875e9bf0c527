"""Identity provider sign-ins: the Okta System Log event shape."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.stages.ingest.parsing import Spec, finish_bronze, start_json

# ---------------------------------------------------------------------------------------
# idp: Okta System Log
# ---------------------------------------------------------------------------------------

_OKTA_REF = {"id": None, "type": None, "alternateId": None, "displayName": None}
OKTA_SPEC: Spec = {
    "uuid": None,
    "published": None,
    "eventType": None,
    "severity": None,
    "displayMessage": None,
    "actor": _OKTA_REF,
    "client": {
        "ipAddress": None,
        "device": None,
        "zone": None,
        "userAgent": {"rawUserAgent": None, "os": None, "browser": None},
    },
    "device": {"id": None, "name": None, "os_platform": None},
    "outcome": {"result": None, "reason": None},
    "target": [_OKTA_REF],
    "authenticationContext": {"externalSessionId": None, "authenticationStep": None},
    "transaction": {"id": None, "type": None},
}


def parse_idp(lines: DataFrame) -> DataFrame:
    """Okta System Log events; `target_app` is the first target of type AppInstance."""
    df = start_json(lines, OKTA_SPEC)
    j = F.col("__j")
    app = F.get(F.filter(j["target"], lambda t: t["type"] == "AppInstance"), 0)
    texts = {
        "uuid": j["uuid"],
        "event_type": j["eventType"],
        "severity": j["severity"],
        "display_message": j["displayMessage"],
        "actor_id": j["actor"]["id"],
        "actor_type": j["actor"]["type"],
        "actor_alternate_id": j["actor"]["alternateId"],
        "actor_display_name": j["actor"]["displayName"],
        "client_ip": j["client"]["ipAddress"],
        "user_agent": j["client"]["userAgent"]["rawUserAgent"],
        "client_os": j["client"]["userAgent"]["os"],
        "client_browser": j["client"]["userAgent"]["browser"],
        "client_device": j["client"]["device"],
        "device_id": j["device"]["id"],
        "device_name": j["device"]["name"],
        "outcome_result": j["outcome"]["result"],
        "outcome_reason": j["outcome"]["reason"],
        "target_app": app["displayName"],
        "target_app_id": app["id"],
        "external_session_id": j["authenticationContext"]["externalSessionId"],
        "transaction_id": j["transaction"]["id"],
    }
    return finish_bronze(df, "idp", texts, j["published"])
