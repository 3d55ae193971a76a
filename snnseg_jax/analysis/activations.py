"""Activation variance of a trained ANN (Fig. 4, paper §3).

Per layer (the output of each conv-BN-ReLU unit of the architecture's table), over the first
`activation_images` images of the evaluation split: the maximum activation of each channel (over
images and positions) and of each spatial position (over images and channels, positions in
row-major order), both divided by the layer's maximum. A wide spread is what defeats one threshold
per layer (or per channel) in conversion. On event data the ANN's backbone runs on every frame; its
maxima include all frames.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from matplotlib.figure import Figure

from snnseg_jax import architecture, data, steps
from snnseg_jax.evaluate import Restored


def max_activation_step(state, batch: dict, key: jax.Array, *, model: nn.Module) -> dict[str, tuple]:
    """Per unit: maxima per image of each channel `[B, C]` and of each position `[B, H * W]`."""
    outputs = steps.layer_outputs(state, batch, key, model=model)
    batch_size = len(batch["inputs"])
    maxima = {}
    for layer in model.architecture.layers:
        if layer.op != architecture.UNIT:
            continue
        out = outputs[layer.name]
        per_image = out.max(axis=0)  # the maximum over frames
        maxima[layer.name] = (per_image.max(axis=(1, 2)), per_image.max(axis=3).reshape(batch_size, -1))
    return maxima


def normalized_maxima(run: Restored, dataset: data.Dataset) -> dict[str, dict]:
    """Per unit, in forward order: channel and spatial maxima over `dataset` divided by the layer
    maximum, and their medians (a median far below 1: one threshold per layer fits few neurons)."""
    per_batch = run.map_batches(max_activation_step, run.state, dataset)
    result = {}
    for name in per_batch[0]:
        channel, spatial = (np.concatenate([b[name][i] for b in per_batch])[: len(dataset)].max(axis=0) for i in (0, 1))
        layer_max = max(float(channel.max()), np.finfo(np.float32).tiny)
        channel, spatial = channel / layer_max, spatial / layer_max
        result[name] = {
            "channel_max": channel.tolist(),
            "spatial_max": spatial.tolist(),
            "layer_max": layer_max,
            "channel_median": float(np.median(channel)),
            "spatial_median": float(np.median(spatial)),
        }
    return result


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    subset = run.first_images(run.config.analysis.activation_images)
    layers = normalized_maxima(run, subset)
    report = {"layers": [{"name": name, **values} for name, values in layers.items()], "num_images": len(subset)}
    return report, _figure(report["layers"], run.config.model.name, len(subset))


def _figure(layers: list[dict], model_name: str, num_images: int) -> Figure:
    """Per layer, the spread of the normalized maxima over channels (a) and over positions (b): a box
    (quartiles, median line) over every value as a dot."""
    figure = Figure(figsize=(8, 6.4), layout="constrained")
    figure.suptitle(
        f"Maximum activation of each channel and position, relative to its layer's maximum\n"
        f"(ANN {model_name}, {num_images} images; Fig. 4)",
        fontsize=11,
    )
    names = [layer["name"] for layer in layers]
    jitter = np.random.default_rng(0)
    for ax, (key, what, colour) in zip(
        figure.subplots(2, 1), (("channel_max", "channel", "tab:blue"), ("spatial_max", "position", "tab:green"))
    ):
        values = [np.asarray(layer[key]) for layer in layers]
        for i, v in enumerate(values):
            ax.plot(i + jitter.uniform(-0.25, 0.25, len(v)), v, ".", color=colour, alpha=0.35, markersize=3)
        ax.boxplot(values, positions=range(len(values)), widths=0.6, showfliers=False, medianprops={"color": "black"})
        ax.set_xticks(range(len(names)), names, fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"max per {what} / layer max", fontsize=9)
        ax.set_title(f"({'a' if what == 'channel' else 'b'}) per {what}", fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
    return figure
