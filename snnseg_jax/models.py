"""Spiking-DeepLab, Spiking-FCN and their ANN twins, built with `build(name, ...)`.

One Flax module, `Network`, runs either table of `architecture`. Inputs are batches (the time
layout of `ops`): static images `[B, H, W, C]` (rate coded inside the spiking networks with the
`"spikes"` PRNG stream) or event sequences `[B, T, H, W, C]` (frame t at step t; the ANNs run their
feature extractor on every frame and average its features over the frames before the classifier).
Outputs are logits `[B, H, W, num_classes]`: for the spiking networks, the output layer's currents
averaged over T, which the authors' code leaves summed for the FCN (the argmax is the same).

Inside, activations are time-folded `[B * T, H, W, C]`. Every layer that ends in neurons sows its
output (spikes, or ReLU activations in an ANN) into Flax's collection `"intermediates"`:
`activity(model.apply(..., mutable=["intermediates"])[1])` gives them by layer name, time-major
`[T, B, h, w, C]` (T = 1 for an ANN's layers that run once), and nothing is kept otherwise. The
training step keeps a spiking network's spikes this way, for its spike statistics and budget
(`sparsity`): the sown spikes are the layers' outputs themselves, so a loss on them is differentiable.

Besides `__call__` (the whole window, the training path), the network has `readouts` (a spiking
network's readout after each step of a window, what training on streams scores) and methods for one
frame at a time, through `model.apply(variables, ..., method=...)`: `step` (the spiking network's step with
membranes carried, what `stream` runs), `folded` (an ANN with BatchNorm folded into its convs and
a given function in place of its ReLUs, what the conversion analysis runs) and `kernels`. Only the
modules name their parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnseg_jax import architecture, encoding, formulations, layers, neurons, ops
from snnseg_jax.architecture import Architecture, Layer
from snnseg_jax.fused import ANALOG, SIGNED_SPIKES, SPIKES, InputValues
from snnseg_jax.layers import LIF, Conv, ConvTransposeUp, Settings, Unit

Array = jax.Array
MODEL_NAMES = ("spiking_deeplab", "spiking_fcn", "deeplab", "fcn")
# Flax's collection for sown values (`init` leaves it out), and the variable in it that holds
# {layer name: output} of every layer that ends in neurons.
ACTIVITY = "intermediates"
_BY_LAYER = "activity"
CARRIED = layers.CARRIED


class Tensor(NamedTuple):
    """An activation: time-folded `[B * steps, H, W, C]`, and the values it takes (for `fused`)."""

    array: Array
    steps: int
    values: InputValues = ANALOG

    def time_mean(self, tuning: formulations.Tuning) -> Tensor:
        return self if self.steps == 1 else Tensor(ops.time_mean(self.array, self.steps, tuning), 1)


class Network(nn.Module):
    """The network of `architecture`'s table, spiking or ANN as `settings` say."""

    architecture: Architecture
    num_classes: int
    settings: Settings
    in_channels: int = 3

    def __call__(self, x: Array, train: bool = False, membranes: dict[str, Array] | None = None) -> Array:
        """Logits `[B, H, W, K]` of the window `x`. A spiking network's neurons start from `membranes`
        (by layer name, `[B, h, w, C]` as `carried` returns them; None: all at zero), which are
        constants to the gradient: training on streams cuts it between windows."""
        height, width = self._check_input(x)
        logits = self._window(x, train, membranes, self.architecture.averaged(self.settings.spiking)).array
        return ops.resize_bilinear(logits, height, width).astype(jnp.float32)

    def readouts(self, x: Array, train: bool = False, membranes: dict[str, Array] | None = None) -> Array:
        """A spiking network's readout after each step of the window `x`, time-major `[T, B, h, w, K]`
        float32 at feature resolution (as `__call__`, which returns their mean over T, upsampled).

        The readout, the layers after the last neurons, is linear: `__call__` applies it once to the
        time-averaged spikes, this at every step (T times the readout's operations). What `stream`
        averages over its last T steps; training on streams scores each frame's prediction with it.
        """
        if not self.settings.spiking:
            raise ValueError("only a spiking network has a readout at each step; an ANN's runs once")
        self._check_input(x)
        out = self._window(x, train, membranes, averaged=frozenset())
        return ops._unfold_time(out.array, out.steps).astype(jnp.float32)

    def _window(self, x: Array, train: bool, membranes: dict[str, Array] | None, averaged: frozenset[str]) -> Tensor:
        """The table's output on the window `x`, the inputs of the layers in `averaged` averaged over time."""
        if membranes is not None and not self.settings.spiking:
            raise ValueError("only a spiking network starts from membranes; an ANN has none")

        def apply(layer: Layer, inputs: list[Tensor]) -> Tensor:
            if layer.name in averaged:
                inputs = [t.time_mean(self.settings.tuning) for t in inputs]
            out = self._layer(layer, inputs, train, (membranes or {}).get(layer.name))
            if architecture.activated(layer, self.settings.spiking):
                self.sow(
                    ACTIVITY,
                    _BY_LAYER,
                    out.array,
                    init_fn=dict,
                    reduce_fn=lambda outputs, output: {**outputs, layer.name: ops._unfold_time(output, out.steps)},
                )
            return out

        return architecture.walk(self.architecture, self._input(x), apply)

    def _check_input(self, x: Array) -> tuple[int, int]:
        """The input's height and width, once its shape is known to fit the network."""
        if x.ndim not in (4, 5) or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected images [B, H, W, {self.in_channels}] or event sequences "
                f"[B, T, H, W, {self.in_channels}], got shape {tuple(x.shape)}"
            )
        if x.ndim == 5 and self.settings.spiking and x.shape[1] != self.settings.timesteps:
            raise ValueError(
                f"event sequence has {x.shape[1]} frames but the model has timesteps={self.settings.timesteps}"
            )
        height, width = x.shape[-3:-1]
        multiple = self.architecture.side_multiple()
        if height % multiple or width % multiple:
            raise ValueError(
                f"{self.architecture.name.upper()} needs an input side divisible by {multiple}, got {height}x{width}"
            )
        return height, width

    def _input(self, x: Array) -> Tensor:
        """The network input, time-folded: event frames, Poisson spikes of an image, or the image (ANN)."""
        s = self.settings
        x = x.astype(s.dtype)
        if x.ndim == 5:
            return Tensor(ops._merge_time(x), x.shape[1])
        if not s.spiking:
            return Tensor(x, 1)
        spikes = encoding.poisson_encode(self.make_rng("spikes"), x, s.timesteps)  # see `spike_key`
        return Tensor(ops._fold_time(spikes), s.timesteps, SIGNED_SPIKES)

    def _layer(self, layer: Layer, inputs: list[Tensor], train: bool, membrane: Array | None = None) -> Tensor:
        """The output of `layer` on its inputs (a spiking layer's neurons starting from `membrane`)."""
        s, x = self.settings, inputs[0]
        if layer.op == architecture.POOL:
            return Tensor(ops.avg_pool(x.array, s.tuning), x.steps, x.values.pooled())
        if layer.op == architecture.UNIT:
            unit = self._module(layer, x.values)
            return Tensor(unit(x.array, train, membrane) if s.spiking else unit(x.array, train), x.steps, SPIKES)
        if layer.op in (architecture.CLASSES, architecture.UP):
            return Tensor(self._module(layer)(x.array), x.steps)
        total = architecture.add([t.array for t in inputs])
        if layer.op == architecture.NEURONS and s.spiking:
            spikes = self._module(layer)(ops._unfold_time(total, x.steps), membrane)
            return Tensor(ops._fold_time(spikes), x.steps, SPIKES)
        return Tensor(total, x.steps)

    @nn.compact
    def _module(self, layer: Layer, values: InputValues = ANALOG) -> nn.Module:
        """The submodule of a `layer` with parameters or neurons, named after it: its `Unit`, its conv
        to the classes or its `LIF` neurons (`values`: which values a unit's input takes)."""
        s = self.settings
        if layer.op == architecture.UNIT:
            # ANN layers are checkpointed whole; spiking layers recompute only their conv (see fused.py).
            unit = nn.remat(Unit, static_argnums=(2,)) if s.remat and not s.spiking else Unit
            return unit(layer, s, values, name=layer.name)
        if layer.op in (architecture.CLASSES, architecture.UP):
            return class_conv(layer, self.num_classes, s, name=layer.name)
        return LIF(s.neuron, name=layer.name)

    def step(
        self, membranes: dict[str, Array] | None, frame: Array, steps, late_statistics: str = "last"
    ) -> tuple[dict[str, Array], dict[str, Array], Array]:
        """The spiking network's step after `steps` steps on one frame `[B, H, W, C]`.

        `membranes`: per layer with neurons, `[B, h, w, C]` float32 (None: all at zero). Returns the
        new membranes, the spikes of the step by layer (compute dtype) and the readout's currents at
        feature resolution `[B, h, w, K]`, which the network averages over time (`stream` does).
        `late_statistics` (`layers.LATE_STATISTICS`) picks BNTT's statistics past step T.
        """
        if not self.settings.spiking:
            raise ValueError("only a spiking network steps; an ANN has no state to carry from frame to frame")
        new_membranes, spikes = {}, {}

        def fire(layer: Layer, module: nn.Module, x: Array) -> Array:
            membrane = None if membranes is None else membranes[layer.name]
            if layer.op == architecture.UNIT:
                new_membranes[layer.name], out = module.step(x, membrane, steps, late_statistics)
            else:
                new_membranes[layer.name], out = module.step(x, membrane)
            spikes[layer.name] = out.astype(self.settings.dtype)
            return spikes[layer.name]

        return new_membranes, spikes, self._frame(frame, fire)

    def folded(self, x: Array, activate: Callable[[str, Array], Array]) -> Array:
        """An ANN on one static input `[B, H, W, C]` with each unit's BatchNorm folded into its conv
        (`Unit.folded_conv`) and `activate(layer name, currents)` in place of each ReLU: the logits at
        feature resolution (with `jax.nn.relu`, the ANN's up to rounding)."""
        if self.settings.spiking:
            raise ValueError("only an ANN has BatchNorm to fold; a spiking network has BNTT")
        return self._frame(x, lambda layer, unit, x: activate(layer.name, unit.folded_conv(x)))

    def _frame(self, x: Array, fire: Callable[[Layer, nn.Module, Array], Array]) -> Array:
        """One frame through the table, `fire(layer, its module, input)` computing each layer with neurons."""
        s = self.settings

        def apply(layer: Layer, inputs: list[Array]) -> Array:
            total = architecture.add(inputs)
            if layer.op == architecture.POOL:
                return ops.avg_pool(total, s.tuning)
            if layer.op in (architecture.CLASSES, architecture.UP):
                return self._module(layer)(total)
            return fire(layer, self._module(layer), total) if architecture.activated(layer, s.spiking) else total

        return architecture.walk(self.architecture, x.astype(s.dtype), apply)

    def kernels(self) -> dict[str, Array]:
        """The kernel `[k, k, C_in, C_out]` of every convolution, by layer name, in forward order."""
        return {
            layer.name: _the_kernel(self._module(layer).variables["params"])
            for layer in self.architecture.layers
            if layer.op in architecture.PARAMETRIC
        }


