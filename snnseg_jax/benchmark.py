"""Times the training pipeline's jitted train and eval steps on synthetic inputs of a config's shapes.

    python -m snnseg_jax.benchmark --config configs/voc_deeplab.py [--config.batch_size=2] [--compile_only]
    python -m snnseg_jax.benchmark --config configs/voc_deeplab.py --config.batch_size=2 --ablate_tuning \
        [--ablate=conv_in_bounds_taps,...] [--tuning_backend=gpu]
    python -m snnseg_jax.benchmark --config configs/voc_deeplab.py --stream --repeats=10
    python -m snnseg_jax.benchmark --config configs/voc_deeplab.py --config.batch_size=2 \
        --config.spikes.penalty=0.1 --spike_budget

Reports the best and median seconds per step (after warm-up), the compiled train step's temporary
memory, the model's FLOPs (paper Eq. 9) and the FLOP/s they imply, and the device. The last line
of stdout is one JSON object. The steps are `steps.compile_train_step` and `steps.compile_eval_step`,
the ones `train.py` runs; no dataset is read.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnseg_jax import cli, experiment, formulations, optimization, sharding, sparsity, stream
from snnseg_jax.analysis import energy
from snnseg_jax.data import ddd17, synthetic, voc
from snnseg_jax.metrics import IGNORE_LABEL
from snnseg_jax.steps import compile_eval_step, compile_train_step, state_sharding


@dataclasses.dataclass(frozen=True)
class InputShapes:
    """What the model needs to know of a dataset: its classes, input channels, and whether an
    example is an event sequence `[T, H, W, C]` rather than an image `[H, W, C]`."""

    class_names: tuple[str, ...]
    in_channels: int
    events: bool


DATASET_INPUTS = {
    "voc2012": InputShapes(voc.CLASS_NAMES, 3, False),
    "ddd17": InputShapes(ddd17.CLASS_NAMES, 2, True),
    "shapes": InputShapes(synthetic.CLASS_NAMES, 3, False),
    "events": InputShapes(synthetic.CLASS_NAMES, 2, True),
}


def input_shapes(config: ml_collections.ConfigDict) -> InputShapes:
    if config.dataset.name not in DATASET_INPUTS:
        raise cli.UserError(
            f"unknown dataset {config.dataset.name!r} (config.dataset.name); the benchmark "
            f"knows {', '.join(sorted(DATASET_INPUTS))}"
        )
    return DATASET_INPUTS[config.dataset.name]


def synthetic_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int = 0) -> dict:
    """Random inputs and labels of the config's shapes (some labels 255, as on VOC borders)."""
    shapes = input_shapes(config)
    size, steps = config.dataset.image_size, config.model.timesteps
    rng = np.random.default_rng(seed)
    example = (steps, size, size, shapes.in_channels) if shapes.events else (size, size, shapes.in_channels)
    labels = rng.integers(0, len(shapes.class_names), (batch_size, size, size)).astype(np.uint8)
    labels[:, :, :2] = IGNORE_LABEL
    return {"inputs": rng.uniform(-0.5, 0.5, (batch_size, *example)).astype(np.float32), "labels": labels}


def forward_flops(model: nn.Module, variables: Any, inputs: jax.Array) -> int:
    """Forward FLOPs of one batch as Eq. 9 of the paper counts them: k^2 * O^2 * C_in * C_out per conv.

    (Eq. 9 counts a multiply-add as one FLOP; a transposed conv counts its input positions.) Each
    conv's FLOPs for one input (`energy.layer_flops`) times the rows it runs on: every example at
    every step, or once per example where the network averages over time first.
    """
    per_input = energy.layer_flops(model, variables, inputs.shape[1:])
    averaged = model.architecture.averaged(model.settings.spiking)
    steps = model.settings.timesteps if model.settings.spiking or inputs.ndim == 5 else 1
    return len(inputs) * sum(flops * (1 if name in averaged else steps) for name, flops in per_input.items())


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


