"""Faults: SIGKILL at planted points of a run (kill_switch.py) and from outside, non-finite steps, damaged
checkpoints and configs that do not fit.

The training subprocesses here share a persistent XLA compilation cache, so that only the first run
of each program compiles. That a resumed run compiling afresh also ends bitwise like the
uninterrupted run is checked without the cache in test_entry_points.py.
"""

import functools
import gc
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, as_in_this_process, read_events

from configs import shapes_deeplab
from snnseg_jax import checkpoints, cli, experiment, models, optimization, sharding
from snnseg_jax.cli import UserError

CONFIG = REPO / "configs" / "shapes_deeplab.py"
# 40 training images in batches of 8: 5 steps per epoch, 12 steps cross two epoch boundaries.
# Logging windows (3 steps) straddle checkpoints (every 2), so a resumed run must carry one over.
TINY = {
    "dataset.image_size": 16,
    "model.width": 0.0625,
    "model.timesteps": 2,
    "dataset.synthetic_sizes.train": 40,
    "dataset.synthetic_sizes.val": 13,
    "batch_size": 8,
    "eval_batch_size": 5,
    "num_train_steps": 12,
    "log_every_steps": 3,
    "checkpoint_every_steps": 2,
    "eval_every_steps": 5,
    "keep_checkpoints": 2,
}
STEPS, EVERY = TINY["num_train_steps"], TINY["checkpoint_every_steps"]
TMP_SUFFIX = ".orbax-checkpoint-tmp"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xla_cache")
    return dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def command(script, workdir, changes=None):
    fields = {**TINY, **(changes or {})}
    return [
        sys.executable,
        str(REPO / script),
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        *(f"--config.{field}={value}" for field, value in fields.items()),
    ]


def run(script, workdir, env, changes=None):
    return subprocess.run(
        command(script, workdir, changes), capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


def tiny_config(changes=None):
    config = shapes_deeplab.get_config()
    config.update_from_flattened_dict({**TINY, **(changes or {})})
    return config


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_timing(records):
    return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in records]


def saved_state(workdir, step):
    return ocp.tree.to_flat_dict(
        ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    )


def step_dirs(workdir):
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def assert_same_arrays(expected, actual):
    assert expected.keys() == actual.keys()
    for path, leaf in expected.items():
        np.testing.assert_array_equal(actual[path], leaf, err_msg=str(path))


def assert_ends_like(reference, workdir, steps=None):
    """Same kept checkpoints (or those of `steps`), bitwise, and the same metrics.jsonl but for the timings."""
    if steps is None:
        assert step_dirs(workdir) == step_dirs(reference)
    for step in steps or step_dirs(reference):
        assert_same_arrays(saved_state(reference, step), saved_state(workdir, step))
    assert without_timing(read_metrics(workdir)) == without_timing(read_metrics(reference))
    assert_same_tensorboard(reference, workdir)


