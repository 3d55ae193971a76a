"""Step-by-step inference against the whole-window network: the same logits after T steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import lively_variables

from snnseg_jax import models, stream

KEY = jax.random.PRNGKey(0)
T = 4


@functools.cache  # shared by the tests of the same network: drawing its lively variables takes seconds
def network_and_frames(name, kind, batch=2, size=16):
    """A tiny spiking network, its variables, its input and the frames it reads at each step."""
    if kind == "images":
        model = models.build(name, num_classes=5, timesteps=T, width=0.125)
        x = jax.random.uniform(KEY, (batch, size, size, 3), minval=-1, maxval=1)
        frames = stream.encode(KEY, x, T)
    else:
        model = models.build(name, num_classes=5, timesteps=T, width=0.125, in_channels=2)
        x = jax.random.uniform(KEY, (batch, T, size, size, 2), minval=-0.5, maxval=0.5)
        frames = jnp.swapaxes(x, 0, 1)
    return model, lively_variables(model, x.shape[1:]), x, frames


@functools.cache  # one compilation per network and rule, whichever test steps it first
def jitted_step(model, late_statistics="last"):
    return jax.jit(functools.partial(stream.step, model, late_statistics=late_statistics))


def run_steps(model, variables, frames, **kwargs):
    """Logits after each step, stepping with a jitted `stream.step` from a fresh state."""
    step = jitted_step(model, **kwargs)
    state = stream.init(model, variables, frames.shape[1:])
    outputs = []
    for frame in frames:
        state, logits = step(variables, state, frame)
        outputs.append(logits)
    return state, jnp.stack(outputs)


@pytest.mark.parametrize("kind", ["images", "events"])
@pytest.mark.parametrize("name", ["spiking_deeplab", "spiking_fcn"])
def test_after_t_steps_the_logits_are_the_networks(name, kind):
    model, variables, x, frames = network_and_frames(name, kind)
    expected, sown = jax.jit(
        lambda v, x: model.apply(v, x, train=False, rngs={"spikes": KEY}, mutable=[models.ACTIVITY])
    )(variables, x)
    spikes = np.mean([float(a.mean()) for a in models.activity(sown).values()])
    assert 0.05 < spikes < 0.95, "the test needs layers that spike, but not always"
    _, logits = run_steps(model, variables, frames)
    scale = float(jnp.max(jnp.abs(expected)))
    np.testing.assert_allclose(logits[-1], expected, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(jnp.argmax(logits[-1], -1), jnp.argmax(expected, -1))


def test_step_under_scan_agrees_with_jitted_steps():
    model, variables, _, frames = network_and_frames("spiking_fcn", "images")
    frames = jnp.concatenate([frames, frames[:3]])  # past T: the window slides
    _, stepped = run_steps(model, variables, frames)

    def scan(variables, frames):
        state = stream.init(model, variables, frames.shape[1:])
        return jax.lax.scan(lambda s, f: stream.step(model, variables, s, f), state, frames)

    state, scanned = jax.jit(scan)(variables, frames)
    np.testing.assert_array_equal(scanned, stepped)
    assert int(state.steps) == T + 3


def test_encode_draws_the_networks_spikes_and_longer_streams_extend_shorter_ones():
    images = jax.random.uniform(KEY, (2, 8, 8, 3), minval=-1, maxval=1)
    long = stream.encode(KEY, images, 3 * T)
    np.testing.assert_array_equal(long[:T], stream.encode(KEY, images, T))
    assert long.shape == (3 * T, 2, 8, 8, 3) and not np.array_equal(long[:T], long[T : 2 * T])


def test_late_statistics_rules_agree_within_t_and_differ_after():
    model, variables, _, frames = network_and_frames("spiking_deeplab", "events")
    frames = jnp.concatenate([frames, frames])
    logits = {rule: run_steps(model, variables, frames, late_statistics=rule)[1] for rule in stream.LATE_STATISTICS}
    for rule in ("mean", "cycle"):
        np.testing.assert_array_equal(logits[rule][:T], logits["last"][:T])
        assert not np.allclose(logits[rule][T:], logits["last"][T:])


def test_ann_and_unknown_rule_are_refused(random_variables):
    ann = models.build("deeplab", num_classes=3, timesteps=T, width=0.125)
    with pytest.raises(ValueError, match="an ANN has no state"):
        stream.init(ann, random_variables(ann, (8, 8, 3)), (1, 8, 8, 3))
    model, variables, _, frames = network_and_frames("spiking_deeplab", "images")
    state = stream.init(model, variables, frames.shape[1:])
    with pytest.raises(ValueError, match="unknown late_statistics 'first'"):
        stream.step(model, variables, state, frames[0], late_statistics="first")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,tuned_ops,agreement",
    [("spiking_fcn", True, 1.0), ("spiking_deeplab", False, 1.0), ("spiking_deeplab", True, 0.99)],
)
def test_at_the_papers_size(name, tuned_ops, agreement):
    """T = 20, 64x64, width 1. XLA's convolutions give every step the window's sums; the in-bounds
    formulation of DeepLab's dilation-12 layer sums in another order for one step than for 20, which
    can flip a few neurons near threshold and, on some weights, the class of a few pixels."""
    model = models.build(name, num_classes=21, timesteps=20, width=1.0, tuned_ops=tuned_ops)
    x = jax.random.uniform(KEY, (1, 64, 64, 3), minval=-0.5, maxval=0.5)
    variables = lively_variables(model, x.shape[1:])
    expected = jax.jit(lambda v, x: model.apply(v, x, train=False, rngs={"spikes": KEY}))(variables, x)
    _, logits = run_steps(model, variables, stream.encode(KEY, x, 20))
    same = float(jnp.mean(jnp.argmax(logits[-1], -1) == jnp.argmax(expected, -1)))
    assert same >= agreement
    if agreement == 1.0:
        scale = float(jnp.max(jnp.abs(expected)))
        np.testing.assert_allclose(logits[-1], expected, rtol=1e-5, atol=1e-5 * scale)
