"""`policy lint`: what the schema cannot see — unreachable tiers and conflicting policies.

Conditions are small, so lint reasons about them by model search: it collects the
atoms a set of conditions uses (numeric thresholds, strings compared, signals,
booleans, degraded sources), builds every combination of boundary values (one value
per region between thresholds), and evaluates the real compiled conditions on each.
Over these atoms that search is exhaustive, so "no input reaches tier X" and "this
input gets block from one policy and limit from another" are facts with a witness,
not heuristics. When the combinations exceed `MAX_CONTEXTS` lint samples them and
only reports what sampling can prove (conflicts, and tiers after an unconditional one).

Severity: error (schema, YAML, unknown signal, id/file name, unreachable tier,
conflict inside one domain) fails lint; warning (cross-domain conflict, a tier above
its domain ceiling) fails only with --strict; info (overlap with a policy declared in
`complements`) never fails.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.policy.expressions import Call, Compare, Expression, ListLiteral, Literal, Name, walk
from jobs.policy.schema import (
    EXCEPTIONS_FILE,
    GUARDRAILS_FILE,
    CompiledPolicy,
    Guardrails,
    LoadedPolicy,
    PolicyLoadError,
    check_references,
    load_exceptions,
    load_guardrails,
    load_policy_file,
    policy_files,
)
from jobs.policy.vocabulary import CONTEXT_VARIABLES, SEVERITY, level_rank

MAX_CONTEXTS = 50_000
# Stands for "some Sigma detection" when a condition uses detection('<level>').
ANY_DETECTION = "sigma.any_rule"
INTEGER_NAMES = frozenset({"risk", "risk_today", "sessions", "signal_count"})


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    rule: str
    file: str
    policy_id: str | None
    message: str


# --- model search ---------------------------------------------------------------------


@dataclass
class _Atoms:
    numbers: dict[str, set[float]]
    strings: dict[str, set[str]]
    bools: set[str]
    signals: set[str]
    signal_fields: dict[str, dict[str, set[Any]]]  # signal -> field -> literals compared
    sources: set[str]


def _collect(expressions: Iterable[Expression]) -> _Atoms:
    atoms = _Atoms({}, {}, set(), set(), {}, set())
    for expr in expressions:
        atoms.signals |= set(expr.signals)
        atoms.sources |= set(expr.sources)
        for node in walk(expr.tree):
            if isinstance(node, Call) and node.function == "detection":
                # any detection at or above a level: one stand-in rule whose level varies
                rank = float(level_rank(node.argument))
                fields = atoms.signal_fields.setdefault(ANY_DETECTION, {})
                fields.setdefault("threshold", set()).add(rank)
            if isinstance(node, Name) and CONTEXT_VARIABLES.get(node.dotted) == "bool":
                atoms.bools.add(node.dotted)
            if not isinstance(node, Compare):
                continue
            for name, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(name, Name) and isinstance(other, (Literal, ListLiteral)):
                    values = other.items if isinstance(other, ListLiteral) else (other.value,)
                    _add_literals(atoms, name.dotted, values)
                if isinstance(name, Literal) and isinstance(other, Name):
                    if other.dotted == "degraded_sources" and isinstance(name.value, str):
                        atoms.sources.add(name.value)
                    if other.dotted == "signals" and isinstance(name.value, str):
                        atoms.signals.add(name.value)
    return atoms


def _add_literals(atoms: _Atoms, name: str, values: Iterable[Any]) -> None:
    for value in values:
        if isinstance(value, bool) or value is None:
            continue
        if name.startswith("signal.") and name.count(".") == 2:
            _, signal, field_name = name.split(".")
            literal = float(value) if isinstance(value, (int, float)) else str(value)
            atoms.signal_fields.setdefault(signal, {}).setdefault(field_name, set()).add(literal)
        elif isinstance(value, (int, float)):
            atoms.numbers.setdefault(name, set()).add(float(value))
        else:
            atoms.strings.setdefault(name, set()).add(str(value))


def _number_candidates(name: str, thresholds: set[float]) -> list[float]:
    points = sorted(thresholds)
    if name in INTEGER_NAMES:
        values = {int(t) + d for t in points for d in (-1, 0, 1)} | {int(t) for t in points}
        if name.startswith("risk"):
            values = {min(100, max(0, v)) for v in values}
        return sorted(float(v) for v in values)
    mids = [(a + b) / 2 for a, b in itertools.pairwise(points)]
    return sorted({*points, *mids, points[0] - 1, points[-1] + 1})


def _dimensions(atoms: _Atoms, entity_types: Sequence[str]) -> list[tuple[str, list[Any]]]:
    dims: list[tuple[str, list[Any]]] = [("entity_type", list(entity_types))]
    for name, thresholds in sorted(atoms.numbers.items()):
        dims.append((name, _number_candidates(name, thresholds)))
    for name, literals in sorted(atoms.strings.items()):
        if name != "entity_type":
            dims.append((name, [*sorted(literals), "(other)", None]))
    for name in sorted(atoms.bools):
        dims.append((name, [True, False]))
    for signal in sorted(atoms.signals | set(atoms.signal_fields)):
        fields = sorted(atoms.signal_fields.get(signal, {}).items())
        options: list[list[Any]] = []
        for _, literals in fields:
            if all(isinstance(v, float) for v in literals):
                options.append(list(_number_candidates("value", {float(v) for v in literals})))
            else:
                options.append([*sorted(str(v) for v in literals), "(other)", None])
        states: list[Any] = [None]  # absent
        states += [
            dict(zip([f for f, _ in fields], combo, strict=True))
            for combo in itertools.product(*options)
        ]
        dims.append((f"signal:{signal}", states))
    for source in sorted(atoms.sources):
        dims.append((f"degraded:{source}", [False, True]))
    return dims


def _context(assignment: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    ctx: dict[str, Any] = {"signals": [], "signal": {}, "degraded_sources": [], "risk": 0}
    for key, value in assignment:
        if key.startswith("signal:"):
            if value is not None:
                name = key.split(":", 1)[1]
                ctx["signals"].append(name)
                ctx["signal"][name] = value
        elif key.startswith("degraded:"):
            if value:
                ctx["degraded_sources"].append(key.split(":", 1)[1])
        else:
            ctx[key] = int(value) if key in INTEGER_NAMES and isinstance(value, float) else value
    ctx["signal_count"] = ctx.get("signal_count", len(ctx["signals"]))
    return ctx


def contexts(
    expressions: Iterable[Expression], entity_types: Sequence[str]
) -> tuple[Iterator[dict[str, Any]], bool]:
    """Candidate contexts covering every region of the atoms; (contexts, exhaustive)."""
    dims = _dimensions(_collect(expressions), entity_types)
    total = 1
    for _, values in dims:
        total *= len(values)
    names = [n for n, _ in dims]
    if total <= MAX_CONTEXTS:
        product = itertools.product(*(values for _, values in dims))
        return (_context(list(zip(names, combo, strict=True))) for combo in product), True
    rng = random.Random(0)
    sampled = (
        _context([(n, rng.choice(values)) for n, values in dims]) for _ in range(MAX_CONTEXTS)
    )
    return sampled, False


def describe_context(ctx: dict[str, Any], policies: Sequence[CompiledPolicy]) -> str:
    used: set[str] = set()
    for p in policies:
        for t in p.tiers:
            used |= set(t.when.names)
    parts = [f"entity_type={ctx.get('entity_type')}", f"risk={ctx.get('risk')}"]
    parts += [
        f"{k}={ctx[k]!r}"
        for k in sorted(used)
        if k in ctx and k not in ("entity_type", "risk", "signals", "degraded_sources")
    ]
    parts.append(f"signals=[{', '.join(sorted(ctx['signals']))}]")
    if ctx["degraded_sources"]:
        parts.append(f"degraded_sources=[{', '.join(ctx['degraded_sources'])}]")
    return ", ".join(parts)


def _first(policy: CompiledPolicy, ctx: dict[str, Any]) -> int | None:
    for i, tier in enumerate(policy.tiers):
        if tier.when.evaluate(ctx):
            return i
    return None


# --- checks ---------------------------------------------------------------------------


def _is_trivially_true(expr: Expression) -> bool:
    tree = expr.tree
    return isinstance(tree, Literal) and tree.value is True


def unreachable_tiers(loaded: LoadedPolicy) -> list[Finding]:
    policy = loaded.compiled
    findings: list[Finding] = []
    file = str(loaded.path)
    catch_all = next((i for i, t in enumerate(policy.tiers) if _is_trivially_true(t.when)), None)
    if catch_all is not None:
        for tier in policy.tiers[catch_all + 1 :]:
            findings.append(
                Finding(
                    "error",
                    "unreachable-tier",
                    file,
                    policy.id,
                    f"tier '{tier.name}' comes after the unconditional tier "
                    f"'{policy.tiers[catch_all].name}' and can never match",
                )
            )
    candidates, exhaustive = contexts([t.when for t in policy.tiers], policy.applies_to)
    if not exhaustive:
        return findings
    first_hits: set[int] = set()
    shadowed_by: dict[int, set[int]] = {i: set() for i in range(len(policy.tiers))}
    satisfiable: set[int] = set()
    for ctx in candidates:
        matched = [i for i, t in enumerate(policy.tiers) if t.when.evaluate(ctx)]
        if not matched:
            continue
        first_hits.add(matched[0])
        satisfiable.update(matched)
        for i in matched[1:]:
            shadowed_by[i].add(matched[0])
    last = catch_all if catch_all is not None else len(policy.tiers) - 1
    for i, tier in enumerate(policy.tiers[: last + 1]):
        if i in first_hits:
            continue
        if i not in satisfiable:
            message = f"tier '{tier.name}' can never match: no input satisfies {tier.when.source!r}"
        else:
            earlier = ", ".join(f"'{policy.tiers[j].name}'" for j in sorted(shadowed_by[i]))
            message = (
                f"tier '{tier.name}' is unreachable: every input it matches is already "
                f"matched by earlier tier(s) {earlier}"
            )
        findings.append(Finding("error", "unreachable-tier", file, policy.id, message))
    return findings


def conflicts(a: LoadedPolicy, b: LoadedPolicy) -> list[Finding]:
    """Two policies acting on the same entities with different actions for the same input."""
    pa, pb = a.compiled, b.compiled
    shared = [t for t in pa.applies_to if t in pb.applies_to]
    if not shared:
        return []
    candidates, _ = contexts([t.when for t in (*pa.tiers, *pb.tiers)], shared)
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for ctx in candidates:
        i, j = _first(pa, ctx), _first(pb, ctx)
        if i is None or j is None:
            continue
        ta, tb = pa.tiers[i], pb.tiers[j]
        if "allow" in (ta.action, tb.action) or ta.action == tb.action:
            continue
        pairs.setdefault((ta.name, tb.name), ctx)
    if not pairs:
        return []
    if pa.domain == pb.domain:
        severity, rule, note = "error", "conflict", "same domain: enforcement would get two actions"
    elif pb.id in pa.complements or pa.id in pb.complements:
        severity, rule, note = (
            "info",
            "overlap",
            "declared complementary (different enforcement points)",
        )
    else:
        severity, rule, note = (
            "warning",
            "conflict",
            f"across domains {pa.domain}/{pb.domain}; list the other policy in `complements` if intended",
        )
    shown = list(pairs.items())[:3]
    detail = "; ".join(
        f"'{ta}' ({_action(pa, ta)}) vs '{tb}' ({_action(pb, tb)}), e.g. {describe_context(ctx, [pa, pb])}"
        for (ta, tb), ctx in shown
    )
    more = f" (+{len(pairs) - len(shown)} more tier pairs)" if len(pairs) > len(shown) else ""
    return [
        Finding(
            severity,
            rule,
            str(a.path),
            pa.id,
            f"overlaps {pb.id} with different actions ({note}): {detail}{more}",
        )
    ]


def _action(policy: CompiledPolicy, tier_name: str) -> str:
    return next(t.action for t in policy.tiers if t.name == tier_name)


def ceilings(loaded: LoadedPolicy, rules: Guardrails) -> list[Finding]:
    ceiling = rules.domain_max(loaded.compiled.domain)
    return [
        Finding(
            "warning",
            "ceiling",
            str(loaded.path),
            loaded.compiled.id,
            f"tier '{t.name}' recommends {t.action} but {loaded.compiled.domain} actions are capped at {ceiling}",
        )
        for t in loaded.compiled.tiers
        if SEVERITY[t.action] > SEVERITY[ceiling]
    ]


def lint_directory(directory: Path) -> list[Finding]:
    findings: list[Finding] = []
    try:
        files = policy_files(directory)
    except PolicyLoadError as exc:
        return [Finding("error", exc.rule, exc.file or str(directory), None, str(exc))]
    if not files:
        findings.append(
            Finding(
                "error", "schema", str(directory), None, f"{directory}: no policy files (*.yaml)"
            )
        )
    loaded: list[LoadedPolicy] = []
    for path in files:
        try:
            loaded.append(load_policy_file(path))
        except PolicyLoadError as exc:
            findings.append(Finding("error", exc.rule, str(path), path.stem, str(exc)))
    rules = Guardrails()
    try:
        rules = load_guardrails(directory / GUARDRAILS_FILE)
    except PolicyLoadError as exc:
        findings.append(
            Finding("error", exc.rule, str(directory / GUARDRAILS_FILE), None, str(exc))
        )
    try:
        exceptions = load_exceptions(directory / EXCEPTIONS_FILE)
        check_references(tuple(loaded), exceptions, directory)
    except PolicyLoadError as exc:
        findings.append(Finding("error", exc.rule, exc.file or str(directory), None, str(exc)))
    for item in loaded:
        findings.extend(unreachable_tiers(item))
        findings.extend(ceilings(item, rules))
    for a, b in itertools.combinations(loaded, 2):
        findings.extend(conflicts(a, b))
    return findings


def failed(findings: Sequence[Finding], strict: bool = False) -> bool:
    bad = {"error", "warning"} if strict else {"error"}
    return any(f.severity in bad for f in findings)
