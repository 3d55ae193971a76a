"""The fused spiking layer against the plain composition of conv, BNTT and LIF (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import formulations, fused, neurons, ops
from snnseg_jax.fused import InputValues
from snnseg_jax.neurons import Neuron

T, B, H, W = 3, 2, 6, 5
rng = np.random.default_rng(0)


def layer_spec(levels=None, signed=False, **settings):
    """A layer's spec with the formulations the networks use on CPU."""
    return fused.SpikingConvSpec(
        T, input_values=InputValues(levels, signed), tuning=formulations.for_backend("cpu"), **settings
    )


def plain_layer(x, kernel, gamma, spec, stats=None, membrane=None):
    """conv -> BNTT -> LIF as `layers.Unit(fused=False)` composes them, by autodiff."""
    n = spec.neuron
    c = ops._unfold_time(formulations.conv2d_xla(x, kernel, spec.dilation), spec.timesteps)
    mean, var = (c.mean(axis=(1, 2, 3)), c.var(axis=(1, 2, 3))) if stats is None else stats
    scale = gamma * jax.lax.rsqrt(var + n.bntt_epsilon)
    y = c * scale[:, None, None, None] - (mean * scale)[:, None, None, None]
    spike = neurons.spike_function(n.surrogate, n.surrogate_param)
    spikes, final = neurons.lif_scan(y, leak=n.leak, threshold=n.threshold, surrogate=spike, u0=membrane, floor=n.floor)
    return ops._fold_time(spikes), mean, var, final


def layer_input(levels, signed, channels):
    """Values the spec promises: k / levels for integer k (pooled spikes when levels is 9)."""
    if levels is None:
        return rng.normal(size=(T * B, H, W, channels))
    low = -levels if signed else 0
    return rng.integers(low, levels + 1, size=(T * B, H, W, channels)) / levels


def random_problem(spec, channels=8, features=4):
    x = jnp.asarray(layer_input(spec.input_values.levels, spec.input_values.signed, channels), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, channels, features)) * 0.6, jnp.float32)
    gamma = jnp.asarray(rng.uniform(0.5, 2.0, size=(T, features)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(T * B, H, W, features)), jnp.float32)
    return x, kernel, gamma, weights


def loss_and_grads(layer, x, kernel, gamma, weights, spec, membrane=None):
    def loss(x, kernel, gamma):
        spikes, mean, var, final = layer(x, kernel, gamma, spec, membrane=membrane)
        return jnp.sum(spikes * weights), (spikes, mean, var, final)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(x, kernel, gamma)


SPECS = [
    layer_spec(),
    layer_spec(1, dilation=2),
    layer_spec(9, neuron=Neuron(surrogate="fast_sigmoid")),
    layer_spec(1, True, neuron=Neuron(leak=0.5, threshold=0.7), remat=True),
    layer_spec(1, dilation=4, neuron=Neuron(surrogate="exp", surrogate_param=3.0)),
    fused.SpikingConvSpec(T, input_values=InputValues(1), neuron=Neuron(bntt_epsilon=0.5)),  # plain formulations
]


@pytest.mark.parametrize(
    "spec",
    SPECS,
    ids=lambda s: (
        f"d{s.dilation}-L{s.input_values.levels}-{s.neuron.surrogate}-remat{s.remat}-eps{s.neuron.bntt_epsilon}"
    ),
)
def test_fused_layer_matches_plain_composition(spec):
    x, kernel, gamma, weights = random_problem(spec)
    (loss, (spikes, mean, var, _)), grads = loss_and_grads(fused.spiking_conv_train, x, kernel, gamma, weights, spec)
    (ref_loss, (ref_spikes, ref_mean, ref_var, _)), ref_grads = loss_and_grads(
        plain_layer, x, kernel, gamma, weights, spec
    )
    assert 0.05 < float(spikes.mean()) < 0.95  # both regimes present, so the comparison means something
    np.testing.assert_array_equal(spikes, ref_spikes)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, ref_var, rtol=1e-5)
    for name, got, want in zip(("input", "kernel", "gamma"), grads, ref_grads):
        scale = float(jnp.max(jnp.abs(want)))
        assert scale > 0, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_eval_uses_the_given_statistics():
    spec = layer_spec(1)
    x, kernel, gamma, _ = random_problem(spec)
    stats = (jnp.asarray(rng.normal(size=(T, 4)), jnp.float32), jnp.asarray(rng.uniform(1, 9, (T, 4)), jnp.float32))
    got, final = fused.spiking_conv_eval(x, kernel, gamma, *stats, spec)
    want = plain_layer(x, kernel, gamma, spec, stats)
    np.testing.assert_array_equal(got, want[0])
    np.testing.assert_allclose(final, want[3], rtol=1e-6, atol=1e-6)


