"""Packaging glue that pyproject.toml cannot express (everything else is there).

probes/ stays at the top of the repository, where users look for the agent and the
manifests; the wheel carries it as the package data `netparity/probes/`, which
`netparity.kube.render` reads with importlib.resources.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["netparity", "netparity.*"]), "netparity.probes"],
    package_dir={"netparity.probes": "probes"},
)
