"""The API server's wire behaviour that netparity.labapi adds for clients: paged lists,
watches, and the kubeconfig merge of `lab up --api` (other contexts untouched)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from netparity.labapi.kubeconfig import merge_context, remove_context

from kubeapi import KubeAPI, demo_cluster


def _get(api: KubeAPI, path: str) -> Any:
    req = urllib.request.Request(api.url + path, headers={"Authorization": f"Bearer {api.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def test_lists_are_paged_with_continue_tokens() -> None:
    with KubeAPI() as api:
        demo_cluster(api)
        first = json.loads(_get(api, "/api/v1/namespaces/shop/pods?limit=1"))
        assert len(first["items"]) == 1 and first["metadata"]["remainingItemCount"] == 1
        token = first["metadata"]["continue"]
        second = json.loads(_get(api, f"/api/v1/namespaces/shop/pods?limit=1&continue={token}"))
        names = {first["items"][0]["metadata"]["name"], second["items"][0]["metadata"]["name"]}
        assert names == {"web-1", "client-1"} and "continue" not in second["metadata"]


def test_a_watch_streams_changes_after_its_resource_version() -> None:
    with KubeAPI() as api:
        demo_cluster(api)
        rv = json.loads(_get(api, "/api/v1/namespaces/shop/pods"))["metadata"]["resourceVersion"]

        def later() -> None:
            time.sleep(0.3)
            api.do_patch("pods", "shop", "web-1", {"metadata": {"labels": {"x": "1"}}})
            api.do_delete("pods", "shop", "client-1", {})

        threading.Thread(target=later).start()
        raw = _get(
            api, f"/api/v1/namespaces/shop/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        )
        events = [json.loads(line) for line in raw.splitlines() if line.strip()]
        seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
        assert seen == [("MODIFIED", "web-1"), ("DELETED", "client-1")]


def test_the_context_is_merged_and_removed_leaving_the_others(tmp_path: Path) -> None:
    path = tmp_path / "config"
    other: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "prod", "cluster": {"server": "https://10.0.0.1"}}],
        "users": [{"name": "prod", "user": {"token": "t"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
        "current-context": "prod",
    }
    path.write_text(yaml.safe_dump(other))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"not really a certificate")
    merge_context(path, "netparity-lab-x", "https://127.0.0.1:1234", ca, "secret")
    merge_context(path, "netparity-lab-x", "https://127.0.0.1:5678", ca, "secret2")  # replaced
    doc = yaml.safe_load(path.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["prod", "netparity-lab-x"]
    assert doc["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:5678"
    assert doc["current-context"] == "prod" and path.stat().st_mode & 0o077 == 0
    assert remove_context(path, "netparity-lab-x") and not remove_context(path, "netparity-lab-x")
    assert yaml.safe_load(path.read_text()) == other
