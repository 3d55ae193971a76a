"""Where the spiking network trails its ANN on event data: accuracy by how much of the evidence the
last frame of a window carries.

    python -m reproduce.events_gap --config configs/events_deeplab.py --snn runs/events --ann runs/events_ann

For each validation example (a window of T frames labelled with its last frame), the fraction of
its object pixels (label > 0) with an event in the last frame, and in any frame of the window; then
the accuracy on object pixels of both trained networks in bins of the first fraction. A spiking
network whose activity builds up over the steps leans on the last frames; if its deficit is
largest where the last frame holds few events, the gap comes from the frames it barely uses.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import runpy

import numpy as np

from snnseg_jax import evaluate, steps

BINS = (0.0, 0.25, 0.5, 0.75, 1.01)


def predictions(run: evaluate.Restored) -> np.ndarray:
    """The argmax predictions `[N, H, W]` of a restored run on its evaluation split."""
    return np.concatenate(run.map_batches(steps.predict_step, run.state))[: len(run.dataset)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--snn", required=True)
    parser.add_argument("--ann", required=True)
    args = parser.parse_args()
    config = runpy.run_path(args.config)["get_config"]()
    snn_run = evaluate.restore(config, args.snn)
    snn = predictions(snn_run)
    config.model.name = config.model.name.removeprefix("spiking_")
    ann = predictions(evaluate.restore(config, args.ann))
    inputs, labels = snn_run.dataset.read(np.arange(len(snn_run.dataset)))  # [N, T, H, W, 2], -0.5: no event
    events = (inputs > -0.5).any(-1)
    objects = (labels > 0) & (labels != 255)
    count = objects.sum((1, 2))
    last = (events[:, -1] & objects).sum((1, 2)) / np.maximum(count, 1)
    window = (events.any(1) & objects).sum((1, 2)) / np.maximum(count, 1)
    print(f"object pixels with an event: {last.mean():.3f} in the last frame, {window.mean():.3f} in the window")
    print("| object pixels with an event in the last frame | windows | SNN accuracy | ANN accuracy | SNN / ANN |")
    print("|---|---|---|---|---|")
    for low, high in zip(BINS, BINS[1:]):
        chosen = (last >= low) & (last < high) & (count > 0)
        if not chosen.any():
            continue
        hits = lambda p, chosen=chosen: float((p[chosen] == labels[chosen])[objects[chosen]].mean())
        print(
            f"| {low:.2f}–{min(high, 1):.2f} | {chosen.sum()} | {hits(snn):.3f} | {hits(ann):.3f} | "
            f"{hits(snn) / hits(ann):.2f} |"
        )


if __name__ == "__main__":
    main()
