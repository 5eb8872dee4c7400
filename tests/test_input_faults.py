"""Input the Kubernetes API server would reject ends in one sentence naming object and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netparity.cli import main

from builders import node, ns, pod

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
