"""What a training run records: the lines of `<workdir>/metrics.jsonl`, the progress bar, the TensorBoard
scalars and prediction images (`summaries`), and the check of each step's metrics, fetched one step late.

Training lines close a logging window (`LogWindow`: the losses since the last line, the steps skipped),
which is saved with each checkpoint, so that a resumed run writes the lines an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
import tqdm

from snnseg_jax import cli, data, images, sharding, summaries
from snnseg_jax.cli import UserError
from snnseg_jax.data import preprocess
from snnseg_jax.hooks import HOOKS
from snnseg_jax.steps import TrainState

TENSORBOARD_TRAINING = ("loss", "learning_rate", "images_per_sec", "skipped_steps")  # from each training line


def append_metrics(workdir: str, record: dict) -> None:
    """Appends `record` to `metrics.jsonl` as one line (on the first process only)."""
    if not sharding.is_primary():
        return
    path = os.path.join(workdir, "metrics.jsonl")
    with cli.naming(path), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    HOOKS.metrics_written(path, record)


def drop_metrics_after(workdir: str, step: int) -> None:
    """Keeps the lines of `metrics.jsonl` up to step `step`, the checkpoint that training resumes from.

    Later lines come from a run stopped before its next checkpoint; the resumed run logs them again.
    A last line without its newline was torn by a kill while being written and goes too. The file
    is replaced in one rename, so that an interruption here loses nothing.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not sharding.is_primary() or not os.path.exists(path):
        return
    with open(path) as f:
        *lines, torn = f.read().split("\n")
    kept = [line for number, line in enumerate(lines, 1) if _logged_step(line, number, path) <= step]
    if len(kept) == len(lines) and not torn:
        return
    with cli.naming(path + ".tmp"), open(path + ".tmp", "w") as f:
        f.writelines(line + "\n" for line in kept)
    os.replace(path + ".tmp", path)


def _logged_step(line: str, number: int, path: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"line {number} of {path} is not a metrics record with a step: {line[:80]!r}; "
            f"repair or remove that line, then run again"
        ) from None


