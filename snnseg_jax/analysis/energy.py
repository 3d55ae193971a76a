"""Spike rates (Eq. 8), FLOPs (Eqs. 9, 10) and the energy estimate (Table 4) of a spiking run.

Fig. 11 and Table 5 of the paper. What is counted, and why:

- Spike rate R_s(l) (Eq. 8): spikes of layer l summed over all T steps, divided by its number of
  neurons, per image, averaged over the evaluation split. It is read from the outputs that the
  network's layers with neurons sow into the `"activity"` collection (see `models`), which is kept
  only when this analysis asks for it.
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

Which layer reads what, and which neurons it drives, comes from the architecture's table.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from snnseg_jax import architecture, models
from snnseg_jax.evaluate import Restored

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


def spike_rate_step(state, batch: dict, key: jax.Array, *, model: nn.Module) -> dict[str, jax.Array]:
    """Per image `[B]`: spikes per neuron over all T steps (Eq. 8) of every spiking layer, and the
    expected number of Poisson input spikes per input value (`INPUT`, static images only)."""
    _, sown = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        batch["inputs"],
        train=False,
        rngs={"spikes": key},
        mutable=[models.ACTIVITY],
    )
    timesteps = model.settings.timesteps
    rates = {}
    for name, spikes in models.activity(sown).items():
        counts = spikes.astype(jnp.float32).sum(axis=0)
        rates[name] = counts.reshape(len(counts), -1).mean(axis=1)
    if batch["inputs"].ndim == 4:
        rates[INPUT] = expected_input_spikes(batch["inputs"], timesteps)
    return rates


def expected_input_spikes(images_BHWC: jax.Array, timesteps: int) -> jax.Array:
    """Per image `[B]`: expected signed-Poisson input spikes per input value over `timesteps` steps
    (a value p fires with probability min(|p|, 1) at each step, see `encoding`)."""
    return timesteps * jnp.minimum(jnp.abs(images_BHWC), 1.0).reshape(len(images_BHWC), -1).mean(axis=1)


def mean_spike_rates(run: Restored) -> dict[str, float]:
    """`spike_rate_step`'s rates averaged over the images of the evaluation split (padding left out)."""
    per_batch = run.map_batches(spike_rate_step, run.state)
    return {
        name: float(np.concatenate([b[name] for b in per_batch])[: len(run.dataset)].mean()) for name in per_batch[0]
    }


def energy_report(layers: list[ConvLayer], flops: dict[str, int], rates: dict[str, float], timesteps: int) -> dict:
    """Per-layer FLOPs and rates and the energies of Eqs. 11-12 (the JSON of this analysis)."""
    entries, e_ann, e_snn = [], 0.0, 0.0
    analog = {layer.name for layer in layers if layer.neurons is None}
    for layer in layers:
        mac = layer.source in analog or (layer.source == INPUT and INPUT not in rates)
        input_rate = float(timesteps) if mac else rates[layer.source]
        snn_flops = flops[layer.name] * input_rate
        e_ann += flops[layer.name] * E_MAC_PJ
        e_snn += snn_flops * (E_MAC_PJ if mac else E_AC_PJ)
        entries.append(
            {
                "name": layer.name,
                "flops": flops[layer.name],
                "snn_flops": snn_flops,
                "input_spike_rate": input_rate,
                "output_spike_rate": rates[layer.neurons] if layer.neurons else None,
                "mac": mac,
            }
        )
    return {
        "layers": entries,
        "e_ann_pj": e_ann,
        "e_snn_pj": e_snn,
        "ratio": e_ann / e_snn,
        "timesteps": timesteps,
        "e_mac_pj": E_MAC_PJ,
        "e_ac_pj": E_AC_PJ,
    }


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    layers = conv_layers(run.model)
    variables = {"params": run.state.params, "batch_stats": run.state.batch_stats}
    report = energy_report(
        layers, layer_flops(run.model, variables, run.input_shape), mean_spike_rates(run), run.model.settings.timesteps
    )
    report["num_images"] = len(run.dataset)
    return report, _figure(report, layers, run.config.model.name)


def _figure(report: dict, layers: list[ConvLayer], model_name: str) -> Figure:
    figure = Figure(figsize=(11, 3.8), layout="constrained")
    rate_ax, energy_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    spiking = [e for e in report["layers"] if e["output_spike_rate"] is not None]
    neurons = {layer.name: layer.neurons for layer in layers}
    labels = [e["name"] if neurons[e["name"]] == e["name"] else f"{e['name']} ({neurons[e['name']]})" for e in spiking]
    rate_ax.bar(range(len(spiking)), [e["output_spike_rate"] for e in spiking], color="tab:blue")
    rate_ax.set_xticks(range(len(spiking)), labels, rotation=60, ha="right", fontsize=8)
    rate_ax.set_ylabel(f"spikes per neuron over T={report['timesteps']}")
    rate_ax.set_title(f"Spike rate per layer (Eq. 8), {model_name}", fontsize=10)

    names = [e["name"] for e in report["layers"]]
    x = np.arange(len(names))
    ann = [e["flops"] * E_MAC_PJ for e in report["layers"]]
    snn = [e["snn_flops"] * (E_MAC_PJ if e["mac"] else E_AC_PJ) for e in report["layers"]]
    for offset, values, kind, colour in ((-0.2, ann, "ANN", "tab:gray"), (0.2, snn, "SNN", "tab:orange")):
        total = report[f"e_{kind.lower()}_pj"] / 1e6
        energy_ax.bar(x + offset, values, 0.4, label=f"{kind}, total {total:.3g} µJ", color=colour)
    energy_ax.set_yscale("log")
    energy_ax.set_xticks(
        x,
        [n + (" (MAC)" if e["mac"] else "") for n, e in zip(names, report["layers"])],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    energy_ax.set_ylabel("energy per inference (pJ)")
    energy_ax.set_title(f"Energy per layer: E_ANN / E_SNN = {report['ratio']:.2f}", fontsize=10)
    energy_ax.legend(fontsize=8)
    return figure
