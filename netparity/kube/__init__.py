"""The kubernetes backend: read a live cluster and probe it with twin pods, safely.

Only `netparity.kube.client` imports the `kubernetes` package; everything else here
works on plain wire dicts.
"""

from __future__ import annotations

from netparity.model.objects import RUN_LABEL as RUN_LABEL

TWIN_LABEL = "netparity.io/twin"
TWIN_OF_ANNOTATION = "netparity.io/twin-of"
READINESS_GATE = "netparity.io/never-ready"
RBAC_FILE = "probes/rbac.yaml"
# When a run's objects may be removed by anyone even if its heartbeat still beats (UTC, ISO).
EXPIRES_ANNOTATION = "netparity.io/expires"
