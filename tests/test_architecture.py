"""The architecture as checks: layers (import-linter), one catalogue of tables, one writer per
table, no table names spelled outside the catalogue, no imports hidden in functions."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from jobs.core.lake import Lake, TableOwnershipError
from jobs.core.tables import CATALOGUE, ERASURE_MODULE, SILVER_EVENTS, render_markdown
from tests.conftest import REPO_ROOT

JOBS = REPO_ROOT / "jobs"
TABLE_NAME = re.compile(r"(bronze|silver|gold|ops)\.[a-z_]+")


def _modules() -> list[Path]:
    return sorted(JOBS.rglob("*.py"))


def test_layers_hold_as_import_linter_checks_them() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_project_import_is_hidden_inside_a_function() -> None:
    """Imports of `jobs` modules are at module level, where import-linter and readers see
    them; a cycle cannot hide behind a function-level import."""
    hidden = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                names = (
                    [sub.module or ""]
                    if isinstance(sub, ast.ImportFrom)
                    else [a.name for a in sub.names]
                    if isinstance(sub, ast.Import)
                    else []
                )
                if any(n == "jobs" or n.startswith("jobs.") for n in names):
                    hidden.append(f"{path.relative_to(REPO_ROOT)}:{sub.lineno}")
    assert not hidden, f"function-level imports of jobs modules: {hidden}"


def test_no_table_name_is_spelled_outside_the_catalogue() -> None:
    spelled = []
    for path in _modules():
        if path == JOBS / "core" / "tables.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if TABLE_NAME.fullmatch(node.value):
                    spelled.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.value!r}")
            elif isinstance(node, ast.JoinedStr) and node.values:
                first = node.values[0]
                if (
                    isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                    and re.fullmatch(r"(bronze|silver|gold|ops)\.", first.value)
                ):
                    spelled.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} f-string")
    assert not spelled, f"table names outside jobs/core/tables.py: {spelled}"


def test_every_table_is_declared_once_with_an_owner_a_writer_and_documented_columns() -> None:
    assert len({t.name for t in CATALOGUE.values()}) == len(CATALOGUE)
    for table in CATALOGUE.values():
        assert table.owner and table.readers and table.description, table.name
        assert table.name.split(".", 1)[0] == table.layer
        undocumented = [c.name for c in table.columns if not c.doc.strip()]
        assert not undocumented, f"{table.name}: columns without a meaning: {undocumented}"
        assert len(set(table.column_names)) == len(table.column_names), table.name
        if table.date_column is not None:
            assert table.date_column in table.column_names, table.name


def test_each_writer_module_exists_and_names_the_tables_it_writes() -> None:
    """The declared writer is a real module of the package that refers to the table (by its
    catalogue constant); nothing else may write it (the next test)."""
    by_writer: dict[str, list[str]] = {}
    for table in CATALOGUE.values():
        by_writer.setdefault(table.writer, []).append(table.name)
    constants = {
        value.name: name
        for name, value in vars(importlib.import_module("jobs.core.tables")).items()
        if getattr(value, "name", None) in CATALOGUE and name.isupper()
    }
    for writer, names in by_writer.items():
        module = importlib.import_module(writer)
        source = Path(str(module.__file__)).read_text(encoding="utf-8")
        for name in names:
            if name.startswith("bronze."):
                assert "BRONZE[" in source, (writer, name)
            else:
                assert constants[name] in source, (writer, name)


def test_the_lake_refuses_a_write_from_a_module_that_is_not_the_tables_writer() -> None:
    lake = Lake(None, "/nonexistent")  # type: ignore[arg-type]  # refused before any I/O
    call = "lake.replace_dates(None, table, [day])"
    scope = {"lake": lake, "table": SILVER_EVENTS, "day": date(2026, 10, 1)}
    with pytest.raises(TableOwnershipError, match=r"its one writer is jobs\.stages\.normalize"):
        exec(call, {**scope, "__name__": "jobs.stages.metrics.stage"})
    with pytest.raises(TableOwnershipError):
        exec("lake.for_update(table)", {**scope, "__name__": "jobs.governance.feedback"})
    with pytest.raises(TableOwnershipError, match=r"jobs\.stages\.metrics\.stage may not"):
        exec(
            "lake.replace_rows([], table, [day])",
            {**scope, "__name__": "jobs.stages.metrics.stage"},
        )
    # the writer itself, and the erasure, get past the check (then fail on the missing lake)
    for module in (SILVER_EVENTS.writer, ERASURE_MODULE):
        with pytest.raises(Exception) as other:
            exec(call, {**scope, "__name__": module})
        assert not isinstance(other.value, TableOwnershipError)


def test_docs_tables_md_is_generated_from_the_catalogue() -> None:
    committed = (REPO_ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    assert committed == render_markdown(), (
        "docs/tables.md is stale: run `python -m jobs.core.tables > docs/tables.md`"
    )
    for table in CATALOGUE.values():
        assert f"## {table.name}" in committed
        assert table.writer in committed
