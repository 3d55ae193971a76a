"""Leaky integrate-and-fire neurons with surrogate gradients (SPEC §2).

Everything here is a pure function of arrays: it works under `jit`, `vmap` and `grad`, in float32
and bfloat16. The spike is a Heaviside step on ``x = u / threshold - 1`` whose backward pass is a
surrogate derivative chosen by name:

    linear        scale * max(0, 1 - |x|)        (Eq. 6; scale 0.3 as in the released code)
    fast_sigmoid  1 / (slope * |x| + 1)^2        (slope 100)
    exp           exp(-rate * |x|)               (rate 10)
    pass_through  1

The neuron itself (Eqs. 2, 3 and the soft reset):

    u_t = leak * u_{t-1} + I_t;   o_t = H(u_t / threshold - 1);   u_t <- u_t - threshold * o_t
"""

from __future__ import annotations

import functools
from typing import Callable, Union

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


def surrogate_grad(name: str, x: Array, param: float | None = None) -> Array:
    """The surrogate derivative d spike / d x of surrogate `name` at `x`."""
    default, grad = _lookup(name)
    return grad(x, default if param is None else param).astype(x.dtype)


def _lookup(name: str):
    try:
        return _SURROGATE_GRADS[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}") from None


@functools.lru_cache(maxsize=None)
def spike_function(name: str = "linear", param: float | None = None) -> SpikeFn:
    """Heaviside step `x > 0` (strict) whose gradient is the surrogate `name`.

    `param` is the surrogate's hyper-parameter (the scale of `linear`, the slope of
    `fast_sigmoid`, the rate of `exp`); None takes the default. The result is cached, so the same
    name and parameter always give the same function object (one trace under `jit`).
    """
    _lookup(name)

    @jax.custom_vjp
    def spike(x):
        return (x > 0).astype(x.dtype)

    def forward(x):
        return spike(x), x

    def backward(x, g):
        return (g * surrogate_grad(name, x, param),)

    spike.defvjp(forward, backward)
    return spike


Surrogate = Union[str, SpikeFn]


def _as_spike_fn(surrogate: Surrogate) -> SpikeFn:
    return spike_function(surrogate) if isinstance(surrogate, str) else surrogate


def lif_step(
    u: Array,
    current: Array,
    *,
    leak: float = 0.99,
    threshold: float = 1.0,
    surrogate: Surrogate = "linear",
    detach_reset: bool = True,
) -> tuple[Array, Array]:
    """One LIF update with soft reset: returns `(u_next, spikes)`.

    `surrogate` is a name from `SURROGATES` or a function from `spike_function`. With
    `detach_reset` the reset term carries no gradient, as in the authors' code.
    """
    u = leak * u + current
    spikes = _as_spike_fn(surrogate)(u / threshold - 1.0)
    reset = jax.lax.stop_gradient(spikes) if detach_reset else spikes
    return u - threshold * reset, spikes


def lif_scan(
    currents: Array,
    *,
    leak: float = 0.99,
    threshold: float = 1.0,
    surrogate: Surrogate = "linear",
    detach_reset: bool = True,
    u0: Array | None = None,
) -> tuple[Array, Array]:
    """Runs `lif_step` over the leading (time) axis of `currents`: returns `(spikes, u_final)`.

    The membrane starts at `u0` (zeros by default) and `spikes` has the shape of `currents`.
    """
    spike_fn = _as_spike_fn(surrogate)
    step = functools.partial(
        lif_step, leak=leak, threshold=threshold, surrogate=spike_fn, detach_reset=detach_reset
    )
    u0 = jnp.zeros_like(currents[0]) if u0 is None else u0.astype(currents.dtype)
    u_final, spikes = jax.lax.scan(step, u0, currents)
    return spikes, u_final
