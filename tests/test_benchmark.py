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
from snnseg_jax import benchmark, models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
    config = voc_deeplab.get_config()
    config.batch_size, config.model.timesteps, config.model.width, config.dataset.image_size = 2, 2, 0.125, 32
    return config


def test_forward_flops_follow_eq9_layer_by_layer():
    # Spiking-DeepLab at width 0.125 on 32x32: (output side, kernel, C_in, C_out) of every conv.
    convs = [(32, 3, 3, 8), (32, 3, 8, 8), (16, 3, 8, 16), (16, 3, 16, 16), (8, 3, 16, 32), (8, 3, 32, 32),
             (8, 3, 32, 32), (8, 3, 32, 128), (8, 1, 128, 128), (8, 1, 128, 21)]
    steps, batch = 2, 3
    per_sample_step = sum(k * k * o * o * c_in * c_out for o, k, c_in, c_out in convs)
    output_conv = 8 * 8 * 128 * 21  # applied once to the time-averaged input
    model = models.build("spiking_deeplab", num_classes=21, timesteps=steps, width=0.125)
    image = jnp.zeros((batch, 32, 32, 3))
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.PRNGKey(0), "spikes": jax.random.PRNGKey(0)},
                                                    x, train=False), image)
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
    overrides = ["--config.batch_size=1", "--config.model.timesteps=2", "--config.model.width=0.125",
                 "--config.dataset.image_size=32"]
    result = subprocess.run([sys.executable, "-m", "snnseg_jax.benchmark", "--config", "configs/voc_deeplab.py",
                             *overrides, "--repeats=1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("train_step_seconds", "eval_step_seconds", "train_temp_bytes", "device", "forward_flops",
                "train_flops_per_second"):
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
