"""AWS CloudTrail management events (`raw/cloudtrail/<date>/cloudtrail.jsonl`).

Normal behaviour: DevOps engineers and sysadmins (through IAM Identity Center roles) and
service accounts (IAM users with access keys) make mostly read-only calls; deploy/ETL
jobs write to S3, Lambda and ECS. Nobody normally writes IAM. Most lines hold one record;
a few hold an S3-delivery `{"Records": [...]}` batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from jobs.generate.activity import DayContext, expand_seeds, rate_vector
from jobs.generate.clock import US_PER_SECOND, iso_utc_s
from jobs.generate.feeds import CLOUDTRAIL_FILE
from jobs.generate.organisation import AWS_ACCOUNT, SITES, Account, Organisation
from jobs.generate.seeding import stable_int
from jobs.generate.stream import BENIGN, SCENARIO, UNSPOILED, Entry

__all__ = ["IAM_WRITES", "CloudTrailEmitter"]

CALLS_PER_DAY = {"admin": 25.0, "human": 25.0, "service": 38.0}
RECORDS_LINE_SHARE = 0.03  # lines written in the S3 delivery shape

# (eventSource, eventName, readOnly)
READS = [
    ("ec2.amazonaws.com", "DescribeInstances", True),
    ("ec2.amazonaws.com", "DescribeSecurityGroups", True),
    ("ec2.amazonaws.com", "DescribeVolumes", True),
    ("s3.amazonaws.com", "ListBuckets", True),
    ("s3.amazonaws.com", "GetBucketLocation", True),
    ("iam.amazonaws.com", "GetUser", True),
    ("iam.amazonaws.com", "ListRoles", True),
    ("sts.amazonaws.com", "GetCallerIdentity", True),
    ("monitoring.amazonaws.com", "DescribeAlarms", True),
    ("logs.amazonaws.com", "DescribeLogGroups", True),
    ("lambda.amazonaws.com", "ListFunctions20150331", True),
    ("ecs.amazonaws.com", "DescribeServices", True),
    ("rds.amazonaws.com", "DescribeDBInstances", True),
    ("kms.amazonaws.com", "Decrypt", True),
    ("ssm.amazonaws.com", "GetParameter", True),
]
WRITES = {
    "svc-deploy": [("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", False), ("ecs.amazonaws.com", "UpdateService", False), ("s3.amazonaws.com", "PutObject", False)],
    "svc-ci": [("ecr.amazonaws.com", "PutImage", False), ("s3.amazonaws.com", "PutObject", False)],
    "svc-etl": [("s3.amazonaws.com", "PutObject", False), ("glue.amazonaws.com", "StartJobRun", False)],
    "svc-monitoring": [("monitoring.amazonaws.com", "PutMetricData", False)],
    "human": [("ec2.amazonaws.com", "StartInstances", False), ("ec2.amazonaws.com", "StopInstances", False), ("ssm.amazonaws.com", "StartSession", False)],
}  # fmt: skip
IAM_WRITES = (
    "CreateAccessKey",
    "AttachUserPolicy",
    "PutUserPolicy",
    "CreateUser",
    "AttachRolePolicy",
)
REGIONS = {0: "us-east-1", 1: "eu-west-2", 2: "eu-central-1", 3: "ap-south-1"}
CLI_AGENT = "aws-cli/2.15.30 Python/3.11.8 Windows/10 exe/AMD64 prompt/off command/{command}"
BOTO_AGENT = "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#5.15.0-1057-aws md/arch#x86_64 lang/python#3.11.8 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.69"


class CloudTrailEmitter:
    """The organisation trail of one AWS account."""

    source = "cloudtrail"

    def __init__(self, shard: str, org: Organisation) -> None:
        self.shard = shard
        self.org = org
        self.file = CLOUDTRAIL_FILE

    def files_for_day(self, ctx: DayContext) -> list[str]:
        return [self.file]

    def header(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def footer(self, file: str, ctx: DayContext) -> list[str]:
        return []

    def benign(self, ctx: DayContext) -> Iterator[tuple[list[Entry], int]]:
        org = self.org
        rates = rate_vector(org, CALLS_PER_DAY, ctx.scale)
        for a in org.accounts:
            if not a.cloud:
                rates[a.index] = 0.0
        batch: list[tuple[int, dict[str, object]]] = []

        def expand(who: int, ts: int, r: list[float], _z: list[float]) -> list[Entry]:
            nonlocal batch
            account = org.accounts[who]
            record = self.benign_record(ctx, account, ts, r)
            if batch or r[6] < RECORDS_LINE_SHARE / 3:
                batch.append((ts, record))
                if len(batch) < 2 + int(r[7] * 3):
                    return []
                line = json.dumps({"Records": [rec for _, rec in batch]}, separators=(",", ":"))
                first = batch[0][1]
                batch = []
                # delivered once its last record is in; never spoiled (one line, many events)
                return [(ts, ctx.next_seq(), self.file, line, UNSPOILED, str(first["eventID"]))]
            line = json.dumps(record, separators=(",", ":"))
            return [(ts, ctx.next_seq(), self.file, line, BENIGN, str(record["eventID"]))]

        yield from expand_seeds(ctx, rates, expand, randoms=8, lookback_us=0)
        if batch:
            line = json.dumps({"Records": [rec for _, rec in batch]}, separators=(",", ":"))
            yield (
                [
                    (
                        batch[-1][0],
                        ctx.next_seq(),
                        self.file,
                        line,
                        UNSPOILED,
                        str(batch[0][1]["eventID"]),
                    )
                ],
                batch[-1][0],
            )
            batch = []

    def scenario(self, ctx: DayContext, ts_us: int, spec: dict[str, object]) -> list[Entry]:
        account = self.org.accounts[int(spec["account"])]  # type: ignore[call-overload]
        record = self.record(
            ctx, account, ts_us,
            event_source=str(spec["event_source"]), event_name=str(spec["event_name"]),
            read_only=bool(spec.get("read_only", False)), source_ip=str(spec["source_ip"]),
            request=spec.get("request"), response=spec.get("response"),  # type: ignore[arg-type]
            error=None, agent=str(spec.get("agent") or ""),
        )  # fmt: skip
        return [
            (
                ts_us,
                ctx.next_seq(),
                self.file,
                json.dumps(record, separators=(",", ":")),
                SCENARIO,
                str(record["eventID"]),
            )
        ]

    # -- behaviour -----------------------------------------------------------------------

    def usual_ip(self, account: Account, u: float) -> str:
        if account.account_type == "service" or u < 0.7:
            ips = self.org.egress[account.site]
        elif u < 0.85 or not account.home_ips:
            ips = self.org.vpn[account.site]
        else:
            ips = account.home_ips
        return ips[int(u * 1000) % len(ips)]

    def benign_record(
        self, ctx: DayContext, account: Account, ts: int, r: list[float]
    ) -> dict[str, object]:
        key = "human" if account.account_type != "service" else account.sam.rstrip("0123456789")
        writes = WRITES.get(key, [])
        if writes and r[0] < (0.35 if account.account_type == "service" else 0.08):
            source, name, read_only = writes[int(r[1] * 97) % len(writes)]
        else:
            source, name, read_only = READS[int(r[1] * 9973) % len(READS)]
        error = "AccessDenied" if r[2] < 0.015 else None
        return self.record(
            ctx, account, ts, event_source=source, event_name=name, read_only=read_only,
            source_ip=self.usual_ip(account, r[3]), request=self._request(name, account, r[4]),
            response=None, error=error, agent="",
        )  # fmt: skip

    @staticmethod
    def _request(name: str, account: Account, u: float) -> dict[str, object] | None:
        bucket = f"corp-{account.department}-data"
        if name in ("PutObject", "GetBucketLocation"):
            return (
                {"bucketName": bucket, "key": f"exports/{int(u * 1e6):06d}.parquet"}
                if name == "PutObject"
                else {"bucketName": bucket}
            )
        if name == "DescribeInstances":
            return {"instancesSet": {}, "filterSet": {}}
        if name in ("StartInstances", "StopInstances"):
            return {
                "instancesSet": {
                    "items": [{"instanceId": f"i-0{stable_int((account.sam, 'i')) % 16**15:015x}"}]
                }
            }
        if name == "GetParameter":
            return {"name": f"/{account.department}/config/endpoint", "withDecryption": False}
        if name == "Decrypt":
            return {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}
        return None

    # -- format --------------------------------------------------------------------------

    def identity(self, account: Account) -> dict[str, object]:
        if account.account_type == "service":
            return {
                "type": "IAMUser",
                "principalId": f"AIDA{stable_int(('p', account.sam)):08X}{stable_int(account.sam) % 10**8:08d}",
                "arn": f"arn:aws:iam::{AWS_ACCOUNT}:user/{account.sam}",
                "accountId": AWS_ACCOUNT,
                "accessKeyId": f"AKIA{stable_int(('k', account.sam)):08X}{stable_int(('k2', account.sam)):08X}",
                "userName": account.sam,
            }
        role = "AWSReservedSSO_" + (
            "PlatformAdmin_5d7b2f1e" if account.privileged else "DevOps_8c1a9e44"
        )
        session = account.upn
        return {
            "type": "AssumedRole",
            "principalId": f"AROA{stable_int(('r', role)):08X}EXAMPLE:{session}",
            "arn": f"arn:aws:sts::{AWS_ACCOUNT}:assumed-role/{role}/{session}",
            "accountId": AWS_ACCOUNT,
            "accessKeyId": f"ASIA{stable_int(('a', account.sam)):08X}{stable_int(('a2', account.sam)):08X}",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": f"AROA{stable_int(('r', role)):08X}EXAMPLE",
                                  "arn": f"arn:aws:iam::{AWS_ACCOUNT}:role/aws-reserved/sso.amazonaws.com/{role}",
                                  "accountId": AWS_ACCOUNT, "userName": role},
                "attributes": {"creationDate": "", "mfaAuthenticated": "false"},
            },
        }  # fmt: skip

    def record(
        self, ctx: DayContext, account: Account, ts: int, *, event_source: str, event_name: str,
        read_only: bool, source_ip: str, request: dict[str, object] | None,
        response: dict[str, object] | None, error: str | None, agent: str,
    ) -> dict[str, object]:  # fmt: skip
        identity = self.identity(account)
        if "sessionContext" in identity:
            ctx_attrs = identity["sessionContext"]["attributes"]  # type: ignore[index]
            ctx_attrs["creationDate"] = iso_utc_s(ts - (ts % (3600 * US_PER_SECOND)))
        if not agent:
            if account.account_type == "service":
                agent = BOTO_AGENT
            else:
                service = event_source.split(".", 1)[0]
                agent = (
                    CLI_AGENT.format(command=f"{service}.{event_name.lower()}")
                    if stable_int((account.sam, event_name)) % 3
                    else "console.amazonaws.com"
                )
        record: dict[str, object] = {
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": iso_utc_s(ts),
            "eventSource": event_source,
            "eventName": event_name,
            "awsRegion": "us-east-1"
            if event_source in ("iam.amazonaws.com", "sts.amazonaws.com")
            else REGIONS[account.site % len(SITES)],
            "sourceIPAddress": source_ip,
            "userAgent": agent,
            "requestParameters": request,
            "responseElements": response,
            "requestID": ctx.ids.uuid4(),
            "eventID": ctx.ids.uuid4(),
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": event_name not in ("PutObject", "GetObject"),
            "recipientAccountId": AWS_ACCOUNT,
            "eventCategory": "Management"
            if event_name not in ("PutObject", "GetObject")
            else "Data",
        }
        if error:
            record["errorCode"] = error
            record["errorMessage"] = (
                f"User: {identity['arn']} is not authorized to perform: {event_source.split('.')[0]}:{event_name}"
            )
        return record
