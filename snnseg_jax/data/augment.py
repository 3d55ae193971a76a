"""The DDD17 augmentation of the authors' code: flip, scale, translate, rotate, nearest neighbour.

One random geometry per sequence, applied to all its frames and its label alike. Pixels that come
from outside the frame are filled: labels with 255 (ignored), event frames with -0.5 (the normalized
value of "no events").
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snnseg_jax.data.preprocess import IGNORE_LABEL

SCALE_RANGE = (0.5, 2.0)
MAX_SHIFT = 0.25  # fraction of the frame's height / width
MAX_ANGLE_DEGREES = 15.0
EVENT_FILL = -0.5


@dataclasses.dataclass(frozen=True)
class Geometry:
    flip: bool  # horizontal, applied first
    scale: float
    angle_degrees: float  # counter-clockwise as displayed (rows pointing down)
    shift_y: float  # fractions of height / width
    shift_x: float


def random_geometry(rng: np.random.Generator) -> Geometry:
    """Draw the augmentation's parameters: flip with p=0.5, scale, rotation and shift uniform."""
    return Geometry(
        flip=bool(rng.random() < 0.5),
        scale=float(rng.uniform(*SCALE_RANGE)),
        angle_degrees=float(rng.uniform(-MAX_ANGLE_DEGREES, MAX_ANGLE_DEGREES)),
        shift_y=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
        shift_x=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
    )


def source_pixels(geometry: Geometry, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel, the input pixel it takes (nearest): rows, cols `[H, W]` and `inside`.

    The output is the flipped input scaled and rotated about the centre, then shifted; this inverts
    that map at each output pixel centre.
    """
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    out_y, out_x = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    dy = out_y - centre_y - geometry.shift_y * height
    dx = out_x - centre_x - geometry.shift_x * width
    angle = np.deg2rad(geometry.angle_degrees)
    cos, sin = np.cos(angle) / geometry.scale, np.sin(angle) / geometry.scale
    # Inverse of the forward on-screen counter-clockwise turn (x, y) -> (x cos + y sin, -x sin + y cos).
    src_x = cos * dx - sin * dy + centre_x
    src_y = sin * dx + cos * dy + centre_y
    if geometry.flip:
        src_x = (width - 1) - src_x
    rows, cols = np.rint(src_y).astype(np.int64), np.rint(src_x).astype(np.int64)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1), inside


def apply_geometry(
    frames_THWC: np.ndarray, label_HW: np.ndarray, geometry: Geometry, input_fill: float = EVENT_FILL
) -> tuple[np.ndarray, np.ndarray]:
    """Warp every frame and the label (or labels `[..., H, W]`, one per frame) with the same geometry."""
    rows, cols, inside = source_pixels(geometry, *label_HW.shape[-2:])
    frames = np.where(inside[None, :, :, None], frames_THWC[:, rows, cols], np.float32(input_fill))
    label = np.where(inside, label_HW[..., rows, cols], np.uint8(IGNORE_LABEL))
    return frames.astype(frames_THWC.dtype), label.astype(np.uint8)


def augment_sequence(
    frames_THWC: np.ndarray, label_HW: np.ndarray, rng: np.random.Generator, input_fill: float = EVENT_FILL
) -> tuple[np.ndarray, np.ndarray]:
    """One random geometry drawn from `rng`, applied to all frames `[T, H, W, C]` and the label."""
    return apply_geometry(frames_THWC, label_HW, random_geometry(rng), input_fill)