def _the_kernel(params: dict) -> Array:
    """The one parameter named "kernel" in a module's parameters."""
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"]
    if len(kernels) != 1:
        raise ValueError(f"expected one kernel in a conv layer, found {len(kernels)}")
    return kernels[0]


def class_conv(layer: Layer, num_classes: int, settings: Settings, name: str | None = None) -> nn.Module:
    """The module of a convolution to the classes (a CLASSES or UP layer of the table)."""
    if layer.op == architecture.UP:
        return ConvTransposeUp(num_classes, dtype=settings.dtype, name=name)
    return Conv(num_classes, layer.kernel, use_bias=layer.bias, dtype=settings.dtype, tuning=settings.tuning, name=name)


def spike_key(key: Array) -> Array:
    """The key `Network` draws the Poisson spikes of its input from when applied with `rngs={"spikes": key}`."""
    return _SpikeKey().apply({}, rngs={"spikes": key})


class _SpikeKey(nn.Module):
    """`make_rng("spikes")` at the root, as `Network` calls it (once, before anything else)."""

    def __call__(self) -> Array:
        return self.make_rng("spikes")


def carried(variables: dict) -> dict[str, Array]:
    """The membranes after the window, sown into `CARRIED` by `apply(..., mutable=[CARRIED])`: {layer
    name: `[B, h, w, C]` float32}, what `Network.__call__` (and `stream.State`) take to go on."""
    return {name: jax.tree.leaves(sown)[0] for name, sown in variables[CARRIED].items()}


