"""The training loop of `train.py`.

`train_and_evaluate(config, workdir)` trains with Adam and a step decay (paper §5.1.2), logs to
`<workdir>/metrics.jsonl` and to TensorBoard event files (`training_log`), validates periodically, and
checkpoints to `<workdir>/checkpoints`, resuming from the newest checkpoint at the exact step, data
position and logging window it was saved at, so that a run interrupted at any moment and resumed
ends as an uninterrupted one. Each step's metrics are fetched one step late. A step with a
non-finite loss, gradient or update stops training before anything of it is saved (or is skipped,
with `skip_nonfinite_steps`): validation and checkpoints take only a `Verified` state, which exists
once every step up to it was checked. SIGTERM, SIGUSR1 and SIGINT stop training after the step in
flight, saving it (`preemption`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator

import flax.linen as nn
import jax
import ml_collections
import optax
import orbax.checkpoint as ocp
import tqdm

from snnseg_jax import (
    checkpoints,
    data,
    experiment,
    metrics,
    optimization,
    preemption,
    sharding,
    sparsity,
    steps,
    summaries,
    training_log,
)
from snnseg_jax.cli import Stopped
from snnseg_jax.data import pipeline, streams
from snnseg_jax.hooks import HOOKS
from snnseg_jax.steps import TrainState
from snnseg_jax.training_log import LogSettings, LogWindow, StepChecker, TrainingLog, Verified

TENSORBOARD_IMAGES = 3  # validation predictions shown, of the first images of the evaluation split


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """The pieces of a training run, built once from its config."""

    config: ml_collections.ConfigDict
    config_json: dict
    workdir: str
    mesh: jax.sharding.Mesh
    train_set: data.Dataset
    eval_set: data.Dataset
    model: nn.Module
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    steps: int
    init: Callable[[], TrainState]  # a fresh state, not yet placed
    train_key: jax.Array
    eval_key: jax.Array
    stream: streams.StreamBatches | None = None  # the batches when training on streams

    def validates_at(self, step: int) -> bool:
        """Whether the state after `step` is validated."""
        every = self.config.eval_every_steps
        return step == self.steps or (every > 0 and step % every == 0)

    def saves_at(self, step: int) -> bool:
        """Whether the state after `step` is checkpointed."""
        return step == self.steps or step % self.config.checkpoint_every_steps == 0


def set_up(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Checks `config`, creates `workdir`, starts the processes and builds the run's data, model and optimizer."""
    experiment.check_config(config)
    experiment.make_workdir(workdir)
    e = experiment.build(config, training=True)
    schedule = optimization.learning_rate_schedule(config, e.steps)
    return Run(
        config,
        e.config_json,
        workdir,
        e.mesh,
        e.train_set,
        e.eval_set,
        e.model,
        e.optimizer,
        schedule,
        e.steps,
        e.init,
        e.train_key,
        e.eval_key,
        e.stream,
    )


@dataclasses.dataclass(frozen=True)
class Start:
    """Where training begins: the state, the data position and logging window open after its step, and
    whether the validation due at that step is still to run (a run stopped by a signal leaves it)."""

    state: TrainState
    position: pipeline.Position
    window: LogWindow
    validation_owed: bool = False


def restore_or_init(run: Run) -> Start:
    """The state, data position and open logging window of the newest checkpoint, or a fresh start."""
    HOOKS.restoring()
    # Every process reads the checkpoint; only the first moves damaged ones aside (one rename each).
    resumed = checkpoints.restore_newest(
        run.workdir, experiment.abstract_state(run.init, run.mesh), run.config_json, move_invalid=sharding.is_primary()
    )
    if resumed is None:
        state = jax.jit(run.init, out_shardings=steps.state_sharding(run.mesh, run.stream is not None))()
        return Start(state, pipeline.Position(), LogWindow())
    if sharding.is_primary():
        checkpoints.warn_config_differences(resumed, run.config_json, "resuming")
        position = resumed.position
        print(f"Resuming from step {resumed.step} (epoch {position.epoch}, batch {position.batch}).")
    return Start(resumed.state, resumed.position, LogWindow(**resumed.log_window), resumed.validation_owed)


def train_batches(run: Run, first: int, position: pipeline.Position, per_epoch: int) -> Iterator[dict]:
    """The training batches after step `first` (at data `position`), placed on the devices (close it
    when done). Training on streams, batch i is the stream's `batch(i)`: its slots' places in their
    recordings are a function of the step."""
    if run.stream is not None:
        read_batch, items = run.stream.batch, itertools.count(first)
    else:
        share = sharding.process_share(run.train_set, run.config.batch_size, run.mesh)
        read_batch = functools.partial(pipeline.read_train_batch, share, run.config.batch_size, run.config.seed)
        items = pipeline.train_positions(position, per_epoch)
    return steps.placed_batches(read_batch, items, run.mesh, run.config.loader_threads, run.config.prefetch_batches)


