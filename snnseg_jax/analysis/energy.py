"""Spike rates (Eq. 8), FLOPs (Eqs. 9, 10) and the energy estimate (Table 4) of a spiking run.

Fig. 11 and Table 5 of the paper: the rates averaged over the evaluation split, counted and weighed
by the rules of `spike_energy` (what is counted, and why, is written there), which the spike budget
of the loss shares.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from matplotlib.figure import Figure

from snnseg_jax import spike_energy, steps
from snnseg_jax.evaluate import Restored
from snnseg_jax.spike_energy import (  # noqa: F401 (the names this analysis has always offered)
    E_AC_PJ,
    E_MAC_PJ,
    INPUT,
    ConvLayer,
    conv_flops,
    conv_layers,
    expected_input_spikes,
    layer_flops,
)


def spike_rate_step(state, batch: dict, key: jax.Array, *, model: nn.Module) -> dict[str, jax.Array]:
    """Per image `[B]`: spikes per neuron over all T steps (Eq. 8) of every spiking layer, and the
    expected number of Poisson input spikes per input value (`INPUT`, static images only)."""
    outputs = steps.layer_outputs(state, batch, key, model=model)
    return spike_energy.rates_per_image(outputs, batch["inputs"], model.settings.timesteps)


def mean_spike_rates(run: Restored) -> dict[str, float]:
    """`spike_rate_step`'s rates averaged over the images of the evaluation split (padding left out)."""
    per_batch = run.map_batches(spike_rate_step, run.state)
    return {
        name: float(np.concatenate([b[name] for b in per_batch])[: len(run.dataset)].mean()) for name in per_batch[0]
    }


def energy_report(layers: list[ConvLayer], flops: dict[str, int], rates: dict[str, float], timesteps: int) -> dict:
    """Per-layer FLOPs and rates and the energies of Eqs. 11-12 (the JSON of this analysis)."""
    energies = spike_energy.layer_energies(layers, flops, rates, timesteps)
    e_ann, e_snn = spike_energy.energies(energies)
    neurons = {layer.name: layer.neurons for layer in layers}
    entries = [
        {
            "name": e.name,
            "flops": e.flops,
            "snn_flops": e.snn_flops,
            "input_spike_rate": e.input_rate,
            "output_spike_rate": rates[neurons[e.name]] if neurons[e.name] else None,
            "mac": e.mac,
        }
        for e in energies
    ]
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
