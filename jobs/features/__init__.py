"""Feature keys that baselines, scoring, validation and metrics share, each defined once:
hour-of-week buckets and day types, process-pair keys, robust statistics, risk bands."""
