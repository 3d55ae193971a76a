"""PASCAL VOC2012 with the SBD augmented labels, as distributed.

`root` is the `VOC2012` folder or a folder holding `VOCdevkit/VOC2012` (or `VOC2012`). A split is
`ImageSets/Segmentation/<split>.txt`, one item per line: a bare id, or a pair
`JPEGImages/<id>.jpg SegmentationClassAug/<id>.png` relative to the VOC2012 folder (a leading slash
is allowed). Labels of a pair come from the path it names. Labels of a bare id come from
`SegmentationClassAug` when the split's name contains "aug" (train_aug, trainval_aug) and from
`SegmentationClass` otherwise; when that folder does not exist, from the other one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from snnseg_jax import images
from snnseg_jax.data import decode, preprocess
from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.items import Item, preprocess_items
from snnseg_jax.data.split import Split

CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# RGB of each class in the devkit's label PNGs (the VOC colour map, computed in one place).
PALETTE = tuple(tuple(rgb) for rgb in images.voc_palette(len(CLASS_NAMES)).tolist())
BORDER_COLOUR = (224, 224, 192)  # the devkit's colour for 255 (and unused indices)
LABEL_FOLDERS = ("SegmentationClass", "SegmentationClassAug")
_ROOT_CANDIDATES = (".", "VOC2012", "VOCdevkit/VOC2012")


def find_voc_folder(root: Path) -> Path:
    """The VOC2012 folder: `root` itself, or `root/VOC2012`, or `root/VOCdevkit/VOC2012`."""
    if not root.is_dir():
        raise DatasetError(
            f"dataset.root={root} does not exist; expected the VOC2012 folder or a folder holding VOCdevkit/VOC2012."
        )
    for candidate in _ROOT_CANDIDATES:
        folder = root / candidate
        if (folder / "JPEGImages").is_dir():
            return folder
    raise DatasetError(
        f"No PASCAL VOC2012 folder at dataset.root={root}: expected {root}/JPEGImages (root is the "
        f"VOC2012 folder) or {root}/VOCdevkit/VOC2012/JPEGImages."
    )


def save_label_png(label_HW: np.ndarray, path: Path) -> None:
    """Class indices `[H, W]` as a devkit palette PNG (pixel values are the indices)."""
    image = Image.new("P", label_HW.shape[::-1])
    image.putpalette([c for rgb in PALETTE for c in rgb] + list(BORDER_COLOUR) * (256 - len(PALETTE)))
    image.putdata(np.asarray(label_HW, np.uint8).ravel())
    image.save(path)


def bare_id_label_folder(voc: Path, split: str) -> str:
    """The label folder of a split listed by bare ids (see the module docstring)."""
    preferred, other = LABEL_FOLDERS[::-1] if "aug" in split else LABEL_FOLDERS
    if not (voc / preferred).is_dir() and (voc / other).is_dir():
        return other
    return preferred


def parse_split_line(voc: Path, line: str, label_folder: str, list_path: Path, line_number: int) -> Item:
    """One line of a split list: a bare id or an image/label path pair."""
    fields = line.split()
    if len(fields) == 1:
        item_id = fields[0]
        return Item(item_id, voc / "JPEGImages" / f"{item_id}.jpg", voc / label_folder / f"{item_id}.png")
    if len(fields) == 2:
        image, label = (voc / field.lstrip("/") for field in fields)
        return Item(image.stem, image, label)
    raise DatasetError(
        f"{list_path} line {line_number} is {line!r}; expected an image id or a pair "
        "'JPEGImages/<id>.jpg SegmentationClassAug/<id>.png'."
    )


def list_split(root: Path, split: str) -> list[Item]:
    """The items of `split`, in list order, without reading any image."""
    voc = find_voc_folder(Path(root))
    list_path = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_path.is_file():
        raise DatasetError(
            f"Split list {list_path} is missing; expected one image id (or an image/label "
            f"path pair) per line for split {split!r}."
        )
    label_folder = bare_id_label_folder(voc, split)
    lines = list_path.read_text().splitlines()
    items = [
        parse_split_line(voc, line, label_folder, list_path, number)
        for number, line in enumerate(lines, 1)
        if line.strip()
    ]
    if not items:
        raise DatasetError(f"Split list {list_path} lists no images.")
    return items


def read_split(items: list[Item], split: str, image_size: int) -> Split:
    """Read and normalize listed items: images `[N, S, S, 3]`, labels `[N, S, S]`."""
    inputs, labels = preprocess_items(
        items,
        decode.read_rgb,
        preprocess.normalize_rgb,
        channels=3,
        image_size=image_size,
        num_classes=len(CLASS_NAMES),
        description=f"voc2012 {split}",
    )
    return Split(inputs, labels, tuple(item.id for item in items), CLASS_NAMES)
