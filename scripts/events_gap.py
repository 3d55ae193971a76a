"""Where the spiking network trails its ANN on event data: accuracy by how much of the evidence the
last frame of a window carries.

    python scripts/events_gap.py --config configs/events_deeplab.py --snn runs/events --ann runs/events_ann

For each validation example (a window of T frames labelled with its last frame), the fraction of
its object pixels (label > 0) with an event in the last frame, and in any frame of the window; then
the accuracy on object pixels of both trained networks in bins of the first fraction. A spiking
network whose activity builds up over the steps leans on the last frames; if its deficit is
largest where the last frame holds few events, the gap comes from the frames it barely uses.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snnseg_jax import evaluate  # noqa: E402  (after the repository is on the path)
from snnseg_jax import train as train_lib  # noqa: E402

BINS = (0.0, 0.25, 0.5, 0.75, 1.01)


def predictions(config, workdir: str) -> np.ndarray:
    """The argmax predictions `[N, H, W]` of the run in `workdir` on the evaluation split."""
    run = evaluate.restore(config, workdir)

    def predict(state, batch, key, *, model):
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"],
                             train=False, rngs={"spikes": key})
        return logits.argmax(-1)

    return np.concatenate(run.map_batches(predict, run.state))[:len(run.dataset)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--snn", required=True)
    parser.add_argument("--ann", required=True)
    args = parser.parse_args()
    import importlib.util

    spec = importlib.util.spec_from_file_location("config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    dataset = train_lib.load_split(config, config.dataset.eval_split)
    inputs, labels = dataset.read(np.arange(len(dataset)))  # inputs [N, T, H, W, 2], -0.5 where no event
    events = (inputs > -0.5).any(-1)
    objects = (labels > 0) & (labels != 255)
    count = np.maximum(objects.sum((1, 2)), 1)
    last = (events[:, -1] & objects).sum((1, 2)) / count
    window = (events.any(1) & objects).sum((1, 2)) / count
    snn = predictions(config, args.snn)
    config.model.name = config.model.name.removeprefix("spiking_")
    ann = predictions(config, args.ann)
    print(f"object pixels with an event: {last.mean():.3f} in the last frame, {window.mean():.3f} in the window")
    print("| object pixels with an event in the last frame | windows | SNN accuracy | ANN accuracy | SNN / ANN |")
    print("|---|---|---|---|---|")
    for low, high in zip(BINS, BINS[1:]):
        chosen = (last >= low) & (last < high) & (objects.sum((1, 2)) > 0)
        if not chosen.any():
            continue
        hits = lambda p: float((p[chosen] == labels[chosen])[objects[chosen]].mean())
        print(f"| {low:.2f}–{min(high, 1):.2f} | {chosen.sum()} | {hits(snn):.3f} | {hits(ann):.3f} | "
              f"{hits(snn) / hits(ann):.2f} |")


if __name__ == "__main__":
    main()
