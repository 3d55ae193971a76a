"""`train.py` and `evaluate.py` end to end, as a user runs them, on a tiny config."""

import concurrent.futures
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import as_in_this_process, read_events
from datasets_on_disk import VOC_TRAIN, VOC_VAL, changed_after_caching, ddd17_with_nonfinite, first_train_frame

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "shapes_deeplab.py")
# 40 training images in batches of 8: 5 steps per epoch; 8 steps cross an epoch boundary.
TINY = [
    "--config.dataset.image_size=16",
    "--config.model.width=0.0625",
    "--config.model.timesteps=2",
    "--config.dataset.synthetic_sizes.train=40",
    "--config.dataset.synthetic_sizes.val=13",
    "--config.batch_size=8",
    "--config.eval_batch_size=5",
    "--config.num_train_steps=8",
    "--config.log_every_steps=2",
    "--config.checkpoint_every_steps=3",
    "--config.eval_every_steps=4",
]


def run(script, workdir, *overrides, config=CONFIG):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), f"--config={config}", f"--workdir={workdir}", *TINY, *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


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
    train_lines = [record for record in lines if "loss" in record]
    assert [record["step"] for record in train_lines] == [2, 4, 6, 8]
    assert all(np.isfinite(record["loss"]) for record in train_lines)
    val_lines = [record for record in lines if record.get("split") == "val"]
    assert [record["step"] for record in val_lines] == [4, 8]
    assert all(record["num_images"] == 13 and 0 <= record["miou"] <= 1 for record in val_lines)
    assert sorted(os.listdir(os.path.join(uninterrupted, "checkpoints"))) == ["3", "6", "8"]
    assert int(saved_state(uninterrupted, 8)["step"]) == 8


def test_training_writes_tensorboard_events_holding_the_logged_values(uninterrupted):
    events = {(tag, step): value for tag, step, value in read_events(uninterrupted)}
    lines = read_metrics(uninterrupted)
    for line in lines:
        if "loss" in line:
            for name in ("loss", "learning_rate", "images_per_sec", "skipped_steps"):
                assert events[(f"train/{name}", line["step"])] == pytest.approx(line[name], rel=1e-6)
        else:
            assert events[("val/miou", line["step"])] == pytest.approx(line["miou"], rel=1e-6)
            assert events[("val/pixel_accuracy", line["step"])] == pytest.approx(line["pixel_accuracy"], rel=1e-6)
            for name, iou in zip(line["class_names"], line["iou_per_class"]):
                assert events.get((f"val/iou/{name}", line["step"])) == (None if iou is None else pytest.approx(iou))
            for i in range(3):  # input, prediction and label side by side, as PNG
                assert events[(f"val/prediction_{i}", line["step"])].startswith(b"\x89PNG")


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
    assert [record["step"] for record in after] == [record["step"] for record in before]
    for a, b in zip(before, after):
        assert a.get("loss") == b.get("loss") and a.get("miou") == b.get("miou")


def test_evaluate_writes_eval_json_over_every_image_matching_the_final_validation(uninterrupted):
    result = run("evaluate.py", uninterrupted)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(uninterrupted, "eval_val.json")) as f:
        report = json.load(f)
    final = [record for record in read_metrics(uninterrupted) if record.get("split") == "val"][-1]
    assert report["step"] == 8 and report["num_images"] == 13
    assert report["class_names"] == ["background", "disk", "square", "triangle", "cross"]
    assert len(report["iou_per_class"]) == 5
    assert report["miou"] == final["miou"] and report["pixel_accuracy"] == final["pixel_accuracy"]


