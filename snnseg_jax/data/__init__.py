"""Datasets by name: a registry of builders returning splits that the input pipeline batches.

A dataset split is anything with `class_names`, `in_channels`, `__len__` and `read(indices, rng)`
returning `(inputs, labels)` as numpy arrays (`rng`, given for training batches only, drives any
augmentation): inputs `[N, H, W, C]` (static images) or
`[N, T, H, W, C]` (event sequences), float32 and already normalized; labels `[N, H, W]` of class
indices, 255 (or any value >= the number of classes) ignored. The real datasets, PASCAL VOC2012
(`voc2012`) and DDD17 (`ddd17`), are read from their files or their HDF5 cache (`loading`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from snnseg_jax.cli import UserError
from snnseg_jax.data import loading, synthetic
from snnseg_jax.data.split import EventSequences, Split


class Dataset(Protocol):
    class_names: tuple[str, ...]
    in_channels: int

    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A split held in host memory."""

    inputs: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def in_channels(self) -> int:
        return self.inputs.shape[-1]

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs[indices], self.labels[indices]


@dataclasses.dataclass(frozen=True)
class Options:
    """What a builder may need besides the split: the `dataset` config fields, and T."""

    root: str
    image_size: int
    timesteps: int
    augment: bool
    synthetic_seed: int
    synthetic_sizes: dict[str, int]
    cache_dir: str = ""  # where the real datasets' HDF5 caches are; "": <root>/snnseg_cache


def _shapes(split: str, options: Options) -> Dataset:
    images, labels = synthetic.shapes(
        options.synthetic_seed, split, _synthetic_size(split, options), options.image_size
    )
    return ArrayDataset(images, labels, synthetic.CLASS_NAMES)


def _events(split: str, options: Options) -> Dataset:
    frames, labels, recordings, frame_numbers = synthetic.event_recordings(
        options.synthetic_seed, split, _synthetic_size(split, options), options.image_size
    )
    ids = tuple(f"rec{r}_frame{f}" for r, f in zip(recordings, frame_numbers))
    return EventSequences(
        Split(frames, labels, ids, synthetic.CLASS_NAMES, recordings, frame_numbers), options.timesteps, options.augment
    )


def _synthetic_size(split: str, options: Options) -> int:
    if split not in options.synthetic_sizes:
        raise UserError(
            f"the synthetic datasets have the splits {', '.join(options.synthetic_sizes)}, "
            f"not {split!r}; set config.dataset.train_split / eval_split accordingly"
        )
    return options.synthetic_sizes[split]


def _voc2012(split: str, options: Options) -> Dataset:
    images = loading.load_split("voc2012", options.root, split, options.image_size, options.cache_dir)
    return ArrayDataset(images.inputs, images.labels, images.class_names)


def _ddd17(split: str, options: Options) -> Dataset:
    frames = loading.load_split("ddd17", options.root, split, options.image_size, options.cache_dir)
    return EventSequences(frames, options.timesteps, options.augment)


BUILDERS: dict[str, Callable[[str, Options], Dataset]] = {
    "shapes": _shapes,
    "events": _events,
    "voc2012": _voc2012,
    "ddd17": _ddd17,
}
EVENT_DATASETS = ("events", "ddd17")  # their examples are sequences of event frames cut from recordings


def load(name: str, split: str, options: Options) -> Dataset:
    """Split `split` of the dataset registered as `name`."""
    if name not in BUILDERS:
        raise UserError(
            f"unknown dataset {name!r} (config.dataset.name); the datasets available are {', '.join(sorted(BUILDERS))}"
        )
    dataset = BUILDERS[name](split, options)
    if len(dataset) == 0:
        raise UserError(f"split {split!r} of dataset {name!r} is empty")
    return dataset
