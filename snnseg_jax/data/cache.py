"""HDF5 cache of a preprocessed split, tagged with a hash of the settings that produced its arrays.

A cache is used only when its hash matches the current settings; a cache built with other settings
is rejected with a message saying which setting differs (rebuild it with `prepare`). Files are
written under a temporary name and renamed, so an interrupted `prepare` leaves no half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.items import Item
from snnseg_jax.data.preprocess import PREPROCESS_VERSION
from snnseg_jax.data.split import Split

CACHE_FORMAT = 1  # layout of the HDF5 file itself
PREPARE_COMMAND = "python -m snnseg_jax.data.prepare --config <config> --config.dataset.root=<root>"


def cache_file(cache_dir: Path, dataset: str, split: str, image_size: int) -> Path:
    return Path(cache_dir) / f"{dataset}_{split}_{image_size}.h5"


def listing_digest(items: Sequence[Item]) -> str:
    """Hash of which files make the split: ids in order, and the folder each label comes from."""
    listing = "\n".join(f"{item.id} {item.label_path.parent.name}" for item in items)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def settings_for(dataset: str, split: str, image_size: int, items: Sequence[Item]) -> dict:
    """Everything that changes a split's arrays."""
    return {
        "dataset": dataset,
        "split": split,
        "image_size": int(image_size),
        "preprocess_version": PREPROCESS_VERSION,
        "cache_format": CACHE_FORMAT,
        "num_items": len(items),
        "files": listing_digest(items),
    }


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def write(path: Path, split: Split, settings: dict) -> None:
    """Write `split` to `path` (replacing what was there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial, "w") as f:
        f.create_dataset("inputs", data=split.inputs)
        f.create_dataset("labels", data=split.labels)
        f.create_dataset("ids", data=list(split.ids), dtype=h5py.string_dtype())
        if split.is_sequence:
            f.create_dataset("recordings", data=split.recordings)
            f.create_dataset("frame_numbers", data=split.frame_numbers)
        f.attrs["class_names"] = json.dumps(list(split.class_names))
        f.attrs["settings"] = json.dumps(settings, sort_keys=True)
        f.attrs["settings_hash"] = settings_hash(settings)
    os.replace(partial, path)


def differences(built: dict, wanted: dict) -> str:
    keys = sorted(set(built) | set(wanted))
    return ", ".join(
        f"{key} {built.get(key)!r} -> {wanted.get(key)!r}" for key in keys if built.get(key) != wanted.get(key)
    )


def read(path: Path, settings: dict) -> Split:
    """The split cached at `path`; DatasetError unless it was built with exactly `settings`."""
    try:
        with h5py.File(path, "r") as f:
            built = json.loads(f.attrs.get("settings", "{}"))
            if f.attrs.get("settings_hash") != settings_hash(settings):
                raise DatasetError(
                    f"Cache {path} was built with other preprocessing settings "
                    f"({differences(built, settings)}). "
                    f"Rebuild it with `{PREPARE_COMMAND}`, or delete it to preprocess on the fly."
                )
            sequence = "recordings" in f
            return Split(
                inputs=f["inputs"][...],
                labels=f["labels"][...],
                ids=tuple(f["ids"].asstr()[...]),
                class_names=tuple(json.loads(f.attrs["class_names"])),
                recordings=f["recordings"][...] if sequence else None,
                frame_numbers=f["frame_numbers"][...] if sequence else None,
            )
    except (OSError, KeyError) as error:
        raise DatasetError(
            f"Cannot read cache {path} ({error}); delete it or rebuild it with `{PREPARE_COMMAND}`."
        ) from None
