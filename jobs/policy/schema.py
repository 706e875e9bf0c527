"""Policy files, the guardrails file and the exceptions register: pydantic models and loading.

A policy is data (STYLE rule 8): `policies/<id>.yaml`, read with `yaml.safe_load`,
validated here, its conditions compiled by `jobs.policy.expressions`. Any problem is
one line naming the file and the key (`policies/x.yaml: tiers[2].when: ...`), and a
set with one broken file does not load at all, so no stage acts on half a policy set.
`policy.schema.json` (for editors and CI) is exported from these models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobs.core.errors import ConfigError
from jobs.policy.expressions import (
    Expression,
    ExpressionError,
    UnknownSignalError,
    compile_expression,
)
from jobs.policy.vocabulary import (
    ACTIONS,
    CONTEXT_VARIABLES,
    DOMAINS,
    SEVERITY,
    Action,
    Domain,
    EntityType,
    is_known_signal,
)

GUARDRAILS_FILE = "guardrails.yaml"
EXCEPTIONS_FILE = "exceptions.yaml"
SCHEMA_FILE = "policy.schema.json"
RESERVED = frozenset({GUARDRAILS_FILE, EXCEPTIONS_FILE})
MAX_POLICY_BYTES = 256 * 1024
DEFAULT_POLICIES_DIR = "policies"

_ID = r"^[a-z0-9][a-z0-9-]{1,62}$"
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class PolicyLoadError(ConfigError):
    """A policy set that cannot be used (configuration: exit code 2); `rule` says which
    check failed (for lint)."""

    def __init__(self, message: str, rule: str = "schema", file: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.file = file


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- policies -------------------------------------------------------------------------


class Tier(_Model):
    """One rung: the first tier whose `when` holds decides the policy's action."""

    name: str = Field(
        pattern=_SLUG, description="Short name, unique in the policy; logged with each decision."
    )
    when: str = Field(
        description=(
            "Condition in the policy expression language: comparisons (== != < <= > >=), "
            "and/or/not, `in` lists, has_signal('x'), source_degraded('src'), numbers, "
            "'strings', true/false/null and context names such as risk, user_type, "
            "privileged, asset_criticality, signal.<name>.value. `true` matches everything."
        )
    )
    action: Action
    valid_for_hours: int | None = Field(
        default=None,
        ge=1,
        le=720,
        description="How long the recommendation holds; required unless action is allow.",
    )
    description: str | None = None

    @field_validator("when")
    @classmethod
    def _parses(cls, value: str) -> str:
        compile_expression(value)
        return value

    @model_validator(mode="after")
    def _validity(self) -> Tier:
        if self.action != "allow" and self.valid_for_hours is None:
            raise ValueError("valid_for_hours is required when the action is not allow")
        return self


class CaseSignal(_Model):
    name: str
    value: float | None = None
    threshold: float | None = None
    contribution: float | None = None
    source: str | None = None
    detail: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if not is_known_signal(value):
            raise UnknownSignalError(f"unknown signal {value!r}")
        return value


class CaseInput(_Model):
    """An entity as gold.entity_risk would describe it (every key optional but `risk`)."""

    risk: int = Field(ge=0, le=100)
    risk_today: int | None = Field(default=None, ge=0, le=100)
    sessions: int | None = None
    entity_type: EntityType | None = None
    entity_id: str | None = None
    user_type: str | None = None
    peer_group: str | None = None
    asset_criticality: str | None = None
    privileged: bool | None = None
    degraded_sources: list[str] = Field(default_factory=list)
    signals: list[CaseSignal | str] = Field(
        default_factory=list, description="Signal names, or objects with name, value, source ..."
    )

    @field_validator("signals")
    @classmethod
    def _shorthand(cls, value: list[CaseSignal | str]) -> list[CaseSignal | str]:
        unknown = [v for v in value if isinstance(v, str) and not is_known_signal(v)]
        if unknown:
            raise UnknownSignalError(f"unknown signal {unknown[0]!r}")
        return [CaseSignal(name=v) if isinstance(v, str) else v for v in value]


