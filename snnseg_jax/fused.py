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

Tensors are time-folded batch-major (the networks' inner layout, see `ops`; viewed as
`[B, T, H, W, C]` without a copy), so a batch split over devices splits every tensor here too; the
sweeps over time step along axis 1. They write their results in place into a buffer a `fori_loop` carries,
rather than stacking a `scan`'s outputs: XLA zero-fills a fresh buffer for every stacked output and,
on CPU, schedules those fills early, where they raise the peak memory.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from snnseg_jax import formulations, neurons, ops
from snnseg_jax.formulations import Tuning

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class InputValues:
    """Which values a layer's input takes: any float (`levels` None), or `k / levels` for an integer
    k in [0, levels] ([-levels, levels] if `signed`). The backward pass stores such an input bit-packed."""

    levels: int | None = None
    signed: bool = False

    def pooled(self) -> InputValues:
        """The values after `ops.avg_pool`: sums of 9 of them divided by 9."""
        return InputValues(None if self.levels is None else 9 * self.levels, self.signed)


ANALOG = InputValues()
SPIKES = InputValues(1)
SIGNED_SPIKES = InputValues(1, signed=True)  # the Poisson-coded input


@dataclasses.dataclass(frozen=True)
class SpikingConvSpec:
    """Static settings of one spiking layer."""

    timesteps: int
    dilation: int = 1
    input_values: InputValues = ANALOG
    neuron: neurons.Neuron = neurons.Neuron()
    remat: bool = False
    tuning: Tuning = formulations.PLAIN


TIME = 1  # the time axis of `[B, T, H, W, C]`


def _step_shape(x_BTHWC: Array) -> tuple[int, ...]:
    """The shape of one step `[B, H, W, C]`."""
    return x_BTHWC.shape[:TIME] + x_BTHWC.shape[TIME + 1 :]


def _per_step(v_TC: Array, dtype=None) -> Array:
    """`[T, C]` to `[T, 1, 1, 1, C]`: row t broadcasts over one step `[B, H, W, C]`."""
    return v_TC[:, None, None, None, :].astype(dtype or v_TC.dtype)


def _lif_update(v: Array, current: Array, spec: SpikingConvSpec) -> tuple[Array, Array, Array]:
    """`neurons.lif_update` with the layer's neuron, forward only: `(v_next, spikes, x)`.

    Membranes are float32 whatever the compute dtype (bfloat16 would blur the threshold crossing
    over 20 steps); the convolutions around them take the compute dtype.
    """
    n = spec.neuron
    return neurons.lif_update(v, current, leak=n.leak, threshold=n.threshold, floor=n.floor)


def _sweep(step, inputs, out, carry, reverse: bool = False):
    """For t over time: `carry, out[:, t] = step(t, carry, inputs[:, t], out[:, t])`; returns `(carry, out)`.

    `inputs` (`[B, T, ...]` arrays) are only read; `out` (an array, or a tuple of them that `step`
    writes together) is updated in place one step at a time. (A buffer a loop reads from but does not
    carry, XLA copies before it can be carried by another.)
    """
    steps = jax.tree.leaves(out)[0].shape[TIME]
    rows = lambda arrays, t: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, t, TIME, keepdims=False), arrays)

    def body(i, state):
        carry, out = state
        t = steps - 1 - i if reverse else i
        carry, new_rows = step(t, carry, rows(inputs, t), rows(out, t))
        write = lambda buffer, new: jax.lax.dynamic_update_index_in_dim(buffer, new.astype(buffer.dtype), t, TIME)
        return carry, jax.tree.map(write, out, new_rows)

    return jax.lax.fori_loop(0, steps, body, (carry, out))


def _fresh_buffer(like: Array, spec: SpikingConvSpec, dtype=None, after: Array | None = None) -> Array:
    """A zero buffer shaped like `like`, filled only once `after` (default `like`) exists
    (`formulations.after`: XLA on CPU would otherwise zero-fill it early, raising the peak memory)."""
    return formulations.after(jnp.zeros(like.shape, dtype or like.dtype), like if after is None else after, spec.tuning)


def _bntt_step(c_t: Array, scale: Array, shift: Array, t) -> Array:
    """BNTT output of step t in float32 (scale, shift `[T, 1, 1, 1, C]`)."""
    return neurons.bntt_normalize(c_t, scale[t], shift[t])


def _initial_membrane(c_BTHWC: Array, membrane: Array | None) -> Array:
    """The membrane `[B, H, W, C]` float32 before the first step: `membrane`, or zeros."""
    return jnp.zeros(_step_shape(c_BTHWC), jnp.float32) if membrane is None else membrane.astype(jnp.float32)


def _lif_forward(
    c_BTHWC: Array, scale: Array, shift: Array, spec: SpikingConvSpec, membrane: Array | None
) -> tuple[Array, Array]:
    """Spikes (in the dtype of c) of BNTT (`c * scale + shift`) and LIF neurons starting from
    `membrane` (None: zero), one sweep over time; and the membrane after the last step."""
    scale, shift = _per_step(scale), _per_step(shift)

    def step(t, v, c_t, _):
        v, spikes, _ = _lif_update(v, _bntt_step(c_t, scale, shift, t), spec)
        return v, spikes

    final, spikes = _sweep(step, c_BTHWC, _fresh_buffer(c_BTHWC, spec), _initial_membrane(c_BTHWC, membrane))
    return spikes, final


