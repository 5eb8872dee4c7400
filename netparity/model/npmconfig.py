"""Azure NPM's own settings, read from the `kube-system/azure-npm-config` ConfigMap the way
NPM reads them (Azure/azure-container-networking, npm/):

- the DaemonSet mounts the ConfigMap at /etc/azure-npm and points `NPM_CONFIG` at
  /etc/azure-npm/azure-npm.json (npm/deploy/npm/azure-npm.yaml), so only the data key
  `azure-npm.json` counts;
- npm/cmd/root.go reads that file with viper; when it cannot (no such key, not JSON), NPM
  runs with `npmconfig.DefaultConfig` (npm/config/config.go), where `PlaceAzureChainFirst`
  is `util.PlaceAzureChainAfterKubeServices` (false). A file that loads is not merged with
  the defaults: a missing toggle is false;
- viper matches keys without regard to case, and its decoder is weakly typed: a string
  ("true", "1", "t") or a non-zero number stands for true.

Shared by the engine (a knob) and the lab (the chain order it renders): one fact, one reader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

NPM_CONFIG_MAP = "kube-system/azure-npm-config"
NPM_CONFIG_KEY = "azure-npm.json"

_TRUE = frozenset({"1", "t", "true"})  # Go's strconv.ParseBool, case folded


def _get(obj: object, key: str) -> object:
    if not isinstance(obj, dict):
        return None
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == key.lower():
            return v
    return None


def place_azure_chain_first(config: Mapping[str, Mapping[str, str]]) -> bool:
    """True when NPM puts its FORWARD jump first, before kube-proxy's KUBE-FORWARD
    (`Toggles.PlaceAzureChainFirst` in azure-npm.json); false by default."""
    data = config.get(NPM_CONFIG_MAP)
    if data is None:
        return False
    text = data.get(NPM_CONFIG_KEY)
    if text is None:
        return False
    try:
        parsed = json.loads(text)
    except ValueError:
        return False  # NPM falls back to DefaultConfig
    value = _get(_get(parsed, "Toggles"), "PlaceAzureChainFirst")
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return False
