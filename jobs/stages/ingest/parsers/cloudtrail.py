"""AWS CloudTrail: one record per line, or an S3-delivery line `{"Records": [...]}`."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.stages.ingest.parsing import (
    EMPTY_RECORDS,
    Spec,
    finish_bronze,
    first_of,
    line_text,
    with_json,
)

# ---------------------------------------------------------------------------------------
# cloudtrail: one record per line, or an S3-delivery line {"Records": [...]}
# ---------------------------------------------------------------------------------------

CLOUDTRAIL_SPEC: Spec = {
    "eventVersion": None,
    "eventTime": None,
    "@timestamp": None,
    "eventSource": None,
    "eventName": None,
    "awsRegion": None,
    "sourceIPAddress": None,
    "userAgent": None,
    "userIdentity": {
        "type": None,
        "principalId": None,
        "arn": None,
        "accountId": None,
        "accessKeyId": None,
        "userName": None,
    },
    "requestParameters": None,
    "responseElements": None,
    "errorCode": None,
    "errorMessage": None,
    "requestID": None,
    "eventID": None,
    "eventType": None,
    "readOnly": None,
    "recipientAccountId": None,
}


def parse_cloudtrail(lines: DataFrame) -> DataFrame:
    """CloudTrail records. A `{"Records": [...]}` line yields one row per record: the rows
    share the line's `_line`, and `raw` holds that record's JSON."""
    df = lines.withColumn("__line", line_text(F.col("raw")))
    df = with_json(df, {**CLOUDTRAIL_SPEC, "Records": [None]}, prefix="__l")
    records = F.col("__lj")["Records"]
    is_delivery = F.col("__lreason").isNull() & records.isNotNull()
    df = df.withColumn(
        "__record",
        F.explode_outer(
            F.when(is_delivery & (F.size(records) > 0), records).otherwise(
                F.array(F.lit(None).cast("string"))
            )
        ),
    )
    # Records of a delivery line are parsed as lines of their own.
    df = with_json(df, CLOUDTRAIL_SPEC, line="__record", prefix="__r")
    df = df.select(
        "*",
        F.when(F.col("__record").isNotNull(), F.col("__rj"))
        .otherwise(F.col("__lj").dropFields("Records"))
        .alias("__j"),
        F.when(F.col("__record").isNotNull(), F.col("__rreason"))
        .when(is_delivery, F.lit(EMPTY_RECORDS))
        .otherwise(F.col("__lreason"))
        .alias("__reason"),
        F.when(F.col("__record").isNotNull(), F.col("__rshape_errors"))
        .otherwise(F.col("__lshape_errors"))
        .alias("__shape_errors"),
    )
    j = F.col("__j")
    u = j["userIdentity"]
    texts = {
        "event_id": j["eventID"],
        "event_name": j["eventName"],
        "event_source": j["eventSource"],
        "event_type": j["eventType"],
        "aws_region": j["awsRegion"],
        "source_ip": j["sourceIPAddress"],
        "user_agent": j["userAgent"],
        "identity_type": u["type"],
        "principal_id": u["principalId"],
        "identity_arn": u["arn"],
        "account_id": u["accountId"],
        "access_key_id": u["accessKeyId"],
        "user_name": u["userName"],
        "error_code": j["errorCode"],
        "error_message": j["errorMessage"],
        "request_parameters": j["requestParameters"],
        "response_elements": j["responseElements"],
        "read_only": j["readOnly"],
        "recipient_account_id": j["recipientAccountId"],
    }
    return finish_bronze(
        df,
        "cloudtrail",
        texts,
        first_of(j["eventTime"], j["@timestamp"]),
        raw=F.coalesce(F.col("__record"), F.col("raw")),
    )