def activity(variables: dict) -> dict[str, Array]:
    """The outputs sown into `ACTIVITY` by `apply(..., mutable=[ACTIVITY])`: {layer name: `[T, B, ...]`}."""
    return variables[ACTIVITY][_BY_LAYER]


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
    membrane_floor: float | None = None,
    dtype: Any = "float32",
    remat: bool = False,
    fused: bool = True,
    tuned_ops: bool = True,
) -> Network:
    """The network `name` (one of `MODEL_NAMES`) with these settings.

    `head` ("paper" or "released") applies to the DeepLabs; `surrogate_scale` is the surrogate's
    hyper-parameter (None: its default, 0.3 for `linear`); `membrane_floor` bounds every membrane
    from below, in thresholds (None: unbounded, the paper's neuron; see `neurons.lif_update`);
    `dtype` is the compute dtype; `remat` recomputes each layer's convolution in the backward pass
    instead of storing its output; `fused`
    runs each spiking layer as `fused.spiking_conv_train` (False: the plain autodiff composition,
    same values and gradients, more time and memory); `tuned_ops` uses the faster formulations of
    `formulations` that pay on the default backend (False: XLA's plain ops; same values).
    """
    table = architecture_of(name, head)
    if timesteps < 1 or num_classes < 1 or width <= 0:
        raise ValueError(
            f"need timesteps >= 1, num_classes >= 1 and width > 0, got {timesteps}, {num_classes}, {width}"
        )
    tuning = formulations.for_backend(jax.default_backend()) if tuned_ops else formulations.PLAIN
    settings = Settings(
        spiking=name.startswith("spiking_"),
        timesteps=timesteps,
        width=width,
        neuron=neurons.Neuron(leak, threshold, surrogate, surrogate_scale, floor=membrane_floor),
        dtype=jnp.dtype(dtype),
        remat=remat,
        fused=fused,
        tuning=tuning,
    )
    return Network(table, num_classes, settings, in_channels)


def architecture_of(name: str, head: str = "paper") -> Architecture:
    """The table of network `name` (spiking or ANN: the same layers)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return architecture.get(name.removeprefix("spiking_"), head)
