"""Inline policy cases (`tests:` in each file): the tier logic checked without Spark.

A case gives an entity as gold.entity_risk would and the action the policy must
choose. Cases test the policy's own tiers; guardrails are tested once, in the test
suite, because they are shared by every policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.policy.engine import build_context, match_tier
from jobs.policy.schema import (
    LoadedPolicy,
    PolicyCase,
    PolicyLoadError,
    load_policy_file,
    policy_files,
)


@dataclass(frozen=True)
class CaseResult:
    file: str
    policy_id: str
    case: str
    expected: str
    got: str
    expected_tier: str | None
    got_tier: str | None

    @property
    def passed(self) -> bool:
        tier_ok = self.expected_tier is None or self.expected_tier == self.got_tier
        return self.expected == self.got and tier_ok


def case_entity(case: PolicyCase, applies_to: list[str]) -> dict[str, Any]:
    data = case.input.model_dump()
    data["entity_type"] = data.get("entity_type") or applies_to[0]
    data["entity_id"] = data.get("entity_id") or "test-entity"
    return data


def run_policy_cases(loaded: LoadedPolicy) -> list[CaseResult]:
    results = []
    for case in loaded.model.tests:
        context = build_context(case_entity(case, list(loaded.model.applies_to)))
        tier = match_tier(loaded.compiled, context)
        results.append(
            CaseResult(
                file=str(loaded.path),
                policy_id=loaded.model.id,
                case=case.name,
                expected=case.expect,
                got=tier.action if tier is not None else "allow",
                expected_tier=case.expect_tier,
                got_tier=tier.name if tier is not None else None,
            )
        )
    return results


def run_cases(directory: Path) -> tuple[list[CaseResult], list[PolicyLoadError]]:
    """Run every file's cases; a file that does not load is an error, the others still run."""
    results: list[CaseResult] = []
    errors: list[PolicyLoadError] = []
    try:
        files = policy_files(directory)
    except PolicyLoadError as exc:
        return [], [exc]
    if not files:
        errors.append(PolicyLoadError(f"{directory}: no policy files (*.yaml)"))
    for path in files:
        try:
            results.extend(run_policy_cases(load_policy_file(path)))
        except PolicyLoadError as exc:
            errors.append(exc)
    return results, errors
