"""`netparity watch`: the migration window, probed every interval while the nodes are
reimaged. `sentinels` chooses the probes (pure), `timeline` turns verdicts over time into
windows (pure), `run` probes a lab until stopped, stable or out of time."""
