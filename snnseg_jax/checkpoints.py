"""Orbax checkpoints under `<workdir>/checkpoints`: the train state plus the data position.

Each checkpoint holds parameters, optimizer state, BNTT/BatchNorm statistics and the step (the
train state) and, as JSON, where the next training batch comes from. Saves are asynchronous and
atomic, so an interrupted save leaves the previous checkpoint as the newest.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import orbax.checkpoint as ocp

from snnseg_jax.data.pipeline import Position


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """Manager of `<workdir>/checkpoints` keeping the newest `keep` checkpoints."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options, item_names=("state", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, position: Position) -> None:
    """Starts saving `state` and `position` as checkpoint `step`."""
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            data=ocp.args.JsonSave(dataclasses.asdict(position))))


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, Position] | None:
    """The newest checkpoint's state (shaped and placed like `abstract_state`) and data position."""
    step = mngr.latest_step()
    if step is None:
        return None
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                          data=ocp.args.JsonRestore()))
    return restored["state"], Position(**restored["data"])
