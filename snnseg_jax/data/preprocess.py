"""Normalization and resizing of images, event frames and labels, in numpy and Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Bump when anything below changes the arrays it produces: caches built before then are rejected.
PREPROCESS_VERSION = 2  # 2: event frames resized before min-max scaling
RGB_MEAN = np.array([122.67892, 116.66877, 104.00699], np.float32)  # (R, G, B) on the 0..255 scale
IGNORE_LABEL = 255


def resize_bilinear(x_HWC: np.ndarray, size: int) -> np.ndarray:
    """Float `[H, W, C]` to `[size, size, C]`, bilinear and antialiased (Pillow's triangle filter)."""
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(x_HWC[..., c], np.float32)).resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        for c in range(x_HWC.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def resize_labels(labels_HW: np.ndarray, size: int) -> np.ndarray:
    """Class-index map `[H, W]` uint8 to `[size, size]`, nearest neighbour."""
    image = Image.fromarray(np.ascontiguousarray(labels_HW, np.uint8))
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST))


def standardize_rgb(image_0_255: np.ndarray) -> np.ndarray:
    """RGB on the 0..255 scale to the network's input: subtract the per-channel mean, divide by 255."""
    return ((image_0_255 - RGB_MEAN) / np.float32(255.0)).astype(np.float32)


def minmax_event_frames(counts: np.ndarray) -> np.ndarray:
    """Event counts `[..., H, W, C]` min-max scaled to [-0.5, 0.5] per frame and channel.

    Over the whole frame (the released code scales each column, a bug). A channel without any
    variation in a frame (no events at all) maps to -0.5, the value of "fewest events".
    """
    low = counts.min(axis=(-3, -2), keepdims=True)
    high = counts.max(axis=(-3, -2), keepdims=True)
    return ((counts - low) / np.maximum(high - low, 1e-12) - 0.5).astype(np.float32)


def normalize_rgb(image_HW3: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 `[H, W, 3]` to the network input: resize (bilinear, antialiased), then standardize."""
    return standardize_rgb(resize_bilinear(image_HW3.astype(np.float32), size))


def normalize_events(events_HWC: np.ndarray, size: int) -> np.ndarray:
    """Event tensor `[H, W, >=2]` to `[size, size, 2]`: channels 0-1 resized, then min-max scaled.

    In this order (the authors' released code's) every channel with any event spans exactly
    [-0.5, 0.5] at the network's input. Scaling first and then downsizing 200x346 to 64x64 would
    average sparse events with their empty neighbours: on a frame with 5% of its pixels active the
    network would see about [-0.50, -0.30].
    """
    return minmax_event_frames(resize_bilinear(np.asarray(events_HWC[..., :2], np.float32), size))


def ignore_unknown_classes(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, int]:
    """Labels with every value >= num_classes (other than 255) set to 255, and how many there were."""
    unknown = (labels >= num_classes) & (labels != IGNORE_LABEL)
    return np.where(unknown, np.uint8(IGNORE_LABEL), labels), int(unknown.sum())
