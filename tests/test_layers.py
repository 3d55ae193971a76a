"""BNTT: per-step statistics and scales in training, per-step running averages at evaluation;
the spiking unit built on it; the running statistics of BNTT and of the ANN's BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import architecture, formulations, neurons, ops
from snnseg_jax.architecture import Layer
from snnseg_jax.layers import BNTT, LIF, Settings, Unit
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
    # Running averages move 10% towards each step's own batch statistics (Flax momentum 0.9), the
    # variance towards the unbiased one.
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * x.mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * x.var(axis=(1, 2, 3), ddof=1), rtol=1e-5)


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
    variables = unit.init(jax.random.PRNGKey(0), ops._fold_time(x_TB), train=False)
    spikes, updates = unit.apply(variables, ops._fold_time(x_TB), train=True, mutable=["batch_stats"])
    kernel = variables["params"]["conv"]["kernel"]
    currents = np.asarray(formulations.conv2d_xla(ops._fold_time(x_TB), kernel, 1)).reshape(B, T, H, W, 4)
    mean, var = currents.mean(axis=(0, 2, 3)), currents.var(axis=(0, 2, 3))
    stats = updates["batch_stats"]["bntt"]
    np.testing.assert_allclose(stats["mean"], 0.5 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.5 + 0.5 * currents.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    normalized = (np.swapaxes(currents, 0, 1) - mean[:, None, None, None]) / np.sqrt(var[:, None, None, None] + 0.3)
    expected, _ = neurons.lif_scan(jnp.asarray(normalized, jnp.float32), leak=0.9)
    np.testing.assert_array_equal(ops._unfold_time(spikes, T), expected)


def pytorch_running_statistics(batches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's `BatchNorm2d` running mean and variance after `batches` `[n, C]` (momentum 0.1, from 0
    and 1): the variance moves towards `sum((x - mean)^2) / (n - 1)`, in float64."""
    running_mean, running_var = 0.0, 1.0
    for x in batches:
        x = np.asarray(x, np.float64)
        mean = x.sum(axis=0) / len(x)
        unbiased_var = np.square(x - mean).sum(axis=0) / (len(x) - 1)
        running_mean = 0.9 * running_mean + 0.1 * mean
        running_var = 0.9 * running_var + 0.1 * unbiased_var
    return running_mean, running_var


@pytest.mark.parametrize("spiking, fused", [(True, True), (True, False), (False, False)])
def test_running_statistics_after_one_and_two_steps_are_pytorchs(spiking, fused):
    """BNTT (fused and plain layer, per step t) and the ANN's BatchNorm, after one and two training
    batches: PyTorch's running mean and unbiased running variance, computed by hand."""
    unit = Unit(Layer("unit", architecture.UNIT, (architecture.INPUT,), 4), Settings(spiking, T, fused=fused))
    rng = np.random.default_rng(4)
    inputs = [jnp.asarray(rng.normal(size=(B * T, H, W, 1)) * (1 + k), jnp.float32) for k in range(2)]
    variables = unit.init(jax.random.PRNGKey(0), inputs[0], train=False)
    kernel = variables["params"]["conv"]["kernel"]
    currents = [np.asarray(formulations.conv2d_xla(x, kernel, 1)) for x in inputs]
    for steps in (1, 2):
        _, updates = unit.apply(variables, inputs[steps - 1], train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
        stats = updates["batch_stats"]["bntt" if spiking else "bn"]
        if spiking:  # step t's statistics over the batch and the pixels of that step
            step = lambda c, t: c.reshape(B, T, H * W, 4)[:, t].reshape(-1, 4)
            expected = [pytorch_running_statistics([step(c, t) for c in currents[:steps]]) for t in range(T)]
            expected_mean, expected_var = (np.stack([e[i] for e in expected]) for i in (0, 1))
        else:
            expected_mean, expected_var = pytorch_running_statistics([c.reshape(-1, 4) for c in currents[:steps]])
        np.testing.assert_allclose(stats["mean"], expected_mean, rtol=1e-5, atol=1e-6, err_msg=f"{steps} steps")
        np.testing.assert_allclose(stats["var"], expected_var, rtol=1e-5, err_msg=f"{steps} steps")


def test_unbiased_leaves_a_single_values_variance():
    """`n / (n - 1)` for n values; one value has nothing to correct with (its variance is 0)."""
    np.testing.assert_allclose(neurons.unbiased(jnp.float32(2.0), 5), 2.5)
    assert float(neurons.unbiased(jnp.float32(0.0), 1)) == 0.0


@pytest.mark.parametrize("fused", [True, False])
def test_unit_steps_through_time_as_the_unit_runs_the_window(fused):
    """`Unit.step` on frame t after t steps, membrane carried, gives the window's spikes of step t
    (evaluation: running statistics); `LIF.step` is one step of `LIF`."""
    unit = Unit(
        Layer("unit", architecture.UNIT, (architecture.INPUT,), 4),
        Settings(spiking=True, timesteps=T, neuron=Neuron(leak=0.9), fused=fused),
    )
    x_TB = jnp.asarray(make_input()[..., :1] > 0, jnp.float32)
    variables = unit.init(jax.random.PRNGKey(0), ops._fold_time(x_TB), train=False)
    rng = np.random.default_rng(3)
    variables["batch_stats"]["bntt"] = {
        "mean": jnp.asarray(rng.uniform(-0.5, 0.0, (T, 4)), jnp.float32),
        "var": jnp.asarray(rng.uniform(0.1, 0.5, (T, 4)), jnp.float32),
    }
    window = ops._unfold_time(unit.apply(variables, ops._fold_time(x_TB), train=False), T)
    assert 0 < float(window.mean()) < 1
    membrane = None
    for t in range(T):
        membrane, spikes = unit.apply(variables, x_TB[t], membrane, t, method=Unit.step)
        np.testing.assert_array_equal(spikes, window[t], err_msg=f"step {t}")
    currents = jnp.asarray(make_input())
    lif = LIF(Neuron(leak=0.9))
    membrane, spikes = None, []
    for t in range(T):
        membrane, fired = lif.apply({}, currents[t], membrane, method=LIF.step)
        spikes.append(fired)
    np.testing.assert_array_equal(jnp.stack(spikes), lif.apply({}, currents))


def test_late_statistics_past_t_take_the_last_the_mean_or_step_t_mod_t():
    layer = Layer("unit", architecture.UNIT, (architecture.INPUT,), 2)
    unit = Unit(layer, Settings(spiking=True, timesteps=T))
    x = jnp.ones((1, 1, 1, 1))
    variables = unit.init(jax.random.PRNGKey(0), jnp.ones((T, 1, 1, 1)), train=False)
    variables["params"]["conv"]["kernel"] = jnp.ones((3, 3, 1, 2))
    gamma = jnp.arange(1.0, T + 1)[:, None] * jnp.ones((T, 2))
    variables["params"]["bntt"]["scale"] = gamma

    def current(steps, rule):  # the membrane before the reset (threshold 1), from zero: the BNTT output
        membrane, spikes = unit.apply(variables, x, None, steps, rule, method=Unit.step)
        return membrane + spikes

    scale = 1 / np.sqrt(1 + 1e-4)  # running mean 0, variance 1: the current is gamma_t / sqrt(1 + eps)
    for rule, expected in (("last", T), ("mean", (T + 1) / 2), ("cycle", 2)):
        np.testing.assert_allclose(current(T + 1, rule)[0, 0, 0], expected * scale, rtol=1e-6, err_msg=rule)
    np.testing.assert_allclose(current(1, "mean")[0, 0, 0], 2 * scale, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown late_statistics 'first'"):
        current(0, "first")
