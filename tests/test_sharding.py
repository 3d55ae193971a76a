"""Data parallelism: process shares of global batches, placement, and training on 2 devices / 2 processes.

The end-to-end runs train the same tiny config for 3 steps as one process on one device, as one
process on 2 simulated CPU devices, and as 2 processes joined through `jax.distributed` (CPU
collectives over gloo); all four processes start together.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import saved_state

from snnseg_jax import sharding
from snnseg_jax.data import ArrayDataset, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "shapes_deeplab.py")
# 16 training images in batches of 4; 6 validation images in batches of 4 (the second one padded).
TINY = [
    "--config.dataset.image_size=16",
    "--config.model.width=0.125",
    "--config.model.timesteps=2",
    "--config.dataset.synthetic_sizes.train=16",
    "--config.dataset.synthetic_sizes.val=6",
    "--config.batch_size=4",
    "--config.eval_batch_size=4",
    "--config.num_train_steps=3",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=3",
    "--config.eval_every_steps=-1",
]


def eval_batches(dataset, batch_size):
    """Every evaluation batch of `dataset`, in order, as evaluation reads them."""
    return [pipeline.read_eval_batch(dataset, batch_size, start) for start in range(0, len(dataset), batch_size)]


class NoisyNumbered:
    """Example i is i plus augmentation noise drawn from the generator, one draw per example in turn."""

    class_names, in_channels = ("a",), 1

    def __len__(self):
        return 40

    def read(self, indices, rng=None):
        noise = rng.uniform(size=len(indices)) if rng is not None else np.zeros(len(indices))
        return (indices + noise).astype(np.float32)[:, None], indices.astype(np.uint8)[:, None]


def shares(dataset, batch_size, processes):
    """The share of each of `processes` processes holding equal consecutive rows of every batch."""
    per_process = batch_size // processes
    return [
        sharding.ProcessShare(dataset, batch_size, np.arange(p * per_process, (p + 1) * per_process))
        for p in range(processes)
    ]


def assemble(batches, batch_size, processes):
    """One batch from the processes' batches, each giving its own rows (what `put_batch` does)."""
    per_process = batch_size // processes
    own_rows = [slice(p * per_process, (p + 1) * per_process) for p in range(processes)]
    return {name: np.concatenate([batch[name][rows] for rows, batch in zip(own_rows, batches)]) for name in batches[0]}


@pytest.mark.parametrize("processes", [2, 4])
def test_training_batches_are_the_same_whatever_the_number_of_processes(processes):
    dataset, start = NoisyNumbered(), pipeline.Position(epoch=1, batch=3)
    whole = pipeline.train_batches(shares(dataset, 8, 1)[0], 8, seed=5, start=start)
    split = [pipeline.train_batches(share, 8, seed=5, start=start) for share in shares(dataset, 8, processes)]
    for _ in range(4):
        expected = next(whole)
        parts = [next(batches) for batches in split]
        assert all(len(part["inputs"]) == 8 for part in parts)
        got = assemble(parts, 8, processes)
        np.testing.assert_array_equal(got["labels"], expected["labels"])
        np.testing.assert_array_equal(got["inputs"], expected["inputs"])
        noise = expected["inputs"][:, 0] - expected["labels"][:, 0]
        assert np.all((noise > 0) & (noise < 1)) and len(set(noise)) == 8  # augmented, each example anew


def test_a_process_reads_only_its_rows():
    reads = []

    class Recording(NoisyNumbered):
        def read(self, indices, rng=None):
            reads.append(indices.tolist())
            return super().read(indices, rng)

    second = shares(Recording(), 4, 2)[1]
    inputs, labels = second.read(np.array([7, 9, 20, 31]), np.random.default_rng(0))
    assert reads == [[20], [31]]
    np.testing.assert_array_equal(labels[:, 0], [0, 0, 20, 31])
    assert inputs[0, 0] == 0 and inputs[1, 0] == 0


def test_padded_evaluation_batches_are_the_same_whatever_the_number_of_processes():
    numbers = np.arange(10)[:, None]
    dataset = ArrayDataset(numbers.astype(np.float32), numbers.astype(np.uint8), ("a",))
    whole = list(eval_batches(dataset, 4))
    split = [list(eval_batches(share, 4)) for share in shares(dataset, 4, 2)]
    assert len(whole) == 3 and all(len(batches) == 3 for batches in split)
    for i, expected in enumerate(whole):
        got = assemble([batches[i] for batches in split], 4, 2)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
    # The last batch holds examples 8, 9 and two padding rows, all of them with the second process.
    np.testing.assert_array_equal(whole[-1]["labels"][:, 0], [8, 9, 255, 255])


def test_one_process_holds_every_row_and_puts_the_batch_on_its_devices():
    mesh = sharding.data_mesh()
    np.testing.assert_array_equal(sharding.local_rows(4, mesh), np.arange(4))
    batch = {"inputs": np.arange(24, dtype=np.float32).reshape(4, 3, 2), "labels": np.arange(4, dtype=np.uint8)}
    placed = sharding.put_batch(batch, sharding.batch_sharding(mesh))
    for name in batch:
        assert placed[name].sharding == sharding.batch_sharding(mesh)
        np.testing.assert_array_equal(np.asarray(placed[name]), batch[name])


