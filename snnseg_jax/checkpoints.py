"""Orbax checkpoints under `<workdir>/checkpoints`: the train state, the data position and the run.

Checkpoint `checkpoints/<step>/` holds three items: `state` (parameters, optimizer state,
BNTT/BatchNorm statistics and the step), `data` (JSON: where the next training batch comes from)
and `run` (JSON: the config that saved it, the open logging window, a SHA-256 of the state's
arrays). Orbax writes a checkpoint into `<step>.orbax-checkpoint-tmp` and renames it to `<step>`
once complete, so a save interrupted at any moment leaves no directory that passes for a checkpoint.

Restoring takes the newest checkpoint that reads back whole and matches its checksum. Newer ones
that do not are reported and, when training, moved to `<workdir>/checkpoints_invalid/` (they would
be in the way of new saves); nothing is ever deleted here. A checkpoint whose arrays do not fit the
config's model is a `UserError` naming the first parameter that differs.

A save that fails on the file system (a full disk, a lost permission) stops training with a
`UserError` naming the directory and the newest complete checkpoint, which the failed save leaves
intact (Orbax deletes old checkpoints only after a new one is complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from snnseg_jax import config_rules
from snnseg_jax.cli import UserError, explain_os_error, warn
from snnseg_jax.data.pipeline import Position

INVALID_DIR = "checkpoints_invalid"
CONFIG_GROUPS = ("model.", "dataset.")  # the config fields that shape the network


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    step: int
    state: Any
    position: Position
    log_window: dict  # as saved by `save`, opaque here
    config: dict  # the config that saved it, as JSON
    validation_owed: bool = False  # saved by a stop before validating its step, which is due


class Unreadable(Exception):
    """A checkpoint directory that does not read back whole; the message says what failed."""


def directory(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def _handlers() -> dict[str, ocp.CheckpointHandler]:
    return {
        "state": ocp.StandardCheckpointHandler(),
        "data": ocp.JsonCheckpointHandler(),
        "run": ocp.JsonCheckpointHandler(),
    }


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """Manager saving to `<workdir>/checkpoints` and keeping the newest `keep` checkpoints.

    It removes the temporary directories of saves that an earlier run did not finish.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
    absl_logger = logging.getLogger("absl")  # Orbax's; its background threads log a failed save
    if not any(isinstance(f, _QuietFileSystemFailures) for f in absl_logger.filters):
        absl_logger.addFilter(_QuietFileSystemFailures())
    with reporting_file_system_errors(directory(workdir)):
        return ocp.CheckpointManager(directory(workdir), options=options, item_handlers=_handlers())


def save(
    mngr: ocp.CheckpointManager,
    step: int,
    state: Any,
    position: Position,
    *,
    log_window: dict,
    config: dict,
    validation_owed: bool = False,
) -> None:
    """Starts saving checkpoint `step`: `state`, `position`, and `log_window` and `config` (JSON).

    Waits for the previous save first; one that failed on the file system raises a `UserError`.
    """
    run = {
        "config": config,
        "log_window": log_window,
        "state_sha256": state_digest(state),
        "validation_owed": validation_owed,
    }
    with reporting_file_system_errors(str(mngr.directory)):
        mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(dataclasses.asdict(position)),
                run=ocp.args.JsonSave(run),
            ),
        )


def finish(mngr: ocp.CheckpointManager) -> None:
    """Waits until the saves under way are written; one that failed on the file system raises a `UserError`."""
    with reporting_file_system_errors(str(mngr.directory)):
        mngr.wait_until_finished()


def os_error_code(error: BaseException | None) -> int | None:
    """The `errno` of the file-system failure behind `error`, if that is what it is: an `OSError` in
    its chain, or TensorStore's `[os_error_code='28']` in an Orbax error."""
    while error is not None:
        if isinstance(error, OSError) and error.errno:
            return error.errno
        code = re.search(r"os_error_code='?(\d+)", str(error))
        if code:
            return int(code.group(1))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def reporting_file_system_errors(checkpoint_dir: str) -> Iterator[None]:
    """Turns a file-system failure of Orbax into a `UserError` naming `checkpoint_dir` and the newest
    complete checkpoint in it; other errors pass unchanged."""
    try:
        yield
    except Exception as error:  # Orbax raises ValueError, OSError, ... for what TensorStore reports
        code = os_error_code(error)
        if code is None:
            raise
        newest = max(complete_steps(checkpoint_dir), default=None)
        kept = (
            f"Checkpoint {newest} is the newest complete one and is intact; running the same command "
            f"again resumes from it"
            if newest is not None
            else "No checkpoint is complete yet"
        )
        raise UserError(f"{explain_os_error(OSError(code, os.strerror(code), checkpoint_dir))}. {kept}.") from None


