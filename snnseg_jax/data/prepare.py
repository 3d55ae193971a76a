"""Preprocess a config's train and eval splits once and write their HDF5 caches.

    python -m snnseg_jax.data.prepare --config configs/voc_deeplab.py --config.dataset.root=/data/VOCdevkit

Training then reads the caches in seconds instead of decoding every file. Rerun after changing
anything that changes the arrays (dataset, split, image size, the split's file list, any of its
files): a cache that does not match the config, or whose files changed size or modification time
since, is rejected by training rather than silently used.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from snnseg_jax import cli
from snnseg_jax.data.loading import prepare_split

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.mark_flags_as_required(["config"])


def main() -> None:
    dataset = flags.FLAGS.config.dataset
    for split in dict.fromkeys((dataset.train_split, dataset.eval_split)):
        path, count, seconds = prepare_split(dataset.name, dataset.root, split, dataset.image_size, dataset.cache_dir)
        print(
            f"{dataset.name} {split}: {count} items at {dataset.image_size}x{dataset.image_size} "
            f"written to {path} in {seconds:.1f} s"
        )


if __name__ == "__main__":
    cli.run(main)
