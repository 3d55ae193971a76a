"""Evaluates the newest checkpoint in --workdir on the config's eval split, and runs analyses.

    python evaluate.py --config configs/shapes_deeplab.py --workdir runs/demo [--config.<field>=<value> ...]
    python evaluate.py --config configs/shapes_deeplab.py --workdir runs/demo \
        --analyses=energy,robustness,samples [--compare_workdir=runs/demo_ann]

Writes `eval_<split>.json` in the workdir (named after what differs, e.g.
`eval_val_dataset.image_size=48.json`, when the config differs from the training's in what is
measured): MIoU, per-class IoU with class names, pixel accuracy, the number of images and the step
of the checkpoint; and for each of --analyses (energy, robustness, conversion, activations,
samples; settings in config.analysis) `analysis/<name>.json` and `analysis/<name>.png`, printing
each one's headline. --compare_workdir holds the twin of the configured model (the ANN of a spiking
network, or the other way round), trained with the same config. Both workdirs are checked before
any work: a missing or wrong run stops with the command that trains the right one.
"""

import sys

from absl import flags
from ml_collections import config_flags

from snnseg_jax import analysis, cli, evaluate, experiment

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory holding the run's checkpoints.")
flags.DEFINE_list("analyses", [], f"Analyses to run after the evaluation: {', '.join(analysis.ANALYSES)}.")
flags.DEFINE_string("compare_workdir", None, "Workdir of the twin model, compared in robustness and conversion.")
flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
    config, workdir, compare_workdir = flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.compare_workdir
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    experiment.check_config(config)  # every bad value at once, before what depends on them
    analysis.check(config, flags.FLAGS.analyses)  # a misspelt or misplaced name fails at once
    evaluate.check_run(config, workdir, evaluate.train_command(config_file, sys.argv, workdir))
    if flags.FLAGS.analyses and compare_workdir:
        twin = analysis.twin_model_name(config.model.name)
        analysis.check_twin(
            config, compare_workdir, evaluate.train_command(config_file, sys.argv, compare_workdir, twin)
        )
    evaluate.evaluate(config, workdir)
    if flags.FLAGS.analyses:
        analysis.run(config, workdir, flags.FLAGS.analyses, compare_workdir)


if __name__ == "__main__":
    cli.run(main)
