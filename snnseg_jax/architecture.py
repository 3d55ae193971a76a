"""The two architectures as tables of layers: the one description of each network.

The Flax networks (`models`), the ANN-to-SNN conversion and the energy analysis all walk these
tables; no layer name is written anywhere else. A table lists the layers in forward order; each
layer reads the sum of its `inputs` (the main path first, then skip connections), and the
network's output is the last layer's, upsampled bilinearly to the input size. Channel counts are
those of width 1 (a network's `width` multiplies every hidden count).

Spiking-DeepLab (VGG9 backbone with dilated convolutions, the DeepLab-LargeFOV classifier):

    conv1_1 64, conv1_2 64, pool | conv2_1 128, conv2_2 128, pool | conv3_1 256,
    conv3_2 256 (dilation 2), conv3_3 256 (dilation 2) | fc6 1024 (3x3, dilation 12), fc7 1024 (1x1),
    output 1x1 -> classes

`head="released"` drops fc7, as the authors' released code does (the paper has three classifier
layers, "Conv[1024] Conv[1024] Conv[1024, classes]").

Spiking-FCN (VGG backbone, a decoder of stride-2 transposed convolutions with skip connections):

    conv1_1 64, conv1_2 64 -> A, pool | conv2_1 128, conv2_2 128 -> B, pool |
    conv3_1 256, conv3_2 256, conv3_3 256 -> C, pool | fc6 1024, fc7 1024 -> D
    lif_up0 = neurons(up0(skip_d(D)) + skip_c(C));  lif_up1 = neurons(up1(lif_up0) + skip_b(B));
    logits = up2(lif_up1) + skip_a(A)

where `skip_*` are 1x1 convolutions to the classes with a bias, analog (no neurons), and `up*`
transposed convolutions to the classes (n -> 2n). The decoder neurons have no BNTT. The ANN FCN's
decoder is linear: its `lif_up*` layers are the plain sums, with no ReLU, as in the authors'
released ANN (`activated`).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable
from typing import TypeVar

INPUT = "input"  # the name under which layers read the network input

# What a layer computes (`Layer.op`):
UNIT = "unit"  # conv (no bias) -> BNTT -> LIF neurons (spiking); conv -> BatchNorm -> ReLU (ANN)
POOL = "pool"  # average pool 3x3, stride 2, padding 1, divisor 9
CLASSES = "classes"  # 1x1 conv to the classes, analog: the DeepLab output (no bias), the FCN skips (bias)
UP = "up"  # 3x3 stride-2 transposed conv to the classes, no bias, n -> 2n + 1, bilinear resize to 2n
NEURONS = "neurons"  # LIF neurons without BNTT on the sum of the inputs (spiking); the plain sum (ANN)
SUM = "sum"  # the sum of the inputs
OPS = (UNIT, POOL, CLASSES, UP, NEURONS, SUM)
PARAMETRIC = (UNIT, CLASSES, UP)  # the convolutions: the layers with a kernel


def activated(layer: Layer, spiking: bool) -> bool:
    """Whether `layer` ends in neurons: LIF neurons in a spiking network, a ReLU in an ANN.

    Every unit does; a NEURONS layer only in a spiking network (the ANN's decoder is linear)."""
    return layer.op == UNIT or (spiking and layer.op == NEURONS)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer: `op` on the sum of the outputs of `inputs` (main path first)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    channels: int | None = None  # UNIT: output channels at width 1; the others keep or make the classes
    kernel: int = 3
    dilation: int = 1
    bias: bool = False


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A network as a table of layers in forward order.

    `frames_meet`: the layer before which an ANN averages its features over the frames of an event
    sequence (paper §5.1.1: the feature extractor runs on every frame, the classifier once).
    """

    name: str
    layers: tuple[Layer, ...]
    frames_meet: str

    def __post_init__(self):
        seen = {INPUT}
        for layer in self.layers:
            if layer.op not in OPS or layer.name in seen or not set(layer.inputs) <= seen:
                raise ValueError(f"bad layer {layer} in {self.name}: unknown op, repeated name or unknown input")
            seen.add(layer.name)
        if self.frames_meet not in seen:
            raise ValueError(f"frames_meet {self.frames_meet!r} is not a layer of {self.name}")

    def __getitem__(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def side_multiple(self) -> int:
        """What the input's sides must be divisible by: 2^pools when transposed convs undo the pools."""
        pools = sum(layer.op == POOL for layer in self.layers)
        return 2**pools if any(layer.op == UP for layer in self.layers) else 1

    def averaged(self, spiking: bool) -> frozenset[str]:
        """The layers that run once, on their inputs averaged over time.

        An ANN: from `frames_meet` on. A spiking network: the linear readout, the layers that no
        neurons follow; averaging their input over time gives the time-averaged output currents
        (the logits) at 1/T of the cost.
        """
        if not spiking:
            start = [layer.name for layer in self.layers].index(self.frames_meet)
            return frozenset(layer.name for layer in self.layers[start:])
        feeds_neurons: set[str] = set()
        for layer in reversed(self.layers):
            if activated(layer, spiking) or layer.name in feeds_neurons:
                feeds_neurons.update(layer.inputs)
        return frozenset(
            layer.name for layer in self.layers if not activated(layer, spiking) and layer.name not in feeds_neurons
        )

    def source(self, name: str) -> str:
        """The layer whose output reaches `name`'s main input through pools (INPUT for the first)."""
        while name != INPUT:
            name = self[name].inputs[0]
            if name == INPUT or self[name].op != POOL:
                return name
        return name

    def driven_neurons(self, name: str) -> str | None:
        """The spiking layer that `name`'s output drives on its main path (itself if it has neurons)."""
        if activated(self[name], spiking=True):
            return name
        return next((layer.name for layer in self.layers if layer.op == NEURONS and layer.inputs[0] == name), None)


T = TypeVar("T")


def walk(architecture: Architecture, x: T, apply: Callable[[Layer, list[T]], T]) -> T:
    """The network's output: `apply(layer, outputs of its inputs)` for each layer in order."""
    outputs = {INPUT: x}
    for layer in architecture.layers:
        outputs[layer.name] = apply(layer, [outputs[name] for name in layer.inputs])
    return outputs[architecture.layers[-1].name]


def add(values: list[T]) -> T:
    """What a layer reads: the sum of its inputs' outputs, left to right (its only input's, if one)."""
    return functools.reduce(operator.add, values)


def _chain(*rows: tuple) -> tuple[Layer, ...]:
    """Layers from `(name, op, channels, kernel, dilation)` rows, each reading the one before."""
    layers, previous = [], INPUT
    for name, op, *shape in rows:
        layers.append(Layer(name, op, (previous,), *shape))
        previous = name
    return tuple(layers)


def _vgg(*stages: tuple[tuple, ...]) -> tuple[tuple, ...]:
    """Rows of VGG stages of 3x3 units `(name, channels, dilation)`, a pool after each but the last."""
    rows = []
    for i, stage in enumerate(stages):
        rows += [(name, UNIT, channels, 3, dilation) for name, channels, dilation in stage]
        if i < len(stages) - 1:
            rows.append((f"pool{i + 1}", POOL))
    return tuple(rows)


_FC6 = ("fc6", UNIT, 1024, 3, 12)  # DeepLab-LargeFOV: 3x3, dilation 12
HEADS = {"paper": (_FC6, ("fc7", UNIT, 1024, 1, 1)), "released": (_FC6,)}  # the classifier before the output


@functools.cache
def deeplab(head: str = "paper") -> Architecture:
    """Spiking-DeepLab (and its ANN twin) with the classifier `head` (a key of `HEADS`)."""
    classifier = HEADS[head]
    rows = _vgg(
        (("conv1_1", 64, 1), ("conv1_2", 64, 1)),
        (("conv2_1", 128, 1), ("conv2_2", 128, 1)),
        (("conv3_1", 256, 1), ("conv3_2", 256, 2), ("conv3_3", 256, 2)),
    )
    return Architecture("deeplab", _chain(*rows, *classifier, ("output", CLASSES, None, 1)), frames_meet="fc6")


@functools.cache
def fcn() -> Architecture:
    """Spiking-FCN (and its ANN twin)."""
    rows = _vgg(
        (("conv1_1", 64, 1), ("conv1_2", 64, 1)),
        (("conv2_1", 128, 1), ("conv2_2", 128, 1)),
        (("conv3_1", 256, 1), ("conv3_2", 256, 1), ("conv3_3", 256, 1)),
        (("fc6", 1024, 1), ("fc7", 1024, 1)),
    )
    skip = lambda name, source: Layer(name, CLASSES, (source,), kernel=1, bias=True)
    decoder = (
        skip("skip_d", "fc7"),
        Layer("up0", UP, ("skip_d",)),
        skip("skip_c", "conv3_3"),
        Layer("lif_up0", NEURONS, ("up0", "skip_c")),
        Layer("up1", UP, ("lif_up0",)),
        skip("skip_b", "conv2_2"),
        Layer("lif_up1", NEURONS, ("up1", "skip_b")),
        Layer("up2", UP, ("lif_up1",)),
        skip("skip_a", "conv1_2"),
        Layer("logits", SUM, ("up2", "skip_a")),
    )
    return Architecture("fcn", _chain(*rows) + decoder, frames_meet="fc6")


def get(name: str, head: str = "paper") -> Architecture:
    """The architecture `name` ("deeplab" or "fcn"); `head` applies to DeepLab."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if name == "deeplab":
        return deeplab(head)
    if name == "fcn":
        return fcn()
    raise ValueError(f"unknown architecture {name!r}; choose deeplab or fcn")
