"""Small PASCAL VOC2012 and DDD17 datasets written in their genuine on-disk formats, for tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from snnseg_jax.data import loading, voc

VOC_SIZES = {
    "2007_000032": (37, 53),
    "2007_000039": (60, 45),
    "2008_000123": (24, 24),
    "2009_001000": (50, 71),
    "2011_003276": (33, 40),
}  # id: (H, W)
VOC_TRAIN, VOC_VAL = ("2007_000032", "2007_000039", "2008_000123"), ("2009_001000", "2011_003276")
# DDD17 recordings: frame numbers cross a digit boundary (9 -> 10) to check numeric ordering.
DDD17_TRAIN = {1487339175: (8, 9, 10, 11), 1487779465: (3, 4, 5)}
DDD17_TEST = {1487417411: (98, 99, 100, 101, 102), 1487593224: (0, 1)}
EVENTS_HW = (20, 34)


def voc_label(rng: np.random.Generator, height: int, width: int, num_classes: int = 21) -> np.ndarray:
    """Class blobs with a 255 border around every object, as in SegmentationClass."""
    label = np.zeros((height, width), np.uint8)
    for _ in range(3):
        y0, x0 = rng.integers(0, height - 6), rng.integers(0, width - 6)
        label[y0 : y0 + rng.integers(4, 12), x0 : x0 + rng.integers(4, 12)] = rng.integers(1, num_classes)
    edges = np.zeros_like(label, bool)
    edges[1:] |= label[1:] != label[:-1]
    edges[:, 1:] |= label[:, 1:] != label[:, :-1]
    label[edges] = 255
    return label


def make_voc(base: Path, nested: bool = True, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A VOC tree with SegmentationClass (palette) and SegmentationClassAug (grayscale, different
    content), lists train/val (bare ids) and train_aug (pairs with a leading slash).

    Returns the dataset root and the true label arrays, keyed "<folder>/<id>".
    """
    rng = np.random.default_rng(seed)
    folder = base / "VOCdevkit" / "VOC2012" if nested else base / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    labels = {}
    for image_id, (h, w) in VOC_SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / "JPEGImages" / f"{image_id}.jpg", quality=95
        )
        labels[f"SegmentationClass/{image_id}"] = voc_label(rng, h, w)
        voc.save_label_png(labels[f"SegmentationClass/{image_id}"], folder / "SegmentationClass" / f"{image_id}.png")
        labels[f"SegmentationClassAug/{image_id}"] = voc_label(rng, h, w)
        Image.fromarray(labels[f"SegmentationClassAug/{image_id}"]).save(
            folder / "SegmentationClassAug" / f"{image_id}.png"
        )
    lists = folder / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in VOC_TRAIN))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in VOC_VAL))
    (lists / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in VOC_TRAIN)
    )
    return (base if nested else folder), labels


def ddd17_frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An event tensor `[H, W, 6]` float32 (counts in channels 0-1) and its label `[H, W]`."""
    events = rng.uniform(-1, 1, (*EVENTS_HW, 6)).astype(np.float32)
    events[..., :2] = rng.poisson(rng.uniform(0.5, 4), (*EVENTS_HW, 2))
    label = rng.integers(0, 6, EVENTS_HW).astype(np.uint8)
    label[:, :2] = 255
    return events, label


def make_ddd17(root: Path, layout: str, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """DDD17 splits train and test in the Ev-SegNet layout ("evsegnet") or the list form ("lists").

    Both layouts with the same seed hold the same data. Returns {name: (events, label)}.
    """
    rng = np.random.default_rng(seed)
    frames = {}
    for split, recordings in (("train", DDD17_TRAIN), ("test", DDD17_TEST)):
        events_dir, labels_dir = (
            (root / split / "events", root / split / "labels")
            if layout == "evsegnet"
            else (root / "events" / split, root / "labels" / split)
        )
        events_dir.mkdir(parents=True, exist_ok=True)
        labels_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for recording, numbers in recordings.items():
            for number in numbers:
                name = f"rec{recording}_export_{number}"
                frames[name] = ddd17_frame(rng)
                np.save(events_dir / f"{name}.npy", frames[name][0])
                Image.fromarray(frames[name][1]).save(labels_dir / f"{name}.png")
                lines.append(f"events/{split}/{name}.npy labels/{split}/{name}.png\n")
        if layout == "lists":
            (root / "datalists").mkdir(exist_ok=True)
            (root / "datalists" / f"{split}.txt").write_text("".join(reversed(lines)))
    return frames


def make_dataset(base: Path, layout: str) -> Path:
    """A dataset root: "voc" (VOCdevkit under base) or DDD17 in the "evsegnet" or "lists" layout."""
    if layout == "voc":
        return make_voc(base)[0]
    make_ddd17(base, layout)
    return base


def put_nonfinite(path: Path, value: float, count: int = 100) -> None:
    """Set `count` values of channel 0 (event counts) of the event tensor at `path` to `value`."""
    events = np.load(path)
    events.reshape(-1, events.shape[-1])[:count, 0] = value
    np.save(path, events)


def rewrite(path: Path) -> None:
    """Other content of the same kind in the file at `path` (a re-exported image or tensor, a corrected
    label), dated one second later whatever the file system's clock resolution."""
    modified = path.stat().st_mtime_ns + 10**9
    if path.suffix == ".npy":
        np.save(path, np.load(path) + 1)
    else:
        pixels = np.asarray(Image.open(path))
        changed = 255 - pixels if pixels.ndim == 3 else np.where(pixels == 255, 255, 0).astype(np.uint8)
        Image.fromarray(changed).save(path)
    os.utime(path, ns=(modified, modified))


def first_train_frame(root: Path) -> Path:
    """The event tensor of the first frame of DDD17's train split in the list form."""
    recording, numbers = next(iter(DDD17_TRAIN.items()))
    return root / "events" / "train" / f"rec{recording}_export_{numbers[0]}.npy"


def ddd17_with_nonfinite(root: Path, value: float) -> None:
    """DDD17 in the list form with 100 values `value` (NaN, inf or -inf) in `first_train_frame`."""
    make_ddd17(root, "lists")
    put_nonfinite(first_train_frame(root), value)


def changed_after_caching(root: Path, layout: str, relative: str, image_size: int = 64) -> None:
    """A dataset in `layout` with the caches of its train and eval splits prepared, then the file
    `root/relative` changed."""
    if layout == "voc":
        root = make_voc(root)[0]
        name, splits = "voc2012", ("train_aug", "val")
    else:
        make_ddd17(root, layout)
        name, splits = "ddd17", ("train", "test")
    for split in splits:
        loading.prepare_split(name, root, split, image_size)
    rewrite(root / relative)
