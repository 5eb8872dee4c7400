"""Packaging glue that pyproject.toml cannot express (everything else is there).

probes/ stays at the top of the repository, where users look for the agent and the
manifests; the wheel carries it as the package data `netparity/probes/`, which
`netparity.kube.render` reads with importlib.resources. examples/ (the demo's and the lab's
default cluster) and suites/ (what `netparity demo` runs) travel the same way, as
`netparity/examples/` and `netparity/suites/` (see netparity/example.py).
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["netparity", "netparity.*"]),
        "netparity.probes",
        "netparity.examples",
        "netparity.suites",
    ],
    package_dir={
        "netparity.probes": "probes",
        "netparity.examples": "examples",
        "netparity.suites": "suites",
    },
)
