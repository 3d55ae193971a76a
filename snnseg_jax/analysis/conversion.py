"""ANN-to-SNN conversion with threshold balancing, MIoU against T (Fig. 3, paper §3).

A trained ANN (static images only: conversion has no counterpart for event streams) becomes an
SNN of integrate-and-fire neurons:
- BatchNorm is folded into the preceding conv: kernel * s and bias beta - mean * s per output
  channel, s = gamma / sqrt(var + eps) (`layers.Unit.folded_conv`). `folded_forward` runs the ANN
  one frame at a time on these biased convs (`models.Network.folded`), with `activate(name,
  currents)` wherever the ANN has a ReLU (its units; the FCN's decoder is linear and stays analog);
  with ReLU it reproduces the ANN.
- Each ReLU becomes IF neurons (leak 1, soft reset, membrane 0 at the start). A spike of a layer
  carries its threshold theta as amplitude: rate * theta then approximates the ReLU output, so the
  next layer's weights and folded biases apply unchanged. This is threshold balancing written with
  the thresholds on the spikes; putting theta into the next layer's weights instead (the weight
  normalization form) gives the same network with unit spikes.
- Thresholds by sequential balancing (Sengupta et al.) on a training batch with Poisson input:
  layer by layer in forward order, with the earlier thresholds fixed, simulate the converted network
  for `balance_timesteps` steps and take the maximum input current of the layer over steps, images
  and positions: one scalar per layer (layer-wise), or one per output channel (channel-wise, as
  Spiking-YOLO). A channel whose current never exceeded 0 takes its layer's maximum. Each threshold
  is that maximum times `conversion_threshold_scale` (0.7 by default, as in the authors' released
  code: the maximum is a rare outlier, and a lower threshold lets the layer fire at a useful rate in
  fewer steps), set before the next layer is balanced. The batch is
  the first `balance_batch_size` images in the run's training order; step t of the balancing draws
  its input spikes from `fold_in(fold_in(train_key, 0), t)`.
- The input is rate coded as for the spiking networks (signed Poisson, `encoding`); the output conv's
  currents are accumulated over time and divided by T. One simulation of max(T grid) steps per
  batch reads the accumulated output at every T of the grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from snnseg_jax import encoding, experiment, metrics, models, neurons, ops
from snnseg_jax.data import pipeline
from snnseg_jax.evaluate import Restored

Array = jax.Array
Activate = Callable[[str, Array], Array]  # (layer name, input currents) -> output
SILENT = 1e30  # threshold of layers not balanced yet: they never fire


# ---------------------------------------------------------------- folded network


def folded_forward(model: nn.Module, variables: dict, x: Array, activate: Activate) -> Array:
    """Logits at feature resolution of the ANN `model` (static input) with its BatchNorm folded into
    its convs, in float32: `activate(name, currents)` wherever the ANN has a ReLU."""
    simulated = model.clone(settings=dataclasses.replace(model.settings, dtype=jnp.float32))
    return simulated.apply(variables, x, activate, method=models.Network.folded)


def activation_shapes(model: nn.Module, variables: dict, input_shape: tuple[int, ...]) -> dict:
    """Shapes of the currents at each activation, in forward order."""
    shapes = {}

    def record(name: str, z: Array) -> Array:
        shapes[name] = z.shape
        return z

    jax.eval_shape(
        lambda x: folded_forward(model, variables, x, record), jax.ShapeDtypeStruct(input_shape, jnp.float32)
    )
    return shapes


# ---------------------------------------------------------------- the converted SNN


def simulate(
    model: nn.Module,
    variables: dict,
    thresholds: dict[str, Array],
    images: Array,
    key: jax.Array,
    readout_timesteps: Array,
    slot_of_step: Array,
) -> tuple[dict[str, Array], Array]:
    """Runs the converted SNN for `len(slot_of_step)` steps on Poisson-coded `images`.

    `thresholds`: per layer, one per output channel `[C]`. Step t draws its input spikes from
    `fold_in(key, t)`. Returns, per layer, the maximum input current per channel over all steps,
    images and positions, and the time-averaged logits at feature resolution after each of the
    `readout_timesteps` `[G]` steps, `[G, B, h, w, K]`; `slot_of_step[t - 1]` is the index of t in
    `readout_timesteps`, or G.
    """
    shapes = activation_shapes(model, variables, images.shape)
    logits_shape = jax.eval_shape(lambda x: folded_forward(model, variables, x, lambda n, z: z), images).shape
    num_readouts = readout_timesteps.shape[0]

    def step(carry, t):
        membranes, maxima, summed, readouts = carry
        spikes_in = encoding.poisson_encode(jax.random.fold_in(key, t), images, 1)[0]
        new_membranes, new_maxima = {}, {}

        def integrate_and_fire(name: str, currents: Array) -> Array:
            new_maxima[name] = jnp.maximum(maxima[name], currents.max(axis=(0, 1, 2)))
            new_membranes[name], fired = neurons.lif_step(
                membranes[name], currents, leak=1.0, threshold=thresholds[name]
            )
            return fired * thresholds[name]

        summed = summed + folded_forward(model, variables, spikes_in, integrate_and_fire)
        readouts = readouts.at[slot_of_step[t]].set(summed)
        return (new_membranes, new_maxima, summed, readouts), None

    init = (
        {n: jnp.zeros(s) for n, s in shapes.items()},
        {n: jnp.full(s[-1], -jnp.inf) for n, s in shapes.items()},
        jnp.zeros(logits_shape),
        jnp.zeros((num_readouts + 1, *logits_shape)),
    )
    (_, maxima, _, readouts), _ = jax.lax.scan(step, init, jnp.arange(len(slot_of_step)))
    steps = readout_timesteps.astype(jnp.float32)[:, None, None, None, None]
    return maxima, readouts[:num_readouts] / steps


_simulate = jax.jit(simulate, static_argnums=0)


def balance_thresholds(
    model: nn.Module,
    variables: dict,
    images: Array,
    key: jax.Array,
    timesteps: int,
    per_channel: bool,
    scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Sequential threshold balancing (module docstring); thresholds `[C]` per layer.

    The thresholds stay host arrays between the layers, so every simulation has the same argument
    types and shardings and `_simulate` compiles once.
    """
    shapes = activation_shapes(model, variables, images.shape)
    thresholds = {name: np.full(shape[-1], SILENT, np.float32) for name, shape in shapes.items()}
    no_readout, slots = jnp.zeros((0,), jnp.int32), jnp.zeros((timesteps,), jnp.int32)
    for name in shapes:
        maxima, _ = _simulate(model, variables, thresholds, images, key, no_readout, slots)
        thresholds[name] = np.float32(scale) * thresholds_from_maxima(np.asarray(maxima[name]), per_channel)
    return thresholds