# Bad command lines: (script, arguments after the script, what the message must say). In the
# arguments, {tmp} is a directory holding the files below, {config} the demo config; --workdir is
# {tmp}/run unless given. Each must end with exit status 2, one paragraph and no traceback. Every
# row runs in this process (`as_in_this_process`); those of `AS_PROCESSES` also as the command itself.
BAD_FILES = {
    "syntax.py": "def get_config(:\n",
    "no_get_config.py": "x = 1\n",
    "raises.py": "def get_config():\n    return 1 / 0\n",
    "a_file": "",
    "raises_value_error.py": "def get_config():\n    raise ValueError('no such setting')\n",
    "metrics_is_a_directory/metrics.jsonl/": None,
    "config_is_a_directory.py/": None,
}
BAD_COMMAND_LINES = {
    "misspelt-field": ("train.py", ["--config.model.nme=x"], "unknown config field 'nme' in --config.model.nme=x"),
    "misspelt-parent-field": (
        "train.py",
        ["--config.modle.width=1"],
        "unknown config field 'modle' in --config.modle.width=1. Did you mean \"model\"",
    ),
    "missing-config": ("train.py", ["--config", "configs/nope.py"], "could not load the config file 'configs/nope.py'"),
    "config-is-a-directory": ("train.py", ["--config={tmp}/config_is_a_directory.py"], "Is a directory"),
    "config-syntax-error": ("train.py", ["--config={tmp}/syntax.py"], "syntax.py' has a syntax error at line 1"),
    "config-without-get_config": ("train.py", ["--config={tmp}/no_get_config.py"], "has no get_config() function"),
    "config-raising": ("train.py", ["--config={tmp}/raises.py"], "raises.py' raised ZeroDivisionError at line 2"),
    "config-raising-value-error": (
        "train.py",
        ["--config={tmp}/raises_value_error.py"],
        "raised at line 2: ValueError: no such setting",
    ),
    "unknown-dtype": (
        "train.py",
        ["--config.model.dtype=float8"],
        "model.dtype must be one of float32, bfloat16, got 'float8'",
    ),
    "workdir-is-a-file": ("train.py", ["--workdir={tmp}/a_file"], "a_file': it exists and is not a directory"),
    "workdir-under-a-file": ("train.py", ["--workdir={tmp}/a_file/run"], "a_file/run': part of the path is a file"),
    "workdir-cannot-be-created": (
        "train.py",
        ["--workdir=/proc/no_such_process/run"],
        "could not use '/proc/no_such_process'",
    ),
    "empty-workdir": ("train.py", ["--workdir="], "--workdir is empty"),
    "metrics-file-is-a-directory": (
        "train.py",
        ["--workdir={tmp}/metrics_is_a_directory"],
        "metrics.jsonl': it is a directory where a file was expected",
    ),
    "unknown-dataset": ("train.py", ["--config.dataset.name=imagenet"], "dataset.name must be one of shapes, events"),
    "unknown-model": ("train.py", ["--config.model.name=spiking_vgg"], "model.name must be one of spiking_deeplab"),
    "negative-batch": ("train.py", ["--config.batch_size=-4"], "batch_size must be a positive integer, got -4"),
    "unparsable-value": ("train.py", ["--config.batch_size=many"], "--config.batch_size=many"),
    "leak-above-1": ("train.py", ["--config.model.leak=1.5"], "model.leak must be a number in (0, 1], got 1.5"),
    "nan-learning-rate": (
        "train.py",
        ["--config.learning_rate=nan"],
        "learning_rate must be a positive number, got nan",
    ),
    "negative-seed": ("train.py", ["--config.seed=-1"], "seed must be a non-negative integer, got -1"),
    "negative-spike-penalty": (
        "train.py",
        ["--config.spikes.penalty=-0.1"],
        "spikes.penalty must be a non-negative number, got -0.1",
    ),
    "unknown-spike-weighting": (
        "train.py",
        ["--config.spikes.weighting=flops"],
        "spikes.weighting must be one of energy, rate, got 'flops'",
    ),
    "spike-target-rate-above-1": (
        "train.py",
        ["--config.spikes.target_rate=1.5"],
        "spikes.target_rate must be a number in [0, 1], got 1.5",
    ),
    "spike-warm-up-negative": (
        "train.py",
        ["--config.spikes.warmup_steps=-5"],
        "spikes.warmup_steps must be a non-negative integer, got -5",
    ),
    "spike-penalty-on-an-ann": (
        "train.py",
        ["--config.model.name=deeplab", "--config.spikes.penalty=0.5"],
        "spikes.penalty must be 0 for an ANN (model.name deeplab), got 0.5",
    ),
    "process-id-out-of-range": (
        "train.py",
        ["--config.distributed.num_processes=2", "--config.distributed.process_id=2"],
        "distributed.process_id must be below distributed.num_processes (2), got 2",
    ),
    "unknown-nested-field": ("train.py", ["--config.dataset.synthetic_sizes.test=4"], "unknown config field 'test'"),
    "field-of-a-number": ("train.py", ["--config.model.width.x=1"], "model.width.x"),
    "stray-argument": ("train.py", ["stray"], "unexpected arguments stray"),
    "image-size-the-fcn-cannot-take": (
        "train.py",
        ["--config.model.name=spiking_fcn", "--config.dataset.image_size=20"],
        "the FCNs need dataset.image_size divisible by 8, got 20",
    ),
    "every-problem-at-once": (
        "train.py",
        ["--config.model.leak=0", "--config.eval_batch_size=0"],
        "eval_batch_size must be a positive integer, got 0; model.leak must be",
    ),
    "bad-noise-levels": (
        "evaluate.py",
        ["--config.analysis.noise_sigmas=abc", "--analyses=robustness"],
        "analysis.noise_sigmas must be a non-empty list, each item a non-negative number",
    ),
    "nothing-to-evaluate": ("evaluate.py", [], "holds no checkpoint to evaluate. Train it first with: python train.py"),
    **{
        f"event-tensor-with-{kind}": (
            "train.py",
            [
                "--config=configs/ddd17_deeplab.py",
                f"--config.dataset.root={{tmp}}/ddd17_{kind}",
                f"--workdir={{tmp}}/run_ddd17_{kind}",
            ],
            f"{first_train_frame(Path(f'ddd17_{kind}'))} holds 100 non-finite values (100 {kind}) in channels 0-1",
        )
        for kind in ("NaN", "+inf", "-inf")
    },
    "image-changed-after-caching": (
        "train.py",
        [
            "--config=configs/voc_deeplab.py",
            "--config.dataset.root={tmp}/voc_image_changed",
            "--workdir={tmp}/run_image",
        ],
        f"voc_image_changed/VOCdevkit/VOC2012/JPEGImages/{VOC_TRAIN[0]}.jpg. Rebuild it with "
        "`python -m snnseg_jax.data.prepare",
    ),
    "label-changed-after-caching": (
        "train.py",
        [
            "--config=configs/voc_deeplab.py",
            "--config.dataset.root={tmp}/voc_label_changed",
            "--workdir={tmp}/run_label",
        ],
        f"voc_label_changed/VOCdevkit/VOC2012/SegmentationClass/{VOC_VAL[0]}.png. Rebuild it with "
        "`python -m snnseg_jax.data.prepare",
    ),
}
# Damaged datasets under {tmp}: name -> what builds it there.
BAD_TREES = {
    **{f"ddd17_{kind}": functools.partial(ddd17_with_nonfinite, value=float(kind)) for kind in ("NaN", "+inf", "-inf")},
    "voc_image_changed": functools.partial(
        changed_after_caching, layout="voc", relative=f"VOCdevkit/VOC2012/JPEGImages/{VOC_TRAIN[0]}.jpg"
    ),
    "voc_label_changed": functools.partial(
        changed_after_caching, layout="voc", relative=f"VOCdevkit/VOC2012/SegmentationClass/{VOC_VAL[0]}.png"
    ),
}


