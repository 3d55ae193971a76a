"""The counting rules of the energy estimate: spike rates (Eq. 8), FLOPs (Eqs. 9, 10) and the energies
of Eqs. 11-12, shared by the `energy` analysis (a trained run) and the spike budget of the loss (`sparsity`).

What is counted, and why:

- Spike rate R_s(l) (Eq. 8): spikes of layer l summed over all T steps, divided by its number of
  neurons, per image. It is read from the outputs that the network's layers with neurons sow into
  the `"activity"` collection (see `models`), which is kept only when asked for.
- Every convolution is a layer with ANN FLOPs k^2 * O^2 * C_in * C_out (Eq. 9; O^2 = output
  positions, zero-padding taps counted as Eq. 9 does, dilation irrelevant). A stride-2 transposed
  conv (the FCN's decoder) meets k^2 kernel taps per *input* position, so O^2 is its input
  positions; the output positions would count the zeros the stride inserts. Pooling, the bilinear
  resizes, biases, BNTT (a per-step affine map that folds into the weights) and the neurons' own
  updates add no FLOPs, as in the paper. E_ANN is one pass of the ANN twin over one input (Eq. 11;
  the paper's "same energy regardless of dataset"), also on event data, where our ANN twin actually
  runs its feature extractor on each of the T frames.
- SNN FLOPs = ANN FLOPs * the rate of what the layer receives over the T steps (Eq. 10):
  * spikes of a spiking layer: its R_s, as accumulates (AC). An average pool between them is folded
    into the synapses: the mean of the pooled spikes equals the spike rate, so it passes R_s on.
  * the Poisson input (static images, layer 1): +-1 spikes are accumulates too (a -1 spike
    subtracts); its rate is the expected number of input spikes per pixel, T * mean(min(|p|, 1)),
    exact for the drawn spikes up to sampling noise of the order of 1/sqrt(pixels).
  * analog values (event frames at layer 1; in the FCN, the output of an analog 1x1 skip conv that a
    transposed conv reads): multiply-accumulates (MAC) on every value at every step, rate T (dense,
    as Eq. 9 is dense).
  * the output conv and the FCN's skip convs receive spikes: AC at their rates. The networks average
    spikes over time before these linear layers, which is the same output; the count follows the
    per-step network a neuromorphic chip would run.
  * where a transposed conv and a skip conv feed decoder neurons together, those neurons' rates are
    reported on the transposed conv, the main path (Fig. 11b's "upsampling layers").
- E_SNN = sum of SNN FLOPs * E_AC, or * E_MAC for layers marked `mac`; ratio = E_ANN / E_SNN.

Which layer reads what, and which neurons it drives, comes from the architecture's table. The
energies take the rates as floats or as JAX scalars (then E_SNN is differentiable in them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnseg_jax import architecture, models

E_MAC_PJ = 4.6  # 32-bit float multiply-accumulate, 45 nm (Table 4)
E_AC_PJ = 0.9  # 32-bit float accumulate
INPUT = architecture.INPUT  # source name of the network input


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """A convolution of the network: where its input comes from, which neurons its output drives."""

    name: str
    source: str  # INPUT, a spiking layer's name, or an analog conv's name
    neurons: str | None  # the spiking layer its output drives (None: analog output)
    transposed: bool = False


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """The convolutions of `model` (either architecture, spiking or ANN) in forward order."""
    table = model.architecture
    return [
        ConvLayer(
            layer.name,
            table.source(layer.name),
            table.driven_neurons(layer.name),
            transposed=layer.op == architecture.UP,
        )
        for layer in table.layers
        if layer.op in architecture.PARAMETRIC
    ]


def conv_flops(kernel_shape: tuple[int, ...], positions: int) -> int:
    """Eq. 9: k^2 * O^2 * C_in * C_out for an HWIO kernel applied at `positions` positions."""
    kh, kw, c_in, c_out = kernel_shape
    return int(kh * kw * positions * c_in * c_out)


def layer_flops(model: nn.Module, variables: dict, input_shape: tuple[int, ...]) -> dict[str, int]:
    """ANN FLOPs (Eq. 9) of each convolution of `model` (with `variables`, arrays or only their shapes)
    on one input of `input_shape`."""
    variables = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
    layers = conv_layers(model)
    names = {layer.name for layer in layers}
    capture = lambda mdl, method: method == "__call__" and len(mdl.path) == 1 and mdl.name in names
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    _, captured = jax.eval_shape(
        lambda v, x: model.apply(
            v,
            x,
            train=False,
            rngs={"spikes": jax.random.PRNGKey(0)},
            capture_intermediates=capture,
            mutable=["intermediates"],
        ),
        variables,
        x,
    )
    kernels = jax.eval_shape(lambda v: model.apply(v, method=models.Network.kernels), variables)
    flops = {}
    for layer in layers:
        _, height, width, _ = captured["intermediates"][layer.name]["__call__"][0].shape
        positions = height * width // 4 if layer.transposed else height * width  # up: n -> 2n
        flops[layer.name] = conv_flops(kernels[layer.name].shape, positions)
    return flops


def spike_rates(activity: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per image `[B]`, for each layer of `models.activity`: spikes per neuron over all T steps (Eq. 8)."""
    rates = {}
    for name, spikes_TB in activity.items():
        counts = spikes_TB.astype(jnp.float32).sum(axis=0)
        rates[name] = counts.reshape(len(counts), -1).mean(axis=1)
    return rates