def assert_same_tensorboard(reference, workdir):
    """Each (tag, step) once in the event files, with the reference's values (images/s aside)."""
    expected, got = read_events(reference), read_events(workdir)
    assert len({(tag, step) for tag, step, _ in got}) == len(got)  # no step logged twice
    timeless = lambda events: {(tag, step): value for tag, step, value in events if tag != "train/images_per_sec"}
    assert {(tag, step) for tag, step, _ in got} == {(tag, step) for tag, step, _ in expected}
    assert timeless(got) == timeless(expected)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """An uninterrupted run."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    result = run("train.py", workdir, env)
    assert result.returncode == 0, result.stderr
    return workdir


# ---------------------------------------------------------------- kill -9, then the same command again


def complete_steps(workdir):
    return checkpoints.complete_steps(os.path.join(workdir, "checkpoints"))


def fresh_saves(workdir, since_ns):
    """Steps of the unfinished saves (temporary directories) begun after `since_ns` (older ones are stale)."""
    directory, fresh = os.path.join(workdir, "checkpoints"), set()
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        try:
            if TMP_SUFFIX in name and os.stat(os.path.join(directory, name)).st_mtime_ns >= since_ns:
                fresh.add(int(name.split(".")[0]))
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return fresh


def loader_changes(rng):
    """The reference run reads with 1 loader thread; the killed runs with 2 to 4 and deeper prefetching."""
    threads = rng.randint(2, 4)
    return {"loader_threads": threads, "prefetch_batches": threads + 1}


def killed_at(point, step, workdir, env, rng):
    """Runs train.py until it kills itself with SIGKILL at `point` of `step` (see kill_switch.py)."""
    args = command("train.py", workdir, loader_changes(rng))
    args[1:2] = [str(REPO / "tests" / "kill_switch.py"), point, str(step)]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == -signal.SIGKILL, f"no kill at {point} of step {step}: {result.stderr[-2000:]}"


def metrics_text(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read()


def kill_from_outside_during_a_save(workdir, env, rng):
    """SIGKILL from this process as soon as it sees a save before the last begun: wherever the run is then."""
    launched_ns = time.time_ns()
    process = subprocess.Popen(
        command("train.py", workdir, loader_changes(rng)),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while process.poll() is None and not any(s < STEPS for s in fresh_saves(workdir, launched_ns)):
            time.sleep(0.001)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def resume_and_compare(reference, workdir, env):
    result = run("train.py", workdir, env)
    assert result.returncode == 0, result.stderr
    assert "does not read back" not in result.stderr
    assert not os.path.exists(os.path.join(workdir, checkpoints.INVALID_DIR))
    assert_ends_like(reference, workdir)


def test_killed_mid_line_and_mid_save_then_rerun_ends_exactly_as_the_uninterrupted_run(reference, env, tmp_path):
    """SIGKILL in the middle of a metrics line, then while a checkpoint is committed; the next run
    resumes from the newest complete checkpoint and ends bitwise as the uninterrupted run. (Two of
    the four points of the test below, which `-m slow` runs.)"""
    workdir = str(tmp_path / "killed")
    rng = random.Random(6)
    killed_at("line", 3, workdir, env, rng)
    torn = metrics_text(workdir).rsplit("\n", 1)[-1]
    assert torn.startswith('{"step": 3, ') and not torn.endswith("}"), torn
    killed_at("save", 6, workdir, env, rng)
    assert 6 not in complete_steps(workdir) and 6 in fresh_saves(workdir, 0)
    resume_and_compare(reference, workdir, env)


@pytest.mark.slow  # two of its points by default: test_killed_mid_line_and_mid_save_then_...
def test_killed_at_seeded_points_then_rerun_ends_exactly_as_the_uninterrupted_run(reference, env, tmp_path):
    """SIGKILL in the middle of a metrics line, while a checkpoint is committed, after a line, and
    from outside during a save; each run resumes from the newest complete checkpoint, which the
    kills leave at a step that can vary with the machine's speed (a save is asynchronous), so each
    point is drawn after that step."""
    rng = random.Random(6)
    workdir = str(tmp_path / "killed")
    logged = sorted({r["step"] for r in read_metrics(reference)})  # 3, 5, 6, 9, 10, 12

    step = rng.choice([s for s in logged if s <= 6])
    killed_at("line", step, workdir, env, rng)
    torn = metrics_text(workdir).rsplit("\n", 1)[-1]  # what a kill in the middle of writing a line leaves
    assert torn.startswith(f'{{"step": {step}, ') and not torn.endswith("}"), torn

    resumed_from = max(complete_steps(workdir), default=0)
    step = rng.choice(range(resumed_from + EVERY, STEPS + 1, EVERY)[:2])
    killed_at("save", step, workdir, env, rng)
    assert step not in complete_steps(workdir) and step in fresh_saves(workdir, 0)

    resumed_from = max(complete_steps(workdir), default=0)
    step = rng.choice([s for s in logged if s > resumed_from][:3])
    killed_at("after_line", step, workdir, env, rng)
    assert metrics_text(workdir).endswith("\n") and read_metrics(workdir)[-1]["step"] == step

    resumed_from = max(complete_steps(workdir), default=0)
    if resumed_from < STEPS - EVERY:  # a save to kill in, and a later one to delete what that leaves of an old one
        kill_from_outside_during_a_save(workdir, env, rng)

    resume_and_compare(reference, workdir, env)
    evaluated = str(tmp_path / "reference")
    shutil.copytree(reference, evaluated)
    for directory in (evaluated, workdir):
        result = run("evaluate.py", directory, env)
        assert result.returncode == 0, result.stderr
    with open(os.path.join(evaluated, "eval_val.json")) as a, open(os.path.join(workdir, "eval_val.json")) as b:
        assert json.load(a) == json.load(b)


# ---------------------------------------------------------------- SIGTERM: save, stop, resume


def stopped_at(point, step, workdir, env, rng):
    """Runs train.py until SIGTERM at `point` of `step` (see kill_switch.py) stops it; checks that it
    saved the last step it had dispatched, and returns that step and the run's output."""
    args = command("train.py", workdir, loader_changes(rng))
    args[1:2] = [str(REPO / "tests" / "kill_switch.py"), point, str(step)]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == cli.EXIT_STOPPED, f"{point} {step}: {result.stderr[-3000:]}"
    last, sent = map(int, re.search(r"kill_switch: last step dispatched (\d+), (\d+) SIGTERM", result.stderr).groups())
    assert sent >= 2 if point == "term_save" else sent == 1  # term_save: more, one during the stop's save
    message = " ".join(result.stderr.split())
    assert f"stopped: SIGTERM received; saved checkpoint {last}, the last step computed" in message
    assert max(complete_steps(workdir)) == last and last not in fresh_saves(workdir, 0)
    return last, result


