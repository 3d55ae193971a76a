"""Training: the train state, the pure train and eval steps, and the loop of `train.py`.

`train_and_evaluate(config, workdir)` trains with Adam and a step decay (paper §5.1.2), logs to
`<workdir>/metrics.jsonl` and to TensorBoard event files (`summaries`), validates periodically, and
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
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from snnseg_jax import (
    checkpoints,
    cli,
    config_rules,
    data,
    metrics,
    models,
    optimization,
    preemption,
    sharding,
    summaries,
)
from snnseg_jax.cli import Stopped, UserError
from snnseg_jax.data import pipeline


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any  # BNTT / BatchNorm running statistics
    opt_state: Any


# ---------------------------------------------------------------- from the config to the pieces


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a `UserError` listing every bad value of `config`: each field against its rule
    (`config_rules`), then the checks that involve several fields."""
    bad = config_rules.problems(config)
    problems = list(bad.values())
    fine = lambda *fields: not any(field in bad for field in fields)
    if fine("num_train_steps", "num_epochs") and config.num_train_steps <= 0 and config.num_epochs <= 0:
        problems.append("set num_epochs or num_train_steps to a positive number")
    if fine("model.name", "model.head", "dataset.image_size"):
        table = models.architecture_of(config.model.name, config.model.head)
        if config.dataset.image_size % table.side_multiple():
            problems.append(
                f"the {table.name.upper()}s need dataset.image_size divisible by "
                f"{table.side_multiple()}, got {config.dataset.image_size}"
            )
    d = config.distributed
    if fine("distributed.num_processes", "distributed.process_id") and 0 < d.num_processes <= d.process_id:
        problems.append(
            f"distributed.process_id must be below distributed.num_processes ({d.num_processes}), got {d.process_id}"
        )
    if problems:
        raise UserError("bad config: " + "; ".join(problems) + ".")


def load_split(config: ml_collections.ConfigDict, split: str) -> data.Dataset:
    """Split `split` of the configured dataset."""
    d = config.dataset
    options = data.Options(
        root=d.root,
        image_size=d.image_size,
        timesteps=config.model.timesteps,
        augment=d.augment,
        synthetic_seed=d.synthetic_seed,
        synthetic_sizes=dict(d.synthetic_sizes),
        cache_dir=d.cache_dir,
    )
    return data.load(d.name, split, options)


def build_model(config: ml_collections.ConfigDict, dataset: data.Dataset) -> nn.Module:
    """The configured network, sized for `dataset`."""
    try:
        return models.build(**config.model, num_classes=len(dataset.class_names), in_channels=dataset.in_channels)
    except ValueError as error:
        raise UserError(f"bad model config (config.model): {error}") from None


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
    """`num_train_steps` if positive, else `num_epochs` full passes over the training split."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return config.num_epochs * pipeline.batches_per_epoch(num_train_examples, config.batch_size)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """PRNG keys for (initialization, training steps, evaluation) of a run with seed `seed`."""
    init_key, train_key, eval_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return init_key, train_key, eval_key


def init_state(
    model: nn.Module, optimizer: optax.GradientTransformation, input_shape: tuple[int, ...], key: jax.Array
) -> TrainState:
    """A fresh train state for inputs of shape `[B, *input_shape]` (not yet placed; see `place`)."""
    variables = model.init({"params": key, "spikes": key}, jnp.zeros((1, *input_shape)), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
    )


def abstract_state(init: Callable[[], TrainState], mesh: jax.sharding.Mesh) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the state `init` would build."""
    replicated = sharding.replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), jax.eval_shape(init))


# ---------------------------------------------------------------- pure steps


def cross_entropy(logits_BHWK: jax.Array, labels_BHW: jax.Array) -> jax.Array:
    """Pixel-wise softmax cross-entropy averaged over the valid pixels (labels < K)."""
    valid = labels_BHW < logits_BHWK.shape[-1]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_BHWK, jnp.where(valid, labels_BHW, 0))
    return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)


