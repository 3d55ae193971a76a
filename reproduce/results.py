"""The numbers README.md and docs/ show: collected into committed result files, and rendered from them.

    python -m reproduce.results embedded RUNS_DIR [--out docs/results/embedded_deeplab.json]
    python -m reproduce.results photo WORKDIR --timings FILE [--out docs/results/photo_check.json]
    python -m reproduce.results performance DIR [--out docs/results/performance.json]
    python -m reproduce.results paper RUNS_DIR [--out docs/results/paper_settings.json]
    python -m reproduce.results sparsity RUNS_DIR [--out docs/results/sparsity_demo.json] [--figure PNG]
    python -m reproduce.results readme [--check]

`embedded` reads the runs of reproduce/embedded_results.sh (eval_val.json, analysis/*.json, timings.jsonl)
and prints them as Markdown; `photo` reads the photo-check run of reproduce/photo_check.sh; `performance`
reads the JSON lines that reproduce/performance_results.sh wrote into DIR; `paper` reads the runs of
reproduce/paper_settings.sh and prints its table; `sparsity` reads the runs of reproduce/sparsity_frontier.sh
(with --figure it also draws MIoU against E_ANN / E_SNN). With --out each writes its
result file, with the machine it ran on and the code's commit. `readme` renders the blocks
between `<!-- results: NAME -->` and `<!-- /results -->` of README.md and of the pages of docs/ from
docs/results/*.json; --check only compares, printing what differs and exiting
with status 1 when anything does (tests/test_readme_results.py runs it). reproduce/regenerate_results.sh
runs all of it. Run from the repository root.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from snnseg_jax import checkpoints, cli
from snnseg_jax.analysis import headlines
from snnseg_jax.sparsity import ENERGY_RATIO, SPIKES_PER_NEURON

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
# Paper Table 5, E_ANN / E_SNN at T = 20, by (architecture, embedded dataset): (ratio, paper dataset).
PAPER_RATIOS = {
    ("deeplab", "shapes"): (2.75, "VOC2012"),
    ("deeplab", "events"): (1.15, "DDD17"),
    ("fcn", "shapes"): (2.37, "VOC2012"),
    ("fcn", "events"): (1.04, "DDD17"),
}
# Paper Table 2 on VOC2012: (spiking MIoU, ANN MIoU), by architecture.
PAPER_VOC_MIOU = {"deeplab": (22.3, 32.3), "fcn": (9.9, 30.9)}
NETWORK_NAMES = {"deeplab": ("Spiking-DeepLab", "DeepLab"), "fcn": ("Spiking-FCN", "FCN")}
DROPPED = {"channel_max", "spatial_max", "palette", "class_names", "workdir", "iou_per_class"}  # too long for docs
GIB = 2.0**30


# ---------------------------------------------------------------- collecting


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def provenance(generated_by: str) -> dict:
    """Where a result file comes from: script, code commit (+changes if code is uncommitted), date, machine.

    The files a regeneration writes on its way (the result files, figures and README) are not code.
    """
    git = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs", ":!README.md")
    commit = git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")
    return {
        "generated_by": generated_by,
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
    }


def machine() -> dict:
    """The machine this runs on: CPU, cores, memory, JAX and its default device."""
    import jax

    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }


def timings(path: Path) -> dict[str, dict]:
    """The last timing of each command in a timings.jsonl, leaving out training runs that resumed."""
    found = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if not entry.get("resumed"):
                found[entry.pop("name")] = entry
    return found


def trimmed(report):
    """`report` without its long per-channel, per-position and per-class lists, however deep."""
    if isinstance(report, list):
        return [trimmed(v) for v in report]
    if isinstance(report, dict):
        return {k: trimmed(v) for k, v in report.items() if k not in DROPPED}
    return report


def collect_runs(runs: Path) -> dict[str, dict]:
    """Per run directory (`shapes_snn`, ...): its model, T, width, steps, validation metrics and trimmed
    analyses."""
    found = {}
    for run_dir in sorted(p for p in runs.iterdir() if (p / "eval_val.json").exists()):
        evaluation, (_, config) = read_json(run_dir / "eval_val.json"), checkpoints.saved_config(str(run_dir))
        analyses = {p.stem: trimmed(read_json(p)) for p in sorted((run_dir / "analysis").glob("*.json"))}
        found[run_dir.name] = {
            "model": config["model"]["name"],
            "dataset": config["dataset"]["name"],
            "timesteps": config["model"]["timesteps"],
            "width": config["model"]["width"],
            "steps": evaluation["step"],
            "miou": evaluation["miou"],
            "pixel_accuracy": evaluation["pixel_accuracy"],
            "num_images": evaluation["num_images"],
            "analyses": analyses,
        }
    return found


def collect_embedded(runs: Path) -> dict:
    """The runs of reproduce/embedded_results.sh (`collect_runs`) and their timings."""
    return {
        "arch": os.environ.get("ARCH", "deeplab"),
        "runs": collect_runs(runs),
        "timings": timings(runs / "timings.jsonl"),
    }


# The runs of reproduce/stream_training.sh, <arch>_<mode>, and what each was trained on.
STREAM_MODES = {
    "windows": "windows from zero state",
    "window_end": "streams, scored at window ends",
    "streams": "streams, scored every frame",
}


def collect_streams(runs: Path) -> dict:
    """The runs of reproduce/stream_training.sh (`collect_runs`), each with its streaming analysis, and
    their timings."""
    found = collect_runs(runs)
    missing = [name for name, run in found.items() if "streaming" not in run["analyses"]]
    if not found or missing:
        raise cli.UserError(
            f"{runs}: {'no evaluated runs' if not found else 'no streaming analysis in ' + ', '.join(missing)}; "
            "reproduce/stream_training.sh trains and evaluates them"
        )
    return {"runs": found, "timings": timings(runs / "timings.jsonl")}


def spikes_along_training(run_dir: Path) -> list[dict]:
    """The spike statistics of a spiking run's training lines in its metrics.jsonl (each the mean over
    the batches of its logging window): per line, the step, the estimated E_ANN / E_SNN, the spikes per
    neuron over T averaged over the layers and each layer's."""
    mean, prefix = SPIKES_PER_NEURON, SPIKES_PER_NEURON + "/"
    along = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if mean in record:
            along.append(
                {
                    "step": record["step"],
                    "energy_ratio": record[ENERGY_RATIO],
                    "spikes_per_neuron": record[mean],
                    "layers": {k.removeprefix(prefix): v for k, v in record.items() if k.startswith(prefix)},
                }
            )
    return along


def collect_paper(runs: Path) -> dict:
    """The runs of reproduce/paper_settings.sh (`collect_runs`), each spiking run with its spike statistics
    along training (`spikes_along_training`), and their timings."""
    found = collect_runs(runs)
    for name, run in found.items():
        if run["model"].startswith("spiking_"):
            run["along_training"] = spikes_along_training(runs / name)
    return {"runs": found, "timings": timings(runs / "timings.jsonl")}


def collect_photo(workdir: Path, timings_path: Path) -> dict:
    """The photo check: validation MIoU against predicting background everywhere, and its timings."""
    import numpy as np

    from snnseg_jax.data import loading

    evaluation = read_json(workdir / "eval_val.json")
    _, config = checkpoints.saved_config(str(workdir))
    labels = loading.load_split("voc2012", config["dataset"]["root"], "val", config["dataset"]["image_size"]).labels
    valid = labels[labels != 255]
    return {
        "model": config["model"]["name"],
        "width": config["model"]["width"],
        "steps": evaluation["step"],
        "miou": evaluation["miou"],
        "pixel_accuracy": evaluation["pixel_accuracy"],
        "num_images": evaluation["num_images"],
        "background_miou": float(np.mean(valid == 0) / len(np.unique(valid))),
        "timings": timings(timings_path),
    }


def collect_performance(directory: Path) -> dict:
    """The benchmark's JSON lines (`<name>.json` in `directory`, each the last line of a run), by name."""
    found = {}
    for path in sorted(directory.glob("*.json")):
        lines = path.read_text().strip().splitlines()
        if lines:
            found[path.stem] = json.loads(lines[-1])
    return {"runs": found, "timings": timings(directory / "timings.jsonl")}


