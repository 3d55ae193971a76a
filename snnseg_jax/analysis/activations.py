"""Activation variance of a trained ANN (Fig. 4, paper §3).

Per layer (the output of each conv-BN-ReLU unit of the architecture's table), over the first `activation_images` images of the
evaluation split: the maximum activation of each channel (over images and positions) and of each
spatial position (over images and channels, positions in row-major order), both divided by the
layer's maximum. A wide spread is what defeats one threshold per layer (or per channel) in
conversion. On event data the ANN's backbone runs on every frame; its maxima include all frames.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from matplotlib.figure import Figure

from snnseg_jax import architecture, data, models, ops
from snnseg_jax.evaluate import Restored


def max_activation_step(state, batch: dict, key: jax.Array, *, model: nn.Module) -> dict[str, tuple]:
    """Per unit: maxima per image of each channel `[B, C]` and of each position `[B, H * W]`."""
    _, sown = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"],
                          train=False, rngs={"spikes": key}, mutable=[models.ACTIVITY])
    batch_size = len(batch["inputs"])
    maxima = {}
    for layer in model.architecture.layers:
        if layer.op != architecture.UNIT:
            continue
        out = models.activity(sown)[layer.name]
        per_image = ops.split_time(out, len(out) // batch_size).max(axis=1)  # the maximum over frames
        maxima[layer.name] = (per_image.max(axis=(1, 2)), per_image.max(axis=3).reshape(batch_size, -1))
    return maxima


def normalized_maxima(run: Restored, dataset: data.Dataset) -> dict[str, dict]:
    """Per unit, in forward order: channel and spatial maxima over `dataset` divided by the layer
    maximum, and their medians (a median far below 1: one threshold per layer fits few neurons)."""
    per_batch = run.map_batches(max_activation_step, run.state, dataset)
    result = {}
    for name in per_batch[0]:
        channel, spatial = (np.concatenate([b[name][i] for b in per_batch])[:len(dataset)].max(axis=0)
                            for i in (0, 1))
        layer_max = max(float(channel.max()), np.finfo(np.float32).tiny)
        channel, spatial = channel / layer_max, spatial / layer_max
        result[name] = {"channel_max": channel.tolist(), "spatial_max": spatial.tolist(),
                        "layer_max": layer_max, "channel_median": float(np.median(channel)),
                        "spatial_median": float(np.median(spatial))}
    return result


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    subset = run.first_images(run.config.analysis.activation_images)
    layers = normalized_maxima(run, subset)
    report = {"layers": [{"name": name, **values} for name, values in layers.items()],
              "num_images": len(subset)}
    return report, _figure(report["layers"])


def _figure(layers: list[dict]) -> Figure:
    figure = Figure(figsize=(2.1 * len(layers), 4.2), layout="constrained")
    axes = figure.subplots(2, len(layers), squeeze=False)
    for column, layer in enumerate(layers):
        for row, (key, axis_name) in enumerate((("channel_max", "channel"), ("spatial_max", "position"))):
            ax = axes[row, column]
            ax.bar(np.arange(len(layer[key])), layer[key], width=1.0,
                   color="tab:blue" if row == 0 else "tab:green")
            ax.set_ylim(0, 1.05)
            ax.set_xlabel(f"{axis_name} index", fontsize=7)
            ax.tick_params(labelsize=6)
            if row == 0:
                ax.set_title(layer["name"], fontsize=8)
            if column == 0:
                ax.set_ylabel(f"({'ab'[row]}) normalized max per {axis_name}", fontsize=7)
    return figure
