"""The words policies may use: actions in order of severity, domains, signals, context names.

One place, so the schema, the expression checker, lint and the engine agree.
"""

from __future__ import annotations

from typing import Literal

from jobs.core.config import (
    DETECTION_LEVELS,
    DETECTION_SIGNAL_PREFIX,
    DETECTION_SLUG,
    SIGNAL_NAMES,
    SOURCES,
)

Action = Literal["allow", "challenge", "limit", "isolate", "block"]
Domain = Literal["identity", "endpoint", "network", "cloud"]
EntityType = Literal["user", "service_account", "host", "ip"]
Status = Literal["approved", "pending_approval", "shadow", "alert_only", "rejected", "overridden"]

# Least to most severe; guardrails cap an action by taking the lower of two.
ACTIONS: tuple[str, ...] = ("allow", "challenge", "limit", "isolate", "block")
SEVERITY: dict[str, int] = {a: i for i, a in enumerate(ACTIONS)}
DOMAINS: tuple[str, ...] = ("identity", "endpoint", "network", "cloud")
ENTITY_TYPES: tuple[str, ...] = ("user", "service_account", "host", "ip")
ASSET_CRITICALITY: tuple[str, ...] = ("low", "medium", "high", "critical")
USER_TYPES: tuple[str, ...] = ("human", "admin", "service", "break_glass", "unknown")

# Analyst verdicts that label a decision (training labels, detection precision and recall).
POSITIVE_VERDICTS: tuple[str, ...] = (
    "true_positive",
    "malicious",
    "confirmed",
    "tp",
    "compromised",
)
NEGATIVE_VERDICTS: tuple[str, ...] = ("false_positive", "benign", "fp", "expected", "authorized")

# Status of a decision whose action is `allow`: logged, never published to enforcement.
NO_ACTION = "no_action"

# Signal names the scoring stage emits (gold.entity_risk.signals[].name).
KNOWN_SIGNALS: frozenset[str] = frozenset(SIGNAL_NAMES)

# Sigma rule levels, least to most severe, for detection('high'): a detection signal's
# `threshold` is its rule's level as a rank, 1 (informational) .. 5 (critical).
LEVELS: tuple[str, ...] = DETECTION_LEVELS


def is_detection_signal(name: str) -> bool:
    """`sigma.<rule>`: the signal of a Sigma detection (jobs/detections/rules.py names them)."""
    return name.startswith(DETECTION_SIGNAL_PREFIX) and bool(
        DETECTION_SLUG.fullmatch(name[len(DETECTION_SIGNAL_PREFIX) :])
    )


def is_known_signal(name: str) -> bool:
    """A built-in signal, or any well-formed detection signal: rules are the user's to add,
    so their names cannot be listed here; a typo in a built-in name still fails."""
    return name in KNOWN_SIGNALS or is_detection_signal(name)


def level_rank(level: str) -> int:
    return LEVELS.index(level) + 1


# Telemetry sources (jobs.core.config.SOURCES), for source_degraded('...').
KNOWN_SOURCES: frozenset[str] = frozenset(SOURCES)

# Names a condition may read, with their type. `signal.<name>.<field>` is also allowed
# for every known signal (see SIGNAL_FIELDS).
CONTEXT_VARIABLES: dict[str, str] = {
    "risk": "number",
    "risk_today": "number",
    "sessions": "number",
    "signal_count": "number",
    "entity_type": "string",
    "entity_id": "string",
    "user_type": "string",
    "peer_group": "string",
    "asset_criticality": "string",
    "privileged": "bool",
    "degraded_sources": "list",
    "signals": "list",
}
SIGNAL_FIELDS: dict[str, str] = {
    "value": "number",
    "threshold": "number",
    "contribution": "number",
    "source": "string",
}


def variable_type(name: str) -> str | None:
    """The type of a (possibly dotted) context name, or None when policies may not read it."""
    if name in CONTEXT_VARIABLES:
        return CONTEXT_VARIABLES[name]
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "signal" and parts[2] in SIGNAL_FIELDS:
        return SIGNAL_FIELDS[parts[2]]
    return None


def cap(action: str, ceiling: str) -> str:
    """The less severe of `action` and `ceiling`."""
    return action if SEVERITY[action] <= SEVERITY[ceiling] else ceiling
