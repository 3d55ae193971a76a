"""Continuous segmentation of event recordings, against the paper's windows of T frames.

Continuous: the spiking network reads each recording of the evaluation split frame by frame
(`stream`), carrying its state from the first frame to the last, never reset, and its prediction
after each frame is scored against that frame's label. Windowed (the paper's protocol, and the
plain evaluation's): each frame is predicted from the window of T frames ending at it, from zero
state. Both score every frame of the split once, so the two MIoUs compare directly.

A recording is a run of consecutive frames of one recording (`data.split.runs_of`: a gap in the
frame numbers starts a new one). It is fed in chunks of `CHUNK` frames (one compilation whatever
its length), at batch 1, so `frames_per_second` is the rate a live stream would get here.

Past the first T frames BNTT has no statistics of its own; `config.analysis.stream_late_statistics`
picks the rule (`stream`), and `continuous_miou_by_late_statistics` reports every rule.
"""

from __future__ import annotations

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from snnseg_jax import images, metrics, stream
from snnseg_jax.data import preprocess
from snnseg_jax.data.split import runs_of
from snnseg_jax.evaluate import Restored

CHUNK = 32  # frames per compiled scan
POSITIONS = 16  # MIoU by position in the recording: frames 1 .. 15, then all later ones
STRIP_FRAMES = 8  # frames shown in the figure


@functools.partial(jax.jit, static_argnums=(0, 6))
def _chunk(
    model: nn.Module,
    variables: dict,
    state: stream.State,
    frames: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    late_statistics: str,
):
    """Steps through `frames` `[C, 1, H, W, 2]`; the confusion matrix of the valid frames' predictions."""

    def one_step(state, inputs):
        frame, label, keep = inputs
        new_state, logits = stream.step(model, variables, state, frame, late_statistics=late_statistics)
        state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, state)
        prediction = jnp.argmax(logits, -1)
        confusion = metrics.confusion_matrix(label, prediction, logits.shape[-1]) * keep
        return state, (confusion, prediction)

    state, (confusions, predictions) = jax.lax.scan(one_step, state, (frames, labels, valid))
    return state, confusions, predictions


def continuous(
    model: nn.Module, variables: dict, frames: np.ndarray, labels: np.ndarray, late_statistics: str = "last"
) -> tuple[np.ndarray, np.ndarray]:
    """The confusion matrices `[L, K, K]` of each frame of one recording `[L, H, W, 2]` streamed from zero
    state, and its predictions `[L, H, W]`."""
    state = stream.init(model, variables, (1, *frames.shape[1:]))
    confusions, predictions = [], []
    for start in range(0, len(frames), CHUNK):
        chunk = slice(start, start + CHUNK)
        count = len(frames[chunk])
        pad = lambda a, count=count: np.concatenate([a, np.zeros((CHUNK - count, *a.shape[1:]), a.dtype)])[:, None]
        valid = np.arange(CHUNK) < count
        state, confusion, predicted = _chunk(
            model, variables, state, pad(frames[chunk]), pad(labels[chunk]), valid, late_statistics
        )
        confusions.append(np.asarray(confusion, np.int64)[:count])
        predictions.append(np.asarray(predicted)[:count, 0])
    return np.concatenate(confusions), np.concatenate(predictions)


