"""Evaluation of the newest checkpoint of a run: `eval_<split>.json` in the workdir (SPEC §7)."""

from __future__ import annotations

import functools
import json
import os

import jax
import ml_collections
import numpy as np

from snnseg_jax import checkpoints, metrics, sharding
from snnseg_jax import train as train_lib
from snnseg_jax.cli import UserError


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the newest checkpoint in `workdir` on `config.dataset.eval_split`; returns the metrics.

    Uses the same Poisson keys as the validation during training, so the numbers match it. Newer
    checkpoints that do not read back whole are reported and left where they are.
    """
    train_lib.check_config(config)
    sharding.start_processes(**config.distributed)
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(f"no checkpoints in {workdir!r}; train first with "
                        f"python train.py --config <config> --workdir {workdir}")
    split = config.dataset.eval_split
    dataset = train_lib.load_split(config, split)
    model = train_lib.build_model(config, dataset)
    init_key, _, eval_key = train_lib.run_keys(config.seed)
    # The optimizer only shapes the state to restore; its schedule plays no part here.
    optimizer = train_lib.make_optimizer(config, steps=1)
    init = functools.partial(train_lib.init_state, model, optimizer, dataset.read(np.arange(1))[0].shape[1:],
                             init_key)
    config_json = train_lib.config_as_json(config)
    restored = checkpoints.restore_newest(workdir, train_lib.abstract_state(init, mesh), config_json,
                                          move_invalid=False)
    if restored is None:
        raise UserError(f"no checkpoints in {workdir!r}; train first with train.py")
    checkpoints.warn_config_differences(restored, config_json, "evaluating", fields=("model.",))
    state = restored.state
    confusion = train_lib.confusion_over(train_lib.compile_eval_step(model, mesh), state, dataset,
                                         config.eval_batch_size, eval_key, mesh, config.loader_threads)
    result = {"split": split, "step": int(jax.device_get(state.step)), "num_images": len(dataset),
              **metrics.summary(confusion, dataset.class_names)}
    path = os.path.join(workdir, f"eval_{split}.json")
    if not sharding.is_primary():
        return result
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{split} at step {result['step']}: MIoU {result['miou']:.4f}, pixel accuracy "
          f"{result['pixel_accuracy']:.4f} over {len(dataset)} images; written to {path}")
    return result
