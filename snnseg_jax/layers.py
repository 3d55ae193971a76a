"""Flax Linen layers: the time-major cells `BNTT` and `LIF`, and the network's blocks.

`BNTT` and `LIF` take time-major tensors `[T, B, ...]` (the time layout of `ops`). The blocks the
networks are built of (`Conv`, `ConvTransposeUp`, `Unit`) work on time-folded tensors
`[B * T, H, W, C]`, so that every convolution runs once over all steps; a `Unit` unfolds time only
where it steps through it (BNTT statistics and the LIF recurrence).

The layers with neurons also run one step at a time, on one frame `[B, H, W, C]` with the membranes
carried by the caller: `LIF.step`, `Unit.step` (which BNTT statistics a step uses past T:
`LATE_STATISTICS`). An ANN's `Unit.folded_conv` is its conv with BatchNorm folded in (conversion).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
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
BATCHNORM_MOMENTUM = 0.9  # Flax's convention: PyTorch's momentum 0.1
# What BNTT uses at a step past its T (`Unit.step`): the statistics and scales of step T - 1, their
# average over the T steps, or those of step t mod T.
LATE_STATISTICS = ("last", "mean", "cycle")
# Flax's collection the layers with neurons sow their membranes after the last step into, when it is
# mutable (`models.carried` reads it): what a window hands to the next when training on streams.
CARRIED = "carried"


def sow_membrane(module: nn.Module, membrane: Array) -> None:
    """Sows `module`'s membranes after the last step (float32) into `CARRIED`, if that is mutable."""
    module.sow(CARRIED, "membrane", membrane.astype(jnp.float32), init_fn=lambda: None, reduce_fn=lambda _, new: new)


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


def update_running_averages(
    module: nn.Module, ra_mean, ra_var, mean: Array, var: Array, values: Array, momentum: float
) -> None:
    """Moves the running averages towards the statistics `mean` and biased `var` of a batch's `values`
    (`neurons.running_statistics`, each statistic over `values.size // mean.size` of them); not while
    `module` initializes."""
    if not module.is_initializing():
        count = values.size // mean.size
        ra_mean.value, ra_var.value = neurons.running_statistics(
            ra_mean.value, ra_var.value, mean, var, count, momentum
        )


