"""Pseudonymized BI tables: keyed HMAC-SHA256 tokens for user, device and host identifiers.

With `privacy.pseudonymize: true` the score stage writes gold.session_scores and
gold.entity_risk (what BI reads) with every user, device and host identifier replaced by
a token, in the id columns and in the free text (reasons, signal details):

    token = <u_ | h_ | d_> + first 24 hex of HMAC-SHA256(key, "policylake-pseudonym/v1|" + id)

The hex part depends on the identifier only, so a device that is also a host has the same
hex under both prefixes. `session_id` (a plain hash of date, kind and entity, so guessable
from the inventory) is re-keyed the same way. Tokens are computed on the executors (pandas
and Python UDFs carry the key in their closure; it is never a literal in a query plan, a
log line or a table). The key comes from the environment variable `privacy.key_env`.

The restricted table ops.pseudonyms (run_date, kind, token, identifier) holds every token a
day's BI rows contain; the recommend stage resolves tokens through it before evaluating
policies, so allowlists, break-glass accounts, gold.policy_recommendations and
gold.decision_log all see real ids. docs/privacy.md: who reads what, rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.pandas.functions import pandas_udf
from pyspark.sql.types import ArrayType, DataType, StringType, StructType

from jobs.core.config import PrivacySettings
from jobs.core.errors import ConfigError
from jobs.core.lake import Lake, TableRef, resolve
from jobs.core.tables import ENTITY_RISK, PSEUDONYMS, SESSION_SCORES, Table

__all__ = [
    "PROTECTED_TABLES",
    "TOKEN_ID_PATTERN",
    "ProtectedTable",
    "Pseudonymizer",
    "pseudonym_key",
    "pseudonym_rows",
    "pseudonymize",
    "read_pseudonyms",
    "resolve_identifiers",
    "resolve_pseudonyms",
    "resolve_text",
    "token_of",
    "tokens_in_text",
]

MIN_KEY_BYTES = 32
TOKEN_HEX = 24
PREFIX = {"user": "u_", "host": "h_", "device": "d_"}
TOKEN_PATTERN = r"\b[uhd]_[0-9a-f]{24}\b"
# a whole identifier that is a token (an id column the recommend stage could not resolve)
TOKEN_ID_PATTERN = r"^[uhd]_[0-9a-f]{24}$"
_TOKEN = re.compile(TOKEN_PATTERN)
# A word of free text that may be an identifier (emails, asset ids, device names).
_WORD = re.compile(r"[\w.@%+\-]+")
_DOMAIN = "policylake-pseudonym/v1|"
ENTITY = "entity"  # an id column whose kind follows entity_type
# Text vocabulary: when an identifier is known as several kinds, text uses the first.
KIND_PRECEDENCE = ("user", "host", "device")


class PseudonymKeyError(ConfigError):
    """Pseudonymization is on but its key is missing or too short (one line, no key text)."""


def pseudonym_key(privacy: PrivacySettings, environ: Mapping[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    value = env.get(privacy.key_env, "")
    if not value:
        raise PseudonymKeyError(
            f"privacy.pseudonymize is on but the environment variable {privacy.key_env} is not "
            f"set; export a key of at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        )
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"{privacy.key_env} is shorter than {MIN_KEY_BYTES} bytes; use a longer random key "
            "(e.g. `openssl rand -hex 32`)"
        )
    return key


def _digest(key: bytes, identifier: str) -> str:
    return hmac.new(key, (_DOMAIN + identifier).encode("utf-8"), hashlib.sha256).hexdigest()


def token_of(key: bytes, identifier: str, kind: str) -> str:
    """The token of `identifier` as a `kind` (user | host | device)."""
    return PREFIX[kind] + _digest(key, identifier)[:TOKEN_HEX]


# --- transforms (pure; the work runs on the executors) -----------------------------------------


@dataclass(frozen=True)
class ProtectedTable:
    """Which columns of a BI table hold identifiers, free text, or guessable keys."""

    id_columns: Mapping[str, str]  # column -> kind, or ENTITY (kind from entity_type)
    text_columns: tuple[str, ...]  # strings, arrays of strings or of structs with strings
    rekey_columns: tuple[str, ...] = ()  # hashes of identifiers, replaced by keyed hashes


PROTECTED_TABLES: dict[str, ProtectedTable] = {
    SESSION_SCORES.name: ProtectedTable(
        {"user_id": "user", "device_id": "device", "entity_id": ENTITY},
        ("reasons", "signals"),
        ("session_id",),
    ),
    ENTITY_RISK.name: ProtectedTable({"entity_id": ENTITY}, ("reasons", "signals")),
}


def _kind(kind: str) -> Column:
    if kind != ENTITY:
        return F.lit(kind)
    entity_type = F.col("entity_type")
    return (
        F.when(entity_type.isin("user", "service_account"), F.lit("user"))
        .when(entity_type == "host", F.lit("host"))
        .otherwise(F.lit(None).cast("string"))
    )


def _tokenize(key: bytes) -> Callable[[Column, Column], Column]:
    """(kind, value) -> the value's token, or the value itself when kind is null."""

    def tokens(kinds: pd.Series, values: pd.Series) -> pd.Series:
        return pd.Series(
            [
                v if k is None or v is None else token_of(key, v, k)
                for k, v in zip(kinds, values, strict=True)
            ],
            dtype=object,
        )

    udf: Any = pandas_udf(tokens, StringType())  # type: ignore[call-overload]
    return udf  # type: ignore[no-any-return]