def manifest(runs: Path) -> list[dict]:
    """The runs that reproduce/sparsity_frontier.sh planned in `runs` (its runs.jsonl): name, config, overrides."""
    path = runs / "runs.jsonl"
    if not path.exists():
        raise cli.UserError(f"{path}: not found; reproduce/sparsity_frontier.sh writes it beside its runs")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sparsity_point(run: dict, entry: dict, run_dir: Path) -> dict:
    """One spiking run of the frontier: its lambda, MIoU, energy ratio and spikes per neuron by layer."""
    energy, robustness = run["analyses"]["energy"], run["analyses"].get("robustness")
    spikes = checkpoints.saved_config(str(run_dir))[1]["spikes"]
    noise = {"robustness": {k: robustness[k] for k in ("sigmas", "relative_drop")}} if robustness else {}
    return {
        "run": entry["run"],
        "overrides": entry["overrides"],
        "lambda": spikes["penalty"],
        "weighting": spikes["weighting"],
        **({"target_rate": spikes["target_rate"]} if spikes["weighting"] == "rate" else {}),
        **({"warmup_steps": spikes["warmup_steps"]} if spikes.get("warmup_steps") else {}),  # runs before it: none
        "miou": run["miou"],
        "energy_ratio": energy["ratio"],
        "e_ann_pj": energy["e_ann_pj"],
        "e_snn_pj": energy["e_snn_pj"],
        "spikes_per_neuron": {
            layer["name"]: layer["output_spike_rate"]
            for layer in energy["layers"]
            if layer["output_spike_rate"] is not None
        },
        **noise,  # the `robustness` analysis, where it ran: relative MIoU drop (%) at each noise sigma
    }


def collect_sparsity(runs: Path, earlier: dict | None = None) -> dict:
    """The runs of reproduce/sparsity_frontier.sh: per network its ANN twin and, per spike budget, the
    spiking network's MIoU (also as a fraction of the twin's), E_ANN / E_SNN and spikes per neuron by
    layer; the paper's Table 5 point; the planned runs that did not finish (`missing`); the timings.

    With `earlier` (a result file of this collection), its runs that `runs` lacks are kept, each point
    stamped with the commit and date it was collected at (see `keep_earlier`)."""
    found, networks, missing = collect_runs(runs), {}, []
    for entry in manifest(runs):
        run, arch = found.get(entry["run"]), entry["run"].split("_")[0]
        spiking = run is not None and run["model"].startswith("spiking_")
        if run is None or (spiking and "energy" not in run["analyses"]):
            missing.append(entry["run"])
            continue
        paper_snn, paper_ann = PAPER_VOC_MIOU[arch]
        network = networks.setdefault(
            arch,
            {
                "config": entry["config"],
                "timesteps": run["timesteps"],
                "width": run["width"],
                "steps": run["steps"],
                "num_images": run["num_images"],
                "ann": None,
                "points": [],
                "paper": {
                    "energy_ratio": PAPER_RATIOS[(arch, "shapes")][0],
                    "miou": paper_snn / 100,
                    "ann_miou": paper_ann / 100,
                    "miou_to_ann": paper_snn / paper_ann,
                    "dataset": PAPER_RATIOS[(arch, "shapes")][1],
                },
            },
        )
        if spiking:
            network["points"].append(sparsity_point(run, entry, runs / entry["run"]))
        else:
            network["ann"] = {"run": entry["run"], "overrides": entry["overrides"], "miou": run["miou"]}
    timings_found = timings(runs / "timings.jsonl")
    if earlier is not None:
        keep_earlier(earlier, networks, timings_found)
        kept = collected_runs(networks)
        missing = [name for name in missing if name not in kept]
    for network in networks.values():
        network["points"].sort(key=budget_order)
        for point in network["points"]:
            if "collected" not in point:
                point["miou_to_ann"] = point["miou"] / network["ann"]["miou"] if network["ann"] else None
    return {"networks": networks, "missing": missing, "timings": timings_found}


def collected_runs(networks: dict) -> set[str]:
    """The names of the runs in `networks` (collect_sparsity's): ANN twins and spiking points."""
    names = {network["ann"]["run"] for network in networks.values() if network["ann"]}
    return names | {point["run"] for network in networks.values() for point in network["points"]}


SPARSITY_SETTINGS = ("config", "timesteps", "width", "steps", "num_images")  # what every point of a network shares


def keep_earlier(earlier: dict, networks: dict, timings_found: dict) -> None:
    """Adds to `networks` and `timings_found` (in place) the runs of the `earlier` result file that they
    lack: a frontier grows by runs of several sessions without retraining the old ones. A kept run
    carries `collected` (the commit and date of the file it comes from, and for a point the MIoU of the
    twin it was measured against, which its `miou_to_ann` keeps: a twin trained again on another
    machine need not give the same MIoU), unless it already did."""
    have = collected_runs(networks)
    stamp = {"commit": earlier["commit"], "date": earlier["date"]}
    for arch, old in earlier["networks"].items():
        network = networks.setdefault(arch, {**old, "ann": None, "points": []})
        differ = [key for key in SPARSITY_SETTINGS if network[key] != old[key]]
        if differ:
            raise cli.UserError(
                f"the earlier frontier's {NETWORK_NAMES[arch][0]} was trained with other settings ("
                + ", ".join(f"{key} {old[key]} there, {network[key]} here" for key in differ)
                + "): its points cannot join these"
            )
        if network["ann"] is None and old["ann"] is not None:
            network["ann"] = {"collected": stamp, **old["ann"]}
        twin = {"ann_miou": old["ann"]["miou"]} if old["ann"] else {}
        network["points"] += [{"collected": {**stamp, **twin}, **p} for p in old["points"] if p["run"] not in have]
    kept = collected_runs(networks) - have
    timings_found.update({name: entry for name, entry in earlier["timings"].items() if name.split()[-1] in kept})


def budget_order(point: dict) -> tuple:
    """Points in the order of their spike budget: the energy weighting first, by lambda; then the rate
    weighting, by target and lambda; within each, the budgets without a warm-up first."""
    warmup = point.get("warmup_steps", 0)
    return point["weighting"] != "energy", point.get("target_rate", 0.0), warmup, point["lambda"]


def budget_details(point: dict) -> list[str]:
    """What a point's budget is beyond its weighting and lambda: the rate target, the warm-up."""
    details = [f"rate > {point['target_rate']:g}"] if point["weighting"] == "rate" else []
    return details + ([f"warm-up {point['warmup_steps']}"] if point.get("warmup_steps") else [])


def budget_label(point: dict) -> str:
    """A point's spike budget in a table: its lambda and `budget_details`."""
    return ", ".join([f"{point['lambda']:g}", *budget_details(point)])


def budget_kind(point: dict) -> str:
    """A point's spike budget but for its lambda: the figure draws one line per kind."""
    return ", ".join([f"{point['weighting']} weighting", *budget_details(point)])


# ---------------------------------------------------------------- rendering


def duration(seconds: float) -> str:
    """`42 s`, `5 min 16 s`, `1 h 02 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def machine_line(result: dict, loads: list[float]) -> str:
    """Where and under what load the times of `result` were measured."""
    m = result["machine"]
    load = (
        f"load average {min(loads):.1f}–{max(loads):.1f} on its {m['cpus']} cores while measuring"
        if loads
        else "load not recorded"
    )
    return (
        f"Wall-clock times measured by `{result['generated_by']}` on {result['date']} (code {result['commit']}): "
        f"{m['cpus']} CPU cores ({m['cpu']}, {m['memory_gib']:g} GiB), JAX {m['jax']} on {m['device']}; "
        f"{load}. A machine shared with other jobs is slower; regenerate on a quiet one to compare."
    )


def loads_of(entries: list[dict]) -> list[float]:
    return [e[k] for e in entries for k in ("load_before", "load_after") if k in e]


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def numbers(values: list[float], digits: int) -> list[str]:
    return [f"{v:.{digits}f}" for v in values]


def run_of(embedded: dict, data: str, kind: str) -> dict | None:
    return embedded["runs"].get(f"{data}_{kind}")


def analysis_of(embedded: dict, run_name: str, name: str) -> dict | None:
    return embedded["runs"].get(run_name, {}).get("analyses", {}).get(name)


def quickstart(results: dict) -> str:
    """The Quickstart's commands: what each gives and how long it took."""
    e = results["embedded_deeplab"]
    t, snn, ann = e["timings"], run_of(e, "shapes", "snn"), run_of(e, "shapes", "ann")
    rows = [
        [
            "2. train the demo",
            duration(t["train shapes_snn"]["seconds"]),
            f"validation MIoU {snn['miou']:.3f} (pixel accuracy {snn['pixel_accuracy']:.3f}) after {snn['steps']:,} "
            f"steps",
        ],
        [
            "3. evaluate it",
            duration(t["eval shapes_snn"]["seconds"]),
            f"the same numbers over the {snn['num_images']} validation images",
        ],
        [
            "4. train the ANN twin",
            duration(t["train shapes_ann"]["seconds"]),
            f"validation MIoU {ann['miou']:.3f} (pixel accuracy {ann['pixel_accuracy']:.3f}); the SNN reaches "
            f"{snn['miou'] / ann['miou']:.2f} of it",
        ],
        [
            "5. analyses of the SNN",
            duration(t["analyses shapes_snn"]["seconds"]),
            "energy, robustness, samples, latency",
        ],
        ["5. analyses of the ANN", duration(t["analyses shapes_ann"]["seconds"]), "conversion, activations, samples"],
    ]
    return (
        table(["step", "wall clock", "result"], rows)
        + "\n\n"
        + machine_line(e, loads_of([t[k] for k in t if "shapes" in k]))
    )


