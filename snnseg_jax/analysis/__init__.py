"""The paper's analyses of a trained run, by name, each writing
`<workdir>/analysis/<name>.json` and `<name>.png`:

- `energy`: spike rates per layer, FLOPs and the ANN / SNN energy estimate (Fig. 11, Table 5).
- `robustness`: MIoU and relative drop under Gaussian input noise (Fig. 10).
- `conversion`: ANN-to-SNN conversion with layer- and channel-wise threshold balancing (Fig. 3).
- `activations`: normalized maximum ReLU activation per channel and position (Fig. 4).
- `samples`: image / prediction / ground-truth triplets (Figs. 8, 9).
- `latency`: the MIoU of the prediction after each of the T steps, and the spikes of each step.
- `streaming`: event recordings segmented frame by frame with the state carried along, against
  the paper's windows of T frames.

Settings are in `config.analysis`. A second run (`compare_workdir`, the twin of the configured model:
the ANN of a spiking network or the other way round) joins the robustness figure and marks the
directly trained SNN on the conversion figure.
"""

from __future__ import annotations

import time

import ml_collections

from snnseg_jax import data, evaluate
from snnseg_jax.analysis import (
    activations,
    conversion,
    energy,
    headlines,
    latency,
    outputs,
    robustness,
    samples,
    streaming,
)
from snnseg_jax.cli import UserError

ANALYSES = {
    "energy": energy.analyze,
    "robustness": robustness.analyze,
    "conversion": conversion.analyze,
    "activations": activations.analyze,
    "samples": samples.analyze,
    "latency": latency.analyze,
    "streaming": streaming.analyze,
}
# The analyses that apply to one kind of network: name -> (needs a spiking network, why).
NEEDS = {
    "energy": (True, "counts spikes"),
    "conversion": (False, "turns a trained ANN into an SNN"),
    "activations": (False, "looks at ReLU activations"),
    "latency": (True, "steps the network through time, carrying its membranes"),
    "streaming": (True, "carries the membranes of a spiking network from frame to frame"),
}


def twin_model_name(name: str) -> str:
    """`spiking_deeplab` <-> `deeplab`, `spiking_fcn` <-> `fcn`."""
    return name.removeprefix("spiking_") if name.startswith("spiking_") else f"spiking_{name}"


def twin_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the twin network: what a `compare_workdir` run was trained with."""
    twin = config.copy_and_resolve_references()
    twin.model.name = twin_model_name(config.model.name)
    if not twin.model.name.startswith("spiking_"):
        twin.spikes.penalty = 0.0  # the spike budget is the spiking network's alone; its ANN twin trains without
    return twin


def check_twin(config: ml_collections.ConfigDict, compare_workdir: str, train: str) -> None:
    """Raises a `UserError` unless `compare_workdir` holds a run of the twin of `config`'s network on its
    dataset; `train` is the command that trains it. Cheap: reads the newest checkpoint's saved config only."""
    twin = twin_config(config)
    kind = "ANN" if config.model.name.startswith("spiking_") else "spiking"
    role = (
        f"the {kind} twin of the {config.model.name!r} run evaluated: a run of "
        f"--config.model.name={twin.model.name} trained with the same config"
    )
    evaluate.check_run(twin, compare_workdir, train, "--compare_workdir", role)


def check(config: ml_collections.ConfigDict, names: list[str]) -> None:
    """Raises a `UserError` for any of `names` that is not an analysis or does not apply to the
    configured network (cheap: meant to run before anything is restored)."""
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise UserError(
            f"unknown analysis {', '.join(map(repr, unknown))} in --analyses; choose from {', '.join(ANALYSES)}"
        )
    model_name = config.model.name
    spiking = model_name.startswith("spiking_")
    kind = lambda is_spiking: "a spiking network" if is_spiking else "an ANN"
    twin = twin_model_name(model_name)
    for name in names:
        if name in NEEDS and NEEDS[name][0] != spiking:
            raise UserError(
                f"the {name} analysis {NEEDS[name][1]}, so it needs {kind(not spiking)}, but "
                f"config.model.name={model_name!r} is {kind(spiking)}. Pass the workdir of a "
                f"{twin!r} run with --config.model.name={twin}"
            )
    if "streaming" in names and config.dataset.name not in data.EVENT_DATASETS:
        raise UserError(
            f"the streaming analysis runs over event recordings frame by frame, but "
            f"config.dataset.name={config.dataset.name!r} holds static images; it applies to "
            f"{' and '.join(data.EVENT_DATASETS)}"
        )


def run(
    config: ml_collections.ConfigDict, workdir: str, names: list[str], compare_workdir: str | None = None
) -> dict[str, dict]:
    """Runs the analyses `names` on the newest checkpoint in `workdir`; returns their results."""
    check(config, names)
    restored = evaluate.restore(config, workdir)
    if "conversion" in names and restored.events:
        raise UserError(
            "the conversion analysis rate codes static images; ANN-SNN conversion has no "
            f"counterpart for event sequences (paper §3), which {config.dataset.name!r} "
            "holds"
        )
    compare = evaluate.restore(twin_config(config), compare_workdir) if compare_workdir else None
    results = {}
    for name in names:
        start = time.perf_counter()
        results[name], figure = ANALYSES[name](restored, compare)
        results[name]["seconds"] = round(time.perf_counter() - start, 1)  # wall clock, writing the files aside
        json_path, png_path = outputs.write(workdir, name, results[name], figure)
        print(
            f"{name}: {headlines.headline(name, results[name])} [{results[name]['seconds']} s; wrote {json_path}, .png]"
        )
    return results
