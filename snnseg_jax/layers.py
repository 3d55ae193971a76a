"""Flax Linen layers: the time-major cells `BNTT` and `LIF`, and the network's blocks.

`BNTT` and `LIF` take time-major tensors `[T, B, ...]`, as `neurons` and `encoding` do. The blocks
the networks are built of (`Conv`, `ConvTransposeUp`, `Unit`) work on time-folded tensors
`[B * T, H, W, C]` (see `ops`), so that every convolution runs once over all steps; a `Unit`
unfolds time only where it steps through it (BNTT statistics and the LIF recurrence).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnseg_jax import formulations, fused, neurons, ops
from snnseg_jax.architecture import Layer
from snnseg_jax.formulations import Tuning
from snnseg_jax.fused import InputValues

Array = jax.Array

BATCHNORM_EPSILON = 1e-4  # of the ANNs' BatchNorm: BNTT's, as in the authors' released code
BATCHNORM_MOMENTUM = 0.9


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


def update_running_averages(module: nn.Module, ra_mean, ra_var, mean: Array, var: Array, momentum: float) -> None:
    """Moves the running averages towards a batch's statistics (not while `module` initializes)."""
    if not module.is_initializing():
        ra_mean.value = neurons.running_average(ra_mean.value, mean, momentum)
        ra_var.value = neurons.running_average(ra_var.value, var, momentum)


class Conv(nn.Module):
    """Stride-1 'same' convolution (or 1x1), Xavier gain-2 kernel, optional zero-initialized bias."""

    features: int
    kernel_size: int = 3
    dilation: int = 1
    use_bias: bool = False
    dtype: Any = jnp.float32
    tuning: Tuning = formulations.PLAIN

    @nn.compact
    def __call__(self, x_NHWC: Array) -> Array:
        kernel = conv_kernel(self, self.kernel_size, x_NHWC.shape[-1], self.features)
        y = ops.conv2d(x_NHWC.astype(self.dtype), kernel, self.dilation, self.tuning)
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
    """Batch Normalization Through Time on `[T, B, H, W, C]`: per-step statistics and scales, no shift.

    Step t is normalized with its own batch statistics in training and its own running averages at
    evaluation, then scaled by its own per-channel gamma_t (epsilon and momentum from `neuron`).
    """

    timesteps: int
    neuron: neurons.Neuron = neurons.Neuron()

    @nn.compact
    def __call__(self, x_TBHWC: Array, train: bool) -> Array:
        t, c = x_TBHWC.shape[0], x_TBHWC.shape[-1]
        if t != self.timesteps:
            raise ValueError(f"BNTT has {self.timesteps} time steps but the input has {t}")
        gamma, ra_mean, ra_var = bntt_variables(self, t, c)
        if train:
            mean, var = neurons.bntt_statistics(x_TBHWC)
            update_running_averages(self, ra_mean, ra_var, mean, var, self.neuron.bntt_momentum)
        else:
            mean, var = ra_mean.value, ra_var.value
        scale, shift = neurons.bntt_affine(gamma, mean, var, self.neuron.bntt_epsilon)
        per_step = lambda v: v[:, None, None, None].astype(x_TBHWC.dtype)
        return x_TBHWC * per_step(scale) + per_step(shift)


class LIF(nn.Module):
    """LIF neurons over time-major currents `[T, ...]` (`neurons.lif_scan`); returns spikes of that shape."""

    neuron: neurons.Neuron = neurons.Neuron()

    def __call__(self, currents_T: Array) -> Array:
        n = self.neuron
        return neurons.lif_scan(currents_T, leak=n.leak, threshold=n.threshold, surrogate=n.spike_fn)[0]


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


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every layer of a network shares; each layer adds its own row of the architecture's table.

    `remat` recomputes each layer's convolution in the backward pass instead of storing its output
    (ANN layers: the whole layer); `fused` runs each spiking layer as `fused.spiking_conv_train`
    (False: the plain autodiff composition of `Conv`, `BNTT` and `LIF`, same values and gradients,
    more time and memory); `tuning` picks the faster formulations of the ops (`formulations`).
    """

    spiking: bool
    timesteps: int
    width: float = 1.0
    neuron: neurons.Neuron = neurons.Neuron()
    dtype: Any = jnp.float32
    remat: bool = False
    fused: bool = True
    tuning: Tuning = formulations.PLAIN

    def features(self, layer: Layer) -> int:
        """The output channels of a unit at this width (at least 1)."""
        return max(1, int(round(layer.channels * self.width)))


class Unit(nn.Module):
    """A unit of the table on time-folded `[B * T, H, W, C]`: conv, then BNTT and LIF neurons
    (spiking) or BatchNorm and ReLU (ANN). `input_values` says which values its input takes."""

    layer: Layer
    settings: Settings
    input_values: InputValues = fused.ANALOG

    @nn.compact
    def __call__(self, x_NHWC: Array, train: bool) -> Array:
        s, layer = self.settings, self.layer
        if s.spiking and s.fused:
            return self._fused_spiking(x_NHWC, train)
        y = Conv(s.features(layer), layer.kernel, layer.dilation, dtype=s.dtype, tuning=s.tuning, name="conv")(x_NHWC)
        if not s.spiking:
            y = nn.BatchNorm(
                use_running_average=not train,
                momentum=BATCHNORM_MOMENTUM,
                epsilon=BATCHNORM_EPSILON,
                dtype=s.dtype,
                name="bn",
            )(y)
            return nn.relu(y)
        y = BNTT(s.timesteps, s.neuron, name="bntt")(ops.unfold_time(y, s.timesteps), train)
        return ops.fold_time(LIF(s.neuron, name="lif")(y))

    def _fused_spiking(self, x_NHWC: Array, train: bool) -> Array:
        s, layer = self.settings, self.layer
        if x_NHWC.shape[0] % s.timesteps:
            raise ValueError(
                f"BNTT has {s.timesteps} time steps but the input's leading axis "
                f"{x_NHWC.shape[0]} is not a multiple of it"
            )
        kernel = ConvKernel(s.features(layer), layer.kernel, name="conv")(x_NHWC.shape[-1])
        gamma, ra_mean, ra_var = BNTTVariables(s.timesteps, s.features(layer), name="bntt")()
        spec = fused.SpikingConvSpec(
            timesteps=s.timesteps,
            dilation=layer.dilation,
            input_values=self.input_values,
            neuron=s.neuron,
            remat=s.remat,
            tuning=s.tuning,
        )
        x_NHWC = x_NHWC.astype(s.dtype)
        if not train:
            return fused.spiking_conv_eval(x_NHWC, kernel, gamma, ra_mean.value, ra_var.value, spec)
        spikes, mean, var = fused.spiking_conv_train(x_NHWC, kernel, gamma, spec)
        update_running_averages(self, ra_mean, ra_var, mean, var, s.neuron.bntt_momentum)
        return spikes