def quickstart_output(results: dict) -> str:
    """The headlines that the two analysis commands print (each also prints its time and files)."""
    e = results["embedded_deeplab"]
    lines = [
        f"{name}: {headlines.headline(name, analysis_of(e, run_name, name))}"
        for run_name, names in (
            ("shapes_snn", ("energy", "robustness", "samples", "latency")),
            ("shapes_ann", ("conversion", "activations", "samples")),
        )
        for name in names
    ]
    return "```\n" + "\n".join(lines) + "\n```"


def embedded_training(results: dict) -> str:
    e, rows = results["embedded_deeplab"], []
    for data in ("shapes", "events"):
        for kind in ("snn", "ann"):
            run = run_of(e, data, kind)
            if run:
                rows.append(
                    [
                        data,
                        f"{kind.upper()} (`{run['model']}`)",
                        run["timesteps"] if kind == "snn" else "-",
                        f"{run['steps']:,}",
                        f"{run['miou']:.3f}",
                        f"{run['pixel_accuracy']:.3f}",
                    ]
                )
    return table(["data", "network", "T", "steps", "MIoU (val)", "pixel accuracy"], rows)


def conversion(results: dict) -> str:
    report = analysis_of(results["embedded_deeplab"], "shapes_ann", "conversion")
    grid = report["layer"]["timesteps"]
    rows = [[f"{method}-wise", *numbers(report[method]["miou"], 3)] for method in ("layer", "channel")]
    return (
        f"Conversion of the shapes ANN (first {report['num_images']} validation images; ANN MIoU on them "
        f"{report['ann_miou']:.3f}):\n\n" + table(["T", *map(str, grid)], rows)
    )


def robustness(data: str) -> Callable[[dict], str]:
    def render(results: dict) -> str:
        report = analysis_of(results["embedded_deeplab"], f"{data}_snn", "robustness")
        rows = [["SNN MIoU", *numbers(report["miou"], 3)], ["SNN drop", *numbers(report["relative_drop"], 1)]]
        if "compare" in report:
            rows += [
                ["ANN MIoU", *numbers(report["compare"]["miou"], 3)],
                ["ANN drop", *numbers(report["compare"]["relative_drop"], 1)],
            ]
        return f"Robustness on {data} (sigma in {report['sigma_unit']} units; relative MIoU drop in %):\n\n" + table(
            ["sigma", *(f"{s:g}" for s in report["sigmas"])], rows
        )

    return render


def energy(results: dict) -> str:
    rows = []
    for data in ("shapes", "events"):
        report = analysis_of(results["embedded_deeplab"], f"{data}_snn", "energy")
        if report:
            rates = [layer["output_spike_rate"] for layer in report["layers"] if layer["output_spike_rate"] is not None]
            mac = [layer["name"] for layer in report["layers"] if layer["mac"]]
            rows.append(
                [
                    data,
                    report["timesteps"],
                    f"{report['e_ann_pj'] / 1e6:.2f}",
                    f"{report['e_snn_pj'] / 1e6:.2f}",
                    f"**{report['ratio']:.2f}**",
                    f"{min(rates):.2f}–{max(rates):.2f}",
                    ", ".join(mac) or "none",
                ]
            )
    return table(
        [
            "data",
            "T",
            "E_ANN (µJ)",
            "E_SNN (µJ)",
            "E_ANN / E_SNN",
            "spikes per neuron over T",
            "layers that multiply-accumulate",
        ],
        rows,
    )


def activations(results: dict) -> str:
    rows = []
    for data in ("shapes", "events"):
        report = analysis_of(results["embedded_deeplab"], f"{data}_ann", "activations")
        if report:
            by_channel = sorted(report["layers"], key=lambda layer: layer["channel_median"])
            spatial = [layer["spatial_median"] for layer in report["layers"]]
            rows.append(
                [
                    data,
                    report["num_images"],
                    f"{by_channel[0]['channel_median']:.2f} ({by_channel[0]['name']})",
                    f"{by_channel[-1]['channel_median']:.2f} ({by_channel[-1]['name']})",
                    f"{min(spatial):.2f}–{max(spatial):.2f}",
                ]
            )
    return table(
        [
            "data",
            "images",
            "median channel maximum: lowest layer",
            "highest layer",
            "median position maximum, range over layers",
        ],
        rows,
    )


def verdict(count: int, total: int) -> str:
    return "holds" if count == total else ("does NOT hold" if count == 0 else f"holds at {count} of {total}")


def conversion_findings(report: dict) -> list[str]:
    direct, grid = report["direct"], report["layer"]["timesteps"]
    at_t = {m: dict(zip(grid, report[m]["miou"]))[direct["timesteps"]] for m in ("layer", "channel")}
    catch_up = next(
        (
            t
            for i, t in enumerate(grid)
            if max(report["layer"]["miou"][i], report["channel"]["miou"][i]) >= direct["miou"]
        ),
        None,
    )
    reach = {m: headlines.first_reaching(report, m) for m in ("layer", "channel")}
    reach_text = {m: f"at T = {t}" if t else f"not by T = {grid[-1]}" for m, t in reach.items()}
    faster = reach["channel"] is not None and (reach["layer"] is None or reach["channel"] <= reach["layer"])
    return [
        f"*Direct training beats conversion at equal T*: **{verdict(direct['miou'] > max(at_t.values()), 1)}**. "
        f"At T = {direct['timesteps']} the directly trained SNN scores {direct['miou']:.3f} on the same "
        f"{report['num_images']} images; the converted ANN scores {at_t['layer']:.3f} (layer-wise) and "
        f"{at_t['channel']:.3f} (channel-wise). Conversion reaches the direct SNN "
        f"{f'at T = {catch_up}' if catch_up else 'at no T of the grid'}, and {headlines.REACHED:.0%} of its "
        f"ANN's {report['ann_miou']:.3f} {reach_text['layer']} layer-wise and {reach_text['channel']} "
        f"channel-wise.",
        f"*Channel-wise balancing converges faster than layer-wise*: **{verdict(faster, 1)}** "
        f"(to {headlines.REACHED:.0%} of the ANN: {reach_text['channel']} channel-wise, {reach_text['layer']} "
        f"layer-wise).",
    ]


def robustness_finding(data: str, report: dict) -> str:
    pairs = list(zip(report["sigmas"], report["relative_drop"], report["compare"]["relative_drop"]))[1:]
    at_most = sum(snn <= ann for _, snn, ann in pairs)
    listed = ", ".join(f"{snn:.1f} % vs {ann:.1f} % at σ = {s:g}" for s, snn, ann in pairs)
    scope = (
        " (the paper claims it for static images; on DDD17 it reports similar robustness)" if data == "events" else ""
    )
    return (
        f"*The SNN's relative MIoU drop under noise is at most the ANN's*, on {data}{scope}: "
        f"**{verdict(at_most, len(pairs))}{' noise levels' if 0 < at_most < len(pairs) else ''}** ({listed})."
    )


