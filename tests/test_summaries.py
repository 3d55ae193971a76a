"""TensorBoard event files: what a training run logs, and one value per step across resumed runs."""

import os

import numpy as np
from conftest import read_events

from snnseg_jax import summaries


def test_events_after_a_checkpoint_go_to_a_new_file_which_a_resumed_run_drops(tmp_path):
    workdir = str(tmp_path)
    log = summaries.Summaries(workdir, start=0)
    log.scalars(3, {"train/loss": 2.0, "train/nothing": None})
    log.checkpointed(4)
    log.scalars(6, {"train/loss": 1.5})
    log.images(6, {"val/prediction_0": np.zeros((4, 12, 3), np.uint8)})
    log.close()  # killed after step 6, before checkpoint 8
    assert sorted(summaries.begun_at(name) for name in os.listdir(workdir)) == [0, 4]
    assert [(tag, step) for tag, step, _ in read_events(workdir)] == [
        ("train/loss", 3),
        ("train/loss", 6),
        ("val/prediction_0", 6),
    ]
    resumed = summaries.Summaries(workdir, start=4)  # drops what came after checkpoint 4
    resumed.scalars(6, {"train/loss": 1.5})
    resumed.close()
    assert [(tag, step, value) for tag, step, value in read_events(workdir)] == [
        ("train/loss", 3, 2.0),
        ("train/loss", 6, 1.5),
    ]
    other = tmp_path / "events.out.tfevents.123.host"  # not one of ours: left alone
    other.write_bytes(b"")
    assert summaries.drop_from(workdir, 0) and os.listdir(workdir) == [other.name]
