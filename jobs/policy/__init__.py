"""Policy-as-code: YAML policies, a safe condition language, guardrails and the tooling around them.

Modules: `vocabulary` (actions, domains, signals, context names), `expressions` (the
condition language), `schema` (pydantic models and loading), `guardrails`, `engine`
(per-entity decisions), `testing` (inline cases), `lint`, `diff`, `cli`.
"""