def energy_finding(results: dict) -> str:
    e = results["embedded_deeplab"]
    reports = {d: analysis_of(e, f"{d}_snn", "energy") for d in ("shapes", "events")}
    reports = {d: r for d, r in reports.items() if r}
    ratios = ", ".join(f"{r['ratio']:.2f} on {d}" for d, r in reports.items())
    paper = ", ".join(
        f"{PAPER_RATIOS[(e['arch'], d)][0]} ({e['arch']} on {PAPER_RATIOS[(e['arch'], d)][1]})" for d in reports
    )
    timesteps = sorted({r["timesteps"] for r in reports.values()})
    return (
        f"*E_ANN / E_SNN > 1*: **{verdict(sum(r['ratio'] > 1 for r in reports.values()), len(reports))}** "
        f"({ratios}; the paper's Table 5: {paper}, at T = 20; the demos run T = "
        f"{', '.join(map(str, timesteps))}, and an SNN's cost grows with its spikes, so with T)."
    )


def findings(results: dict) -> str:
    e, lines = results["embedded_deeplab"], []
    report = analysis_of(e, "shapes_ann", "conversion")
    if report and "direct" in report:
        lines += conversion_findings(report)
    for data in ("shapes", "events"):
        report = analysis_of(e, f"{data}_snn", "robustness")
        if report and "compare" in report:
            lines.append(robustness_finding(data, report))
    lines.append(energy_finding(results))
    return "\n".join(f"- {line}" for line in lines)


ANALYSIS_ROWS = (
    ("energy", "snn", "energy (SNN)"),
    ("robustness", "snn", "robustness (SNN and its ANN twin)"),
    ("samples", "snn", "samples (SNN)"),
    ("conversion", "ann", "conversion (ANN)"),
    ("activations", "ann", "activations (ANN)"),
    ("samples", "ann", "samples (ANN)"),
)


def analysis_runtimes(results: dict) -> str:
    """Seconds of each analysis, per architecture and dataset; and of the rest of each evaluate.py command."""
    columns = [
        (arch, data) for arch in ("deeplab", "fcn") if f"embedded_{arch}" in results for data in ("shapes", "events")
    ]
    rows = []
    for name, kind, label in ANALYSIS_ROWS:
        cells = [analysis_of(results[f"embedded_{arch}"], f"{data}_{kind}", name) for arch, data in columns]
        rows.append([label, *(duration(c["seconds"]) if c else "—" for c in cells)])
    rest = []
    for arch, data in columns:
        e = results[f"embedded_{arch}"]
        spent = [
            e["timings"][f"analyses {data}_{kind}"]["seconds"]
            - sum(a.get("seconds", 0) for a in e["runs"][f"{data}_{kind}"]["analyses"].values())
            for kind in ("snn", "ann")
            if f"analyses {data}_{kind}" in e["timings"]
        ]
        rest.append(" / ".join(duration(s) for s in spent) or "—")
    rows.append(["the rest of each command (start-up, plain evaluation; SNN / ANN)", *rest])
    header = ["analysis", *(f"{'DeepLab' if arch == 'deeplab' else 'FCN'}, {data}" for arch, data in columns)]
    lines = [table(header, rows)]
    for arch in dict.fromkeys(arch for arch, _ in columns):
        entries = [t for k, t in results[f"embedded_{arch}"]["timings"].items() if "analyses" in k]
        lines.append(
            f"{'DeepLab' if arch == 'deeplab' else 'FCN'} columns: "
            + machine_line(results[f"embedded_{arch}"], loads_of(entries))
        )
    return "\n\n".join(lines)


def photo_check(results: dict) -> str:
    p = results["photo_check"]
    t = p["timings"]
    return (
        f"`reproduce/photo_check.sh` runs these three commands: the dataset took {duration(t['make']['seconds'])}, "
        f"training {duration(t['train']['seconds'])} and the evaluation {duration(t['evaluate']['seconds'])}, to "
        f"a validation MIoU of {p['miou']:.3f} (pixel accuracy {p['pixel_accuracy']:.3f}) over "
        f"{p['num_images']} images after {p['steps']} steps, against {p['background_miou']:.3f} for predicting "
        f"background everywhere. " + machine_line(p, loads_of(list(t.values())))
    )


# The faster formulations as docs/performance.md describes them, by the benchmark's names for their ablation.
FORMULATIONS = {
    "none": "all of them (`model.tuned_ops=False`)",
    "without conv_1x1_as_matmul": "1×1 convs as matrix products",
    "without conv_in_bounds_taps": "in-bounds taps of the dilation-12 conv",
    "without conv_input_grad_as_forward": "conv input gradients as forward convs",
    "without avg_pool_interleaved_backward": "avg-pool backward in two passes",
    "without time_sum_by_halves": "time sums by halves",
    "without recompute_conv_below_channels": "recomputing convs over < 5 input channels",
    "without order_by_data_dependence": "ordering by data dependence (fused layer)",
    "without xla_cpu_library_fusions": "XLA CPU: YNNPACK for dots and reductions only",
}
MEMORY_SETTINGS = {
    "default": "default (`fused=True`)",
    "model.remat=True": "`--config.model.remat=True`",
    "model.dtype=bfloat16": "`--config.model.dtype=bfloat16`",
    "model.fused=False": "`--config.model.fused=False` (plain autodiff)",
}


def benchmark(results: dict) -> str:
    p = results["performance"]
    b = p["runs"]["benchmark"]
    return (
        f"Train step {b['train_step_seconds']:.2f} s best, {b['train_step_median_seconds']:.2f} s median "
        f"({b['train_flops_per_second'] / 1e9:.0f} GFLOP/s on the Eq. 9 FLOPs ×3); eval step "
        f"{b['eval_step_seconds']:.2f} s best (batch {b['batch_size']}, {b['device']}). "
        + machine_line(p, loads_of([p["timings"]["benchmark"]]))
    )


def memory(results: dict) -> str:
    runs = results["performance"]["runs"]
    rows = [
        [
            label,
            f"{runs[f'memory_{name}']['train_temp_bytes'] / GIB:.2f} GiB",
            f"{runs[f'memory_{name}']['eval_temp_bytes'] / GIB:.2f} GiB",
        ]
        for name, label in MEMORY_SETTINGS.items()
        if f"memory_{name}" in runs
    ]
    return table(["setting", "train step temp memory", "eval step"], rows)


def ablation(results: dict) -> str:
    p = results["performance"]
    rows = p["runs"]["ablation"]
    base = next(r for r in rows if r["variant"] == "all")
    lines = [
        [
            FORMULATIONS.get(r["variant"], r["variant"]),
            f"{r['ratio_best']:.2f}× (median {r['ratio_median']:.2f}×)",
            f"{r['memory_ratio']:.2f}×",
        ]
        for r in rows
        if r["variant"] != "all"
    ]
    return (
        f"All of them on: {base['train_step_seconds']:.2f} s per step (best of the rounds), "
        f"{base['train_temp_bytes'] / GIB:.2f} GiB.\n\n"
        + table(["switched off", "step time", "temp memory"], lines)
        + "\n\n"
        + machine_line(p, loads_of([p["timings"]["ablation"]]))
    )


def torch_comparison(results: dict) -> str:
    p = results["performance"]
    t = p["runs"].get("torch")
    if t is None:
        return (
            "Not measured in the current results: `reproduce/performance_results.sh` compares with the PyTorch "
            "reference where `torch` is installed."
        )
    ours = next(v for k, v in t.items() if isinstance(v, dict) and "best_ratio" in v)
    ref = next(v for k, v in t.items() if isinstance(v, dict) and "best_ratio" not in v)
    return (
        table(
            ["", "reference (torch loop)", "ours (default)", "ratio best / median"],
            [
                [
                    f"batch {t['batch']}, {t['rounds']} rounds",
                    f"{ref['best_seconds']:.2f} s best, {ref['median_seconds']:.2f} s median",
                    f"{ours['best_seconds']:.2f} s, {ours['median_seconds']:.2f} s",
                    f"**{ours['best_ratio']:.2f}× / {ours['median_ratio']:.2f}×**",
                ]
            ],
        )
        + "\n\n"
        + machine_line(p, loads_of([p["timings"]["torch"]]))
    )


