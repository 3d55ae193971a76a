"""Image / prediction / ground-truth triplets of the first evaluation images (Figs. 8 and 9).

Labels are drawn with the dataset's palette: the PASCAL VOC colour map, Cityscapes
colours for DDD17's six Ev-SegNet classes, a palette of distinct colours for the synthetic
datasets' five; ignored pixels (255) white. Static images are shown as RGB (normalization undone);
event sequences as the last frame's positive minus negative events.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from snnseg_jax.data import preprocess
from snnseg_jax.evaluate import Restored

DDD17_PALETTE = ((128, 64, 128), (70, 70, 70), (220, 220, 0), (107, 142, 35), (220, 20, 60), (0, 0, 142))
SYNTHETIC_PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25))
IGNORED_COLOUR = (255, 255, 255)


def voc_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map: class bits spread over the high bits of R, G and B, `[K, 3]`."""
    palette = np.zeros((num_classes, 3), np.uint8)
    for k in range(num_classes):
        c, shift = k, 7
        while c:
            for channel in range(3):
                palette[k, channel] |= ((c >> channel) & 1) << shift
            c, shift = c >> 3, shift - 1
    return palette


def palette_for(dataset_name: str, num_classes: int) -> np.ndarray:
    """`[K, 3]` uint8 colours of the classes of dataset `dataset_name`."""
    own = {"ddd17": DDD17_PALETTE, "shapes": SYNTHETIC_PALETTE, "events": SYNTHETIC_PALETTE}.get(dataset_name)
    if own is not None and len(own) >= num_classes:
        return np.asarray(own[:num_classes], np.uint8)
    return voc_palette(num_classes)


def colour_labels(labels_HW: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB `[H, W, 3]` of a label map; labels outside the palette (ignored) white."""
    known = labels_HW < len(palette)
    rgb = palette[np.where(known, labels_HW, 0)]
    rgb[~known] = IGNORED_COLOUR
    return rgb


def displayable(inputs: np.ndarray) -> tuple[np.ndarray, dict]:
    """One network input as an image for `imshow`, with its keyword arguments.

    Static images: RGB in [0, 1] (normalization undone). Event sequences `[T, H, W, 2]`: the last
    frame's positive minus negative channel, grey, symmetric around 0.
    """
    if inputs.ndim == 4:
        frame = inputs[-1, ..., 0] - inputs[-1, ..., 1]
        limit = max(float(np.abs(frame).max()), 1e-6)
        return frame, {"cmap": "gray", "vmin": -limit, "vmax": limit}
    pixels = inputs * 255.0 + preprocess.RGB_MEAN  # inverse of preprocess.standardize_rgb
    return np.clip(pixels / 255.0, 0.0, 1.0), {}


def predict_step(state, batch: dict, key: jax.Array, *, model: nn.Module) -> jax.Array:
    """Predicted classes `[B, H, W]`."""
    logits = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"], train=False, rngs={"spikes": key}
    )
    return jnp.argmax(logits, axis=-1)


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    subset = run.first_images(run.config.analysis.num_samples)
    inputs, labels, count = subset.inputs, subset.labels, len(subset)
    predictions = np.concatenate(run.map_batches(predict_step, run.state, subset))[:count]
    names = run.dataset.class_names
    palette = palette_for(run.config.dataset.name, len(names))
    valid = labels < len(names)
    pixel_accuracy = [float(np.mean(p[v] == truth[v])) for p, truth, v in zip(predictions, labels, valid)]
    report = {
        "num_samples": count,
        "class_names": list(names),
        "palette": palette.tolist(),
        "pixel_accuracy": pixel_accuracy,
    }
    return report, _figure(inputs, predictions, labels, palette, names, run.config.model.name, pixel_accuracy)


def _figure(inputs, predictions, labels, palette, names, model_name, pixel_accuracy) -> Figure:
    count = len(labels)
    figure = Figure(figsize=(6, 2 * count + 0.4), layout="constrained")
    axes = figure.subplots(count, 3, squeeze=False)
    for i in range(count):
        image, style = displayable(inputs[i])
        panels = (
            (image, style, "input"),
            (colour_labels(predictions[i], palette), {}, f"{model_name} ({pixel_accuracy[i]:.0%} pixels)"),
            (colour_labels(labels[i], palette), {}, "ground truth"),
        )
        for ax, (picture, kwargs, title) in zip(axes[i], panels):
            ax.imshow(picture, interpolation="nearest", **kwargs)
            ax.set_axis_off()
            if i == 0 or title.startswith(model_name):
                ax.set_title(title, fontsize=8)
    figure.legend(
        handles=[Patch(color=np.asarray(c) / 255.0, label=n) for c, n in zip(palette, names)],
        loc="outside lower center",
        ncol=min(len(names), 6),
        fontsize=7,
        frameon=False,
    )
    return figure
