"""The pipelines (docs/ci/*.yml) and the kind recipe (scripts/e2e-kind.sh), checked on paper.

Nothing here reaches Azure or Docker. What can be checked is checked: every script step of
every pipeline, extracted from the YAML, and every script under scripts/ pass `bash -n`
and ShellCheck (installed by scripts/setup); every job that fetches AKS credentials makes
kubelogin non-interactive right after, with kubelogin installed before; and the Python the
kind recipe runs (the workloads it makes real, the probe-id check after the move) is run
here on inputs made for it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted((REPO / "docs" / "ci").glob("*.yml"))
SCRIPTS = [REPO / "scripts" / "e2e-kind.sh", REPO / "scripts" / "setup"]
KUBELOGIN = re.compile(r"kubelogin convert-kubeconfig -l (azurecli|workloadidentity)\b")
GET_CREDENTIALS = "az aks get-credentials"


def _steps(node: Any) -> Iterator[list[Any]]:
    """Every `steps:` list in a pipeline, in document order."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "steps" and isinstance(value, list):
                yield value
            yield from _steps(value)
    elif isinstance(node, list):
        for item in node:
            yield from _steps(item)


def _script_of(step: Mapping[str, Any]) -> str | None:
    """The bash a step runs: GitHub `run`, Azure Pipelines `script` or an AzureCLI bash task."""
    for key in ("run", "script", "bash"):
        if isinstance(step.get(key), str):
            return str(step[key])
    inputs = step.get("inputs") or {}
    if str(step.get("task", "")).startswith("AzureCLI@") and inputs.get("scriptType") == "bash":
        return str(inputs["inlineScript"])
    return None


def _variables(doc: Mapping[str, Any]) -> set[str]:
    raw = doc.get("variables") or {}
    if isinstance(raw, list):
        return {str(v["name"]) for v in raw if isinstance(v, Mapping) and "name" in v}
    return {str(k) for k in raw}


def as_bash(text: str, variables: set[str]) -> str:
    """A step's script as bash sees it once the CI system has expanded its expressions:
    `${{ ... }}` and Azure Pipelines macros `$(name)` become a plain word."""
    text = re.sub(r"\$\{\{.*?\}\}", "CI_EXPRESSION", text)

    def macro(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in variables or name.split(".")[0] in ("System", "Build", "Agent", "Pipeline"):
            return "CI_MACRO"
        return m.group(0)

    text = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)\)", macro, text)
    return "#!/usr/bin/env bash\nset -e\n" + text


def pipeline_scripts(path: Path) -> list[tuple[str, str, list[Any]]]:
    """(name, bash, the steps list it is in) for every script step of a pipeline."""
    doc = yaml.safe_load(path.read_text())
    variables = _variables(doc)
    out = []
    for steps in _steps(doc):
        for i, step in enumerate(steps):
            if isinstance(step, Mapping) and (script := _script_of(step)) is not None:
                name = str(step.get("name") or step.get("displayName") or f"step {i}")
                out.append((f"{path.name}: {name}", as_bash(script, variables), steps))
    return out


def shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["shellcheck", "--shell=bash", "--severity=style", str(path)],
        capture_output=True,
        text=True,
    )


# --------------------------------------------------------------------------- the checker


def test_the_expression_rewriting_keeps_shell_command_substitution() -> None:
    bash = as_bash('echo "$(cluster)" "$(date)" ${{ inputs.target }}', {"cluster"})
    assert 'echo "CI_MACRO" "$(date)" CI_EXPRESSION' in bash


