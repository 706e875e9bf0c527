"""Great Expectations, the system of record: one ephemeral context per stage run validates each
suite's batch, renders Data Docs, and must agree with the row predicates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from jobs.core.config import Settings
from jobs.core.errors import PipelineError
from jobs.quality.errors import SuiteError
from jobs.quality.rules import mostly_success
from jobs.quality.suites import Suite, resolve_kwargs

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
        self,
        docs_dir: str | None,
        result_format: str = "SUMMARY",
        samples: int = 0,
        recompute: bool = False,
    ) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self._gx = gx
        # GX computes the suites from the data (cross-checked), or records the counts
        self.recompute = recompute or samples > 0
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
        self.validated: list[Any] = []  # this run's suite validation results

    def _suite(self, suite: Suite) -> Any:
        """The suite as a GX `ExpectationSuite`, added to (or updated in) the context."""
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
        return self.context.suites.add_or_update(gx_suite)

    def keep_results(
        self,
        suite: Suite,
        df: DataFrame,
        totals: Mapping[str, tuple[int, int]],
        rows: int,
        params: Mapping[str, Any],
        run_name: str,
    ) -> None:
        """The suite's GX validation result for `df`, whose rule counts are `totals` over
        `rows` rows: recorded from them, or (recompute) computed by GX and cross-checked."""
        if self.recompute:
            cross_check(suite, self.validate(suite, df, params, run_name), totals, rows)
        else:
            self.record(suite, totals, rows, params, run_name)

    def validate(
        self, suite: Suite, df: DataFrame, params: Mapping[str, Any], run_name: str
    ) -> dict[str, GxOutcome]:
        """Run `suite` on `df` (one batch): Great Expectations computes every expectation's
        metrics from the data itself. Outcomes by rule name."""
        from great_expectations.core.run_identifier import RunIdentifier

        gx = self._gx
        gx_suite = self._suite(suite)
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
        self.validated.append(result)
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

    def record(
        self,
        suite: Suite,
        totals: Mapping[str, tuple[int, int]],
        rows: int,
        params: Mapping[str, Any],
        run_name: str,
    ) -> None:
        """Store the suite's validation result built from counts the row predicates made
        (`totals`: rule name -> (considered, unexpected) over `rows` rows), as Great
        Expectations would have computed them, without GX scanning the data again.

        The result has GX's own shape per expectation (`SUMMARY` without samples: element,
        unexpected and missing counts and percentages), success by GX's `mostly` rule, and
        lands in the same validation results store, so Data Docs render it like any other.
        """
        from great_expectations.core.expectation_validation_result import (
            ExpectationSuiteValidationResult,
            ExpectationValidationResult,
        )
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration,
        )

        gx_suite = self._suite(suite)
        batch_id = f"{self.datasource.name}-{suite.name}"
        results = []
        for rule, expectation in zip(suite.rules, gx_suite.expectations, strict=True):
            considered, unexpected = totals.get(rule.name, (0, 0))
            configuration = expectation.configuration
            config = ExpectationConfiguration(
                type=configuration.type,
                kwargs={
                    **resolve_kwargs(configuration.kwargs, params, rule.name),
                    "batch_id": batch_id,
                },
                meta=configuration.meta,
                id=configuration.id,
            )
            results.append(
                ExpectationValidationResult(
                    success=mostly_success(considered, unexpected, rule.mostly),
                    expectation_config=config,
                    result=summary_result(rule.type, rows, considered, unexpected),
                )
            )
        evaluated = len(results)
        successful = sum(1 for r in results if r.success)
        run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
        suite_id = ExpectationSuiteIdentifier(name=suite.name)
        result = ExpectationSuiteValidationResult(
            success=successful == evaluated,
            results=results,
            suite_name=suite.name,
            suite_parameters=dict(params),
            statistics={
                "evaluated_expectations": evaluated,
                "successful_expectations": successful,
                "unsuccessful_expectations": evaluated - successful,
                "success_percent": successful / evaluated * 100 if evaluated else None,
            },
            meta={
                "great_expectations_version": self._gx.__version__,
                "batch_spec": {"batch_data": "SparkDataFrame"},
                "batch_markers": {"counted_by": "policylake row predicates (one aggregation)"},
                "active_batch_definition": {
                    "datasource_name": self.datasource.name,
                    "data_connector_name": "fluent",
                    "data_asset_name": suite.name,
                    "batch_identifiers": {},
                },
                "run_id": run_id,
                "validation_time": run_id.run_time,
                "batch_parameters": {"dataframe": "<DATAFRAME>"},
            },
            batch_id=batch_id,
        )
        self.context.validation_results_store.store_validation_results(
            suite_validation_result=result,
            suite_validation_result_identifier=ValidationResultIdentifier(
                expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=batch_id
            ),
            expectation_suite_identifier=suite_id,
        )
        self.validated.append(result)

    def build_docs(self) -> Path | None:
        """Render this run's validation results (and refresh the index)."""
        if self.docs_dir is None or not self.validated:
            return None
        self.context.build_data_docs(site_names=[self.SITE])
        return self.docs_dir / "index.html"


# Expectations that look at every row (the others only at the rows not missing).
NULL_TYPES = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_null")


def summary_result(
    expectation_type: str, rows: int, considered: int, unexpected: int
) -> dict[str, Any]:
    """The `result` of one expectation as Great Expectations' `SUMMARY` format gives it,
    without samples: `expect_column_values_to_(not_)be_null` look at every row; the other
    map expectations at the rows not missing (`considered`), and say how many were."""

    def percent(part: int, whole: int) -> float | None:
        return part / whole * 100 if whole else None

    if expectation_type in NULL_TYPES:
        return {
            "element_count": rows,
            "unexpected_count": unexpected,
            "unexpected_percent": percent(unexpected, rows),
            "partial_unexpected_list": [],
        }
    missing = rows - considered
    return {
        "element_count": rows,
        "unexpected_count": unexpected,
        "unexpected_percent": percent(unexpected, considered),
        "partial_unexpected_list": [],
        "missing_count": missing,
        "missing_percent": percent(missing, rows),
        "unexpected_percent_total": percent(unexpected, rows),
        "unexpected_percent_nonmissing": percent(unexpected, considered),
    }


def runner_for(settings: Settings) -> GreatExpectationsRunner:
    v = settings.validation
    return GreatExpectationsRunner(
        settings.paths.data_docs_dir,
        v.result_format,
        v.unexpected_samples,
        recompute=v.great_expectations == "recompute",
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