def _rekey(key: bytes) -> Callable[[Column], Column]:
    def rekeyed(values: pd.Series) -> pd.Series:
        return pd.Series(
            [None if v is None else _digest(key, "key|" + v)[:32] for v in values], dtype=object
        )

    udf: Any = pandas_udf(rekeyed, StringType())  # type: ignore[call-overload]
    return udf  # type: ignore[no-any-return]


def _map_strings(value: Any, dtype: DataType, change: Callable[[str], str]) -> Any:
    """`value` (as a Python UDF receives it) with `change` applied to every string in it."""
    if value is None:
        return None
    if isinstance(dtype, StringType):
        return change(value)
    if isinstance(dtype, ArrayType):
        return [_map_strings(v, dtype.elementType, change) for v in value]
    if isinstance(dtype, StructType):
        fields = value.asDict(recursive=False) if isinstance(value, Row) else dict(value)
        return tuple(_map_strings(fields[f.name], f.dataType, change) for f in dtype.fields)
    return value


def _text_udf(dtype: DataType, change: Callable[[str], str]) -> Callable[[Column], Column]:
    def apply(value: Any) -> Any:
        return _map_strings(value, dtype, change)

    return F.udf(apply, dtype, useArrow=False)


def _pseudonymize_words(key: bytes, vocabulary: Mapping[str, str]) -> Callable[[str], str]:
    """Replace every word of a text that is a known identifier by its token."""

    cache: dict[str, str | None] = {}  # per Python worker; a closure, so it pickles

    def lookup(word: str) -> str | None:
        if word not in cache:
            kind = vocabulary.get(word)
            cache[word] = token_of(key, word, kind) if kind else None
        return cache[word]

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        token = lookup(word)
        if token:
            return token
        stripped = word.rstrip(".-")  # "... reached ws-nyc-00001." ends a sentence
        token = lookup(stripped) if stripped != word else None
        return token + word[len(stripped) :] if token else word

    return lambda text: _WORD.sub(replace, text)


def pseudonymize(
    df: DataFrame, spec: ProtectedTable, key: bytes, vocabulary: Mapping[str, str]
) -> DataFrame:
    """`df` with identifiers tokenized in id columns, free text and re-keyed columns.

    `vocabulary` (identifier -> kind) lists the identifiers to find in free text; it is
    shipped to the executors with the UDF, the tokens are computed there.
    """
    tokenize = _tokenize(key)
    columns = {f.name: f.dataType for f in df.schema.fields}
    out = df
    for column, kind in spec.id_columns.items():
        out = out.withColumn(column, tokenize(_kind(kind), F.col(column)))
    words = _pseudonymize_words(key, dict(vocabulary))
    for column in spec.text_columns:
        out = out.withColumn(column, _text_udf(columns[column], words)(F.col(column)))
    rekey = _rekey(key)
    for column in spec.rekey_columns:
        out = out.withColumn(column, rekey(F.col(column)))
    return out.select(*df.columns)


