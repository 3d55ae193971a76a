"""Training: the train state, the pure train and eval steps, and the loop of `train.py`.

`train_and_evaluate(config, workdir)` trains with Adam and a step decay (SPEC §5), logs to
`<workdir>/metrics.jsonl`, validates periodically, and checkpoints to `<workdir>/checkpoints`,
resuming from the newest checkpoint at the exact step, data position and logging window it was
saved at, so that a run interrupted at any moment and resumed ends as an uninterrupted one. A step
with a non-finite loss, gradient or update stops training before anything of it is saved (or is skipped,
with `skip_nonfinite_steps`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, Iterable, Iterator

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from snnseg_jax import checkpoints, data, metrics, models, sharding
from snnseg_jax.cli import UserError
from snnseg_jax.data import pipeline


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any  # BNTT / BatchNorm running statistics
    opt_state: Any


# ---------------------------------------------------------------- from the config to the pieces


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a `UserError` listing every out-of-range value of `config`."""
    problems = []
    positive = ["batch_size", "eval_batch_size", "learning_rate", "log_every_steps",
                "checkpoint_every_steps", "keep_checkpoints", "dataset.image_size", "model.timesteps",
                "loader_threads", "prefetch_batches"]
    for field in positive:
        value = functools.reduce(getattr, field.split("."), config)
        if not value > 0:
            problems.append(f"{field} must be positive, got {value}")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        problems.append("set num_epochs or num_train_steps to a positive number")
    if not 0.0 <= config.lr_decay_at <= 1.0:
        problems.append(f"lr_decay_at is a fraction of training in [0, 1], got {config.lr_decay_at}")
    try:
        multiple = models.architecture_of(config.model.name, config.model.head).side_multiple()
    except ValueError:
        multiple = 1  # an unknown name or head: `build_model` says so
    if config.dataset.image_size % multiple:
        problems.append(f"{config.model.name} needs dataset.image_size divisible by {multiple}, "
                        f"got {config.dataset.image_size}")
    if problems:
        raise UserError("bad config: " + "; ".join(problems) + ".")


def load_split(config: ml_collections.ConfigDict, split: str) -> data.Dataset:
    """Split `split` of the configured dataset."""
    d = config.dataset
    options = data.Options(root=d.root, image_size=d.image_size, timesteps=config.model.timesteps,
                           augment=d.augment, synthetic_seed=d.synthetic_seed,
                           synthetic_sizes=dict(d.synthetic_sizes), cache_dir=d.cache_dir)
    return data.load(d.name, split, options)


def build_model(config: ml_collections.ConfigDict, dataset: data.Dataset) -> nn.Module:
    """The configured network, sized for `dataset`."""
    try:
        return models.build(**config.model, num_classes=len(dataset.class_names),
                            in_channels=dataset.in_channels)
    except ValueError as error:
        raise UserError(f"bad model config (config.model): {error}") from None


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
    """`num_train_steps` if positive, else `num_epochs` full passes over the training split."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return config.num_epochs * pipeline.batches_per_epoch(num_train_examples, config.batch_size)


def make_optimizer(config: ml_collections.ConfigDict, steps: int) -> optax.GradientTransformation:
    """Adam whose learning rate is multiplied by `lr_decay_factor` after `lr_decay_at` of `steps`."""
    return optax.adam(learning_rate_schedule(config, steps))


def learning_rate_schedule(config: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    return optax.piecewise_constant_schedule(
        config.learning_rate, {int(round(config.lr_decay_at * steps)): config.lr_decay_factor})


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """PRNG keys for (initialization, training steps, evaluation) of a run with seed `seed`."""
    init_key, train_key, eval_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return init_key, train_key, eval_key


def init_state(model: nn.Module, optimizer: optax.GradientTransformation, input_shape: tuple[int, ...],
               key: jax.Array) -> TrainState:
    """A fresh train state for inputs of shape `[B, *input_shape]` (not yet placed; see `place`)."""
    variables = model.init({"params": key, "spikes": key}, jnp.zeros((1, *input_shape)), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=optimizer.init(params))


def abstract_state(init: Callable[[], TrainState], mesh: jax.sharding.Mesh) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the state `init` would build."""
    replicated = sharding.replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        jax.eval_shape(init))