@pytest.mark.parametrize(
    "during_validation", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["step-save", "step-save-validation"]
)
def test_sigterm_saves_the_last_step_computed_and_resuming_recomputes_none(reference, env, tmp_path, during_validation):
    """SIGTERM during a step, during a periodic save (and once more during the save it causes) and,
    with `during_validation` (`-m slow`), during a validation: each run saves the last step it
    computed and exits with EXIT_STOPPED; the next run resumes from exactly that step; the end is the
    uninterrupted run's, bitwise."""
    rng = random.Random(15)
    workdir = str(tmp_path / "stopped")
    # Read one step late, a request during step s stops the run after step s + 1: a checkpoint step
    # (4), or a step due for validation (5), which the resumed run then validates first.
    step = rng.choice([3, 4])
    last, _ = stopped_at("term_step", step, workdir, env, rng)
    assert last == step + 1
    # Orbax commits checkpoint `step` in the background while the loop goes on: the stop comes some
    # steps later, whenever the signal does.
    step, resumed_from = next(s for s in range(last + 1, STEPS) if s % EVERY == 0), last
    last, result = stopped_at("term_save", step, workdir, env, rng)
    assert f"Resuming from step {resumed_from} " in result.stdout and last > step
    if during_validation and last < 10:
        resumed_from = last
        last, result = stopped_at("term_validation", 10, workdir, env, rng)
        assert f"Resuming from step {resumed_from} " in result.stdout and last == 11
    result = run("train.py", workdir, env)
    assert result.returncode == 0, result.stderr
    assert f"Resuming from step {last} " in result.stdout
    assert_ends_like(reference, workdir, steps=[STEPS])  # the stops kept other checkpoints than the reference


