"""The pure steps of training and evaluation, and their compilation for a mesh.

`train_step(state, batch, key) -> (state, metrics)` and the evaluation steps `step(operand, batch,
key, *, model)` (`eval_step`: a confusion matrix; `predict_step`: the predicted classes), which the
analyses extend with their own; `map_batches` and `confusion_over` run a compiled evaluation step
over a split, summing on the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from snnseg_jax import data, metrics, models, ops, sharding, sparsity, stream
from snnseg_jax.data import pipeline

# What training on streams scores (`stream_training.loss`): "every_frame", the prediction streaming
# makes after every step of the window (`stream.window_predictions`) against that frame's label;
# "window_end", the window's mean readout against its last frame's label, as window training does.
STREAM_LOSSES = ("every_frame", "window_end")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any  # BNTT / BatchNorm running statistics
    opt_state: Any
    # Training on streams: each slot's membranes after its last window, {layer: [B, h, w, C]}; else None.
    carried: Any = None
    # Training on streams scored every frame: each slot's readouts of its last window `[B, T, h, w, K]`
    # (`models.Network.readouts`), which streaming averages with the next window's; else None.
    readouts: Any = None

    def for_evaluation(self) -> TrainState:
        """The state as the evaluation steps take it (replicated): without what the training slots
        carry (membranes, readouts), which evaluation does not use."""
        return self.replace(carried=None, readouts=None)


def state_sharding(mesh: jax.sharding.Mesh, streaming: bool = False) -> TrainState:
    """The shardings of a train state on `mesh` (a prefix of its tree): replicated, but for what the
    slots carry when training on streams, split over the devices by slot as the batch is."""
    replicated = sharding.replicated(mesh)
    by_slot = sharding.batch_sharding(mesh) if streaming else None
    return TrainState(replicated, replicated, replicated, replicated, carried=by_slot, readouts=by_slot)


def starting_membranes(carried: dict[str, jax.Array], fresh: jax.Array) -> dict[str, jax.Array]:
    """The membranes a window of training on streams starts from: each slot's carried ones, zero where
    `fresh` `[B]` (a slot starting a recording, or one that always starts from zero state)."""
    return jax.tree.map(lambda m: jnp.where(fresh.reshape(-1, *(1,) * (m.ndim - 1)), 0.0, m), carried)


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
    budget: sparsity.SpikeBudget = sparsity.NO_BUDGET,
) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`; the Poisson spikes come from `fold_in(key, state.step)`.

    The loss is the cross-entropy, plus a spiking network's spike `budget` term (`sparsity`). The
    metrics say whether the loss, the gradients and the updated state are all finite, and hold a
    spiking network's spike statistics of the batch. With `skip_nonfinite`, a step where they are
    not finite leaves the state as it was but for the step count.

    Training on streams (`state.carried` not None): the network starts from the carried membranes
    (`starting_membranes` with the batch's `"fresh"`) and the state carries the membranes after the
    window on; no gradient flows into the previous window. With `state.readouts` (the loss
    "every_frame" of `STREAM_LOSSES`) the loss scores the stream's prediction after every step against
    the batch's `"frame_labels"` (`streamed_logits`), and the state carries the window's readouts on.
    """
    step_key = jax.random.fold_in(key, state.step)
    spiking = isinstance(model, models.Network) and model.settings.spiking  # any other module: cross-entropy only
    if budget.penalty and not spiking:
        raise ValueError("a spike budget needs a spiking network")

    streaming, every_frame = state.carried is not None, state.readouts is not None
    if streaming and not spiking:
        raise ValueError("training on streams needs a spiking network: an ANN carries nothing")
    membranes = {"membranes": starting_membranes(state.carried, batch["fresh"])} if streaming else {}
    collections = ["batch_stats", *([models.ACTIVITY] if spiking else []), *([models.CARRIED] if streaming else [])]

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        apply = functools.partial(
            model.apply,
            variables,
            batch["inputs"],
            train=True,
            **membranes,
            rngs={"spikes": step_key},
            mutable=collections,
        )
        readouts = None
        if every_frame:
            readouts, updates = apply(method=models.Network.readouts)
            logits, labels = streamed_logits(readouts, state.readouts, batch)
        else:
            (logits, updates), labels = apply(), batch["labels"]
        loss, statistics = cross_entropy(logits, labels.astype(jnp.int32)), {}
        if spiking:
            term, statistics = sparsity.spike_term(
                model, variables, batch["inputs"], models.activity(updates), budget, state.step
            )
            loss = loss if term is None else loss + term
        carried = models.carried(updates) if streaming else None
        readouts = None if readouts is None else jnp.swapaxes(readouts, 0, 1)
        return loss, (updates["batch_stats"], statistics, (carried, readouts))

    (loss, (batch_stats, statistics, (carried, readouts))), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = TrainState(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
        carried=carried,
        readouts=readouts,
    )
    finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(new_state)
    if skip_nonfinite:
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        new_state = kept.replace(step=state.step + 1)
    return new_state, {"loss": loss, "finite": finite, **statistics}


