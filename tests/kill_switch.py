"""`train.py` with a SIGKILL or a SIGTERM planted at one point of the run, for the tests.

    python tests/kill_switch.py <point> <step> --config=... --workdir=... [--config.<field>=<value> ...]

The process kills itself with SIGKILL (what `kill -9` does: no handler runs, no buffer is flushed,
Orbax's and the loader's threads die where they are) at <point>:
- `save`: while checkpoint <step> is being committed: every file is in Orbax's temporary directory,
  which is about to be renamed into place;
- `line`: in the middle of writing the first metrics.jsonl line of <step> (half of it is written);
- `after_line`: just after that line is written.
Or it sends itself SIGTERM (what a batch scheduler does before it preempts a job) at <point>:
- `term_step`: just after step <step> is dispatched, while it runs;
- `term_validation`: as the validation of step <step> begins;
- `term_save`: while checkpoint <step> is being committed in Orbax's background thread (the main
  thread is then at a later step), and again while any later checkpoint is committed, which is
  the checkpoint of the stop: a second signal during that save.
Or SIGINT (Ctrl-C) at `int_before_training`: as the newest checkpoint is about to be restored
(<step> is ignored).
The run exits normally if it never reaches the point. At exit it prints to stderr the last step it
dispatched and the number of SIGTERMs it sent: `kill_switch: last step dispatched <n>, <k> SIGTERM`.
"""

import atexit
import json
import os
import runpy
import signal
import sys

from snnseg_jax.hooks import HOOKS

TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's name for a checkpoint being written


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


SENT = []


def terminate() -> None:
    SENT.append(signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)


def plant_in_save(step: int, act=die, again: bool = False) -> None:
    """Calls `act` as the temporary directory of checkpoint `step` (and with `again`, of any later
    one) is about to be renamed into place (Orbax's commit); `die` keeps it from being renamed."""
    rename = os.rename

    def committing(src, dst, *args, **kwargs):
        if TMP_SUFFIX in os.fspath(src) and os.path.basename(os.fspath(dst)).isdigit():
            committed = int(os.path.basename(os.fspath(dst)))
            if committed == step or (again and committed > step):
                act()
        return rename(src, dst, *args, **kwargs)

    os.rename = committing


def plant_in_step(step: int, act=None) -> None:
    """Records the steps dispatched (printed at exit), calling `act` once `step` is dispatched."""
    last = [0]

    def dispatched(number: int) -> None:
        last[0] = max(last[0], number)
        if number == step and act is not None:
            act()

    HOOKS.step_dispatched = dispatched
    atexit.register(lambda: print(f"kill_switch: last step dispatched {last[0]}, {len(SENT)} SIGTERM", file=sys.stderr))


def plant_before_training() -> None:
    """Sends SIGINT as training restores its newest checkpoint, before the first step."""
    HOOKS.restoring = lambda: os.kill(os.getpid(), signal.SIGINT)


def plant_in_validation(step: int) -> None:
    """Sends SIGTERM as the validation of `step` begins."""
    HOOKS.validating = lambda number: terminate() if number == step else None


def plant_in_line(step: int, whole: bool) -> None:
    """Dies just after writing the first metrics line of `step`, or with only its first half written
    (the rest cut off, as a kill in the middle of the write leaves it)."""

    def written(path: str, record: dict) -> None:
        if record["step"] != step:
            return
        if not whole:
            line = json.dumps(record) + "\n"
            with open(path, "r+") as f:
                f.truncate(os.path.getsize(path) - (len(line) - len(line) // 2))
        die()

    HOOKS.metrics_written = written


def main() -> None:
    point, step, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    plant_in_step(step, terminate if point == "term_step" else None)
    if point == "save":
        plant_in_save(step)
    elif point in ("line", "after_line"):
        plant_in_line(step, whole=point == "after_line")
    elif point == "term_validation":
        plant_in_validation(step)
    elif point == "term_save":
        plant_in_save(step, terminate, again=True)
    elif point == "int_before_training":
        plant_before_training()
    elif point != "term_step":
        raise SystemExit(f"unknown point {point!r}")
    sys.argv, sys.path[0] = [TRAIN_PY, *flags], os.path.dirname(TRAIN_PY)  # as `python train.py` has them
    runpy.run_path(TRAIN_PY, run_name="__main__")


if __name__ == "__main__":
    main()
