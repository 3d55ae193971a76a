"""Segmentation metrics from one global confusion matrix (the paper's MIoU).

The confusion matrix is computed on device per batch and summed on the host; MIoU, per-class IoU
and pixel accuracy are computed once from the total, never averaged over batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_LABEL = 255  # label of pixels without a class (object borders in VOC); any label >= C is ignored


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int) -> jax.Array:
    """`[C, C]` int32 counts, rows true class, columns predicted; labels >= C are left out."""
    labels = labels.astype(jnp.int32).ravel()
    valid = (labels >= 0) & (labels < num_classes)
    flat = jnp.where(valid, labels, 0) * num_classes + predictions.astype(jnp.int32).ravel()
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[flat].add(valid.astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU_c = TP / (TP + FP + FN) per class; NaN for a class absent from truth and prediction."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes with a non-zero union."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Correctly classified pixels over all counted pixels."""
    confusion = np.asarray(confusion, np.float64)
    return float(np.trace(confusion) / confusion.sum()) if confusion.sum() else float("nan")


def summary(confusion: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """The JSON-ready metrics of a confusion matrix."""
    iou = iou_per_class(confusion)
    return {
        "miou": mean_iou(confusion),
        "pixel_accuracy": pixel_accuracy(confusion),
        "iou_per_class": [None if np.isnan(v) else float(v) for v in iou],
        "class_names": list(class_names),
    }