class PolicyCase(_Model):
    """An inline case (panther-analysis style): an input and the action the policy must give."""

    name: str = Field(min_length=3)
    input: CaseInput
    expect: Action
    expect_tier: str | None = None


class Policy(_Model):
    """One policy file: `id` equals the file name, tiers in order, inline tests."""

    id: str = Field(pattern=_ID, description="Equals the file name without .yaml.")
    version: str = Field(pattern=r"^\d+(\.\d+){0,2}$", description="Quoted, e.g. '1.2.0'.")
    owner: str = Field(min_length=3)
    description: str = Field(min_length=10)
    domain: Domain
    mode: Literal["enforce", "shadow"]
    applies_to: list[EntityType] = Field(min_length=1)
    complements: list[str] = Field(
        default_factory=list,
        description="Policies of other domains that deliberately act on the same entities "
        "(different enforcement points); lint reports overlaps with them as info, not warnings.",
    )
    tiers: list[Tier] = Field(min_length=1, max_length=32)
    tests: list[PolicyCase] = Field(min_length=2)

    @field_validator("version", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a quoted string like '1.2.0' (YAML reads 1.10 as 1.1)")
        return value

    @field_validator("applies_to")
    @classmethod
    def _unique_types(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists an entity type twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique: {', '.join(dupes)}")
        for i, test in enumerate(self.tests):
            if test.expect_tier is not None and test.expect_tier not in names:
                raise ValueError(f"tests[{i}].expect_tier {test.expect_tier!r} is not a tier")
            if test.input.entity_type is not None and test.input.entity_type not in self.applies_to:
                raise ValueError(f"tests[{i}].input.entity_type is not in applies_to")
        if not any(t.expect != "allow" for t in self.tests):
            raise ValueError(
                "tests need at least one positive case (expect an action other than allow)"
            )
        if not any(t.expect == "allow" for t in self.tests):
            raise ValueError("tests need at least one negative case (expect: allow)")
        if self.id in self.complements:
            raise ValueError("complements lists the policy itself")
        return self


# --- guardrails -----------------------------------------------------------------------


class AllowlistEntry(_Model):
    entity_type: EntityType
    entity_id: str = Field(
        min_length=1, max_length=200, description="Exact id or a glob (fnmatch)."
    )
    reason: str = Field(min_length=3)
    owner: str = Field(min_length=3)


class Allowlist(_Model):
    """Critical services: never blocked or isolated, at most `max_action` and only as an alert."""

    max_action: Literal["allow", "challenge"] = "challenge"
    entries: list[AllowlistEntry] = Field(default_factory=list)


class BreakGlass(_Model):
    """Emergency accounts: never blocked or isolated; any action is capped and alert_only."""

    max_action: Literal["allow", "challenge"] = "challenge"
    user_types: list[str] = Field(default_factory=lambda: ["break_glass"])
    accounts: list[str] = Field(default_factory=list, description="Entity ids or globs.")


def _high_impact_actions() -> list[Action]:
    return ["isolate", "block"]


def _block_everywhere() -> dict[Domain, Action]:
    return {"identity": "block", "endpoint": "block", "network": "block", "cloud": "block"}


class Approval(_Model):
    """High-impact actions wait for a person: status pending_approval instead of approved."""

    actions: list[Action] = Field(default_factory=_high_impact_actions)
    asset_criticality: list[str] = Field(default_factory=lambda: ["critical"])
    # a host the asset inventory does not know (criticality null) might be critical
    unknown_asset_criticality: bool = Field(
        default=True,
        description="High-impact actions on a host of unknown criticality wait for approval.",
    )
    privileged: bool = True
    user_types: list[str] = Field(default_factory=lambda: ["admin"])


class DegradedEvidence(_Model):
    """High-impact actions are never based on degraded or missing sources alone."""

    actions: list[Action] = Field(default_factory=_high_impact_actions)
    fallback_action: Action = "challenge"

    @model_validator(mode="after")
    def _fallback_is_lower(self) -> DegradedEvidence:
        too_high = [a for a in self.actions if SEVERITY[a] <= SEVERITY[self.fallback_action]]
        if too_high:
            raise ValueError(
                f"fallback_action {self.fallback_action} must be less severe than {', '.join(too_high)}"
            )
        return self


class BlastRadiusLimit(_Model):
    max_new: int = Field(ge=0, description="Automatically approved actions per run date.")
    max_share: float = Field(
        gt=0, le=1, description="... and at most this share of the entities evaluated."
    )


class BlastRadius(_Model):
    """How many entities one run may isolate or block automatically, per domain and run date:
    the lower of `max_new` and `max_share` of the entities the domain's policies evaluated.
    The rest (lowest risk first) wait for an analyst (pending_approval)."""

    actions: list[Action] = Field(default_factory=_high_impact_actions)
    max_new: int = Field(default=50, ge=0)
    max_share: float = Field(default=0.25, gt=0, le=1)
    domains: dict[Domain, BlastRadiusLimit] = Field(
        default_factory=dict, description="Per-domain limits instead of the two above."
    )

    def limit(self, domain: str) -> tuple[int, float]:
        own = self.domains.get(cast(Domain, domain))
        return (own.max_new, own.max_share) if own else (self.max_new, self.max_share)


class Guardrails(_Model):
    version: str = Field(default="1", pattern=r"^\d+(\.\d+){0,2}$")
    max_action: dict[Domain, Action] = Field(
        default_factory=_block_everywhere,
        description="The most severe action each domain may recommend.",
    )
    allowlist: Allowlist = Allowlist()
    break_glass: BreakGlass = BreakGlass()
    approval: Approval = Approval()
    degraded_evidence: DegradedEvidence = DegradedEvidence()
    blast_radius: BlastRadius = BlastRadius()

    @field_validator("version", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    def domain_max(self, domain: str) -> str:
        return str(self.max_action.get(cast(Domain, domain), "block"))


class ExceptionGrant(_Model):
    """A time-boxed, approved exception: caps the action for one entity (or a glob of them)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
    entity_type: EntityType
    entity_id: str = Field(min_length=1, max_length=200)
    policies: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    max_action: Action = "allow"
    owner: str = Field(min_length=3)
    approver: str = Field(min_length=3)
    reason: str = Field(min_length=10)
    expires: date = Field(description="Last run date the exception applies to (inclusive).")
    ticket: str | None = None

    @model_validator(mode="after")
    def _four_eyes(self) -> ExceptionGrant:
        if self.approver.strip().lower() == self.owner.strip().lower():
            raise ValueError("approver must be someone other than the owner")
        return self

    def active_on(self, run_date: date) -> bool:
        return run_date <= self.expires


class ExceptionRegister(_Model):
    exceptions: list[ExceptionGrant] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ExceptionRegister:
        ids = [e.id for e in self.exceptions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"exception ids must be unique: {', '.join(dupes)}")
        return self


# --- compiled forms (small, picklable: they ship to Spark executors) ---------------------


@dataclass(frozen=True)
class CompiledTier:
    name: str
    when: Expression
    action: str
    valid_for_hours: int


@dataclass(frozen=True)
class CompiledPolicy:
    id: str
    version: str
    hash: str  # sha256 of the file bytes
    domain: str
    mode: str
    applies_to: tuple[str, ...]
    tiers: tuple[CompiledTier, ...]
    complements: tuple[str, ...] = ()
    file: str = ""

    @property
    def domain_rank(self) -> int:
        return DOMAINS.index(self.domain)


@dataclass(frozen=True)
class LoadedPolicy:
    model: Policy
    compiled: CompiledPolicy
    path: Path


@dataclass(frozen=True)
class PolicySet:
    """Everything the recommend stage needs, validated together."""

    directory: Path
    policies: tuple[LoadedPolicy, ...]
    guardrails: Guardrails
    exceptions: tuple[ExceptionGrant, ...]

    @property
    def compiled(self) -> tuple[CompiledPolicy, ...]:
        return tuple(p.compiled for p in self.policies)

    def summary(self) -> str:
        return ",".join(f"{p.compiled.id}@{p.compiled.version}" for p in self.policies)


def compile_policy(model: Policy, digest: str, file: str = "") -> CompiledPolicy:
    tiers = tuple(
        CompiledTier(t.name, compile_expression(t.when), t.action, t.valid_for_hours or 0)
        for t in model.tiers
    )
    return CompiledPolicy(
        id=model.id,
        version=model.version,
        hash=digest,
        domain=model.domain,
        mode=model.mode,
        applies_to=tuple(model.applies_to),
        tiers=tiers,
        complements=tuple(model.complements),
        file=file,
    )


# --- loading --------------------------------------------------------------------------


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def describe_validation_error(error: ValidationError, origin: str) -> PolicyLoadError:
    """The first problem as one line naming the key; `rule` tells lint what kind it is."""
    first = error.errors()[0]
    key = _loc(tuple(first["loc"]))
    cause = (first.get("ctx") or {}).get("error")
    message = str(cause) if isinstance(cause, Exception) else first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    rule = "unknown-signal" if isinstance(cause, UnknownSignalError) else "schema"
    return PolicyLoadError(f"{origin}: {key}: {message}{suffix}", rule=rule, file=origin)


def _read_yaml(path: Path) -> tuple[Any, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyLoadError(f"{path}: cannot read: {exc.strerror}", "yaml", str(path)) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyLoadError(f"{path}: larger than {MAX_POLICY_BYTES} bytes", "yaml", str(path))
    try:
        return yaml.safe_load(raw.decode("utf-8")), raw
    except UnicodeDecodeError:
        raise PolicyLoadError(f"{path}: not UTF-8 text", "yaml", str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyLoadError(
            f"{path}: not valid YAML{where}: {problem}", "yaml", str(path)
        ) from None


def load_policy_file(path: Path) -> LoadedPolicy:
    data, raw = _read_yaml(path)
    if not isinstance(data, dict):
        raise PolicyLoadError(
            f"{path}: top level must be a mapping with id, version, tiers ...", "schema", str(path)
        )
    try:
        model = Policy.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc, str(path)) from None
    if model.id != path.stem:
        raise PolicyLoadError(
            f"{path}: id: {model.id!r} must equal the file name {path.stem!r}",
            "id-filename",
            str(path),
        )
    digest = hashlib.sha256(raw).hexdigest()
    return LoadedPolicy(model, compile_policy(model, digest, str(path)), path)


def load_guardrails(path: Path, required: bool = True) -> Guardrails:
    """The guardrails file; a missing one is an error unless `required` is off (then the
    built-in defaults: no allowlist, no break-glass account, block allowed everywhere)."""
    if not path.is_file():
        if not required:
            return Guardrails()
        raise PolicyLoadError(
            f"{path}: guardrails file not found; without it nothing protects break-glass "
            "accounts or allowlisted services (policy.allow_missing: [guardrails] runs on "
            "the built-in defaults)",
            "guardrails-missing",
            str(path),
        )
    data, _ = _read_yaml(path)
    try:
        return Guardrails.model_validate(data or {})
    except ValidationError as exc:
        raise describe_validation_error(exc, str(path)) from None


def load_exceptions(path: Path) -> tuple[ExceptionGrant, ...]:
    if not path.is_file():
        return ()
    data, _ = _read_yaml(path)
    try:
        register = ExceptionRegister.model_validate(data or {})
    except ValidationError as exc:
        raise describe_validation_error(exc, str(path)) from None
    return tuple(register.exceptions)


def policy_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise PolicyLoadError(f"{directory}: policies folder not found", "yaml", str(directory))
    stray = sorted(p.name for p in directory.glob("*.yml"))
    if stray:
        raise PolicyLoadError(
            f"{directory}: rename {', '.join(stray)} to .yaml", "schema", str(directory)
        )
    return sorted(p for p in directory.glob("*.yaml") if p.name not in RESERVED)


def check_references(
    policies: tuple[LoadedPolicy, ...], exceptions: tuple[ExceptionGrant, ...], directory: Path
) -> None:
    ids = {p.compiled.id for p in policies}
    for p in policies:
        unknown = [c for c in p.model.complements if c not in ids]
        if unknown:
            raise PolicyLoadError(
                f"{p.path}: complements: unknown policy {', '.join(unknown)}", "schema", str(p.path)
            )
    where = directory / EXCEPTIONS_FILE
    for i, grant in enumerate(exceptions):
        unknown = [q for q in grant.policies if q != "*" and q not in ids]
        if unknown:
            raise PolicyLoadError(
                f"{where}: exceptions[{i}].policies: unknown policy {', '.join(unknown)}",
                "schema",
                str(where),
            )


def load_policy_set(directory: Path | str, require_guardrails: bool = True) -> PolicySet:
    """Load and cross-check every file in `directory`; the first problem raises PolicyLoadError.

    `guardrails.yaml` must be there unless `require_guardrails` is off (fail closed)."""
    directory = Path(directory)
    files = policy_files(directory)
    if not files:
        raise PolicyLoadError(f"{directory}: no policy files (*.yaml)", "schema", str(directory))
    policies = tuple(load_policy_file(f) for f in files)
    guardrails = load_guardrails(directory / GUARDRAILS_FILE, required=require_guardrails)
    exceptions = load_exceptions(directory / EXCEPTIONS_FILE)
    check_references(policies, exceptions, directory)
    return PolicySet(directory, policies, guardrails, exceptions)


def resolve_policies_dir(settings: Any = None, override: Path | str | None = None) -> Path:
    """`override`, else `settings.policy.policies_dir` (default ./policies), else the
    repository's policies/ folder next to the installed `jobs` package.

    A folder set explicitly in the configuration must exist: falling back to the bundled
    policies would enforce policies nobody configured (fail closed), unless
    `policy.allow_missing` names `policies_dir`.
    """
    if override is not None:
        return Path(override)
    section = getattr(settings, "policy", None)
    configured = getattr(section, "policies_dir", None)
    explicit = "policies_dir" in (getattr(section, "model_fields_set", None) or ())
    fallback_allowed = "policies_dir" in (getattr(section, "allow_missing", None) or ())
    candidate = Path(configured or DEFAULT_POLICIES_DIR)
    if candidate.is_dir():
        return candidate
    if explicit and not fallback_allowed:
        raise PolicyLoadError(
            f"policy.policies_dir: {candidate} is not a folder (relative paths are read from "
            f"{Path.cwd()}); policy.allow_missing: [policies_dir] uses the bundled policies",
            "yaml",
            str(candidate),
        )
    bundled = Path(__file__).resolve().parents[2] / DEFAULT_POLICIES_DIR
    return bundled if bundled.is_dir() else candidate


# --- JSON Schema ----------------------------------------------------------------------


def policy_json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "policylake policy"
    schema["description"] = (
        "One policy-as-code file of policylake (policies/<id>.yaml). Generated from "
        "jobs/policy/schema.py by `policylake policy schema`; do not edit by hand. "
        f"Actions from least to most severe: {', '.join(ACTIONS)}. Context names: "
        f"{', '.join(sorted(CONTEXT_VARIABLES))}, signal.<name>.value|threshold|contribution|source."
    )
    return schema


def render_json_schema() -> str:
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"


__all__ = [
    "ExpressionError",
    "Guardrails",
    "Policy",
    "PolicyLoadError",
    "PolicySet",
    "load_policy_set",
]
