"""A spiking layer (conv -> BNTT -> LIF) as one function with a hand-written backward pass.

Same values and gradients as composing `ops.conv2d`, `layers.BNTT` and `neurons.lif_scan`, but
autodiff of that composition keeps three float tensors per neuron and step for the backward pass
(the conv input, the BNTT input and the membrane) and makes several passes over each. Here the
backward pass keeps only

- the conv input bit-packed when it is known to take a few values (1 bit per spike, 4 bits per
  avg-pooled spike count), decoded exactly,
- the BNTT input (the conv output) in the compute dtype, unless the conv is recomputed (`remat`, or
  a conv over so few input channels that recomputing it is cheaper than storing its output),

and recomputes the membrane from them: one forward sweep over time for the surrogate slopes, one
reverse sweep that runs the BPTT recurrence and the BNTT backward step by step.

Tensors are time-folded batch-major (`ops.split_time` views them as `[B, T, H, W, C]` without a
copy), so a batch split over devices splits every tensor here too; the sweeps over time step along
axis 1. They write their results in place into a buffer a `fori_loop` carries,
rather than stacking a `scan`'s outputs: XLA zero-fills a fresh buffer for every stacked output and,
on CPU, schedules those fills early, where they raise the peak memory.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from snnseg_jax import neurons, ops

Array = jax.Array

# Below this many input channels a conv is recomputed in the backward pass rather than its
# output stored: its cost is a few multiply-adds per output value.
RECOMPUTE_BELOW_CHANNELS = 5


@dataclasses.dataclass(frozen=True)
class SpikingConvSpec:
    """Static settings of one spiking layer.

    `input_levels`: None for an arbitrary float input, or L when every input value is k / L for an
    integer k in [0, L], or in [-L, L] with `input_signed` (L = 1 for spikes, and signed for
    Poisson input; 9 for avg-pooled spikes); the backward pass then stores the input bit-packed.
    """

    timesteps: int
    dilation: int = 1
    input_levels: int | None = None
    input_signed: bool = False
    leak: float = 0.99
    threshold: float = 1.0
    surrogate: str = "linear"
    surrogate_param: float | None = None
    epsilon: float = 1e-4
    remat: bool = False


TIME = 1  # the time axis of `[B, T, H, W, C]`


def _step_shape(x_BTHWC: Array) -> tuple[int, ...]:
    """The shape of one step `[B, H, W, C]`."""
    return x_BTHWC.shape[:TIME] + x_BTHWC.shape[TIME + 1:]


def batch_statistics(c_BTHWC: Array) -> tuple[Array, Array]:
    """Per-step, per-channel mean and (biased) variance `[T, C]` in float32, as `layers.BNTT` computes them."""
    c32 = c_BTHWC.astype(jnp.float32)
    axes = (0, 2, 3)
    mean = c32.mean(axis=axes)
    var = jnp.square(c32 - mean[None, :, None, None]).mean(axis=axes)
    return mean, var


def _bntt_affine(gamma: Array, mean: Array, var: Array, epsilon: float) -> tuple[Array, Array]:
    scale = gamma * jax.lax.rsqrt(var + epsilon)
    return scale, -mean * scale


def _per_step(v_TC: Array, dtype=None) -> Array:
    """`[T, C]` to `[T, 1, 1, 1, C]`: row t broadcasts over one step `[B, H, W, C]`."""
    return v_TC[:, None, None, None, :].astype(dtype or v_TC.dtype)


def _lif_update(v: Array, current: Array, spec: SpikingConvSpec) -> tuple[Array, Array, Array]:
    """One LIF step: `(v_next, x, spikes)` with `x = u / threshold - 1` of the pre-reset membrane u.

    Membranes are float32 whatever the compute dtype (bfloat16 would blur the threshold crossing
    over 20 steps); the convolutions around them take the compute dtype.
    """
    u = spec.leak * v + current
    x = u / spec.threshold - 1.0
    spikes = (x > 0).astype(current.dtype)
    return u - spec.threshold * spikes, x, spikes


def _sweep(step, inputs, out: Array, carry, reverse: bool = False):
    """For t over time: `carry, out[:, t] = step(t, carry, inputs[:, t], out[:, t])`; returns `(carry, out)`.

    `inputs` (`[B, T, ...]` arrays) are only read; `out` is updated in place one step at a time. (A
    buffer a loop reads from but does not carry, XLA copies before it can be carried by another.)
    """
    steps = out.shape[TIME]
    row = lambda a, t: jax.lax.dynamic_index_in_dim(a, t, TIME, keepdims=False)

    def body(i, state):
        carry, out = state
        t = steps - 1 - i if reverse else i
        carry, new_row = step(t, carry, jax.tree_util.tree_map(lambda a: row(a, t), inputs), row(out, t))
        return carry, jax.lax.dynamic_update_index_in_dim(out, new_row.astype(out.dtype), t, TIME)

    return jax.lax.fori_loop(0, steps, body, (carry, out))


def _fresh_buffer(like: Array, dtype=None, after: Array | None = None) -> Array:
    """A zero buffer shaped like `like`, filled only once `after` (default `like`) exists (see `_after`)."""
    return _after(jnp.zeros(like.shape, dtype or like.dtype), like if after is None else after)


def _bntt_step(c_t: Array, scale: Array, shift: Array, t) -> Array:
    """BNTT output of step t in float32, as `layers.BNTT` computes it (scale, shift `[T, 1, 1, 1, C]`)."""
    return c_t.astype(jnp.float32) * scale[t] + shift[t]


def _lif_forward(c_BTHWC: Array, scale: Array, shift: Array, spec: SpikingConvSpec) -> Array:
    """Spikes (in the dtype of c) of BNTT (`c * scale + shift`) and LIF neurons, one sweep over time."""
    scale, shift = _per_step(scale), _per_step(shift)

    def step(t, v, c_t, _):
        v, _, spikes = _lif_update(v, _bntt_step(c_t, scale, shift, t), spec)
        return v, spikes

    zeros = jnp.zeros(_step_shape(c_BTHWC), jnp.float32)
    return _sweep(step, c_BTHWC, _fresh_buffer(c_BTHWC), zeros)[1]


def spiking_conv_eval(x_NHWC: Array, kernel: Array, gamma: Array, mean: Array, var: Array,
                      spec: SpikingConvSpec) -> Array:
    """Spikes `[B * T, H, W, C]` of the layer with given (running) BNTT statistics."""
    c = ops.split_time(ops.conv2d(x_NHWC, kernel, spec.dilation), spec.timesteps)
    scale, shift = _bntt_affine(gamma, mean, var, spec.epsilon)
    return ops.merge_time(_lif_forward(c, scale, shift, spec))


def _code_bits(spec: SpikingConvSpec) -> int:
    """Bits per stored input value (1, 2 or 4), or 0 when the input is stored as is."""
    if spec.input_levels is None:
        return 0
    codes = spec.input_levels * (2 if spec.input_signed else 1) + 1
    return next((bits for bits in (1, 2, 4) if codes <= 2 ** bits), 0)


def _packs(x_NHWC: Array, spec: SpikingConvSpec) -> bool:
    bits = _code_bits(spec)
    return bits > 0 and x_NHWC.shape[-1] % (8 // bits) == 0


def _encode_input(x: Array, spec: SpikingConvSpec) -> Array:
    """The conv input as stored for the backward pass: codes packed into bytes along channels, or as is.

    The packing sums shifted codes over groups of channels; XLA keeps that reduction a fusion of
    its own, so the bytes are what stays in memory (a plain int8 cast would be fused with its decoding).
    """
    if not _packs(x, spec):
        return x
    bits = _code_bits(spec)
    offset = spec.input_levels if spec.input_signed else 0
    codes = (jnp.round(x * spec.input_levels) + offset).astype(jnp.uint8)
    groups = codes.reshape(*x.shape[:-1], -1, 8 // bits)
    shifts = jnp.arange(0, 8, bits, dtype=jnp.uint8)
    return jnp.sum(groups << shifts, axis=-1, dtype=jnp.uint8)


def _decode_input(stored: Array, spec: SpikingConvSpec, dtype) -> Array:
    """Inverse of `_encode_input`, bit-exact: `k / levels` is how the input was computed."""
    if stored.dtype != jnp.uint8:
        return stored
    bits = _code_bits(spec)
    shifts = jnp.arange(0, 8, bits, dtype=jnp.uint8)
    codes = (stored[..., None] >> shifts) & jnp.uint8(2 ** bits - 1)
    k = codes.reshape(*stored.shape[:-1], -1).astype(dtype)
    if spec.input_signed:
        k = k - jnp.array(spec.input_levels, dtype)
    return k if spec.input_levels == 1 else k / jnp.array(spec.input_levels, dtype)


def _recomputes_conv(x_NHWC: Array, spec: SpikingConvSpec) -> bool:
    return spec.remat or x_NHWC.shape[-1] < RECOMPUTE_BELOW_CHANNELS


def _forward(x_NHWC, kernel, gamma, spec):
    c = ops.split_time(ops.conv2d(x_NHWC, kernel, spec.dilation), spec.timesteps)
    mean, var = batch_statistics(c)
    scale, shift = _bntt_affine(gamma, mean, var, spec.epsilon)
    spikes = ops.merge_time(_lif_forward(c, scale, shift, spec))
    return (spikes, mean, var), c


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _spiking_conv_train(x_NHWC: Array, kernel: Array, gamma: Array, spec: SpikingConvSpec):
    return _forward(x_NHWC, kernel, gamma, spec)[0]


def _forward_with_residuals(x_NHWC, kernel, gamma, spec):
    outputs, c = _forward(x_NHWC, kernel, gamma, spec)
    _, mean, var = outputs
    stored_c = None if _recomputes_conv(x_NHWC, spec) else c
    return outputs, (_encode_input(x_NHWC, spec), kernel, gamma, mean, var, stored_c)


def _after(x: Array, anchor: Array) -> Array:
    """`x`, made data-dependent on `anchor` (adds `0 * anchor[0]`, exact for finite anchors).

    XLA on CPU neither keeps `optimization_barrier`s nor delays work it can start early: without
    this it decodes the stored input during the forward pass (holding it in float until the
    backward pass), and merges a recomputed conv with the forward one (holding its output).
    """
    return x + (anchor.reshape(-1)[0] * 0).astype(x.dtype)


def _backward(spec, residuals, cotangents):
    g_spikes = ops.split_time(cotangents[0], spec.timesteps)  # mean and var: zero cotangents (stop_gradient)
    stored_x, kernel, gamma, mean, var, c = residuals
    decode = lambda anchor: _after(_decode_input(stored_x, spec, g_spikes.dtype), anchor)
    conv = lambda x, k: ops.conv2d(x, k, spec.dilation)
    if c is None:
        x = decode(g_spikes)
        c = ops.split_time(conv(x, kernel), spec.timesteps)
        g_c, g_gamma = bntt_lif_backward(c, g_spikes, gamma, mean, var, spec)
    else:  # decode the input only once the sweeps over time are done with their buffers
        g_c, g_gamma = bntt_lif_backward(c, g_spikes, gamma, mean, var, spec)
        x = decode(g_c)
    g_c = ops.merge_time(g_c)
    g_kernel = jax.vjp(lambda k: conv(x, k), kernel)[1](g_c)[0]
    # The input gradient after the kernel's, so that the decoded input is freed before it is allocated.
    g_x = jax.vjp(lambda x: conv(x, _after(kernel, g_kernel)), x)[1](g_c)[0]
    return g_x, g_kernel, g_gamma


_spiking_conv_train.defvjp(_forward_with_residuals, _backward)


def bntt_lif_backward(c: Array, g_spikes: Array, gamma: Array, mean: Array, var: Array,
                      spec: SpikingConvSpec) -> tuple[Array, Array]:
    """Gradients w.r.t. the BNTT input `c` `[B, T, H, W, C]` and the scales gamma, given those w.r.t. the spikes.

    With the reset detached, the membrane gradient obeys `g_u[t] = g_spikes[t] * s'(x_t) / threshold
    + leak * g_u[t + 1]`; a forward sweep recomputes the surrogate terms, a reverse sweep runs the
    recurrence and at each step the batch-norm backward of that step's statistics.
    """
    scale, shift = _bntt_affine(gamma, mean, var, spec.epsilon)
    scale, shift = _per_step(scale), _per_step(shift)
    zeros = jnp.zeros(_step_shape(c), jnp.float32)

    def surrogate_step(t, v, c_t, g_t):
        v, x, _ = _lif_update(v, _bntt_step(c_t, scale, shift, t), spec)
        grad = neurons.surrogate_grad(spec.surrogate, x, spec.surrogate_param)
        return v, (g_t.astype(jnp.float32) * grad) / spec.threshold

    # In place over g_spikes when it is float32 (the buffer is dead afterwards).
    out = g_spikes if g_spikes.dtype == jnp.float32 else _fresh_buffer(g_spikes, jnp.float32)
    _, through_spikes = _sweep(surrogate_step, c, out, zeros)

    count = c.size // (c.shape[TIME] * c.shape[-1])
    axes = (0, 1, 2)  # one step's B, H, W
    mean, rstd, gamma_ = _per_step(mean), _per_step(jax.lax.rsqrt(var + spec.epsilon)), _per_step(gamma)

    def bntt_step(t, carry, inputs, _):
        term, c_t = inputs
        g_u_next, g_gamma = carry
        g_u = term + spec.leak * g_u_next
        c_hat = (c_t.astype(jnp.float32) - mean[t]) * rstd[t]
        sum_g = g_u.sum(axis=axes, keepdims=True)
        sum_g_c_hat = (g_u * c_hat).sum(axis=axes, keepdims=True)
        g_c = (rstd[t] * gamma_[t]) * (g_u - sum_g / count - c_hat * (sum_g_c_hat / count))
        g_gamma = jax.lax.dynamic_update_index_in_dim(g_gamma, sum_g_c_hat.reshape(-1), t, 0)
        return (g_u, g_gamma), g_c

    (_, g_gamma), g_c = _sweep(bntt_step, (through_spikes, c), _fresh_buffer(c, after=through_spikes),
                               (zeros, jnp.zeros_like(gamma)), reverse=True)
    return g_c, g_gamma


def spiking_conv_train(x_NHWC: Array, kernel: Array, gamma: Array, spec: SpikingConvSpec
                       ) -> tuple[Array, Array, Array]:
    """Spikes `[B * T, H, W, C]` of the layer in training, and its BNTT batch mean and variance `[T, C]`.

    `x_NHWC` is `[B * T, H, W, C_in]` (time folded as by `ops.fold_time`); `kernel` `[k, k, C_in, C]`; `gamma` `[T, C]`.
    The statistics are for the running averages and carry no gradient.
    """
    spikes, mean, var = _spiking_conv_train(x_NHWC, kernel, gamma, spec)
    return spikes, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
