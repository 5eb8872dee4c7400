"""Records and baselines: one run's observations, with the facts needed to trust them later.

Three modules, one concept each: `model` (the record, its building from a plan and a
backend's results, the judging of tries, `check_comparable`), `jsonio` (the record as JSON
and back, with a check of its schema) and `files` (where records go, written atomically:
temporary file, fsync, rename). Every name is importable from `netparity.record`. The
format is documented in docs/records.md.
"""

from __future__ import annotations

from netparity.record.files import (
    cluster_dirname,
    default_baseline,
    load_json,
    load_record,
    record_path,
    write_json_atomic,
    write_record,
)
from netparity.record.jsonio import (
    JsonReader,
    cause_from_json,
    cause_json,
    not_run_json,
    probe_json,
    record_from_json,
    record_json,
)
from netparity.record.model import (
    READS_VERSIONS,
    RECORD_KIND,
    SCHEMA_MINOR,
    SCHEMA_VERSION,
    EndpointInfo,
    Outcome,
    PlanInfo,
    PredictionRecord,
    ProbeRecord,
    Record,
    Try,
    build_record,
    check_comparable,
    judge,
    needs_retry,
    not_run,
    observed_text,
    plan_info,
    plan_version,
    probe_record,
    utc_now,
)

__all__ = [
    "READS_VERSIONS",
    "RECORD_KIND",
    "SCHEMA_MINOR",
    "SCHEMA_VERSION",
    "EndpointInfo",
    "JsonReader",
    "Outcome",
    "PlanInfo",
    "PredictionRecord",
    "ProbeRecord",
    "Record",
    "Try",
    "build_record",
    "cause_from_json",
    "cause_json",
    "check_comparable",
    "cluster_dirname",
    "default_baseline",
    "judge",
    "load_json",
    "load_record",
    "needs_retry",
    "not_run",
    "not_run_json",
    "observed_text",
    "plan_info",
    "plan_version",
    "probe_json",
    "probe_record",
    "record_from_json",
    "record_json",
    "record_path",
    "utc_now",
    "write_json_atomic",
    "write_record",
]
