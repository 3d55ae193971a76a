"""`train.py` and `evaluate.py` end to end, as a user runs them, on a tiny config."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "shapes_deeplab.py")
# 40 training images in batches of 8: 5 steps per epoch; 8 steps cross an epoch boundary.
TINY = ["--config.dataset.image_size=16", "--config.model.width=0.0625", "--config.model.timesteps=2",
        "--config.dataset.synthetic_sizes.train=40", "--config.dataset.synthetic_sizes.val=13",
        "--config.batch_size=8", "--config.eval_batch_size=5", "--config.num_train_steps=8",
        "--config.log_every_steps=2", "--config.checkpoint_every_steps=3", "--config.eval_every_steps=4"]


def run(script, workdir, *overrides, config=CONFIG):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), f"--config={config}",
                           f"--workdir={workdir}", *TINY, *overrides],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def saved_state(workdir, step):
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    result = run("train.py", workdir)
    assert result.returncode == 0, result.stderr
    return workdir


def test_training_writes_metrics_checkpoints_and_validation(uninterrupted):
    lines = read_metrics(uninterrupted)
    train_lines = [l for l in lines if "loss" in l]
    assert [l["step"] for l in train_lines] == [2, 4, 6, 8]
    assert all(np.isfinite(l["loss"]) for l in train_lines)
    val_lines = [l for l in lines if l.get("split") == "val"]
    assert [l["step"] for l in val_lines] == [4, 8]
    assert all(l["num_images"] == 13 and 0 <= l["miou"] <= 1 for l in val_lines)
    assert sorted(os.listdir(os.path.join(uninterrupted, "checkpoints"))) == ["3", "6", "8"]
    assert int(saved_state(uninterrupted, 8)["step"]) == 8


def test_resumed_run_continues_from_the_checkpoint_and_ends_with_the_same_parameters(uninterrupted, tmp_path):
    workdir = str(tmp_path / "resumed")
    shutil.copytree(uninterrupted, workdir)
    # What a run killed after step 4 leaves: checkpoint 3 as the newest, metrics logged up to 4.
    for step in ("6", "8"):
        shutil.rmtree(os.path.join(workdir, "checkpoints", step))
    with open(os.path.join(workdir, "checkpoints", "3", "data", "metadata")) as f:
        assert json.load(f) == {"epoch": 0, "batch": 3}
    result = run("train.py", workdir)
    assert result.returncode == 0, result.stderr
    assert "Resuming from step 3 (epoch 0, batch 3)" in result.stdout
    expected, resumed = saved_state(uninterrupted, 8), saved_state(workdir, 8)
    for path, leaf in ocp.tree.to_flat_dict(expected).items():
        np.testing.assert_array_equal(ocp.tree.to_flat_dict(resumed)[path], leaf, err_msg=str(path))
    # Lines after the checkpoint were dropped and logged again. The window of step 4 began before
    # the checkpoint (step 3's loss is saved with it), so every line matches the uninterrupted run's.
    before, after = read_metrics(uninterrupted), read_metrics(workdir)
    assert [l["step"] for l in after] == [l["step"] for l in before]
    for a, b in zip(before, after):
        assert a.get("loss") == b.get("loss") and a.get("miou") == b.get("miou")


def test_evaluate_writes_eval_json_over_every_image_matching_the_final_validation(uninterrupted):
    result = run("evaluate.py", uninterrupted)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(uninterrupted, "eval_val.json")) as f:
        report = json.load(f)
    final = [l for l in read_metrics(uninterrupted) if l.get("split") == "val"][-1]
    assert report["step"] == 8 and report["num_images"] == 13
    assert report["class_names"] == ["background", "disk", "square", "triangle", "cross"]
    assert len(report["iou_per_class"]) == 5
    assert report["miou"] == final["miou"] and report["pixel_accuracy"] == final["pixel_accuracy"]


@pytest.mark.parametrize("script, overrides, config, message", [
    ("train.py", ["--config.model.nme=x"], CONFIG, "unknown config field 'nme' in --config.model.nme=x"),
    ("train.py", [], "configs/no_such.py", "could not load the config file 'configs/no_such.py'"),
    ("train.py", ["--config.dataset.name=imagenet"], CONFIG, "unknown dataset 'imagenet'"),
    ("train.py", ["--config.model.name=spiking_vgg"], CONFIG, "unknown model name 'spiking_vgg'"),
    ("train.py", ["--config.batch_size=-4"], CONFIG, "batch_size must be positive"),
    ("train.py", ["--config.batch_size=many"], CONFIG, "--config.batch_size=many"),
    ("evaluate.py", [], CONFIG, "holds no checkpoint to evaluate. Train it first with: python train.py"),
    ("train.py", ["--config.model.name=spiking_fcn", "--config.dataset.image_size=20"], CONFIG,
     "the FCNs need dataset.image_size divisible by 8, got 20"),
], ids=["misspelt-override", "missing-config", "unknown-dataset", "unknown-model", "bad-value",
        "unparsable-value", "nothing-to-evaluate", "image-size-the-fcn-cannot-take"])
def test_user_errors_give_one_paragraph_and_no_traceback(tmp_path, script, overrides, config, message):
    result = run(script, str(tmp_path / "run"), *overrides, config=config)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in " ".join(result.stderr.split())