def streaming(results: dict) -> str:
    """The events demo streamed: windows against continuous (each late-statistics rule), by position in
    the recording; and the anytime curves of both demos."""
    e = results["embedded_deeplab"]
    report, anytime = analysis_of(e, "events_snn", "streaming"), {}
    for data in ("shapes", "events"):
        anytime[data] = analysis_of(e, f"{data}_snn", "latency")
    rules = report["continuous_miou_by_late_statistics"]
    rows = [
        [
            f"windows of T = {report['timesteps']} frames from zero state (the evaluation)",
            f"{report['windowed_miou']:.3f}",
        ]
    ]
    rows += [
        [f"streamed continuously, BNTT past T: `{rule}`{' (default)' if rule == 'last' else ''}", f"{miou:.3f}"]
        for rule, miou in rules.items()
    ]
    positions = report["continuous_miou_by_position"]
    header = [*map(str, range(1, len(positions))), f"{len(positions)}+"]
    curves = [[f"{data} (T = {len(a['miou'])})", *numbers(a["miou"], 3)] for data, a in anytime.items() if a]
    longest = max(len(c) for c in curves) - 1
    return (
        f"Events demo, {report['frames']:,} validation frames in {report['recordings']} recordings:\n\n"
        + table(["", "MIoU"], rows)
        + "\n\nStreamed MIoU by frame of the recording (default rule):\n\n"
        + table(["frame", *header], [["MIoU", *numbers(positions, 3)]])
        + "\n\nAnytime curves: MIoU of the prediction after t steps (windows from zero state):\n\n"
        + table(
            ["demo", *(f"t = {t}" for t in range(1, longest + 1))], [c + [""] * (longest + 1 - len(c)) for c in curves]
        )
    )


STREAM_CONFIGS = {
    "voc_deeplab": "Spiking-DeepLab, paper size (64×64, width 1)",
    "shapes_deeplab": "Spiking-DeepLab, shapes demo",
    "shapes_fcn": "Spiking-FCN, shapes demo",
    "events_deeplab": "Spiking-DeepLab, events demo",
    "events_fcn": "Spiking-FCN, events demo",
}


def stream_latency(results: dict) -> str:
    """Milliseconds per step at batch 1 against a T-th of the whole window, per config."""
    p = results["performance"]
    rows = [
        [label, r["timesteps"], f"{r['step_ms']:.2f}", f"{r['window_ms']:.2f}", f"{r['ratio_to_window_share']:.2f}×"]
        for name, label in STREAM_CONFIGS.items()
        if (r := p["runs"].get(f"stream_{name}"))
    ]
    entries = [p["timings"][f"stream {name}"] for name in STREAM_CONFIGS if f"stream {name}" in p["timings"]]
    return (
        table(["network (`configs/<name>.py`)", "T", "ms per step", "whole window (ms)", "step / (window / T)"], rows)
        + "\n\n"
        + machine_line(p, loads_of(entries))
    )


def _stream_runs(result: dict) -> list[tuple[str, str, dict]]:
    """(architecture, mode, streaming report) of each run of the stream-training result, in table order."""
    runs = result["runs"]
    return [
        (arch, mode, runs[f"{arch}_{mode}"]["analyses"]["streaming"])
        for arch in NETWORK_NAMES
        for mode in STREAM_MODES
        if f"{arch}_{mode}" in runs
    ]


def _early_and_late(report: dict) -> tuple[float, float]:
    """The streamed MIoU by frame at frames T..2T (averaged) and at the last position (frames 16+)."""
    positions, t = report["continuous_miou_by_position"], report["timesteps"]
    return sum(positions[t - 1 : 2 * t]) / len(positions[t - 1 : 2 * t]), positions[-1]


def stream_training(results: dict) -> str:
    """Window-trained against stream-trained networks of the events demo, each evaluated in windows and
    streamed, with the steps each protocol costs per predicted frame."""
    result = results["stream_training"]
    rows = []
    for arch, mode, r in _stream_runs(result):
        early, late = _early_and_late(r)
        rows.append(
            [
                NETWORK_NAMES[arch][0],
                STREAM_MODES[mode],
                f"{r['windowed_miou']:.3f}",
                f"**{r['continuous_miou']:.3f}**",
                f"{early:.3f} → {late:.3f}",
                f"{r['frames_per_second']:.0f}",
            ]
        )
    t = _stream_runs(result)[0][2]["timesteps"]
    return (
        table(
            [
                "network",
                "trained on",
                f"MIoU in windows ({t} steps per frame)",
                "MIoU streamed (1 step per frame)",
                f"streamed, frames {t}–{2 * t} → 16+",
                "streamed frames/s (batch 1)",
            ],
            rows,
        )
        + "\n\n"
        + stream_findings(result)
    )


def stream_findings(result: dict) -> str:
    """The stream-trained networks against the issue's targets: streamed at least the window-trained
    network's windowed MIoU, windows within 0.02 of it, no decay (last frames within 0.03 of T..2T)."""
    by = {(arch, mode): r for arch, mode, r in _stream_runs(result)}
    lines = []
    for (arch, mode), streams in by.items():
        windows = by.get((arch, "windows"))
        if mode == "windows" or windows is None:
            continue
        early, late = _early_and_late(streams)
        met = [
            streams["continuous_miou"] >= windows["windowed_miou"],
            streams["windowed_miou"] >= windows["windowed_miou"] - 0.02,
            late >= early - 0.03,
        ]
        lines.append(
            f"{NETWORK_NAMES[arch][0]}: trained on {STREAM_MODES[mode]}, it streams at "
            f"{streams['continuous_miou']:.3f} "
            f"against {windows['continuous_miou']:.3f} when trained in windows, "
            f"{streams['continuous_miou'] / windows['windowed_miou']:.2f}× the window-trained network's "
            f"MIoU in windows ({windows['windowed_miou']:.3f}); in windows it scores "
            f"{streams['windowed_miou']:.3f}. Targets met: {sum(met)} of 3 (streamed ≥ windowed "
            f"{'✓' if met[0] else '✗'}, windows within 0.02 {'✓' if met[1] else '✗'}, no decay "
            f"{'✓' if met[2] else '✗'})."
        )
    return "\n".join(f"- {line}" for line in lines)


def stream_training_details(results: dict) -> str:
    """MIoU by frame of the recording of every run streamed, each late-statistics rule, and the times."""
    result = results["stream_training"]
    runs = _stream_runs(result)
    positions = len(runs[0][2]["continuous_miou_by_position"])
    header = ["network, trained on", *map(str, range(1, positions)), f"{positions}+"]
    by_frame = [
        [f"{NETWORK_NAMES[arch][0]}, {mode}", *numbers(r["continuous_miou_by_position"], 3)] for arch, mode, r in runs
    ]
    rules = list(runs[0][2]["continuous_miou_by_late_statistics"])
    by_rule = [
        [
            f"{NETWORK_NAMES[arch][0]}, {mode}",
            *(
                f"**{r['continuous_miou_by_late_statistics'][rule]:.3f}**"
                if rule == r["late_statistics"]
                else f"{r['continuous_miou_by_late_statistics'][rule]:.3f}"
                for rule in rules
            ),
        ]
        for arch, mode, r in runs
    ]
    t = result["timings"]
    trainings = ", ".join(
        f"{name.removeprefix('train ')} {duration(e['seconds'])}" for name, e in t.items() if name.startswith("train ")
    )
    return (
        "Streamed MIoU by frame of the recording:\n\n"
        + table(header, by_frame)
        + "\n\nStreamed MIoU by the BNTT statistics used past step T (`analysis.stream_late_statistics`; "
        + "bold: the run's config):\n\n"
        + table(["network, trained on", *(f"`{rule}`" for rule in rules)], by_rule)
        + f"\n\nTraining times: {trainings}. "
        + machine_line(result, loads_of(list(t.values())))
    )