class Steps:
    """The pipeline's compiled train and eval steps for a config, on one synthetic batch, with the
    train state they update (`train_once` advances it)."""

    def __init__(self, config: ml_collections.ConfigDict, tuning: formulations.Tuning | None = None):
        mesh = sharding.data_mesh()
        sharding.check_batch_size(config.batch_size, mesh, "batch_size")
        self.model = experiment.build_model(config, input_shapes(config))
        if tuning is not None:  # another choice of formulations than the config's
            self.model = self.model.clone(settings=dataclasses.replace(self.model.settings, tuning=tuning))
        optimizer = optimization.make_optimizer(config, steps=1_000_000)
        init_key, self.key, _ = experiment.run_keys(config.seed)
        batch = synthetic_batch(config, config.batch_size, config.seed)
        streaming = config.stream_training.enabled  # every slot carries its membranes on
        if streaming:
            batch["fresh"] = np.zeros(config.batch_size, bool)
            batch["frame_labels"] = np.repeat(batch["labels"][:, None], config.model.timesteps, axis=1)
        self.batch = sharding.put_batch(batch, sharding.batch_sharding(mesh))
        init = functools.partial(
            experiment.init_state,
            self.model,
            optimizer,
            self.batch["inputs"].shape[1:],
            init_key,
            config.batch_size if streaming else 0,
            config.stream_training.loss,
        )
        self.state = jax.jit(init, out_shardings=state_sharding(mesh, streaming))()
        budget = sparsity.budget_of(config)
        self.train = compile_train_step(self.model, optimizer, mesh, budget=budget, streaming=streaming)
        self.train = self.train.lower(self.state, self.batch, self.key).compile()
        self.eval = compile_eval_step(self.model, mesh)
        self.eval = self.eval.lower(self.state.for_evaluation(), self.eval_batch, self.key).compile()

    @property
    def eval_batch(self) -> dict:
        return {name: self.batch[name] for name in ("inputs", "labels")}

    def train_once(self) -> dict:
        self.state, metrics = self.train(self.state, self.batch, self.key)
        return metrics

    def eval_once(self) -> jax.Array:
        return self.eval(self.state.for_evaluation(), self.eval_batch, self.key)


def run(config: ml_collections.ConfigDict, compile_only: bool = False, repeats: int = 5) -> dict:
    """Compiles (and unless `compile_only`, times) the train and eval steps; returns the results."""
    experiment.check_config(config)
    steps = Steps(config)
    variables = {"params": steps.state.params, "batch_stats": steps.state.batch_stats}
    flops = forward_flops(steps.model, variables, steps.batch["inputs"])
    result = {
        "model": config.model.name,
        "batch_size": config.batch_size,
        "timesteps": config.model.timesteps,
        "image_size": config.dataset.image_size,
        "width": config.model.width,
        "dtype": config.model.dtype,
        "remat": config.model.remat,
        "fused": config.model.fused,
        "train_temp_bytes": int(steps.train.memory_analysis().temp_size_in_bytes),
        "eval_temp_bytes": int(steps.eval.memory_analysis().temp_size_in_bytes),
        "forward_flops": flops,
        "device": device_description(),
        "jax": jax.__version__,
    }
    if compile_only:
        return result
    time_calls(steps.train_once, 1)  # warm-up
    train_seconds = time_calls(steps.train_once, repeats)
    time_calls(steps.eval_once, 1)
    eval_seconds = time_calls(steps.eval_once, repeats)
    result.update(
        {
            "train_step_seconds": min(train_seconds),
            "train_step_median_seconds": statistics.median(train_seconds),
            "eval_step_seconds": min(eval_seconds),
            "eval_step_median_seconds": statistics.median(eval_seconds),
            # Training costs about 3 forward passes (forward, input and weight gradients).
            "train_flops_per_second": 3 * flops / min(train_seconds),
            "eval_flops_per_second": flops / min(eval_seconds),
        }
    )
    return result


