"""Step-by-step inference of the spiking networks: one input frame at a time, state carried along.

    frames = stream.encode(key, images, timesteps)                 # [T, B, H, W, C] input spike frames
    state = stream.init(model, variables, frames.shape[1:])        # membranes at zero
    state, logits = stream.step(model, variables, state, frames[t])  # prediction so far, [B, H, W, K]

A frame is what the network reads at one step: a Poisson spike frame of a static image, or one
event frame (time-major frames, the layout of `ops`). `step` is a pure function of arrays (jit it
with the model static, or `lax.scan` it over frames); it applies the network's own `Network.step`
(each layer's `Unit.step` or `LIF.step`, the same parameters as the network's `__call__`), with the
neurons' membranes kept in the state. Its logits are the output currents averaged over the
steps taken, over the last T of them once more than T have been taken (a ring buffer of T
readouts), so that after T steps from `init` they equal `model.apply(variables, x, train=False,
rngs={"spikes": key})` on the same frames, up to float rounding: the network averages the readout's
input over time where this averages its output (the same linear map), and XLA may sum a
convolution's products in another order for one step than for T steps at once.

Beyond T steps BNTT has no statistics of its own (step t was normalized with the running averages
of step t in training). `late_statistics` chooses what later steps use: "last" (default: the
statistics and scales of step T - 1 for every later step, the state the network was trained to
reach), "mean" (their average over the T steps) or "cycle" (step t uses step t mod T, as if windows
followed each other); `layers.Unit.step` applies the rule. docs/analyses.md ("Streaming and latency")
compares them on the events demo.

`window_predictions` gives, for a whole window of T steps at once, the predictions `step` makes
after each of them: what training on streams scores (`steps.streamed_logits`).
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from snnseg_jax import encoding, layers, models, ops

Array = jax.Array
LATE_STATISTICS = layers.LATE_STATISTICS


@flax.struct.dataclass
class State:
    """What a network carries from one step to the next."""

    steps: Array  # int32 scalar: steps taken since `init`
    membranes: dict[str, Array]  # per layer with neurons: float32 `[B, h, w, C]` after the last step
    readouts: Array  # `[T, B, h, w, K]`: the readout of step s in slot s mod T (zeros before)


def encode(key: Array, images_BHWC: Array, timesteps: int) -> Array:
    """The input spike frames `[T, B, H, W, C]` the network draws from `key` for static images.

    `model.apply(..., rngs={"spikes": key})` draws the same spikes, so stepping through these frames
    reproduces it. A longer stream starts with the same frames as a shorter one.
    """
    return encoding.poisson_encode(models.spike_key(key), images_BHWC, timesteps)


def input_frames(key: Array, inputs: Array, timesteps: int) -> Array:
    """What a network reads at each step, `[T, B, H, W, C]`: the frames of event sequences
    `[B, T, H, W, C]`, or the spikes `encode` draws from `key` for images `[B, H, W, C]`."""
    return jnp.swapaxes(inputs, 0, 1) if inputs.ndim == 5 else encode(key, inputs, timesteps)


def init(model: nn.Module, variables: dict, frame_shape: tuple[int, ...]) -> State:
    """The state before the first step for frames of `frame_shape` `(B, H, W, C)`: membranes at zero."""
    frame = jax.ShapeDtypeStruct(tuple(frame_shape), jnp.float32)
    membranes, _, readout = jax.eval_shape(lambda f: _walk(model, variables, None, f, 0, "last"), frame)
    zeros = lambda shape: jnp.zeros(shape.shape, jnp.float32)
    return State(
        steps=jnp.zeros((), jnp.int32),
        membranes=jax.tree.map(zeros, membranes),
        readouts=jnp.zeros((model.settings.timesteps, *readout.shape), jnp.float32),
    )


def step(
    model: nn.Module, variables: dict, state: State, frame: Array, *, late_statistics: str = "last"
) -> tuple[State, Array]:
    """One step on `frame` `[B, H, W, C]`: the next state and the logits so far `[B, H, W, K]`."""
    state, logits, _ = advance(model, variables, state, frame, late_statistics=late_statistics)
    return state, logits


def advance(
    model: nn.Module, variables: dict, state: State, frame: Array, *, late_statistics: str = "last"
) -> tuple[State, Array, dict[str, Array]]:
    """`step`, and the spikes of this step of every layer with neurons (`[B, h, w, C]` by name)."""
    timesteps = model.settings.timesteps
    membranes, spikes, readout = _walk(model, variables, state.membranes, frame, state.steps, late_statistics)
    readouts = jax.lax.dynamic_update_index_in_dim(
        state.readouts, readout.astype(jnp.float32), state.steps % timesteps, 0
    )
    taken = jnp.minimum(state.steps + 1, timesteps).astype(jnp.float32)
    height, width = frame.shape[1:3]
    logits = ops.resize_bilinear(readouts.sum(axis=0) / taken, height, width)
    return State(state.steps + 1, membranes, readouts), logits, spikes


def window_predictions(readouts: Array, previous: Array, fresh: Array) -> Array:
    """What `step` predicts after each step of a window of T steps that starts where the state has
    taken a multiple of T steps, at feature resolution `[T, B, h, w, K]` (`step` upsamples it).

    `readouts` `[T, B, h, w, K]`: the window's readouts (`models.Network.readouts`); `previous` (same
    shape): those of the window before, from which each slot goes on; `fresh` `[B]`: the slots that
    start the window from `init`. After step t the ring buffer holds this window's readouts 0..t and
    the previous window's t+1..T-1, and their mean is the prediction; a fresh slot averages its t + 1.
    Training on streams scores these, the predictions streaming makes.
    """
    timesteps = readouts.shape[0]
    so_far = jnp.cumsum(readouts, axis=0)
    # The previous window's readouts t+1..T-1, summed (a cumulative sum from the end, shifted by one).
    from_the_end = jnp.cumsum(previous[::-1], axis=0)[::-1]
    still_held = jnp.concatenate([from_the_end[1:], jnp.zeros_like(previous[:1])])
    fresh = fresh.reshape(1, -1, *(1,) * (readouts.ndim - 2))
    step_count = jnp.arange(1, timesteps + 1, dtype=readouts.dtype).reshape(-1, *(1,) * (readouts.ndim - 1))
    return jnp.where(fresh, so_far / step_count, (so_far + still_held) / timesteps)


def _walk(
    model: nn.Module, variables: dict, membranes: dict | None, frame: Array, steps, late_statistics: str
) -> tuple[dict[str, Array], dict[str, Array], Array]:
    """One step through the network: the new membranes, the spikes and the readout at feature resolution.

    `membranes` None starts every neuron at zero (for shapes: see `init`).
    """
    return model.apply(variables, membranes, frame, steps, late_statistics, method=models.Network.step)