def tokens_in_text(df: DataFrame, columns: Sequence[str]) -> DataFrame:
    """(run_date, token): every token the free text of `df` contains."""
    text = F.concat_ws(" ", *[F.to_json(F.struct(F.col(c).alias("v"))) for c in columns])
    return df.select(
        "run_date", F.explode(F.regexp_extract_all(text, F.lit(TOKEN_PATTERN), 0)).alias("token")
    ).distinct()


def identifiers(df: DataFrame, spec: ProtectedTable) -> DataFrame:
    """(run_date, kind, identifier) of every identifier in the id columns of `df`."""
    parts = [
        df.select("run_date", _kind(k).alias("kind"), F.col(c).alias("identifier"))
        for c, k in spec.id_columns.items()
    ]
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out.where(F.col("kind").isNotNull() & F.col("identifier").isNotNull()).distinct()


def pseudonym_rows(
    original: DataFrame,
    pseudonymized: DataFrame,
    spec: ProtectedTable,
    key: bytes,
    vocabulary: DataFrame,
) -> DataFrame:
    """ops.pseudonyms rows for one table: the tokens of its id columns and of its free text.

    `vocabulary`: (kind, identifier) of the identifiers free text may name.
    """
    tokenize = _tokenize(key)
    in_columns = identifiers(original, spec).withColumn(
        "token", tokenize(F.col("kind"), F.col("identifier"))
    )
    known = vocabulary.withColumn("token", tokenize(F.col("kind"), F.col("identifier")))
    in_text = tokens_in_text(pseudonymized, spec.text_columns).join(known, "token")
    return (
        in_columns.select(*PSEUDONYMS.schema.fieldNames())
        .unionByName(in_text.select(*PSEUDONYMS.schema.fieldNames()))
        .distinct()
    )


def resolve_identifiers(df: DataFrame, mapping: DataFrame, columns: Iterable[str]) -> DataFrame:
    """`df` with every token in `columns` replaced by its identifier (others kept)."""
    lookup = mapping.select("token", "identifier").distinct()
    out = df
    for column in columns:
        side = lookup.select(
            F.col("token").alias("_pseudonym_token"), F.col("identifier").alias("_pseudonym_id")
        )
        out = (
            out.join(side, out[column] == side["_pseudonym_token"], "left")
            .withColumn(column, F.coalesce(F.col("_pseudonym_id"), F.col(column)))
            .drop("_pseudonym_token", "_pseudonym_id")
        )
    return out.select(*df.columns)


def resolve_text(df: DataFrame, columns: Sequence[str], tokens: Mapping[str, str]) -> DataFrame:
    """`df` with the tokens in its free-text `columns` replaced by their identifiers."""
    if not tokens:
        return df
    table = dict(tokens)

    def change(text: str) -> str:
        return _TOKEN.sub(lambda m: table.get(m.group(0), m.group(0)), text)

    types = {f.name: f.dataType for f in df.schema.fields}
    out = df
    for column in columns:
        out = out.withColumn(column, _text_udf(types[column], change)(F.col(column)))
    return out


# --- I/O helpers for the stage entries -------------------------------------------------------


def read_pseudonyms(lake: Lake) -> DataFrame | None:
    return lake.read(PSEUDONYMS) if lake.exists(PSEUDONYMS) else None


