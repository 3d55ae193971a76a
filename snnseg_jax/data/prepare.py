"""Preprocess a config's train and eval splits once and write their HDF5 caches.

    python -m snnseg_jax.data.prepare --config configs/voc_deeplab.py --config.dataset.root=/data/VOCdevkit

Training then reads the caches in seconds instead of decoding every file. Rerun after changing
anything that changes the arrays (dataset, split, image size, the split's file list): a cache that
does not match the config is rejected by training rather than silently used.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.loading import prepare_split

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    dataset = _CONFIG.value.dataset
    try:
        for split in dict.fromkeys((dataset.train_split, dataset.eval_split)):
            path, count, seconds = prepare_split(dataset.name, dataset.root, split, dataset.image_size,
                                                 dataset.cache_dir)
            print(f"{dataset.name} {split}: {count} items at {dataset.image_size}x{dataset.image_size} "
                  f"written to {path} in {seconds:.1f} s")
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
