"""`train.py` with a SIGKILL planted at one point of the run, for tests/test_faults.py.

    python tests/kill_switch.py <point> <step> --config=... --workdir=... [--config.<field>=<value> ...]

The process kills itself with SIGKILL (what `kill -9` does: no handler runs, no buffer is flushed,
Orbax's and the loader's threads die where they are) at <point>:
- `save`: while checkpoint <step> is being committed: every file is in Orbax's temporary directory,
  which is about to be renamed into place;
- `line`: in the middle of writing the first metrics.jsonl line of <step> (half of it is written);
- `after_line`: just after that line is written.
The run exits normally if it never reaches the point.
"""

import json
import os
import runpy
import signal
import sys

from snnseg_jax import train

TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's name for a checkpoint being written


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def plant_in_save(step: int) -> None:
    """Dies instead of renaming the temporary directory of checkpoint `step` (Orbax's commit)."""
    rename = os.rename

    def committing(src, dst, *args, **kwargs):
        if TMP_SUFFIX in os.fspath(src) and os.path.basename(os.fspath(dst)) == str(step):
            die()
        return rename(src, dst, *args, **kwargs)

    os.rename = committing


def plant_in_line(step: int, whole: bool) -> None:
    """Dies while (or, if `whole`, just after) writing the first metrics line of `step`."""
    append = train.append_metrics

    def appending(workdir: str, record: dict) -> None:
        if record["step"] != step:
            return append(workdir, record)
        if whole:
            append(workdir, record)
        else:
            line = json.dumps(record) + "\n"
            with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
                f.write(line[:len(line) // 2])
        die()

    train.append_metrics = appending


def main() -> None:
    point, step, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if point == "save":
        plant_in_save(step)
    elif point in ("line", "after_line"):
        plant_in_line(step, whole=point == "after_line")
    else:
        raise SystemExit(f"unknown point {point!r}")
    sys.argv, sys.path[0] = [TRAIN_PY, *flags], os.path.dirname(TRAIN_PY)  # as `python train.py` has them
    runpy.run_path(TRAIN_PY, run_name="__main__")


if __name__ == "__main__":
    main()
