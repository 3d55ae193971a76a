"""LIF neurons and surrogate gradients against explicit numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnseg_jax import neurons

# Independent numpy formulas of the paper's Eqs. 2, 3 and 6, with each surrogate's default hyper-parameter.
SURROGATE_FORMULAS = {
    "linear": lambda x: 0.3 * np.maximum(0.0, 1.0 - np.abs(x)),
    "fast_sigmoid": lambda x: 1.0 / (100.0 * np.abs(x) + 1.0) ** 2,
    "exp": lambda x: np.exp(-10.0 * np.abs(x)),
    "pass_through": lambda x: np.ones_like(x),
}


def reference_forward(currents, leak, threshold):
    """Step-by-step Eqs. 2, 3 and soft reset; returns spikes, pre-reset membranes, final membrane."""
    u = np.zeros_like(currents[0])
    spikes, pre = [], []
    for current in currents:
        u = leak * u + current
        o = (u / threshold - 1.0 > 0).astype(currents.dtype)
        pre.append(u.copy())
        spikes.append(o)
        u = u - threshold * o
    return np.stack(spikes), np.stack(pre), u


def reference_bptt(currents, w_spikes, w_final, leak, threshold, sg, detach_reset):
    """Hand-written BPTT of L = sum(w_spikes * o) + sum(w_final * u_T): returns dL/dcurrents."""
    _, pre, _ = reference_forward(currents, leak, threshold)
    grads = np.zeros_like(currents)
    g_after_reset = w_final.copy()  # dL/d(u_t after reset), starting at t = T
    for t in reversed(range(len(currents))):
        dspike_du = sg(pre[t] / threshold - 1.0) / threshold
        d_spike = w_spikes[t] if detach_reset else w_spikes[t] - threshold * g_after_reset
        g_u = d_spike * dspike_du + g_after_reset  # through the spike and the identity path
        grads[t] = g_u
        g_after_reset = leak * g_u
    return grads


@pytest.mark.parametrize("leak,threshold", [(0.99, 1.0), (0.5, 1.0), (1.0, 0.5), (0.9, 2.0)])
def test_lif_scan_matches_step_by_step_reference(leak, threshold):
    currents = np.random.default_rng(0).normal(0.6, 1.0, (12, 4, 5)).astype(np.float32)
    spikes, u_final = neurons.lif_scan(jnp.asarray(currents), leak=leak, threshold=threshold)
    ref_spikes, _, ref_u = reference_forward(currents, leak, threshold)
    np.testing.assert_array_equal(np.asarray(spikes), ref_spikes)
    np.testing.assert_allclose(np.asarray(u_final), ref_u, rtol=1e-5, atol=1e-5)
    assert 0.05 < ref_spikes.mean() < 0.95  # the test exercises both spiking and silent neurons


def test_lif_step_agrees_with_scan():
    currents = jax.random.normal(jax.random.PRNGKey(1), (7, 3, 6)) + 0.5
    u = jnp.zeros((3, 6))
    stepped = []
    for current in currents:
        u, o = neurons.lif_step(u, current, leak=0.9, threshold=1.2)
        stepped.append(o)
    spikes, u_final = neurons.lif_scan(currents, leak=0.9, threshold=1.2)
    np.testing.assert_array_equal(np.stack(stepped), spikes)
    np.testing.assert_allclose(u, u_final, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("surrogate", sorted(SURROGATE_FORMULAS))
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("leak,threshold", [(0.99, 1.0), (0.8, 1.5)])
def test_lif_scan_gradient_matches_hand_bptt(surrogate, detach_reset, leak, threshold):
    rng = np.random.default_rng(2)
    currents = rng.normal(0.5, 1.0, (10, 3, 4))
    w_spikes, w_final = rng.normal(size=currents.shape), rng.normal(size=currents.shape[1:])

    def loss(c):
        spikes, u_final = neurons.lif_scan(
            c, leak=leak, threshold=threshold, surrogate=surrogate, detach_reset=detach_reset
        )
        return jnp.sum(spikes * w_spikes) + jnp.sum(u_final * w_final)

    grads = jax.grad(loss)(jnp.asarray(currents, jnp.float32))
    expected = reference_bptt(currents, w_spikes, w_final, leak, threshold, SURROGATE_FORMULAS[surrogate], detach_reset)
    np.testing.assert_allclose(np.asarray(grads), expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", sorted(SURROGATE_FORMULAS))
def test_surrogate_backward_is_its_formula_and_forward_is_strict_step(name):
    x = jnp.linspace(-2.0, 2.0, 401)
    spike = neurons.spike_function(name)
    np.testing.assert_array_equal(np.asarray(spike(x)), (np.asarray(x) > 0).astype(np.float32))
    assert float(spike(jnp.float32(0.0))) == 0.0 and float(spike(jnp.float32(1e-7))) == 1.0
    grad = jax.vmap(jax.grad(spike))(x)
    np.testing.assert_allclose(np.asarray(grad), SURROGATE_FORMULAS[name](np.asarray(x)), rtol=1e-6, atol=1e-7)


def test_surrogate_hyper_parameter_and_unknown_name():
    grad = jax.grad(neurons.spike_function("linear", 1.0))(jnp.float32(0.25))
    np.testing.assert_allclose(grad, 0.75)  # Eq. 6 as printed, scale 1
    with pytest.raises(ValueError, match="unknown surrogate 'sigmoid'"):
        neurons.lif_step(jnp.zeros(2), jnp.ones(2), surrogate="sigmoid")


def test_neurons_under_jit_vmap_and_custom_spike_function():
    currents = jax.random.normal(jax.random.PRNGKey(3), (6, 5, 8)) + 0.7
    scan = lambda c: neurons.lif_scan(c, leak=0.95, surrogate=neurons.spike_function("exp"))
    spikes, u_final = jax.jit(scan)(currents)
    per_example = jax.vmap(scan, in_axes=1, out_axes=(1, 0))(currents)
    np.testing.assert_array_equal(spikes, per_example[0])
    np.testing.assert_allclose(u_final, per_example[1], rtol=1e-6)


def test_bfloat16_keeps_dtype_and_matches_float32():
    currents = jnp.round(jax.random.normal(jax.random.PRNGKey(4), (8, 16)) * 4) / 4 + 0.3
    spikes16, u16 = neurons.lif_scan(currents.astype(jnp.bfloat16), leak=0.5)
    spikes32, _ = neurons.lif_scan(currents, leak=0.5)
    assert spikes16.dtype == u16.dtype == jnp.bfloat16
    assert np.mean(np.asarray(spikes16, np.float32) == np.asarray(spikes32)) > 0.97
    grads = jax.grad(lambda c: neurons.lif_scan(c)[0].sum())(currents.astype(jnp.bfloat16))
    assert grads.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize(
    "make",
    [float, np.float32, lambda v: np.array(v, np.float32), jnp.bfloat16, lambda v: jnp.array(v, jnp.float16)],
    ids=["python", "numpy_scalar", "numpy_array", "bfloat16", "float16"],
)
def test_cells_take_whatever_jnp_takes_and_keep_its_dtype(make):
    spike = neurons.spike_function()
    expected = jnp.asarray(make(0.0)).dtype  # a Python float is a weakly typed float32
    for x, fired in ((0.0, 0.0), (0.25, 1.0)):
        out = spike(make(x))
        assert out.dtype == expected and float(out) == fired
        grad = jax.grad(spike)(make(x))
        assert grad.dtype == expected
        np.testing.assert_allclose(float(grad), 0.3 * (1 - abs(x)), rtol=1e-2)
    u_next, spikes = neurons.lif_step(make(0.0), make(1.5))
    assert u_next.dtype == spikes.dtype == expected and float(spikes) == 1.0
    np.testing.assert_allclose(float(u_next), 0.5, rtol=1e-2)  # 1.5 - threshold after the spike
    spikes, u_final = neurons.lif_scan(np.full((3, 2), 0.6, np.float32))
    assert spikes.dtype == u_final.dtype == jnp.float32 and spikes[:, 0].tolist() == [0.0, 1.0, 0.0]


def test_a_floor_raises_the_membrane_to_it_and_stops_the_gradient_there():
    u = jnp.array([-3.0, -0.2, 0.5, 1.6])
    current = jnp.zeros(4)
    u_next, spikes, _ = neurons.lif_update(u, current, leak=1.0, threshold=2.0, floor=-0.5)
    np.testing.assert_array_equal(u_next, jnp.array([-1.0, -0.2, 0.5, 1.6]))  # floor * threshold = -1
    np.testing.assert_array_equal(spikes, [0, 0, 0, 0])
    grad = jax.grad(lambda u: neurons.lif_update(u, current, leak=1.0, threshold=2.0, floor=-0.5)[0].sum())(u)
    np.testing.assert_array_equal(grad, [0.0, 1.0, 1.0, 1.0])
    unbounded = neurons.lif_update(u, current, leak=1.0, threshold=2.0)[0]
    np.testing.assert_array_equal(unbounded, u)