class _QuietFileSystemFailures(logging.Filter):
    """Drops Orbax's log records (tracebacks of background threads) of a save that failed on the file
    system: `reporting_file_system_errors` reports the failure once, as one paragraph."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        return os_error_code(failure) is None and "os_error_code=" not in record.getMessage()


def complete_steps(checkpoint_dir: str) -> list[int]:
    """The steps of the complete checkpoints in `checkpoint_dir` (directories named by a step), ascending."""
    if not os.path.isdir(checkpoint_dir):
        return []
    return sorted(int(name) for name in os.listdir(checkpoint_dir) if name.isdigit())


def state_digest(state: Any) -> str:
    """SHA-256 of the dtypes, shapes and bytes of the arrays of `state`, in tree order.

    An array split over several processes (the membranes carried when training on streams) is
    gathered first: every process must call this together.
    """
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        leaf = np.ascontiguousarray(_whole(leaf))
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def _whole(leaf: Any) -> np.ndarray:
    """`leaf` on the host, whole: gathered from every process if it is split over them."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return multihost_utils.process_allgather(leaf, tiled=True)
    return jax.device_get(leaf)


def restore_newest(workdir: str, abstract_state: Any, config: dict, *, move_invalid: bool) -> Checkpoint | None:
    """The newest checkpoint in `workdir` that reads back whole, shaped and placed like `abstract_state`.

    Newer checkpoints that do not read back are reported on stderr and, with `move_invalid`, moved
    to `<workdir>/checkpoints_invalid/`. None when there is no checkpoint. Raises a `UserError` when
    there are checkpoints but none reads back (nothing is moved then), or when the newest readable
    one does not fit the model of `config` (the config as JSON).
    """
    if not os.path.isdir(directory(workdir)):
        return None
    mngr = ocp.CheckpointManager(
        directory(workdir), options=ocp.CheckpointManagerOptions(create=False), item_handlers=_handlers()
    )
    unreadable: dict[int, str] = {}
    found = None
    try:
        for step in sorted(mngr.all_steps(), reverse=True):
            try:
                found = _restore(mngr, step, abstract_state, config)
                break
            except Unreadable as error:
                unreadable[step] = str(error)
    finally:
        mngr.close()
    if found is None and unreadable:
        listed = "; ".join(f"checkpoint {step}: {reason}" for step, reason in unreadable.items())
        raise UserError(
            f"no checkpoint in {directory(workdir)} reads back whole ({listed}). Nothing was "
            f"moved or deleted: repair them, or move the directory away to start afresh."
        )
    for step, reason in unreadable.items():
        if move_invalid:
            warn(
                f"checkpoint {step} does not read back whole ({reason}); moved it to "
                f"{move_aside(workdir, step)} and resuming from checkpoint {found.step}."
            )
        else:
            warn(f"checkpoint {step} does not read back whole ({reason}); using checkpoint {found.step}.")
    return found


def _restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any, config: dict) -> Checkpoint:
    try:
        metadata = mngr.item_metadata(step)["state"]
    except Exception as error:  # Orbax and TensorStore raise many types on damaged files
        raise Unreadable(f"its metadata: {_reason(error)}") from None
    if metadata is None:
        raise Unreadable("its item 'state' is missing")
    mismatch = first_mismatch(leaf_shapes(metadata), leaf_shapes(abstract_state))
    if mismatch:
        raise UserError(
            f"checkpoint {step} in {mngr.directory} does not fit this config: {mismatch}."
            f"{_explain_with_config(mngr, step, config)} Evaluate or resume it with the config "
            f"it was trained with (saved in checkpoints/{step}/run/metadata), or use another "
            f"--workdir."
        )
    try:
        with _loops_that_finish_their_tasks():
            restored = mngr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                    run=ocp.args.JsonRestore(),
                ),
            )
        position, run = Position(**restored["data"]), restored["run"]
        log_window, saved_config, digest = run["log_window"], run["config"], run["state_sha256"]
    except Exception as error:  # as above
        raise Unreadable(_reason(error)) from None
    if state_digest(restored["state"]) != digest:
        raise Unreadable("its arrays differ from the checksum saved with them")
    return Checkpoint(
        step, restored["state"], position, log_window, saved_config, bool(run.get("validation_owed", False))
    )


class _FinishingLoop(asyncio.SelectorEventLoop):
    """An event loop that, closed with tasks still pending, cancels them and waits for them first."""

    def close(self) -> None:
        pending = [task for task in asyncio.all_tasks(self) if not task.done()]
        if pending and not self.is_running() and not self.is_closed():
            for task in pending:
                task.cancel()
            self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        super().close()


class _FinishingLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _FinishingLoop()


