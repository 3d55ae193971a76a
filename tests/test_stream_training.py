"""Training on streams: membranes carried from window to window, the gradient cut between them, the
train step's carried state, the config's checks, and resuming after kill -9 and SIGTERM bitwise."""

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO, saved_state
from datasets_on_disk import DDD17_TRAIN, make_ddd17

from configs import ddd17_deeplab, events_deeplab_stream
from snnseg_jax import cli, experiment, models, steps, stream, train
from snnseg_jax.cli import UserError

T, B, SIDE = 3, 2, 32


def lively(variables):
    """Variables with every BNTT scale tripled, so that an untrained network fires up to its top layers."""
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf * 3 if "bntt" in jax.tree_util.keystr(path) and path[-1].key == "scale" else leaf,
        variables["params"],
    )
    return {**variables, "params": scaled}


def network(name, fused=True):
    model = models.build(name, 3, timesteps=T, width=0.125, in_channels=2, fused=fused)
    frames = (jax.random.uniform(jax.random.PRNGKey(0), (B, 2 * T, SIDE, SIDE, 2)) < 0.3).astype(jnp.float32)
    key = jax.random.PRNGKey(1)
    variables = jax.jit(lambda window: model.init({"params": key, "spikes": key}, window))(frames[:, :T])
    return model, lively(variables), frames


@functools.partial(jax.jit, static_argnums=(0, 4))
def carried_window(model, variables, window, membranes=None, train=False):
    logits, sown = model.apply(
        variables, window, train, membranes, mutable=[models.CARRIED, "batch_stats"] if train else [models.CARRIED]
    )
    return logits, models.carried(sown)


stream_step = jax.jit(stream.step, static_argnums=0, static_argnames="late_statistics")


@functools.partial(jax.jit, static_argnums=(0, 4))
def window_readouts(model, variables, window, membranes=None, train=False):
    readouts, sown = model.apply(
        variables,
        window,
        train,
        membranes,
        method=models.Network.readouts,
        mutable=[models.CARRIED, "batch_stats"] if train else [models.CARRIED],
    )
    return readouts, models.carried(sown)


def streamed(model, variables, frames):
    """`stream.step`'s logits after every frame of `frames` `[B, n, H, W, C]` from zero state, `[n, B, H, W, K]`."""
    state, out = stream.init(model, variables, (frames.shape[0], *frames.shape[2:])), []
    for t in range(frames.shape[1]):
        state, logits = stream_step(model, variables, state, frames[:, t], late_statistics="cycle")
        out.append(logits)
    return jnp.stack(out)


@pytest.mark.parametrize(
    "name, fused", [("spiking_deeplab", True), ("spiking_fcn", True), ("spiking_fcn", False)], ids=str
)
def test_a_window_from_carried_membranes_goes_on_as_stepping_through_both(name, fused):
    model, variables, frames = network(name, fused)
    _, after_first = carried_window(model, variables, frames[:, :T])
    second, after_second = carried_window(model, variables, frames[:, T:], after_first)
    from_zero, _ = carried_window(model, variables, frames[:, T:])

    state = stream.init(model, variables, (B, SIDE, SIDE, 2))
    for t in range(2 * T):
        state, logits = stream_step(model, variables, state, frames[:, t], late_statistics="cycle")

    assert float(jnp.abs(second - from_zero).max()) > 0.1  # the carried state matters
    np.testing.assert_allclose(second, logits, rtol=1e-5, atol=1e-5)
    assert after_second.keys() == state.membranes.keys()
    for layer, membrane in after_second.items():
        assert membrane.shape == state.membranes[layer].shape and membrane.dtype == jnp.float32
        np.testing.assert_allclose(membrane, state.membranes[layer], rtol=1e-5, atol=1e-5, err_msg=layer)