def final_validation(workdir: str) -> dict | None:
    """The last validation record of `metrics.jsonl`, if any."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        records = [json.loads(line) for line in f if line.endswith("\n")]
    return next((r for r in reversed(records) if "miou" in r), None)


def nonfinite_message(
    step: int, loss: float, newest_checkpoint: int | None, learning_rate: float, bad_inputs: int = 0
) -> str:
    """The error stopping training at non-finite step `step`, whose batch held `bad_inputs` non-finite
    input values (then the input, not the learning rate, is at fault)."""
    kept = (
        f"checkpoint {newest_checkpoint} is intact" if newest_checkpoint is not None else "no checkpoint had been saved"
    )
    what = "gradient or update" if np.isfinite(loss) else "loss"
    stopped = f"training stopped before saving it, and {kept}"
    if bad_inputs:
        return (
            f"step {step} gave a non-finite {what} (loss {loss}) because its batch held {bad_inputs} non-finite "
            f"input values (NaN or inf): the input data, not the learning rate, is at fault; {stopped}. Find the "
            f"damaged file (python -m snnseg_jax.data.prepare reads and checks every file of a split) and replace "
            f"it, or leave it out of the split."
        )
    return (
        f"step {step} gave a non-finite {what} (loss {loss}); {stopped}. Lower learning_rate (now {learning_rate}), "
        f"or set skip_nonfinite_steps=True to skip such steps."
    )


def nonfinite_inputs(batch: dict) -> int:
    """How many input values of `batch` (this process's share) are NaN or infinite."""
    return sum(int(np.size(s.data) - np.isfinite(np.asarray(s.data)).sum()) for s in batch["inputs"].addressable_shards)


def log_validation(
    tensorboard: summaries.Summaries,
    result: dict,
    first: data.ArrayDataset,
    predictions: np.ndarray,
    dataset_name: str,
) -> None:
    """Logs the metrics of a validation line to `tensorboard`, and for each example of `first` its input,
    its `predictions` and its label side by side (classes in the dataset's palette, the VOC one for VOC)."""
    step, split = result["step"], result["split"]
    per_class = zip(result["class_names"], result["iou_per_class"])
    tensorboard.scalars(
        step,
        {
            f"{split}/miou": result["miou"],
            f"{split}/pixel_accuracy": result["pixel_accuracy"],
            **{f"{split}/iou/{name}": iou for name, iou in per_class},
        },
    )
    if not tensorboard.active:
        return
    palette = images.palette_for(dataset_name, len(first.class_names))
    pictures = {}
    for i in range(len(first)):
        shown, style = images.displayable(first.inputs[i], preprocess.RGB_MEAN)
        pictures[f"{split}/prediction_{i}"] = images.side_by_side(
            images.as_rgb(shown, style.get("vmin"), style.get("vmax")),
            images.colour_labels(predictions[i], palette),
            images.colour_labels(first.labels[i], palette),
        )
    tensorboard.images(step, pictures)


@dataclasses.dataclass
class LogWindow:
    """The steps since the last training line: losses of the steps applied, number skipped, and the
    spike statistics of the steps applied (a spiking network's, see `sparsity`)."""

    losses: list[float] = dataclasses.field(default_factory=list)
    skipped: int = 0
    spikes: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def add(self, results: list[tuple], skip_nonfinite: bool) -> tuple[int, float] | None:
        """Adds (step, loss, finite[, spike statistics]) results; returns the first non-finite (step, loss)
        unless skipping them."""
        for step, loss, finite, *statistics in results:
            if finite:
                self.losses.append(loss)
                self.spikes += [s for s in statistics if s]
            elif skip_nonfinite:
                self.skipped += 1
            else:
                return step, loss
        return None

    def record(self, step: int, learning_rate: float, images_per_sec: float) -> dict:
        """The training line of `metrics.jsonl` closing this window at `step`."""
        loss = float(np.mean(np.array(self.losses))) if self.losses else None
        names = self.spikes[0] if self.spikes else {}
        spikes = {name: float(np.mean(np.array([s[name] for s in self.spikes]))) for name in names}
        return {
            "step": step,
            "loss": loss,
            "learning_rate": learning_rate,
            "images_per_sec": images_per_sec,
            "skipped_steps": self.skipped,
            **spikes,
        }


@dataclasses.dataclass(frozen=True)
class LogSettings:
    """How a run of `steps` steps logs: a training line every `every` steps and after the last."""

    workdir: str
    steps: int
    every: int
    batch_size: int  # for the images per second
    schedule: optax.Schedule  # the learning rate of each step
    skip_nonfinite: bool

    def logs_at(self, step: int) -> bool:
        """Whether a training line (the end of a logging window) is written for `step`."""
        return step % self.every == 0 or step == self.steps


class TrainingLog:
    """The training lines of `metrics.jsonl` and the progress bar, fed the finished steps in order.

    The bar counts finished steps (fetched one step late); its rate and ETA leave out the first
    step, which holds the compilation.

    Owns the open logging window and the images/s clock (the time and step of the last line); writes
    each line's values to TensorBoard as well.
    """

    def __init__(self, settings: LogSettings, start: int, window: LogWindow, tensorboard: summaries.Summaries) -> None:
        self.settings, self.window, self.tensorboard = settings, window, tensorboard
        self.clock = (time.perf_counter(), start)
        self.bar = self._progress_bar(start, "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [compiling]")
        self.timed = False  # whether the bar measures the rate: from the end of the first step on

    def _progress_bar(self, initial: int, bar_format: str | None = None) -> tqdm.tqdm:
        return tqdm.tqdm(
            total=self.settings.steps,
            initial=initial,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
            bar_format=bar_format,
            leave=bar_format is None,
            disable=not sharding.is_primary(),
        )

    def add(
        self, step: int, loss: float, finite: bool, spikes: dict[str, float] | None = None
    ) -> tuple[int, float] | None:
        """Adds a finished step (and its spike statistics), writing its window's line where it ends;
        returns it as (step, loss) if it is non-finite and not to be skipped."""
        nonfinite = self.window.add([(step, loss, finite, spikes or {})], self.settings.skip_nonfinite)
        if nonfinite is None:
            if not self.timed:  # the first step compiled the train step: the rate and ETA start after it
                self.bar.close()
                self.bar, self.timed = self._progress_bar(step), True
            else:
                self.bar.update(1)
            if self.settings.logs_at(step):
                self._write_line(step)
        return nonfinite

    def _write_line(self, step: int) -> None:
        """Closes the window with its training line at `step` and opens the next."""
        now = time.perf_counter()
        images_per_sec = (step - self.clock[1]) * self.settings.batch_size / (now - self.clock[0])
        self.clock = (now, step)
        record = self.window.record(step, float(self.settings.schedule(step - 1)), images_per_sec)
        append_metrics(self.settings.workdir, record)
        logged = [*TENSORBOARD_TRAINING, *(self.window.spikes[0] if self.window.spikes else ())]
        self.tensorboard.scalars(step, {f"train/{name}": record[name] for name in logged})
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}" if self.window.losses else "-", images_per_sec=f"{images_per_sec:.1f}"
        )
        self.window = LogWindow()

    def close(self) -> None:
        """Closes the progress bar."""
        self.bar.close()


