"""Flax Linen building blocks: convolutions, BNTT and the conv-norm-activation unit.

Activations travel as `[B * T, H, W, C]` with time folded into the batch, batch-major (row
`b * T + t`), so every stateless op runs once over all steps, and a split of the batch over devices
splits every activation; only BNTT statistics and the LIF recurrence unfold time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnseg_jax import fused, neurons, ops
from snnseg_jax.ops import fold_time, unfold_time

Array = jax.Array


def xavier_gain2(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """Xavier-uniform with gain 2 for a `[k, k, C_in, C_out]` kernel: U(-a, a), a^2 = 3 * 4 / fan_avg.

    The values of `nn.initializers.variance_scaling(4.0, "fan_avg", "uniform")`, drawn flat and
    reshaped: under `jax_threefry_partitionable` the draw is elementwise in the flat index, and XLA
    compiles a 1-D draw in a fraction of the time of a 4-D one (about 0.5 s per kernel shape on CPU).
    """
    receptive = math.prod(shape[:-2])
    fan_avg = (shape[-2] + shape[-1]) * receptive / 2
    bound = jnp.sqrt(3 * jnp.array(4.0 / fan_avg, dtype))
    return (jax.random.uniform(key, (math.prod(shape),), dtype, -1) * bound).reshape(shape)


def conv_kernel(module: nn.Module, kernel_size: int, in_channels: int, features: int) -> Array:
    """Declares `module`'s conv parameter "kernel" `[k, k, C_in, C_out]` (Xavier gain 2)."""
    return module.param("kernel", xavier_gain2, (kernel_size, kernel_size, in_channels, features))


def bntt_variables(module: nn.Module, timesteps: int, channels: int):
    """Declares `module`'s BNTT scales gamma `[T, C]` and running mean and variance; returns all three."""
    gamma = module.param("scale", nn.initializers.ones, (timesteps, channels))
    ra_mean = module.variable("batch_stats", "mean", jnp.zeros, (timesteps, channels), jnp.float32)
    ra_var = module.variable("batch_stats", "var", jnp.ones, (timesteps, channels), jnp.float32)
    return gamma, ra_mean, ra_var


def update_running_average(variable, batch_value: Array, momentum: float) -> None:
    variable.value = momentum * variable.value + (1 - momentum) * batch_value


class Conv(nn.Module):
    """Stride-1 'same' convolution (or 1x1), Xavier gain-2 kernel, optional zero-initialized bias."""

    features: int
    kernel_size: int = 3
    dilation: int = 1
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: Array) -> Array:
        kernel = conv_kernel(self, self.kernel_size, x_NHWC.shape[-1], self.features)
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
        gamma, ra_mean, ra_var = bntt_variables(self, t, c)
        if train:
            x32 = x_TBHWC.astype(jnp.float32)
            mean = x32.mean(axis=(1, 2, 3))
            var = jnp.square(x32 - mean[:, None, None, None]).mean(axis=(1, 2, 3))
            if not self.is_initializing():
                update_running_average(ra_mean, mean, self.momentum)
                update_running_average(ra_var, var, self.momentum)
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
    """LIF neurons over time-folded currents `[B * T, ...]`; returns spikes of the same shape.

    A fused `Unit` computes its neurons' spikes itself and passes them as `fused_spikes` (with no
    currents): they are returned as given, so that every layer's spikes are this module's output
    (for `capture_intermediates`, spike rates) whichever way they were computed.
    """

    timesteps: int
    neuron: NeuronParams = NeuronParams()

    @nn.compact
    def __call__(self, currents_N: Array | None, fused_spikes: Array | None = None) -> Array:
        if fused_spikes is not None:
            return fused_spikes
        n = self.neuron
        spikes, _ = neurons.lif_scan(
            unfold_time(currents_N, self.timesteps), leak=n.leak, threshold=n.threshold,
            surrogate=neurons.spike_function(n.surrogate, n.surrogate_param),
        )
        return fold_time(spikes)


class ConvKernel(nn.Module):
    """Only the kernel of a `Conv` (same parameter), for a layer that runs the convolution itself."""

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, in_channels: int) -> Array:
        return conv_kernel(self, self.kernel_size, in_channels, self.features)


class BNTTVariables(nn.Module):
    """Only the variables of a `BNTT` (same names): returns gamma and the running-average variables."""

    timesteps: int
    channels: int

    @nn.compact
    def __call__(self):
        return bntt_variables(self, self.timesteps, self.channels)


class Unit(nn.Module):
    """Conv, then BNTT and LIF neurons (spiking) or BatchNorm and ReLU (ANN).

    Spiking units run as one `fused.spiking_conv_train` (same values and gradients as the plain
    composition with `fused=False`, far less memory); `input_levels` and `input_signed` tell
    it which values the input takes (see `fused.SpikingConvSpec`), `remat` recomputes its conv in the backward pass.
    """

    features: int
    kernel_size: int = 3
    dilation: int = 1
    spiking: bool = True
    timesteps: int = 1
    neuron: NeuronParams = NeuronParams()
    dtype: Any = jnp.float32
    input_levels: int | None = None
    input_signed: bool = False
    remat: bool = False
    fused: bool = True

    @nn.compact
    def __call__(self, x_NHWC: Array, train: bool) -> Array:
        if self.spiking and self.fused:
            return self._fused_spiking(x_NHWC, train)
        y = Conv(self.features, self.kernel_size, self.dilation, dtype=self.dtype, name="conv")(x_NHWC)
        if not self.spiking:
            y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, name="bn")(y)
            return nn.relu(y)
        y = BNTT(self.timesteps, name="bntt")(unfold_time(y, self.timesteps), train)
        return LIF(self.timesteps, self.neuron, name="lif")(fold_time(y))

    def _fused_spiking(self, x_NHWC: Array, train: bool) -> Array:
        if x_NHWC.shape[0] % self.timesteps:
            raise ValueError(f"BNTT has {self.timesteps} time steps but the input's leading axis "
                             f"{x_NHWC.shape[0]} is not a multiple of it")
        kernel = ConvKernel(self.features, self.kernel_size, name="conv")(x_NHWC.shape[-1])
        gamma, ra_mean, ra_var = BNTTVariables(self.timesteps, self.features, name="bntt")()
        n = self.neuron
        spec = fused.SpikingConvSpec(self.timesteps, self.dilation, self.input_levels, self.input_signed, n.leak,
                                     n.threshold, n.surrogate, n.surrogate_param, BNTT.epsilon, self.remat)
        x_NHWC = x_NHWC.astype(self.dtype)
        if train:
            spikes, mean, var = fused.spiking_conv_train(x_NHWC, kernel, gamma, spec)
            if not self.is_initializing():
                update_running_average(ra_mean, mean, BNTT.momentum)
                update_running_average(ra_var, var, BNTT.momentum)
        else:
            spikes = fused.spiking_conv_eval(x_NHWC, kernel, gamma, ra_mean.value, ra_var.value, spec)
        return LIF(self.timesteps, self.neuron, name="lif")(None, fused_spikes=spikes)