def thresholds_from_maxima(channel_max: np.ndarray, per_channel: bool) -> np.ndarray:
    """Thresholds `[C]` from the maximum current per channel (see the module docstring)."""
    layer_max = channel_max.max()
    layer_threshold = layer_max if layer_max > 0 else 1.0
    if not per_channel:
        return np.full_like(channel_max, layer_threshold)
    return np.where(channel_max > 0, channel_max, layer_threshold).astype(channel_max.dtype)


def converted_eval_step(operand: tuple, batch: dict, key: jax.Array, *, model: nn.Module) -> Array:
    """Confusion matrices `[G, K, K]` of the converted SNN at each readout T.

    Operand: `(variables, thresholds, readout_timesteps [G], slot_of_step [T_max])`.
    """
    variables, thresholds, readout_timesteps, slot_of_step = operand
    images = batch["inputs"]
    _, logits = simulate(model, variables, thresholds, images, key, readout_timesteps, slot_of_step)
    height, width = images.shape[1:3]
    predictions = jnp.argmax(jax.vmap(lambda one: ops.resize_bilinear(one, height, width))(logits), axis=-1)
    return jax.vmap(lambda p: metrics.confusion_matrix(batch["labels"], p, logits.shape[-1]))(predictions)


def readout_slots(grid: list[int]) -> tuple[Array, Array]:
    """`(readout_timesteps [G], slot_of_step [max(grid)])` for `simulate`."""
    slots = np.full(max(grid), len(grid), np.int32)
    slots[np.asarray(grid) - 1] = np.arange(len(grid))
    return jnp.asarray(grid, jnp.int32), jnp.asarray(slots)


# ---------------------------------------------------------------- the analysis


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    settings = run.config.analysis
    grid = sorted({int(t) for t in settings.conversion_timesteps})
    subset = run.first_images(settings.conversion_images)
    variables = {"params": run.state.params, "batch_stats": run.state.batch_stats}
    train_set = experiment.load_split(run.config, run.config.dataset.train_split)
    balance_images = next(
        pipeline.train_batches(train_set, settings.balance_batch_size, run.config.seed, pipeline.Position())
    )["inputs"]
    balance_key = jax.random.fold_in(run.train_key, 0)
    readout = readout_slots(grid)
    report = {
        "ann_miou": metrics.mean_iou(run.confusion(dataset=subset)),
        "num_images": len(subset),
        "balance_batch_size": settings.balance_batch_size,
        "balance_timesteps": settings.balance_timesteps,
        "threshold_scale": settings.conversion_threshold_scale,
    }
    for method, per_channel in (("layer", False), ("channel", True)):
        thresholds = balance_thresholds(
            run.model,
            variables,
            jnp.asarray(balance_images),
            balance_key,
            settings.balance_timesteps,
            per_channel,
            settings.conversion_threshold_scale,
        )
        confusions = run.confusion(dataset=subset, step=converted_eval_step, operand=(variables, thresholds, *readout))
        report[method] = {"timesteps": grid, "miou": [metrics.mean_iou(c) for c in confusions]}
    if compare:
        report["direct"] = {
            "model": compare.config.model.name,
            "workdir": compare.workdir,
            "timesteps": compare.config.model.timesteps,
            "miou": metrics.mean_iou(compare.confusion(dataset=subset)),
        }
    return report, _figure(report, run.config.model.name)


def _figure(report: dict, model_name: str) -> Figure:
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for method, label in (("layer", "layer-wise (Sengupta et al.)"), ("channel", "channel-wise (Spiking-YOLO)")):
        ax.plot(report[method]["timesteps"], report[method]["miou"], "-o", markersize=4, label=f"converted, {label}")
    ax.axhline(report["ann_miou"], color="black", linestyle=":", label=f"ANN {model_name}")
    if "direct" in report:
        direct = report["direct"]
        ax.plot(
            [direct["timesteps"]],
            [direct["miou"]],
            "*",
            color="tab:red",
            markersize=14,
            label=f"directly trained {direct['model']}",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    ax.set_ylabel(f"MIoU ({report['num_images']} images)")
    ax.set_title("ANN-SNN conversion against T", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure
