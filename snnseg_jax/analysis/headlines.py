"""One line per analysis, read from its JSON: what `evaluate.py --analyses=...` prints on the console.

- energy: E_ANN / E_SNN and the two energies.
- robustness: the relative MIoU drop at each noise level, of the network and of its twin.
- conversion: the ANN's MIoU and the first T at which the converted network reaches it
  (`REACHED` of it), layer- and channel-wise; the directly trained SNN at its own T if compared.
- activations: the range over layers of the median normalized channel maximum.
- samples: the pixel accuracy of the samples drawn.
- latency: the MIoU after one step, halfway and after T, and the time per step.
- streaming: the MIoU streamed continuously against the windows of T frames, and the frame rate.
"""

from __future__ import annotations

from collections.abc import Callable

REACHED = 0.99  # conversion "reaches" its ANN at the first T giving this fraction of the ANN's MIoU


def joined(values: list[float], digits: int) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def energy(report: dict) -> str:
    return (
        f"E_ANN / E_SNN = {report['ratio']:.2f} (E_ANN {report['e_ann_pj'] / 1e6:.2f} µJ, E_SNN "
        f"{report['e_snn_pj'] / 1e6:.2f} µJ per input, T={report['timesteps']})"
    )


def robustness(report: dict) -> str:
    sigmas = " / ".join(f"{s:g}" for s in report["sigmas"][1:])
    line = (
        f"relative MIoU drop at sigma {sigmas} ({report['sigma_unit']} units): {report['model']} "
        f"{joined(report['relative_drop'][1:], 1)} %"
    )
    compare = report.get("compare")
    return line + (f"; {compare['model']} {joined(compare['relative_drop'][1:], 1)} %" if compare else "")


def first_reaching(report: dict, method: str) -> int | None:
    """The first T of the grid at which `method` (`layer`, `channel`) reaches `REACHED` of the ANN's MIoU."""
    curve = report[method]
    return next((t for t, m in zip(curve["timesteps"], curve["miou"]) if m >= REACHED * report["ann_miou"]), None)


def conversion(report: dict) -> str:
    reached = {}
    for method in ("layer", "channel"):
        t = first_reaching(report, method)
        reached[method] = f"at T={t}" if t else f"not by T={report[method]['timesteps'][-1]}"
    line = (
        f"ANN MIoU {report['ann_miou']:.3f} ({report['num_images']} images); converted, reaches "
        f"{REACHED:.0%} of it: {reached['layer']} layer-wise, {reached['channel']} channel-wise"
    )
    direct = report.get("direct")
    if direct is None:
        return line
    at_t = {
        m: dict(zip(report[m]["timesteps"], report[m]["miou"])).get(direct["timesteps"]) for m in ("layer", "channel")
    }
    converted = "" if None in at_t.values() else f", where conversion gives {at_t['layer']:.3f} / {at_t['channel']:.3f}"
    return line + f"; directly trained {direct['model']} {direct['miou']:.3f} at T={direct['timesteps']}{converted}"


def activations(report: dict) -> str:
    medians = sorted((layer["channel_median"], layer["name"]) for layer in report["layers"])
    (low, low_name), (high, high_name) = medians[0], medians[-1]
    return (
        f"median over channels of the normalized channel maximum: {low:.2f} ({low_name}) to "
        f"{high:.2f} ({high_name}) over {len(medians)} layers, {report['num_images']} images"
    )


def samples(report: dict) -> str:
    accuracy = report["pixel_accuracy"]
    return (
        f"{report['num_samples']} samples, pixel accuracy {sum(accuracy) / len(accuracy):.3f} on average "
        f"({min(accuracy):.3f} to {max(accuracy):.3f})"
    )


def latency(report: dict) -> str:
    miou, t = report["miou"], len(report["miou"])
    halfway = f", {miou[t // 2 - 1]:.3f} after {t // 2}" if t > 2 else ""
    return (
        f"MIoU {miou[0]:.3f} after 1 step{halfway}, {miou[-1]:.3f} after {t}; "
        f"{report['step_ms']:.2f} ms per step at batch 1"
    )


def streaming(report: dict) -> str:
    return (
        f"MIoU {report['continuous_miou']:.3f} streamed continuously, {report['windowed_miou']:.3f} in windows "
        f"of T={report['timesteps']}; {report['frames_per_second']:.0f} frames/s at batch 1"
    )


HEADLINES: dict[str, Callable[[dict], str]] = {
    "energy": energy,
    "robustness": robustness,
    "conversion": conversion,
    "activations": activations,
    "samples": samples,
    "latency": latency,
    "streaming": streaming,
}


def headline(name: str, report: dict) -> str:
    """The console line of analysis `name` with JSON `report` (its name alone if it has none)."""
    return HEADLINES[name](report) if name in HEADLINES else "done"