def expected_input_spikes(images_BHWC: jax.Array, timesteps: int) -> jax.Array:
    """Per image `[B]`: expected signed-Poisson input spikes per input value over `timesteps` steps
    (a value p fires with probability min(|p|, 1) at each step, see `encoding`)."""
    return timesteps * jnp.minimum(jnp.abs(images_BHWC), 1.0).reshape(len(images_BHWC), -1).mean(axis=1)


def rates_per_image(activity: dict[str, jax.Array], inputs: jax.Array, timesteps: int) -> dict[str, jax.Array]:
    """Per image `[B]`: `spike_rates` of every spiking layer, and the expected Poisson input spikes per
    input value (`INPUT`, static images only: event frames are analog)."""
    rates = spike_rates(activity)
    if inputs.ndim == 4:
        rates[INPUT] = expected_input_spikes(inputs, timesteps)
    return rates


@dataclasses.dataclass(frozen=True)
class LayerEnergy:
    """One convolution's share of Eqs. 10-12."""

    name: str
    flops: int  # ANN FLOPs (Eq. 9)
    input_rate: Any  # what it receives per value over the T steps: a rate of `rates`, or T if `mac`
    mac: bool  # multiply-accumulates on analog values (else accumulates of spikes)

    @property
    def snn_flops(self) -> Any:
        """Eq. 10."""
        return float(self.flops) * self.input_rate  # a float: FLOPs may exceed int32

    @property
    def e_ann_pj(self) -> float:
        return self.flops * E_MAC_PJ

    @property
    def e_snn_pj(self) -> Any:
        return self.snn_flops * (E_MAC_PJ if self.mac else E_AC_PJ)


def layer_energies(
    layers: list[ConvLayer], flops: dict[str, int], rates: dict[str, Any], timesteps: int
) -> list[LayerEnergy]:
    """Each convolution's energies, its input's rate taken from `rates` (by source name; `INPUT` absent:
    analog input frames) or T where it reads analog values."""
    analog = {layer.name for layer in layers if layer.neurons is None}
    energies = []
    for layer in layers:
        mac = layer.source in analog or (layer.source == INPUT and INPUT not in rates)
        energies.append(
            LayerEnergy(layer.name, flops[layer.name], float(timesteps) if mac else rates[layer.source], mac)
        )
    return energies


def energies(layer_energies: list[LayerEnergy]) -> tuple[float, Any]:
    """E_ANN and E_SNN (Eqs. 11, 12) in pJ: the sums over the layers."""
    return sum(e.e_ann_pj for e in layer_energies), sum(e.e_snn_pj for e in layer_energies)
