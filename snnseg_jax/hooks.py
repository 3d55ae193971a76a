"""Named points of a training run where a test can act (`tests/kill_switch.py` plants faults there).

Training calls `HOOKS.<point>(...)` at each point; every one does nothing unless set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass
class Hooks:
    restoring: Callable[[], None] = lambda: None  # the newest checkpoint is about to be restored
    step_dispatched: Callable[[int], None] = lambda step: None  # the step was dispatched (it may still run)
    validating: Callable[[int], None] = lambda step: None  # the validation of the state after the step begins
    metrics_written: Callable[[str, dict], None] = lambda path, record: None  # a line appended to the file


HOOKS = Hooks()
