"""Times the jitted train and eval steps of a config's model on synthetic inputs.

    python -m snnseg_jax.benchmark --config configs/voc_deeplab.py [--config.batch_size=2] [--compile_only]

Reports the best and median seconds per step (after warm-up), the compiled train step's temporary
memory, the model's FLOPs (SPEC §7 Eq. 9) and the FLOP/s they imply, and the device. The last line
of stdout is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from snnseg_jax import cpu, layers, models

Array = jax.Array
IGNORE_LABEL = 255


class TrainState(NamedTuple):
    """What a train step updates: step counter, parameters, BNTT/BN statistics, Adam state."""

    step: Array
    params: Any
    batch_stats: Any
    opt_state: Any


def model_from_config(config: ml_collections.ConfigDict, num_classes: int, in_channels: int = 3) -> nn.Module:
    """`models.build` with the config's model fields."""
    return models.build(**config.model, num_classes=num_classes, in_channels=in_channels)


def masked_cross_entropy(logits_BHWK: Array, labels_BHW: Array) -> Array:
    """Pixel-wise softmax cross-entropy averaged over pixels whose label is a class (< K)."""
    valid = labels_BHW < logits_BHWK.shape[-1]  # drops 255 and any other label >= K
    safe = jnp.where(valid, labels_BHW, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_BHWK, safe)
    return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)


def make_steps(model: nn.Module, optimizer: optax.GradientTransformation
               ) -> tuple[Callable, Callable]:
    """`train_step(state, batch, key) -> (state, metrics)` and `eval_step(state, batch, key) -> logits`.

    The one place that defines what is timed: point it at the training pipeline's steps to time those.
    """

    def train_step(state: TrainState, batch: dict, key: Array):
        rngs = {"spikes": jax.random.fold_in(key, state.step)}

        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                          batch["image"], train=True, rngs=rngs, mutable=["batch_stats"])
            return masked_cross_entropy(logits, batch["label"]), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, batch_stats, opt_state), {"loss": loss}

    def eval_step(state: TrainState, batch: dict, key: Array):
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        return model.apply(variables, batch["image"], train=False, rngs={"spikes": key})

    return train_step, eval_step


# dataset name -> (num_classes, input channels, event sequences?)
DATASET_INPUTS = {"voc2012": (21, 3, False), "ddd17": (6, 2, True)}


def synthetic_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int = 0) -> dict:
    """Random inputs and labels of the config's shapes (some labels 255, as on VOC borders)."""
    num_classes, channels, events = DATASET_INPUTS[config.dataset.name]
    size, steps = config.dataset.image_size, config.model.timesteps
    rng = np.random.default_rng(seed)
    shape = (batch_size, steps, size, size, channels) if events else (batch_size, size, size, channels)
    labels = rng.integers(0, num_classes, (batch_size, size, size))
    labels[:, :, :2] = IGNORE_LABEL
    return {"image": jnp.asarray(rng.uniform(-0.5, 0.5, shape), jnp.float32),
            "label": jnp.asarray(labels, jnp.int32)}


def init_state(model: nn.Module, optimizer: optax.GradientTransformation, batch: dict, key: Array) -> TrainState:
    variables = jax.jit(lambda x: model.init({"params": key, "spikes": key}, x, train=False))(batch["image"][:1])
    params = variables["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), optimizer.init(params))


def forward_flops(model: nn.Module, variables: Any, image: Array) -> int:
    """Forward FLOPs of one batch as SPEC §7 Eq. 9 counts them: k^2 * O^2 * C_in * C_out per conv.

    (Eq. 9 counts a multiply-add as one FLOP.) Summed over every convolution the model runs, all T
    steps, from the shapes seen when tracing it; a transposed conv counts its input positions.
    """
    total = 0

    def count(next_fun, args, kwargs, context):
        nonlocal total
        module = context.module
        if context.method_name == "__call__" and not isinstance(module.parent, layers.Unit):
            x = args[0]
            if isinstance(module, (layers.Unit, layers.Conv)):  # 'same' convs: O^2 = H * W of the input
                total += x.shape[0] * module.kernel_size ** 2 * x.shape[1] * x.shape[2] * x.shape[-1] * module.features
            elif isinstance(module, layers.ConvTransposeUp):
                total += x.shape[0] * 9 * x.shape[1] * x.shape[2] * x.shape[-1] * module.features
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(count):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False, rngs={"spikes": jax.random.PRNGKey(0)}),
                       variables, image)
    return total