def streamed_logits(readouts: jax.Array, carried: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """The stream's logits after every step of the window and the labels they are scored against,
    `[T * B, H, W, K]` and `[T * B, H, W]`: `stream.window_predictions` of the window's `readouts`
    `[T, B, h, w, K]` going on from the `carried` readouts `[B, T, h, w, K]` (none where the batch's
    `"fresh"`), upsampled, and the batch's `"frame_labels"` `[B, T, H, W]`."""
    predictions = stream.window_predictions(readouts, jnp.swapaxes(carried, 0, 1), batch["fresh"])
    height, width = batch["frame_labels"].shape[-2:]
    logits = ops.resize_bilinear(predictions.reshape(-1, *predictions.shape[2:]), height, width)
    labels = jnp.swapaxes(batch["frame_labels"], 0, 1)
    return logits, labels.reshape(-1, height, width)


def all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point value in `tree` is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def forward(state: TrainState, batch: dict, key: jax.Array, *, model: nn.Module) -> jax.Array:
    """The model's evaluation-mode logits `[B, H, W, K]` on `batch`, its Poisson spikes drawn from `key`."""
    return model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"], train=False, rngs={"spikes": key}
    )


def layer_outputs(state: TrainState, batch: dict, key: jax.Array, *, model: nn.Module) -> dict[str, jax.Array]:
    """The evaluation-mode output of every layer that ends in neurons, `{name: [T, B, ...]}` (`models.activity`)."""
    _, sown = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        batch["inputs"],
        train=False,
        rngs={"spikes": key},
        mutable=[models.ACTIVITY],
    )
    return models.activity(sown)


def eval_step(state: TrainState, batch: dict, key: jax.Array, *, model: nn.Module) -> jax.Array:
    """Confusion matrix `[K, K]` of the model's predictions on `batch` (ignored labels left out)."""
    logits_BHWK = forward(state, batch, key, model=model)
    return metrics.confusion_matrix(batch["labels"], jnp.argmax(logits_BHWK, axis=-1), logits_BHWK.shape[-1])


def predict_step(state: TrainState, batch: dict, key: jax.Array, *, model: nn.Module) -> jax.Array:
    """Predicted classes `[B, H, W]`."""
    return jnp.argmax(forward(state, batch, key, model=model), axis=-1)


def compile_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    skip_nonfinite: bool = False,
    budget: sparsity.SpikeBudget = sparsity.NO_BUDGET,
    streaming: bool = False,
) -> Callable:
    """`train_step` jitted for `mesh` (the state is donated): what training runs and the benchmark times.
    `streaming`: the state carries membranes (training on streams, see `state_sharding`)."""
    replicated, state = sharding.replicated(mesh), state_sharding(mesh, streaming)
    step = functools.partial(train_step, model=model, optimizer=optimizer, skip_nonfinite=skip_nonfinite, budget=budget)
    return jax.jit(
        step,
        in_shardings=(state, sharding.batch_sharding(mesh), replicated),
        out_shardings=(state, replicated),
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


def first_examples(dataset: data.Dataset, count: int) -> data.ArrayDataset:
    """The first `count` examples of `dataset` (all of them if fewer), in memory."""
    inputs, labels = dataset.read(np.arange(min(count, len(dataset))))
    return data.ArrayDataset(inputs, labels, dataset.class_names)


def predict_first(
    model: nn.Module,
    mesh: jax.sharding.Mesh,
    state: TrainState,
    dataset: data.Dataset,
    count: int,
    batch_size: int,
    key: jax.Array,
) -> tuple[data.ArrayDataset, np.ndarray]:
    """The first `count` examples of `dataset` and the classes `[N, H, W]` predicted for them, in batches
    of `batch_size` (batch i draws `fold_in(key, i)`)."""
    first = first_examples(dataset, count)
    per_batch = map_batches(compile_eval_step(model, mesh, predict_step), state, first, batch_size, key, mesh)
    return first, np.concatenate(per_batch)[: len(first)]


def placed_batches(
    read: Callable[[Any], dict], items: Iterable, mesh: jax.sharding.Mesh, threads: int, ahead: int = 2
) -> Iterator[dict]:
    """`read(item)` for each item, on the devices, up to `ahead` prepared by `threads` loader threads."""
    batch_sharding = sharding.batch_sharding(mesh)
    return pipeline.prefetch(
        iter(items), lambda item: sharding.put_batch(read(item), batch_sharding), size=ahead, threads=threads
    )