# ---------------------------------------------------------------- pure steps


def cross_entropy(logits_BHWK: jax.Array, labels_BHW: jax.Array) -> jax.Array:
    """Pixel-wise softmax cross-entropy averaged over the valid pixels (labels < K)."""
    valid = labels_BHW < logits_BHWK.shape[-1]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_BHWK, jnp.where(valid, labels_BHW, 0))
    return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)


def train_step(state: TrainState, batch: dict, key: jax.Array, *, model: nn.Module,
               optimizer: optax.GradientTransformation, skip_nonfinite: bool = False) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`; the Poisson spikes come from `fold_in(key, state.step)`.

    The metrics say whether the loss, the gradients and the updated state are all finite. With
    `skip_nonfinite`, a step where they are not leaves the state as it was but for the step count.
    """
    step_key = jax.random.fold_in(key, state.step)

    def loss_fn(params):
        logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                      batch["inputs"], train=True, rngs={"spikes": step_key},
                                      mutable=["batch_stats"])
        return cross_entropy(logits, batch["labels"].astype(jnp.int32)), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           batch_stats=batch_stats, opt_state=opt_state)
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
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"],
                         train=False, rngs={"spikes": key})
    return metrics.confusion_matrix(batch["labels"], jnp.argmax(logits, axis=-1), logits.shape[-1])


def compile_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                       mesh: jax.sharding.Mesh, skip_nonfinite: bool = False) -> Callable:
    """`train_step` jitted for `mesh` (the state is donated): what training runs and the benchmark times."""
    replicated = sharding.replicated(mesh)
    return jax.jit(functools.partial(train_step, model=model, optimizer=optimizer, skip_nonfinite=skip_nonfinite),
                   in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                   out_shardings=(replicated, replicated), donate_argnums=0,
                   compiler_options=model.settings.tuning.compiler_options())


@functools.lru_cache(maxsize=None)  # one compilation per (model, mesh, step) and operand shapes
def compile_eval_step(model: nn.Module, mesh: jax.sharding.Mesh, step: Callable = eval_step) -> Callable:
    """`step(operand, batch, key, *, model)` (by default `eval_step`) compiled for `model`: the batch
    sharded, the operand and key replicated."""
    replicated = sharding.replicated(mesh)
    return jax.jit(functools.partial(step, model=model),
                   in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                   out_shardings=replicated, compiler_options=model.settings.tuning.compiler_options())


def map_batches(compiled_step: Callable, operand: Any, dataset: data.Dataset, batch_size: int,
                key: jax.Array, mesh: jax.sharding.Mesh, threads: int = 1) -> list:
    """`compiled_step(operand, batch, fold_in(key, i))` on every padded evaluation batch i, on the host."""
    share = sharding.process_share(dataset, batch_size, mesh)
    batches = placed_batches(functools.partial(pipeline.read_eval_batch, share, batch_size),
                             range(0, len(dataset), batch_size), mesh, threads)
    return jax.device_get([compiled_step(operand, batch, jax.random.fold_in(key, i))
                           for i, batch in enumerate(batches)])


def confusion_over(compiled_eval_step: Callable, state: Any, dataset: data.Dataset, batch_size: int,
                   key: jax.Array, mesh: jax.sharding.Mesh, threads: int = 1) -> np.ndarray:
    """The confusion matrix of the whole split, summed on the host (batch i draws `fold_in(key, i)`).

    A step returning a stack of matrices `[..., K, K]` gives their sums.
    """
    per_batch = map_batches(compiled_eval_step, state, dataset, batch_size, key, mesh, threads)
    return np.sum(np.asarray(per_batch, np.int64), axis=0)


def placed_batches(read: Callable[[Any], dict], items: Iterable, mesh: jax.sharding.Mesh, threads: int,
                   ahead: int = 2) -> Iterator[dict]:
    """`read(item)` for each item, on the devices, up to `ahead` prepared by `threads` loader threads."""
    batch_sharding = sharding.batch_sharding(mesh)
    return pipeline.prefetch(iter(items), lambda item: sharding.put_batch(read(item), batch_sharding),
                             size=ahead, threads=threads)


# ---------------------------------------------------------------- metrics.jsonl


def append_metrics(workdir: str, record: dict) -> None:
    if not sharding.is_primary():
        return
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
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
    with open(path + ".tmp", "w") as f:
        f.writelines(line + "\n" for line in kept)
    os.replace(path + ".tmp", path)


def _logged_step(line: str, number: int, path: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"line {number} of {path} is not a metrics record with a step: {line[:80]!r}; "
                        f"repair or remove that line, then run again") from None


def final_validation(workdir: str) -> dict | None:
    """The last validation record of `metrics.jsonl`, if any."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        records = [json.loads(line) for line in f if line.endswith("\n")]
    return next((r for r in reversed(records) if "miou" in r), None)


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
        return {"step": step, "loss": loss, "learning_rate": learning_rate, "images_per_sec": images_per_sec,
                "skipped_steps": self.skipped}


def fetch(unfetched: list[tuple[int, dict]]) -> list[tuple[int, float, bool]]:
    """(step, loss, finite) of steps whose metrics are still on the device (waits for them)."""
    values = jax.device_get([metrics_ for _, metrics_ in unfetched])
    return [(step, float(m["loss"]), bool(m["finite"])) for (step, _), m in zip(unfetched, values)]


def nonfinite_message(step: int, loss: float, newest_checkpoint: int | None, learning_rate: float) -> str:
    kept = (f"checkpoint {newest_checkpoint} is intact" if newest_checkpoint is not None
            else "no checkpoint had been saved")
    what = "gradient or update" if np.isfinite(loss) else "loss"
    return (f"step {step} gave a non-finite {what} (loss {loss}); training "
            f"stopped before saving it, and {kept}. Lower learning_rate (now {learning_rate}), or set "
            f"skip_nonfinite_steps=True to skip such steps.")


def config_as_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json())


# ---------------------------------------------------------------- the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """Trains the configured model in `workdir` (resuming if it holds a checkpoint).

    Returns the final validation metrics.
    """
    check_config(config)
    sharding.start_processes(**config.distributed)
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh, "batch_size")
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    train_set = load_split(config, config.dataset.train_split)
    eval_set = load_split(config, config.dataset.eval_split)
    model = build_model(config, train_set)
    steps = total_steps(config, len(train_set))
    optimizer = make_optimizer(config, steps)
    init_key, train_key, eval_key = run_keys(config.seed)
    replicated = sharding.replicated(mesh)
    init = functools.partial(init_state, model, optimizer, train_set.read(np.arange(1))[0].shape[1:], init_key)
    config_json = config_as_json(config)

    os.makedirs(workdir, exist_ok=True)
    # Every process reads the checkpoint; only the first moves damaged ones aside (one rename each).
    resumed = checkpoints.restore_newest(workdir, abstract_state(init, mesh), config_json,
                                         move_invalid=sharding.is_primary())
    if resumed is None:
        state, position, log_window = jax.jit(init, out_shardings=replicated)(), pipeline.Position(), LogWindow()
    else:
        state, position, log_window = resumed.state, resumed.position, LogWindow(**resumed.log_window)
        if sharding.is_primary():
            checkpoints.warn_config_differences(resumed, config_json, "resuming")
            print(f"Resuming from step {resumed.step} (epoch {position.epoch}, batch {position.batch}).")
    start = int(state.step)
    drop_metrics_after(workdir, start)
    if start >= steps:
        if sharding.is_primary():
            print(f"Already trained for {steps} steps; nothing to do.")
        return final_validation(workdir)
    mngr = checkpoints.manager(workdir, config.keep_checkpoints)

    compiled_train_step = compile_train_step(model, optimizer, mesh, config.skip_nonfinite_steps)
    compiled_eval_step = compile_eval_step(model, mesh)
    per_epoch = pipeline.batches_per_epoch(len(train_set), config.batch_size)
    share = sharding.process_share(train_set, config.batch_size, mesh)
    read_batch = functools.partial(pipeline.read_train_batch, share, config.batch_size, config.seed)
    batches = placed_batches(read_batch, pipeline.train_positions(position, per_epoch), mesh,
                             config.loader_threads, config.prefetch_batches)
    schedule = learning_rate_schedule(config, steps)

    def validate(step: int) -> dict:
        confusion = confusion_over(compiled_eval_step, state, eval_set, config.eval_batch_size, eval_key, mesh,
                                   config.loader_threads)
        result = {"step": step, "split": config.dataset.eval_split, "num_images": len(eval_set),
                  **metrics.summary(confusion, eval_set.class_names)}
        append_metrics(workdir, result)
        if sharding.is_primary():
            tqdm.tqdm.write(f"step {step}: {config.dataset.eval_split} MIoU {result['miou']:.4f}, "
                            f"pixel accuracy {result['pixel_accuracy']:.4f}")
        return result

    def add_results(window: LogWindow, unfetched: list[tuple[int, dict]]) -> None:
        """Moves the results of `unfetched` steps into `window`; stops at a non-finite step unless skipping."""
        nonfinite = window.add(fetch(unfetched), config.skip_nonfinite_steps)
        unfetched.clear()
        if nonfinite is not None:
            raise UserError(nonfinite_message(*nonfinite, mngr.latest_step(), config.learning_rate))

    # The training line of a logging window is written after the next step is dispatched, so the
    # host never waits on the step it just launched. Steps whose metrics are still on the device:
    unfetched: list[tuple[int, dict]] = []
    closed: tuple[int, LogWindow, list] | None = None  # a window that ended, to be written
    clock = [time.perf_counter(), start]
    bar = tqdm.tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0,
                    disable=not sharding.is_primary())

    def write_closed() -> None:
        nonlocal closed
        if closed is None:
            return
        (step, window, window_unfetched), closed = closed, None
        add_results(window, window_unfetched)
        now = time.perf_counter()
        images_per_sec = (step - clock[1]) * config.batch_size / (now - clock[0])
        clock[:] = [now, step]
        record = window.record(step, float(schedule(step - 1)), images_per_sec)
        append_metrics(workdir, record)
        bar.set_postfix(loss=f"{record['loss']:.4f}" if window.losses else "-",
                        images_per_sec=f"{images_per_sec:.1f}")

    result = None
    try:
        for step in range(start + 1, steps + 1):
            state, step_metrics = compiled_train_step(state, next(batches), train_key)
            unfetched.append((step, step_metrics))
            write_closed()
            bar.update(1)
            if step % config.log_every_steps == 0 or step == steps:
                closed, log_window, unfetched = (step, log_window, unfetched), LogWindow(), []
            validate_now = step == steps or (config.eval_every_steps > 0 and step % config.eval_every_steps == 0)
            save_now = step == steps or step % config.checkpoint_every_steps == 0
            if validate_now or save_now:  # never validate or save the parameters of a diverged step
                write_closed()
                add_results(log_window, unfetched)
            if validate_now:
                result = validate(step)
            if save_now:
                checkpoints.save(mngr, step, state, pipeline.advance(position, step - start, per_epoch),
                                 log_window=dataclasses.asdict(log_window), config=config_json)
    finally:
        bar.close()
        batches.close()
        mngr.wait_until_finished()
        mngr.close()
    return result
