"""Trains a network of snnseg_jax and validates it; resumes from the newest checkpoint in --workdir.

    python train.py --config configs/shapes_deeplab.py --workdir runs/demo [--config.<field>=<value> ...]

Writes `metrics.jsonl` and `checkpoints/` in the workdir (see docs/training.md).
"""

from absl import flags
from ml_collections import config_flags

from snnseg_jax import cli, train

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for metrics and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
    train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main)
