"""Spiking-DeepLab, Spiking-FCN and their ANN twins (SPEC §4), built with `build(name, ...)`.

Inputs are static images `[B, H, W, C]` (rate coded inside the spiking networks with the
`"spikes"` PRNG stream) or event sequences `[B, T, H, W, C]` (frame t at step t; the ANNs run
their backbone on every frame and average its features over time). Outputs are logits
`[B, H, W, num_classes]`: for the spiking networks, the output layer's currents averaged over T.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnseg_jax import encoding, neurons, ops
from snnseg_jax.layers import LIF, Conv, ConvTransposeUp, NeuronParams, Unit

Array = jax.Array

# (name, channels at width 1, kernel, dilation); "pool" marks an average pool.
DEEPLAB_BACKBONE = (
    ("conv1_1", 64, 3, 1), ("conv1_2", 64, 3, 1), "pool",
    ("conv2_1", 128, 3, 1), ("conv2_2", 128, 3, 1), "pool",
    ("conv3_1", 256, 3, 1), ("conv3_2", 256, 3, 2), ("conv3_3", 256, 3, 2),
)
DEEPLAB_HEADS = {
    "paper": (("fc6", 1024, 3, 12), ("fc7", 1024, 1, 1)),  # DeepLab-LargeFOV, 3 layers with the output
    "released": (("fc6", 1024, 3, 12),),  # the authors' code: no middle 1x1 layer
}
# FCN: each stage ends in a skip source; the first three are pooled after their skip.
FCN_STAGES = (
    (("conv1_1", 64, 3, 1), ("conv1_2", 64, 3, 1)),
    (("conv2_1", 128, 3, 1), ("conv2_2", 128, 3, 1)),
    (("conv3_1", 256, 3, 1), ("conv3_2", 256, 3, 1), ("conv3_3", 256, 3, 1)),
    (("fc6", 1024, 3, 1), ("fc7", 1024, 3, 1)),
)
MODEL_NAMES = ("spiking_deeplab", "spiking_fcn", "deeplab", "fcn")
FCN_SIDE_MULTIPLE = 8  # three pools down, three exact 2x upsamplings back


def scaled_channels(channels: int, width: float) -> int:
    """Hidden channel count at width multiplier `width` (at least 1)."""
    return max(1, int(round(channels * width)))


# What a layer's input holds, as `(Unit.input_levels, Unit.input_signed)`: spikes are 0 or 1.
SPIKES = (1, False)
ANALOG = (None, False)


def pooled_values(values: tuple[int | None, bool]) -> tuple[int | None, bool]:
    """The input values after `ops.avg_pool`: sums of 9 of them divided by 9."""
    levels, signed = values
    return (None if levels is None else 9 * levels), signed


def time_mean(x_N: Array, timesteps: int) -> Array:
    """Mean over time of time-folded `[B * T, ...]`, giving `[B, ...]`."""
    return x_N if timesteps == 1 else ops.sum_by_halves(ops.split_time(x_N, timesteps), 1) / timesteps


class _Network(nn.Module):
    """Input handling and layer construction shared by both architectures."""

    num_classes: int
    timesteps: int
    width: float = 1.0
    spiking: bool = True
    in_channels: int = 3
    neuron: NeuronParams = NeuronParams()
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each layer in the backward pass (less memory, more time)
    fused: bool = True  # spiking layers as `fused.spiking_conv_train`; False: plain autodiff (reference)

    def _input(self, x: Array) -> tuple[Array, int]:
        """Time-folded network input `[B * T', H, W, C]` and its number of steps T'."""
        if x.ndim not in (4, 5) or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected images [B, H, W, {self.in_channels}] or event sequences "
                f"[B, T, H, W, {self.in_channels}], got shape {tuple(x.shape)}")
        x = x.astype(self.dtype)
        if x.ndim == 5:
            if self.spiking and x.shape[1] != self.timesteps:
                raise ValueError(f"event sequence has {x.shape[1]} frames but the model "
                                 f"has timesteps={self.timesteps}")
            return ops.merge_time(x), x.shape[1]
        if not self.spiking:
            return x, 1
        return ops.fold_time(encoding.poisson_encode(self.make_rng("spikes"), x, self.timesteps)), self.timesteps

    def _input_values(self, x: Array) -> tuple[int | None, bool]:
        """What the first layer's input holds: signed Poisson spikes, or analog event frames."""
        return (1, True) if self.spiking and x.ndim == 4 else ANALOG

    def _unit(self, spec, steps: int, values: tuple[int | None, bool]) -> Callable[[Array, bool], Array]:
        name, channels, kernel, dilation = spec
        # ANN layers are checkpointed whole; spiking layers recompute only their conv (see fused.py).
        unit = nn.remat(Unit, static_argnums=(2,)) if self.remat and not self.spiking else Unit
        return unit(scaled_channels(channels, self.width), kernel, dilation, self.spiking, steps, self.neuron,
                    self.dtype, *values, self.remat, self.fused, name=name)

    def _output_conv(self, name: str, use_bias: bool) -> Conv:
        return Conv(self.num_classes, 1, use_bias=use_bias, dtype=self.dtype, name=name)


