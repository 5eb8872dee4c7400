"""Input the Kubernetes API server would reject ends in one sentence naming object and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.cli import main

from builders import netpol, node, ns, pod

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "aks-migration.yaml"


def _lint(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["lint", str(path)])
    return code, capsys.readouterr().err


def test_a_missing_apiversion_says_it_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = ns("x")
    del doc["apiVersion"]
    snap = tmp_path / "s.yaml"
    snap.write_text(yaml.safe_dump(doc))
    code, err = _lint(snap, capsys)
    assert code == 2
    assert "Namespace x" in err and "apiVersion" in err and "has no apiVersion" in err
    assert "None" not in err


def test_the_same_object_twice_is_refused_naming_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    n = node("n1", "10.224.0.4", "10.244.0.0/24")
    a.write_text(yaml.safe_dump_all([ns("x"), n, pod("x/p", "10.244.0.10", "n1", {"app": "a"})]))
    b.write_text(yaml.safe_dump_all([pod("x/p", "10.244.0.11", "n1", {"app": "b"})]))
    code = main(["lint", str(a), str(b)])
    err = capsys.readouterr().err
    assert code == 2
    assert "x/p" in err and "defined twice" in err and str(a) in err and str(b) in err


def test_the_same_name_in_two_namespaces_or_kinds_is_no_duplicate(tmp_path: Path) -> None:
    snap = tmp_path / "s.yaml"
    n = node("n1", "10.224.0.4", "10.244.0.0/24")
    snap.write_text(
        yaml.safe_dump_all(
            [
                ns("x"),
                ns("y"),
                n,
                pod("x/p", "10.244.0.10", "n1", {"app": "a"}),
                pod("y/p", "10.244.0.11", "n1", {"app": "a"}),
            ]
        )
    )
    assert main(["lint", str(snap)]) in (0, 1)


def test_an_unknown_top_level_key_in_a_probe_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    probes = tmp_path / "p.yaml"
    probes.write_text(
        yaml.safe_dump({"probes": [{"from": "x/a", "to": "y/b", "port": 80}], "probe": []})
    )
    code = main(["predict", str(EXAMPLE), "--probes", str(probes)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(probes) in err and "probe" in err and "top-level" in err


def test_an_empty_snapshot_is_refused_rather_than_passing_every_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    code, err = _lint(empty, capsys)
    assert code == 2 and "holds no object netparity reads" in err and str(empty) in err


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (
            lambda d: d["metadata"]["labels"].update({"bad key!": "x"}),
            "metadata.labels",
            "label key",
        ),
        (lambda d: d["metadata"]["labels"].update({"app": "-x-"}), "metadata.labels.app", "value"),
        (
            lambda d: d["metadata"]["labels"].update({"Example.com/a": "x"}),
            "metadata.labels",
            "prefix",
        ),
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].update({"name": "http!!"}),
            "spec.containers[0].ports[0].name",
            "IANA service name",
        ),
        (lambda d: d["metadata"].update({"name": "Web_1"}), "metadata.name", "DNS subdomain"),
    ],
    ids=["label-key", "label-value", "label-prefix", "port-name", "pod-name"],
)
def test_what_the_api_server_rejects_in_a_pod_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, field: str, words: str
) -> None:
    p = pod("x/web", "10.244.0.10", "n1", {"app": "web"}, [("http", 80, "TCP")])
    mutate(p)
    snap = tmp_path / "s.yaml"
    snap.write_text(yaml.safe_dump_all([ns("x"), node("n1", "10.224.0.4", "10.244.0.0/24"), p]))
    code, err = _lint(snap, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "Pod x/" in err and field in err and words in err


def test_a_policy_port_name_outside_the_iana_syntax_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pol = netpol(
        "x/p",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "http!!"}]}]},
    )
    snap = tmp_path / "s.yaml"
    snap.write_text(yaml.safe_dump_all([ns("x"), pol]))
    code, err = _lint(snap, capsys)
    assert code == 2 and "NetworkPolicy x/p" in err and "ingress[0].ports[0].port" in err


def test_cilium_selectors_keep_their_source_prefixes(tmp_path: Path) -> None:
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "c", "namespace": "x"},
        "spec": {
            "endpointSelector": {"matchLabels": {"k8s:app": "web"}},
            "ingress": [
                {"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x"}}]}
            ],
        },
    }
    snap = tmp_path / "s.yaml"
    snap.write_text(yaml.safe_dump_all([ns("x"), cnp]))
    assert main(["lint", str(snap)]) in (0, 1)


def test_snapshots_of_one_name_in_two_folders_are_two_clusters_and_dataplanes_are_one(
    tmp_path: Path,
) -> None:
    from netparity.dryrun import SnapshotBackend
    from netparity.record import cluster_dirname

    docs = [ns("x"), node("n1", "10.224.0.4", "10.244.0.0/24")]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.yaml").write_text(yaml.safe_dump_all(docs))
    names = {
        spec: SnapshotBackend.from_spec(spec).facts().name
        for spec in (
            f"file:{tmp_path}/a/x.yaml",
            f"file:{tmp_path}/a/x.yaml@cilium",
            f"file:{tmp_path}/b/x.yaml@npm",
        )
    }
    a, a_cilium, b = names.values()
    assert a == a_cilium and a != b
    assert cluster_dirname(a) != cluster_dirname(b) and cluster_dirname(a).endswith("-a-x")


def test_report_out_into_a_file_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from report_records import make_runs

    from netparity.record import write_record

    record = tmp_path / "baseline.json"
    write_record(make_runs().baseline, record)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code = main(["report", str(record), "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be written" in err and "is a file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "blocker"]
