"""Great Expectations, the system of record: one ephemeral context per stage run validates each
suite's batch, renders Data Docs, and must agree with the row predicates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from jobs.core.config import Settings
from jobs.core.errors import PipelineError
from jobs.quality.errors import SuiteError
from jobs.quality.rules import mostly_success
from jobs.quality.suites import Suite

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# Great Expectations
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GxOutcome:
    success: bool
    unexpected_count: int | None
    element_count: int | None
    exception: str | None = None


class GreatExpectationsRunner:
    """One ephemeral Great Expectations context for a stage run.

    Validation results and suites are kept in `<docs_dir>/.gx/` so the Data Docs index in
    `<docs_dir>/index.html` lists every run and both stages (validate, normalize).
    """

    SITE = "policylake"

    def __init__(
        self, docs_dir: str | None, result_format: str = "SUMMARY", samples: int = 0
    ) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self._gx = gx
        # Counts without sample values: GX then skips one Spark job per expectation.
        self.result_format: dict[str, Any] = {
            "result_format": result_format,
            "partial_unexpected_count": samples,
        }
        self.docs_dir = Path(docs_dir) if docs_dir and "://" not in docs_dir else None
        if docs_dir and self.docs_dir is None:
            log.warning("Data Docs need a local folder; %s is not one, so none are built", docs_dir)
        defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
        stores = dict(defaults.stores)
        sites: dict[str, Any] = {}
        if self.docs_dir is not None:
            store_root = self.docs_dir / ".gx"
            for store, sub in (
                (defaults.expectations_store_name, "expectations"),
                (defaults.validation_results_store_name, "validations"),
            ):
                stores[store] = {
                    **stores[store],
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(store_root / sub),
                    },
                }
            sites[self.SITE] = {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(self.docs_dir),
                },
            }
        config = DataContextConfig(
            store_backend_defaults=defaults,
            stores=stores,
            data_docs_sites=sites,
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        # The stage checkpoints the frame itself; GX must not persist a second copy.
        self.datasource = self.context.data_sources.add_spark(
            name="policylake_spark", persist=False
        )
        self._validated: list[Any] = []

    def validate(
        self, suite: Suite, df: DataFrame, params: Mapping[str, Any], run_name: str
    ) -> dict[str, GxOutcome]:
        """Run `suite` on `df` (one batch); outcomes by rule name."""
        from great_expectations.core.run_identifier import RunIdentifier

        gx = self._gx
        expectations = []
        for rule in suite.rules:
            item = dict(suite.document["expectations"][rule.index])
            item["meta"] = {**rule.meta, "rule": rule.name}
            item.pop("id", None)
            expectations.append(item)
        gx_suite = gx.ExpectationSuite(
            name=suite.name, expectations=expectations, meta=dict(suite.document.get("meta") or {})
        )
        if len(gx_suite.expectations) != len(suite.rules):
            raise SuiteError(
                f"{suite.path}: Great Expectations rejected some expectations (see the log)"
            )
        gx_suite = self.context.suites.add_or_update(gx_suite)
        asset = self.datasource.add_dataframe_asset(name=suite.name)
        batch = asset.add_batch_definition_whole_dataframe("run_range")
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": df},
            expectation_parameters=dict(params),
            result_format=self.result_format,
            run_id=RunIdentifier(run_name=run_name),
        )
        self._validated.append(result)
        outcomes: dict[str, GxOutcome] = {}
        for r in result.results:
            config = r.expectation_config
            name = ((config.meta if config is not None else None) or {}).get("rule")
            info = r.result or {}
            exc = (r.exception_info or {}).get("exception_message") if r.exception_info else None
            if isinstance(r.exception_info, dict) and not r.exception_info.get("raised_exception"):
                exc = None
            outcomes[str(name)] = GxOutcome(
                success=bool(r.success),
                unexpected_count=info.get("unexpected_count"),
                element_count=info.get("element_count"),
                exception=exc,
            )
        return outcomes

    def build_docs(self) -> Path | None:
        """Render this run's validation results (and refresh the index)."""
        if self.docs_dir is None or not self._validated:
            return None
        self.context.build_data_docs(site_names=[self.SITE])
        return self.docs_dir / "index.html"


def runner_for(settings: Settings) -> GreatExpectationsRunner:
    v = settings.validation
    return GreatExpectationsRunner(
        settings.paths.data_docs_dir, v.result_format, v.unexpected_samples
    )


def cross_check(
    suite: Suite,
    outcomes: Mapping[str, GxOutcome],
    totals: Mapping[str, tuple[int, int]],
    rows: int,
) -> None:
    """Fail when a row predicate and Great Expectations disagree: then the quarantine and
    the per-date results would not be what the suite says."""
    for rule in suite.rules:
        gx = outcomes.get(rule.name)
        if gx is None:
            raise PipelineError(
                f"validate {suite.name}: Great Expectations returned no result for {rule.name}"
            )
        if gx.exception:
            raise PipelineError(
                f"validate {suite.name}: {rule.name} raised in Great Expectations: {gx.exception}"
            )
        considered, unexpected = totals.get(rule.name, (0, 0))
        ours = mostly_success(considered, unexpected, rule.mostly) if rows else True
        if gx.unexpected_count is not None and int(gx.unexpected_count) != unexpected:
            raise PipelineError(
                f"validate {suite.name}: Great Expectations counted {gx.unexpected_count} unexpected rows for "
                f"{rule.name}, the row predicate {unexpected}; fix the predicate before trusting the quarantine"
            )
        if gx.success != ours:
            raise PipelineError(
                f"validate {suite.name}: Great Expectations says {rule.name} "
                f"{'passed' if gx.success else 'failed'}, the row predicate the opposite"
            )


def run_name(dates: Sequence[date]) -> str:
    first, last = min(dates), max(dates)
    return first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
