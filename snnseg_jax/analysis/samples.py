"""Image / prediction / ground-truth triplets of the first evaluation images (Figs. 8 and 9), drawn
as `images` draws them (the dataset's palette; static images as RGB, event sequences as the last
frame's positive minus negative events)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from snnseg_jax.data import preprocess
from snnseg_jax.evaluate import Restored
from snnseg_jax.images import colour_labels, displayable, palette_for


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    subset, predictions = run.predict_first(run.config.analysis.num_samples)
    inputs, labels, count = subset.inputs, subset.labels, len(subset)
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
        image, style = displayable(inputs[i], preprocess.RGB_MEAN)
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
