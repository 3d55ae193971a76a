"""Evaluates the newest checkpoint in --workdir on the config's eval split.

    python evaluate.py --config configs/shapes_deeplab.py --workdir runs/demo [--config.<field>=<value> ...]

Writes `eval_<split>.json` in the workdir: MIoU, per-class IoU with class names, pixel accuracy,
the number of images and the step of the checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from snnseg_jax import cli
from snnseg_jax import evaluate

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory holding the run's checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
    evaluate.evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main)
