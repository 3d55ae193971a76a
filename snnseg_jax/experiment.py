"""From a config to the pieces that training and evaluation share: the checked config, the data
splits, the model, the optimizer, the PRNG keys and the recipe of a fresh train state (`build`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from snnseg_jax import config_rules, data, models, optimization, sharding, steps, stream
from snnseg_jax.cli import UserError
from snnseg_jax.data import pipeline, streams
from snnseg_jax.steps import TrainState


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
    name, penalty = config.model.name, config.spikes.penalty
    if fine("spikes.penalty", "model.name") and penalty > 0 and not name.startswith("spiking_"):
        problems.append(f"spikes.penalty must be 0 for an ANN (model.name {name}), got {penalty}")
    if fine("stream_training.enabled", "model.name", "dataset.name") and config.stream_training.enabled:
        if not name.startswith("spiking_"):
            problems.append(
                f"stream_training.enabled needs a spiking network (an ANN carries no state), got model.name {name}"
            )
        if config.dataset.name not in data.EVENT_DATASETS:
            problems.append(
                "stream_training.enabled needs recordings, one of the event datasets "
                f"({', '.join(data.EVENT_DATASETS)}), got dataset.name {config.dataset.name}"
            )
    d = config.distributed
    if fine("distributed.num_processes", "distributed.process_id") and 0 < d.num_processes <= d.process_id:
        problems.append(
            f"distributed.process_id must be below distributed.num_processes ({d.num_processes}), got {d.process_id}"
        )
    if problems:
        raise UserError("bad config: " + "; ".join(problems) + ".")


def make_workdir(workdir: str) -> None:
    """Creates `workdir` and its parents where missing (a path that cannot be a directory raises the
    `OSError` that names it, which the entry points explain)."""
    if not workdir:
        raise UserError("--workdir is empty; name the directory for the run's metrics and checkpoints")
    os.makedirs(workdir, exist_ok=True)


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
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    key: jax.Array,
    streaming_batch: int = 0,
    stream_loss: str = "every_frame",
) -> TrainState:
    """A fresh train state for inputs of shape `[B, *input_shape]` (not yet placed on the devices);
    training on streams with batches of `streaming_batch` (> 0), it carries membranes at zero, and
    readouts at zero if its `stream_loss` (`steps.STREAM_LOSSES`) scores every frame."""
    variables = model.init({"params": key, "spikes": key}, jnp.zeros((1, *input_shape)), train=False)
    params = variables["params"]
    carried = readouts = None
    if streaming_batch:
        frame_shape = (streaming_batch, *input_shape[1:])  # an event sequence's [T, H, W, C] less T
        zero = stream.init(model, variables, frame_shape)
        carried = zero.membranes
        readouts = jnp.swapaxes(zero.readouts, 0, 1) if stream_loss == "every_frame" else None
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
        carried=carried,
        readouts=readouts,
    )


def abstract_state(init: Callable[[], TrainState], mesh: jax.sharding.Mesh) -> TrainState:
    """Shapes, dtypes and shardings (`steps.state_sharding`) of the state `init` would build."""
    shapes = jax.eval_shape(init)
    shardings = steps.state_sharding(mesh, streaming=shapes.carried is not None)
    return jax.tree.map(
        lambda place, x: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=place), x),
        shardings,
        shapes,
        is_leaf=lambda x: x is None,
    )


def config_as_json(config: ml_collections.ConfigDict) -> dict:
    """`config` as plain JSON values, as saved with checkpoints."""
    return json.loads(config.to_json())


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """What training and evaluating a config share, built once from it (`build`)."""

    config: ml_collections.ConfigDict
    config_json: dict
    mesh: jax.sharding.Mesh
    train_set: data.Dataset | None  # loaded for training only
    eval_set: data.Dataset
    model: nn.Module
    steps: int  # of training (1 where only evaluating: the optimizer then only shapes the state)
    optimizer: optax.GradientTransformation
    init: Callable[[], TrainState]  # a fresh state, not yet placed
    input_shape: tuple[int, ...]  # of one example
    train_key: jax.Array  # the Poisson spikes of training step s: fold_in(train_key, s)
    eval_key: jax.Array
    stream: streams.StreamBatches | None = None  # training on streams: its batches


def build(config: ml_collections.ConfigDict, training: bool) -> Experiment:
    """Starts the processes and builds the pieces of checked `config`, with its training split if `training`."""
    sharding.start_processes(**config.distributed)
    mesh = sharding.data_mesh()
    if training:
        sharding.check_batch_size(config.batch_size, mesh, "batch_size")
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    train_set = load_split(config, config.dataset.train_split) if training else None
    eval_set = load_split(config, config.dataset.eval_split)
    model = build_model(config, eval_set)
    steps = total_steps(config, len(train_set)) if training else 1
    optimizer = optimization.make_optimizer(config, steps)
    init_key, train_key, eval_key = run_keys(config.seed)
    input_shape = eval_set.read(np.arange(1))[0].shape[1:]
    # A state trained on streams carries membranes, also when only restored for evaluation.
    streaming_batch = config.batch_size if config.stream_training.enabled else 0
    stream = None
    if training and streaming_batch:  # checks the recordings before any work
        rows = sharding.local_rows(config.batch_size, mesh)
        fraction = config.stream_training.zero_state_fraction
        stream = streams.StreamBatches(train_set, config.batch_size, fraction, config.seed, rows)
    return Experiment(
        config=config,
        config_json=config_as_json(config),
        mesh=mesh,
        train_set=train_set,
        eval_set=eval_set,
        model=model,
        steps=steps,
        optimizer=optimizer,
        init=functools.partial(
            init_state, model, optimizer, input_shape, init_key, streaming_batch, config.stream_training.loss
        ),
        input_shape=input_shape,
        train_key=train_key,
        eval_key=eval_key,
        stream=stream,
    )