def paper_settings(results: dict) -> str:
    """The four networks at the paper's settings (reproduce/paper_settings.sh): MIoU, ratios, T = 4 beside
    T = 20, spikes per neuron by layer and the energy ratio."""
    p = results["paper_settings"]
    runs, t = p["runs"], p["timings"]
    first = runs["deeplab_snn"]
    rows, spike_rows, energy_parts = [], {}, []
    for arch, (snn_name, ann_name) in NETWORK_NAMES.items():
        snn, ann, snn_t4 = runs[f"{arch}_snn"], runs[f"{arch}_ann"], runs[f"{arch}_snn_t4"]
        paper_snn, paper_ann = PAPER_VOC_MIOU[arch]
        rows.append(
            [
                f"{snn_name} / {ann_name}",
                f"{snn['miou']:.3f} / {ann['miou']:.3f}",
                f"**{snn['miou'] / ann['miou']:.2f}**",
                f"{snn_t4['miou']:.3f} ({snn_t4['miou'] / ann['miou']:.2f})",
                f"{paper_snn} / {paper_ann} = {paper_snn / paper_ann:.2f}",
            ]
        )
        energy = snn["analyses"]["energy"]
        for layer in energy["layers"]:
            if layer["output_spike_rate"] is not None:
                spike_rows.setdefault(layer["name"], {})[arch] = layer["output_spike_rate"]
        energy_parts.append(f"{snn_name} {energy['ratio']:.2f} (paper {PAPER_RATIOS[(arch, 'shapes')][0]})")
    spikes = table(
        ["conv (its neurons' spikes)", "Spiking-DeepLab", "Spiking-FCN"],
        [
            [f"`{name}`", *(f"{by_arch[a]:.2f}" if a in by_arch else "–" for a in NETWORK_NAMES)]
            for name, by_arch in spike_rows.items()
        ],
    )
    total = sum(e["seconds"] for e in t.values())
    return "\n\n".join(
        [
            table(
                [
                    "network",
                    "MIoU at T = 20, SNN / ANN",
                    "SNN / ANN",
                    "SNN at T = 4 (/ ANN)",
                    "paper (VOC2012, Table 2)",
                ],
                rows,
            ),
            f"Width {first['width']:g}, {first['steps']:,} steps of batch 16 for every run, {first['num_images']} "
            f"validation images; the whole script took {duration(total)}. "
            + machine_line(p, loads_of(list(t.values()))),
            paper_findings(runs),
            "Spikes per neuron over the T = 20 steps, by the conv that drives the neurons (the `energy` analysis "
            "on the validation images; `up*` drive the FCN decoder's neurons):",
            spikes,
            "Energy, E_ANN / E_SNN at T = 20 (Table 4's 45 nm costs): " + "; ".join(energy_parts) + ".",
        ]
    )


def paper_findings(runs: dict) -> str:
    """What the paper-settings table says about the paper's findings, worded from its numbers."""
    ratio = {arch: runs[f"{arch}_snn"]["miou"] / runs[f"{arch}_ann"]["miou"] for arch in NETWORK_NAMES}
    fcn_further = ratio["fcn"] < ratio["deeplab"]
    lines = [
        f"The paper's finding that the spiking FCN trails its ANN further than the spiking DeepLab does "
        f"{'holds' if fcn_further else 'does not hold'} here ({ratio['fcn']:.2f} against "
        f"{ratio['deeplab']:.2f}; the paper has 0.32 against 0.69)."
    ]
    worse_at_20 = [NETWORK_NAMES[a][0] for a in NETWORK_NAMES if runs[f"{a}_snn"]["miou"] < runs[f"{a}_snn_t4"]["miou"]]
    lines.append(
        "At T = 20 "
        + (
            f"{' and '.join(worse_at_20)} trained worse than at T = 4."
            if worse_at_20
            else "both spiking networks trained better than at T = 4, with the same steps."
        )
    )
    return " ".join(lines)


def paper_spikes_along_training(results: dict) -> str:
    """Spikes per neuron and the estimated E_ANN / E_SNN of the training batches along training, for the
    spiking networks at T = 20 of the paper-settings runs, and whether they fell."""
    runs = results["paper_settings"]["runs"]
    along = {arch: runs[f"{arch}_snn"]["along_training"] for arch in NETWORK_NAMES}
    by_step = {arch: {line["step"]: line for line in lines} for arch, lines in along.items()}
    rows = []
    for step in sorted(set().union(*by_step.values())):
        row = [f"{step:,}"]
        for arch in NETWORK_NAMES:
            line = by_step[arch].get(step)
            row += [f"{line['spikes_per_neuron']:.2f}", f"{line['energy_ratio']:.2f}"] if line else ["–", "–"]
        rows.append(row)
    header = ["step"]
    for snn_name, _ in NETWORK_NAMES.values():
        header += [f"{snn_name}: spikes per neuron", "E_ANN / E_SNN"]
    changes = []
    for arch, (snn_name, _) in NETWORK_NAMES.items():
        first, last = along[arch][0], along[arch][-1]
        change = last["spikes_per_neuron"] / first["spikes_per_neuron"] - 1
        trend = "fell" if change < -0.05 else "rose" if change > 0.05 else "stayed within 5 %"
        by_layer = [last["layers"][k] / first["layers"][k] - 1 for k in first["layers"]]
        changes.append(
            f"{snn_name}'s mean {trend} ({first['spikes_per_neuron']:.2f} at step {first['step']:,}, "
            f"{last['spikes_per_neuron']:.2f} at step {last['step']:,}; by layer {min(by_layer):+.0%} to "
            f"{max(by_layer):+.0%})"
        )
    return "\n\n".join(
        [
            table(header, rows),
            "Along training, " + "; ".join(changes) + ". Each row is the mean over the training batches of "
            "its logging window (`metrics.jsonl`), over the layers with neurons; E_ANN / E_SNN is the batch "
            "estimate the spike budget uses.",
        ]
    )


def headline(results: dict) -> str:
    """The paper's main numbers beside ours: MIoU and energy ratios at T = 20, the demos, conversion, speed."""
    runs, e = results["paper_settings"]["runs"], results["embedded_deeplab"]
    first = runs["deeplab_snn"]
    setting = f"photographs, width {first['width']:g}, {first['steps']:,} steps"
    rows = []
    for arch, (snn_name, ann_name) in NETWORK_NAMES.items():
        snn, ann = runs[f"{arch}_snn"]["miou"], runs[f"{arch}_ann"]["miou"]
        paper_snn, paper_ann = PAPER_VOC_MIOU[arch]
        rows.append(
            [
                f"{snn_name} / {ann_name}, MIoU at T = 20",
                f"{paper_snn} / {paper_ann} = {paper_snn / paper_ann:.2f} (VOC2012)",
                f"{snn:.3f} / {ann:.3f} = **{snn / ann:.2f}** ({setting})",
            ]
        )
    for arch, (snn_name, _) in NETWORK_NAMES.items():
        ratio = runs[f"{arch}_snn"]["analyses"]["energy"]["ratio"]
        rows.append(
            [
                f"E_ANN / E_SNN, {snn_name} at T = 20",
                f"{PAPER_RATIOS[(arch, 'shapes')][0]} (VOC2012)",
                f"{ratio:.2f} (photographs)",
            ]
        )
    demos = []
    for data in ("shapes", "events"):
        snn, ann = run_of(e, data, "snn"), run_of(e, data, "ann")
        demos.append(f"{data} {snn['miou']:.3f} / {ann['miou']:.3f} = {snn['miou'] / ann['miou']:.2f}")
    rows.append([f"Spiking-DeepLab / DeepLab, embedded demos at T = {snn['timesteps']}", "–", "; ".join(demos)])
    report = analysis_of(e, "shapes_ann", "conversion")
    direct, at_t = report["direct"], dict(zip(report["layer"]["timesteps"], report["layer"]["miou"]))
    rows.append(
        [
            "directly trained against converted SNN, equal T",
            "direct training wins",
            f"{direct['miou']:.3f} against {at_t[direct['timesteps']]:.3f} (shapes demo, T = {direct['timesteps']})",
        ]
    )
    torch = results["performance"]["runs"].get("torch")
    if torch:
        ours = next(v for v in torch.values() if isinstance(v, dict) and "best_ratio" in v)
        rows.append(
            [
                f"train step time, ours / PyTorch reference (CPU, batch {torch['batch']})",
                "–",
                f"{ours['best_ratio']:.2f}×",
            ]
        )
    return table(["", "paper", "ours"], rows)


# ---------------------------------------------------------------- the sparsity frontier

MIOU_FLOOR = 0.85  # the fraction of the ANN twin's MIoU that a point of the frontier must keep to count


def frontier(points: list[dict]) -> list[dict]:
    """The points no other point beats in both MIoU and E_ANN / E_SNN (the Pareto frontier), by lambda."""
    beats = lambda q, p: q["miou"] >= p["miou"] and q["energy_ratio"] >= p["energy_ratio"] and q is not p
    return [p for p in points if not any(beats(q, p) for q in points)]


def best_kept(network: dict) -> dict | None:
    """The point with the highest E_ANN / E_SNN among those keeping MIOU_FLOOR of the twin's MIoU."""
    kept = [p for p in network["points"] if p["miou_to_ann"] is not None and p["miou_to_ann"] >= MIOU_FLOOR]
    return max(kept, key=lambda p: p["energy_ratio"], default=None)


