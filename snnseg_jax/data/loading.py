"""The real datasets by name: a split from its HDF5 cache when there is one, else from its files."""

from __future__ import annotations

import time
from pathlib import Path

from snnseg_jax.data import cache, ddd17, voc
from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.split import Split

READERS = {"voc2012": voc, "ddd17": ddd17}
DEFAULT_CACHE_FOLDER = "snnseg_cache"  # under dataset.root when dataset.cache_dir is empty


def reader_for(name: str):
    if name not in READERS:
        raise DatasetError(
            f"dataset.name={name!r} is not a dataset read from files; expected one of {', '.join(READERS)}."
        )
    return READERS[name]


def cache_path(name: str, root: str | Path, split: str, image_size: int, cache_dir: str | Path = "") -> Path:
    """Where the cache of a split lives: `<cache_dir or root/snnseg_cache>/<name>_<split>_<size>.h5`."""
    folder = Path(cache_dir) if cache_dir else Path(root) / DEFAULT_CACHE_FOLDER
    return cache.cache_file(folder, name, split, image_size)


def load_split(name: str, root: str | Path, split: str, image_size: int, cache_dir: str | Path = "") -> Split:
    """A preprocessed split: from its cache when present (rejected if built with other settings or from
    files changed since), otherwise read from the files with a progress bar."""
    reader = reader_for(name)
    items = reader.list_split(Path(root), split)
    path = cache_path(name, root, split, image_size, cache_dir)
    if path.exists():
        return cache.read(path, cache.settings_for(name, split, image_size, items), cache.source_files(items))
    return reader.read_split(items, split, image_size)


def prepare_split(
    name: str, root: str | Path, split: str, image_size: int, cache_dir: str | Path = ""
) -> tuple[Path, int, float]:
    """Preprocess a split and (re)write its cache; returns the path, the item count and the seconds."""
    start = time.perf_counter()
    reader = reader_for(name)
    items = reader.list_split(Path(root), split)
    sources = cache.file_stats(cache.source_files(items))  # before reading: a file changed while read is noticed
    split_data = reader.read_split(items, split, image_size)
    path = cache_path(name, root, split, image_size, cache_dir)
    try:
        cache.write(path, split_data, cache.settings_for(name, split, image_size, items), sources)
    except OSError as error:
        raise DatasetError(
            f"Cannot write cache {path} ({error}); choose a writable folder with --config.dataset.cache_dir=..."
        ) from None
    return path, len(items), time.perf_counter() - start
