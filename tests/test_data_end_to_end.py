"""`train.py` and `evaluate.py` on the real datasets' layouts: two training steps, then every image."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, as_in_this_process
from datasets_on_disk import DDD17_TEST, VOC_VAL, make_dataset, put_nonfinite, rewrite

from snnseg_jax.data import loading

# The ANN twins compile fastest; the spiking networks' own end-to-end tests run on the synthetic data.
TINY = [
    "--config.dataset.image_size=16",
    "--config.model.width=0.0625",
    "--config.model.timesteps=2",
    "--config.batch_size=2",
    "--config.eval_batch_size=2",
    "--config.num_train_steps=2",
    "--config.log_every_steps=1",
]


def arguments(config, workdir, root, *overrides):
    return [f"--config={REPO / config}", f"--workdir={workdir}", f"--config.dataset.root={root}", *TINY, *overrides]


def run(script, config, workdir, root, *overrides, status=0):
    result = subprocess.run(
        [sys.executable, str(REPO / script), *arguments(config, workdir, root, *overrides)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == status, result.stderr
    return result


def trained_losses(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def a_label_changed_after_caching(root):
    """The val split cached, then one of its labels corrected: the message names it and the command."""
    loading.prepare_split("voc2012", root, "val", 16)
    label = root / "VOCdevkit/VOC2012/SegmentationClass" / f"{VOC_VAL[1]}.png"
    rewrite(label)
    return (
        "voc2012_val_16.h5 is out of date: 1 of the 4 files it was built from changed since (their size or "
        f"modification time): {label}. Rebuild it with `python -m snnseg_jax.data.prepare"
    )


def nan_in_a_test_frame(root):
    """100 NaN in an event tensor of the test split: the message names it and counts them."""
    recording, numbers = next(iter(DDD17_TEST.items()))
    events = root / "events/test" / f"rec{recording}_export_{numbers[-1]}.npy"
    put_nonfinite(events, np.nan)
    return f"error: {events} holds 100 non-finite values (100 NaN) in channels 0-1"


@pytest.mark.parametrize(
    "config,layout,split,count,extra,damage",
    [
        (
            "configs/voc_deeplab.py",
            "voc",
            "val",
            len(VOC_VAL),
            ["--config.model.name=deeplab", "--config.dataset.train_split=train"],
            a_label_changed_after_caching,
        ),
        (
            "configs/ddd17_deeplab.py",
            "lists",
            "test",
            sum(map(len, DDD17_TEST.values())),
            ["--config.model.name=deeplab", "--config.dataset.augment=true"],
            nan_in_a_test_frame,
        ),
    ],
)
def test_two_training_steps_then_evaluate_counts_every_image(
    tmp_path, monkeypatch, capsys, config, layout, split, count, extra, damage
):
    """Then the eval split damaged (`damage`): evaluate.py stops with exit 2 and a message naming the
    file. train.py runs as a process, evaluate.py in this one (`as_in_this_process`)."""
    root = make_dataset(tmp_path / "data", layout)
    workdir = tmp_path / "run"
    run("train.py", config, workdir, root, *extra)
    assert len(trained_losses(workdir)) == 2
    evaluate = lambda: as_in_this_process("evaluate.py", arguments(config, workdir, root, *extra), monkeypatch, capsys)
    evaluated = evaluate()
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((workdir / f"eval_{split}.json").read_text())
    assert report["num_images"] == count and report["step"] == 2
    assert 0.0 <= report["miou"] <= 1.0
    message = damage(root)
    stopped = evaluate()
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr
    assert message in " ".join(stopped.stderr.split()), stopped.stderr


@pytest.mark.slow
def test_a_small_ann_learns_on_real_photographs(tmp_path):
    """Acceptance: reproduce/make_photo_voc.py data (real photographs, labels known by construction);
    a DeepLab ANN at width 0.25 trained for 400 steps is far above predicting the majority class."""
    pytest.importorskip("skimage")
    root, workdir = tmp_path / "photo_voc", tmp_path / "run"
    subprocess.run([sys.executable, str(REPO / "reproduce/make_photo_voc.py"), f"--out={root}"], check=True)
    settings = ["--config.model.name=deeplab", "--config.model.width=0.25"]
    run_full = [
        "--config.num_train_steps=400",
        "--config.eval_every_steps=0",
        "--config.checkpoint_every_steps=400",
        "--config.log_every_steps=100",
    ]
    for script in ("train.py", "evaluate.py"):
        subprocess.run(
            [
                sys.executable,
                str(REPO / script),
                "--config=configs/voc_deeplab.py",
                f"--workdir={workdir}",
                f"--config.dataset.root={root}",
                *settings,
                *(run_full if script == "train.py" else []),
            ],
            check=True,
            cwd=REPO,
            timeout=1200,
        )
    report = json.loads((workdir / "eval_val.json").read_text())
    labels = loading.load_split("voc2012", root, "val", 64).labels
    valid = labels[labels != 255]
    majority_miou = np.mean(valid == 0) / len(np.unique(valid))  # IoU of background over present classes
    print(f"MIoU {report['miou']:.3f} vs majority-class baseline {majority_miou:.3f}")
    assert report["num_images"] == 150
    assert report["miou"] > majority_miou + 0.3


@pytest.mark.slow  # the default run covers both analyses end to end on the embedded event recordings
@pytest.mark.parametrize("on_streams", [False, True], ids=["trained-in-windows", "trained-on-streams"])
def test_latency_and_streaming_on_the_ddd17_layout(tmp_path, on_streams):
    """The streaming analyses read DDD17's recordings as distributed: every test frame, once; the
    network trained in windows or on streams (its recordings' runs, as `experiment.build` reads them,
    are checked in the default run by test_stream_training.py)."""
    root = make_dataset(tmp_path / "data", "evsegnet")
    workdir = tmp_path / "run"
    mode = [f"--config.stream_training.enabled={on_streams}"]
    run("train.py", "configs/ddd17_deeplab.py", workdir, root, *mode)
    assert len(trained_losses(workdir)) == 2
    run("evaluate.py", "configs/ddd17_deeplab.py", workdir, root, *mode, "--analyses=latency,streaming")
    streamed = json.loads((workdir / "analysis" / "streaming.json").read_text())
    evaluation = json.loads((workdir / "eval_test.json").read_text())
    assert streamed["frames"] == sum(map(len, DDD17_TEST.values())) and streamed["recordings"] == len(DDD17_TEST)
    assert streamed["windowed_miou"] == evaluation["miou"]
    anytime = json.loads((workdir / "analysis" / "latency.json").read_text())
    assert anytime["timesteps"] == [1, 2] and abs(anytime["miou"][-1] - evaluation["miou"]) < 1e-6