def tuning_variants(backend: str | None = None, fields: Sequence[str] = ()) -> dict[str, formulations.Tuning]:
    """The formulations of `backend` (default: this one) as "all", and for each of `fields` (default:
    every field) all but it where it is in use ("without ..."), or all and it where it is not ("with
    ...": a formulation measured elsewhere, tried here); with no `fields`, also "none"."""
    tuned = formulations.for_backend(backend or jax.default_backend())
    everything = formulations.for_backend("cpu")  # every formulation on, as each is where it is used
    names = [field.name for field in dataclasses.fields(tuned)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise cli.UserError(
            f"unknown formulation {', '.join(unknown)} in --ablate; the fields of "
            f"formulations.Tuning are {', '.join(names)}"
        )
    variants = {"all": tuned} if fields else {"all": tuned, "none": formulations.PLAIN}
    for name in fields or names:
        value = getattr(tuned, name)
        if value:
            variants[f"without {name}"] = dataclasses.replace(tuned, **{name: type(value)()})
        elif getattr(everything, name) and not name.startswith("xla_cpu_"):  # the XLA CPU options act on CPU only
            variants[f"with {name}"] = dataclasses.replace(tuned, **{name: getattr(everything, name)})
    return variants


def alternated(variants: dict[str, Steps], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best and median train step seconds of each variant: after a warm-up, `repeats` rounds time one
    step of each in turn, so that load from other processes falls on all of them alike."""
    for variant in variants.values():
        time_calls(variant.train_once, 1)  # warm-up
    seconds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, variant in variants.items():
            seconds[name] += time_calls(variant.train_once, 1)
    return {name: min(v) for name, v in seconds.items()}, {name: statistics.median(v) for name, v in seconds.items()}


def spike_budget_cost(config: ml_collections.ConfigDict, repeats: int) -> dict:
    """Train step seconds at the config's spike budget (`spikes.penalty` > 0) against no budget, alternated."""
    experiment.check_config(config)
    if config.spikes.penalty <= 0:
        raise cli.UserError("--spike_budget compares a spike budget with none: set --config.spikes.penalty > 0")
    without = config.copy_and_resolve_references()
    with without.unlocked():
        without.spikes.penalty = 0.0
    steps = {"budget": Steps(config), "none": Steps(without)}
    best, median = alternated(steps, repeats)
    return {
        "model": config.model.name,
        "batch_size": config.batch_size,
        "penalty": config.spikes.penalty,
        "weighting": config.spikes.weighting,
        "train_step_seconds": best,
        "train_step_median_seconds": median,
        "ratio_best": best["budget"] / best["none"],
        "ratio_median": median["budget"] / median["none"],
        "train_temp_bytes": {name: int(v.train.memory_analysis().temp_size_in_bytes) for name, v in steps.items()},
        "device": device_description(),
        "jax": jax.__version__,
    }


def ablate_tuning(
    config: ml_collections.ConfigDict, repeats: int, backend: str | None = None, fields: Sequence[str] = ()
) -> list[dict]:
    """Train step seconds and temporary memory of each of `tuning_variants(backend, fields)`, as
    ratios to "all".

    Every variant is compiled first; then rounds time one step of each in turn, so that load from
    other processes falls on all of them alike. Best and median over `repeats` rounds.
    """
    experiment.check_config(config)
    steps = {name: Steps(config, tuning) for name, tuning in tuning_variants(backend, fields).items()}
    best, median = alternated(steps, repeats)
    memory = {name: int(variant.train.memory_analysis().temp_size_in_bytes) for name, variant in steps.items()}
    return [
        {
            "variant": name,
            "train_step_seconds": best[name],
            "train_step_median_seconds": median[name],
            "ratio_best": best[name] / best["all"],
            "ratio_median": median[name] / median["all"],
            "train_temp_bytes": memory[name],
            "memory_ratio": memory[name] / memory["all"],
            "tuning_backend": backend or jax.default_backend(),
            "device": device_description(),
            "jax": jax.__version__,
        }
        for name in steps
    ]


def stream_latency(config: ml_collections.ConfigDict, rounds: int) -> dict:
    """Milliseconds per `stream.step` at batch 1 against a T-th of the whole-window forward at batch 1.

    Both jitted, on one synthetic example of the config's shapes; each round times one window and
    then T steps carrying the state, so that load falls on both alike. Medians over the rounds.
    """
    experiment.check_config(config)
    model = experiment.build_model(config, input_shapes(config))
    batch = synthetic_batch(config, 1, config.seed)
    init_key, key, _ = experiment.run_keys(config.seed)
    variables = jax.jit(lambda x: model.init({"params": init_key, "spikes": init_key}, x, train=False))(batch["inputs"])
    window = jax.jit(lambda v, x: model.apply(v, x, train=False, rngs={"spikes": key}))
    inputs = jnp.asarray(batch["inputs"])
    frames = stream.input_frames(key, inputs, model.settings.timesteps)
    step = jax.jit(functools.partial(stream.step, model))
    state = stream.init(model, variables, frames.shape[1:])
    jax.block_until_ready((window(variables, inputs), step(variables, state, frames[0])))  # compile
    window_seconds, step_seconds = [], []
    for _ in range(rounds):
        window_seconds += time_calls(lambda: window(variables, inputs), 1)
        for frame in frames:
            start = time.perf_counter()
            state, logits = step(variables, state, frame)
            jax.block_until_ready(logits)
            step_seconds.append(time.perf_counter() - start)
    window_ms, step_ms = 1e3 * statistics.median(window_seconds), 1e3 * statistics.median(step_seconds)
    timesteps = model.settings.timesteps
    return {
        "model": config.model.name,
        "timesteps": timesteps,
        "image_size": config.dataset.image_size,
        "width": config.model.width,
        "step_ms": step_ms,
        "window_ms": window_ms,
        "ratio_to_window_share": step_ms / (window_ms / timesteps),
        "device": device_description(),
    }


def summary_lines(result: dict) -> list[str]:
    gib = 2.0**30
    lines = [
        f"device {result['device']}, {result['model']} batch {result['batch_size']} T={result['timesteps']} "
        f"{result['image_size']}x{result['image_size']} width {result['width']} {result['dtype']}",
        f"train step temp memory {result['train_temp_bytes'] / gib:.3f} GiB, eval "
        f"{result['eval_temp_bytes'] / gib:.3f} GiB; forward {result['forward_flops'] / 1e9:.1f} GFLOPs (Eq. 9)",
    ]
    if "train_step_seconds" in result:
        lines.append(
            f"train step {result['train_step_seconds']:.4f} s best, "
            f"{result['train_step_median_seconds']:.4f} s median "
            f"({result['train_flops_per_second'] / 1e9:.1f} GFLOP/s); "
            f"eval step {result['eval_step_seconds']:.4f} s best"
        )
    return lines


def main() -> None:
    if FLAGS.stream:
        result = stream_latency(FLAGS.config, FLAGS.repeats)
        lines = [
            f"stream.step at batch 1: {result['step_ms']:.2f} ms median; whole window of T={result['timesteps']}: "
            f"{result['window_ms']:.2f} ms, so {result['ratio_to_window_share']:.2f}x a T-th of it"
        ]
    elif FLAGS.ablate_tuning:
        result = ablate_tuning(FLAGS.config, FLAGS.repeats, FLAGS.tuning_backend or None, FLAGS.ablate)
        lines = [
            f"{row['variant']:45s} {row['train_step_seconds']:.3f} s best ({row['ratio_best']:.2f}x), "
            f"{row['train_step_median_seconds']:.3f} s median ({row['ratio_median']:.2f}x), "
            f"temp {row['train_temp_bytes'] / 2**30:.3f} GiB ({row['memory_ratio']:.2f}x)"
            for row in result
        ]
    elif FLAGS.spike_budget:
        result = spike_budget_cost(FLAGS.config, FLAGS.repeats)
        lines = [
            f"spike budget ({result['weighting']}, penalty {result['penalty']}) against none: "
            f"{result['ratio_best']:.3f}x best, {result['ratio_median']:.3f}x median train step"
        ]
    else:
        result = run(FLAGS.config, FLAGS.compile_only, FLAGS.repeats)
        lines = summary_lines(result)
    print("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    FLAGS = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "Config file (configs/<name>.py).", lock_config=True)
    flags.DEFINE_bool("compile_only", False, "Compile and report memory and FLOPs without timing.")
    flags.DEFINE_integer("repeats", 5, "Timed calls per step after one warm-up call.")
    flags.DEFINE_bool(
        "stream",
        False,
        "Time stream.step at batch 1 against a T-th of the whole-window forward (spiking networks; --repeats rounds).",
    )
    flags.DEFINE_bool(
        "spike_budget",
        False,
        "Time the train step at the config's spike budget (spikes.penalty > 0) against none, "
        "alternating over --repeats rounds, as ratios.",
    )
    flags.DEFINE_bool(
        "ablate_tuning",
        False,
        "Time the train step with each faster formulation switched "
        "off in turn (snnseg_jax.formulations), as ratios to all of them.",
    )
    flags.DEFINE_list(
        "ablate",
        [],
        "With --ablate_tuning: only these formulations (fields of "
        "formulations.Tuning), each switched off where in use and on where not.",
    )
    flags.DEFINE_string(
        "tuning_backend",
        "",
        "With --ablate_tuning: the formulations of this backend "
        "(cpu, gpu, tpu) instead of the one running, e.g. to rehearse a GPU run on CPU.",
    )
    flags.mark_flags_as_required(["config"])
    cli.run(main)
