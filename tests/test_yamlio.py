"""Untrusted input files end in one sentence: bytes that are not UTF-8, alias bombs, closed pipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netparity.cli import main
from netparity.errors import InputError
from netparity.yamlio import load_all, read_yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "aks-migration.yaml"

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
