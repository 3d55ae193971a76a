"""Pinned numbers: a silent numeric change cannot land unnoticed.

Each of the four networks, tiny (16x16 shapes, width 1/16, T = 4, batches of 8), trains 6 steps from
seed 0 through `train.train_and_evaluate`, the whole path a user runs: data, augmentation-free
pipeline, Poisson input, network, loss, Adam with weight decay, evaluation. The training loss of
every step and the final validation MIoU must equal the numbers below.

A failure means the numbers a user gets have changed. If the change was not intended, it is a bug.
If it was (a new default, a fix), regenerate the numbers honestly and say so in the commit:

    PYTHONPATH=. python tests/test_numeric_regression.py      # prints PINNED from the current code

The tolerances fit float32 on one CPU (XLA's summation order can move the last bits): losses to a
relative 1e-5, MIoU to 1e-6. They are tight enough that a surrogate scale of 0.31 instead of 0.3, or
a leak of 0.98 instead of 0.99, fails them (`test_a_small_change_of_a_neuron_setting_fails_the_pins`).
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from configs import shapes_deeplab
from snnseg_jax import train

TINY = {
    "dataset.image_size": 16,
    "model.width": 0.0625,
    "model.timesteps": 4,
    "dataset.synthetic_sizes.train": 48,
    "dataset.synthetic_sizes.val": 16,
    "batch_size": 8,
    "eval_batch_size": 8,
    "num_train_steps": 6,
    "log_every_steps": 1,
    "eval_every_steps": 0,
    "checkpoint_every_steps": 100,
    "weight_decay": 5e-4,
}  # the paper configs' decay (the embedded-data configs train without)
LOSS_RTOL, MIOU_ATOL = 1e-5, 1e-6

# {model name: (training loss after each step, final validation MIoU)}
PINNED = {
    "spiking_deeplab": ([1.994412, 1.936561, 1.896873, 1.746227, 1.808766, 1.818856], 0.01923828125),
    "spiking_fcn": ([1.941585, 1.956906, 1.890909, 1.8499, 1.872031, 1.792449], 0.056515347824468466),
    "deeplab": ([2.507131, 2.341327, 2.13507, 1.943917, 2.113303, 2.172557], 0.029711400376154905),
    "fcn": ([2.290942, 2.235101, 1.86014, 1.883442, 1.881958, 1.828321], 0.11514668957091252),
}


def run(model_name: str, **changes) -> tuple[list[float], float]:
    """(The loss of every step, the final validation MIoU) of the tiny run of `model_name`."""
    config = shapes_deeplab.get_config()
    config.update_from_flattened_dict({**TINY, "model.name": model_name, **changes})
    with tempfile.TemporaryDirectory() as workdir:
        final = train.train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            losses = [record["loss"] for record in map(json.loads, f) if "loss" in record]
    return losses, final["miou"]


def differs_from_pinned(model_name: str, losses: list[float], miou: float) -> bool:
    pinned_losses, pinned_miou = PINNED[model_name]
    return (
        len(losses) != len(pinned_losses)
        or abs(miou - pinned_miou) > MIOU_ATOL
        or any(abs(a - b) > LOSS_RTOL * abs(b) for a, b in zip(losses, pinned_losses))
    )


@pytest.mark.parametrize("model_name", ["spiking_deeplab", "spiking_fcn", "deeplab", "fcn"])
def test_losses_and_miou_are_the_pinned_numbers(model_name):
    losses, miou = run(model_name)
    pinned_losses, pinned_miou = PINNED[model_name]
    assert losses == pytest.approx(pinned_losses, rel=LOSS_RTOL), "losses changed: see the module docstring"
    assert miou == pytest.approx(pinned_miou, abs=MIOU_ATOL), "validation MIoU changed: see the module docstring"


@pytest.mark.slow
@pytest.mark.parametrize("change", [{"model.surrogate_scale": 0.31}, {"model.leak": 0.98}])
def test_a_small_change_of_a_neuron_setting_fails_the_pins(change):
    """The pins' tolerances are tight enough to catch small changes of the spiking networks."""
    for model_name in ("spiking_deeplab", "spiking_fcn"):
        assert differs_from_pinned(model_name, *run(model_name, **change)), (model_name, change)


if __name__ == "__main__":
    pinned = {name: run(name) for name in ("spiking_deeplab", "spiking_fcn", "deeplab", "fcn")}
    print("PINNED = {")
    for name, (losses, miou) in pinned.items():
        print(f"    {name!r}: ({[float(f'{x:.7g}') for x in losses]}, {miou!r}),")
    print("}")
