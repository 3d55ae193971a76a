"""Reading single files (JPEG, label PNG, event .npy) with a clear error for each way they can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from snnseg_jax.data.errors import DatasetError

REPLACE_OR_LEAVE_OUT = "Replace the file, or leave it out of the split."
LABEL_MODES = ("P", "L")  # palette PNG (VOC) or grayscale PNG (SBD, DDD17): pixel values are class indices


def _open_decoded(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise DatasetError(f"{what} {path} is missing.")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's ways of saying "not decodable"
        raise DatasetError(f"Cannot decode {what} {path}: {error}.") from None
    return image


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 `[H, W, 3]` (grayscale and CMYK JPEGs converted)."""
    return np.asarray(_open_decoded(path, "image").convert("RGB"))


def read_label(path: Path) -> np.ndarray:
    """A label PNG as class indices uint8 `[H, W]`: the pixel values themselves, never the colours.

    A palette PNG's pixels are indices into its palette, which are the class indices in VOC; an RGB
    label image (colours) is rejected rather than guessed back into classes.
    """
    image = _open_decoded(path, "label")
    if image.mode not in LABEL_MODES:
        raise DatasetError(
            f"Label {path} has image mode {image.mode!r}; expected a single-channel PNG of class "
            "indices (palette mode 'P' as in SegmentationClass, or grayscale 'L')."
        )
    return np.asarray(image, np.uint8)


def read_events(path: Path) -> np.ndarray:
    """An event tensor `.npy`: float32 `[H, W, 6]` (channels 0-1 are the event counts)."""
    if not path.is_file():
        raise DatasetError(f"Event tensor {path} is missing.")
    try:
        events = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"Cannot read event tensor {path} as a .npy array: {error}.") from None
    if events.ndim != 3 or events.shape[-1] != 6 or events.dtype != np.float32:
        raise DatasetError(
            f"Event tensor {path} has shape {events.shape} and dtype {events.dtype}; expected "
            "float32 of shape [H, W, 6] (DDD17 as distributed with Ev-SegNet)."
        )
    return events


def check_finite(path: Path, values: np.ndarray, channels_in_file: int) -> None:
    """Raise unless every value read from `path` is finite, saying how many are NaN, +inf and -inf."""
    if values.dtype.kind != "f" or np.isfinite(values).all():
        return
    counts = {"NaN": np.isnan(values).sum(), "+inf": np.isposinf(values).sum(), "-inf": np.isneginf(values).sum()}
    where = "" if values.shape[-1] == channels_in_file else f" in channels 0-{values.shape[-1] - 1} (the ones used)"
    raise DatasetError(
        f"{path} holds {sum(counts.values())} non-finite values "
        f"({', '.join(f'{count} {name}' for name, count in counts.items() if count)}){where}; inputs must be finite. "
        + REPLACE_OR_LEAVE_OUT
    )


def check_normalized(path: Path, normalized: np.ndarray, values: np.ndarray) -> None:
    """Raise unless normalizing the (finite) `values` read from `path` gave finite values."""
    if not np.isfinite(normalized).all():
        raise DatasetError(
            f"{path} holds values up to {np.abs(values).max():.3g} in magnitude, too large to normalize in "
            f"float32: {np.count_nonzero(~np.isfinite(normalized))} non-finite values result. " + REPLACE_OR_LEAVE_OUT
        )


def check_same_size(input_path: Path, input_hw: tuple[int, ...], label_path: Path, label_hw: tuple[int, ...]) -> None:
    """Raise unless an input and its label have the same height and width."""
    if tuple(input_hw) != tuple(label_hw):
        raise DatasetError(
            f"{input_path} is {input_hw[0]}x{input_hw[1]} (HxW) but its label {label_path} is "
            f"{label_hw[0]}x{label_hw[1]}; an input and its label must have the same size."
        )
