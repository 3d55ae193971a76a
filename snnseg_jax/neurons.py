"""Leaky integrate-and-fire neurons with surrogate gradients, and the BNTT that feeds them.

Everything here is a pure function of arrays: it works under `jit`, `vmap` and `grad`, on anything
`jnp` takes (Python scalars, numpy arrays, float32 or bfloat16), and keeps the input's dtype. Time
is the leading axis (the package's time layout, see `ops`): `lif_scan` takes currents `[T, ...]`,
the BNTT functions `[T, B, H, W, C]`.

The neuron (Eqs. 2, 3 of the paper, soft reset), per step t:

    u_t = leak * u_{t-1} + I_t;   o_t = H(u_t / threshold - 1);   u_t <- u_t - threshold * o_t

The spike is a Heaviside step on ``x = u / threshold - 1`` (strict: x = 0 does not fire) whose
backward pass is a surrogate derivative chosen by name:

    linear        scale * max(0, 1 - |x|)        (Eq. 6; scale 0.3 as in the authors' code)
    fast_sigmoid  1 / (slope * |x| + 1)^2        (slope 100)
    exp           exp(-rate * |x|)               (rate 10)
    pass_through  1

Eq. 6 prints the linear surrogate with scale 1; the authors' released code uses 0.3, the setting
that produced the published numbers, so 0.3 is the default here (`surrogate_param` changes it).

BNTT (Batch Normalization Through Time) normalizes the input current of each step t with its own
batch statistics (running averages at evaluation) and scales it by its own gamma_t, with no shift.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
SpikeFn = Callable[[Array], Array]

# name -> (default hyper-parameter, derivative of the spike w.r.t. x given that parameter)
_SURROGATE_GRADS: dict[str, tuple[float, Callable[[Array, float], Array]]] = {
    "linear": (0.3, lambda x, scale: scale * jnp.maximum(0.0, 1.0 - jnp.abs(x))),
    "fast_sigmoid": (100.0, lambda x, slope: 1.0 / jnp.square(slope * jnp.abs(x) + 1.0)),
    "exp": (10.0, lambda x, rate: jnp.exp(-rate * jnp.abs(x))),
    "pass_through": (1.0, lambda x, _: jnp.ones_like(x)),
}
SURROGATES = tuple(_SURROGATE_GRADS)


@dataclasses.dataclass(frozen=True)
class Neuron:
    """The fixed (untrained) settings of a spiking layer: its LIF neurons and their BNTT.

    `surrogate_param` None takes the surrogate's default. BNTT running averages move by
    `1 - bntt_momentum` (Flax's convention; PyTorch's momentum 0.1) towards each batch's mean and
    unbiased variance (`running_statistics`).
    """

    leak: float = 0.99
    threshold: float = 1.0
    surrogate: str = "linear"
    surrogate_param: float | None = None
    bntt_epsilon: float = 1e-4
    bntt_momentum: float = 0.9
    floor: float | None = None  # the lowest membrane after each step, in thresholds (None: unbounded)

    def __post_init__(self):
        _lookup(self.surrogate)

    @property
    def spike_fn(self) -> SpikeFn:
        return spike_function(self.surrogate, self.surrogate_param)


def surrogate_grad(name: str, x: Array, param: float | None = None) -> Array:
    """The surrogate derivative d spike / d x of surrogate `name` at `x`, in the dtype of `x`."""
    default, grad = _lookup(name)
    x = jnp.asarray(x)
    return grad(x, default if param is None else param).astype(x.dtype)


def _lookup(name: str):
    try:
        return _SURROGATE_GRADS[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}") from None


def heaviside(x: Array) -> Array:
    """The spike of the forward pass: 1 where `x > 0` (strict), else 0, in the dtype of `x`."""
    x = jnp.asarray(x)
    return (x > 0).astype(x.dtype)


@functools.cache
def spike_function(name: str = "linear", param: float | None = None) -> SpikeFn:
    """`heaviside` whose gradient is the surrogate `name`.

    `param` is the surrogate's hyper-parameter (the scale of `linear`, the slope of
    `fast_sigmoid`, the rate of `exp`); None takes the default. The result is cached, so the same
    name and parameter always give the same function object (one trace under `jit`).
    """
    _lookup(name)

    @jax.custom_vjp
    def spike(x):
        return heaviside(x)

    def forward(x):
        return spike(x), jnp.asarray(x)

    def backward(x, g):
        return (g * surrogate_grad(name, x, param),)

    spike.defvjp(forward, backward)
    return spike


Surrogate = str | SpikeFn


def _as_spike_fn(surrogate: Surrogate) -> SpikeFn:
    return spike_function(surrogate) if isinstance(surrogate, str) else surrogate


def lif_update(
    u: Array,
    current: Array,
    *,
    leak: float,
    threshold: float,
    spike_fn: SpikeFn = heaviside,
    detach_reset: bool = True,
    floor: float | None = None,
) -> tuple[Array, Array, Array]:
    """One LIF step: `(u_next, spikes, x)`, with `x = u / threshold - 1` of the membrane before the reset.

    The one definition of the neuron; `lif_step` and the fused spiking layer both call it. With a
    `floor` (in thresholds, <= 0) the membrane after the reset is at least `floor * threshold`, and
    no gradient flows through a step where it was raised to it (None: unbounded, the paper's neuron).
    """
    u = leak * jnp.asarray(u) + current
    x = u / threshold - 1.0
    spikes = spike_fn(x)
    reset = jax.lax.stop_gradient(spikes) if detach_reset else spikes
    u_next = u - threshold * reset
    if floor is not None:
        u_next = jnp.where(u_next > floor * threshold, u_next, floor * threshold).astype(u_next.dtype)
    return u_next, spikes, x


def lif_step(
    u: Array,
    current: Array,
    *,
    leak: float = 0.99,
    threshold: float = 1.0,
    surrogate: Surrogate = "linear",
    detach_reset: bool = True,
    floor: float | None = None,
) -> tuple[Array, Array]:
    """One LIF update with soft reset: returns `(u_next, spikes)`.

    `surrogate` is a name from `SURROGATES` or a function from `spike_function`. With
    `detach_reset` the reset term carries no gradient, as in the authors' code; `floor`: see `lif_update`.
    """
    u_next, spikes, _ = lif_update(
        u,
        current,
        leak=leak,
        threshold=threshold,
        spike_fn=_as_spike_fn(surrogate),
        detach_reset=detach_reset,
        floor=floor,
    )
    return u_next, spikes


def lif_scan(
    currents: Array,
    *,
    leak: float = 0.99,
    threshold: float = 1.0,
    surrogate: Surrogate = "linear",
    detach_reset: bool = True,
    u0: Array | None = None,
    floor: float | None = None,
) -> tuple[Array, Array]:
    """Runs `lif_step` over the leading (time) axis of `currents`: returns `(spikes, u_final)`.

    The membrane starts at `u0` (zeros by default) and `spikes` has the shape of `currents`.
    """
    currents = jnp.asarray(currents)
    step = functools.partial(
        lif_step,
        leak=leak,
        threshold=threshold,
        surrogate=_as_spike_fn(surrogate),
        detach_reset=detach_reset,
        floor=floor,
    )
    u0 = jnp.zeros_like(currents[0]) if u0 is None else jnp.asarray(u0).astype(currents.dtype)
    u_final, spikes = jax.lax.scan(step, u0, currents)
    return spikes, u_final


# ---------------------------------------------------------------- BNTT


def bntt_statistics(currents: Array, time_axis: int = 0) -> tuple[Array, Array]:
    """Per-step, per-channel batch mean and (biased) variance `[T, C]`, in float32.

    `currents` is `[..., C]` with time on `time_axis` (0 for `[T, B, H, W, C]`); every other axis
    but the channels is reduced.
    """
    c32 = jnp.asarray(currents).astype(jnp.float32)
    axes = tuple(a for a in range(c32.ndim - 1) if a != time_axis % c32.ndim)
    mean = c32.mean(axis=axes, keepdims=True)
    var = jnp.square(c32 - mean).mean(axis=axes)
    return jnp.squeeze(mean, axes), var


def bntt_affine(gamma: Array, mean: Array, var: Array, epsilon: float) -> tuple[Array, Array]:
    """BNTT as `currents * scale + shift` per step and channel: `(scale, shift)`, each `[T, C]`."""
    scale = gamma * jax.lax.rsqrt(var + epsilon)
    return scale, -mean * scale


def bntt_normalize(currents: Array, scale: Array, shift: Array) -> Array:
    """BNTT's output `currents * scale + shift` in float32, `bntt_affine`'s scale and shift broadcast
    to the currents: the one place the layers, the fused layer and the step-wise layer apply BNTT."""
    return currents.astype(jnp.float32) * scale + shift


def running_average(average: Array, batch_value: Array, momentum: float) -> Array:
    """The running average after one more batch: `momentum * average + (1 - momentum) * batch_value`."""
    return momentum * average + (1 - momentum) * batch_value


def unbiased(var: Array, count: int) -> Array:
    """The unbiased variance `var * n / (n - 1)` of a biased variance `var` over `count` values (`var` if one)."""
    return var * (count / (count - 1)) if count > 1 else var


def running_statistics(
    ra_mean: Array, ra_var: Array, mean: Array, var: Array, count: int, momentum: float
) -> tuple[Array, Array]:
    """The running mean and variance after one more batch whose statistics `mean` and biased `var`
    are each over `count` values: the variance moves towards the unbiased one, as in PyTorch's
    `BatchNorm2d`; the batch itself is normalized with the biased one."""
    return running_average(ra_mean, mean, momentum), running_average(ra_var, unbiased(var, count), momentum)