@pytest.mark.parametrize("resuming", [False, True], ids=["fresh", "resuming"])
def test_ctrl_c_before_training_says_where_the_same_command_starts(reference, env, tmp_path, resuming):
    workdir = str(tmp_path / "run")
    if resuming:
        shutil.copytree(reference, workdir)
    args = command("train.py", workdir)
    args[1:2] = [str(REPO / "tests" / "kill_switch.py"), "int_before_training", "0"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == cli.EXIT_STOPPED and "Traceback" not in result.stderr, result.stderr[-3000:]
    message = " ".join(result.stderr.split())
    assert message.startswith("stopped: SIGINT received before training began; ")
    assert (
        "the same command resumes from checkpoint 12"
        if resuming
        else "no checkpoint yet, so the same command starts again from step 0"
    ) in message


# ---------------------------------------------------------------- a full disk


def can_mount_a_small_disk():
    """Whether this machine lets a user namespace mount a tmpfs (a disk that fills up)."""
    try:
        return (
            subprocess.run(
                ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, timeout=30
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not can_mount_a_small_disk(), reason="needs unshare to mount a small tmpfs")
def test_a_full_disk_while_saving_stops_with_a_message_and_keeps_the_last_checkpoint(reference, env, tmp_path):
    """The run of `reference` with checkpoint 12 lost, resumed on a 3 MiB disk filled up to 120 KiB from
    the end: the save of checkpoint 12 fails; then, with space again, the run ends as the reference."""
    disk, outside = tmp_path / "disk", tmp_path / "outside"
    disk.mkdir(), outside.mkdir()
    workdir = disk / "run"
    quoted = lambda args: " ".join(f"'{a}'" for a in args)
    script = f"""
        mount -t tmpfs -o size=3m tmpfs {disk} && cp -r {reference} {workdir} && rm -r {workdir}/checkpoints/{STEPS}
        mkdir {outside}/before {outside}/after && cp -r {workdir}/checkpoints {outside}/before
        head -c $(( ($(df -k --output=avail {disk} | tail -1) - 120) * 1024 )) /dev/zero > {disk}/filler
        {quoted(command("train.py", workdir))} > {outside}/full.out 2> {outside}/full.err
        echo $? > {outside}/full.status
        cp -r {workdir}/checkpoints {outside}/after && rm {disk}/filler
        {quoted(command("train.py", workdir))} > {outside}/freed.out 2> {outside}/freed.err
        echo $? > {outside}/freed.status
        cp -r {workdir} {outside}/run
    """
    subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    read = lambda name: (outside / name).read_text()
    assert read("full.status").strip() == "2", read("full.err")[-3000:]
    message = " ".join(read("full.err").split()).rsplit("error: ", 1)[-1]
    assert message.startswith(f"could not use '{workdir}/checkpoints': no space left on its device")
    assert f"Checkpoint {STEPS - EVERY} is the newest complete one and is intact" in message
    assert complete_steps(outside / "after") == complete_steps(outside / "before") == [STEPS - EVERY]
    assert_same_arrays(saved_state(outside / "before", STEPS - EVERY), saved_state(outside / "after", STEPS - EVERY))
    assert read("freed.status").strip() == "0", read("freed.err")[-3000:]
    assert_ends_like(reference, outside / "run")


# ---------------------------------------------------------------- non-finite steps

# After lr_decay_at = 0.5 of the 12 steps, the learning rate becomes 3e33: the parameters stay
# finite for one step at least, then the loss or the update does not.
DIVERGING = {"lr_decay_factor": 1e36}
LAST_FINITE_LR_STEP = 6


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, env):
    """A run stopped by a non-finite step, and that step."""
    workdir = str(tmp_path_factory.mktemp("diverged"))
    result = run("train.py", workdir, env, DIVERGING)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    named = re.search(r"step (\d+) gave a non-finite (loss|gradient or update)", message)
    assert named, message
    return workdir, int(named.group(1)), message


@pytest.mark.slow  # in-process: tests/test_train.py::test_a_nonfinite_step_on_nonfinite_inputs_blames_the_inputs_...
def test_a_nonfinite_step_stops_training_naming_it_and_keeps_the_last_good_checkpoint(reference, diverged):
    workdir, first_nonfinite, message = diverged
    assert first_nonfinite > LAST_FINITE_LR_STEP
    last_good = max(s for s in range(EVERY, first_nonfinite, EVERY))
    assert f"checkpoint {last_good} is intact" in message and "skip_nonfinite_steps" in message
    assert complete_steps(workdir) == [last_good - EVERY, last_good] and not fresh_saves(workdir, 0)
    # The run equals the reference up to its last good checkpoint and logged nothing after.
    assert without_timing(read_metrics(workdir)) == [
        r for r in without_timing(read_metrics(reference)) if r["step"] < first_nonfinite
    ]
    config = tiny_config(DIVERGING)
    restored = checkpoints.restore_newest(
        workdir, abstract_state(config), experiment.config_as_json(config), move_invalid=False
    )
    assert restored.step == last_good
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(restored.state))


@pytest.mark.slow  # in-process: tests/test_train.py::test_a_nonfinite_step_is_flagged_and_with_skipping_...
def test_skip_nonfinite_steps_keeps_the_state_as_it_was_and_counts_the_steps(reference, diverged, env, tmp_path):
    stopped, first_nonfinite, _ = diverged
    workdir = str(tmp_path / "skipping")
    result = run("train.py", workdir, env, {**DIVERGING, "skip_nonfinite_steps": True, "keep_checkpoints": 10})
    assert result.returncode == 0, result.stderr
    lines = read_metrics(workdir)
    training = [r for r in lines if "loss" in r]
    assert sum(r["skipped_steps"] for r in training) == STEPS - first_nonfinite + 1
    assert all(r["skipped_steps"] == 0 for r in training if r["step"] < first_nonfinite)
    assert training[-1]["loss"] is None  # every step of the last window skipped
    assert [r["step"] for r in lines if "miou" in r] == [5, 10, 12]
    # Up to the first non-finite step, skipping changes nothing; after it, no update is applied.
    assert without_timing([r for r in lines if r["step"] < first_nonfinite]) == [
        r for r in without_timing(read_metrics(reference)) if r["step"] < first_nonfinite
    ]
    assert_same_arrays(saved_state(stopped, LAST_FINITE_LR_STEP), saved_state(workdir, LAST_FINITE_LR_STEP))
    after = [saved_state(workdir, s) for s in range(EVERY, STEPS + 1, EVERY) if s >= first_nonfinite]
    assert len(after) >= 2
    for state in after:
        del state[("step",)]
        assert_same_arrays(after[0], state)


