"""Policy files, guardrails and the exceptions register: validation names the file and the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from jobs.policy.schema import (
    SCHEMA_FILE,
    PolicyLoadError,
    load_exceptions,
    load_guardrails,
    load_policy_file,
    load_policy_set,
    render_json_schema,
)
from jobs.policy.vocabulary import KNOWN_SIGNALS

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"

VALID = {
    "id": "sample-policy",
    "version": "1.0.0",
    "owner": "secops@corp.example",
    "description": "A small policy used by the schema tests.",
    "domain": "identity",
    "mode": "enforce",
    "applies_to": ["user"],
    "tiers": [
        {"name": "high", "when": "risk >= 90", "action": "block", "valid_for_hours": 24},
        {"name": "baseline", "when": "true", "action": "allow"},
    ],
    "tests": [
        {"name": "high risk blocks", "input": {"risk": 95}, "expect": "block"},
        {"name": "low risk allows", "input": {"risk": 5}, "expect": "allow"},
    ],
}


def write(tmp_path: Path, data: object, name: str = "sample-policy") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def edited(**changes: object) -> dict[str, object]:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data.update(changes)
    return data


def test_shipped_policy_set_loads() -> None:
    policy_set = load_policy_set(POLICIES)
    ids = {p.compiled.id for p in policy_set.policies}
    assert ids == {"identity-sessions", "endpoint-containment", "network-edge", "cloud-iam"}
    assert {p.compiled.domain for p in policy_set.policies} == {
        "identity",
        "endpoint",
        "network",
        "cloud",
    }
    for p in policy_set.policies:
        assert p.compiled.id == p.path.stem
        assert len(p.compiled.hash) == 64


def test_valid_policy_loads_and_hash_is_of_file_bytes(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path, VALID)
    loaded = load_policy_file(path)
    assert loaded.compiled.hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [t.name for t in loaded.compiled.tiers] == ["high", "baseline"]


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"mode": "audit"}, "mode", "'enforce' or 'shadow'"),
        ({"domain": "email"}, "domain", "identity"),
        ({"version": 1.1}, "version", "quoted string"),
        ({"applies_to": ["user", "printer"]}, "applies_to[1]", "user"),
        ({"applies_to": []}, "applies_to", "at least 1"),
        ({"colour": "red"}, "colour", "unknown key"),
        (
            {
                "tiers": [
                    {"name": "x", "when": "risk >= 90", "action": "nuke", "valid_for_hours": 1}
                ]
            },
            "tiers[0].action",
            "allow",
        ),
        (
            {
                "tiers": [
                    {"name": "x", "when": "rsk >= 90", "action": "block", "valid_for_hours": 1}
                ]
            },
            "tiers[0].when",
            "unknown name 'rsk'",
        ),
        (
            {"tiers": [{"name": "x", "when": "risk >= 90", "action": "block"}]},
            "tiers[0]",
            "valid_for_hours is required",
        ),
        (
            {
                "tiers": [
                    {"name": "x", "when": "risk >= 90", "action": "block", "valid_for_hours": 9999}
                ]
            },
            "tiers[0].valid_for_hours",
            "720",
        ),
        (
            {
                "tests": [
                    {"name": "only positive", "input": {"risk": 95}, "expect": "block"},
                    {"name": "again positive", "input": {"risk": 99}, "expect": "block"},
                ]
            },
            "(top level)",
            "negative case",
        ),
        (
            {
                "tests": [
                    {"name": "bad input key", "input": {"risk": 95, "riks": 1}, "expect": "block"},
                    {"name": "neg", "input": {"risk": 1}, "expect": "allow"},
                ]
            },
            "tests[0].input.riks",
            "unknown key",
        ),
        (
            {
                "tests": [
                    {
                        "name": "bad signal",
                        "input": {"risk": 95, "signals": ["teleport"]},
                        "expect": "block",
                    },
                    {"name": "neg", "input": {"risk": 1}, "expect": "allow"},
                ]
            },
            "tests[0].input.signals",
            "unknown signal",
        ),
    ],
)
def test_schema_errors_name_file_and_key(
    tmp_path: Path, changes: dict[str, object], key: str, message: str
) -> None:
    path = write(tmp_path, edited(**changes))
    with pytest.raises(PolicyLoadError) as info:
        load_policy_file(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {key}: "), text
    assert message in text
    assert "\n" not in text


def test_missing_key_is_named(tmp_path: Path) -> None:
    data = edited()
    del data["owner"]
    with pytest.raises(PolicyLoadError, match=r"owner: required key is missing"):
        load_policy_file(write(tmp_path, data))


def test_unknown_signal_in_condition_is_flagged_for_lint(tmp_path: Path) -> None:
    data = edited(
        tiers=[
            {
                "name": "x",
                "when": "has_signal('telepathy')",
                "action": "block",
                "valid_for_hours": 1,
            }
        ]
    )
    with pytest.raises(PolicyLoadError) as info:
        load_policy_file(write(tmp_path, data))
    assert info.value.rule == "unknown-signal"
    assert "tiers[0].when" in str(info.value)


def test_id_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError) as info:
        load_policy_file(write(tmp_path, VALID, name="other-name"))
    assert info.value.rule == "id-filename"
    assert "must equal the file name 'other-name'" in str(info.value)


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "sample-policy.yaml"
    path.write_text("id: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(PolicyLoadError, match="not valid YAML"):
        load_policy_file(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "sample-policy.yaml"
    path.write_text("id: sample-policy\ntiers: [\n  - oops: {\n", encoding="utf-8")
    with pytest.raises(PolicyLoadError, match=r"not valid YAML \(line \d+\)"):
        load_policy_file(path)


def test_one_broken_file_fails_the_whole_set(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder)
    text = (
        (folder / "network-edge.yaml").read_text().replace("action: block", "action: obliterate", 1)
    )
    (folder / "network-edge.yaml").write_text(text)
    with pytest.raises(PolicyLoadError, match=r"network-edge.yaml: tiers\[0\].action"):
        load_policy_set(folder)


def test_exceptions_register_validation(tmp_path: Path) -> None:
    good = {
        "id": "EXC-1",
        "entity_type": "user",
        "entity_id": "a@corp.example",
        "owner": "alice@corp.example",
        "approver": "ciso@corp.example",
        "reason": "a documented business reason",
        "expires": "2026-10-31",
    }
    path = tmp_path / "exceptions.yaml"
    path.write_text(yaml.safe_dump({"exceptions": [good]}))
    (grant,) = load_exceptions(path)
    assert grant.max_action == "allow" and grant.policies == ["*"]
    for change, message in [
        ({"approver": "Alice@corp.example"}, "approver must be someone other than the owner"),
        ({"expires": "someday"}, "exceptions[0].expires"),
        ({"owner": None}, "exceptions[0].owner"),
    ]:
        path.write_text(yaml.safe_dump({"exceptions": [{**good, **change}]}))
        with pytest.raises(PolicyLoadError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_exceptions(path)


def test_exception_naming_an_unknown_policy_fails_the_set(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder)
    text = (folder / "exceptions.yaml").read_text().replace("[network-edge]", "[network-edgy]")
    (folder / "exceptions.yaml").write_text(text)
    with pytest.raises(
        PolicyLoadError, match=r"exceptions\[1\].policies: unknown policy network-edgy"
    ):
        load_policy_set(folder)


def test_guardrails_validation(tmp_path: Path) -> None:
    path = tmp_path / "guardrails.yaml"
    # absent file: the defaults only when asked for (issue 24, finding 4: fail closed)
    assert load_guardrails(path, required=False).domain_max("endpoint") == "block"
    with pytest.raises(PolicyLoadError, match="guardrails file not found"):
        load_guardrails(path)
    path.write_text("degraded_evidence:\n  actions: [limit]\n  fallback_action: block\n")
    with pytest.raises(
        PolicyLoadError, match="fallback_action block must be less severe than limit"
    ):
        load_guardrails(path)
    path.write_text("allowlist:\n  max_action: block\n")
    with pytest.raises(PolicyLoadError, match=r"allowlist.max_action"):
        load_guardrails(path)
    path.write_text("max_action:\n  email: block\n")
    with pytest.raises(PolicyLoadError, match=r"max_action.email"):
        load_guardrails(path)


def test_json_schema_file_is_current() -> None:
    committed = (POLICIES / SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == render_json_schema(), "run `policylake policy schema` to regenerate"


def test_every_signal_the_scoring_stage_emits_is_known_to_policies() -> None:
    """The names passed to `make_signal` in the scoring code (signals, lateral) are exactly the vocabulary
    policies check their conditions against (both come from jobs.core.config.SIGNAL_NAMES)."""
    import ast

    from jobs.stages.score import lateral, signals

    trees = [ast.parse(Path(m.__file__).read_text(encoding="utf-8")) for m in (signals, lateral)]
    emitted = {
        node.args[0].value
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "make_signal"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert emitted == set(KNOWN_SIGNALS)


def test_shipped_policies_validate_against_the_exported_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = yaml.safe_load((POLICIES / SCHEMA_FILE).read_text())
    for path in sorted(POLICIES.glob("*.yaml")):
        if path.name in ("guardrails.yaml", "exceptions.yaml"):
            continue
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID, "mode": "audit"}, schema)


def test_a_policy_set_without_guardrails_or_a_configured_folder_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24, finding 4: no silent defaults for guardrails, no silent bundled policies."""
    from jobs.core.config import load_settings
    from jobs.policy.schema import resolve_policies_dir

    folder = tmp_path / "without-guardrails"
    shutil.copytree(POLICIES, folder)
    (folder / "guardrails.yaml").unlink()
    with pytest.raises(PolicyLoadError, match=r"guardrails\.yaml: guardrails file not found"):
        load_policy_set(folder)
    assert load_policy_set(folder, require_guardrails=False).guardrails.break_glass.accounts == []
    monkeypatch.chdir(tmp_path)
    configured = load_settings(None, environ={"POLICYLAKE__POLICY__POLICIES_DIR": "mine"})
    with pytest.raises(PolicyLoadError, match=r"policy\.policies_dir: mine is not a folder"):
        resolve_policies_dir(configured)
    allowed = load_settings(
        None,
        environ={
            "POLICYLAKE__POLICY__POLICIES_DIR": "mine",
            "POLICYLAKE__POLICY__ALLOW_MISSING": "[policies_dir]",
        },
    )
    assert resolve_policies_dir(allowed) == POLICIES  # the bundled policies, on purpose
    # left at its default, a missing ./policies still means the bundled ones
    assert resolve_policies_dir(load_settings(None, environ={})) == POLICIES