def train_step(
    state: TrainState,
    batch: dict,
    key: jax.Array,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    skip_nonfinite: bool = False,
) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`; the Poisson spikes come from `fold_in(key, state.step)`.

    The metrics say whether the loss, the gradients and the updated state are all finite. With
    `skip_nonfinite`, a step where they are not leaves the state as it was but for the step count.
    """
    step_key = jax.random.fold_in(key, state.step)

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["inputs"],
            train=True,
            rngs={"spikes": step_key},
            mutable=["batch_stats"],
        )
        return cross_entropy(logits, batch["labels"].astype(jnp.int32)), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = TrainState(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(new_state)
    if skip_nonfinite:
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        new_state = kept.replace(step=state.step + 1)
    return new_state, {"loss": loss, "finite": finite}


def all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point value in `tree` is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def eval_step(state: TrainState, batch: dict, key: jax.Array, *, model: nn.Module) -> jax.Array:
    """Confusion matrix `[K, K]` of the model's predictions on `batch` (ignored labels left out)."""
    logits = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"], train=False, rngs={"spikes": key}
    )
    return metrics.confusion_matrix(batch["labels"], jnp.argmax(logits, axis=-1), logits.shape[-1])


def compile_train_step(
    model: nn.Module, optimizer: optax.GradientTransformation, mesh: jax.sharding.Mesh, skip_nonfinite: bool = False
) -> Callable:
    """`train_step` jitted for `mesh` (the state is donated): what training runs and the benchmark times."""
    replicated = sharding.replicated(mesh)
    return jax.jit(
        functools.partial(train_step, model=model, optimizer=optimizer, skip_nonfinite=skip_nonfinite),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
        compiler_options=model.settings.tuning.compiler_options(),
    )


@functools.cache  # one compilation per (model, mesh, step) and operand shapes
def compile_eval_step(model: nn.Module, mesh: jax.sharding.Mesh, step: Callable = eval_step) -> Callable:
    """`step(operand, batch, key, *, model)` (by default `eval_step`) compiled for `model`: the batch
    sharded, the operand and key replicated."""
    replicated = sharding.replicated(mesh)
    return jax.jit(
        functools.partial(step, model=model),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=replicated,
        compiler_options=model.settings.tuning.compiler_options(),
    )


def map_batches(
    compiled_step: Callable,
    operand: Any,
    dataset: data.Dataset,
    batch_size: int,
    key: jax.Array,
    mesh: jax.sharding.Mesh,
    threads: int = 1,
) -> list:
    """`compiled_step(operand, batch, fold_in(key, i))` on every padded evaluation batch i, on the host."""
    share = sharding.process_share(dataset, batch_size, mesh)
    batches = placed_batches(
        functools.partial(pipeline.read_eval_batch, share, batch_size),
        range(0, len(dataset), batch_size),
        mesh,
        threads,
    )
    return jax.device_get(
        [compiled_step(operand, batch, jax.random.fold_in(key, i)) for i, batch in enumerate(batches)]
    )


def confusion_over(
    compiled_eval_step: Callable,
    state: Any,
    dataset: data.Dataset,
    batch_size: int,
    key: jax.Array,
    mesh: jax.sharding.Mesh,
    threads: int = 1,
) -> np.ndarray:
    """The confusion matrix of the whole split, summed on the host (batch i draws `fold_in(key, i)`).

    A step returning a stack of matrices `[..., K, K]` gives their sums.
    """
    per_batch = map_batches(compiled_eval_step, state, dataset, batch_size, key, mesh, threads)
    return np.sum(np.asarray(per_batch, np.int64), axis=0)


def placed_batches(
    read: Callable[[Any], dict], items: Iterable, mesh: jax.sharding.Mesh, threads: int, ahead: int = 2
) -> Iterator[dict]:
    """`read(item)` for each item, on the devices, up to `ahead` prepared by `threads` loader threads."""
    batch_sharding = sharding.batch_sharding(mesh)
    return pipeline.prefetch(
        iter(items), lambda item: sharding.put_batch(read(item), batch_sharding), size=ahead, threads=threads
    )


# ---------------------------------------------------------------- metrics.jsonl


def append_metrics(workdir: str, record: dict) -> None:
    """Appends `record` to `metrics.jsonl` as one line (on the first process only)."""
    if not sharding.is_primary():
        return
    path = os.path.join(workdir, "metrics.jsonl")
    with cli.naming(path), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


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


def nonfinite_message(step: int, loss: float, newest_checkpoint: int | None, learning_rate: float) -> str:
    """The error stopping training at non-finite step `step`."""
    kept = (
        f"checkpoint {newest_checkpoint} is intact" if newest_checkpoint is not None else "no checkpoint had been saved"
    )
    what = "gradient or update" if np.isfinite(loss) else "loss"
    return (
        f"step {step} gave a non-finite {what} (loss {loss}); training "
        f"stopped before saving it, and {kept}. Lower learning_rate (now {learning_rate}), or set "
        f"skip_nonfinite_steps=True to skip such steps."
    )


def config_as_json(config: ml_collections.ConfigDict) -> dict:
    """`config` as plain JSON values, as saved with checkpoints."""
    return json.loads(config.to_json())


# ---------------------------------------------------------------- the loop


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

    def logs_at(self, step: int) -> bool:
        """Whether a training line (the end of a logging window) is written for `step`."""
        return step % self.config.log_every_steps == 0 or step == self.steps

    def validates_at(self, step: int) -> bool:
        """Whether the state after `step` is validated."""
        every = self.config.eval_every_steps
        return step == self.steps or (every > 0 and step % every == 0)

    def saves_at(self, step: int) -> bool:
        """Whether the state after `step` is checkpointed."""
        return step == self.steps or step % self.config.checkpoint_every_steps == 0


@dataclasses.dataclass(frozen=True, eq=False)
class Verified:
    """The state after `step`, where every step up to `step` was fetched and found finite (or skipped).

    What validation and checkpoints accept; only `StepChecker.verify` makes one, so the parameters
    of a diverged step are never validated or saved.
    """

    state: TrainState
    step: int
    log_window: dict  # the logging window open after `step`, as saved with a checkpoint


@dataclasses.dataclass
class LogWindow:
    """The steps since the last training line: losses of the steps applied, number skipped."""

    losses: list[float] = dataclasses.field(default_factory=list)
    skipped: int = 0

    def add(self, results: list[tuple[int, float, bool]], skip_nonfinite: bool) -> tuple[int, float] | None:
        """Adds (step, loss, finite) results; returns the first non-finite (step, loss) unless skipping them."""
        for step, loss, finite in results:
            if finite:
                self.losses.append(loss)
            elif skip_nonfinite:
                self.skipped += 1
            else:
                return step, loss
        return None

    def record(self, step: int, learning_rate: float, images_per_sec: float) -> dict:
        """The training line of `metrics.jsonl` closing this window at `step`."""
        loss = float(np.mean(np.array(self.losses))) if self.losses else None
        return {
            "step": step,
            "loss": loss,
            "learning_rate": learning_rate,
            "images_per_sec": images_per_sec,
            "skipped_steps": self.skipped,
        }


TENSORBOARD_TRAINING = ("loss", "learning_rate", "images_per_sec", "skipped_steps")  # from each training line
TENSORBOARD_IMAGES = 3  # validation predictions shown, of the first images of the evaluation split


class TrainingLog:
    """The training lines of `metrics.jsonl` and the progress bar, fed the finished steps in order.

    The bar counts finished steps (fetched one step late); its rate and ETA leave out the first
    step, which holds the compilation.

    Owns the open logging window and the images/s clock (the time and step of the last line); writes
    each line's values to TensorBoard as well.
    """

    def __init__(self, run: Run, start: int, window: LogWindow, tensorboard: summaries.Summaries) -> None:
        self.run, self.window, self.tensorboard = run, window, tensorboard
        self.clock = (time.perf_counter(), start)
        self.bar = self._progress_bar(start, "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [compiling]")
        self.timed = False  # whether the bar measures the rate: from the end of the first step on

    def _progress_bar(self, initial: int, bar_format: str | None = None) -> tqdm.tqdm:
        return tqdm.tqdm(
            total=self.run.steps,
            initial=initial,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
            bar_format=bar_format,
            leave=bar_format is None,
            disable=not sharding.is_primary(),
        )

    def add(self, step: int, loss: float, finite: bool) -> tuple[int, float] | None:
        """Adds a finished step, writing its window's line where it ends; returns it as (step, loss) if
        it is non-finite and not to be skipped."""
        nonfinite = self.window.add([(step, loss, finite)], self.run.config.skip_nonfinite_steps)
        if nonfinite is None:
            if not self.timed:  # the first step compiled the train step: the rate and ETA start after it
                self.bar.close()
                self.bar, self.timed = self._progress_bar(step), True
            else:
                self.bar.update(1)
            if self.run.logs_at(step):
                self._write_line(step)
        return nonfinite

    def _write_line(self, step: int) -> None:
        """Closes the window with its training line at `step` and opens the next."""
        now = time.perf_counter()
        images_per_sec = (step - self.clock[1]) * self.run.config.batch_size / (now - self.clock[0])
        self.clock = (now, step)
        record = self.window.record(step, float(self.run.schedule(step - 1)), images_per_sec)
        append_metrics(self.run.workdir, record)
        self.tensorboard.scalars(step, {f"train/{name}": record[name] for name in TENSORBOARD_TRAINING})
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}" if self.window.losses else "-", images_per_sec=f"{images_per_sec:.1f}"
        )
        self.window = LogWindow()

    def close(self) -> None:
        """Closes the progress bar."""
        self.bar.close()


class StepChecker:
    """Fetches the metrics of each dispatched step one step late (so the host never waits on the step
    it just launched), stops at a non-finite one, and hands the others to the training log."""

    def __init__(
        self, log: TrainingLog, start: int, newest_checkpoint: Callable[[], int | None], learning_rate: float
    ) -> None:
        self.log, self.newest_checkpoint, self.learning_rate = log, newest_checkpoint, learning_rate
        self.checked = start  # every step up to this one fetched and found finite (or skipped)
        self.pending: tuple[int, dict] | None = None  # the step dispatched last, if not yet checked

    def dispatched(self, step: int, step_metrics: dict) -> None:
        """Takes the metrics of `step`, just dispatched, and checks those of the step before it."""
        self._check_pending()
        self.pending = (step, step_metrics)

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
        (step, step_metrics), self.pending = self.pending, None
        values = jax.device_get(step_metrics)
        nonfinite = self.log.add(step, float(values["loss"]), bool(values["finite"]))
        if nonfinite is not None:
            raise UserError(nonfinite_message(*nonfinite, self.newest_checkpoint(), self.learning_rate))
        self.checked = step


def make_workdir(workdir: str) -> None:
    """Creates `workdir` and its parents where missing (a path that cannot be a directory raises the
    `OSError` that names it, which the entry points explain)."""
    if not workdir:
        raise UserError("--workdir is empty; name the directory for the run's metrics and checkpoints")
    os.makedirs(workdir, exist_ok=True)


def set_up(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Checks `config`, starts the processes and builds the run's data, model and optimizer."""
    check_config(config)
    make_workdir(workdir)
    sharding.start_processes(**config.distributed)
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh, "batch_size")
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    train_set = load_split(config, config.dataset.train_split)
    eval_set = load_split(config, config.dataset.eval_split)
    model = build_model(config, train_set)
    steps = total_steps(config, len(train_set))
    optimizer = optimization.make_optimizer(config, steps)
    init_key, train_key, eval_key = run_keys(config.seed)
    init = functools.partial(init_state, model, optimizer, train_set.read(np.arange(1))[0].shape[1:], init_key)
    return Run(
        config=config,
        config_json=config_as_json(config),
        workdir=workdir,
        mesh=mesh,
        train_set=train_set,
        eval_set=eval_set,
        model=model,
        optimizer=optimizer,
        schedule=optimization.learning_rate_schedule(config, steps),
        steps=steps,
        init=init,
        train_key=train_key,
        eval_key=eval_key,
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
    # Every process reads the checkpoint; only the first moves damaged ones aside (one rename each).
    resumed = checkpoints.restore_newest(
        run.workdir, abstract_state(run.init, run.mesh), run.config_json, move_invalid=sharding.is_primary()
    )
    if resumed is None:
        state = jax.jit(run.init, out_shardings=sharding.replicated(run.mesh))()
        return Start(state, pipeline.Position(), LogWindow())
    if sharding.is_primary():
        checkpoints.warn_config_differences(resumed, run.config_json, "resuming")
        position = resumed.position
        print(f"Resuming from step {resumed.step} (epoch {position.epoch}, batch {position.batch}).")
    return Start(resumed.state, resumed.position, LogWindow(**resumed.log_window), resumed.validation_owed)


def train_batches(run: Run, position: pipeline.Position, per_epoch: int) -> Iterator[dict]:
    """The training batches from `position` on, placed on the devices (close it when done)."""
    share = sharding.process_share(run.train_set, run.config.batch_size, run.mesh)
    read_batch = functools.partial(pipeline.read_train_batch, share, run.config.batch_size, run.config.seed)
    return placed_batches(
        read_batch,
        pipeline.train_positions(position, per_epoch),
        run.mesh,
        run.config.loader_threads,
        run.config.prefetch_batches,
    )


def validate(run: Run, verified: Verified, tensorboard: summaries.Summaries | None = None) -> dict:
    """Validates the verified state on the evaluation split; writes and prints its line (and logs its
    metrics and a few predictions to `tensorboard`)."""
    confusion = confusion_over(
        compile_eval_step(run.model, run.mesh),
        verified.state,
        run.eval_set,
        run.config.eval_batch_size,
        run.eval_key,
        run.mesh,
        run.config.loader_threads,
    )
    split = run.config.dataset.eval_split
    result = {
        "step": verified.step,
        "split": split,
        "num_images": len(run.eval_set),
        **metrics.summary(confusion, run.eval_set.class_names),
    }
    append_metrics(run.workdir, result)
    if sharding.is_primary():
        tqdm.tqdm.write(
            f"step {verified.step}: {split} MIoU {result['miou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f}"
        )
    if tensorboard is not None:
        per_class = zip(result["class_names"], result["iou_per_class"])
        tensorboard.scalars(
            verified.step,
            {
                f"{split}/miou": result["miou"],
                f"{split}/pixel_accuracy": result["pixel_accuracy"],
                **{f"{split}/iou/{name}": iou for name, iou in per_class},
            },
        )
        tensorboard.images(verified.step, prediction_images(run, verified.state))
    return result


def prediction_images(run: Run, state: TrainState) -> dict[str, np.ndarray]:
    """Input, prediction and label side by side (classes in the dataset's palette, the VOC one for
    VOC), for each of the first `TENSORBOARD_IMAGES` images of the evaluation split."""
    from snnseg_jax.analysis import samples  # here: analysis imports this module

    count = min(TENSORBOARD_IMAGES, len(run.eval_set))
    inputs, labels = run.eval_set.read(np.arange(count))
    first = data.ArrayDataset(inputs, labels, run.eval_set.class_names)
    batch_size = -(-count // run.mesh.devices.size) * run.mesh.devices.size
    predictions = np.concatenate(
        map_batches(
            compile_eval_step(run.model, run.mesh, samples.predict_step),
            state,
            first,
            batch_size,
            run.eval_key,
            run.mesh,
        )
    )[:count]
    if not sharding.is_primary():
        return {}
    palette = samples.palette_for(run.config.dataset.name, len(run.eval_set.class_names))
    images = {}
    for i in range(count):
        shown, style = samples.displayable(inputs[i])
        images[f"{run.config.dataset.eval_split}/prediction_{i}"] = summaries.side_by_side(
            summaries.as_rgb(shown, style.get("vmin"), style.get("vmax")),
            samples.colour_labels(predictions[i], palette),
            samples.colour_labels(labels[i], palette),
        )
    return images


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
    first = int(start.state.step)
    per_epoch = pipeline.batches_per_epoch(len(run.train_set), run.config.batch_size)
    compiled_train_step = compile_train_step(run.model, run.optimizer, run.mesh, run.config.skip_nonfinite_steps)
    mngr = checkpoints.manager(run.workdir, run.config.keep_checkpoints)
    batches = train_batches(run, start.position, per_epoch)
    tensorboard = summaries.Summaries(run.workdir, first, active=sharding.is_primary())
    log = TrainingLog(run, first, start.window, tensorboard)
    checker = StepChecker(log, first, mngr.latest_step, run.config.learning_rate)
    state, result, vote = start.state, None, None
    try:
        if start.validation_owed:
            result = validate(run, checker.verify(state, first), tensorboard)
        for step in range(first + 1, run.steps + 1):
            state, step_metrics = compiled_train_step(state, next(batches), run.train_key)
            checker.dispatched(step, step_metrics)  # checks step - 1 while this one runs
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
        drop_metrics_after(workdir, int(start.state.step))
        if int(start.state.step) >= run.steps:
            if sharding.is_primary():
                print(f"Already trained for {run.steps} steps; nothing to do.")
            return final_validation(workdir)
        return train_loop(run, start, stops)