class DeepLab(_Network):
    """VGG9 DeepLab: dilated backbone, LargeFOV classifier, bilinear upsampling to the input size."""

    head: str = "paper"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        height, width = x.shape[-3:-1]
        values = self._input_values(x)
        h, steps = self._input(x)
        for spec in DEEPLAB_BACKBONE:
            if spec == "pool":
                h, values = ops.avg_pool(h), pooled_values(values)
            else:
                h, values = self._unit(spec, steps, values)(h, train), SPIKES
        if not self.spiking:  # the ANN averages the backbone features over the frames
            h, steps = time_mean(h, steps), 1
        for spec in DEEPLAB_HEADS[self.head]:
            h = self._unit(spec, steps, SPIKES)(h, train)
        # The output layer is linear, so averaging its input over time gives the time-averaged
        # output currents at 1/T of the cost.
        logits = self._output_conv("output", use_bias=False)(time_mean(h, steps))
        return ops.resize_bilinear(logits, height, width).astype(jnp.float32)


class FCN(_Network):
    """VGG FCN: three pooled stages and a classifier, decoded by transposed convs plus skip convs."""

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        height, width = x.shape[-3:-1]
        if height % FCN_SIDE_MULTIPLE or width % FCN_SIDE_MULTIPLE:
            raise ValueError(f"FCN needs an input side divisible by {FCN_SIDE_MULTIPLE}, got {height}x{width}")
        values = self._input_values(x)
        h, steps = self._input(x)
        skips = []
        for i, stage in enumerate(FCN_STAGES):
            if i == len(FCN_STAGES) - 1 and not self.spiking:  # ANN: average frames before the classifier
                h, skips, steps = time_mean(h, steps), [time_mean(s, steps) for s in skips], 1
            for spec in stage:
                h, values = self._unit(spec, steps, values)(h, train), SPIKES
            skips.append(h)
            if i < len(FCN_STAGES) - 1:
                h, values = ops.avg_pool(h), pooled_values(values)
        a, b, c, d = skips

        def activation(name: str) -> Callable[[Array], Array]:
            return LIF(steps, self.neuron, name=name) if self.spiking else nn.relu

        up = lambda name: ConvTransposeUp(self.num_classes, dtype=self.dtype, name=name)
        skip = lambda name: self._output_conv(name, use_bias=True)
        u0 = activation("lif_up0")(up("up0")(skip("skip_d")(d)) + skip("skip_c")(c))
        u1 = activation("lif_up1")(up("up1")(u0) + skip("skip_b")(b))
        # Linear from here on: average over time first (see DeepLab).
        logits = up("up2")(time_mean(u1, steps)) + skip("skip_a")(time_mean(a, steps))
        return ops.resize_bilinear(logits, height, width).astype(jnp.float32)


def build(
    name: str,
    num_classes: int,
    timesteps: int = 20,
    width: float = 1.0,
    *,
    in_channels: int = 3,
    head: str = "paper",
    leak: float = 0.99,
    threshold: float = 1.0,
    surrogate: str = "linear",
    surrogate_scale: float | None = None,
    dtype: Any = "float32",
    remat: bool = False,
    fused: bool = True,
) -> nn.Module:
    """The network `name` (one of `MODEL_NAMES`) with these settings.

    `head` ("paper" or "released") applies to the DeepLabs; `surrogate_scale` is the surrogate's
    hyper-parameter (None: its default, 0.3 for `linear`); `dtype` is the compute dtype; `remat`
    recomputes each layer's convolution in the backward pass instead of storing its output; `fused`
    runs each spiking layer as `fused.spiking_conv_train` (False: the plain autodiff composition,
    same values and gradients, more time and memory).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if head not in DEEPLAB_HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(DEEPLAB_HEADS)}")
    if timesteps < 1 or num_classes < 1 or width <= 0:
        raise ValueError(f"need timesteps >= 1, num_classes >= 1 and width > 0, got "
                         f"{timesteps}, {num_classes}, {width}")
    neurons.spike_function(surrogate, surrogate_scale)
    common = dict(num_classes=num_classes, timesteps=timesteps, width=width,
                  spiking=name.startswith("spiking_"), in_channels=in_channels,
                  neuron=NeuronParams(leak, threshold, surrogate, surrogate_scale),
                  dtype=jnp.dtype(dtype), remat=remat, fused=fused)
    if name.endswith("deeplab"):
        return DeepLab(**common, head=head)
    return FCN(**common)
