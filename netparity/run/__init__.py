"""One netparity run as a typed object: plan, place, probe, record, judge (netparity.run.core).

The pytest plugin drives a `Run` on the controller and hands its `RunView` to the items;
`netparity demo` runs pytest with the plugin and explains the result with
`netparity.run.explain`. Nothing here imports pytest.
"""

from netparity.run.core import Run, lint_items
from netparity.run.phase import Phase, RunRefused, choose_phase, show_path
from netparity.run.settings import Settings
from netparity.run.view import RunView

__all__ = [
    "Phase",
    "Run",
    "RunRefused",
    "RunView",
    "Settings",
    "choose_phase",
    "lint_items",
    "show_path",
]