def time_calls(call: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls, each waited for until its result is ready."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        seconds.append(time.perf_counter() - start)
    return seconds


def device_description() -> str:
    device = jax.devices()[0]
    return f"{jax.device_count()}x {device.platform}:{device.device_kind}"


def run(config: ml_collections.ConfigDict, compile_only: bool = False, repeats: int = 5) -> dict:
    """Compiles (and unless `compile_only`, times) the train and eval steps; returns the results."""
    num_classes, channels, _ = DATASET_INPUTS[config.dataset.name]
    model = model_from_config(config, num_classes, channels)
    optimizer = optax.adam(config.learning_rate)
    batch = synthetic_batch(config, config.batch_size)
    key = jax.random.PRNGKey(config.seed)
    state = init_state(model, optimizer, batch, key)
    train_step, eval_step = make_steps(model, optimizer)
    options = cpu.compiler_options()
    train = jax.jit(train_step, donate_argnums=0, compiler_options=options).lower(state, batch, key).compile()
    evaluate = jax.jit(eval_step, compiler_options=options).lower(state, batch, key).compile()
    flops = forward_flops(model, {"params": state.params, "batch_stats": state.batch_stats}, batch["image"])
    result = {
        "model": config.model.name, "batch_size": config.batch_size, "timesteps": config.model.timesteps,
        "image_size": config.dataset.image_size, "width": config.model.width, "dtype": config.model.dtype,
        "train_temp_bytes": int(train.memory_analysis().temp_size_in_bytes),
        "eval_temp_bytes": int(evaluate.memory_analysis().temp_size_in_bytes),
        "forward_flops": flops, "device": device_description(), "jax": jax.__version__,
    }
    if compile_only:
        return result

    def train_once():
        nonlocal state
        state, metrics = train(state, batch, key)
        return metrics

    time_calls(train_once, 1)  # warm-up
    train_seconds = time_calls(train_once, repeats)
    time_calls(lambda: evaluate(state, batch, key), 1)
    eval_seconds = time_calls(lambda: evaluate(state, batch, key), repeats)
    result.update({
        "train_step_seconds": min(train_seconds), "train_step_median_seconds": statistics.median(train_seconds),
        "eval_step_seconds": min(eval_seconds), "eval_step_median_seconds": statistics.median(eval_seconds),
        # Training costs about 3 forward passes (forward, input and weight gradients).
        "train_flops_per_second": 3 * flops / min(train_seconds),
        "eval_flops_per_second": flops / min(eval_seconds),
    })
    return result


def main(argv):
    del argv
    cpu.keep_freed_memory()
    result = run(FLAGS.config, FLAGS.compile_only, FLAGS.repeats)
    gib = 2.0 ** 30
    print(f"device {result['device']}, {result['model']} batch {result['batch_size']} T={result['timesteps']} "
          f"{result['image_size']}x{result['image_size']} width {result['width']} {result['dtype']}")
    print(f"train step temp memory {result['train_temp_bytes'] / gib:.3f} GiB, "
          f"eval {result['eval_temp_bytes'] / gib:.3f} GiB; forward {result['forward_flops'] / 1e9:.1f} GFLOPs (Eq. 9)")
    if not FLAGS.compile_only:
        print(f"train step {result['train_step_seconds']:.4f} s best, {result['train_step_median_seconds']:.4f} s median "
              f"({result['train_flops_per_second'] / 1e9:.1f} GFLOP/s); eval step {result['eval_step_seconds']:.4f} s best")
    print(json.dumps(result))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    FLAGS = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "Config file (configs/<name>.py).", lock_config=True)
    flags.DEFINE_bool("compile_only", False, "Compile and report memory and FLOPs without timing.")
    flags.DEFINE_integer("repeats", 5, "Timed calls per step after one warm-up call.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
