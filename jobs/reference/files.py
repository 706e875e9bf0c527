"""Reference data the stages join against: identity directory, asset inventory, network ranges.

Files live under `paths.reference_root` (the generator writes them; in production they are
exports of the directory and the CMDB). Each is read with an explicit schema.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.core.config import Settings
from jobs.core.errors import ReferenceDataError

IDENTITY_DIRECTORY = StructType.fromJson(
    {
        "type": "struct",
        "fields": [
            {"name": n, "type": "string", "nullable": True, "metadata": {}}
            for n in (
                "user_id",
                "display_name",
                "upn",
                "sam_account",
                "email",
                "aliases",
                "department",
                "role",
                "peer_group",
                "account_type",
                "privileged",
                "home_country",
                "home_city",
                "timezone",
                "work_start_hour",
                "work_end_hour",
                "devices",
                "manager",
                "created",
            )
        ],
    }
)

ASSET_INVENTORY = StructType.fromJson(
    {
        "type": "struct",
        "fields": [
            {"name": n, "type": "string", "nullable": True, "metadata": {}}
            for n in (
                "asset_id",
                "fqdn",
                "ip",
                "asset_type",
                "os",
                "criticality",
                "tags",
                "owner",
                "site",
                "timezone",
            )
        ],
    }
)

NETWORK_RANGES = StructType.fromJson(
    {
        "type": "struct",
        "fields": [
            {"name": n, "type": "string", "nullable": True, "metadata": {}}
            for n in ("cidr", "kind", "site", "country")
        ],
    }
)


def _read_csv(spark: SparkSession, settings: Settings, name: str, schema: StructType) -> DataFrame:
    path = f"{settings.paths.reference_root.rstrip('/')}/{name}"
    try:
        return spark.read.option("header", True).option("mode", "FAILFAST").schema(schema).csv(path)
    except Exception as exc:  # AnalysisException: path does not exist
        raise ReferenceDataError(
            f"reference file missing or unreadable: {path} ({type(exc).__name__})"
        ) from None


def identity_directory(spark: SparkSession, settings: Settings) -> DataFrame:
    """One row per account; `privileged` as boolean, `aliases`/`devices` as arrays."""
    df = _read_csv(spark, settings, "identity_directory.csv", IDENTITY_DIRECTORY)
    return (
        df.withColumn("privileged", F.lower("privileged") == "true")
        .withColumn("aliases", F.split(F.coalesce("aliases", F.lit("")), r"\|"))
        .withColumn("devices", F.split(F.coalesce("devices", F.lit("")), r"\|"))
        .withColumn("work_start_hour", F.col("work_start_hour").cast("int"))
        .withColumn("work_end_hour", F.col("work_end_hour").cast("int"))
        .withColumn("created", F.to_date("created"))
    )


def user_aliases(spark: SparkSession, settings: Settings) -> DataFrame:
    """(alias_key, user_id): every spelling of an account, lower-cased, mapped to its canonical id."""
    d = identity_directory(spark, settings)
    spellings = F.array_union(
        F.array("user_id", "upn", "sam_account", "email"), F.coalesce("aliases", F.array())
    )
    return (
        d.select("user_id", F.explode(spellings).alias("alias"))
        .where(F.col("alias").isNotNull() & (F.col("alias") != ""))
        .select(F.lower(F.trim("alias")).alias("alias_key"), "user_id")
        .dropDuplicates(["alias_key"])
    )


def asset_inventory(spark: SparkSession, settings: Settings) -> DataFrame:
    df = _read_csv(spark, settings, "asset_inventory.csv", ASSET_INVENTORY)
    return df.withColumn("tags", F.split(F.coalesce("tags", F.lit("")), r"\|"))


def network_ranges(spark: SparkSession, settings: Settings) -> DataFrame:
    return _read_csv(spark, settings, "network_ranges.csv", NETWORK_RANGES)