def abstract_state(config):
    shared = experiment.build(config, training=False)
    return experiment.abstract_state(shared.init, shared.mesh)


# ---------------------------------------------------------------- damaged checkpoints


def largest_file(directory):
    files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
    return max(files, key=os.path.getsize)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_a_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 3)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))


DAMAGE = {
    "truncated-array-file": lambda step_dir: truncate(largest_file(os.path.join(step_dir, "state"))),
    "truncated-tree-metadata": lambda step_dir: truncate(os.path.join(step_dir, "state", "_METADATA")),
    "missing-state": lambda step_dir: shutil.rmtree(os.path.join(step_dir, "state")),
    "missing-run": lambda step_dir: shutil.rmtree(os.path.join(step_dir, "run")),
    "truncated-position": lambda step_dir: truncate(os.path.join(step_dir, "data", "metadata")),
    "flipped-byte": lambda step_dir: flip_a_byte(largest_file(os.path.join(step_dir, "state"))),
}


def damaged_copy(reference, tmp_path, damage, steps):
    workdir = str(tmp_path / "damaged")
    shutil.copytree(reference, workdir)
    for step in steps:
        DAMAGE[damage](os.path.join(workdir, "checkpoints", str(step)))
    return workdir


# Orbax's reads of the other arrays, pending when one fails, are finished before its event loop closes:
# left pending, the garbage collector would report each, later, as an exception it ignored.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_reported_and_the_one_before_it_used(reference, tmp_path, capsys, damage):
    workdir = damaged_copy(reference, tmp_path, damage, [STEPS])
    config = tiny_config()
    restored = checkpoints.restore_newest(
        workdir, abstract_state(config), experiment.config_as_json(config), move_invalid=False
    )
    assert restored.step == STEPS - EVERY
    assert_same_arrays(
        saved_state(reference, STEPS - EVERY), ocp.tree.to_flat_dict(jax.tree.map(np.asarray, restored.state.__dict__))
    )
    assert f"checkpoint {STEPS} does not read back whole" in " ".join(capsys.readouterr().err.split())
    assert complete_steps(workdir) == [STEPS - EVERY, STEPS]  # left in place when not training
    del restored
    gc.collect()  # what is left of the failed reads, if anything, is reported now, in this test


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_no_readable_checkpoint_is_an_error_that_moves_nothing(reference, tmp_path):
    workdir = damaged_copy(reference, tmp_path, "truncated-array-file", [STEPS - EVERY, STEPS])
    config = tiny_config()
    with pytest.raises(UserError) as error:
        checkpoints.restore_newest(
            workdir, abstract_state(config), experiment.config_as_json(config), move_invalid=True
        )
    message = " ".join(str(error.value).split())
    assert f"checkpoint {STEPS}: " in message and f"checkpoint {STEPS - EVERY}: " in message
    assert "Nothing was moved or deleted" in message
    assert complete_steps(workdir) == [STEPS - EVERY, STEPS]
    assert not os.path.exists(os.path.join(workdir, checkpoints.INVALID_DIR))
    del error
    gc.collect()


def test_training_moves_a_damaged_checkpoint_aside_and_ends_as_the_uninterrupted_run(reference, env, tmp_path):
    workdir = damaged_copy(reference, tmp_path, "truncated-array-file", [STEPS])
    # What a kill while an old checkpoint was being deleted leaves: part of it. The next save deletes the rest.
    half_deleted = os.path.join(workdir, "checkpoints", str(STEPS - 2 * EVERY))
    shutil.copytree(os.path.join(workdir, "checkpoints", str(STEPS - EVERY)), half_deleted)
    shutil.rmtree(os.path.join(half_deleted, "state"))
    damaged = largest_file(os.path.join(workdir, "checkpoints", str(STEPS), "state"))
    with open(damaged, "rb") as f:
        damaged_bytes = f.read()
    result = run("train.py", workdir, env)
    assert result.returncode == 0, result.stderr
    message = " ".join(result.stderr.split())
    moved = os.path.join(workdir, checkpoints.INVALID_DIR, str(STEPS))
    assert f"checkpoint {STEPS} does not read back whole" in message and f"moved it to {moved}" in message
    assert f"Resuming from step {STEPS - EVERY}" in result.stdout
    with open(
        os.path.join(moved, os.path.relpath(damaged, os.path.join(workdir, "checkpoints", str(STEPS)))), "rb"
    ) as f:
        assert f.read() == damaged_bytes  # kept as it was
    assert_ends_like(reference, workdir)


