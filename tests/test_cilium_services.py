"""cilium-config's Service settings (D22): read as the agent reads them."""

from __future__ import annotations

import pytest

from netparity.engine.dataplane import get_dataplane
from netparity.errors import InputError
from netparity.facts.cilium_config import CILIUM_CONFIG, cilium_settings


def test_service_no_backend_response_is_reject_by_default_drop_when_set_else_an_input_error() -> (
    None
):
    assert cilium_settings({}).service_no_backend_reject
    assert cilium_settings({CILIUM_CONFIG: {}}).service_no_backend_reject
    drop = {CILIUM_CONFIG: {"service-no-backend-response": "drop"}}
    assert not cilium_settings(drop).service_no_backend_reject
    dp = get_dataplane("cilium").with_config(drop)
    assert not dp.service_no_backend_reject and not dp.itp_no_local_reject
    # kube-proxy reads no cilium-config: NPM's profile keeps rejecting
    assert get_dataplane("npm").with_config(drop).service_no_backend_reject
    with pytest.raises(InputError, match="service-no-backend-response 'refuse'"):
        cilium_settings({CILIUM_CONFIG: {"service-no-backend-response": "refuse"}})


def test_source_range_check_is_on_unless_cilium_config_turns_it_off() -> None:
    assert cilium_settings({CILIUM_CONFIG: {}}).svc_source_range_check
    off = {CILIUM_CONFIG: {"enable-svc-source-range-check": "false"}}
    assert not cilium_settings(off).svc_source_range_check
    assert not get_dataplane("cilium-1.16").with_config(off).lb_source_range_check
    assert get_dataplane("npm").with_config(off).lb_source_range_check
