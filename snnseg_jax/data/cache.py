"""HDF5 cache of a preprocessed split, tagged with a hash of the settings that produced its arrays
and with the size and modification time of every file it was read from.

A cache is used only when its hash matches the current settings and its files are as they were; a
cache built with other settings, or from files changed since, is rejected with a message saying
which setting or which files differ (rebuild it with `prepare`). Files are written under a temporary
name and renamed, so an interrupted `prepare` leaves no half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.items import Item, a_few
from snnseg_jax.data.preprocess import PREPROCESS_VERSION
from snnseg_jax.data.split import Split

CACHE_FORMAT = 2  # layout of the HDF5 file itself; 2: the sources' sizes and modification times
PREPARE_COMMAND = "python -m snnseg_jax.data.prepare --config <config> --config.dataset.root=<root>"
REBUILD = f"Rebuild it with `{PREPARE_COMMAND}`, or delete it to preprocess on the fly."


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


def source_files(items: Sequence[Item]) -> list[Path]:
    """The files a split is read from: each item's input, then its label."""
    return [path for item in items for path in (item.input_path, item.label_path)]


def file_stats(paths: Sequence[Path]) -> np.ndarray:
    """`[len(paths), 2]` int64: each file's size in bytes and modification time in ns; -1, -1 if missing."""
    stats = np.full((len(paths), 2), -1, np.int64)
    for i, path in enumerate(paths):
        try:
            status = os.stat(path)
        except OSError:
            continue
        stats[i] = status.st_size, status.st_mtime_ns
    return stats


def check_sources(path: Path, built: np.ndarray, paths: Sequence[Path]) -> None:
    """Raise unless the files in `paths` have the sizes and modification times `built` recorded."""
    now = file_stats(paths)
    differs = (built != now).any(axis=1) if built.shape == now.shape else np.ones(len(paths), bool)
    changed = [f"{paths[i]}{' (missing)' if now[i, 0] < 0 else ''}" for i in np.flatnonzero(differs)]
    if changed:
        raise DatasetError(
            f"Cache {path} is out of date: {len(changed)} of the {len(paths)} files it was built from "
            f"changed since (their size or modification time): {a_few(changed)}. {REBUILD}"
        )


def write(path: Path, split: Split, settings: dict, sources: np.ndarray) -> None:
    """Write `split` to `path` (replacing what was there), with its sources' `file_stats` taken before reading."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial, "w") as f:
        f.create_dataset("inputs", data=split.inputs)
        f.create_dataset("labels", data=split.labels)
        f.create_dataset("ids", data=list(split.ids), dtype=h5py.string_dtype())
        f.create_dataset("sources", data=sources)
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


def read(path: Path, settings: dict, sources: Sequence[Path]) -> Split:
    """The split cached at `path`; DatasetError unless it was built with exactly `settings` from the
    files `sources` as they are now."""
    try:
        with h5py.File(path, "r") as f:
            built = json.loads(f.attrs.get("settings", "{}"))
            if f.attrs.get("settings_hash") != settings_hash(settings):
                raise DatasetError(
                    f"Cache {path} was built with other preprocessing settings "
                    f"({differences(built, settings)}). {REBUILD}"
                )
            check_sources(path, f["sources"][...], sources)
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