def resolve_pseudonyms(lake: Lake, df: DataFrame, table: TableRef, text: bool = True) -> DataFrame:
    """Real identifiers back in a BI table's frame (no-op when nothing was pseudonymized).

    Resolves through the whole of ops.pseudonyms, so tokens carried from earlier days
    (entity risk's "carried over" reasons) and tokens of an older key resolve too.
    """
    mapping = read_pseudonyms(lake)
    if mapping is None:
        return df
    spec = PROTECTED_TABLES[resolve(table).name]
    out = resolve_identifiers(df, mapping, spec.id_columns)
    if not text:
        return out
    used = (
        tokens_in_text(df, spec.text_columns)
        .select("token")
        .distinct()
        .join(mapping.select("token", "identifier"), "token")
        .distinct()
    )
    # only the tokens these rows' text contains: a handful per entity, never events
    return resolve_text(
        out, spec.text_columns, {r["token"]: r["identifier"] for r in used.collect()}
    )


class Pseudonymizer:
    """Writes the BI tables of one score run pseudonymized, with their ops.pseudonyms rows."""

    def __init__(
        self,
        lake: Lake,
        privacy: PrivacySettings,
        reference: Sequence[DataFrame] = (),
    ) -> None:
        self.lake = lake
        self.key = pseudonym_key(privacy)  # fails before anything is read or written
        self.reference = reference  # (kind, identifier) frames: directory, inventory
        self._mapped: set[date] = set()

    @classmethod
    def for_run(
        cls, ctx: Any, accounts: DataFrame | None, assets: DataFrame | None
    ) -> Pseudonymizer | None:
        """None unless `privacy.pseudonymize` is on."""
        privacy: PrivacySettings = ctx.settings.privacy
        if not privacy.pseudonymize:
            return None
        reference = []
        if accounts is not None:
            reference.append(
                accounts.select(F.lit("user").alias("kind"), F.col("user_id").alias("identifier"))
            )
            if "devices" in accounts.columns:
                reference.append(
                    accounts.select(
                        F.lit("device").alias("kind"), F.explode("devices").alias("identifier")
                    )
                )
        if assets is not None:
            reference.append(
                assets.select(F.lit("host").alias("kind"), F.col("asset_id").alias("identifier"))
            )
        return cls(ctx.lake, privacy, reference)

    def _vocabulary(self, df: DataFrame, spec: ProtectedTable) -> DataFrame:
        parts = [identifiers(df, spec).select("kind", "identifier"), *self.reference]
        out = parts[0]
        for part in parts[1:]:
            out = out.unionByName(part)
        return out.where(F.col("identifier").isNotNull() & (F.length("identifier") > 0)).distinct()

    @contextmanager
    def pseudonymized(
        self, df: DataFrame, table: Table, dates: Sequence[date]
    ) -> Iterator[DataFrame]:
        """`df` with its identifiers tokenized, for the table's writer to write.

        ops.pseudonyms is written first (a token is never in a BI table without its
        mapping); the frame stays cached until the caller's write is done.
        """
        spec = PROTECTED_TABLES[table.name]
        frame = df.persist(StorageLevel.MEMORY_AND_DISK)
        vocabulary = None
        try:
            vocabulary = self._vocabulary(frame, spec).persist(StorageLevel.MEMORY_AND_DISK)
            # identifier -> kind for free text: the day's entities plus the directory and the
            # inventory (entity-level reference data, never events)
            kinds: dict[str, str] = {}
            for r in vocabulary.collect():
                current = kinds.get(r["identifier"])
                if current is None or KIND_PRECEDENCE.index(r["kind"]) < KIND_PRECEDENCE.index(
                    current
                ):
                    kinds[r["identifier"]] = r["kind"]
            protected = pseudonymize(frame, spec, self.key, kinds)
            rows = pseudonym_rows(frame, protected, spec, self.key, vocabulary)
            again = [d for d in dates if d in self._mapped]
            if again:  # the run's second table: keep the first table's rows of these dates
                rows = rows.unionByName(self.lake.read_dates(PSEUDONYMS, again)).distinct()
            self.lake.replace_dates(rows, PSEUDONYMS, dates)
            self._mapped.update(dates)
            yield protected
        finally:
            if vocabulary is not None:
                vocabulary.unpersist()
            frame.unpersist()