class BatchNorm(nn.Module):
    """The ANNs' BatchNorm over `[N, H, W, C]`: the variables and the values of `nn.BatchNorm` (its fast
    variance, statistics in float32, output in `dtype`), but with PyTorch's running variance
    (`update_running_averages`)."""

    momentum: float = BATCHNORM_MOMENTUM
    epsilon: float = BATCHNORM_EPSILON
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: Array, train: bool) -> Array:
        channels = (x_NHWC.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, channels, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, channels, jnp.float32)
        if train:
            mean, var = _fast_statistics(x_NHWC.astype(jnp.promote_types(self.dtype, jnp.float32)))
            update_running_averages(self, ra_mean, ra_var, mean, var, x_NHWC, self.momentum)
        else:
            mean, var = ra_mean.value, ra_var.value
        scale = self.param("scale", nn.initializers.ones, channels)
        bias = self.param("bias", nn.initializers.zeros, channels)
        y = (x_NHWC - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(self.dtype)


def _fast_statistics(x_NHWC: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance as `E[x^2] - E[x]^2` (at least 0), Flax's BatchNorm's."""
    squares, axes = jnp.square(x_NHWC), (0, 1, 2)  # squared first: the gradient sums in Flax's order
    mean, mean_of_squares = x_NHWC.mean(axes), squares.mean(axes)
    return mean, jnp.maximum(0.0, mean_of_squares - jnp.square(mean))


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
    evaluation, then scaled by its own per-channel gamma_t (epsilon and momentum from `neuron`). The
    running variance moves towards the unbiased batch variance (`neurons.running_statistics`).
    """

    timesteps: int
    neuron: neurons.Neuron = neurons.Neuron()

    @nn.compact
    def __call__(self, x_TBHWC: Array, train: bool) -> Array:
        t, c = x_TBHWC.shape[0], x_TBHWC.shape[-1]
        if t != self.timesteps:
            raise ValueError(f"BNTT has {self.timesteps} time steps but the input has {t}")
        return _bntt_over_time(self, x_TBHWC, bntt_variables(self, t, c), train, self.neuron)


def _bntt_over_time(module: nn.Module, x_TBHWC: Array, variables, train: bool, neuron: neurons.Neuron) -> Array:
    """BNTT of `module` with `variables` (gamma and the running averages) on `[T, B, H, W, C]`, in its dtype."""
    gamma, ra_mean, ra_var = variables
    if train:
        mean, var = neurons.bntt_statistics(x_TBHWC)
        update_running_averages(module, ra_mean, ra_var, mean, var, x_TBHWC, neuron.bntt_momentum)
    else:
        mean, var = ra_mean.value, ra_var.value
    scale, shift = neurons.bntt_affine(gamma, mean, var, neuron.bntt_epsilon)
    per_step = lambda v: v[:, None, None, None]
    return neurons.bntt_normalize(x_TBHWC, per_step(scale), per_step(shift)).astype(x_TBHWC.dtype)


def _late_statistics_pick(steps, timesteps: int, late_statistics: str) -> Callable[[Array], Array]:
    """Row of a `[T, ...]` BNTT variable for the step after `steps` steps (`LATE_STATISTICS`)."""
    if late_statistics not in LATE_STATISTICS:
        raise ValueError(f"unknown late_statistics {late_statistics!r}; choose one of {', '.join(LATE_STATISTICS)}")
    if late_statistics == "cycle":
        return lambda v: jax.lax.dynamic_index_in_dim(v, steps % timesteps, 0, keepdims=False)
    last = lambda v: jax.lax.dynamic_index_in_dim(v, jnp.minimum(steps, timesteps - 1), 0, keepdims=False)
    return last if late_statistics == "last" else (lambda v: jnp.where(steps < timesteps, last(v), v.mean(0)))


class LIF(nn.Module):
    """LIF neurons over time-major currents `[T, ...]` (`neurons.lif_scan`); returns spikes of that shape.

    The membranes start from `membrane` `[...]` (None: zero; treated as a constant, no gradient flows
    into it) and end in `CARRIED` (`sow_membrane`).
    """

    neuron: neurons.Neuron = neurons.Neuron()

    def __call__(self, currents_T: Array, membrane: Array | None = None) -> Array:
        n = self.neuron
        if membrane is not None:
            membrane = jax.lax.stop_gradient(membrane)
        spikes, final = neurons.lif_scan(
            currents_T, leak=n.leak, threshold=n.threshold, surrogate=n.spike_fn, u0=membrane, floor=n.floor
        )
        sow_membrane(self, jax.lax.stop_gradient(final))
        return spikes

    def step(self, currents: Array, membrane: Array | None = None) -> tuple[Array, Array]:
        """One step on `currents` `[B, ...]`: `(membrane, spikes)`, both float32 (membrane None: zero)."""
        n, currents = self.neuron, currents.astype(jnp.float32)
        membrane = jnp.zeros(currents.shape, jnp.float32) if membrane is None else membrane
        membrane, spikes, _ = neurons.lif_update(
            membrane, currents, leak=n.leak, threshold=n.threshold, spike_fn=n.spike_fn, floor=n.floor
        )
        return membrane, spikes


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

    def setup(self):
        s, features = self.settings, self.settings.features(self.layer)
        self.conv = ConvKernel(features, self.layer.kernel)
        if s.spiking:
            self.bntt = BNTTVariables(s.timesteps, features)
            self.lif = LIF(s.neuron)
        else:
            self.bn = BatchNorm(dtype=s.dtype)

    def __call__(self, x_NHWC: Array, train: bool, membrane: Array | None = None) -> Array:
        """The unit's output; a spiking unit's neurons start from `membrane` `[B, H, W, C]` (None: zero;
        a constant, no gradient flows into it) and end in `CARRIED` (`sow_membrane`)."""
        s = self.settings
        if not s.spiking:
            if membrane is not None:
                raise ValueError("an ANN unit has no membranes to start from")
            return nn.relu(self.bn(self._conv(x_NHWC), train))
        if x_NHWC.shape[0] % s.timesteps:
            raise ValueError(
                f"BNTT has {s.timesteps} time steps but the input's leading axis "
                f"{x_NHWC.shape[0]} is not a multiple of it"
            )
        if s.fused:
            return self._fused_spiking(x_NHWC, train, membrane)
        y = ops._unfold_time(self._conv(x_NHWC), s.timesteps)
        return ops._fold_time(self.lif(_bntt_over_time(self, y, self.bntt(), train, s.neuron), membrane))

    def step(self, x_BHWC: Array, membrane: Array | None, steps, late_statistics: str = "last") -> tuple[Array, Array]:
        """A spiking unit's step after `steps` steps on one frame `[B, H, W, C_in]`: `(membrane, spikes)`
        (float32; membrane None: zero), with BNTT's running statistics and scale of that step."""
        s = self.settings
        pick = _late_statistics_pick(steps, s.timesteps, late_statistics)
        gamma, ra_mean, ra_var = self.bntt()
        scale, shift = neurons.bntt_affine(pick(gamma), pick(ra_mean.value), pick(ra_var.value), s.neuron.bntt_epsilon)
        return self.lif.step(neurons.bntt_normalize(self._conv(x_BHWC), scale, shift), membrane)

    def folded_conv(self, x_NHWC: Array) -> Array:
        """An ANN unit's conv with its BatchNorm (running statistics) folded in: a biased conv with
        kernel * s and bias beta - mean * s per output channel, s = gamma / sqrt(var + eps)."""
        s, kernel = self.settings, self.conv(x_NHWC.shape[-1])
        bn = self.bn.variables
        scale = bn["params"]["scale"] * jax.lax.rsqrt(bn["batch_stats"]["var"] + self.bn.epsilon)
        bias = bn["params"]["bias"] - bn["batch_stats"]["mean"] * scale
        y = ops.conv2d(x_NHWC.astype(s.dtype), kernel * scale, self.layer.dilation, s.tuning)
        return y + bias.astype(s.dtype)

    def _conv(self, x_NHWC: Array) -> Array:
        """The unit's conv (no bias) in the compute dtype."""
        s, x_NHWC = self.settings, x_NHWC.astype(self.settings.dtype)
        return ops.conv2d(x_NHWC, self.conv(x_NHWC.shape[-1]), self.layer.dilation, s.tuning)

    def _fused_spiking(self, x_NHWC: Array, train: bool, membrane: Array | None) -> Array:
        s, layer = self.settings, self.layer
        kernel = self.conv(x_NHWC.shape[-1])
        gamma, ra_mean, ra_var = self.bntt()
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
            spikes, final = fused.spiking_conv_eval(x_NHWC, kernel, gamma, ra_mean.value, ra_var.value, spec, membrane)
        else:
            spikes, mean, var, final = fused.spiking_conv_train(x_NHWC, kernel, gamma, spec, membrane)
            # The spikes have the currents' shape: the statistics' count.
            update_running_averages(self, ra_mean, ra_var, mean, var, spikes, s.neuron.bntt_momentum)
        sow_membrane(self, final)
        return spikes