@pytest.mark.parametrize("name", ["spiking_deeplab", "spiking_fcn"])
def test_the_predictions_scored_every_frame_are_what_streaming_predicts(name):
    """Two windows: slot 0 goes on into the second, slot 1 starts it afresh. The logits the loss
    "every_frame" scores (`steps.streamed_logits` of `Network.readouts`) after each frame against
    `stream.step` driven frame by frame; and a fresh window's last is the window's logits."""
    model, variables, frames = network(name)
    first, after_first = window_readouts(model, variables, frames[:, :T])
    fresh = jnp.array([False, True])
    second, _ = window_readouts(model, variables, frames[:, T:], steps.starting_membranes(after_first, fresh))
    no_labels = jnp.zeros((B, T, SIDE, SIDE), jnp.uint8)

    def logits(readouts, carried, fresh):
        out, labels = steps.streamed_logits(readouts, carried, {"frame_labels": no_labels, "fresh": fresh})
        assert labels.shape == (T * B, SIDE, SIDE)
        return out.reshape(T, B, *out.shape[1:])

    from_zero = jnp.zeros_like(jnp.swapaxes(first, 0, 1)) + 100.0  # ignored: the slots are fresh
    got_first = logits(first, from_zero, jnp.array([True, True]))
    got_second = logits(second, jnp.swapaxes(first, 0, 1), fresh)
    through_both, second_alone = streamed(model, variables, frames), streamed(model, variables, frames[:, T:])

    assert first.shape == (T, B, *second.shape[2:]) and first.dtype == jnp.float32
    np.testing.assert_allclose(got_first, through_both[:T], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_second[:, 0], through_both[T:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_second[:, 1], second_alone[:, 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_first[-1], model.apply(variables, frames[:, :T]), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(got_first[0] - got_first[-1]).max()) > 0.1  # the predictions differ frame by frame


def test_no_gradient_flows_into_the_previous_window_and_fused_equals_plain():
    """On Spiking-FCN: fused units and the head's plain LIF layers both carry membranes."""
    model, variables, frames = network("spiking_fcn")
    plain, _, _ = network("spiking_fcn", fused=False)
    labels = jax.random.randint(jax.random.PRNGKey(2), (B, SIDE, SIDE), 0, 3)

    def loss(params, network, carried):
        v = {**variables, "params": params}
        if carried is None:  # the first window as a function of the parameters too
            carried = carried_window(network, v, frames[:, :T], None, True)[1]
        logits = carried_window(network, v, frames[:, T:], carried, True)[0]
        return steps.cross_entropy(logits, labels)

    gradient = jax.jit(jax.grad(loss), static_argnums=1)
    constant = carried_window(model, variables, frames[:, :T], None, True)[1]
    through_both = gradient(variables["params"], model, None)
    second_only = gradient(variables["params"], model, constant)
    plain_grads = gradient(variables["params"], plain, None)
    leaves = jax.tree.leaves_with_path(through_both)
    assert max(float(jnp.abs(g).max()) for _, g in leaves) > 0
    for (path, got), want, other in zip(leaves, jax.tree.leaves(second_only), jax.tree.leaves(plain_grads)):
        np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
        scale = float(jnp.abs(other).max()) or 1.0
        np.testing.assert_allclose(got, other, rtol=1e-4, atol=1e-5 * scale, err_msg=jax.tree_util.keystr(path))


def test_the_train_step_carries_membranes_and_fresh_slots_start_from_zero():
    model, variables, frames = network("spiking_fcn")
    optimizer = optax.adam(1e-3)
    labels = jnp.zeros((B, SIDE, SIDE), jnp.int32)
    carried = stream.init(model, variables, (B, SIDE, SIDE, 2)).membranes
    state = steps.TrainState(
        jnp.zeros((), jnp.int32),
        variables["params"],
        variables["batch_stats"],
        optimizer.init(variables["params"]),
        carried,
    )
    step = jax.jit(lambda s, b: steps.train_step(s, b, jax.random.PRNGKey(0), model=model, optimizer=optimizer))

    first = {"inputs": frames[:, :T], "labels": labels, "fresh": jnp.array([True, True])}
    after, metrics = step(state, first)
    _, expected = carried_window(model, variables, frames[:, :T], None, True)
    for layer, membrane in expected.items():
        np.testing.assert_allclose(after.carried[layer], membrane, rtol=1e-5, atol=1e-5, err_msg=layer)

    # Slot 0 goes on from its membranes, slot 1 starts afresh: slot 1's loss is that of a zero start.
    second = {"inputs": frames[:, T:], "labels": labels, "fresh": jnp.array([False, True])}
    state_2 = after.replace(params=variables["params"], opt_state=state.opt_state)
    _, mixed = step(state_2, second)
    _, zero = step(state_2, {**second, "fresh": jnp.array([True, True])})
    _, carried_all = step(state_2, {**second, "fresh": jnp.array([False, False])})
    assert float(zero["loss"]) != float(carried_all["loss"])
    # The per-slot losses are means over the slot's pixels, and BNTT's batch statistics couple the
    # slots: compare the mixed batch against both extremes rather than slot by slot.
    assert float(mixed["loss"]) not in (float(zero["loss"]), float(carried_all["loss"]))


def test_scored_every_frame_the_step_carries_readouts_and_a_fresh_window_labelled_at_its_end_is_window_end():
    """A fresh window labelled at its last frame only scores what "window_end" scores; the state
    carries the window's readouts, and the next window's loss depends on them."""
    model, variables, frames = network("spiking_deeplab")
    optimizer = optax.adam(1e-3)
    labels = jax.random.randint(jax.random.PRNGKey(2), (B, SIDE, SIDE), 0, 3).astype(jnp.uint8)
    frame_labels = jnp.full((B, T, SIDE, SIDE), 255, jnp.uint8).at[:, -1].set(labels)
    zero = stream.init(model, variables, (B, SIDE, SIDE, 2))
    window_end = steps.TrainState(
        jnp.zeros((), jnp.int32),
        variables["params"],
        variables["batch_stats"],
        optimizer.init(variables["params"]),
        zero.membranes,
    )
    every_frame = window_end.replace(readouts=jnp.swapaxes(zero.readouts, 0, 1))
    step = jax.jit(lambda s, b: steps.train_step(s, b, jax.random.PRNGKey(0), model=model, optimizer=optimizer))
    batch = {"inputs": frames[:, :T], "labels": labels, "frame_labels": frame_labels, "fresh": jnp.array([True, True])}

    after, scored_every_frame = step(every_frame, batch)
    after_window_end, scored_at_end = step(window_end, batch)
    np.testing.assert_allclose(scored_every_frame["loss"], scored_at_end["loss"], rtol=1e-5)
    assert after_window_end.readouts is None
    expected, _ = window_readouts(model, variables, frames[:, :T], None, True)
    np.testing.assert_allclose(after.readouts, jnp.swapaxes(expected, 0, 1), rtol=1e-5, atol=1e-5)

    going_on = after.replace(params=variables["params"], opt_state=every_frame.opt_state)
    every_label = jnp.broadcast_to(labels[:, None], (B, T, SIDE, SIDE))
    second = {**batch, "inputs": frames[:, T:], "frame_labels": every_label, "fresh": jnp.array([False, False])}
    _, carried = step(going_on, second)
    _, other_readouts = step(going_on.replace(readouts=going_on.readouts * 0.5), second)
    assert float(carried["loss"]) != float(other_readouts["loss"])


# ---------------------------------------------------------------- the config's checks


def stream_config(**changes):
    config = events_deeplab_stream.get_config()
    config.update_from_flattened_dict(changes)
    return config


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"model.name": "deeplab"}, "stream_training.enabled needs a spiking network"),
        ({"dataset.name": "shapes"}, "stream_training.enabled needs recordings"),
        ({"stream_training.zero_state_fraction": 1.5}, "stream_training.zero_state_fraction must be"),
        ({"stream_training.zero_state_fraction": -0.25}, "stream_training.zero_state_fraction must be"),
        ({"stream_training.loss": "every_window"}, "stream_training.loss must be"),
        ({"model.membrane_floor": 0.5}, "model.membrane_floor must be a finite number <= 0 or None"),
    ],
)
def test_bad_stream_settings_are_named(changes, named):
    with pytest.raises(UserError, match=re.escape(named)):
        experiment.check_config(stream_config(**changes))


