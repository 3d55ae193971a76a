"""Robustness to Gaussian input noise: MIoU and relative drop over a grid of sigma (Fig. 10).

Static images: noise N(0, sigma) on the 0-255 image before normalization, one value per pixel
shared by the three channels, no clipping. Normalization subtracts a mean and divides by 255
(`data.preprocess`), so this adds sigma / 255 * z to the normalized image. Event sequences: noise N(0, sigma)
on the normalized frames, one value per pixel and frame, shared by the two polarity channels.

`config.analysis.noise_sigmas` gives sigma as a fraction of the input's range, so one grid serves
both kinds of input: x 255 on images (0-255), as is on event frames (range [-0.5, 0.5]). Batch i
draws its noise from `fold_in(fold_in(eval_key, i), NOISE_STREAM)`, the same standard normal draws
at every sigma, and its Poisson spikes from `fold_in(eval_key, i)` as the plain evaluation does;
so sigma = 0 reproduces `eval_<split>.json` and the curve is smooth in sigma.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure

from snnseg_jax import metrics, steps
from snnseg_jax.evaluate import Restored

PIXEL_RANGE = 255.0  # static images: the 0-255 scale, also the divisor of the normalization
NOISE_STREAM = 0x6E6F6973  # folded into a batch's key for its noise draws


def native_sigmas(fractions: tuple[float, ...], events: bool) -> list[float]:
    """The grid in the input's own units (0-255 pixels, or normalized event frames), with 0 first."""
    scale = 1.0 if events else PIXEL_RANGE
    return sorted({0.0, *(float(f) * scale for f in fractions)})


def add_noise(inputs: jax.Array, sigma: float | jax.Array, key: jax.Array, events: bool) -> jax.Array:
    """`inputs` (normalized) plus the noise of the module docstring at native `sigma`."""
    z = jax.random.normal(key, (*inputs.shape[:-1], 1), jnp.float32)  # one value per pixel
    scale = sigma if events else sigma / PIXEL_RANGE
    return inputs + (scale * z).astype(inputs.dtype)


def noisy_eval_step(operand: tuple, batch: dict, key: jax.Array, *, model) -> jax.Array:
    """`steps.eval_step` on the batch with noise of native sigma added; operand `(state, sigma)`."""
    state, sigma = operand
    events = batch["inputs"].ndim == 5
    noisy = add_noise(batch["inputs"], sigma, jax.random.fold_in(key, NOISE_STREAM), events)
    return steps.eval_step(state, {**batch, "inputs": noisy}, key, model=model)


def miou_over_sigmas(run: Restored, sigmas: list[float]) -> list[float]:
    """MIoU of the evaluation split at each native sigma (one compilation for all)."""
    return [metrics.mean_iou(run.confusion(step=noisy_eval_step, operand=(run.state, jnp.float32(s)))) for s in sigmas]


def relative_drop(mious: list[float]) -> list[float]:
    """(MIoU_clean - MIoU_noisy) / MIoU_clean * 100, with the first entry the clean one."""
    return [(mious[0] - m) / mious[0] * 100.0 for m in mious]


def analyze(run: Restored, compare: Restored | None = None) -> tuple[dict, Figure]:
    sigmas = native_sigmas(tuple(run.config.analysis.noise_sigmas), run.events)
    curves = {}
    for model_run in [run] + ([compare] if compare else []):
        mious = miou_over_sigmas(model_run, sigmas)
        curves[model_run.config.model.name] = {
            "workdir": model_run.workdir,
            "miou": mious,
            "relative_drop": relative_drop(mious),
        }
    own = curves[run.config.model.name]
    report = {
        "sigmas": sigmas,
        "sigma_unit": "normalized event frame" if run.events else "0-255 pixel",
        "miou": own["miou"],
        "relative_drop": own["relative_drop"],
        "model": run.config.model.name,
        "num_images": len(run.dataset),
    }
    if compare:
        report["compare"] = {"model": compare.config.model.name, **curves[compare.config.model.name]}
    return report, _figure(sigmas, curves, report["sigma_unit"])


def _figure(sigmas: list[float], curves: dict, unit: str) -> Figure:
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    miou_ax, drop_ax = figure.subplots(1, 2)
    for name, curve in curves.items():
        style = "-o" if name.startswith("spiking_") else "--s"
        miou_ax.plot(sigmas, curve["miou"], style, label=name)
        drop_ax.plot(sigmas, curve["relative_drop"], style, label=name)
    miou_ax.set_ylabel("MIoU")
    drop_ax.set_ylabel("relative MIoU drop (%)")
    for ax in (miou_ax, drop_ax):
        ax.set_xlabel(f"noise sigma ({unit})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    drop_ax.set_title("lower is more robust", fontsize=9)
    return figure
