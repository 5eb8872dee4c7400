"""Facts about the dataplanes, as data: shared by the engine (which predicts) and the lab
(which enforces), so that the two never disagree on a fact, only on what follows from it.

Modules here import only the standard library, `netparity.errors` and `netparity.model`;
never the engine, the planner or the lab (import-linter checks it).
"""