# ---------------------------------------------------------------- end to end


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_training(workdir, *overrides, devices=1, script=("train.py",)):
    """`python train.py` (or `script`: another file of the repository and its arguments) on TINY."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}",
    }
    return subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, script[0]),
            *script[1:],
            f"--config={CONFIG}",
            f"--workdir={workdir}",
            *TINY,
            *overrides,
        ],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def distributed_flags(process_id, port):
    return [
        "--config.distributed.initialize=True",
        "--config.distributed.num_processes=2",
        f"--config.distributed.coordinator_address=localhost:{port}",
        f"--config.distributed.process_id={process_id}",
    ]


def finished(processes):
    """The exit status and output of each of `processes`, once all have ended."""
    try:
        outputs = [process.communicate(timeout=400)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    return [(process.returncode, output) for process, output in zip(processes, outputs)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Workdirs of the same training on 1 device, on 2 devices, and as 2 processes."""
    names = ("one_device", "two_devices", "two_processes")
    workdirs = {name: str(tmp_path_factory.mktemp(name)) for name in names}
    port = free_port()
    started = [start_training(workdirs["one_device"]), start_training(workdirs["two_devices"], devices=2)]
    started += [start_training(workdirs["two_processes"], *distributed_flags(i, port)) for i in range(2)]
    for status, output in finished(started):
        assert status == 0, output[-3000:]
    return workdirs


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def final_state(workdir, step=3):
    return saved_state(workdir, step)


# The end-to-end runs (one device, two devices, two processes) are slow; the sharded step itself and
# each process's rows are checked in the default run above and below.
@pytest.mark.slow
@pytest.mark.parametrize("run", ["two_devices", "two_processes"])
def test_data_parallel_training_matches_one_device(runs, run):
    expected, got = read_metrics(runs["one_device"]), read_metrics(runs[run])
    assert [line["step"] for line in got] == [line["step"] for line in expected] == [1, 2, 3, 3]
    losses = lambda records: [record["loss"] for record in records[:3]]
    np.testing.assert_allclose(losses(got), losses(expected), rtol=1e-5)
    assert got[3]["num_images"] == 6
    np.testing.assert_allclose(got[3]["iou_per_class"], expected[3]["iou_per_class"], rtol=1e-6)
    expected_state, state = final_state(runs["one_device"]), final_state(runs[run])
    assert state.keys() == expected_state.keys() and int(state[("step",)]) == 3
    # Gradients summed across devices in another order differ by rounding; Adam, which divides by the
    # gradient's own size, turns that into parameter differences of a small fraction of its step (3e-3).
    for path, leaf in expected_state.items():
        np.testing.assert_allclose(state[path], leaf, rtol=1e-4, atol=1e-4, err_msg=str(path))
    # Each step changed the loss by far more (here 10x) than the tolerance, so the steps themselves agree.
    losses = np.array([record["loss"] for record in expected[:3]])
    assert np.all(np.abs(np.diff(losses)) > 10 * 1e-5 * np.abs(losses[1:]))


@pytest.mark.slow
def test_only_the_first_process_writes_the_metrics(runs):
    lines = read_metrics(runs["two_processes"])
    assert len(lines) == 4  # not once per process


def test_each_of_two_devices_runs_half_of_the_train_step():
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
    }
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "train_step_flops.py")],
        cwd=ROOT,
        env={**env, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    flops = json.loads(result.stdout.strip().splitlines()[-1])
    assert flops["2"] < 0.6 * flops["1"]


def test_a_distributed_run_without_a_coordinator_is_a_user_error(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "OMPI_", "JAX_"))}
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            f"--config={CONFIG}",
            f"--workdir={tmp_path}",
            "--config.distributed.initialize=True",
        ],
        cwd=ROOT,
        env={**env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "config.distributed.coordinator_address" in " ".join(result.stderr.split())


@pytest.mark.slow
def test_two_processes_stop_together_on_a_signal_to_one_and_resume_exactly(tmp_path):
    """SIGTERM to the second process only, while step 2 runs: both stop after step 3 (the request is
    shared by a collective read one step late), save it, and exit with EXIT_STOPPED; resumed, the
    two processes end bitwise as two that were never stopped."""
    from snnseg_jax import cli

    longer = ["--config.num_train_steps=6", "--config.checkpoint_every_steps=2", "--config.keep_checkpoints=5"]

    def two_processes(workdir, second=("train.py",)):
        port = free_port()
        return finished(
            [
                start_training(workdir, *longer, *distributed_flags(i, port), script=script)
                for i, script in enumerate([("train.py",), second])
            ]
        )

    reference, stopped = str(tmp_path / "reference"), str(tmp_path / "stopped")
    uninterrupted = two_processes(reference)
    assert [status for status, _ in uninterrupted] == [0, 0], [output[-2000:] for _, output in uninterrupted]
    (status_0, output_0), (status_1, output_1) = two_processes(
        stopped, second=(os.path.join("tests", "kill_switch.py"), "term_step", "2")
    )
    assert status_0 == status_1 == cli.EXIT_STOPPED, output_0[-2000:] + output_1[-2000:]
    assert "kill_switch: last step dispatched 3, 1 SIGTERM" in output_1
    assert "SIGTERM received; saved checkpoint 3" in " ".join(output_1.split())
    assert "another process received a signal; saved checkpoint 3" in " ".join(output_0.split())
    assert sorted(os.listdir(os.path.join(stopped, "checkpoints"))) == ["2", "3"]
    resumed = two_processes(stopped)
    assert [status for status, _ in resumed] == [0, 0], [output[-2000:] for _, output in resumed]
    assert "Resuming from step 3 " in resumed[0][1]
    expected, got = final_state(reference, 6), final_state(stopped, 6)
    assert got.keys() == expected.keys()
    for path, leaf in expected.items():
        np.testing.assert_array_equal(got[path], leaf, err_msg=str(path))
    timeless = lambda lines: [{k: v for k, v in line.items() if k != "images_per_sec"} for line in lines]
    assert timeless(read_metrics(stopped)) == timeless(read_metrics(reference))