@dataclasses.dataclass(frozen=True, eq=False)
class Verified:
    """The state after `step`, where every step up to `step` was fetched and found finite (or skipped).

    What validation and checkpoints accept; only `StepChecker.verify` makes one, so the parameters
    of a diverged step are never validated or saved.
    """

    state: TrainState
    step: int
    log_window: dict  # the logging window open after `step`, as saved with a checkpoint


class StepChecker:
    """Fetches the metrics of each dispatched step one step late (so the host never waits on the step
    it just launched), stops at a non-finite one, and hands the others to the training log."""

    def __init__(
        self, log: TrainingLog, start: int, newest_checkpoint: Callable[[], int | None], learning_rate: float
    ) -> None:
        self.log, self.newest_checkpoint, self.learning_rate = log, newest_checkpoint, learning_rate
        self.checked = start  # every step up to this one fetched and found finite (or skipped)
        # The step dispatched last, if not yet checked: its metrics, and its batch (kept to tell a
        # non-finite input from a divergence, which only a non-finite step pays for).
        self.pending: tuple[int, dict, dict] | None = None

    def dispatched(self, step: int, step_metrics: dict, batch: dict) -> None:
        """Takes the metrics of `step`, just dispatched on `batch`, and checks those of the step before it."""
        self._check_pending()
        self.pending = (step, step_metrics, batch)

    def verify(self, state: TrainState, step: int) -> Verified:
        """`state`, the state after `step`, once every step up to `step` is checked (waits for them);
        raises the non-finite `UserError` if one was not finite."""
        self._check_pending()
        state_step = int(state.step)  # no wait: the step that made it has been fetched
        if self.checked != step or state_step != step:
            raise ValueError(
                f"asked to verify step {step} with the state of step {state_step}, steps checked up to {self.checked}"
            )
        return Verified(state, step, dataclasses.asdict(self.log.window))

    def _check_pending(self) -> None:
        """Fetches the pending step's metrics (waits for it) and checks them."""
        if self.pending is None:
            return
        (step, step_metrics, batch), self.pending = self.pending, None
        values = jax.device_get(step_metrics)
        spikes = {name: float(value) for name, value in values.items() if name not in ("loss", "finite")}
        nonfinite = self.log.add(step, float(values["loss"]), bool(values["finite"]), spikes)
        if nonfinite is not None:
            message = nonfinite_message(
                *nonfinite, self.newest_checkpoint(), self.learning_rate, nonfinite_inputs(batch)
            )
            raise UserError(message)
        self.checked = step
