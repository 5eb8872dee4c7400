"""The lab's dataplane registry: a renderer registered under the dataplane's name.

The name is the one the engine's profile is registered under
(netparity/engine/dataplane.py), so a lab built under a dataplane can be compared with the
engine's predictions for it. Each renderer module registers its own dataplanes; the rest of
the lab reads `DATAPLANES` and `renderer(name)` and never spells a name.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView, Mapping

from netparity.errors import InputError
from netparity.lab.topology import LabTopology, NodeRules

# A renderer: every node's rules (node name -> rules) for the whole topology.
Render = Callable[[LabTopology], Mapping[str, NodeRules]]

_RENDERERS: dict[str, Render] = {}

# Live view: the dataplanes the lab can enforce, in registration order.
DATAPLANES: KeysView[str] = _RENDERERS.keys()


def register(name: str, render: Render) -> Render:
    """Register `render` as the lab's enforcement of dataplane `name`."""
    if name in _RENDERERS:
        raise ValueError(f"lab dataplane {name!r} is already registered")
    _RENDERERS[name] = render
    return render


def unregister(name: str) -> None:
    """Remove a registered renderer (tests that register a toy dataplane clean up with it)."""
    _RENDERERS.pop(name, None)


def renderer(name: str) -> Render:
    try:
        return _RENDERERS[name]
    except KeyError:
        raise InputError(
            f"unknown dataplane {name!r} (the lab enforces {', '.join(DATAPLANES)})",
            field="dataplane",
        ) from None
