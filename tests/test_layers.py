"""BNTT: per-step statistics and scales in training, per-step running averages at evaluation;
the spiking unit built on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import architecture, formulations, neurons, ops
from snnseg_jax.architecture import Layer
from snnseg_jax.layers import BNTT, Settings, Unit
from snnseg_jax.neurons import Neuron

T, B, H, W, C = 4, 3, 5, 5, 2


def make_input():
    rng = np.random.default_rng(0)
    # Every step gets its own offset and spread, so mixing steps' statistics would show.
    return (
        rng.normal(size=(T, B, H, W, C)) * np.arange(1, T + 1)[:, None, None, None, None]
        + 3.0 * np.arange(T)[:, None, None, None, None]
    ).astype(np.float32)


def test_bntt_training_uses_each_steps_batch_statistics_and_gamma():
    x = make_input()
    bntt = BNTT(T)
    variables = bntt.init(jax.random.PRNGKey(0), x, train=True)
    gamma = np.random.default_rng(1).uniform(0.5, 2.0, (T, C)).astype(np.float32)
    variables = {"params": {"scale": gamma}, "batch_stats": variables["batch_stats"]}
    out, updates = bntt.apply(variables, x, train=True, mutable=["batch_stats"])
    for t in range(T):
        mean = x[t].mean(axis=(0, 1, 2))
        var = x[t].var(axis=(0, 1, 2))
        expected = (x[t] - mean) / np.sqrt(var + 1e-4) * gamma[t]
        np.testing.assert_allclose(np.asarray(out[t]), expected, rtol=1e-4, atol=1e-4)
    # Running averages move 10% towards each step's own batch statistics (Flax momentum 0.9).
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * x.mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * x.var(axis=(1, 2, 3)), rtol=1e-5)


def test_bntt_eval_uses_each_steps_running_statistics():
    x = make_input()
    rng = np.random.default_rng(2)
    mean, var = rng.normal(size=(T, C)), rng.uniform(0.5, 3.0, (T, C))
    gamma = rng.uniform(0.5, 2.0, (T, C))
    variables = {
        "params": {"scale": jnp.asarray(gamma, jnp.float32)},
        "batch_stats": {"mean": jnp.asarray(mean, jnp.float32), "var": jnp.asarray(var, jnp.float32)},
    }
    out = BNTT(T).apply(variables, x, train=False)
    expected = (x - mean[:, None, None, None]) / np.sqrt(var[:, None, None, None] + 1e-4) * gamma[:, None, None, None]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


def test_bntt_rejects_wrong_number_of_steps():
    try:
        BNTT(T).init(jax.random.PRNGKey(0), jnp.zeros((T + 1, B, H, W, C)), train=True)
    except ValueError as err:
        assert "4 time steps" in str(err) and "has 5" in str(err)
    else:
        raise AssertionError("expected a ValueError")


@pytest.mark.parametrize("fused", [True, False])
def test_spiking_unit_uses_the_neurons_bntt_settings(fused):
    """BNTT's epsilon and momentum reach both the fused and the plain spiking layer."""
    neuron = Neuron(leak=0.9, bntt_epsilon=0.3, bntt_momentum=0.5)
    unit = Unit(
        Layer("unit", architecture.UNIT, (architecture.INPUT,), 4),
        Settings(spiking=True, timesteps=T, neuron=neuron, fused=fused),
    )
    x_TB = jnp.asarray(make_input()[..., :1] > 0, jnp.float32)  # spikes [T, B, H, W, 1]
    variables = unit.init(jax.random.PRNGKey(0), ops.fold_time(x_TB), train=False)
    spikes, updates = unit.apply(variables, ops.fold_time(x_TB), train=True, mutable=["batch_stats"])
    kernel = variables["params"]["conv"]["kernel"]
    currents = np.asarray(formulations.conv2d_xla(ops.fold_time(x_TB), kernel, 1)).reshape(B, T, H, W, 4)
    mean, var = currents.mean(axis=(0, 2, 3)), currents.var(axis=(0, 2, 3))
    stats = updates["batch_stats"]["bntt"]
    np.testing.assert_allclose(stats["mean"], 0.5 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.5 + 0.5 * var, rtol=1e-5)
    normalized = (np.swapaxes(currents, 0, 1) - mean[:, None, None, None]) / np.sqrt(var[:, None, None, None] + 0.3)
    expected, _ = neurons.lif_scan(jnp.asarray(normalized, jnp.float32), leak=0.9)
    np.testing.assert_array_equal(ops.unfold_time(spikes, T), expected)