def test_a_recording_shorter_than_t_stops_training_before_any_work(tmp_path):
    config = stream_config(
        **{"model.timesteps": 25, "dataset.synthetic_sizes.train": 40, "dataset.synthetic_sizes.val": 20}
    )
    with pytest.raises(UserError) as error:  # the entry points exit 2 with its message
        train.train_and_evaluate(config, str(tmp_path))
    assert "rec0_frame0" in str(error.value) and "model.timesteps" in str(error.value)
    assert not os.path.exists(tmp_path / "checkpoints")


def test_the_ddd17_layout_is_streamed_run_by_run(tmp_path):
    """`experiment.build` on DDD17 as distributed (Ev-SegNet layout): each recording's frames are one
    run, in frame-number order; a recording shorter than T stops it, naming its first frame."""
    make_ddd17(tmp_path, "evsegnet")
    config = ddd17_deeplab.get_config()
    config.update_from_flattened_dict(
        {"dataset.root": str(tmp_path), "dataset.image_size": 16, "model.width": 0.0625, "model.timesteps": 3,
         "batch_size": 2, "stream_training.enabled": True}
    )  # fmt: skip
    built = experiment.build(config, training=True)
    split = built.stream.sequences.split
    runs = [[split.ids[i] for i in run] for run in built.stream.runs]
    assert runs == [[f"rec{r}_export_{n}" for n in sorted(frames)] for r, frames in sorted(DDD17_TRAIN.items())]
    batch = built.stream.batch(0)
    assert batch["inputs"].shape == (2, 3, 16, 16, 2) and batch["fresh"].all()
    config.model.timesteps = 4
    shortest = min(DDD17_TRAIN, key=lambda r: len(DDD17_TRAIN[r]))
    with pytest.raises(UserError, match=f"run starting at frame rec{shortest}_export_{min(DDD17_TRAIN[shortest])} "):
        experiment.build(config, training=True)


