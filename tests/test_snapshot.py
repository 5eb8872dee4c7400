"""Loading snapshots: kubectl shapes, defaulting, skipped kinds, and bad input named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from netparity.cli import main
from netparity.errors import InputError
from netparity.model import load_snapshot, snapshot_from_dicts

from builders import netpol, ns, pod

LIST = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: x, labels: {team: a}}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {app: a}}
  spec:
    nodeName: n1
    containers: [{name: c, ports: [{name: http, containerPort: 80}]}]
  status: {podIP: 10.244.0.10, phase: Running}
- apiVersion: v1
  kind: Secret
  metadata: {name: d, namespace: x}
"""

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_list_and_a_multi_document_file_load_into_one_snapshot(tmp_path: Path) -> None:
    write(tmp_path, "list.yaml", LIST)
    write(tmp_path, "pol.yaml", POLICY + "---\n" + POLICY.replace("name: p,", "name: q,"))
    snap = load_snapshot([tmp_path])
    assert [p.key for p in snap.pods] == ["x/a"]
    assert [p.key for p in snap.network_policies] == ["x/p", "x/q"]
    assert snap.skipped == {"Secret": 1}  # Deployments are read (tests/test_inputs.py)
    assert snap.namespace("x").labels["kubernetes.io/metadata.name"] == "x"


def test_defaulting_sets_tcp_and_policy_types(tmp_path: Path) -> None:
    snap = load_snapshot([write(tmp_path, "p.yaml", POLICY)])
    policy = snap.network_policies[0]
    assert policy.policy_types == frozenset({"Ingress"})
    assert str(policy.ingress[0].ports[0].protocol) == "TCP"
    assert snap.pods == ()


def test_typed_lists_like_podlist_are_read() -> None:
    snap = snapshot_from_dicts(
        [{"apiVersion": "v1", "kind": "PodList", "items": [pod("x/a", "10.0.0.1", "n1")]}]
    )
    assert [p.key for p in snap.pods] == ["x/a"]


def test_absent_and_empty_selectors_stay_distinct() -> None:
    snap = snapshot_from_dicts(
        [
            netpol(
                "x/p",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {}}, {"podSelector": {}}]}],
                },
            )
        ]
    )
    peers = snap.network_policies[0].ingress[0].peers
    assert peers[0].namespace_selector is not None and peers[0].pod_selector is None
    assert peers[1].pod_selector is not None and peers[1].namespace_selector is None


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (
            {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
            "spec.egress[0].to[0].ipBlock.cidr",
            "invalid CIDR",
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
            "spec.ingress[0].ports[0].endPort",
            "below port 90",
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Like", "values": ["b"]}]
                }
            },
            "spec.podSelector.matchExpressions[0].operator",
            "unknown operator",
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]},
            "spec.ingress[0].ports[0].port",
            "out of range",
        ),
        ({"podSelector": {}, "ingres": []}, "spec.ingres", "not a known field"),
        (
            {
                "podSelector": {},
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}
                ],
            },
            "spec.egress[0].to[0].ipBlock.except[0]",
            "not inside",
        ),
        (
            {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
            },
            "spec.ingress[0].from[0].ipBlock",
            "cannot be combined",
        ),
    ],
)
def test_bad_policies_raise_one_sentence_naming_object_and_field(
    spec: dict, field: str, words: str
) -> None:
    with pytest.raises(InputError) as info:
        snapshot_from_dicts([("f.yaml", netpol("x/p", spec))])
    message = str(info.value)
    assert message.startswith(f"f.yaml: NetworkPolicy x/p: field {field}: ")
    assert words in message
    assert "\n" not in message


def test_an_unsupported_api_version_is_refused() -> None:
    bad = netpol("x/p", {"podSelector": {}}) | {"apiVersion": "extensions/v1beta1"}
    with pytest.raises(InputError, match="unsupported apiVersion 'extensions/v1beta1'"):
        snapshot_from_dicts([bad])


def test_two_pods_with_one_ip_are_refused() -> None:
    with pytest.raises(
        InputError, match=r"Pod y/b: field status.podIP: IP 10.0.0.1 is also used by Pod x/a"
    ):
        snapshot_from_dicts([pod("x/a", "10.0.0.1", "n1"), pod("y/b", "10.0.0.1", "n1"), ns("x")])


def test_malformed_yaml_names_the_file_and_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "bad.yaml", "kind: Pod\nmetadata: {name: [\n")
    probes = write(tmp_path, "probes.yaml", "probes: []\n")
    assert main(["predict", str(bad), "--probes", str(probes)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: malformed YAML at line" in err
    assert err.count("\n") == 1


def test_a_kubectl_json_dump_loads_like_yaml(tmp_path: Path) -> None:
    import json

    import yaml as _yaml

    doc = _yaml.safe_load(LIST)
    path = write(tmp_path, "dump.json", json.dumps(doc))
    assert load_snapshot([path]).pods == load_snapshot([write(tmp_path, "l.yaml", LIST)]).pods


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '{"kind": "List",\n "items": [}')
    with pytest.raises(InputError, match=r"bad.json: malformed JSON at line 2, column 12"):
        load_snapshot([path])