@contextlib.contextmanager
def _loops_that_finish_their_tasks() -> Iterator[None]:
    """Event loops created meanwhile finish their pending tasks when closed.

    Orbax restores in a fresh event loop, one task per array, and closes the loop as soon as one
    read fails (a damaged file), with the reads of the other arrays still pending. Left so, each is
    destroyed later by the garbage collector, wherever the program then is, and its error handler
    raises while being destroyed: an "exception ignored" report with a traceback, once per array.
    Cancelled and awaited before the loop closes, they end here, their errors collected.
    """
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_FinishingLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


def _reason(error: BaseException) -> str:
    """The first line of the innermost cause of `error` (Orbax wraps TensorStore's precise errors)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def steps_on_disk(workdir: str) -> list[int]:
    """The steps of the checkpoint directories in `workdir`, newest first, whether or not they read back."""
    names = os.listdir(directory(workdir)) if os.path.isdir(directory(workdir)) else []
    return sorted((int(n) for n in names if n.isdigit()), reverse=True)


def saved_config(workdir: str) -> tuple[int, dict] | None:
    """(step, config as JSON) of the newest checkpoint in `workdir` whose `run/metadata` reads as JSON.

    Cheap (one small file; no arrays are read), for checking a run before restoring it. None if no
    checkpoint has one.
    """
    for step in steps_on_disk(workdir):
        try:
            with open(os.path.join(directory(workdir), str(step), "run", "metadata")) as f:
                return step, json.load(f)["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # damaged or half written: the older ones may do
    return None


def move_aside(workdir: str, step: int) -> str:
    """Moves checkpoint `step` to `<workdir>/checkpoints_invalid/<step>` (or `<step>_2`, ...); returns where."""
    target_dir = os.path.join(os.path.abspath(workdir), INVALID_DIR)
    os.makedirs(target_dir, exist_ok=True)
    target, copy = os.path.join(target_dir, str(step)), 1
    while os.path.exists(target):
        copy += 1
        target = os.path.join(target_dir, f"{step}_{copy}")
    os.rename(os.path.join(directory(workdir), str(step)), target)
    return target


# ---------------------------------------------------------------- does a checkpoint fit the config?


def leaf_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{"params/<layer>/conv/kernel": (shape, dtype), ...}` for the arrays (or their metadata) of `tree`."""
    return {
        "/".join(_key_name(k) for k in path): (tuple(leaf.shape), np.dtype(leaf.dtype).name)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def first_mismatch(saved: dict[str, tuple], expected: dict[str, tuple]) -> str | None:
    """How the arrays `saved` differ from `expected` (see `leaf_shapes`), parameters first; None if alike."""
    for path in sorted(saved.keys() | expected.keys(), key=lambda p: (not p.startswith("params/"), p)):
        if path not in expected:
            return f"it has {path} {_describe(saved[path])}, which this config's model lacks"
        if path not in saved:
            return f"this config's model has {path} {_describe(expected[path])}, which the checkpoint lacks"
        if saved[path] != expected[path]:
            return (
                f"{path} is {_describe(saved[path])} in the checkpoint and {_describe(expected[path])} with this config"
            )
    return None


def _describe(shape_dtype: tuple) -> str:
    shape, dtype = shape_dtype
    return f"{dtype}[{', '.join(map(str, shape))}]"


def _explain_with_config(mngr: ocp.CheckpointManager, step: int, config: dict) -> str:
    try:
        saved = mngr.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]["config"]
    except Exception:  # as above; the message then does without the saved config
        return ""
    changed = [
        f"{field}={before!r} in the checkpoint, {after!r} now"
        for field, (before, after) in config_differences(saved, config).items()
        if field.startswith(CONFIG_GROUPS)
    ]
    return f" Config fields that differ: {'; '.join(changed)}." if changed else ""


def warn_config_differences(checkpoint: Checkpoint, config: dict, doing: str, fields: tuple[str, ...] = ("",)) -> None:
    """Warns that `config` (as JSON) differs from the one that saved `checkpoint` in these `fields` (prefixes)."""
    changed = [
        f"{field} {before!r} -> {after!r}"
        for field, (before, after) in config_differences(checkpoint.config, config).items()
        if field.startswith(fields)
    ]
    if changed:
        warn(
            f"{doing} checkpoint {checkpoint.step} with a config that differs from the one that saved it: "
            + "; ".join(changed)
        )


def config_differences(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """`{"model.width": (saved value, current value), ...}` for the fields whose values differ."""
    before, after = config_rules.flatten(saved), config_rules.flatten(current)
    return {
        field: (before.get(field), after.get(field))
        for field in sorted(before.keys() | after.keys())
        if before.get(field) != after.get(field)
    }