def validate(run: Run, verified: Verified, tensorboard: summaries.Summaries | None = None) -> dict:
    """Validates the verified state on the evaluation split; writes and prints its line (and logs its
    metrics and the predictions of the first `TENSORBOARD_IMAGES` images to `tensorboard`)."""
    HOOKS.validating(verified.step)
    config, state = run.config, verified.state.for_evaluation()
    compiled = steps.compile_eval_step(run.model, run.mesh)
    confusion = steps.confusion_over(
        compiled, state, run.eval_set, config.eval_batch_size, run.eval_key, run.mesh, config.loader_threads
    )
    split = config.dataset.eval_split
    result = {
        "step": verified.step,
        "split": split,
        "num_images": len(run.eval_set),
        **metrics.summary(confusion, run.eval_set.class_names),
    }
    training_log.append_metrics(run.workdir, result)
    if sharding.is_primary():
        tqdm.tqdm.write(
            f"step {verified.step}: {split} MIoU {result['miou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f}"
        )
    if tensorboard is not None:
        count, devices = min(TENSORBOARD_IMAGES, len(run.eval_set)), run.mesh.devices.size
        batch_size = -(-count // devices) * devices
        shown = steps.predict_first(run.model, run.mesh, state, run.eval_set, count, batch_size, run.eval_key)
        training_log.log_validation(tensorboard, result, *shown, config.dataset.name)
    return result


def save(
    mngr: ocp.CheckpointManager,
    run: Run,
    verified: Verified,
    position: pipeline.Position,
    tensorboard: summaries.Summaries,
    validation_owed: bool = False,
) -> None:
    """Starts saving the verified state with the data position after it and its logging window (once
    the TensorBoard events up to its step are written)."""
    tensorboard.checkpointed(verified.step)
    checkpoints.save(
        mngr,
        verified.step,
        verified.state,
        position,
        log_window=verified.log_window,
        config=run.config_json,
        validation_owed=validation_owed,
    )


def train_loop(run: Run, start: Start, stops: preemption.StopRequests) -> dict | None:
    """Trains from `start` to `run.steps`; returns the last validation.

    Stops after the step in flight when any process has received a signal in `stops` (deferring
    them, see `preemption`): saves that step, waits until it is written, and raises `Stopped`.
    """
    first, config = int(start.state.step), run.config
    per_epoch = pipeline.batches_per_epoch(len(run.train_set), config.batch_size)
    compiled_train_step = steps.compile_train_step(
        run.model,
        run.optimizer,
        run.mesh,
        config.skip_nonfinite_steps,
        sparsity.budget_of(config),
        streaming=run.stream is not None,
    )
    mngr = checkpoints.manager(run.workdir, config.keep_checkpoints)
    batches = train_batches(run, first, start.position, per_epoch)
    tensorboard = summaries.Summaries(run.workdir, first, active=sharding.is_primary())
    settings = LogSettings(
        run.workdir, run.steps, config.log_every_steps, config.batch_size, run.schedule, config.skip_nonfinite_steps
    )
    log = TrainingLog(settings, first, start.window, tensorboard)
    checker = StepChecker(log, first, mngr.latest_step, config.learning_rate)
    state, result, vote = start.state, None, None
    try:
        if start.validation_owed:
            result = validate(run, checker.verify(state, first), tensorboard)
        for step in range(first + 1, run.steps + 1):
            batch = next(batches)
            state, step_metrics = compiled_train_step(state, batch, run.train_key)
            checker.dispatched(step, step_metrics, batch)  # checks step - 1 while this one runs
            HOOKS.step_dispatched(step)
            stopping = step < run.steps and vote is not None and bool(vote)  # asked for after step - 1
            if stopping or run.validates_at(step) or run.saves_at(step):
                verified = checker.verify(state, step)
                if run.validates_at(step) and not stopping:
                    result = validate(run, verified, tensorboard)
                if run.saves_at(step) or stopping:
                    owed = stopping and run.validates_at(step)
                    position = pipeline.advance(start.position, step - first, per_epoch)
                    save(mngr, run, verified, position, tensorboard, owed)
                if stopping:
                    checkpoints.finish(mngr)
                    raise Stopped(preemption.stopped_message(stops, step, owed))
            vote = sharding.any_process(stops.requested, run.mesh)  # read after the next step
    finally:
        log.close()
        tensorboard.close()
        batches.close()
        checkpoints.finish(mngr)
        mngr.close()
    return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """Trains the configured model in `workdir` (resuming if it holds a checkpoint).

    Returns the final validation metrics. On SIGTERM, SIGUSR1 or SIGINT saves the last step computed
    and raises `Stopped` (see `preemption`).
    """
    with preemption.StopRequests() as stops:
        try:
            run = set_up(config, workdir)
            if sharding.is_primary():
                print(f"Training on {sharding.describe(run.mesh)}.")
            start = restore_or_init(run)
            stops.deferring = True  # from here on, a signal asks to stop after the steps in flight
        except KeyboardInterrupt:  # a signal before training: nothing to save
            newest = max(checkpoints.complete_steps(checkpoints.directory(workdir)), default=None)
            raise Stopped(preemption.not_started_message(stops, newest)) from None
        training_log.drop_metrics_after(workdir, int(start.state.step))
        if int(start.state.step) >= run.steps:
            if sharding.is_primary():
                print(f"Already trained for {run.steps} steps; nothing to do.")
            return training_log.final_validation(workdir)
        return train_loop(run, start, stops)
