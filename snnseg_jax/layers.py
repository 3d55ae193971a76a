"""Flax Linen building blocks: convolutions, BNTT and the conv-norm-activation unit.

Activations travel as `[T * B, H, W, C]` with time folded into the batch, time-major (row
`t * B + b`), so every stateless op runs once over all steps; only the LIF recurrence unfolds time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnseg_jax import neurons, ops

Array = jax.Array

# Xavier-uniform with gain 2: variance scale gain^2 = 4 over the average fan.
xavier_gain2 = nn.initializers.variance_scaling(4.0, "fan_avg", "uniform")


def fold_time(x_TB: Array) -> Array:
    """`[T, B, ...]` to `[T * B, ...]`."""
    return x_TB.reshape(-1, *x_TB.shape[2:])


def unfold_time(x_N: Array, timesteps: int) -> Array:
    """`[T * B, ...]` to `[T, B, ...]`."""
    return x_N.reshape(timesteps, -1, *x_N.shape[1:])


class Conv(nn.Module):
    """Stride-1 'same' convolution (or 1x1), Xavier gain-2 kernel, optional zero-initialized bias."""

    features: int
    kernel_size: int = 3
    dilation: int = 1
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", xavier_gain2, (k, k, x_NHWC.shape[-1], self.features))
        y = ops.conv2d(x_NHWC.astype(self.dtype), kernel, self.dilation)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


class ConvTransposeUp(nn.Module):
    """3x3 stride-2 transposed conv without bias (n -> 2n + 1), then an exact bilinear resize to 2n."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: Array) -> Array:
        kernel = self.param("kernel", xavier_gain2, (3, 3, x_NHWC.shape[-1], self.features))
        y = ops.conv_transpose_stride2(x_NHWC.astype(self.dtype), kernel)
        _, h, w, _ = x_NHWC.shape
        return ops.resize_bilinear(y, 2 * h, 2 * w)


class BNTT(nn.Module):
    """Batch Normalization Through Time: per-step batch statistics and scales, no shift.

    Input `[T, B, H, W, C]`. Step t is normalized with its own batch statistics in training and its
    own running averages at evaluation, then scaled by its own per-channel gamma_t.
    """

    timesteps: int
    momentum: float = 0.9
    epsilon: float = 1e-4

    @nn.compact
    def __call__(self, x_TBHWC: Array, train: bool) -> Array:
        t, c = x_TBHWC.shape[0], x_TBHWC.shape[-1]
        if t != self.timesteps:
            raise ValueError(f"BNTT has {self.timesteps} time steps but the input has {t}")
        gamma = self.param("scale", nn.initializers.ones, (t, c))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (t, c), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (t, c), jnp.float32)
        if train:
            x32 = x_TBHWC.astype(jnp.float32)
            mean = x32.mean(axis=(1, 2, 3))
            var = jnp.square(x32 - mean[:, None, None, None]).mean(axis=(1, 2, 3))
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        else:
            mean, var = ra_mean.value, ra_var.value
        scale = gamma * jax.lax.rsqrt(var + self.epsilon)
        shift = -mean * scale
        dtype = x_TBHWC.dtype
        return x_TBHWC * scale[:, None, None, None].astype(dtype) + shift[:, None, None, None].astype(dtype)


@dataclasses.dataclass(frozen=True)
class NeuronParams:
    """Fixed (untrained) LIF settings; `surrogate_param` None takes the surrogate's default."""

    leak: float = 0.99
    threshold: float = 1.0
    surrogate: str = "linear"
    surrogate_param: float | None = None


class LIF(nn.Module):
    """LIF neurons over time-folded currents `[T * B, ...]`; returns spikes of the same shape."""

    timesteps: int
    neuron: NeuronParams = NeuronParams()

    @nn.compact
    def __call__(self, currents_N: Array) -> Array:
        n = self.neuron
        spikes, _ = neurons.lif_scan(
            unfold_time(currents_N, self.timesteps), leak=n.leak, threshold=n.threshold,
            surrogate=neurons.spike_function(n.surrogate, n.surrogate_param),
        )
        return fold_time(spikes)


class Unit(nn.Module):
    """Conv, then BNTT and LIF neurons (spiking) or BatchNorm and ReLU (ANN)."""

    features: int
    kernel_size: int = 3
    dilation: int = 1
    spiking: bool = True
    timesteps: int = 1
    neuron: NeuronParams = NeuronParams()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: Array, train: bool) -> Array:
        y = Conv(self.features, self.kernel_size, self.dilation, dtype=self.dtype, name="conv")(x_NHWC)
        if not self.spiking:
            y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, name="bn")(y)
            return nn.relu(y)
        y = BNTT(self.timesteps, name="bntt")(unfold_time(y, self.timesteps), train)
        return LIF(self.timesteps, self.neuron, name="lif")(fold_time(y))
