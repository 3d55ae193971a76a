"""TensorBoard event files of a training run, in its workdir (`tensorboard --logdir runs/`).

Written with tensorboardX (no TensorFlow needed), synchronously from the training loop: a failure
to write (a full disk) reaches the loop like any other, instead of ending a writer thread. Only the
first process writes.

Each step is logged once, however a run was stopped: every file holds the events of the steps
after the one it is named for (`events.out.tfevents.<time>.<host>.from_step_<n>`), and a new file
begins after each checkpoint, whose file ends, written out, before the save starts. A run resuming
from checkpoint s removes the files begun at step s or later (`drop_from`): they hold only steps
after s, which it logs again, and the files before them hold only steps up to s.
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2

from snnseg_jax import cli

_BEGUN_AT = re.compile(r"^events\.out\.tfevents\..*\.from_step_(\d+)$")


def begun_at(name: str) -> int | None:
    """The step after which the event file `name` (a base name) begins, if it is one of these files."""
    match = _BEGUN_AT.match(name)
    return int(match.group(1)) if match else None


def drop_from(workdir: str, step: int) -> list[str]:
    """Removes the event files of `workdir` begun at `step` or later; returns their names."""
    dropped = sorted(name for name in os.listdir(workdir) if (begun := begun_at(name)) is not None and begun >= step)
    for name in dropped:
        os.remove(os.path.join(workdir, name))
    return dropped


class Summaries:
    """Scalars and images of the steps after `start`, in the event files of `workdir` (if `active`)."""

    def __init__(self, workdir: str, start: int, active: bool = True) -> None:
        self.workdir, self.active = workdir, active
        self._writer: EventsWriter | None = None
        self._begins_after = start
        if active:
            drop_from(workdir, start)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Logs `{tag: value}` at `step` (values that are None are left out) and writes them out."""
        self._write(step, [tb_summary.scalar(tag, value) for tag, value in values.items() if value is not None])

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """Logs `{tag: uint8 [H, W, 3] image}` at `step` and writes them out."""
        self._write(step, [tb_summary.image(tag, image, dataformats="HWC") for tag, image in images.items()])

    def checkpointed(self, step: int) -> None:
        """Ends the current file (written out): call before saving checkpoint `step`. The events that
        follow go to a new file, begun at `step`."""
        self.close()
        self._begins_after = step

    def close(self) -> None:
        if self._writer is not None:
            with cli.naming(self.workdir):
                self._writer.close()
            self._writer = None

    def _write(self, step: int, summaries: list) -> None:
        if not self.active or not summaries:
            return
        with cli.naming(self.workdir):  # writes name no file; the event files are in the workdir
            if self._writer is None:
                self._writer = EventsWriter(
                    os.path.join(self.workdir, "events"), f".from_step_{self._begins_after:09d}"
                )
            for summary in summaries:
                self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
            self._writer.flush()
