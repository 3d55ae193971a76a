"""ANN-SNN conversion: BN folding keeps the ANN, the converted SNN converges to it as T grows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import models, ops
from snnseg_jax.analysis import conversion

KEY = jax.random.PRNGKey(0)


def ann_with_random_batchnorm(name, random_variables, size=16):
    """A tiny ANN whose BatchNorm scales, shifts and running statistics are far from the identity."""
    model = models.build(name, num_classes=5, timesteps=1, width=0.125)
    rng = np.random.default_rng(1)
    draws = {"scale": (0.5, 1.5), "bias": (-0.3, 0.3), "mean": (-0.3, 0.3), "var": (0.01, 2.0)}

    def randomize(path, leaf):
        if path[-2].key != "bn":
            return leaf
        return jnp.asarray(rng.uniform(*draws[path[-1].key], leaf.shape), leaf.dtype)

    return model, jax.tree_util.tree_map_with_path(randomize, random_variables(model, (size, size, 3)))


@pytest.mark.parametrize("name", ["deeplab", "fcn"])
def test_folding_batchnorm_leaves_the_anns_outputs_unchanged(name, random_variables):
    model, variables = ann_with_random_batchnorm(name, random_variables)
    images = jax.random.uniform(KEY, (3, 16, 16, 3), minval=-0.5, maxval=0.5)
    expected = jax.jit(lambda x: model.apply(variables, x, train=False))(images)
    logits = ann_logits(model, variables, images)
    np.testing.assert_allclose(ops.resize_bilinear(logits, 16, 16), expected, rtol=1e-4, atol=1e-4)


def test_folded_unit_is_the_conv_with_batchnorm_folded_by_hand(random_variables):
    """`Unit.folded_conv` against the folding written out on the first unit's parameters."""
    model, variables = ann_with_random_batchnorm("deeplab", random_variables)
    images = jax.random.uniform(KEY, (2, 16, 16, 3), minval=-0.5, maxval=0.5)
    currents = {}
    conversion.folded_forward(model, variables, images, lambda name, z: currents.setdefault(name, z))
    params, stats = variables["params"]["conv1_1"], variables["batch_stats"]["conv1_1"]["bn"]
    scale = params["bn"]["scale"] / np.sqrt(stats["var"] + 1e-4)
    conv = jax.lax.conv_general_dilated(
        images, params["conv"]["kernel"] * scale, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    expected = conv + params["bn"]["bias"] - stats["mean"] * scale
    np.testing.assert_allclose(currents["conv1_1"], expected, rtol=1e-5, atol=1e-5)


def ann_logits(model, variables, images):
    return jax.jit(lambda x: conversion.folded_forward(model, variables, x, lambda _, z: jax.nn.relu(z)))(images)


@pytest.mark.parametrize("name", ["deeplab", pytest.param("fcn", marks=pytest.mark.slow)])
def test_converted_snn_output_approaches_the_anns_as_t_grows(name, random_variables):
    model, variables = ann_with_random_batchnorm(name, random_variables)
    images = jax.random.uniform(KEY, (4, 16, 16, 3), minval=-0.5, maxval=0.5)
    expected = ann_logits(model, variables, images)
    for per_channel in (False, True):
        thresholds = conversion.balance_thresholds(model, variables, images, KEY, 64, per_channel)
        _, logits = conversion._simulate(
            model, variables, thresholds, images, jax.random.PRNGKey(3), *conversion.readout_slots([16, 128, 1024])
        )
        errors = [float(jnp.abs(one - expected).mean() / jnp.abs(expected).mean()) for one in logits]
        # Relative error about 1.0, 0.5, 0.08 (and 0.01 at T = 8192): rate coding converges, slowly.
        assert errors[0] > errors[1] > errors[2] and errors[2] < 0.2, (per_channel, errors)


def test_thresholds_are_the_maximum_currents_with_silent_channels_taking_the_layers():
    maxima = np.array([0.5, -0.2, 2.0, 0.0], np.float32)
    np.testing.assert_array_equal(conversion.thresholds_from_maxima(maxima, per_channel=False), [2.0] * 4)
    np.testing.assert_array_equal(conversion.thresholds_from_maxima(maxima, per_channel=True), [0.5, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(conversion.thresholds_from_maxima(-(maxima**2), per_channel=True), [1.0] * 4)


@pytest.mark.parametrize("scale", [1.0, 0.7])
def test_balancing_is_sequential_each_threshold_the_scaled_max_current_given_the_earlier_ones(scale, random_variables):
    model, variables = ann_with_random_batchnorm("deeplab", random_variables)
    images = jax.random.uniform(KEY, (4, 16, 16, 3), minval=-0.5, maxval=0.5)
    thresholds = conversion.balance_thresholds(model, variables, images, KEY, 64, per_channel=False, scale=scale)
    assert list(thresholds) == [
        "conv1_1",
        "conv1_2",
        "conv2_1",
        "conv2_2",
        "conv3_1",
        "conv3_2",
        "conv3_3",
        "fc6",
        "fc7",
    ]
    # With every threshold set, the maximum current of each layer is the one it was balanced on: a
    # threshold scaled after the whole pass (rather than before the next layer) would fail this.
    maxima, _ = conversion._simulate(
        model, variables, thresholds, images, KEY, jnp.zeros((0,), jnp.int32), jnp.zeros((64,), jnp.int32)
    )
    for name in thresholds:
        np.testing.assert_allclose(thresholds[name], scale * jnp.max(maxima[name]), rtol=1e-5, err_msg=name)


def test_readout_slots_index_each_grid_t():
    timesteps, slots = conversion.readout_slots([1, 4, 6])
    assert timesteps.tolist() == [1, 4, 6]
    assert slots.tolist() == [0, 3, 3, 1, 3, 2]
