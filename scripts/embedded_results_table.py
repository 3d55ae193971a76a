"""Markdown summary of the analyses written by scripts/embedded_results.sh, with the paper's findings checked.

    python scripts/embedded_results_table.py runs/embedded

Reads `<runs>/{shapes,events}_{snn,ann}/` (`eval_val.json` and `analysis/*.json`); prints MIoU, the
conversion curve, the robustness curves, the energy estimate and the activation spread, then for each
of the paper's findings whether it holds here.
"""

from __future__ import annotations

import json
import os
import sys

# Paper Table 5, E_ANN / E_SNN at T = 20 (DeepLab / FCN on VOC2012 and DDD17).
PAPER_RATIOS = {("deeplab", "shapes"): (2.75, "VOC2012"), ("deeplab", "events"): (1.15, "DDD17"),
                ("fcn", "shapes"): (2.37, "VOC2012"), ("fcn", "events"): (1.04, "DDD17")}


def read(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def numbers(values: list[float], digits: int = 3) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def training_lines(runs: str) -> list[str]:
    lines = ["| data | network | T | steps | MIoU (val) | pixel accuracy |", "|---|---|---|---|---|---|"]
    for data in ("shapes", "events"):
        for kind in ("snn", "ann"):
            result = read(os.path.join(runs, f"{data}_{kind}", "eval_val.json"))
            energy = read(os.path.join(runs, f"{data}_snn", "analysis", "energy.json"))
            if result is None:
                continue
            timesteps = energy["timesteps"] if kind == "snn" and energy else "-"
            lines.append(f"| {data} | {kind.upper()} | {timesteps} | {result['step']} | {result['miou']:.3f} | "
                         f"{result['pixel_accuracy']:.3f} |")
    return lines


def conversion_lines(report: dict) -> tuple[list[str], str]:
    grid = report["layer"]["timesteps"]
    lines = [f"Conversion of the shapes ANN (first {report['num_images']} validation images; ANN MIoU on them "
             f"{report['ann_miou']:.3f}):", "", "| T | " + " | ".join(map(str, grid)) + " |",
             "|---|" + "---|" * len(grid)]
    for method in ("layer", "channel"):
        lines.append(f"| {method}-wise | " + " | ".join(f"{m:.3f}" for m in report[method]["miou"]) + " |")
    direct = report.get("direct")
    if direct is None:
        return lines, "direct training vs conversion: not measured (no --compare_workdir)"
    t = direct["timesteps"]
    at_t = {m: dict(zip(grid, report[m]["miou"])).get(t) for m in ("layer", "channel")}
    if None in at_t.values():
        return lines, f"direct training vs conversion: T={t} of the SNN is not in the conversion grid"
    best = max(at_t.values())
    catch_up = [g for g in grid if max(report["layer"]["miou"][grid.index(g)],
                                       report["channel"]["miou"][grid.index(g)]) >= direct["miou"]]
    verdict = "holds" if direct["miou"] > best else "does NOT hold"
    return lines, (f"direct training beats conversion at equal T: {verdict} (T={t}: directly trained SNN "
                   f"{direct['miou']:.3f}, converted layer-wise {at_t['layer']:.3f}, channel-wise "
                   f"{at_t['channel']:.3f}; conversion reaches the direct SNN's MIoU at T="
                   f"{catch_up[0] if catch_up else 'never in the grid'})")


def robustness_lines(data: str, report: dict) -> tuple[list[str], str]:
    sigmas, compare = report["sigmas"], report.get("compare")
    lines = [f"Robustness on {data} (sigma in {report['sigma_unit']} units; relative MIoU drop in %):", "",
             "| sigma | " + " | ".join(f"{s:g}" for s in sigmas) + " |", "|---|" + "---|" * len(sigmas),
             f"| SNN MIoU | {' | '.join(f'{m:.3f}' for m in report['miou'])} |",
             f"| SNN drop | {' | '.join(f'{d:.1f}' for d in report['relative_drop'])} |"]
    if compare is None:
        return lines, f"robustness on {data}: no ANN to compare (no --compare_workdir)"
    lines += [f"| ANN MIoU | {' | '.join(f'{m:.3f}' for m in compare['miou'])} |",
              f"| ANN drop | {' | '.join(f'{d:.1f}' for d in compare['relative_drop'])} |"]
    pairs = list(zip(report["relative_drop"], compare["relative_drop"]))[1:]
    at_most = sum(snn <= ann for snn, ann in pairs)
    verdict = "holds" if at_most == len(pairs) else ("does NOT hold" if at_most == 0 else "holds only in part")
    scope = "" if data == "shapes" else " (the paper claims it for static images only)"
    return lines, (f"SNN relative drop <= ANN's on {data}{scope}: {verdict} ({at_most} of {len(pairs)} noise "
                   f"levels)")


def energy_lines(data: str, arch: str, report: dict) -> tuple[list[str], str]:
    rates = [f"{e['name']} {e['output_spike_rate']:.2f}" for e in report["layers"] if e["output_spike_rate"] is not None]
    mac = [e["name"] for e in report["layers"] if e["mac"]]
    lines = [f"Energy on {data} (T={report['timesteps']}): E_ANN {report['e_ann_pj'] / 1e6:.2f} uJ, E_SNN "
             f"{report['e_snn_pj'] / 1e6:.2f} uJ, ratio {report['ratio']:.2f}; MAC layers: {', '.join(mac) or 'none'}; "
             f"spikes per neuron over T: {', '.join(rates)}."]
    paper, paper_data = PAPER_RATIOS[(arch, data)]
    verdict = "holds" if report["ratio"] > 1 else "does NOT hold"
    return lines, (f"E_ANN/E_SNN > 1 on {data}: {verdict} ({report['ratio']:.2f}; paper Table 5, {arch} on "
                   f"{paper_data} at T=20: {paper})")


def activation_lines(data: str, report: dict) -> list[str]:
    spread = ", ".join(f"{layer['name']} {layer['channel_median']:.2f}/{layer['spatial_median']:.2f}"
                       for layer in report["layers"])
    return [f"Activation spread of the {data} ANN (median over channels / positions of the max activation, "
            f"normalized by the layer max): {spread}."]


def main(runs: str) -> None:
    arch = os.environ.get("ARCH", "deeplab")
    out, verdicts = ["Trained and validated:", "", *training_lines(runs), ""], []
    conversion = read(os.path.join(runs, "shapes_ann", "analysis", "conversion.json"))
    if conversion:
        lines, verdict = conversion_lines(conversion)
        out += [*lines, ""]
        verdicts.append(verdict)
    for data in ("shapes", "events"):
        robustness = read(os.path.join(runs, f"{data}_snn", "analysis", "robustness.json"))
        if robustness:
            lines, verdict = robustness_lines(data, robustness)
            out += [*lines, ""]
            verdicts.append(verdict)
    for data in ("shapes", "events"):
        energy = read(os.path.join(runs, f"{data}_snn", "analysis", "energy.json"))
        if energy:
            lines, verdict = energy_lines(data, arch, energy)
            out += [*lines, ""]
            verdicts.append(verdict)
    for data in ("shapes", "events"):
        activations = read(os.path.join(runs, f"{data}_ann", "analysis", "activations.json"))
        if activations:
            out += [*activation_lines(data, activations), ""]
    out += ["Paper findings:", "", *[f"- {v}" for v in verdicts]]
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RUNS_DIR")
    main(sys.argv[1])
