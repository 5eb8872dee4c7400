"""Untrusted input files end in one sentence: bytes that are not UTF-8, alias bombs, closed pipes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netparity import yamlio
from netparity.cli import main
from netparity.errors import InputError
from netparity.model.snapshot import load_snapshot
from netparity.yamlio import load_all, load_one, read_yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "aks-migration.yaml"
sys.path.insert(0, str(REPO / "bench"))
import gen  # noqa: E402  (bench/gen.py: the generated AKS-like snapshots)

# The "billion laughs" shape of CVE-2019-11253: 342 bytes, about 490 million nodes expanded.
LAUGHS = (
    "a: &a ["
    + ",".join(['"lol"'] * 9)
    + "]\n"
    + "".join(
        f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]\n"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    )
)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_an_alias_bomb_is_refused_with_one_sentence_before_it_is_expanded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(LAUGHS)
    code, err = _run(["lint", str(bomb)], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert str(bomb) in err and "aliases would expand" in err and "refused" in err


def test_an_alias_bomb_in_a_probe_file_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "probes.yaml"
    bomb.write_text(LAUGHS)
    with pytest.raises(InputError, match="aliases would expand"):
        read_yaml(bomb, "the probe file")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(InputError, match="refers to itself"):
        list(load_all("a: &a [1, *a]\n", "x.yaml"))


def test_ordinary_aliases_still_load_as_yaml_defines_them() -> None:
    text = "base: &b {app: web, tier: api}\nx: *b\ny: [*b, *b]\nstar: '*'\n"
    (doc,) = load_all(text, "x.yaml")
    assert doc == yaml.safe_load(text)
    assert doc["y"][1] == {"app": "web", "tier": "api"} and doc["star"] == "*"


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["lint", "{f}"], "the file"),
        (["predict", str(EXAMPLE), "--probes", "{f}"], "the probe file"),
        (["compare", "{f}", "{f}"], "record"),
    ],
)
def test_bytes_that_are_not_utf8_are_one_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], what: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"kind: List\nitems: []\n# \xfc\xfd\xfe garbage \x80\x81\n")
    code, err = _run([a.replace("{f}", str(bad)) for a in args], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(bad) in err and "UTF-8" in err


def test_a_closed_pipe_ends_the_output_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "netparity", "plan", str(EXAMPLE), "--format", "json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does once it has its line
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first.strip()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code in (0, 141)


# -- the fast path (yaml_rs) builds the same objects as PyYAML ---------------------------------


def _pyyaml(text: str) -> list[object]:
    return list(yaml.load_all(text, Loader=yamlio._BASE_LOADER))


def _yaml_texts_in_tests() -> list[tuple[str, str]]:
    """Every YAML text the tests hold: multi-line string constants that are YAML mappings
    or lists (manifests, probe files, accept files, records)."""
    out: list[tuple[str, str]] = []
    for module in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if "\n" not in text or ":" not in text:
                    continue
                try:
                    docs = _pyyaml(text)
                except yaml.YAMLError:
                    continue  # a fragment (formatted later) or a malformed-input test
                if any(isinstance(d, dict | list) for d in docs):
                    out.append((f"{module.name}:{node.lineno}", text))
    return out


def _repo_yaml_files() -> list[Path]:
    return sorted(
        p
        for pattern in ("*.yaml", "*.yml")
        for p in REPO.rglob(pattern)
        if ".git" not in p.parts and "reports" not in p.parts
    )


def test_the_fast_parser_is_installed_and_reads_a_kubectl_snapshot() -> None:
    assert yamlio.FAST_PARSER is not None, "yaml-rs is a dependency (pyproject.toml)"
    text = yaml.dump(
        {"apiVersion": "v1", "kind": "List", "items": gen.generate(300, 8, 60, 4, 1)},
        Dumper=yamlio_dumper(),
        sort_keys=False,
    )
    assert yamlio.fast_path_applies(text)
    assert yamlio.same_objects(list(load_all(text, "gen.yaml")), _pyyaml(text))


def yamlio_dumper() -> type[yaml.SafeDumper]:
    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True

    return NoAliases


def test_every_yaml_text_in_the_tests_loads_to_the_same_objects() -> None:
    texts = _yaml_texts_in_tests()
    assert len(texts) > 20
    fast = 0
    for where, text in texts:
        try:
            ours = list(load_all(text, where))
        except InputError:  # a recursive alias: PyYAML builds it, netparity refuses it
            assert not yamlio.fast_path_applies(text)
            continue
        assert yamlio.same_objects(ours, _pyyaml(text)), where
        fast += yamlio.fast_path_applies(text)
    assert fast > len(texts) // 2  # most go the fast way


@pytest.mark.parametrize("path", _repo_yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_file_in_the_repository_loads_to_the_same_objects(path: Path) -> None:
    text = path.read_text()
    assert yamlio.same_objects(list(load_all(text, str(path))), _pyyaml(text))


SCALARS = [
    *[
        "yes",
        "Yes",
        "YES",
        "no",
        "No",
        "NO",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "y",
        "n",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
    ],
    *[
        "null",
        "Null",
        "NULL",
        "~",
        "=",
        "<<",
        "0",
        "00",
        "010",
        "09",
        "0o10",
        "0o",
        "0x1F",
        "0x_1F",
        "0b101",
        "1_000",
        "-0",
        "+12",
        "12",
        "-12",
    ],
    *[
        "1:20",
        "190:20:30.15",
        "1.5",
        "1.",
        ".5",
        "-.5",
        "+.5",
        "1e3",
        "1E3",
        "1.0e3",
        "1.0e+3",
        "1.0e-3",
        "6.8523015e+5",
    ],
    *[
        ".inf",
        "-.inf",
        "+.inf",
        ".Inf",
        ".NaN",
        ".nan",
        "-.nan",
        "2024-01-02",
        "2024-1-2",
        "2024-01-02T03:04:05Z",
    ],
    *[
        "10.244.0.5",
        "10.0.0.0/8",
        "fe80::1",
        "::1",
        "80",
        "8080",
        "65535",
        "v1",
        "app.kubernetes.io/name",
    ],
    "2001-12-14 21:59:43.10 -5",
    "a b",
    "it's",
]


@pytest.mark.parametrize("scalar", SCALARS)
@pytest.mark.parametrize(
    "form",
    ["k: {s}\n", "- {s}\n", "{s}: v\n", "k: [a, {s}]\n", "k: {{x: {s}}}\n", "k: &a {s}\n"],
)
def test_each_plain_scalar_loads_as_pyyaml_loads_it(scalar: str, form: str) -> None:
    text = form.format(s=scalar)
    try:
        expected = _pyyaml(text)
    except yaml.YAMLError:
        with pytest.raises(InputError):
            list(load_all(text, "x.yaml"))
        return
    assert yamlio.same_objects(list(load_all(text, "x.yaml")), expected), text
    for quoted in (f'"{scalar}"', f"'{scalar}'"):
        q = form.format(s=quoted)
        if "'" in scalar:
            continue
        assert yamlio.same_objects(list(load_all(q, "x.yaml")), _pyyaml(q)), q


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "a: 1\n",
        "---\na: 1\n",
        "a: 1\n---\nb: 2\n",
        "- 1\n- 2\n",
        "---\n- 1\n---\n- 2\n",
        "---\n---\na: 1\n",
        "# head\n---\na: 1\n--- # c\n",
        "a: 1\n...\n",
        "--- |\n  text\n",
        "%YAML 1.1\n---\na: yes\n",
        "a: 1\na: 2\nb: 3\n",
        "a: !!binary aGVsbG8=\n",
        "? [1, 2]\n: x\n",
        "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",
        "a: 1\r\nb: on\r\n",
        "\ufeffa: 1\n",
        "s: |\n  ---\n  yes\n",
        "s: 'a: yes'\nt: \"x\\ty\\u00e9\"\nu: >\n  folded\n  on\n",
    ],
)
def test_documents_load_as_pyyaml_loads_them(text: str) -> None:
    try:
        expected = _pyyaml(text)
    except yaml.YAMLError:
        with pytest.raises(InputError):
            list(load_all(text, "x.yaml"))
        return
    assert yamlio.same_objects(list(load_all(text, "x.yaml")), expected)
    if len(expected) <= 1:
        assert yamlio.same_objects(
            load_one(text, "x.yaml"), yaml.load(text, Loader=yamlio._BASE_LOADER)
        )


def test_same_objects_tells_types_and_key_order_apart() -> None:
    assert not yamlio.same_objects({"a": True}, {"a": 1})
    assert not yamlio.same_objects({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not yamlio.same_objects([1.0], [1])
    assert yamlio.same_objects([float("nan")], [float("nan")])


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "pyyaml"])
def test_malformed_yaml_names_the_file_and_line_either_way(
    fast: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not fast:
        monkeypatch.setattr(yamlio, "FAST_PARSER", None)  # as where yaml-rs has no wheel
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: List\nitems:\n- a: [1\n  b: 2\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*malformed YAML at line 4, column 4"):
        load_snapshot([bad])


def test_without_the_fast_parser_the_objects_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    text = yaml.dump({"items": gen.generate(100, 4, 20, 3, 3)}, Dumper=yamlio_dumper())
    fast = list(load_all(text, "x.yaml"))
    monkeypatch.setattr(yamlio, "FAST_PARSER", None)
    assert not yamlio.fast_path_applies(text)
    assert yamlio.same_objects(list(load_all(text, "x.yaml")), fast)