def test_a_layer_starting_from_given_membranes_goes_on_from_them_with_no_gradient_into_them():
    spec = layer_spec(1)
    x, kernel, gamma, weights = random_problem(spec)
    membrane = jnp.asarray(rng.normal(size=(B, H, W, 4)), jnp.float32)
    (loss, (spikes, _, _, final)), grads = loss_and_grads(
        fused.spiking_conv_train, x, kernel, gamma, weights, spec, membrane
    )
    (ref_loss, (ref_spikes, _, _, ref_final)), ref_grads = loss_and_grads(
        plain_layer, x, kernel, gamma, weights, spec, jax.lax.stop_gradient(membrane)
    )
    from_zero = fused.spiking_conv_train(x, kernel, gamma, spec)[0]
    assert float(jnp.abs(spikes - from_zero).sum()) > 0  # the membranes matter
    np.testing.assert_array_equal(spikes, ref_spikes)
    np.testing.assert_allclose(final, ref_final, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("input", "kernel", "gamma"), grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want))), err_msg=name)
    into_membrane = jax.grad(
        lambda m: jnp.sum(fused.spiking_conv_train(x, kernel, gamma, spec, membrane=m)[0] * weights)
    )(membrane)
    assert not np.any(np.asarray(into_membrane))


@pytest.mark.parametrize("levels,signed", [(1, False), (1, True), (9, False)])
def test_stored_input_decodes_bit_exactly(levels, signed):
    spec = layer_spec(levels, signed)
    if levels == 9:  # as the network computes it: avg-pooled spikes
        spikes = rng.integers(-1 if signed else 0, 2, size=(T * B, 2 * H, 2 * W, 8))
        x = ops.avg_pool(jnp.asarray(spikes, jnp.float32), spec.tuning)
    else:
        x = jnp.asarray(layer_input(levels, signed, 8), jnp.float32)
    stored = jax.jit(lambda x: fused._encode_input(x, spec))(x)
    assert stored.dtype == jnp.uint8 and stored.size * {1: 8, 2: 4, 4: 2}[fused._code_bits(spec)] == x.size
    np.testing.assert_array_equal(fused._decode_input(stored, spec, jnp.float32), x)


def test_input_with_too_many_values_is_stored_as_is():
    spec = layer_spec(9, True)  # 19 values: more than 4 bits
    x = jnp.asarray(layer_input(9, True, 8), jnp.float32)
    assert fused._encode_input(x, spec) is x


@pytest.mark.parametrize("levels", [1, 9])
def test_packed_input_gives_the_same_gradients_as_a_float_input(levels):
    packed = layer_spec(levels)
    x, kernel, gamma, weights = random_problem(packed)
    grads = loss_and_grads(fused.spiking_conv_train, x, kernel, gamma, weights, packed)[1]
    float_grads = loss_and_grads(fused.spiking_conv_train, x, kernel, gamma, weights, layer_spec())[1]
    for got, want in zip(grads, float_grads):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("remat", [False, True])
def test_backward_pass_keeps_the_input_packed_and_no_float_input(remat):
    """Residuals: the conv input in bits, the conv output unless recomputed, the kernel, statistics."""
    spec = layer_spec(1, remat=remat)
    x, kernel, gamma, _ = random_problem(spec, channels=16)
    _, vjp = jax.vjp(lambda x, k, g: fused.spiking_conv_train(x, k, g, spec)[0], x, kernel, gamma)
    residuals = sorted(
        (leaf.dtype.name, leaf.shape)
        for leaf in jax.tree_util.tree_leaves(vjp)
        if hasattr(leaf, "shape") and leaf.size > T * 4
    )
    conv_output = [] if remat else [("float32", (B, T, H, W, 4))]
    assert residuals == sorted([*conv_output, ("float32", kernel.shape), ("uint8", (T * B, H, W, 2))])


def test_a_membrane_floor_bounds_the_membranes_and_stops_their_gradient_as_the_plain_layer_does():
    spec = layer_spec(1, neuron=Neuron(floor=-0.5))
    x, kernel, gamma, weights = random_problem(spec)
    membrane = jnp.asarray(rng.normal(size=(B, H, W, 4)) * 3, jnp.float32)
    (_, (spikes, _, _, final)), grads = loss_and_grads(
        fused.spiking_conv_train, x, kernel, gamma, weights, spec, membrane
    )
    (_, (ref_spikes, _, _, ref_final)), ref_grads = loss_and_grads(
        plain_layer, x, kernel, gamma, weights, spec, membrane
    )
    unbounded = layer_spec(1)
    (_, (_, _, _, free_final)), free_grads = loss_and_grads(
        fused.spiking_conv_train, x, kernel, gamma, weights, unbounded, membrane
    )
    assert float(final.min()) >= -0.5 and float(free_final.min()) < -0.5  # the floor was reached
    np.testing.assert_array_equal(spikes, ref_spikes)
    np.testing.assert_allclose(final, ref_final, rtol=1e-5, atol=1e-5)
    for name, got, want, free in zip(("input", "kernel", "gamma"), grads, ref_grads, free_grads):
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
        assert float(jnp.max(jnp.abs(got - free))) > 1e-4 * scale, name  # the floor changed the gradient
