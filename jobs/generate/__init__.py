"""Synthetic security telemetry in real vendor formats, with injected attacks and dirt.

`generate_telemetry` writes the raw layout of docs/sources.md plus reference files,
ground truth, the dirty-row list and a manifest; docs/generator.md explains the model.
"""

from __future__ import annotations

from jobs.generate.telemetry import GenerationSummary, generate_telemetry

__all__ = ["GenerationSummary", "generate_telemetry"]