def sparsity_row(snn_name: str, point: dict) -> list[str]:
    rates = point["spikes_per_neuron"].values()
    to_ann = "–" if point["miou_to_ann"] is None else f"{point['miou_to_ann']:.2f}"
    return [
        snn_name,
        budget_label(point),
        f"{point['miou']:.3f}",
        to_ann,
        f"**{point['energy_ratio']:.2f}**",
        f"{min(rates):.2f}–{max(rates):.2f}" if rates else "–",
    ]


def sparsity_settings_line(result: dict) -> str:
    """How the frontier's runs were trained, what is missing, and how long they took where."""
    parts = []
    for arch, network in result["networks"].items():
        parts.append(
            f"{NETWORK_NAMES[arch][0]}: `{network['config']}`, width {network['width']:g}, T = "
            f"{network['timesteps']}, {network['steps']:,} steps, {network['num_images']} validation images"
        )
    missing = f" Not finished: {', '.join(result['missing'])}." if result["missing"] else ""
    kept = {}
    for network in result["networks"].values():
        for run in [network["ann"] or {}, *network["points"]]:
            if "collected" in run:
                c = run["collected"]
                kept.setdefault((c["commit"], c["date"], c.get("ann_miou")), []).append(run["run"])
    earlier = "".join(
        f" Kept from the collection of {date} (commit {commit}): {', '.join(names)}"
        + ("." if twin is None else f" (their / ANN against that collection's twin, MIoU {twin:.3f}).")
        for (commit, date, twin), names in kept.items()
    )
    t = result["timings"]
    return (
        "; ".join(parts)
        + f". Every run's overrides are in the result file.{missing}{earlier} The frontier's commands took "
        + f"{duration(sum(e['seconds'] for e in t.values()))}, added up. "
        + machine_line(result, loads_of(list(t.values())))
    )


def sparsity_findings(result: dict) -> str:
    """Per network: the highest E_ANN / E_SNN that keeps MIOU_FLOOR of the twin's MIoU, against the paper's."""
    lines = []
    for arch, network in result["networks"].items():
        best, paper = best_kept(network), network["paper"]
        theirs = f"the paper's {paper['energy_ratio']} at {paper['miou_to_ann']:.2f} of its ANN's MIoU"
        if best is None:
            lines.append(f"{NETWORK_NAMES[arch][0]}: no λ keeps {MIOU_FLOOR:g} of the ANN twin's MIoU ({theirs}).")
            continue
        verdict = "at or above" if best["energy_ratio"] >= paper["energy_ratio"] else "below"
        lines.append(
            f"{NETWORK_NAMES[arch][0]}: the highest E_ANN / E_SNN that keeps {MIOU_FLOOR:g} of the ANN twin's MIoU "
            f"is {best['energy_ratio']:.2f} (λ = {budget_label(best)}, {best['miou_to_ann']:.2f} of it), {verdict} "
            f"{theirs}."
        )
    return " ".join(lines)


def sparsity_table(result: dict) -> str:
    """Every run of a frontier: the ANN twin, then MIoU, its fraction of the twin's and E_ANN / E_SNN per λ."""
    rows = []
    for arch, network in result["networks"].items():
        snn_name, ann_name = NETWORK_NAMES[arch]
        if network["ann"]:
            rows.append([f"{ann_name} (ANN twin)", "–", f"{network['ann']['miou']:.3f}", "1", "1", "–"])
        rows += [sparsity_row(snn_name, point) for point in network["points"]]
        paper = network["paper"]
        rows.append(
            [
                f"{snn_name}, paper ({paper['dataset']})",
                "–",
                f"{paper['miou']:.3f}",
                f"{paper['miou_to_ann']:.2f}",
                f"{paper['energy_ratio']}",
                "–",
            ]
        )
    return table(["network", "λ", "MIoU", "/ ANN", "E_ANN / E_SNN", "spikes per neuron over T"], rows)


def sparsity_spikes(result: dict) -> str:
    """Spikes per neuron over T by the conv that drives the neurons, one column per λ, per network."""
    tables = []
    for arch, network in result["networks"].items():
        layers = list(dict.fromkeys(name for p in network["points"] for name in p["spikes_per_neuron"]))
        rows = [[f"`{name}`", *(f"{p['spikes_per_neuron'][name]:.2f}" for p in network["points"])] for name in layers]
        header = [f"{NETWORK_NAMES[arch][0]}: conv", *(f"λ = {budget_label(p)}" for p in network["points"])]
        tables.append(table(header, rows))
    return "\n\n".join(tables)


def sparsity_robustness(result: dict) -> list[str]:
    """The relative MIoU drop under noise of the points where the `robustness` analysis ran, per λ (no
    paragraph if it ran nowhere)."""
    rows, sigmas = [], []
    for arch, network in result["networks"].items():
        for point in network["points"]:
            if "robustness" in point:
                sigmas, drops = point["robustness"]["sigmas"][1:], point["robustness"]["relative_drop"][1:]
                rows.append([NETWORK_NAMES[arch][0], budget_label(point), *(f"{d:.1f} %" for d in drops)])
    if not rows:
        return []
    return [
        "Relative MIoU drop under Gaussian noise (the `robustness` analysis; σ in 0–255 pixel units):",
        table(["network", "λ", *(f"σ = {s:g}" for s in sigmas)], rows),
    ]


def sparsity(settings: str) -> Callable[[dict], str]:
    """The block of docs/results.md that shows the frontier at `settings` (demo or paper) in full."""

    def render(results: dict) -> str:
        result = results[f"sparsity_{settings}"]
        return "\n\n".join(
            [
                sparsity_table(result),
                sparsity_findings(result),
                sparsity_settings_line(result),
                "Spikes per neuron over T, by the conv that drives the neurons (the `energy` analysis on the "
                "validation images):",
                sparsity_spikes(result),
                *sparsity_robustness(result),
            ]
        )

    return render


def sparsity_summary(results: dict) -> str:
    """README's short table: per measured setting and network, the λ on the frontier."""
    rows = []
    for settings in ("paper", "demo"):
        result = results.get(f"sparsity_{settings}")
        for arch, network in (result or {}).get("networks", {}).items():
            for point in frontier(network["points"]):
                rows.append([settings, *sparsity_row(NETWORK_NAMES[arch][0], point)[:5]])
    return table(["settings", "network", "λ", "MIoU", "/ ANN", "E_ANN / E_SNN"], rows)


def spike_budget_demo(results: dict) -> str:
    """docs/training.md's sentence on what λ does on the shapes demo."""
    result = results["sparsity_demo"]
    parts = []
    for arch, network in result["networks"].items():
        points = "; ".join(
            f"λ = {p['lambda']:g}: MIoU {p['miou']:.3f}, E_ANN / E_SNN {p['energy_ratio']:.2f}"
            for p in network["points"]
        )
        parts.append(f"{NETWORK_NAMES[arch][0]} ({network['steps']:,} steps) {points}")
    return "On the shapes demo, " + ". ".join(parts) + " ([Results](results.md#trading-accuracy-for-energy))."


