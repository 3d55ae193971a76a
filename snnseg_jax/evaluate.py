"""Evaluation of the newest checkpoint of a run: `eval_<split>.json` in the workdir.

`restore` gives a trained run ready to evaluate (model, state, evaluation split, keys); the
analyses (`snnseg_jax.analysis`) start from it too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from snnseg_jax import checkpoints, data, metrics, sharding
from snnseg_jax import train as train_lib
from snnseg_jax.cli import UserError


@dataclasses.dataclass(frozen=True)
class Restored:
    """The newest checkpoint of a run, with what evaluating it takes."""

    config: ml_collections.ConfigDict
    workdir: str
    model: nn.Module
    state: train_lib.TrainState
    dataset: data.Dataset  # the evaluation split
    train_key: jax.Array  # the run's training-step key (Poisson spikes of step s: fold_in(train_key, s))
    eval_key: jax.Array
    mesh: jax.sharding.Mesh
    input_shape: tuple[int, ...]  # of one example

    @property
    def spiking(self) -> bool:
        return self.config.model.name.startswith("spiking_")

    @property
    def events(self) -> bool:
        """Whether the inputs are event sequences `[B, T, H, W, C]` rather than static images."""
        return len(self.input_shape) == 4

    def first_images(self, count: int) -> data.Dataset:
        """The first `count` examples of the evaluation split (all of them if fewer), in memory."""
        inputs, labels = self.dataset.read(np.arange(min(count, len(self.dataset))))
        return data.ArrayDataset(inputs, labels, self.dataset.class_names)

    def map_batches(self, step: Callable, operand: Any, dataset: data.Dataset | None = None) -> list:
        """`step(operand, batch, key, *, model)` over the evaluation batches of `dataset` (default: the
        evaluation split), with the evaluation's batch size and Poisson keys."""
        return train_lib.map_batches(train_lib.compile_eval_step(self.model, self.mesh, step), operand,
                                     self.dataset if dataset is None else dataset,
                                     self.config.eval_batch_size, self.eval_key, self.mesh)

    def confusion(self, dataset: data.Dataset | None = None, step: Callable = train_lib.eval_step,
                  operand: Any = None, threads: int = 1) -> np.ndarray:
        """The confusion matrix (or stack of them) of `step` (default: the plain evaluation of the
        restored state) summed over `dataset` (default: the evaluation split)."""
        return train_lib.confusion_over(train_lib.compile_eval_step(self.model, self.mesh, step),
                                        self.state if operand is None else operand,
                                        self.dataset if dataset is None else dataset,
                                        self.config.eval_batch_size, self.eval_key, self.mesh, threads)


def restore(config: ml_collections.ConfigDict, workdir: str) -> Restored:
    """The newest valid checkpoint in `workdir` of the run `config` describes, and its evaluation split."""
    train_lib.check_config(config)
    sharding.start_processes(**config.distributed)
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(f"no checkpoints in {workdir!r}; train first with "
                        f"python train.py --config <config> --workdir {workdir}")
    dataset = train_lib.load_split(config, config.dataset.eval_split)
    model = train_lib.build_model(config, dataset)
    init_key, train_key, eval_key = train_lib.run_keys(config.seed)
    # The optimizer only shapes the state to restore; its schedule plays no part here.
    optimizer = train_lib.make_optimizer(config, steps=1)
    input_shape = dataset.read(np.arange(1))[0].shape[1:]
    init = functools.partial(train_lib.init_state, model, optimizer, input_shape, init_key)
    config_json = train_lib.config_as_json(config)
    restored = checkpoints.restore_newest(workdir, train_lib.abstract_state(init, mesh), config_json,
                                          move_invalid=False)
    if restored is None:
        raise UserError(f"no checkpoints in {workdir!r}; train first with train.py")
    checkpoints.warn_config_differences(restored, config_json, "evaluating", fields=("model.",))
    return Restored(config, workdir, model, restored.state, dataset, train_key, eval_key, mesh, input_shape)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the newest checkpoint in `workdir` on `config.dataset.eval_split`; returns the metrics.

    Uses the same Poisson keys as the validation during training, so the numbers match it. Newer
    checkpoints that do not read back whole are reported and left where they are.
    """
    run = restore(config, workdir)
    split = config.dataset.eval_split
    result = {"split": split, "step": int(jax.device_get(run.state.step)), "num_images": len(run.dataset),
              **metrics.summary(run.confusion(threads=config.loader_threads), run.dataset.class_names)}
    path = os.path.join(workdir, f"eval_{split}.json")
    if not sharding.is_primary():
        return result
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{split} at step {result['step']}: MIoU {result['miou']:.4f}, pixel accuracy "
          f"{result['pixel_accuracy']:.4f} over {len(run.dataset)} images; written to {path}")
    return result
