"""`evaluate.py --analyses=...` end to end on tiny trained runs: files, JSON contents, user errors."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import as_in_this_process, random_variables

from configs import shapes_deeplab
from snnseg_jax import analysis, checkpoints, experiment, optimization, steps, training_log
from snnseg_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "shapes_deeplab.py")
TINY = {
    "dataset.image_size": 16,
    "model.width": 0.0625,
    "model.timesteps": 2,
    "dataset.synthetic_sizes.train": 40,
    "dataset.synthetic_sizes.val": 13,
    "eval_batch_size": 5,
}
ACTIVATION_IMAGES = 7  # over 2 evaluation batches of 5, the second padded
ANALYSIS = [
    "--config.analysis.conversion_timesteps=(1,4,32)",
    "--config.analysis.conversion_images=5",
    "--config.analysis.balance_batch_size=4",
    "--config.analysis.balance_timesteps=8",
    f"--config.analysis.activation_images={ACTIVATION_IMAGES}",
    "--config.analysis.num_samples=2",
    "--config.analysis.noise_sigmas=(0.05,0.2)",
    "--config.analysis.conversion_threshold_scale=0.6",
]


def tiny_config(model_name):
    config = shapes_deeplab.get_config()
    config.update_from_flattened_dict({**TINY, "model.name": model_name})
    return config


def tiny_network(model_name):
    """The evaluation split, the network and its random (untrained) variables for `tiny_config(model_name)`."""
    config = tiny_config(model_name)
    dataset = experiment.load_split(config, config.dataset.eval_split)
    model = experiment.build_model(config, dataset)
    return config, dataset, model, random_variables(model, dataset.read(np.arange(1))[0].shape[1:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Workdirs holding a random (untrained) checkpoint of each network: the CLI's part needs no
    training, which tests/test_entry_points.py covers."""
    workdirs = {}
    for name in ("spiking_deeplab", "deeplab"):
        workdirs[name] = str(tmp_path_factory.mktemp(name))
        config, _, _, variables = tiny_network(name)
        state = steps.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            opt_state=optimization.make_optimizer(config, 1).init(variables["params"]),
        )
        mngr = checkpoints.manager(workdirs[name], 1)
        checkpoints.save(
            mngr,
            0,
            state,
            pipeline.Position(),
            log_window=dataclasses.asdict(training_log.LogWindow()),
            config=experiment.config_as_json(config),
        )
        mngr.wait_until_finished()
        mngr.close()
    return workdirs


def evaluate_arguments(workdir, model_name, *args):
    overrides = [f"--config.{field}={value}" for field, value in TINY.items()]
    return [
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        f"--config.model.name={model_name}",
        *overrides,
        *ANALYSIS,
        *args,
    ]