def sparsity_figure(result: dict):
    """MIoU as a fraction of the ANN twin's against E_ANN / E_SNN, per network, with the twins and the
    paper's Table 5 points marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.4, 4.2), layout="constrained")
    ax = figure.subplots()
    for (arch, network), color in zip(result["networks"].items(), ("tab:blue", "tab:orange")):
        points = [p for p in network["points"] if p["miou_to_ann"] is not None]
        kinds = list(dict.fromkeys(budget_kind(p) for p in points))  # in budget order
        for kind, marker in zip(kinds, itertools.cycle("osD^vP")):
            line = [p for p in points if budget_kind(p) == kind]
            ax.plot(
                [p["energy_ratio"] for p in line],
                [p["miou_to_ann"] for p in line],
                marker=marker,
                linestyle="-" if line[0]["weighting"] == "energy" else "--",
                color=color,
                label=f"{NETWORK_NAMES[arch][0]}, {kind}",
            )
        for p in points:
            ax.annotate(
                f"λ={p['lambda']:g}",  # the rest of the budget is the line's, in the legend
                (p["energy_ratio"], p["miou_to_ann"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
                color=color,
            )
        paper = network["paper"]
        ax.plot(
            paper["energy_ratio"],
            paper["miou_to_ann"],
            "*",
            markersize=12,
            color=color,
            label=f"{NETWORK_NAMES[arch][0]}, paper ({paper['dataset']})",
        )
    ax.plot(1, 1, "ks", label="ANN twins")
    ax.axhline(MIOU_FLOOR, color="gray", linestyle="--", linewidth=0.8, label=f"{MIOU_FLOOR:g} of the ANN's MIoU")
    ax.set_xlabel("E_ANN / E_SNN")
    ax.set_ylabel("MIoU / the ANN twin's MIoU")
    ax.margins(x=0.1)  # room for the labels of the rightmost points
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure


def regeneration(results: dict) -> str:
    """How long the commands behind the result files took, all together, and where."""
    entries = [t for r in results.values() for t in r.get("timings", {}).values()]
    machines = sorted({f"{r['machine']['cpus']} CPU cores ({r['machine']['cpu']})" for r in results.values()})
    return (
        f"The commands behind the current result files took {duration(sum(e['seconds'] for e in entries))} "
        f"in all, on {' and '.join(machines)}, with a load average of {min(loads_of(entries)):.1f}–"
        f"{max(loads_of(entries)):.1f} (training runs that resumed not counted)."
    )


BLOCKS: dict[str, Callable[[dict], str]] = {
    "quickstart": quickstart,
    "quickstart-output": quickstart_output,
    "headline": headline,
    "embedded-training": embedded_training,
    "conversion": conversion,
    "robustness-shapes": robustness("shapes"),
    "robustness-events": robustness("events"),
    "energy": energy,
    "activations": activations,
    "findings": findings,
    "analysis-runtimes": analysis_runtimes,
    "photo-check": photo_check,
    "benchmark": benchmark,
    "memory": memory,
    "ablation": ablation,
    "torch-comparison": torch_comparison,
    "regeneration": regeneration,
    "streaming": streaming,
    "stream-latency": stream_latency,
    "paper-settings": paper_settings,
    "paper-spikes-along-training": paper_spikes_along_training,
    "sparsity-demo": sparsity("demo"),
    "sparsity-paper": sparsity("paper"),
    "sparsity-summary": sparsity_summary,
    "spike-budget-demo": spike_budget_demo,
    "stream-training": stream_training,
    "stream-training-details": stream_training_details,
}
# The part of reproduce/regenerate_results.sh that writes each result file, and the blocks that render
# from it (a block named nowhere renders from embedded_deeplab.json alone).
PRODUCERS = {
    "embedded_deeplab": ("embedded", ("headline",)),
    "photo_check": ("photo", ("photo-check",)),
    "performance": (
        "performance",
        ("benchmark", "memory", "ablation", "torch-comparison", "stream-latency", "headline"),
    ),
    "paper_settings": ("paper", ("paper-settings", "paper-spikes-along-training", "headline")),
    "sparsity_demo": ("sparsity-demo", ("sparsity-demo", "sparsity-summary", "spike-budget-demo")),
    "sparsity_paper": ("sparsity", ("sparsity-paper",)),
    "stream_training": ("streams", ("stream-training", "stream-training-details")),
}
BLOCK = re.compile(r"(<!-- results: ([^\s>]+) -->\n)((?:(?!<!-- results: ).)*?)(<!-- /results -->)", re.DOTALL)


def documents() -> list[Path]:
    """The files whose results blocks are rendered: README.md and the pages of docs/."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def load_results() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))}


def sources(name: str) -> list[str]:
    """The result files block `name` renders from."""
    return [stem for stem, (_, blocks) in PRODUCERS.items() if name in blocks] or ["embedded_deeplab"]


def render_blocks(text: str, results: dict, where: str = "README.md") -> str:
    """`text` (of README.md or a docs page, named `where`) with every results block rendered from `results`."""

    def render(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise SystemExit(f"{where}: unknown results block {name!r}; known: {', '.join(BLOCKS)}")
        missing = [stem for stem in sources(name) if stem not in results]
        text = (
            " ".join(
                f"*Not measured yet: `reproduce/regenerate_results.sh {PRODUCERS[stem][0]}` writes "
                f"`docs/results/{stem}.json`.*"
                for stem in missing
            )
            if missing
            else BLOCKS[name](results)
        )
        return match.group(1) + text + "\n" + match.group(4)

    return BLOCK.sub(render, text)


def rendered_files() -> dict[Path, tuple[str, str]]:
    """`{path: (text on disk, text rendered from docs/results)}` for README.md and every docs page."""
    results = load_results()
    files = {}
    for path in documents():
        text = path.read_text()
        files[path] = (text, render_blocks(text, results, str(path.relative_to(ROOT))))
    return files


def check_or_write(write: bool) -> int:
    """Writes the rendered files, or prints where they differ from what is on disk; the exit status."""
    files = rendered_files()
    stale = [path for path, (now, rendered) in files.items() if now != rendered]
    for path in stale:
        if write:
            path.write_text(files[path][1])
            print(f"rewrote {path.relative_to(ROOT)}")
        else:
            print(f"{path.relative_to(ROOT)} differs from docs/results; run: python -m reproduce.results readme")
    return 0 if write or not stale else 1


def write_json(result: dict, out: str | None, generated_by: str) -> None:
    result = {**provenance(generated_by), **result}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {out}")


def write_sparsity(runs: Path, out: str | None, figure: str | None, extend: str | None = None) -> None:
    """Collects the frontier's runs (and, with `extend`, the runs of that earlier result file that `runs`
    lacks), writes its result file and figure, and prints its table."""
    try:
        earlier = None
        if extend:
            earlier = read_json(Path(extend))
            if earlier is None:
                raise cli.UserError(f"{extend}: no result file to extend")
        result = {**provenance("reproduce/sparsity_frontier.sh"), **collect_sparsity(runs, earlier)}
    except cli.UserError as error:
        cli.fail(str(error))
    write_json(result, out, "reproduce/sparsity_frontier.sh")
    if figure:
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        sparsity_figure(result).savefig(figure, dpi=110)
        print(f"wrote {figure}")
    print("\n\n".join([sparsity_table(result), sparsity_findings(result), sparsity_settings_line(result)]))


def write_streams(runs: Path, out: str | None) -> None:
    """Collects the runs of reproduce/stream_training.sh, writes their result file and prints the tables."""
    try:
        result = {**provenance("reproduce/stream_training.sh"), **collect_streams(runs)}
    except cli.UserError as error:
        cli.fail(str(error))
    write_json(result, out, "reproduce/stream_training.sh")
    results = {"stream_training": result}
    print(stream_training(results), stream_training_details(results), sep="\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("embedded", "photo", "performance", "paper", "sparsity", "streams"):
        sub = commands.add_parser(name)
        sub.add_argument("directory")
        sub.add_argument("--out")
        if name == "photo":
            sub.add_argument("--timings", required=True)
        if name == "sparsity":
            sub.add_argument("--figure", help="a PNG file that receives the figure of MIoU against E_ANN / E_SNN")
            sub.add_argument("--extend", help="an earlier result file whose runs the directory lacks are kept")
    commands.add_parser("readme").add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.command == "readme":
        sys.exit(check_or_write(write=not args.check))
    directory = Path(args.directory)
    if args.command == "embedded":
        result = collect_embedded(directory)
        write_json(result, args.out, "reproduce/embedded_results.sh")
        results = {f"embedded_{result['arch']}": {**provenance("reproduce/embedded_results.sh"), **result}}
        for name in (
            "embedded-training",
            "conversion",
            "robustness-shapes",
            "robustness-events",
            "energy",
            "activations",
            "findings",
        ):
            try:
                print(BLOCKS[name](results), end="\n\n")
            except (KeyError, TypeError):  # runs or analyses missing (or the FCNs' file): nothing to show
                pass
    elif args.command == "paper":
        result = collect_paper(directory)
        write_json(result, args.out, "reproduce/paper_settings.sh")
        print(paper_settings({"paper_settings": {**provenance("reproduce/paper_settings.sh"), **result}}))
    elif args.command == "sparsity":
        write_sparsity(directory, args.out, args.figure, args.extend)
    elif args.command == "streams":
        write_streams(directory, args.out)
    elif args.command == "photo":
        write_json(collect_photo(directory, Path(args.timings)), args.out, "reproduce/photo_check.sh")
    else:
        write_json(collect_performance(directory), args.out, "reproduce/performance_results.sh")


if __name__ == "__main__":
    main()