def spiking_conv_eval(
    x_NHWC: Array,
    kernel: Array,
    gamma: Array,
    mean: Array,
    var: Array,
    spec: SpikingConvSpec,
    membrane: Array | None = None,
) -> tuple[Array, Array]:
    """Spikes `[B * T, H, W, C]` of the layer with given (running) BNTT statistics, its neurons starting
    from `membrane` `[B, H, W, C]` (None: zero); and their membrane after the last step (float32)."""
    c = ops._split_time(ops.conv2d(x_NHWC, kernel, spec.dilation, spec.tuning), spec.timesteps)
    scale, shift = neurons.bntt_affine(gamma, mean, var, spec.neuron.bntt_epsilon)
    spikes, final = _lif_forward(c, scale, shift, spec, membrane)
    return ops._merge_time(spikes), final


def _code_bits(spec: SpikingConvSpec) -> int:
    """Bits per stored input value (1, 2 or 4), or 0 when the input is stored as is."""
    values = spec.input_values
    if values.levels is None:
        return 0
    codes = values.levels * (2 if values.signed else 1) + 1
    return next((bits for bits in (1, 2, 4) if codes <= 2**bits), 0)


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
    levels, signed = spec.input_values.levels, spec.input_values.signed
    codes = (jnp.round(x * levels) + (levels if signed else 0)).astype(jnp.uint8)
    groups = codes.reshape(*x.shape[:-1], -1, 8 // bits)
    shifts = jnp.arange(0, 8, bits, dtype=jnp.uint8)
    return jnp.sum(groups << shifts, axis=-1, dtype=jnp.uint8)


def _decode_input(stored: Array, spec: SpikingConvSpec, dtype) -> Array:
    """Inverse of `_encode_input`, bit-exact: `k / levels` is how the input was computed."""
    if stored.dtype != jnp.uint8:
        return stored
    bits = _code_bits(spec)
    shifts = jnp.arange(0, 8, bits, dtype=jnp.uint8)
    codes = (stored[..., None] >> shifts) & jnp.uint8(2**bits - 1)
    k = codes.reshape(*stored.shape[:-1], -1).astype(dtype)
    levels = spec.input_values.levels
    if spec.input_values.signed:
        k = k - jnp.array(levels, dtype)
    return k if levels == 1 else k / jnp.array(levels, dtype)


def _recomputes_conv(x_NHWC: Array, spec: SpikingConvSpec) -> bool:
    return spec.remat or x_NHWC.shape[-1] < spec.tuning.recompute_conv_below_channels


def _forward(x_NHWC, kernel, gamma, membrane, spec):
    c = ops._split_time(ops.conv2d(x_NHWC, kernel, spec.dilation, spec.tuning), spec.timesteps)
    mean, var = neurons.bntt_statistics(c, time_axis=TIME)
    scale, shift = neurons.bntt_affine(gamma, mean, var, spec.neuron.bntt_epsilon)
    spikes, final = _lif_forward(c, scale, shift, spec, membrane)
    return (ops._merge_time(spikes), mean, var, final), c


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _spiking_conv_train(x_NHWC: Array, kernel: Array, gamma: Array, membrane: Array | None, spec: SpikingConvSpec):
    return _forward(x_NHWC, kernel, gamma, membrane, spec)[0]


def _forward_with_residuals(x_NHWC, kernel, gamma, membrane, spec):
    outputs, c = _forward(x_NHWC, kernel, gamma, membrane, spec)
    _, mean, var, _ = outputs
    stored_c = None if _recomputes_conv(x_NHWC, spec) else c
    return outputs, (_encode_input(x_NHWC, spec), kernel, gamma, mean, var, stored_c, membrane)


def _backward(spec, residuals, cotangents):
    # mean, var and the final membrane: zero cotangents (stop_gradient in `spiking_conv_train`)
    g_spikes = ops._split_time(cotangents[0], spec.timesteps)
    stored_x, kernel, gamma, mean, var, c, membrane = residuals
    after = lambda x, anchor: formulations.after(x, anchor, spec.tuning)
    decode = lambda anchor: after(_decode_input(stored_x, spec, g_spikes.dtype), anchor)
    conv = lambda x, k: ops.conv2d(x, k, spec.dilation, spec.tuning)
    if c is None:
        x = decode(g_spikes)
        c = ops._split_time(conv(x, kernel), spec.timesteps)
        g_c, g_gamma = bntt_lif_backward(c, g_spikes, gamma, mean, var, spec, membrane)
    else:  # decode the input only once the sweeps over time are done with their buffers
        g_c, g_gamma = bntt_lif_backward(c, g_spikes, gamma, mean, var, spec, membrane)
        x = decode(g_c)
    g_c = ops._merge_time(g_c)
    g_kernel = jax.vjp(lambda k: conv(x, k), kernel)[1](g_c)[0]
    # The input gradient after the kernel's, so that the decoded input is freed before it is allocated.
    g_x = jax.vjp(lambda x: conv(x, after(kernel, g_kernel)), x)[1](g_c)[0]
    g_membrane = None if membrane is None else jnp.zeros_like(membrane)
    return g_x, g_kernel, g_gamma, g_membrane


_spiking_conv_train.defvjp(_forward_with_residuals, _backward)


def bntt_lif_backward(
    c: Array,
    g_spikes: Array,
    gamma: Array,
    mean: Array,
    var: Array,
    spec: SpikingConvSpec,
    membrane: Array | None = None,
) -> tuple[Array, Array]:
    """Gradients w.r.t. the BNTT input `c` `[B, T, H, W, C]` and the scales gamma, given those w.r.t. the
    spikes, for neurons that started from `membrane` (None: zero; a constant, no gradient flows into it).

    With the reset detached, the membrane gradient obeys `g_u[t] = g_spikes[t] * s'(x_t) / threshold
    + leak * g_u[t + 1]`; a forward sweep recomputes the surrogate terms, a reverse sweep runs the
    recurrence and at each step the batch-norm backward of that step's statistics.
    """
    n = spec.neuron
    scale, shift = neurons.bntt_affine(gamma, mean, var, n.bntt_epsilon)
    scale, shift = _per_step(scale), _per_step(shift)
    zeros = jnp.zeros(_step_shape(c), jnp.float32)

    def surrogate_step(t, v, c_t, out_t):
        v, _, x = _lif_update(v, _bntt_step(c_t, scale, shift, t), spec)
        grad = neurons.surrogate_grad(n.surrogate, x, n.surrogate_param)
        g_t = out_t if n.floor is None else out_t[0]
        term = (g_t.astype(jnp.float32) * grad) / n.threshold
        if n.floor is None:
            return v, term
        # With a floor, the gradient stops at every step where the membrane was raised to it: 0 there.
        return v, (term, (v > n.floor * n.threshold).astype(jnp.float32))

    # In place over g_spikes when it is float32 (the buffer is dead afterwards).
    out = g_spikes if g_spikes.dtype == jnp.float32 else _fresh_buffer(g_spikes, spec, jnp.float32)
    if n.floor is not None:
        out = (out, _fresh_buffer(c, spec, jnp.float32))
    _, swept = _sweep(surrogate_step, c, out, _initial_membrane(c, membrane))
    through_spikes, kept = (swept, None) if n.floor is None else swept
    count = c.size // (c.shape[TIME] * c.shape[-1])
    axes = (0, 1, 2)  # one step's B, H, W
    mean, rstd, gamma_ = _per_step(mean), _per_step(jax.lax.rsqrt(var + n.bntt_epsilon)), _per_step(gamma)

    def bntt_step(t, carry, inputs, _):
        term, c_t, *kept_t = inputs
        g_u_next, g_gamma = carry
        g_u = term + n.leak * (g_u_next if kept is None else g_u_next * kept_t[0])
        c_hat = (c_t.astype(jnp.float32) - mean[t]) * rstd[t]
        sum_g = g_u.sum(axis=axes, keepdims=True)
        sum_g_c_hat = (g_u * c_hat).sum(axis=axes, keepdims=True)
        g_c = (rstd[t] * gamma_[t]) * (g_u - sum_g / count - c_hat * (sum_g_c_hat / count))
        g_gamma = jax.lax.dynamic_update_index_in_dim(g_gamma, sum_g_c_hat.reshape(-1), t, 0)
        return (g_u, g_gamma), g_c

    (_, g_gamma), g_c = _sweep(
        bntt_step,
        (through_spikes, c) if kept is None else (through_spikes, c, kept),
        _fresh_buffer(c, spec, after=through_spikes),
        (zeros, jnp.zeros_like(gamma)),
        reverse=True,
    )
    return g_c, g_gamma


def spiking_conv_train(
    x_NHWC: Array, kernel: Array, gamma: Array, spec: SpikingConvSpec, membrane: Array | None = None
) -> tuple[Array, Array, Array, Array]:
    """Spikes `[B * T, H, W, C]` of the layer in training, its BNTT batch mean and biased variance
    `[T, C]`, and the membrane `[B, H, W, C]` (float32) after the last step.

    `x_NHWC` is `[B * T, H, W, C_in]` (time folded, see `ops`); `kernel` `[k, k, C_in, C]`; `gamma` `[T, C]`;
    the neurons start from `membrane` `[B, H, W, C]` (None: zero). The statistics are for the running
    averages; they, the starting and the final membrane carry no gradient (training on streams cuts
    the gradient between windows: truncated backpropagation through time).
    """
    membrane = None if membrane is None else jax.lax.stop_gradient(membrane)
    spikes, mean, var, final = _spiking_conv_train(x_NHWC, kernel, gamma, membrane, spec)
    return spikes, *(jax.lax.stop_gradient(v) for v in (mean, var, final))