# ---------------------------------------------------------------- kill -9 and SIGTERM resume bitwise

TINY = {
    "dataset.image_size": 16,
    "model.width": 0.0625,
    "model.timesteps": 3,
    "dataset.synthetic_sizes.train": 80,  # 4 recordings of 20 frames
    "dataset.synthetic_sizes.val": 20,
    "batch_size": 4,
    "eval_batch_size": 10,
    "num_epochs": 0,
    "num_train_steps": 10,
    "log_every_steps": 3,
    "checkpoint_every_steps": 2,
    "eval_every_steps": 5,
    "keep_checkpoints": 10,
}


def command(workdir, point=None, step=None):
    script = [str(REPO / "tests" / "kill_switch.py"), point, str(step)] if point else [str(REPO / "train.py")]
    return [
        sys.executable,
        *script,
        f"--config={REPO / 'configs' / 'events_deeplab_stream.py'}",
        f"--workdir={workdir}",
        *(f"--config.{field}={value}" for field, value in TINY.items()),
    ]


def run(workdir, point=None, step=None):
    return subprocess.run(command(workdir, point, step), capture_output=True, text=True, cwd=REPO, timeout=600)


def metrics_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [re.sub(r', "images_per_sec": [^,}]*', "", line) for line in f]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("stream_reference"))
    result = run(workdir)
    assert result.returncode == 0, result.stderr
    return workdir