# ---------------------------------------------------------------- checkpoints that do not fit the config


@pytest.mark.parametrize(
    "changes, parameter, field",
    [
        (
            {"model.width": 0.125},
            "params/conv1_1/bntt/scale is float32[2, 4] in the checkpoint and float32[2, 8]",
            "model.width=0.0625 in the checkpoint, 0.125 now",
        ),
        (
            {"model.timesteps": 3},
            "params/conv1_1/bntt/scale is float32[2, 4] in the checkpoint and float32[3, 4]",
            "model.timesteps=2 in the checkpoint, 3 now",
        ),
        (
            {"model.name": "deeplab"},
            "this config's model has params/conv1_1/bn/bias float32[4], which the checkpoint lacks",
            "model.name='spiking_deeplab' in the checkpoint",
        ),
        (
            {"dataset.name": "events"},
            "params/conv1_1/conv/kernel is float32[3, 3, 3, 4] in the checkpoint and float32[3, 3, 2, 4]",
            "dataset.name='shapes' in the checkpoint, 'events' now",
        ),
    ],
    ids=["width", "timesteps", "model", "input-channels"],
)
def test_a_checkpoint_that_does_not_fit_the_config_names_the_parameter_and_the_fields(
    reference, changes, parameter, field
):
    config = tiny_config(changes)
    with pytest.raises(UserError) as error:
        checkpoints.restore_newest(
            reference, abstract_state(config), experiment.config_as_json(config), move_invalid=True
        )
    message = " ".join(str(error.value).split())
    assert f"checkpoint {STEPS} in" in message and "does not fit this config" in message
    assert parameter in message and field in message
    assert complete_steps(reference) == [STEPS - EVERY, STEPS]


def test_a_class_count_that_does_not_fit_names_the_output_layer(reference):
    model = models.build("spiking_deeplab", num_classes=21, timesteps=2, width=0.0625)
    config = tiny_config()
    init = functools.partial(
        experiment.init_state, model, optimization.make_optimizer(config, STEPS), (16, 16, 3), jax.random.PRNGKey(0)
    )
    with pytest.raises(
        UserError,
        match=r"params/output/kernel is float32\[1, 1, 64, 5\] in the checkpoint and "
        r"float32\[1, 1, 64, 21\]",
    ):
        checkpoints.restore_newest(
            reference,
            experiment.abstract_state(init, sharding.data_mesh()),
            experiment.config_as_json(config),
            move_invalid=False,
        )


def test_evaluating_with_a_config_that_does_not_fit_is_a_one_paragraph_error(reference, monkeypatch, capsys):
    """evaluate.py's flags and main through `cli.run`, in this process: it stops as it restores."""
    result = as_in_this_process(
        "evaluate.py", command("evaluate.py", reference, {"model.width": 0.125})[2:], monkeypatch, capsys
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("error: checkpoint 12") and "does not fit this config" in message
    assert "model.width=0.0625 in the checkpoint, 0.125 now" in message


def test_config_differences_are_warned_about_for_the_fields_asked(capsys):
    saved = {"model": {"leak": 0.99, "width": 1.0}, "seed": 0}
    checkpoint = checkpoints.Checkpoint(step=4, state=None, position=None, log_window={}, config=saved)
    current = {"model": {"leak": 0.9, "width": 1.0}, "seed": 1}
    checkpoints.warn_config_differences(checkpoint, current, "evaluating", fields=("model.",))
    assert " ".join(capsys.readouterr().err.split()) == (
        "warning: evaluating checkpoint 4 with a config that differs from the one that saved it: model.leak 0.99 -> 0.9"
    )
    checkpoints.warn_config_differences(checkpoint, saved, "resuming")
    assert capsys.readouterr().err == ""
