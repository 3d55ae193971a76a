"""Anytime segmentation: the MIoU of a spiking network's prediction after each of its T steps.

The network is stepped through its input one frame at a time (`stream`): after t steps its logits
are the output currents averaged over those t steps, a prediction available after t / T of the
window's latency. On the evaluation split, for t = 1 .. T: the MIoU of that prediction (one
confusion matrix per t over the whole split) and the spikes per neuron fired at step t (all layers
with neurons together, averaged over the images). The Poisson spikes of batch i are those of the
plain evaluation (`fold_in(eval_key, i)`), so the MIoU at t = T is the evaluation's, up to float
rounding. `step_ms` is the median wall time of one jitted step on one example on this machine.
"""

from __future__ import annotations

import functools
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from snnseg_jax import metrics, stream
from snnseg_jax.evaluate import Restored


def anytime_step(variables: dict, batch: dict, key: jax.Array, *, model: nn.Module) -> tuple[jax.Array, jax.Array]:
    """Confusion matrices `[T, K, K]` of the prediction after each step, and the spikes per neuron of
    each step per image `[B, T]`."""
    frames = stream.input_frames(key, batch["inputs"], model.settings.timesteps)

    def one_step(state, frame):
        state, logits, spikes = stream.advance(model, variables, state, frame)
        confusion = metrics.confusion_matrix(batch["labels"], jnp.argmax(logits, -1), logits.shape[-1])
        fired = sum(s.reshape(len(s), -1).sum(axis=1) for s in spikes.values())
        neurons = sum(s[0].size for s in spikes.values())
        return state, (confusion, fired / neurons)

    _, (confusions, spikes) = jax.lax.scan(one_step, stream.init(model, variables, frames.shape[1:]), frames)
    return confusions, spikes.T


def median_step_ms(model: nn.Module, variables: dict, frames: jax.Array, rounds: int = 3) -> float:
    """Median milliseconds of one jitted `stream.step` on `frames` `[T, 1, H, W, C]`, state carried."""
    step = jax.jit(functools.partial(stream.step, model))
    state = stream.init(model, variables, frames.shape[1:])
    jax.block_until_ready(step(variables, state, frames[0]))  # compile
    seconds = []
    for frame in list(frames) * rounds:
        start = time.perf_counter()
        state, logits = step(variables, state, frame)
        jax.block_until_ready(logits)
        seconds.append(time.perf_counter() - start)
    return 1e3 * statistics.median(seconds)


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    variables = {"params": run.state.params, "batch_stats": run.state.batch_stats}
    per_batch = run.map_batches(anytime_step, variables)
    confusions = np.sum([np.asarray(c, np.int64) for c, _ in per_batch], axis=0)
    spikes = np.concatenate([s for _, s in per_batch])[: len(run.dataset)].mean(axis=0)
    timesteps = run.model.settings.timesteps
    first = run.dataset.read(np.arange(1))[0]
    frames = stream.input_frames(run.eval_key, jnp.asarray(first), timesteps)
    report = {
        "timesteps": list(range(1, timesteps + 1)),
        "miou": [metrics.mean_iou(c) for c in confusions],
        "spikes_per_step": spikes.tolist(),
        "step_ms": median_step_ms(run.model, variables, frames),
        "model": run.config.model.name,
        "num_images": len(run.dataset),
    }
    return report, _figure(report)


def _figure(report: dict) -> Figure:
    figure = Figure(figsize=(6, 3.6), layout="constrained")
    ax = figure.subplots()
    steps = report["timesteps"]
    ax.plot(steps, report["miou"], "-o", color="tab:blue", markersize=4, label="MIoU after t steps")
    ax.set_xlabel("time steps t")
    ax.set_ylabel("MIoU", color="tab:blue")
    ax.set_xticks(steps)
    spikes_ax = ax.twinx()
    spikes_ax.bar(steps, report["spikes_per_step"], color="tab:orange", alpha=0.3, label="spikes per neuron")
    spikes_ax.set_ylabel("spikes per neuron at step t", color="tab:orange")
    ax.set_zorder(spikes_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_title(f"Anytime prediction of {report['model']} ({report['step_ms']:.1f} ms per step)", fontsize=10)
    ax.grid(alpha=0.3)
    return figure
