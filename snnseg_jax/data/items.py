"""Listed files of a split, and their preprocessing into arrays with a progress bar."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tqdm

from snnseg_jax.data import decode, preprocess

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Item:
    """One input file and its label file."""

    id: str
    input_path: Path
    label_path: Path


def preprocess_items(
    items: Sequence[Item],
    read_input: Callable[[Path], np.ndarray],
    normalize: Callable[[np.ndarray, int], np.ndarray],
    channels: int,
    image_size: int,
    num_classes: int,
    description: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Read, check and normalize every item: `inputs [N, S, S, channels]` float32, `labels [N, S, S]` uint8.

    Labels >= num_classes other than 255 become 255; one warning for the whole split counts them.
    """
    n, size = len(items), image_size
    inputs = np.empty((n, size, size, channels), np.float32)
    labels = np.empty((n, size, size), np.uint8)
    unknown_pixels = unknown_items = 0
    for i, item in enumerate(tqdm.tqdm(items, desc=description, unit="file", mininterval=2.0)):
        raw_input = read_input(item.input_path)
        raw_label = decode.read_label(item.label_path)
        decode.check_same_size(item.input_path, raw_input.shape[:2], item.label_path, raw_label.shape)
        raw_label, unknown = preprocess.ignore_unknown_classes(raw_label, num_classes)
        unknown_pixels += unknown
        unknown_items += unknown > 0
        inputs[i] = normalize(raw_input, size)
        labels[i] = preprocess.resize_labels(raw_label, size)
    warn_unknown_classes(unknown_pixels, unknown_items, num_classes, description)
    return inputs, labels


def warn_unknown_classes(pixels: int, items: int, num_classes: int, description: str) -> None:
    """The one warning of a split about label values that are not classes."""
    if pixels:
        log.warning(
            "%s: %d label pixels in %d files have values >= %d (not a class, not 255); they are ignored like 255.",
            description,
            pixels,
            items,
            num_classes,
        )