def test_shellcheck_finds_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $DIR/*\n")
    assert shellcheck(bad).returncode != 0  # unquoted: SC2086
    assert subprocess.run(["bash", "-n", str(bad)]).returncode == 0
    broken = tmp_path / "broken.sh"
    broken.write_text("if true; then echo\n")
    assert subprocess.run(["bash", "-n", str(broken)], capture_output=True).returncode != 0


def test_every_pipeline_has_script_steps_to_check() -> None:
    assert {p.name for p in PIPELINES} == {
        "azure-pipelines.yml",
        "e2e-kind.yml",
        "github-actions.yml",
    }
    for path in PIPELINES:
        assert len(pipeline_scripts(path)) >= 2, path.name


# --------------------------------------------------------------------------- the scripts


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_script_step_passes_bash_n_and_shellcheck(
    path: Path, tmp_path: Path
) -> None:
    for i, (name, bash, _) in enumerate(pipeline_scripts(path)):
        script = tmp_path / f"step{i}.sh"
        script.write_text(bash)
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{name}: {syntax.stderr}"
        check = shellcheck(script)
        assert check.returncode == 0, f"{name}:\n{bash}\n{check.stdout}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_the_scripts_pass_bash_n_and_shellcheck(path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    check = shellcheck(path)
    assert check.returncode == 0, check.stdout


# --------------------------------------------------------------------------- Entra ID


@pytest.mark.parametrize(
    "path", [p for p in PIPELINES if GET_CREDENTIALS in p.read_text()], ids=lambda p: p.name
)
def test_every_credentials_step_makes_kubelogin_non_interactive(path: Path) -> None:
    found = 0
    for name, bash, steps in pipeline_scripts(path):
        if GET_CREDENTIALS not in bash:
            continue
        found += 1
        after = bash.split(GET_CREDENTIALS, 1)[1]
        assert KUBELOGIN.search(after), f"{name}: no kubelogin convert-kubeconfig after it"
        assert "devicecode" not in bash, name
        before = json.dumps(
            steps[
                : next(
                    i
                    for i, s in enumerate(steps)
                    if _script_of(s) and GET_CREDENTIALS in (_script_of(s) or "")
                )
            ]
        )
        assert "use-kubelogin" in before or "KubeloginInstaller" in before, (
            f"{name}: kubelogin is not installed before it"
        )
    assert found >= 2  # pre and post


@pytest.mark.parametrize(
    "path", [p for p in PIPELINES if GET_CREDENTIALS in p.read_text()], ids=lambda p: p.name
)
def test_the_pipelines_say_what_private_clusters_need(path: Path) -> None:
    text = path.read_text()
    for words in ("Private clusters", "authorized IP ranges", "self-hosted", "command invoke"):
        assert words in text, f"{path.name} does not mention {words!r}"


# --------------------------------------------------------------------------- the kind recipe


def _heredoc(after: str) -> str:
    """The Python of a `python3 - ... <<'PY'` heredoc in e2e-kind.sh, after a function name."""
    text = (REPO / "scripts" / "e2e-kind.sh").read_text()
    start = text.index(after)
    body = text[text.index("<<'PY'\n", start) + len("<<'PY'\n") :]
    return body[: body.index("\nPY\n")]


def test_the_kind_recipe_never_runs_kindnetd_and_pins_what_it_installs() -> None:
    text = (REPO / "scripts" / "e2e-kind.sh").read_text()
    assert "disableDefaultCNI: true" in text
    assert "disableDefaultCNI: false" not in text and "disableDefaultCNI: $1" not in text
    assert "/master/" not in text and "latest" not in text
    assert "NPM_REF:-v" in text and "FLANNEL_VERSION:-v" in text
    assert 'KUBECONFIG="${RUN_KUBECONFIG}" python3 -m pytest suites/' in text


def test_the_kind_workloads_keep_headless_services_headless(tmp_path: Path) -> None:
    example = tmp_path / "example.yaml"
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "db"}},
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.224.0.4"}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pg-0", "namespace": "db", "labels": {"app": "pg"}},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "pg", "ports": [{"containerPort": 5432}]}],
            },
            "status": {"phase": "Running", "podIP": "10.244.0.9"},
        },
    ]
    for name, cluster_ip in (("pg", "None"), ("pg-rw", "10.0.0.20")):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "db"},
                "spec": {
                    "clusterIP": cluster_ip,
                    "selector": {"app": "pg"},
                    "ports": [{"port": 5432}],
                },
            }
        )
    example.write_text(yaml.safe_dump_all(docs))
    done = subprocess.run(
        [sys.executable, "-", str(example), "e2e", "python:3.12-slim"],
        input=_heredoc("workloads() {"),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    items = {(i["kind"], i["metadata"]["name"]): i for i in yaml.safe_load(done.stdout)["items"]}
    assert items["Service", "pg"]["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in items["Service", "pg-rw"]["spec"]  # the new cluster allocates it
    assert items["Pod", "pg-0"]["spec"]["nodeName"] == "e2e-worker"


def _reports(tmp_path: Path, base: list[str], post: list[str]) -> Path:
    folder = tmp_path / "reports" / "kind-e2e"
    folder.mkdir(parents=True)
    (folder / "baseline.json").write_text(json.dumps({"probes": [{"id": i} for i in base]}))
    (folder / "record-post-20260101T000000Z.json").write_text(
        json.dumps({"probes": [{"id": i} for i in post]})
    )
    return folder.parent


@pytest.mark.parametrize(
    ("post", "code", "says"),
    [
        (["a1", "b2", "c3"], 0, "3 found again"),
        (["a1", "c3", "d4"], 1, "did not survive the new pod IPs: b2"),
    ],
)
def test_the_kind_recipe_fails_when_a_probe_id_does_not_survive_the_move(
    tmp_path: Path, post: list[str], code: int, says: str
) -> None:
    reports = _reports(tmp_path, ["a1", "b2", "c3"], post)
    done = subprocess.run(
        [sys.executable, "-", str(reports)],
        input=_heredoc("check_ids_survive() {"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == code and says in done.stdout, done.stdout + done.stderr


# --------------------------------------------------------------------------- CI's command


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` is the README's test command: set-up, then the same pytest line."""
    readme = (REPO / "README.md").read_text()
    [line] = [line for line in readme.splitlines() if "# the tests (" in line]
    command = line.split("#", 1)[0].strip()
    steps = [s.strip() for s in command.split("&&")]
    ci = [
        s.strip()
        for s in (REPO / ".ci" / "run").read_text().splitlines()
        if s.strip() and not s.startswith(("#", "set ", "cd "))
    ]
    assert steps == ci, (steps, ci)
