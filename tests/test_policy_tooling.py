"""`policy lint` and `policy test` on the shipped policies (pass) and on broken samples (fail)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from jobs.cli.policy import policy_app
from jobs.policy.lint import lint_directory
from jobs.policy.schema import load_policy_set
from tests.conftest import run_json_command

POLICIES = Path(__file__).resolve().parent.parent / "policies"
runner = CliRunner()


def policy(policy_id: str, tiers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": policy_id,
        "version": "1.0.0",
        "owner": "secops@corp.example",
        "description": "A sample policy for the tooling tests.",
        "domain": "identity",
        "mode": "enforce",
        "applies_to": ["user"],
        "tiers": tiers,
        "tests": [
            {
                "name": "very high risk",
                "input": {"risk": 99, "signals": ["impossible_travel"]},
                "expect": "block",
            },
            {"name": "low risk", "input": {"risk": 1}, "expect": "allow"},
        ],
    }
    data.update(extra)
    return data


def tier(name: str, when: str, action: str) -> dict[str, Any]:
    return {"name": name, "when": when, "action": action, "valid_for_hours": 4}


def folder(tmp_path: Path, *policies: dict[str, Any]) -> Path:
    out = tmp_path / "policies"
    out.mkdir()
    (out / "guardrails.yaml").write_text('version: "1"\n')  # the defaults, written down
    for p in policies:
        (out / f"{p['id']}.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return out


def lint(directory: Path, *args: str) -> Any:
    return runner.invoke(policy_app, ["lint", "--policies", str(directory), *args])


def test_shipped_policies_pass_lint_strictly() -> None:
    result = lint(POLICIES, "--strict")
    assert result.exit_code == 0, result.output
    assert "policy lint passed: 0 errors, 0 warnings" in result.output


def test_shipped_policies_pass_their_inline_tests() -> None:
    result = runner.invoke(policy_app, ["test", "--policies", str(POLICIES)])
    assert result.exit_code == 0, result.output
    assert "0 failed, 0 file(s) not loaded" in result.output
    assert "policy test: " in result.output  # the table of results


def test_schema_file_check_passes_for_the_shipped_schema() -> None:
    result = runner.invoke(policy_app, ["schema", "--check", "--policies", str(POLICIES)])
    assert result.exit_code == 0, result.output


def test_failing_inline_case_fails_policy_test(tmp_path: Path) -> None:
    data = policy("sample", [tier("high", "risk >= 90", "block")])
    data["tests"][0]["expect"] = "limit"
    result = runner.invoke(policy_app, ["test", "--policies", str(folder(tmp_path, data))])
    assert result.exit_code == 1
    assert "FAIL" in result.output
    assert "1 passed, 1 failed" in result.output


def test_broken_file_fails_policy_test_and_lint_with_the_key(tmp_path: Path) -> None:
    data = policy("sample", [tier("high", "risk >= ninety", "block")])
    directory = folder(tmp_path, data)
    result = runner.invoke(policy_app, ["test", "--policies", str(directory)])
    assert result.exit_code == 1
    assert "tiers[0].when" in result.output
    result = lint(directory)
    assert result.exit_code == 1
    assert "schema" in result.output and "tiers[0].when" in result.output


def test_lint_finds_tier_after_unconditional_one(tmp_path: Path) -> None:
    data = policy(
        "sample", [tier("everything", "true", "allow"), tier("high", "risk >= 90", "block")]
    )
    findings = lint_directory(folder(tmp_path, data))
    messages = [f.message for f in findings if f.rule == "unreachable-tier"]
    assert messages == [
        "tier 'high' comes after the unconditional tier 'everything' and can never match"
    ]


def test_lint_finds_tier_implied_by_an_earlier_threshold(tmp_path: Path) -> None:
    data = policy(
        "sample",
        [
            tier("elevated", "risk >= 70", "challenge"),
            tier("critical", "risk >= 90 and has_signal('impossible_travel')", "block"),
            tier("never", "risk > 100", "limit"),
        ],
    )
    data["tests"][0]["expect"] = "challenge"
    directory = folder(tmp_path, data)
    findings = {f.message for f in lint_directory(directory) if f.rule == "unreachable-tier"}
    assert findings == {
        "tier 'critical' is unreachable: every input it matches is already matched by earlier tier(s) 'elevated'",
        "tier 'never' can never match: no input satisfies 'risk > 100'",
    }
    result = lint(directory)
    assert result.exit_code == 1 and "unreachable-tier" in result.output


def test_lint_accepts_a_tier_that_only_overlaps_partly(tmp_path: Path) -> None:
    data = policy(
        "sample",
        [
            tier("travel", "risk >= 90 and has_signal('impossible_travel')", "block"),
            tier("high", "risk >= 70", "challenge"),
        ],
    )
    assert [f for f in lint_directory(folder(tmp_path, data)) if f.severity == "error"] == []


def test_lint_flags_unknown_signal(tmp_path: Path) -> None:
    data = policy("sample", [tier("x", "risk >= 90 and has_signal('impossible_trvel')", "block")])
    findings = lint_directory(folder(tmp_path, data))
    assert [(f.severity, f.rule) for f in findings] == [("error", "unknown-signal")]
    assert "impossible_trvel" in findings[0].message


def test_lint_flags_conflict_in_one_domain_as_error(tmp_path: Path) -> None:
    a = policy("identity-a", [tier("high", "risk >= 80", "block")])
    b = policy(
        "identity-b",
        [tier("travel", "risk >= 60 and has_signal('impossible_travel')", "challenge")],
    )
    findings = [f for f in lint_directory(folder(tmp_path, a, b)) if f.rule == "conflict"]
    assert len(findings) == 1 and findings[0].severity == "error"
    assert "overlaps identity-b" in findings[0].message
    assert "'high' (block) vs 'travel' (challenge)" in findings[0].message
    assert "risk=80" in findings[0].message  # a witness input both policies act on


def test_lint_flags_cross_domain_conflict_as_warning_unless_complementary(tmp_path: Path) -> None:
    a = policy("identity-a", [tier("high", "risk >= 80", "block")])
    b = policy(
        "cloud-b",
        [tier("iam", "risk >= 60 and has_signal('risky_iam_change')", "limit")],
        domain="cloud",
    )
    b["tests"][0] = {
        "name": "iam",
        "input": {"risk": 70, "signals": ["risky_iam_change"]},
        "expect": "limit",
    }
    directory = folder(tmp_path, a, b)
    warnings = [f for f in lint_directory(directory) if f.rule == "conflict"]
    assert [f.severity for f in warnings] == ["warning"]
    assert lint(directory).exit_code == 0
    assert lint(directory, "--strict").exit_code == 1
    b["complements"] = ["identity-a"]
    (directory / "cloud-b.yaml").write_text(yaml.safe_dump(b))
    assert [f.severity for f in lint_directory(directory) if f.rule in ("conflict", "overlap")] == [
        "info"
    ]
    assert lint(directory, "--strict").exit_code == 0


def test_disjoint_conditions_do_not_conflict(tmp_path: Path) -> None:
    a = policy("identity-a", [tier("admins", "risk >= 80 and user_type == 'admin'", "limit")])
    b = policy("identity-b", [tier("people", "risk >= 80 and user_type == 'human'", "challenge")])
    for p in (a, b):
        p["tests"][0] = {
            "name": "pos",
            "input": {"risk": 90, "user_type": "admin" if p is a else "human"},
            "expect": p["tiers"][0]["action"],
        }
    assert [f for f in lint_directory(folder(tmp_path, a, b)) if f.rule == "conflict"] == []


def test_lint_checks_the_exceptions_register(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    text = (
        (directory / "exceptions.yaml")
        .read_text()
        .replace("approver: ciso-office@corp.example", "approver: red-team@corp.example", 1)
    )
    (directory / "exceptions.yaml").write_text(text)
    result = lint(directory)
    assert result.exit_code == 1
    assert "approver must be someone other than the owner" in result.output


@pytest.mark.parametrize("command", ["lint", "test"])
def test_missing_folder_is_a_clear_failure(tmp_path: Path, command: str) -> None:
    result = runner.invoke(policy_app, [command, "--policies", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "policies folder not found" in result.output


def test_lint_reasons_about_signal_fields(tmp_path: Path) -> None:
    exfil = "signal.exfiltration_volume"
    data = policy(
        "sample",
        [
            tier("exfil", f"{exfil}.value >= 5e9 and {exfil}.source == 'zeek_conn'", "isolate"),
            tier(
                "exfil-any", f"has_signal('exfiltration_volume') and {exfil}.value >= 6e9", "limit"
            ),
            tier("checked", f"{exfil}.threshold > 10", "challenge"),
            tier("shadowed", f"{exfil}.value >= 7e9 and {exfil}.source == 'zeek_conn'", "block"),
        ],
        domain="endpoint",
        applies_to=["host"],
    )
    data["tests"][0] = {
        "name": "exfiltration",
        "input": {
            "risk": 1,
            "signals": [{"name": "exfiltration_volume", "value": 6e9, "source": "zeek_conn"}],
        },
        "expect": "isolate",
    }
    findings = [
        f.message for f in lint_directory(folder(tmp_path, data)) if f.rule == "unreachable-tier"
    ]
    assert findings == [
        "tier 'shadowed' is unreachable: every input it matches is already matched by earlier tier(s) 'exfil'"
    ]


# --- --json (issue 26) ---------------------------------------------------------------------


def test_policy_lint_json_lists_every_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = policy(
        "sample", [tier("everything", "true", "allow"), tier("high", "risk >= 90", "block")]
    )
    directory = folder(tmp_path, data)
    code, doc, err = run_json_command(capsys, "policy", "lint", "--policies", str(directory))
    findings = lint_directory(directory)
    assert code == 1 and any(f.severity == "error" for f in findings)
    assert doc["schema"] == "policylake.cli/policy-lint/v1"
    assert (doc["ok"], doc["exit_code"], doc["error"]) == (False, 1, None)
    assert (doc["policies"], doc["strict"]) == (str(directory), False)
    assert sorted(
        (f["severity"], f["rule"], f["file"], f["policy_id"], f["message"]) for f in doc["findings"]
    ) == sorted((f.severity, f.rule, f.file, f.policy_id, f.message) for f in findings)
    assert doc["counts"] == {s: sum(f.severity == s for f in findings) for s in doc["counts"]}
    assert "policy lint failed" in err  # the human summary, on stderr


def test_policy_test_json_gives_each_case_its_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = policy("sample", [tier("high", "risk >= 90", "block")])
    data["tests"][0]["expect"] = "limit"
    directory = folder(tmp_path, data)
    code, doc, err = run_json_command(capsys, "policy", "test", "--policies", str(directory))
    assert code == 1 and "FAIL" in err
    assert doc["schema"] == "policylake.cli/policy-test/v1" and doc["ok"] is False
    assert doc["counts"] == {"passed": 1, "failed": 1, "not_loaded": 0}
    assert [(c["policy_id"], c["case"], c["expected"], c["got"], c["passed"]) for c in doc["cases"]] == [
        ("sample", "very high risk", "limit", "block", False),
        ("sample", "low risk", "allow", "allow", True),
    ]  # fmt: skip
    shipped_code, shipped, _ = run_json_command(
        capsys, "policy", "test", "--policies", str(POLICIES)
    )
    assert shipped_code == 0 and shipped["ok"] is True and shipped["errors"] == []
    assert shipped["counts"]["passed"] == len(shipped["cases"]) > 0
    assert {c["policy_id"] for c in shipped["cases"]} == {
        p.model.id for p in load_policy_set(POLICIES).policies
    }
