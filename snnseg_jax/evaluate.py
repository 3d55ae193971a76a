"""Evaluation of the newest checkpoint of a run: `eval_<split>.json` in the workdir.

`restore` gives a trained run ready to evaluate (model, state, evaluation split, keys); the
analyses (`snnseg_jax.analysis`) start from it too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from snnseg_jax import checkpoints, data, experiment, metrics, sharding, steps
from snnseg_jax.cli import UserError


@dataclasses.dataclass(frozen=True)
class Restored:
    """The newest checkpoint of a run, with what evaluating it takes."""

    config: ml_collections.ConfigDict
    workdir: str
    model: nn.Module
    state: steps.TrainState
    dataset: data.Dataset  # the evaluation split
    train_key: jax.Array  # the run's training-step key (Poisson spikes of step s: fold_in(train_key, s))
    eval_key: jax.Array
    mesh: jax.sharding.Mesh
    input_shape: tuple[int, ...]  # of one example
    saved_config: dict = dataclasses.field(default_factory=dict)  # the config that saved the checkpoint, as JSON

    @property
    def spiking(self) -> bool:
        return self.config.model.name.startswith("spiking_")

    @property
    def events(self) -> bool:
        """Whether the inputs are event sequences `[B, T, H, W, C]` rather than static images."""
        return len(self.input_shape) == 4

    def first_images(self, count: int) -> data.ArrayDataset:
        """The first `count` examples of the evaluation split (all of them if fewer), in memory."""
        return steps.first_examples(self.dataset, count)

    def predict_first(self, count: int) -> tuple[data.ArrayDataset, np.ndarray]:
        """The first `count` examples of the evaluation split and the classes `[N, H, W]` predicted for
        them (with the evaluation's batch size and Poisson keys)."""
        return steps.predict_first(
            self.model, self.mesh, self.state, self.dataset, count, self.config.eval_batch_size, self.eval_key
        )

    def map_batches(self, step: Callable, operand: Any, dataset: data.Dataset | None = None) -> list:
        """`step(operand, batch, key, *, model)` over the evaluation batches of `dataset` (default: the
        evaluation split), with the evaluation's batch size and Poisson keys."""
        return steps.map_batches(
            steps.compile_eval_step(self.model, self.mesh, step),
            operand,
            self.dataset if dataset is None else dataset,
            self.config.eval_batch_size,
            self.eval_key,
            self.mesh,
        )

    def confusion(
        self,
        dataset: data.Dataset | None = None,
        step: Callable = steps.eval_step,
        operand: Any = None,
        threads: int = 1,
    ) -> np.ndarray:
        """The confusion matrix (or stack of them) of `step` (default: the plain evaluation of the
        restored state) summed over `dataset` (default: the evaluation split)."""
        return steps.confusion_over(
            steps.compile_eval_step(self.model, self.mesh, step),
            self.state if operand is None else operand,
            self.dataset if dataset is None else dataset,
            self.config.eval_batch_size,
            self.eval_key,
            self.mesh,
            threads,
        )


def train_command(config_file: str, argv: Sequence[str], workdir: str, model_name: str | None = None) -> str:
    """The `train.py` command of the run that `--config=config_file` and the `--config.*` overrides in
    `argv` describe, in `workdir`, with `--config.model.name=model_name` if given (analysis settings left out)."""
    overrides, args = [], list(argv)
    for i, arg in enumerate(args):
        field = arg.split("=", 1)[0].removeprefix("--config.")
        if not arg.startswith("--config.") or field.startswith("analysis.") or (model_name and field == "model.name"):
            continue
        overrides.append(arg if "=" in arg or i + 1 == len(args) else f"{arg}={args[i + 1]}")
    if model_name:
        overrides.append(f"--config.model.name={model_name}")
    return shlex.join(["python", "train.py", "--config", config_file, "--workdir", workdir, *overrides])


def kind_differences(config: ml_collections.ConfigDict, saved_config: dict) -> dict[str, tuple[Any, Any]]:
    """`{"model.name": (saved, configured)}`, and the same for `dataset.name`, where they differ: the run
    of a checkpoint's saved config is not of the kind `config` describes."""
    return {
        f"{group}.name": (saved_config.get(group, {}).get("name"), config[group].name)
        for group in ("model", "dataset")
        if saved_config.get(group, {}).get("name") != config[group].name
    }


def check_run(
    config: ml_collections.ConfigDict, workdir: str, train: str, flag: str = "--workdir", role: str | None = None
) -> None:
    """Raises a `UserError` unless `workdir` (given as `flag`) holds a run of the kind `config` describes:
    the run to evaluate, or where `role` says what it must hold, another one. `train` is the command
    that trains that run.

    Cheap (reads the newest checkpoint's saved config, no arrays), so that a wrong directory stops the
    command before any work.
    """
    saved = checkpoints.saved_config(workdir)
    if saved is None and not checkpoints.steps_on_disk(workdir):
        if role:
            raise UserError(f"{flag}={workdir} holds no checkpoint; it must hold {role}. Train it with:\n    {train}")
        raise UserError(f"{flag}={workdir} holds no checkpoint to evaluate. Train it first with:\n    {train}")
    if saved is None:
        return  # checkpoints too damaged to say: restoring lists what fails
    step, saved_config = saved
    differences = kind_differences(config, saved_config)
    if not differences:
        return
    saved_kind = " and ".join(f"{field}={saved!r}" for field, (saved, _) in differences.items())
    if role:
        raise UserError(
            f"{flag}={workdir} holds a run with {saved_kind} (its checkpoint {step}); it must hold {role}. "
            f"Pass the workdir of such a run, or move {workdir} away and train it there with:\n    {train}"
        )
    kind = " and ".join(f"{field}={now!r}" for field, (_, now) in differences.items())
    hint = f", here --config.model.name={differences['model.name'][0]}" if "model.name" in differences else ""
    raise UserError(
        f"{flag}={workdir} holds a run with {saved_kind} (its checkpoint {step}), and this "
        f"config describes one with {kind}. Evaluate it with the config it was trained with "
        f"(saved in checkpoints/{step}/run/metadata){hint}."
    )


def restore(config: ml_collections.ConfigDict, workdir: str) -> Restored:
    """The newest valid checkpoint in `workdir` of the run `config` describes, and its evaluation split."""
    experiment.check_config(config)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(
            f"no checkpoints in {workdir!r}; train first with python train.py --config <config> --workdir {workdir}"
        )
    e = experiment.build(config, training=False)
    restored = checkpoints.restore_newest(
        workdir, experiment.abstract_state(e.init, e.mesh), e.config_json, move_invalid=False
    )
    if restored is None:
        raise UserError(f"no checkpoints in {workdir!r}; train first with train.py")
    checkpoints.warn_config_differences(restored, e.config_json, "evaluating", fields=("model.",))
    return Restored(
        config,
        workdir,
        e.model,
        restored.state.for_evaluation(),
        e.eval_set,
        e.train_key,
        e.eval_key,
        e.mesh,
        e.input_shape,
        restored.config,
    )


# Config fields that change what an evaluation measures, as prefixes; less those that do not (`NOT_MEASURED`).
MEASURED = ("dataset.", "model.", "eval_batch_size", "seed")  # the batch size and seed choose the Poisson keys
NOT_MEASURED = (
    "dataset.root",
    "dataset.cache_dir",
    "dataset.train_split",
    "dataset.augment",
    "dataset.eval_split",
    "model.fused",
    "model.remat",
    "model.tuned_ops",
)  # where the data is, training-only, speed only


def measured_differences(saved_config: dict, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """`{field: (when trained, now)}` for the fields that make this evaluation differ from the training's."""
    not_measured = (*NOT_MEASURED, f"dataset.synthetic_sizes.{config.dataset.train_split}")
    return {
        field: values
        for field, values in checkpoints.config_differences(saved_config, experiment.config_as_json(config)).items()
        if field.startswith(MEASURED) and field not in not_measured
    }


def result_name(split: str, differences: dict[str, tuple[Any, Any]]) -> str:
    """`eval_<split>.json`, or with the settings that differ from training: `eval_val_dataset.image_size=48.json`."""
    settings = "".join(
        f"_{field}={str(now).replace('/', '_').replace(' ', '')}" for field, (_, now) in differences.items()
    )
    return f"eval_{split}{settings}.json"


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the newest checkpoint in `workdir` on `config.dataset.eval_split`; returns the metrics.

    Uses the same Poisson keys as the validation during training, so the numbers match it. Writes
    `eval_<split>.json`, or, where the config differs from the training's in what the evaluation
    measures (`measured_differences`: another image size, model setting, seed ...), a file named
    after the differences (`result_name`), so that it never replaces the evaluation of the run as
    trained. Newer checkpoints that do not read back whole are reported and left where they are.
    """
    run = restore(config, workdir)
    split = config.dataset.eval_split
    differences = measured_differences(run.saved_config, config)
    result = {
        "split": split,
        "step": int(jax.device_get(run.state.step)),
        "num_images": len(run.dataset),
        **metrics.summary(run.confusion(threads=config.loader_threads), run.dataset.class_names),
        "differs_from_training": {field: list(values) for field, values in differences.items()},
    }
    path = os.path.join(workdir, result_name(split, differences))
    if not sharding.is_primary():
        return result
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"{split} at step {result['step']}: MIoU {result['miou']:.4f}, pixel accuracy "
        f"{result['pixel_accuracy']:.4f} over {len(run.dataset)} images; written to {path}"
    )
    if differences:
        changed = "; ".join(f"{field} {before!r} -> {now!r}" for field, (before, now) in differences.items())
        print(f"(not eval_{split}.json: this evaluation differs from the training's in {changed})")
    return result
