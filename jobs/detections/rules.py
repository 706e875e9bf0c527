"""Sigma rule files: found in the configured folders, parsed, named, with their inline examples.

A rule's signal is `sigma.<slug>`, the slug being its file stem in lower case with anything
but `[a-z0-9_]` turned into `_` (`lsass_memory_access.yml` -> `sigma.lsass_memory_access`):
stable across edits of the rule, readable in a policy (`has_signal('sigma.lsass_memory_access')`)
and unique per folder set (a second file with the same slug is reported and skipped).

Inline examples (panther-analysis style) are a top-level `tests:` list in the rule file,
which Sigma tools ignore as a custom attribute:

    tests:
      - name: procdump of lsass
        expect: match          # or no_match
        event: {Channel: Microsoft-Windows-Sysmon/Operational, EventID: 10, TargetImage: ...}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.rule import SigmaRule

from jobs.core.config import DETECTION_LEVELS, DETECTION_SIGNAL_PREFIX, REPOSITORY_ROOT
from jobs.detections.mapping import Target, Unsupported, resolve_logsource

__all__ = [
    "Example",
    "LoadFailure",
    "RuleFile",
    "attack_ids",
    "load_rules",
    "resolve_rules_dirs",
    "rule_files",
    "slug_of",
]

RULE_SUFFIXES = (".yml", ".yaml")
_ATTACK_TECHNIQUE = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)
_ATTACK_TACTIC = re.compile(r"^attack\.([a-z][a-z_-]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    """One inline example of a rule: an event (Windows: field names as in the event log) and
    whether the rule must match it."""

    name: str
    expect_match: bool
    event: dict[str, Any]


@dataclass(frozen=True)
class RuleFile:
    """A parsed Sigma rule and what policylake needs to run and explain it."""

    path: Path
    slug: str
    title: str
    level: str
    tags: tuple[str, ...]
    target: Target | Unsupported
    text: str  # the YAML, so each compilation parses a fresh rule (pySigma mutates rules)
    examples: tuple[Example, ...] = ()
    sigma_id: str | None = None
    builtin: bool = False  # shipped in the repository's detections/

    @property
    def signal(self) -> str:
        return f"{DETECTION_SIGNAL_PREFIX}{self.slug}"

    @property
    def techniques(self) -> tuple[str, ...]:
        return attack_ids(self.tags)

    def sigma_rule(self) -> SigmaRule:
        return SigmaRule.from_yaml(self.text)


@dataclass(frozen=True)
class LoadFailure:
    """A rule file that cannot be used, by name, with the reason."""

    path: Path
    name: str
    reason: str
    ingested: bool = True  # False: its log source is not one policylake ingests
    builtin: bool = False


@dataclass
class Loaded:
    rules: list[RuleFile] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)


def slug_of(path: Path) -> str:
    return re.sub(r"[^a-z0-9_]", "_", path.stem.lower())[:120].strip("_") or "rule"


def attack_ids(tags: Iterable[str]) -> tuple[str, ...]:
    """ATT&CK technique ids of a rule's tags (`attack.t1003.001` -> `T1003.001`)."""
    found = []
    for tag in tags:
        m = _ATTACK_TECHNIQUE.match(tag)
        if m:
            found.append(m.group(1).upper())
    return tuple(found)


def attack_tactics(tags: Iterable[str]) -> tuple[str, ...]:
    """ATT&CK tactics of a rule's tags (`attack.credential-access` -> `credential-access`)."""
    return tuple(m.group(1).lower() for m in (_ATTACK_TACTIC.match(t) for t in tags) if m)


def resolve_rules_dirs(
    configured: Sequence[str], override: Sequence[Path] | None = None
) -> list[Path]:
    """The rule folders: `override` (the CLI's --rules) as given, else each configured folder
    resolved against the working directory, then the repository (its own `detections/`)."""
    if override:
        return [Path(p) for p in override]
    out = []
    for entry in configured:
        candidate = Path(entry)
        if candidate.is_absolute() or candidate.exists():
            out.append(candidate)
            continue
        bundled = REPOSITORY_ROOT / candidate
        out.append(bundled if bundled.exists() else candidate)
    return out


def rule_files(paths: Sequence[Path]) -> list[Path]:
    """Rule files under `paths` (folders searched recursively, files taken as they are)."""
    found: list[Path] = []
    for p in paths:
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(
                sorted(f for f in p.rglob("*") if f.suffix in RULE_SUFFIXES and f.is_file())
            )
    return found


def _examples(raw: Any, where: str) -> tuple[Example, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where}: `tests` must be a list of examples")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("event"), dict):
            raise ValueError(f"{where}: tests[{i}] needs an `event` mapping")
        expect = str(item.get("expect", "match")).lower()
        if expect not in ("match", "no_match"):
            raise ValueError(f"{where}: tests[{i}].expect must be match or no_match")
        out.append(
            Example(str(item.get("name", f"example {i + 1}")), expect == "match", item["event"])
        )
    return tuple(out)


def _parse(path: Path, builtin: bool) -> RuleFile | LoadFailure:
    name = path.stem
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return LoadFailure(
            path, name, f"not readable YAML: {str(exc).splitlines()[0]}", True, builtin
        )
    if not isinstance(doc, dict) or "detection" not in doc:
        kind = "a correlation or filter rule" if isinstance(doc, dict) else "not a Sigma rule"
        return LoadFailure(path, name, f"{kind}: only detection rules are run", True, builtin)
    title = str(doc.get("title") or name)
    try:
        rule = SigmaRule.from_yaml(text)
        examples = _examples(doc.get("tests"), path.name)
    except Exception as exc:  # pySigma raises many error types for a bad rule
        return LoadFailure(path, title, f"not a valid Sigma rule: {exc}", True, builtin)
    ls = rule.logsource
    level = rule.level.name.lower() if rule.level is not None else "medium"
    if level not in DETECTION_LEVELS:
        level = "medium"
    target = resolve_logsource(ls.product, ls.category, ls.service)
    return RuleFile(
        path=path,
        slug=slug_of(path),
        title=title,
        level=level,
        tags=tuple(str(t) for t in rule.tags),
        target=target,
        text=text,
        examples=examples,
        sigma_id=str(rule.id) if rule.id is not None else None,
        builtin=builtin,
    )


def load_rules(paths: Sequence[Path], builtin_dir: Path | None = None) -> Loaded:
    """Every rule file under `paths`, parsed; what cannot be used is a `LoadFailure` by name.

    Rules whose log source policylake does not evaluate are failures too (with `ingested`
    telling whether it is one of our sources). `builtin_dir` marks the project's own rules.
    """
    own = (builtin_dir or REPOSITORY_ROOT / "detections").resolve()
    loaded = Loaded()
    seen: dict[str, Path] = {}
    for path in rule_files(paths):
        builtin = own in path.resolve().parents
        parsed = _parse(path, builtin)
        if isinstance(parsed, LoadFailure):
            loaded.failures.append(parsed)
            continue
        if isinstance(parsed.target, Unsupported):
            loaded.failures.append(
                LoadFailure(
                    path, parsed.title, parsed.target.reason, parsed.target.ingested, builtin
                )
            )
            continue
        if parsed.slug in seen:
            loaded.failures.append(
                LoadFailure(
                    path,
                    parsed.title,
                    f"signal name {parsed.signal} already used by {seen[parsed.slug]}",
                    True,
                    builtin,
                )
            )
            continue
        seen[parsed.slug] = path
        loaded.rules.append(parsed)
    return loaded