def evaluate(workdir, model_name, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"), *evaluate_arguments(workdir, model_name, *args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


@pytest.fixture
def refused(monkeypatch, capsys):
    """`refused(workdir, model_name, *args)`: the command line of `evaluate` run in this process
    (`conftest.as_in_this_process`), for the command lines it stops with a user error: the entry
    points' exit status and one paragraph as processes are tests/test_entry_points.py's."""
    return lambda *a: as_in_this_process("evaluate.py", evaluate_arguments(*a), monkeypatch, capsys)


def read(workdir, name):
    with open(os.path.join(workdir, "analysis", f"{name}.json")) as f:
        return json.load(f)


def assert_written(workdir, names):
    for name in names:
        for ext in ("json", "png"):
            path = os.path.join(workdir, "analysis", f"{name}.{ext}")
            assert os.path.getsize(path) > 0, path


@pytest.mark.slow  # the analyses: tests/test_analysis_conversion.py; the CLI path: the tests below
def test_ann_analyses_write_their_files_and_compare_with_the_spiking_twin(runs):
    result = evaluate(
        runs["deeplab"],
        "deeplab",
        "--analyses=robustness,conversion,activations,samples",
        f"--compare_workdir={runs['spiking_deeplab']}",
    )
    assert result.returncode == 0, result.stderr
    assert_written(runs["deeplab"], ["robustness", "conversion", "activations", "samples"])
    headlines = {line.split(": ")[0]: line for line in result.stdout.splitlines()}
    assert "relative MIoU drop at sigma 12.75 / 51 (0-255 pixel units): deeplab" in headlines["robustness"]
    assert "; spiking_deeplab " in headlines["robustness"]
    assert "converted, reaches 99% of it: " in headlines["conversion"]
    assert "directly trained spiking_deeplab" in headlines["conversion"]
    assert "median over channels of the normalized channel maximum" in headlines["activations"]
    with open(os.path.join(runs["deeplab"], "eval_val.json")) as f:
        clean_miou = json.load(f)["miou"]

    robustness = read(runs["deeplab"], "robustness")
    assert robustness["sigmas"] == pytest.approx([0.0, 12.75, 51.0])
    assert robustness["miou"][0] == clean_miou  # sigma 0 is the plain evaluation, same Poisson keys
    assert robustness["relative_drop"] == pytest.approx(
        [(clean_miou - m) / clean_miou * 100 for m in robustness["miou"]]
    )
    assert robustness["compare"]["model"] == "spiking_deeplab" and len(robustness["compare"]["miou"]) == 3

    conversion = read(runs["deeplab"], "conversion")
    for method in ("layer", "channel"):
        assert conversion[method]["timesteps"] == [1, 4, 32] and len(conversion[method]["miou"]) == 3
        assert all(0 <= m <= 1 for m in conversion[method]["miou"])
    assert 0 <= conversion["ann_miou"] <= 1 and conversion["num_images"] == 5
    assert conversion["threshold_scale"] == 0.6
    assert conversion["direct"]["model"] == "spiking_deeplab" and conversion["direct"]["timesteps"] == 2

    activations = read(runs["deeplab"], "activations")
    assert [layer["name"] for layer in activations["layers"]][:2] == ["conv1_1", "conv1_2"]
    first = activations["layers"][0]
    assert len(first["channel_max"]) == 4 and len(first["spatial_max"]) == 16 * 16
    # The maxima of conv1_1 (ReLU outputs [B, H, W, C]) over the first images, from one plain forward pass.
    _, dataset, model, variables = tiny_network("deeplab")
    _, captured = model.apply(
        variables,
        jnp.asarray(dataset.read(np.arange(ACTIVATION_IMAGES))[0]),
        train=False,
        rngs={"spikes": jax.random.PRNGKey(0)},
        capture_intermediates=True,
        mutable=["intermediates"],
    )
    conv1_1 = np.asarray(captured["intermediates"]["conv1_1"]["__call__"][0])
    assert conv1_1.shape == (ACTIVATION_IMAGES, 16, 16, 4)
    assert first["layer_max"] == pytest.approx(conv1_1.max(), rel=1e-5)
    for name, expected in (("channel_max", conv1_1.max(axis=(0, 1, 2))), ("spatial_max", conv1_1.max(axis=(0, 3)))):
        np.testing.assert_allclose(
            np.multiply(first[name], first["layer_max"]),
            expected.ravel(),
            rtol=1e-5,
            atol=1e-6 * conv1_1.max(),
            err_msg=name,
        )

    assert read(runs["deeplab"], "samples")["num_samples"] == 2


def test_energy_json_is_consistent_with_its_own_per_layer_numbers(runs):
    result = evaluate(runs["spiking_deeplab"], "spiking_deeplab", "--analyses=energy")
    assert result.returncode == 0, result.stderr
    assert_written(runs["spiking_deeplab"], ["energy"])
    report = read(runs["spiking_deeplab"], "energy")
    assert f"energy: E_ANN / E_SNN = {report['ratio']:.2f} (E_ANN " in result.stdout and " µJ" in result.stdout
    layers = report["layers"]
    e_ann = sum(layer["flops"] * 4.6 for layer in layers)
    e_snn = sum(layer["flops"] * layer["input_spike_rate"] * (4.6 if layer["mac"] else 0.9) for layer in layers)
    assert report["e_ann_pj"] == pytest.approx(e_ann) and report["e_snn_pj"] == pytest.approx(e_snn)
    assert report["ratio"] == pytest.approx(e_ann / e_snn)
    # Each layer receives what the layer before it emits (the pools pass the rate on).
    for before, after in zip(layers[:-1], layers[1:]):
        assert after["input_spike_rate"] == before["output_spike_rate"]
    assert not any(layer["mac"] for layer in layers)  # Poisson input, spikes everywhere: no MAC
    assert all(0 <= layer["output_spike_rate"] <= 2 for layer in layers[:-1])


@pytest.mark.parametrize(
    "model_name, analyses, message",
    [
        ("spiking_deeplab", "conversion", "the conversion analysis turns a trained ANN into an SNN"),
        ("deeplab", "energy", "the energy analysis counts spikes, so it needs a spiking network"),
        ("deeplab", "energy,pictures", "unknown analysis 'pictures'"),
        ("deeplab", "latency", "the latency analysis steps the network through time, carrying its membranes"),
        ("spiking_deeplab", "streaming", "runs over event recordings frame by frame, but config.dataset.name='shapes'"),
    ],
)
def test_analyses_that_do_not_apply_stop_with_one_paragraph(runs, refused, model_name, analyses, message):
    result = refused(runs[model_name], model_name, f"--analyses={analyses}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in " ".join(result.stderr.split())


def twin_command(workdir, model_name):
    overrides = " ".join(f"--config.{field}={value}" for field, value in TINY.items())
    return f"python train.py --config {CONFIG} --workdir {workdir} {overrides} --config.model.name={model_name}"


@pytest.mark.parametrize("compare", ["missing", "same-kind"])
def test_a_missing_or_wrong_twin_stops_before_any_work_naming_the_command_that_trains_it(
    runs, refused, tmp_path, compare
):
    """The message says what --compare_workdir must hold, and the train.py command on a line of its own."""
    twin_dir = str(tmp_path / "demo_ann") if compare == "missing" else runs["spiking_deeplab"]
    result = refused(
        runs["spiking_deeplab"], "spiking_deeplab", "--analyses=robustness", f"--compare_workdir={twin_dir}"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""  # nothing evaluated
    message = " ".join(result.stderr.split())
    assert message.startswith(f"error: --compare_workdir={twin_dir} holds ")
    assert ("no checkpoint" if compare == "missing" else "a run with model.name='spiking_deeplab'") in message
    assert (
        "it must hold the ANN twin of the 'spiking_deeplab' run evaluated: a run of --config.model.name=deeplab "
        "trained with the same config"
    ) in message
    assert result.stderr.splitlines()[-1] == f"    {twin_command(twin_dir, 'deeplab')}"


def test_a_workdir_of_the_other_network_names_the_model_to_evaluate_it_with(runs, refused):
    result = refused(runs["deeplab"], "spiking_deeplab")
    assert result.returncode == 2 and result.stdout == ""
    message = " ".join(result.stderr.split())
    assert f"--workdir={runs['deeplab']} holds a run with model.name='deeplab'" in message
    assert message.endswith("here --config.model.name=deeplab.")


def test_an_evaluation_with_other_settings_than_training_gets_its_own_file(runs):
    eval_json = os.path.join(runs["deeplab"], "eval_val.json")
    assert evaluate(runs["deeplab"], "deeplab").returncode == 0
    with open(eval_json) as f:
        as_trained = json.load(f)
    assert as_trained["differs_from_training"] == {}
    result = evaluate(runs["deeplab"], "deeplab", "--config.eval_batch_size=13", "--config.model.fused=false")
    assert result.returncode == 0, result.stderr
    with open(os.path.join(runs["deeplab"], "eval_val_eval_batch_size=13.json")) as f:
        assert json.load(f)["differs_from_training"] == {"eval_batch_size": [5, 13]}  # fused changes no value
    with open(eval_json) as f:
        assert json.load(f) == as_trained
    assert (
        "(not eval_val.json: this evaluation differs from the training's in eval_batch_size 5 -> 13)" in result.stdout
    )


@pytest.mark.slow  # the analyses themselves are checked in-process in tests/test_analysis_stream.py
def test_latency_and_streaming_on_event_recordings(tmp_path):
    """A random spiking checkpoint on the embedded event recordings: both analyses' JSON, through evaluate.py."""
    workdir, overrides = str(tmp_path), {**TINY, "dataset.name": "events", "dataset.synthetic_sizes.val": 12}
    config = shapes_deeplab.get_config()
    config.update_from_flattened_dict(overrides)
    dataset = experiment.load_split(config, config.dataset.eval_split)
    model = experiment.build_model(config, dataset)
    variables = random_variables(model, dataset.read(np.arange(1))[0].shape[1:])
    state = steps.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=optimization.make_optimizer(config, 1).init(variables["params"]),
    )
    mngr = checkpoints.manager(workdir, 1)
    checkpoints.save(
        mngr,
        0,
        state,
        pipeline.Position(),
        log_window=dataclasses.asdict(training_log.LogWindow()),
        config=experiment.config_as_json(config),
    )
    mngr.wait_until_finished()
    mngr.close()
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "evaluate.py"),
            f"--config={CONFIG}",
            f"--workdir={workdir}",
            *[f"--config.{k}={v}" for k, v in overrides.items()],
            "--analyses=latency,streaming",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert_written(workdir, ["latency", "streaming"])
    evaluation = json.load(open(os.path.join(workdir, "eval_val.json")))
    anytime = read(workdir, "latency")
    assert anytime["timesteps"] == [1, 2] and len(anytime["miou"]) == len(anytime["spikes_per_step"]) == 2
    assert anytime["miou"][-1] == pytest.approx(evaluation["miou"], abs=1e-6) and anytime["step_ms"] > 0
    streamed = read(workdir, "streaming")
    assert streamed["frames"] == 12 and streamed["windowed_miou"] == pytest.approx(evaluation["miou"])
    assert 0 <= streamed["continuous_miou"] <= 1 and streamed["frames_per_second"] > 0
    assert set(streamed["continuous_miou_by_late_statistics"]) == {"last", "mean", "cycle"}


def test_the_ann_twin_of_a_run_with_a_spike_budget_is_looked_for_without_one():
    """The budget is refused for ANNs, so the twin an energy analysis compares against trained at 0."""
    config = shapes_deeplab.get_config()
    config.spikes.penalty = 1e-3
    twin = analysis.twin_config(config)
    assert (twin.model.name, twin.spikes.penalty) == ("deeplab", 0.0)
    experiment.check_config(twin)  # a config an ANN can be trained with
    assert config.spikes.penalty == 1e-3  # the run's own config is left as it was
    assert analysis.twin_config(twin).spikes.penalty == 0.0  # the spiking twin of an ANN: no budget to carry over