def stream_split(model: nn.Module, variables: dict, split, late_statistics: str) -> tuple[np.ndarray, float, tuple]:
    """Every recording of `split` streamed: the confusion matrices by position in the recording
    `[POSITIONS, K, K]` (the last one for every later position), the seconds it took, and the longest
    recording's frame indices and predictions."""
    recordings = runs_of(split)
    first = recordings[0][:1]
    continuous(model, variables, split.inputs[first], split.labels[first], late_statistics)  # compile
    start, confusion, longest = time.perf_counter(), 0, None
    for indices in recordings:
        counted, predictions = continuous(
            model, variables, split.inputs[indices], split.labels[indices], late_statistics
        )
        by_position = np.zeros((POSITIONS, *counted.shape[1:]), np.int64)
        np.add.at(by_position, np.minimum(np.arange(len(counted)), POSITIONS - 1), counted)
        confusion = confusion + by_position
        if longest is None or len(indices) > len(longest[0]):
            longest = (indices, predictions)
    return confusion, time.perf_counter() - start, longest


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    split = run.dataset.split
    variables = {"params": run.state.params, "batch_stats": run.state.batch_stats}
    rule = run.config.analysis.stream_late_statistics
    by_rule = {other: stream_split(run.model, variables, split, other) for other in stream.LATE_STATISTICS}
    by_position, seconds, longest = by_rule[rule]
    confusion, windowed = by_position.sum(axis=0), run.confusion()
    report = {
        "continuous_miou": metrics.mean_iou(confusion),
        "windowed_miou": metrics.mean_iou(windowed),
        "frames": len(split),
        "recordings": len(runs_of(split)),
        "frames_per_second": len(split) / seconds,
        "continuous_pixel_accuracy": metrics.pixel_accuracy(confusion),
        "windowed_pixel_accuracy": metrics.pixel_accuracy(windowed),
        "late_statistics": rule,
        "continuous_miou_by_late_statistics": {
            other: metrics.mean_iou(c.sum(axis=0)) for other, (c, _, _) in by_rule.items()
        },
        "continuous_miou_by_position": [metrics.mean_iou(c) for c in by_position],
        "model": run.config.model.name,
        "timesteps": run.model.settings.timesteps,
    }
    return report, _figure(run, split, *longest, report)


def _figure(run: Restored, split, indices: np.ndarray, predictions: np.ndarray, report: dict) -> Figure:
    """Input, continuous prediction and label of frames spread over the longest recording; below,
    the continuous MIoU by position in the recording against the windowed MIoU."""
    shown = np.linspace(0, len(indices) - 1, min(STRIP_FRAMES, len(indices))).astype(int)
    palette = images.palette_for(run.config.dataset.name, len(split.class_names))
    figure = Figure(figsize=(max(1.4 * len(shown), 7), 6.6), layout="constrained")
    strip, curve = figure.subfigures(2, 1, height_ratios=[3, 1.6])
    axes = strip.subplots(3, len(shown), squeeze=False)
    for column, f in enumerate(shown):
        image, style = images.displayable(split.inputs[indices[f]][None], preprocess.RGB_MEAN)
        panels = (
            (image, style),
            (images.colour_labels(predictions[f], palette), {}),
            (images.colour_labels(split.labels[indices[f]], palette), {}),
        )
        for row, (picture, kwargs) in enumerate(panels):
            axes[row, column].imshow(picture, interpolation="nearest", **kwargs)
            axes[row, column].set_axis_off()
        axes[0, column].set_title(f"frame {f + 1}", fontsize=8)
    for row, name in enumerate(("events", "streamed", "label")):
        axes[row, 0].text(
            -0.1, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center", fontsize=8
        )
    strip.suptitle(
        f"{report['model']} streaming one recording: MIoU {report['continuous_miou']:.3f} "
        f"continuous, {report['windowed_miou']:.3f} in windows of T={report['timesteps']}",
        fontsize=9,
    )
    ax = curve.subplots()
    positions = np.arange(1, POSITIONS + 1)
    ax.plot(positions, report["continuous_miou_by_position"], "-o", markersize=3, label="streamed from frame 1")
    ax.axhline(report["windowed_miou"], color="black", linestyle=":", label=f"windows of T={report['timesteps']}")
    ax.axvline(report["timesteps"], color="grey", linewidth=0.8)
    ax.set_xticks(positions, [*map(str, positions[:-1]), f"{POSITIONS}+"], fontsize=7)
    ax.set_xlabel("frame of the recording", fontsize=8)
    ax.set_ylabel("MIoU", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return figure