# Every row runs in this process above; three also run as the commands a user types (a config file that
# does not load, a damaged data file, an evaluation with nothing to evaluate; both entry points): the
# entry points reach `cli.run`, which makes any of these an exit status 2 and one paragraph.
AS_PROCESSES = ("config-syntax-error", "event-tensor-with-NaN", "nothing-to-evaluate")


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """A directory holding the files of `BAD_FILES` and the damaged datasets of `BAD_TREES`."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    for name, text in BAD_FILES.items():
        if text is None:
            os.makedirs(tmp / name)
        else:
            (tmp / name).write_text(text)
    for name, build in BAD_TREES.items():
        build(tmp / name)
    return tmp


def command_line(case, tmp):
    """The arguments after the script of row `case`, with the demo config and {tmp}/run where it names none."""
    _, arguments, _ = BAD_COMMAND_LINES[case]
    arguments = [a.format(tmp=tmp) for a in arguments]
    config = (
        []
        if any(a.startswith("--config") and "." not in a.split("=")[0] for a in arguments)
        else [f"--config={CONFIG}"]
    )
    workdir = [] if any(a.startswith("--workdir") for a in arguments) else [f"--workdir={tmp}/run"]
    return [*config, *workdir, *arguments]


@pytest.fixture(scope="module")
def bad_commands_as_processes(bad_inputs):
    """The result of `python <script> ...` for each row of `AS_PROCESSES`, run at once."""

    def run_one(case):
        script = os.path.join(ROOT, BAD_COMMAND_LINES[case][0])
        return subprocess.run(
            [sys.executable, script, *command_line(case, bad_inputs)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )

    with concurrent.futures.ThreadPoolExecutor(len(AS_PROCESSES)) as pool:
        return dict(zip(AS_PROCESSES, pool.map(run_one, AS_PROCESSES)))


def assert_one_paragraph_exit_2(status, stderr, message):
    assert status == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.startswith("error: ") and message in " ".join(stderr.split()), stderr


@pytest.mark.parametrize("case", BAD_COMMAND_LINES)
def test_a_bad_command_line_gives_one_paragraph_naming_it_and_exit_status_2(bad_inputs, case, monkeypatch, capsys):
    script, _, message = BAD_COMMAND_LINES[case]
    result = as_in_this_process(script, command_line(case, bad_inputs), monkeypatch, capsys)
    assert_one_paragraph_exit_2(result.returncode, result.stderr, message)


@pytest.mark.parametrize("case", AS_PROCESSES)
def test_the_entry_points_give_one_paragraph_and_exit_status_2_for_a_bad_command_line(bad_commands_as_processes, case):
    result = bad_commands_as_processes[case]
    assert_one_paragraph_exit_2(result.returncode, result.stderr, BAD_COMMAND_LINES[case][2])
