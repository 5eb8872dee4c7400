"""Benchmark of YAML loading: each parser on the same generated snapshot, side by side.

    python bench/bench_yaml.py [--pods 5000] [--namespaces 100] [--policies 1000] [--nodes 50]
                               [--repeat 3] [--no-pure]

Writes the generated cluster as `kubectl get -o yaml` writes it (one List, no aliases) and
as JSON, then loads it with every parser installed: PyYAML with libyaml (CSafeLoader),
pure PyYAML, yaml_rs, netparity's reader (`netparity.yamlio.load_all`: yaml_rs behind the
YAML 1.1 guard, PyYAML otherwise), ruamel.yaml's C loader, rapidyaml (ryml: a tree, then to
Python objects through its JSON emitter and orjson) and, on the JSON form, json and orjson.
Each line shows the best of `--repeat` wall times, the CPU time of that run, the ratio to
PyYAML with libyaml, and whether the objects are identical to PyYAML's (types and key
order included). A parser that is not installed is listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml

from netparity import yamlio

import gen


def _candidates(text: str, js: str) -> list[tuple[str, Callable[[], Any] | str]]:
    out: list[tuple[str, Callable[[], Any] | str]] = [
        ("PyYAML + libyaml (CSafeLoader)", lambda: yaml.load(text, Loader=yaml.CSafeLoader)),
        ("PyYAML pure (SafeLoader)", lambda: yaml.load(text, Loader=yaml.SafeLoader)),
        ("netparity.yamlio.load_all", lambda: next(iter(yamlio.load_all(text, "snap.yaml")))),
    ]
    try:
        import yaml_rs

        out.append(("yaml_rs (Rust)", lambda: yaml_rs.loads(text, parse_datetime=False)))
    except ImportError:
        out.append(("yaml_rs (Rust)", "not installed (pip install yaml-rs)"))
    try:
        from ruamel.yaml import YAML

        ruamel = YAML(typ="safe", pure=False)
        out.append(("ruamel.yaml C (typ=safe)", lambda: ruamel.load(text)))
    except ImportError:
        out.append(("ruamel.yaml C (typ=safe)", "not installed (pip install ruamel.yaml)"))
    try:
        import orjson
        import ryml

        def rapidyaml() -> Any:
            tree = ryml.parse_in_arena(text.encode())
            return orjson.loads(ryml.emit_json_malloc(tree, tree.root_id()))

        out.append(("rapidyaml (ryml tree -> JSON -> orjson)", rapidyaml))
        out.append(("orjson on the JSON form", lambda: orjson.loads(js)))
    except ImportError:
        out.append(("rapidyaml / orjson", "not installed (pip install rapidyaml orjson)"))
    out.append(("json (stdlib) on the JSON form", lambda: json.loads(js)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pure", action="store_true", help="skip pure PyYAML (slow)")
    args = ap.parse_args()

    class NoAliases(yaml.CSafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    docs = gen.generate(args.pods, args.namespaces, args.policies, args.nodes, 1)
    doc = {"apiVersion": "v1", "kind": "List", "items": docs}
    text = yaml.dump(doc, Dumper=NoAliases, sort_keys=False)
    js = json.dumps(doc)
    reference = yaml.load(text, Loader=yaml.CSafeLoader)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"bench_yaml: {args.pods} pods, {args.namespaces} namespaces, {args.policies} policies, "
        f"{args.nodes} nodes: {len(text) / 1e6:.1f} MB YAML, {len(js) / 1e6:.1f} MB JSON; "
        f"best of {args.repeat}; {os.cpu_count()} CPUs, load average {load}"
    )
    print(f"  fast path taken by netparity.yamlio: {yamlio.fast_path_applies(text)}")
    base: float | None = None
    for name, fn in _candidates(text, js):
        if isinstance(fn, str):
            print(f"  {name:42s} {fn}")
            continue
        if args.no_pure and "pure" in name:
            continue
        best = (float("inf"), 0.0)
        result: Any = None
        for _ in range(1 if "pure" in name else args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn()
            took = (time.perf_counter() - t0, time.process_time() - c0)
            best = min(best, took)
        wall, cpu = best
        if base is None:
            base = wall
        same = "identical" if yamlio.same_objects(result, reference) else "DIFFERENT objects"
        print(f"  {name:42s} {wall:6.3f} s (CPU {cpu:6.3f} s)  {base / wall:5.1f}x  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