def assert_ends_like(reference, workdir):
    expected, got = saved_state(reference, TINY["num_train_steps"]), saved_state(workdir, TINY["num_train_steps"])
    assert expected.keys() == got.keys()
    assert any("carried" in str(path) for path in expected)  # the membranes are part of the checkpoint
    for path, leaf in expected.items():
        np.testing.assert_array_equal(got[path], leaf, err_msg=str(path))
    assert metrics_lines(workdir) == metrics_lines(reference)


def test_resuming_from_a_checkpoint_ends_as_the_uninterrupted_run(tmp_path, capsys):
    """In this process: the run of TINY, then a copy of it cut back to checkpoint 4 (as a run stopped
    after step 4 leaves it: later checkpoints gone, later metrics lines still there) run again. It
    resumes the carried membranes and the recordings' positions and ends bitwise as the first; the
    subprocess tests below (`-m slow`) do the same after a real kill -9 and a real SIGTERM."""
    config = stream_config(**TINY)
    reference, resumed = str(tmp_path / "reference"), str(tmp_path / "resumed")
    train.train_and_evaluate(config, reference)
    shutil.copytree(reference, resumed)
    for name in os.listdir(os.path.join(resumed, "checkpoints")):
        if int(name) > 4:
            shutil.rmtree(os.path.join(resumed, "checkpoints", name))
    capsys.readouterr()
    train.train_and_evaluate(config, resumed)
    assert "Resuming from step 4 " in capsys.readouterr().out
    assert_ends_like(reference, resumed)


@pytest.mark.slow  # in-process resume: test_resuming_from_a_checkpoint_ends_as_the_uninterrupted_run
def test_killed_while_saving_then_rerun_ends_as_the_uninterrupted_run(uninterrupted, tmp_path):
    workdir = str(tmp_path / "killed")
    result = run(workdir, "save", 6)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    result = run(workdir)
    assert result.returncode == 0, result.stderr
    assert "Resuming from step 4 " in result.stdout
    assert_ends_like(uninterrupted, workdir)


@pytest.mark.slow  # in-process resume above; SIGTERM itself: tests/test_faults.py
def test_sigterm_saves_the_step_and_resuming_ends_as_the_uninterrupted_run(uninterrupted, tmp_path):
    workdir = str(tmp_path / "stopped")
    result = run(workdir, "term_step", 2)
    assert result.returncode == cli.EXIT_STOPPED, result.stderr[-2000:]
    result = run(workdir)
    assert result.returncode == 0, result.stderr
    assert "Resuming from step 3 " in result.stdout
    assert_ends_like(uninterrupted, workdir)


# ---------------------------------------------------------------- several devices and processes split the slots


def start(workdir, *flags, devices=1):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}",
    }
    args = command(workdir) + ["--config.num_train_steps=4", "--config.eval_every_steps=4", *flags]
    return subprocess.Popen(args, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_devices_and_two_processes_split_the_slots_and_train_as_one_device(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    workdirs = {name: str(tmp_path / name) for name in ("one", "two_devices", "two_processes")}
    processes = [start(workdirs["one"]), start(workdirs["two_devices"], devices=2)]
    processes += [
        start(
            workdirs["two_processes"],
            "--config.distributed.initialize=True",
            "--config.distributed.num_processes=2",
            f"--config.distributed.coordinator_address=localhost:{port}",
            f"--config.distributed.process_id={i}",
        )
        for i in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=600)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    expected = saved_state(workdirs["one"], 4)
    assert any("carried" in str(path) for path in expected)
    for name in ("two_devices", "two_processes"):
        got = saved_state(workdirs[name], 4)
        assert got.keys() == expected.keys()
        for path, leaf in expected.items():  # gradients summed in another order: rounding, grown by Adam
            np.testing.assert_allclose(got[path], leaf, rtol=1e-4, atol=1e-4, err_msg=f"{name} {path}")
