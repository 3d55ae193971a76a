"""Pictures of inputs and label maps: class palettes, label maps coloured, inputs made viewable, and
images tiled side by side (the sample figures and the TensorBoard predictions).

Labels are drawn with the dataset's palette: the PASCAL VOC colour map, Cityscapes colours for
DDD17's six Ev-SegNet classes, a palette of distinct colours for the synthetic datasets' five;
ignored pixels (255) white. Static images are shown as RGB (normalization undone); event sequences
as the last frame's positive minus negative events. Imports nothing of the project.
"""

from __future__ import annotations

import numpy as np

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


def displayable(inputs: np.ndarray, rgb_mean: np.ndarray) -> tuple[np.ndarray, dict]:
    """One network input as an image for `imshow`, with its keyword arguments.

    Static images: RGB in [0, 1], the normalization undone (`rgb_mean` the per-channel mean on the
    0..255 scale that it subtracted). Event sequences `[T, H, W, 2]`: the last frame's positive minus
    negative channel, grey, symmetric around 0.
    """
    if inputs.ndim == 4:
        frame = inputs[-1, ..., 0] - inputs[-1, ..., 1]
        limit = max(float(np.abs(frame).max()), 1e-6)
        return frame, {"cmap": "gray", "vmin": -limit, "vmax": limit}
    pixels = inputs * 255.0 + rgb_mean
    return np.clip(pixels / 255.0, 0.0, 1.0), {}


def as_rgb(image: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """uint8 `[H, W, 3]` of an RGB image in [0, 1], or of a grey one `[H, W]` shown from `vmin` to `vmax`."""
    if image.ndim == 2:
        low, high = (image.min() if vmin is None else vmin), (image.max() if vmax is None else vmax)
        image = np.repeat(((image - low) / max(high - low, 1e-12))[..., None], 3, axis=-1)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def side_by_side(*images: np.ndarray, min_height: int = 128) -> np.ndarray:
    """uint8 `[H, W, 3]` images of one size next to each other, enlarged (nearest) to `min_height` rows."""
    scale = max(1, -(-min_height // images[0].shape[0]))
    gap = np.full((images[0].shape[0] * scale, scale, 3), 255, np.uint8)
    enlarged = [np.kron(image, np.ones((scale, scale, 1), np.uint8)) for image in images]
    return np.concatenate([part for image in enlarged for part in (image, gap)][:-1], axis=1)
