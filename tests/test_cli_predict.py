"""`netparity predict` and `netparity explain` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from netparity.cli import main

from builders import netpol, node, ns, pod


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    snap_docs = [
        netpol(
            "x/e",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
            },
        ),
    ]
    docs = [
        ns("x", team="a"),
        ns("y", team="b"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("x/a", "10.244.0.10", "n1", {"app": "a"}, [("http", 80, "TCP")]),
        pod("y/c", "10.244.1.10", "n2", {"app": "c"}, [("http", 80, "TCP")]),
        *snap_docs,
    ]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def probes(tmp_path: Path, items: list[dict[str, object]]) -> Path:
    path = tmp_path / "probes.yaml"
    path.write_text(yaml.safe_dump({"probes": items}))
    return path


def test_predict_prints_json_verdicts_with_explanations(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = probes(
        tmp_path,
        [
            {
                "from": "x/a",
                "to": "y/c",
                "port": "http",
                "expect": {"npm": "allow", "cilium": "deny"},
            },
            {"from": "x/app=a", "to": "ip:198.51.100.20", "port": 443},
        ],
    )
    assert (
        main(
            [
                "predict",
                str(cluster),
                "--probes",
                str(p),
                "--dataplane",
                "cilium",
                "--format",
                "json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [o["verdict"] for o in out] == ["deny", "allow"]
    assert out[0]["from"] == "x/a" and out[0]["port"] == "http" and out[0]["protocol"] == "TCP"
    assert "NetworkPolicy x/e" in out[0]["explanation"]
    assert out[1]["egress"]["rules"] == ["NetworkPolicy x/e egress[0]"]


def test_predict_exits_1_when_an_expectation_disagrees(
    cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = probes(tmp_path, [{"from": "x/a", "to": "y/c", "port": 80, "expect": "allow"}])
    assert main(["predict", str(cluster), "--probes", str(p), "--dataplane", "npm"]) == 0
    assert main(["predict", str(cluster), "--probes", str(p), "--dataplane", "cilium"]) == 1
    assert "EXPECTED allow" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"from": "x/nope", "to": "y/c", "port": 80},
            "probe #1: field from: names pod 'x/nope', which does not exist",
        ),
        (
            {"from": "x/a", "to": "y/c", "port": "grpc"},
            "field port: pod y/c has no TCP container port named 'grpc'",
        ),
        (
            {"from": "x/a", "to": "y/c", "port": 80, "expect": "maybe"},
            "field expect: must be allow or deny",
        ),
        ({"from": "x/a", "to": "lb:y/none", "port": 80}, "names Service 'y/none'"),
    ],
)
def test_predict_rejects_bad_probes_with_exit_2(
    cluster: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    item: dict[str, object],
    message: str,
) -> None:
    p = probes(tmp_path, [item])
    assert main(["predict", str(cluster), "--probes", str(p)]) == 2
    assert message in capsys.readouterr().err


def test_explain_lists_each_policy_with_its_rules(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", str(cluster), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["policy"] == "x/e"
    assert out[0]["selects"] == ["x/a"]
    assert out[0]["rules"] == ["egress[0]: to ipBlock 0.0.0.0/0 on all ports"]


def _options(command: str) -> dict[str, tuple[object, ...]]:
    """Each option of a subcommand as argparse holds it: what `--help` prints is made of it."""
    import argparse

    from netparity.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    return {
        a.option_strings[-1] if a.option_strings else a.dest: (
            a.metavar,
            a.required,
            a.default,
            tuple(a.choices or ()),
            a.help,
        )
        for a in parser._actions
    }


KUBECONFIG = ("PATH", False, None, (), "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")


@pytest.mark.parametrize("command", ["snapshot", "cleanup"])
def test_cluster_commands_take_the_same_cluster_options(command: str) -> None:
    opts = _options(command)
    assert opts["--cluster"] == ("CONTEXT", True, None, (), "kubeconfig context, or in-cluster")
    assert opts["--kubeconfig"] == KUBECONFIG


def test_rbac_takes_the_cluster_options_with_its_offline_form() -> None:
    from netparity.engine.dataplane import DATAPLANES, TARGETS

    opts = _options("rbac")
    assert opts["--cluster"] == (
        "NAME",
        True,
        None,
        (),
        "kubeconfig context, in-cluster, or file:SNAPSHOT.yaml[@DATAPLANE] (offline)",
    )
    assert opts["--kubeconfig"] == KUBECONFIG
    assert opts["--current"][1:4] == (False, None, tuple(DATAPLANES))
    assert opts["--target"][1:4] == (False, "cilium", tuple(TARGETS))
    plan = _options("plan")
    assert plan["--current"][1:] == (
        False,
        "npm",
        tuple(DATAPLANES),
        "the dataplane the cluster runs now (default: npm)",
    )
    assert plan["--target"][4] == "the dataplane it moves to (default: cilium)"
    for command in ("plan", "lint", "predict", "explain"):
        assert _options(command)["snapshot"][0] == "SNAPSHOT", command
        assert "--namespace" in _options(command), command


def test_the_table_wraps_its_last_column_as_textwrap_does() -> None:
    """`wrap` takes a faster way where the text is words between single spaces; it gives
    textwrap's lines for every text, that way or not (long words, tabs, double spaces)."""
    import random
    import textwrap

    from netparity.cli._common import wrap

    rng = random.Random(7)
    words = ["a", "bb", "policy", "ns/name", "x" * 31, "y" * 45, "é", "{rules}", "", " ", "\t"]
    fast = 0
    for _ in range(20_000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 25)))
        if rng.random() < 0.5:
            text = text.replace("  ", " ").strip(" ").replace("\t", "-")
        width = rng.choice([1, 5, 30, 31, 44, 80])
        fast += "  " not in text and text.strip(" ") == text and "\t" not in text
        assert wrap(text, width) == textwrap.wrap(text, width, break_on_hyphens=False), text
    assert fast > 5_000  # both ways were taken


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    """`netparity plan` does not pay for the Kubernetes client (0.4 s of start-up): only
    the command run is imported; `netparity --help` still lists every command."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys\nfrom netparity.cli import main\n"
        f"code = main(['plan', {str(root / 'examples' / 'aks-migration.yaml')!r}])\n"
        "print(code, 'kubernetes' in sys.modules, 'netparity.cli.lab' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    ).stdout
    assert out.splitlines()[-1] == "0 False False"
    helped = subprocess.run(
        [sys.executable, "-m", "netparity", "--help"], capture_output=True, text=True, cwd=root
    ).stdout
    for command in ("predict", "plan", "lint", "lab", "snapshot", "cleanup", "watch"):
        assert f"    {command} " in helped or f"    {command}\n" in helped, command
