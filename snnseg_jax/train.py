"""Training: the train state, the pure train and eval steps, and the loop of `train.py`.

`train_and_evaluate(config, workdir)` trains with Adam and a step decay (SPEC §5), logs to
`<workdir>/metrics.jsonl`, validates periodically, and checkpoints to `<workdir>/checkpoints`,
resuming from the newest checkpoint at the exact step and data position it was saved at.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable

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
                "checkpoint_every_steps", "keep_checkpoints", "dataset.image_size", "model.timesteps"]
    for field in positive:
        value = functools.reduce(getattr, field.split("."), config)
        if not value > 0:
            problems.append(f"{field} must be positive, got {value}")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        problems.append("set num_epochs or num_train_steps to a positive number")
    if not 0.0 <= config.lr_decay_at <= 1.0:
        problems.append(f"lr_decay_at is a fraction of training in [0, 1], got {config.lr_decay_at}")
    if config.model.name.endswith("fcn") and config.dataset.image_size % 8:
        problems.append(f"the FCNs need dataset.image_size divisible by 8, got {config.dataset.image_size}")
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
               optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`; the Poisson spikes come from `fold_in(key, state.step)`."""
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
    return new_state, {"loss": loss}


def eval_step(state: TrainState, batch: dict, key: jax.Array, *, model: nn.Module) -> jax.Array:
    """Confusion matrix `[K, K]` of the model's predictions on `batch` (ignored labels left out)."""
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"],
                         train=False, rngs={"spikes": key})
    return metrics.confusion_matrix(batch["labels"], jnp.argmax(logits, axis=-1), logits.shape[-1])


@functools.lru_cache(maxsize=None)  # one compilation per (model, mesh, step) and operand shapes
def compile_eval_step(model: nn.Module, mesh: jax.sharding.Mesh, step: Callable = eval_step) -> Callable:
    """`step(operand, batch, key, *, model)` (by default `eval_step`) compiled for `model`: the batch
    sharded, the operand and key replicated."""
    replicated = sharding.replicated(mesh)
    return jax.jit(functools.partial(step, model=model),
                   in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                   out_shardings=replicated)


def map_batches(compiled_step: Callable, operand: Any, dataset: data.Dataset, batch_size: int,
                key: jax.Array, mesh: jax.sharding.Mesh) -> list:
    """`compiled_step(operand, batch, fold_in(key, i))` on every padded evaluation batch i, on the host."""
    batches = pipeline.prefetch(pipeline.eval_batches(dataset, batch_size),
                                functools.partial(sharding.put_batch, sharding=sharding.batch_sharding(mesh)))
    return jax.device_get([compiled_step(operand, batch, jax.random.fold_in(key, i))
                           for i, batch in enumerate(batches)])


def confusion_over(compiled_eval_step: Callable, state: Any, dataset: data.Dataset,
                   batch_size: int, key: jax.Array, mesh: jax.sharding.Mesh) -> np.ndarray:
    """The confusion matrix of the whole split, summed on the host (batch i draws `fold_in(key, i)`).

    A step returning a stack of matrices `[..., K, K]` gives their sums.
    """
    per_batch = map_batches(compiled_eval_step, state, dataset, batch_size, key, mesh)
    return np.sum(np.asarray(per_batch, np.int64), axis=0)


# ---------------------------------------------------------------- the loop


def append_metrics(workdir: str, record: dict) -> None:
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def drop_metrics_after(workdir: str, step: int) -> None:
    """Removes the lines of steps after `step` (logged by a run that stopped before saving them)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(kept)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the configured model in `workdir` (resuming if it holds a checkpoint).

    Returns the final validation metrics.
    """
    check_config(config)
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

    os.makedirs(workdir, exist_ok=True)
    mngr = checkpoints.manager(workdir, config.keep_checkpoints)
    restored = checkpoints.restore_latest(mngr, abstract_state(init, mesh))
    if restored is None:
        state, position = jax.jit(init, out_shardings=replicated)(), pipeline.Position()
    else:
        state, position = restored
        drop_metrics_after(workdir, int(state.step))
        print(f"Resuming from step {int(state.step)} (epoch {position.epoch}, batch {position.batch}).")
    start = int(state.step)

    compiled_train_step = jax.jit(
        functools.partial(train_step, model=model, optimizer=optimizer),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)
    compiled_eval_step = compile_eval_step(model, mesh)
    per_epoch = pipeline.batches_per_epoch(len(train_set), config.batch_size)
    batches = pipeline.prefetch(
        pipeline.train_batches(train_set, config.batch_size, config.seed, position),
        functools.partial(sharding.put_batch, sharding=sharding.batch_sharding(mesh)))
    schedule = learning_rate_schedule(config, steps)

    def validate(step: int) -> dict:
        confusion = confusion_over(compiled_eval_step, state, eval_set, config.eval_batch_size, eval_key, mesh)
        result = {"step": step, "split": config.dataset.eval_split, "num_images": len(eval_set),
                  **metrics.summary(confusion, eval_set.class_names)}
        append_metrics(workdir, result)
        tqdm.tqdm.write(f"step {step}: {config.dataset.eval_split} MIoU {result['miou']:.4f}, "
                        f"pixel accuracy {result['pixel_accuracy']:.4f}")
        return result

    # Metrics of a logging window are fetched after the next step is dispatched, so the host
    # never waits on the step it just launched.
    window: list[dict] = []
    pending: tuple[int, list[dict]] | None = None
    clock = [time.perf_counter(), start]
    bar = tqdm.tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0)

    def report() -> None:
        nonlocal pending
        if pending is None:
            return
        step, records = pending
        pending = None
        losses = np.array([float(r["loss"]) for r in jax.device_get(records)])
        if not np.all(np.isfinite(losses)):
            first = step - len(losses) + 1 + int(np.argmin(np.isfinite(losses)))
            raise UserError(f"the training loss became {losses[~np.isfinite(losses)][0]} at step {first}; "
                            f"try a lower learning_rate (now {config.learning_rate})")
        now = time.perf_counter()
        images_per_sec = (step - clock[1]) * config.batch_size / (now - clock[0])
        clock[:] = [now, step]
        append_metrics(workdir, {"step": step, "loss": float(losses.mean()),
                                 "learning_rate": float(schedule(step - 1)), "images_per_sec": images_per_sec})
        bar.set_postfix(loss=f"{losses.mean():.4f}", images_per_sec=f"{images_per_sec:.1f}")

    result = None
    try:
        for step in range(start + 1, steps + 1):
            state, step_metrics = compiled_train_step(state, next(batches), train_key)
            window.append(step_metrics)
            report()
            bar.update(1)
            if step % config.log_every_steps == 0 or step == steps:
                pending, window = (step, window), []
            validate_now = config.eval_every_steps > 0 and step % config.eval_every_steps == 0 and step < steps
            if validate_now or step % config.checkpoint_every_steps == 0 or step == steps:
                report()  # never validate or save parameters from a diverged run
            if validate_now:
                validate(step)
            if step % config.checkpoint_every_steps == 0 or step == steps:
                checkpoints.save(mngr, step, state, pipeline.advance(position, step - start, per_epoch))
        report()
        bar.close()
        if start < steps:
            result = validate(steps)
        else:
            print(f"Already trained for {steps} steps; nothing to do.")
    finally:
        bar.close()
        batches.close()
        mngr.wait_until_finished()
        mngr.close()
    return result
