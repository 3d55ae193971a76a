"""The benchmark: its JSON, its FLOP count (paper Eq. 9), its train step against plain autodiff."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import voc_deeplab
from snnseg_jax import benchmark, models, optimization

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
    config = voc_deeplab.get_config()
    config.batch_size, config.model.timesteps, config.model.width, config.dataset.image_size = 2, 2, 0.125, 32
    return config


def test_forward_flops_follow_eq9_layer_by_layer():
    # Spiking-DeepLab at width 0.125 on 32x32: (output side, kernel, C_in, C_out) of every conv.
    convs = [
        (32, 3, 3, 8),
        (32, 3, 8, 8),
        (16, 3, 8, 16),
        (16, 3, 16, 16),
        (8, 3, 16, 32),
        (8, 3, 32, 32),
        (8, 3, 32, 32),
        (8, 3, 32, 128),
        (8, 1, 128, 128),
        (8, 1, 128, 21),
    ]
    steps, batch = 2, 3
    per_sample_step = sum(k * k * o * o * c_in * c_out for o, k, c_in, c_out in convs)
    output_conv = 8 * 8 * 128 * 21  # applied once to the time-averaged input
    model = models.build("spiking_deeplab", num_classes=21, timesteps=steps, width=0.125)
    image = jnp.zeros((batch, 32, 32, 3))
    variables = jax.eval_shape(
        lambda x: model.init({"params": jax.random.PRNGKey(0), "spikes": jax.random.PRNGKey(0)}, x, train=False), image
    )
    got = benchmark.forward_flops(model, variables, image)
    assert got == batch * (steps * (per_sample_step - output_conv) + output_conv)


def test_benchmark_times_the_pipeline_steps_on_config_shapes():
    config = tiny_config()
    steps = benchmark.Steps(config)
    assert steps.batch["inputs"].shape == (2, 32, 32, 3) and steps.batch["labels"].shape == (2, 32, 32)
    before = jax.device_get(steps.state.params)  # the state is donated to the step
    metrics = steps.train_once()
    assert int(steps.state.step) == 1 and np.isfinite(float(metrics["loss"]))
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), steps.state.params, before)
    assert all(jax.tree_util.tree_leaves(changed))
    confusion = steps.eval_once()  # the pipeline's eval step: a confusion matrix of the valid pixels
    assert confusion.shape == (21, 21) and int(confusion.sum()) == 2 * 32 * 30


def test_event_configs_get_event_sequences():
    config = tiny_config()
    config.dataset.name = "ddd17"
    batch = benchmark.synthetic_batch(config, 3)
    assert batch["inputs"].shape == (3, 2, 32, 32, 2) and int(batch["labels"].max()) == 255


@pytest.mark.slow
def test_command_line_prints_json_last():
    overrides = [
        "--config.batch_size=1",
        "--config.model.timesteps=2",
        "--config.model.width=0.125",
        "--config.dataset.image_size=32",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "snnseg_jax.benchmark", "--config", "configs/voc_deeplab.py", *overrides, "--repeats=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "train_step_seconds",
        "eval_step_seconds",
        "train_temp_bytes",
        "device",
        "forward_flops",
        "train_flops_per_second",
    ):
        assert key in report
    assert report["train_temp_bytes"] > 0 and report["train_step_seconds"] > 0 and report["batch_size"] == 1


def test_tuning_ablation_switches_off_one_formulation_at_a_time():
    from snnseg_jax import formulations

    variants = benchmark.tuning_variants()
    tuned = formulations.for_backend(jax.default_backend())
    assert variants["all"] == tuned and variants["none"] == formulations.PLAIN
    for name, tuning in variants.items():
        if name.startswith("without "):
            field = name.removeprefix("without ")
            assert getattr(tuning, field) != getattr(tuned, field) and not getattr(tuning, field)
            assert dataclasses.replace(tuning, **{field: getattr(tuned, field)}) == tuned
    assert len(variants) == 2 + sum(bool(v) for v in dataclasses.asdict(tuned).values())


def test_another_backends_formulations_are_tried_by_switching_on_what_it_leaves_off():
    from snnseg_jax import formulations
    from snnseg_jax.cli import UserError

    variants = benchmark.tuning_variants("gpu")
    gpu = formulations.for_backend("gpu")
    assert variants["all"] == gpu and not gpu.conv_in_bounds_taps
    assert variants["with conv_in_bounds_taps"] == dataclasses.replace(gpu, conv_in_bounds_taps=True)
    assert "with conv_input_grad_as_forward" in variants and "with xla_cpu_library_fusions" not in variants
    assert list(benchmark.tuning_variants("gpu", ["conv_in_bounds_taps"])) == ["all", "with conv_in_bounds_taps"]
    with pytest.raises(UserError, match="unknown formulation conv_in_bounds in --ablate"):
        benchmark.tuning_variants("gpu", ["conv_in_bounds"])


def test_the_train_and_eval_steps_lower_for_gpus_and_tpus_without_custom_calls_or_callbacks():
    """What a GPU or TPU compiles, exported from here (StableHLO for both platforms): no custom call
    (a host callback is one) that would tie the steps to this machine."""
    import functools

    from jax import export

    from snnseg_jax import experiment, formulations, sharding, steps

    config = tiny_config()
    tuning = formulations.for_backend("gpu")
    assert formulations.for_backend("tpu") == tuning
    model = experiment.build_model(config, benchmark.input_shapes(config))
    model = model.clone(settings=dataclasses.replace(model.settings, tuning=tuning))
    optimizer, mesh = optimization.make_optimizer(config, 100), sharding.data_mesh()
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), benchmark.synthetic_batch(config, 2))
    state = jax.eval_shape(
        functools.partial(experiment.init_state, model, optimizer, batch["inputs"].shape[1:], jax.random.PRNGKey(0))
    )
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    for step in (steps.compile_train_step(model, optimizer, mesh), steps.compile_eval_step(model, mesh)):
        exported = export.export(step, platforms=("cuda", "tpu"))(state, batch, key)
        assert exported.platforms == ("cuda", "tpu")
        module = exported.mlir_module()
        assert "stablehlo.convolution" in module and "stablehlo.custom_call" not in module


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the refusal on a machine without accelerator")
def test_the_gpu_check_refuses_to_measure_without_a_gpu_unless_rehearsing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "JAX_PLATFORMS"))}
    env["PYTHON"] = sys.executable  # this interpreter, whether or not its environment is activated
    command = ["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh"), str(tmp_path / "no_reference.py")]
    refused = subprocess.run(
        command, cwd=REPO, env={**env, "OUT": str(tmp_path / "gpu")}, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 3, refused.stderr
    assert "JAX found no cuda device" in refused.stderr and "stopping before measuring anything" in refused.stderr
    rehearsal = subprocess.run(
        command,
        cwd=REPO,
        env={**env, "OUT": str(tmp_path / "cpu"), "GPU_CHECK_DEVICE": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rehearsal.returncode == 2 and "backend cpu: [CpuDevice(id=0)]" in rehearsal.stderr  # then: no reference


def test_the_hlo_report_finds_time_loops_with_their_trip_counts_and_the_convolutions():
    from reproduce import hlo_report

    def steps(x, kernel):
        def step(carry, _):
            y = jax.lax.conv_general_dilated(carry, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.tanh(y), y.sum()

        return jax.lax.scan(step, x, None, length=7)

    x, kernel = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    report = hlo_report.report(jax.jit(steps).lower(x, kernel).compile().as_text())
    assert report["loops"] == 1 and report["loops_with_unknown_trip_count"] == 0
    assert report["loop_details"][0]["trip_count"] == 7 and report["loop_details"][0]["op_name"] == "jit(steps)/while"
    assert report["convolutions"] == {"convolution f32 b01f_01io->b01f out{3,2,1,0}": 1}


def test_timing_the_spike_budget_needs_a_penalty():
    from snnseg_jax.cli import UserError

    with pytest.raises(UserError, match="set --config.spikes.penalty > 0"):
        benchmark.spike_budget_cost(tiny_config(), repeats=1)


@pytest.mark.slow  # two train steps compiled to time them; the refusal above runs by default
def test_the_spike_budget_is_timed_against_none():
    config = tiny_config()
    config.model.width, config.dataset.image_size = 0.0625, 16
    config.spikes.penalty = 0.1
    report = benchmark.spike_budget_cost(config, repeats=1)
    assert set(report["train_step_seconds"]) == {"budget", "none"} and report["ratio_best"] > 0
