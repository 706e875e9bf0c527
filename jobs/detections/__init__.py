"""Host detections as Sigma rules: load the rule folders, compile every rule to a Spark SQL
condition with pySigma (our processing pipeline maps Sigma's log sources and field names onto
the columns policylake ingests), and evaluate all rules of a day in one pass over its events.

No stage is imported here: the score stage turns matches into signals, the CLI runs lint and
tests (docs/detections.md).
"""
